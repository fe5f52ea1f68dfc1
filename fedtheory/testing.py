"""Random federated problems for property-based tests and for the claim checks.

``make_problem(seed, ...)`` builds a small heterogeneous problem (clients of unequal sizes,
shifted feature means, client-specific label models) deterministically from a seed;
``problems()`` is the matching Hypothesis strategy (docs/algorithms.md / docs/claims.md C1 protocol:
logistic and ridge, N in 2..8, d in 2..10, heterogeneous clients).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from .problem import FederatedProblem


def make_problem(
    seed: int,
    *,
    objective: str = "logistic",
    N: int = 4,
    d: int = 5,
    lam: float = 1e-2,
    min_rows: int = 3,
    max_rows: int = 25,
    heterogeneity: float = 1.0,
    weighting: str = "samples",
) -> FederatedProblem:
    """A small heterogeneous problem: clients of unequal sizes, shifted feature means and
    client-specific label models (so client optima differ), built from ``seed``."""
    rng = np.random.default_rng(seed)
    Xs, ys = [], []
    w_common = rng.normal(size=d)
    for _ in range(N):
        n_i = int(rng.integers(min_rows, max_rows + 1))
        X = rng.normal(size=(n_i, d)) * rng.uniform(0.5, 2.0, size=d) + heterogeneity * rng.normal(
            size=d
        )
        w_i = w_common + heterogeneity * rng.normal(size=d)
        if objective == "logistic":
            y = np.where(X @ w_i + 0.5 * rng.normal(size=n_i) >= 0, 1.0, -1.0)
        else:
            y = X @ w_i + 0.1 * rng.normal(size=n_i)
        Xs.append(X)
        ys.append(y)
    return FederatedProblem.from_clients(
        Xs, ys, objective=objective, lam=lam, weighting=weighting, name=f"random-{objective}-{seed}"
    )


@st.composite
def problems(
    draw: st.DrawFn,
    objectives: tuple[str, ...] = ("logistic", "ridge"),
    N: tuple[int, int] = (2, 8),
    d: tuple[int, int] = (2, 10),
) -> FederatedProblem:
    """Hypothesis strategy: random heterogeneous logistic or ridge problems (docs/algorithms.md)."""
    return make_problem(
        draw(st.integers(0, 2**31 - 1)),
        objective=draw(st.sampled_from(objectives)),
        N=draw(st.integers(*N)),
        d=draw(st.integers(*d)),
        lam=draw(st.sampled_from([1e-3, 1e-2, 1e-1])),
        heterogeneity=draw(st.sampled_from([0.0, 0.5, 2.0])),
        weighting=draw(st.sampled_from(["samples", "uniform"])),
    )
