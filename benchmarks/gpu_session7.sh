#!/usr/bin/env bash
# The seventh session's final GPU run (one device call, H200, from the repository root):
# every GPU test, the batched sweeps of FedPAC, FedNL-PP (minibatch) and SCAFFOLD (minibatch)
# against the one-by-one CPU references in benchmarks/results, and the curvature-average mutant.
# Writes into $OUT (set it to a directory).
set -u
export PYTHONPATH=$PWD:$PWD/benchmarks OPENBLAS_NUM_THREADS=1
python3 -m pytest -q -p no:cacheprovider -n 8 -m gpu tests --tb=short 2>&1 | grep -E "^E |^FAILED|passed|failed" | head -30 > $OUT/s7_final_pytest.txt; cat $OUT/s7_final_pytest.txt
sweep() { python3 benchmarks/bench_batched_sweep.py --backend cupy --mode batched --S 1,8,64 --check-seeds 1 "$@" 2>&1 | tail -5; }
sweep --method fedpac --oracle exact --cpu-json benchmarks/results/gpu_issue15_sweep_cpu_fedpac.json --out $OUT/s7_final_sweep_fedpac.json > $OUT/s7_final_sweep_fedpac.txt; cat $OUT/s7_final_sweep_fedpac.txt
sweep --method fednl_pp --oracle minibatch:8 --cpu-json benchmarks/results/gpu_session7_sweep_cpu_fednl_pp.json --out $OUT/s7_final_sweep_fednl_pp.json > $OUT/s7_final_sweep_fednl_pp.txt; cat $OUT/s7_final_sweep_fednl_pp.txt
python3 -c "
import sys; sys.path.insert(0, 'benchmarks')
import gpu_fused_mutants as g
g.MUTANTS = [m for m in g.MUTANTS if m[0].startswith('ema_')]
sys.exit(g.main())" > $OUT/s7_final_mutant_ema.txt 2>&1; cat $OUT/s7_final_mutant_ema.txt
sweep --method scaffold --oracle minibatch:8 --cpu-json benchmarks/results/gpu_issue15_sweep_cpu_scaffold.json --out $OUT/s7_final_sweep_scaffold.json > $OUT/s7_final_sweep_scaffold.txt; cat $OUT/s7_final_sweep_scaffold.txt
