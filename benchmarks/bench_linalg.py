"""Choose the Cholesky path per backend: library routine vs blocked, and the round time with each.

    python benchmarks/bench_linalg.py [--backend numpy|cupy]

Prints, for the a9a FedNL split (d = 123) and the w8a-shaped problem (d = 300): the median time
of the client-Hessian stack's factorisation with the library routine and with blocks of 32, 64
and 128, and one FedPM K = 1 round with each setting.
"""

from __future__ import annotations

import argparse

import numpy as np

from bench_round import _median_time, a9a, time_round, w8a_shaped
from fedtheory import linalg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    for name, build in (("a9a", a9a), ("w8a", w8a_shaped)):
        problem = build()
        problem.reference  # noqa: B018
        if args.backend == "cupy":
            problem = problem.to("cupy")
        xp = problem.xp
        theta = xp.asarray(np.random.default_rng(1).normal(size=problem.d) * 0.1)
        H = problem.oracle(theta, grad=False, hess=True).H
        for block in (None, 32, 64, 128):
            t_chol = _median_time(lambda b=block, H=H: linalg.cholesky(H, block=b), xp,
                                  args.repeat)
            linalg.CHOLESKY_BLOCK[args.backend] = block
            t_round = time_round(problem, args.repeat)
            print(f"{name:<5} d={problem.d:<4} block={block!s:<5} cholesky {t_chol * 1e3:8.3f} ms"
                  f"   round {t_round * 1e3:8.3f} ms")


if __name__ == "__main__":
    main()
