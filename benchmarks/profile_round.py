"""Time the parts of one FedPM K = 1 round (oracle, Hessian product, Cholesky, solves, mixing).

    python benchmarks/profile_round.py [--backend numpy|cupy] [--problem a9a|w8a]

A diagnostic for benchmarks/bench_round.py: medians of 20 timings after warm-up.
"""

from __future__ import annotations

import argparse

import numpy as np

from bench_round import _median_time, a9a, w8a_shaped
from fedtheory.linalg import cho_solve, cholesky


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--problem", default="w8a")
    args = ap.parse_args()
    problem = {"a9a": a9a, "w8a": w8a_shaped}[args.problem]()
    problem.reference  # noqa: B018
    if args.backend == "cupy":
        problem = problem.to("cupy")
    xp = problem.xp
    theta = xp.asarray(np.random.default_rng(1).normal(size=problem.d) * 0.1)
    o = problem.oracle(theta, grad=True, hess=True)
    A = problem.A
    v = xp.ones(A.shape[:2])
    L = cholesky(o.H)
    parts = {
        "oracle g only": lambda: problem.oracle(theta, grad=True),
        "oracle g + H": lambda: problem.oracle(theta, grad=True, hess=True),
        "A * v copy": lambda: A * v[:, :, None],
        "batched A^T (vA)": lambda: xp.matmul(A.transpose(0, 2, 1), A * v[:, :, None]),
        "cholesky": lambda: cholesky(o.H),
        "2 triangular solves": lambda: cho_solve(L, o.g),
        "mix P theta_i": lambda: xp.tensordot(
            problem.weights, xp.matmul(o.H, o.g[:, :, None]), axes=1
        ),
    }
    for name, fn in parts.items():
        print(f"{name:<22}{_median_time(fn, xp, 20) * 1e3:>10.3f} ms")


if __name__ == "__main__":
    main()
