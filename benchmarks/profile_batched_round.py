"""Device time of one batched round, kernel by kernel, under Nsight Compute (GPU machine).

    ncu --profile-from-start off --metrics gpu__time_duration.sum --csv \
        python benchmarks/profile_batched_round.py METHOD S [minibatch] > round.csv
    python benchmarks/profile_batched_round.py --aggregate round.csv

The first form builds the batched sweep's problem (``bench_batched_sweep.iid_logistic``: N = 64
clients of 64 rows, d = 50, lam = 3e-2), a batch of 1000 seeds of METHOD (its defaults) with S
participants per round (the exact oracle, or a minibatch of 8 rows), runs three rounds, times
ten more (host dispatch and wall, printed; no deferred factorisation checks here, so each solve
synchronises) and then one round with the profiler on: ncu records every kernel of that round.
The second form sums the CSV's kernel durations by kernel name, largest first.
"""

from __future__ import annotations

import collections
import csv
import sys
import time


def aggregate(path: str) -> None:
    header, total, count = None, collections.Counter(), collections.Counter()
    scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}
    with open(path, newline="") as fh:
        for row in csv.reader(fh):
            if "Kernel Name" in row and "Metric Value" in row:
                header = row
                continue
            if header is None or len(row) != len(header):
                continue
            d = dict(zip(header, row, strict=True))
            if d["Metric Name"] != "gpu__time_duration.sum":
                continue
            us = float(d["Metric Value"].replace(",", "")) * scale[d["Metric Unit"]]
            name = d["Kernel Name"][:90]
            total[name] += us
            count[name] += 1
    print(f"total {sum(total.values()):.1f} us over {sum(count.values())} kernels")
    for name, us in total.most_common(25):
        print(f"{us:10.1f} us {count[name]:4d}x  {name}")


def profile(method_name: str, S: int, minibatch: bool) -> None:
    import cupy
    import numpy as np
    from bench_batched_sweep import iid_logistic

    from fedtheory import make_method
    from fedtheory.draws import choice_sorted
    from fedtheory.methods.base import round_context
    from fedtheory.oracles import make_oracle
    from fedtheory.runner.batch import _stack

    oracle = make_oracle("minibatch", b=8) if minibatch else make_oracle("exact")
    problem = iid_logistic(64, 50, 64, 3e-2).to("cupy")
    method = make_method(method_name)
    B, N = 1000, problem.N
    first, _ = method.start(problem, cupy.zeros(problem.d))
    state = _stack([first] * B, cupy)
    rngs = [np.random.default_rng(s) for s in range(B)]

    def ctx():
        clients = choice_sorted(rngs, N, S).reshape(-1) if S < N else np.tile(np.arange(N), B)
        return round_context(problem, clients, rng=rngs, oracle=oracle, runs=B, batched=True)

    for _ in range(3):
        state, _ = method.round(ctx(), state)
    cupy.cuda.Device().synchronize()
    clock = time.perf_counter()
    for _ in range(10):
        state, _ = method.round(ctx(), state)
    host = time.perf_counter() - clock
    cupy.cuda.Device().synchronize()
    wall = time.perf_counter() - clock
    print(f"{method_name} S={S}: host {host * 100:.2f} ms, wall {wall * 100:.2f} ms per round")
    cupy.cuda.profiler.start()
    state, _ = method.round(ctx(), state)
    cupy.cuda.Device().synchronize()
    cupy.cuda.profiler.stop()


if __name__ == "__main__":
    if sys.argv[1] == "--aggregate":
        aggregate(sys.argv[2])
    else:
        profile(sys.argv[1], int(sys.argv[2]), len(sys.argv) > 3 and sys.argv[3] == "minibatch")
