#!/usr/bin/env bash
# The eighth session's final GPU run (one device call, H200, from the repository root): every
# GPU test, the session's GPU mutants, the batched sweeps of SCAFFOLD (minibatch), FedPAC and
# FedNL-PP (minibatch) against the one-by-one CPU references in benchmarks/results, the
# kernels of one batched SCAFFOLD round at S = 64 under ncu, and the CLI on the GPU.
# Writes 8 files into $OUT (set it to a directory).
set -u
export PYTHONPATH=$PWD:$PWD/benchmarks OPENBLAS_NUM_THREADS=1
python3 -m pytest -q -p no:cacheprovider -n 8 -m gpu tests --tb=short 2>&1 | grep -E "^E |^FAILED|passed|failed" | head -30 > $OUT/s8_pytest.txt; cat $OUT/s8_pytest.txt
python3 -c "
import sys; sys.path.insert(0, 'benchmarks')
import gpu_fused_mutants as g
g.MUTANTS = [m for m in g.MUTANTS if m[0].startswith(('device_', 'batch_drop', 'minibatch_'))]
sys.exit(g.main())" > $OUT/s8_mutants.txt 2>&1; cat $OUT/s8_mutants.txt
sweep() { python3 benchmarks/bench_batched_sweep.py --backend cupy --mode batched --S 1,8,64 --check-seeds 1 "$@" 2>&1 | tail -5; }
for m in scaffold fedpac fednl_pp; do
  case $m in
    scaffold) args="--oracle minibatch:8 --cpu-json benchmarks/results/gpu_issue15_sweep_cpu_scaffold.json" ;;
    fedpac) args="--oracle exact --cpu-json benchmarks/results/gpu_issue15_sweep_cpu_fedpac.json" ;;
    fednl_pp) args="--oracle minibatch:8 --cpu-json benchmarks/results/gpu_session7_sweep_cpu_fednl_pp.json" ;;
  esac
  echo "## $m" >> $OUT/s8_sweeps.txt
  sweep --method $m $args --out $OUT/s8_sweep_$m.json >> $OUT/s8_sweeps.txt
done
cat $OUT/s8_sweeps.txt
/usr/local/cuda/bin/ncu --profile-from-start off --metrics gpu__time_duration.sum --csv python3 benchmarks/profile_batched_round.py scaffold 64 minibatch > /tmp/s8_ncu.csv 2>/dev/null
python3 benchmarks/profile_batched_round.py --aggregate /tmp/s8_ncu.csv > $OUT/s8_ncu_scaffold_S64.txt 2>&1; head -8 $OUT/s8_ncu_scaffold_S64.txt
python3 -c 'import sys; from fedtheory.cli import main; sys.exit(main(sys.argv[1:]))' run a9a_fednl --method fedpm --backend cupy --rounds 20 --log-every 5 > $OUT/s8_cli.txt 2>&1; tail -4 $OUT/s8_cli.txt
git rev-parse HEAD 2>/dev/null || true
