#!/usr/bin/env bash
# Issue 15, `fedtheory check --backend cupy`: every claim with a GPU protocol, quick mode, one
# process per claim (4 at a time, 240 s each), then the GPU tests of the option.
#
#   OUT=<folder> bash benchmarks/gpu_check_backend.sh        (from the repository root)
#
# Writes $OUT/check_gpu_claims.tgz (check_gpu_<ID>.json and .log per claim),
# $OUT/check_gpu_summary.txt and $OUT/check_gpu_pytest.txt (the GPU tests of the option and,
# with ALL_GPU_TESTS=1, every test marked gpu).
set -u
OUT=${OUT:?set OUT}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
PY=${PY:-python3}
ids=$($PY -c "from fedtheory import claims as c; print(' '.join(i for i in c.claim_ids() if c.runs_on_gpu(c.load_check(i))))")
echo "claims with a GPU protocol: $ids"
printf '%s\n' $ids | xargs -P 4 -I{} sh -c \
  "timeout 240 $PY -c 'import sys; from fedtheory.cli import main; sys.exit(main(sys.argv[1:]))' check --quick --backend cupy --claim {} --json $OUT/check_gpu_{}.json > $OUT/check_gpu_{}.log 2>&1; echo \"{} rc=\$?\""
$PY - "$OUT" <<'PY' | tee "$OUT/check_gpu_summary.txt"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for f in sorted(out.glob("check_gpu_*.json")):
    d = json.loads(f.read_text())
    for r in d["records"]:
        print(f"{r['id']:7} {'PASS' if r['passed'] else 'FAIL':5} {d['seconds']:7.1f} s  "
              f"measured {r['measured']}")
        if not r["passed"] and "traceback" in r.get("details", {}):
            print("   " + r["details"]["traceback"].strip().splitlines()[-1])
            print("   " + "\n   ".join(r["details"]["traceback"].strip().splitlines()[-8:-1]))
PY
(cd "$OUT" && tar -czf check_gpu_claims.tgz check_gpu_*.json check_gpu_*.log && rm -f check_gpu_*.json check_gpu_*.log)
if [ "${ALL_GPU_TESTS:-0}" = 1 ]; then
    timeout 420 $PY -m pytest -q -p no:cacheprovider -m gpu tests > "$OUT/check_gpu_pytest.txt" 2>&1
else
    timeout 300 $PY -m pytest -q -p no:cacheprovider tests/test_gpu_check_backend.py tests/test_claims_cli.py > "$OUT/check_gpu_pytest.txt" 2>&1
fi
tail -3 "$OUT/check_gpu_pytest.txt"
