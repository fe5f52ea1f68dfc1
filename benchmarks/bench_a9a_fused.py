"""The a9a FedPM K = 1 round with the fused sparse logistic oracle, and without, side by side.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_a9a_fused.py [--runs 5] [--repeat 15]
        [--json FILE]

Issue 14 asks for one FedPM K = 1 round on the a9a FedNL split (``bench_peers.py``'s ``a9a``,
sparse storage: 80 clients x 407 rows, d = 123) at <= 0.5x a matmul of equal dense flops.
For sparse data :func:`fedtheory.objectives.logistic` now makes one compiled pass over each
client's rows (:func:`fedtheory.kernels.csr_logistic`); ``old`` below is the unfused path it
replaced (``margins`` + NumPy ``_logistic_terms`` + ``rmatvec`` + ``gram``: three passes over
the rows and four (m, n_max) temporaries). This script times, in one process and interleaved:

- ``oracle``: gradient + client Hessians (FedPM's call) at a random per-client point
  (N(0, 0.1)), old and new; both results are checked to agree to 1e-13 relative;
- ``global``: value + gradient + the weighted-sum Hessian (Newton's and the metrics' call);
- ``round``: one FedPM K = 1 round (consecutive rounds of one method state, as in
  ``bench_peers.py``), old (``objectives._logistic_sparse`` replaced for that call) and new in
  turn, each right after the matmul of ``bench_peers.py``'s flop model (ratio = round /
  matmul), so that every round starts with the caches the matmul left, as in ``bench_peers.py``.

Cost: CPU core-seconds (``time.process_time``), the median over ``--repeat`` calls after one
warm-up, per run; ``--runs`` runs, and the median over the runs of each figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_a9a_gram import interleaved_main, swapped, timed  # noqa: E402
from bench_peers import a9a, flops, matmul_runner, round_runner  # noqa: E402

from fedtheory import objectives  # noqa: E402
from fedtheory.objectives import OracleOut  # noqa: E402

_fused = objectives._logistic_sparse


def old_logistic_sparse(A, y, sw, lam, theta, value, grad, hess, hess_weights) -> OracleOut:
    """The sparse logistic oracle before the fusion (objectives.logistic's generic path)."""
    loss, grad_w, hess_w = objectives._logistic_terms(objectives.margins(A, theta), y, sw, np)
    f = g = H = None
    r_val, r_grad = objectives._reg(theta, A.shape[0], lam, np)
    if value:
        f = np.sum(sw * loss, axis=1) + r_val
    if grad:
        g = r_grad - objectives.rmatvec(A, grad_w)
    if hess:
        H = objectives.gram(A, hess_w, lam, hess_weights)
    return OracleOut(f, g, H)


def _check(a: OracleOut, b: OracleOut) -> None:
    for x, y in zip(a, b, strict=True):
        if (x is None) != (y is None) or (
            x is not None and np.max(np.abs(x - y)) > 1e-13 * np.max(np.abs(y))
        ):
            raise AssertionError("the fused oracle differs from the unfused one")


def one_run(repeat: int, rng: np.random.Generator) -> dict:
    problem = a9a("sparse")
    A, y, sw, lam, w = problem.A, problem.y, problem.sw, problem.lam, problem.weights
    m, _, d = A.shape
    theta, theta0 = rng.normal(0, 0.1, (m, d)), rng.normal(0, 0.1, d)
    fedpm = dict(value=False, grad=True, hess=True, hess_weights=None)
    glob = dict(value=True, grad=True, hess=True, hess_weights=w)
    for at, kw in ((theta, fedpm), (theta0, glob)):
        _check(_fused(A, y, sw, lam, at, **kw), old_logistic_sparse(A, y, sw, lam, at, **kw))
    step = round_runner(problem, "fedpm")

    def old_round() -> None:
        with swapped(objectives, "_logistic_sparse", old_logistic_sparse):
            step()

    _, mm = matmul_runner(flops("fedpm", problem))
    parts = {
        "oracle_old": lambda: old_logistic_sparse(A, y, sw, lam, theta, **fedpm),
        "oracle_new": lambda: _fused(A, y, sw, lam, theta, **fedpm),
        "global_old": lambda: old_logistic_sparse(A, y, sw, lam, theta0, **glob),
        "global_new": lambda: _fused(A, y, sw, lam, theta0, **glob),
    }
    return timed(parts, {"round_old": old_round, "round_new": step}, mm, repeat)


if __name__ == "__main__":
    interleaved_main(one_run, __doc__)
