"""Time one exact-Hessian FedPM round (K = 1) against a float64 matrix product of equal flops.

    python benchmarks/bench_round.py [--repeat 20] [--backend numpy|cupy] [--problems a9a,w8a]

Problems: the a9a FedNL split (80 clients x 407 rows, d = 123) and a w8a-shaped synthetic
logistic problem (142 clients x 350 rows, d = 300, binary features of density 0.04 as in w8a).

Flop model of one FedPM K = 1 round with N clients of n rows (the work it does):
    client Hessians as one dense batched product A_i^T (D_i A_i)    2 N n d^2
    margins and gradients                                           4 N n d
    client Cholesky factorisations and two triangular solves        N (d^3 / 3 + 2 d^2)
    P_i theta_i^1, the weighted sums, the server solve              3 N d^2 + d^3 / 3 + 2 d^2
The reference is one square float64 matmul C = A B of size m with 2 m^3 = that flop count, on
the same device and in the same process. ratio = seconds per round / seconds per matmul.
Each figure is the median of --repeat timings after two warm-up runs.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from fedtheory import make_method
from fedtheory.methods import round_context
from fedtheory.problem import FederatedProblem


def w8a_shaped(seed: int = 0, storage: str = "dense") -> FederatedProblem:
    """The dense w8a-shaped synthetic (4 % ones, stored dense unless ``storage`` says else: it
    measures the dense BLAS path; bench_peers.py times both storages)."""
    rng = np.random.default_rng(seed)
    N, n, d = 142, 350, 300
    X = (rng.random((N * n, d)) < 0.04).astype(np.float64)
    w = rng.normal(size=d)
    y = np.where(X @ w + rng.normal(size=N * n) >= 0, 1.0, -1.0)
    parts = np.split(np.arange(N * n), N)
    return FederatedProblem.from_dataset(
        X, y, parts, objective="logistic", lam=1e-3, name="w8a_shaped", storage=storage
    )


def a9a(storage: str = "dense") -> FederatedProblem:
    """The a9a FedNL split, stored dense by default (the path this script has always timed)."""
    from fedtheory.suite import load_problem, read_spec, resolve

    spec = read_spec(resolve("a9a_fednl"))
    return load_problem({**spec, "data": {**spec["data"], "storage": storage}})


def round_flops(problem: FederatedProblem) -> float:
    N, n, d = problem.N, problem.A.shape[1], problem.d
    return (
        2 * N * n * d**2
        + 4 * N * n * d
        + N * (d**3 / 3 + 2 * d**2)
        + 3 * N * d**2
        + d**3 / 3
        + 2 * d**2
    )


def machine(backend: str) -> dict:
    """Where a benchmark ran: platform, usable CPU cores (the affinity mask), versions, GPU."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": cores,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "backend": backend,
    }
    if backend == "cupy":
        import cupy

        info["gpu"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
        info["cupy"] = cupy.__version__
    return info


def _sync(xp) -> None:
    if xp.__name__ == "cupy":
        xp.cuda.Device().synchronize()


def _median_time(fn, xp, repeat: int) -> float:
    for _ in range(2):
        fn()
    _sync(xp)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(xp)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def time_round(problem: FederatedProblem, repeat: int) -> float:
    xp = problem.xp
    method = make_method("fedpm", {"K": 1, "eta": 1.0})
    theta = xp.asarray(np.random.default_rng(1).normal(size=problem.d) * 0.1)
    state, _ = method.start(problem, theta)
    ctx = round_context(problem)
    return _median_time(lambda: method.round(ctx, state), xp, repeat)


def time_matmul(flops: float, xp, repeat: int) -> tuple[int, float]:
    m = max(1, round((flops / 2) ** (1 / 3)))
    rng = np.random.default_rng(2)
    A, B = (xp.asarray(rng.normal(size=(m, m))) for _ in range(2))
    return m, _median_time(lambda: A @ B, xp, repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    ap.add_argument("--problems", default="a9a,w8a")
    args = ap.parse_args()
    builders = {"a9a": a9a, "w8a": w8a_shaped}
    info = machine(args.backend)
    print("# machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(
        f"{'problem':<12}{'N x n x d':>16}{'GFLOP':>8}{'s/round':>11}{'matmul m':>10}"
        f"{'s/matmul':>11}{'ratio':>8}{'GFLOP/s':>9}"
    )
    for name in args.problems.split(","):
        problem = builders[name]()
        problem.reference  # noqa: B018  (cached; not part of the timing)
        if args.backend == "cupy":
            problem = problem.to("cupy")
        flops = round_flops(problem)
        t_round = time_round(problem, args.repeat)
        m, t_mm = time_matmul(flops, problem.xp, args.repeat)
        shape = f"{problem.N}x{problem.A.shape[1]}x{problem.d}"
        print(
            f"{name:<12}{shape:>16}{flops / 1e9:>8.3f}{t_round:>11.4e}{m:>10d}{t_mm:>11.4e}"
            f"{t_round / t_mm:>8.2f}{flops / t_round / 1e9:>9.1f}"
        )


if __name__ == "__main__":
    main()
