# ruff: noqa: B018, B023, E501  (kept as it ran on the device; the closures run inside their loop)
"""Where a batched sweep's host time goes on the GPU machine (session 8's first device call).

    python benchmarks/profile_batch_host.py OUTDIR      (GPU machine, repository root,
                                                        PYTHONPATH=$PWD:$PWD/benchmarks)

1. The host draws of one batched round for 1000 seeds at S = 1, 8, 64 (N = 64 clients of 64
   rows): ``draws.choice_sorted`` (participants), ``draws.integers_rows`` (8 minibatch rows
   per participant; also split by run over 4, 8 and 16 threads of a thread pool, the compiled
   function releasing the GIL), and the copy of those rows to the device; mean of 50 calls.
2. ``run_batch`` of SCAFFOLD (minibatch 8) and FedPAC (exact) with 1000 seeds at S = 1, 8, 64:
   5 and 205 rounds timed (their difference / 200 = the time per round, the rest the fixed
   cost of a batch), and a cProfile of 200 rounds at S = 1 and 64 written to OUTDIR.

The figures of BENCHMARKS.md's "Eighth session" that describe the start of the session (0.89,
2.49 and 0.31 ms; 1.76 to 1.88 ms with threads) come from this script at the session's first
commit.
"""

import cProfile
import io
import pstats
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, "benchmarks")
import cupy
import numpy as np
from bench_batched_sweep import iid_logistic, parse_oracle

from fedtheory import make_method
from fedtheory.draws import _integers_rows, _states, choice_sorted, integers_rows
from fedtheory.runner import run_batch

host = iid_logistic(64, 50, 64, 3e-2)
host.reference
p = host.to("cupy")


def sync():
    cupy.cuda.Device().synchronize()


# draws on this host
gens = [np.random.default_rng(s) for s in range(1000)]
for S in (1, 8, 64):
    choice_sorted(gens, 64, S)
    t = time.perf_counter()
    for _ in range(50):
        c = choice_sorted(gens, 64, S)
    tc = (time.perf_counter() - t) / 50
    runs = np.repeat(np.arange(1000), S)
    high = np.full(runs.size, 64)
    integers_rows(gens, runs, high, 8)
    t = time.perf_counter()
    for _ in range(50):
        integers_rows(gens, runs, high, 8)
    ti = (time.perf_counter() - t) / 50
    # threaded split by run
    st = _states(gens)
    for nt in (4, 8, 16):
        pool = ThreadPoolExecutor(nt)
        bounds = np.linspace(0, 1000, nt + 1).astype(int)

        def part(k):
            lo, hi = bounds[k] * S, bounds[k + 1] * S
            return _integers_rows(st, runs[lo:hi], high[lo:hi], 8)

        list(pool.map(part, range(nt)))
        t = time.perf_counter()
        for _ in range(50):
            np.concatenate(list(pool.map(part, range(nt))))
        tp = (time.perf_counter() - t) / 50
        print(f"S={S}: integers_rows threads={nt}: {tp * 1e3:.3f} ms")
        pool.shutdown()
    x = np.zeros((1000 * S, 8), np.int64)
    d = cupy.asarray(x)
    t = time.perf_counter()
    for _ in range(50):
        d.set(x)
    sync()
    ts = (time.perf_counter() - t) / 50
    print(
        f"S={S}: choice_sorted {tc * 1e3:.3f} ms, integers_rows {ti * 1e3:.3f} ms, set {ts * 1e3:.3f} ms ({x.nbytes / 1e6:.2f} MB)"
    )

for meth, orc in (("scaffold", "minibatch:8"), ("fedpac", "exact")):
    m = make_method(meth, {})
    o = parse_oracle(orc)
    for S in (1, 8, 64):
        run_batch(p, m, 4, seeds=[0, 1], participation=S, oracle=o, log_every=2)
        ts = {}
        for R in (5, 205):
            sync()
            t = time.perf_counter()
            run_batch(p, m, R, seeds=range(1000), participation=S, oracle=o, log_every=R)
            sync()
            ts[R] = time.perf_counter() - t
        per = (ts[205] - ts[5]) / 200
        print(
            f"{meth} S={S}: 205 rounds {ts[205]:.3f} s, 5 rounds {ts[5]:.3f} s -> {per * 1e3:.3f} ms/round, fixed {ts[5] - 5 * per:.3f} s"
        )
        if S in (1, 64):
            pr = cProfile.Profile()
            pr.enable()
            run_batch(p, m, 200, seeds=range(1000), participation=S, oracle=o, log_every=200)
            sync()
            pr.disable()
            s = io.StringIO()
            st = pstats.Stats(pr, stream=s)
            st.sort_stats("tottime").print_stats(30)
            st.sort_stats("cumulative").print_stats(45)
            open(f"{sys.argv[1]}/prof_{meth}_S{S}.txt", "w").write(s.getvalue())
