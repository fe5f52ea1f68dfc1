"""Helpers the checks share, so that no check re-implements them: the method under test, one
round of a method at a chosen point, the limit of a round map, heterogeneous problems built from
a data set, and the body of every check's pytest test."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._backend import to_numpy
from ..errors import FedTheoryError, check
from ..methods.base import Method, make_method, round_context
from ..problem import FederatedProblem
from ..runner import iterate
from ..threads import blas_threads
from .record import ClaimRecord

_BACKEND: ContextVar[str] = ContextVar("fedtheory_claim_backend", default="numpy")


@contextmanager
def claim_backend(backend: str) -> Iterator[None]:
    """Inside the block, the problems the checks build (:func:`load_problem`,
    :func:`heterogeneous_problem`, :func:`on_backend`) live on ``backend`` ("numpy" or "cupy"):
    ``fedtheory check --backend cupy``. Analysis stays on the host (``to_numpy``)."""
    check(backend in ("numpy", "cupy"), f"backend must be 'numpy' or 'cupy', got {backend!r}")
    token = _BACKEND.set(backend)
    try:
        yield
    finally:
        _BACKEND.reset(token)


def on_backend(problem: FederatedProblem) -> FederatedProblem:
    """``problem`` on the checks' backend (:func:`claim_backend`); itself when already there."""
    backend = _BACKEND.get()
    return problem if problem.backend == backend else problem.to(backend)


def load_problem(name: str) -> FederatedProblem:
    """A suite problem (or TOML file) on the checks' backend (:func:`claim_backend`)."""
    from ..suite import load_problem as load

    return on_backend(load(name))


MethodFactory = Callable[..., Method]
"""Builds the method under test from keyword hyperparameters, e.g. ``factory(K=1, eta=1.0)``.
Every check accepts one (``method_factory=``) so that a deliberately broken method can be
injected (tests/test_claims_mutations.py) without touching globals."""


def single_threaded_blas() -> Any:
    """Run the block with one BLAS thread (:func:`fedtheory.threads.blas_threads`).

    The checks multiply many small batched matrices; a multi-threaded OpenBLAS gains nothing
    there and, on a busy machine (CI, several test processes), its spinning threads slow the
    checks down by an order of magnitude. Results do not depend on it beyond rounding order.
    """
    return blas_threads(1)


def assert_claim(check_fn: Callable[..., ClaimRecord]) -> ClaimRecord:
    """The body of every check module's ``test_claim``: run ``check_fn(quick=True)`` with one
    BLAS thread and assert that the claim passes, with the record's details as the message."""
    with single_threaded_blas():
        rec = check_fn(quick=True)
    assert isinstance(rec, ClaimRecord), f"check returned {type(rec).__name__}"
    assert rec.passed, rec.explain()
    return rec


def assert_claim_fails(claim_id: str, **inject: Any) -> ClaimRecord:
    """Run a claim's quick check with a deliberately broken method (or constant) injected
    through ``inject`` and assert that it FAILS; returns the record (for the mutation tests:
    every check must be able to fail)."""
    from .checks import load_check

    with single_threaded_blas():
        rec = load_check(claim_id).check(quick=True, **inject)
    check(isinstance(rec, ClaimRecord), f"check {claim_id} returned {type(rec).__name__}")
    if rec.passed or rec.verdict != "FAIL":
        raise AssertionError(f"{claim_id} passed with a broken method:\n{rec.explain()}")
    return rec


def fedpm_factory(**params: Any) -> Method:
    """The default method under test of most claims: FedPM with ``params``."""
    return make_method("fedpm", params)


def sopm_factory(**params: Any) -> Method:
    """Simple mixing (SOPM) with ``params``: the method under test of C4 and C5."""
    return make_method("sopm", params)


def one_round(
    problem: FederatedProblem,
    method: Method,
    theta: Any,
    *,
    clients: Sequence[int] | None = None,
    state: Any = None,
) -> Any:
    """theta+ of one round of ``method`` from ``theta`` (or from ``state``) with participants
    ``clients`` (None: all), weights renormalised over them as the runner does."""
    xp = problem.xp
    if state is None:
        state, _ = method.start(problem, xp.asarray(theta, dtype=xp.float64))
    sel = None if clients is None else np.sort(np.asarray(clients))
    new_state, _ = method.round(round_context(problem, sel), state)
    return new_state.theta


@dataclass(frozen=True)
class Limit:
    """Where a method's round map stops moving: its last iterate, the rounds it took, the last
    step ||theta^{t+1} - theta^t|| and whether that step met the tolerance."""

    theta: np.ndarray
    rounds: int
    last_step: float
    converged: bool


def limit_point(
    problem: FederatedProblem,
    method: Method,
    *,
    theta0: Any = None,
    max_rounds: int = 500,
    tol: float = 1e-13,
) -> Limit:
    """Iterate ``method`` (full participation, exact oracle) from ``theta0`` (default 0) until
    ||theta^{t+1} - theta^t|| <= tol * max(1, ||theta^{t+1}||), or ``max_rounds``, or a
    non-finite iterate (converged = False).

    The runner's Trace logs distances only; the limit itself is needed here, so this reads
    the iterates of the runner's own loop (:func:`fedtheory.runner.iterate`).
    """
    xp = problem.xp
    step, theta = math.inf, theta0
    for s in iterate(problem, method, rounds=max_rounds, theta0=theta0):
        theta = s.state.theta
        step = float(xp.linalg.norm(theta - s.before.theta))
        if not math.isfinite(step):
            return Limit(to_numpy(theta), s.t, step, False)
        if step <= tol * max(1.0, float(xp.linalg.norm(theta))):
            return Limit(to_numpy(theta), s.t, step, True)
    return Limit(to_numpy(theta), max_rounds, step, False)


def heterogeneous_problem(
    dataset: str,
    *,
    clients: int,
    alpha: float | None,
    seed: int = 0,
    lam: float = 1e-3,
    rows: int | None = None,
    min_size: int = 2,
    weighting: str = "samples",
    objective: str = "logistic",
) -> FederatedProblem:
    """A logistic problem on ``dataset`` ("a9a", "phishing" or "breast_cancer"; first ``rows``
    rows for the LIBSVM ones) split over ``clients`` with Dirichlet(``alpha``) label skew
    (``alpha=None``: IID), reproducible from ``seed``. Breast cancer is standardised with an
    intercept column."""
    from .. import data, partitions

    if dataset == "a9a":
        ds = data.load_a9a(rows=rows)
    elif dataset == "phishing":
        ds = data.load_phishing(rows=rows)
    elif dataset == "breast_cancer":
        ds = data.load_breast_cancer(standardize=True, intercept=True)
    else:
        raise FedTheoryError(
            f"dataset must be 'a9a', 'phishing' or 'breast_cancer', got {dataset!r}"
        )
    if alpha is None:
        parts = partitions.iid(ds.n, clients, seed=seed)
        split = "iid"
    else:
        parts = partitions.dirichlet(ds.y, clients, alpha=alpha, seed=seed, min_size=min_size)
        split = f"dirichlet{alpha:g}"
    name = f"{dataset}{'' if rows is None else rows}_{split}_N{clients}_s{seed}"
    return on_backend(
        FederatedProblem.from_dataset(
            ds.X, ds.y, parts, objective=objective, lam=lam, weighting=weighting, name=name
        )
    )


def scale_of(problem: FederatedProblem) -> float:
    """||theta*||, the scale of the float floor and of relative distances."""
    return float(np.linalg.norm(problem.reference.theta_star))


def sopm_limit(
    problem: FederatedProblem,
    factory: MethodFactory = sopm_factory,
    *,
    K: int = 1,
    etas: Sequence[float] = (1.0, 0.5, 0.25),
    max_rounds: int = 1000,
    tol: float = 1e-13,
) -> tuple[Limit, float]:
    """The limit of ``factory(K=K, eta=eta)`` from 0, trying each eta of ``etas`` in turn until
    one converges; returns the limit and the eta that reached it.

    For K = 1 the fixed points of SOPM do not depend on eta (theta = theta - eta r(theta) iff
    r(theta) = sum w_i P_i^{-1} g_i = 0), so a smaller eta is only a safer way to the same
    limit when eta = 1 oscillates.
    """
    lim = None
    for eta in etas:
        lim = limit_point(problem, factory(K=K, eta=eta), max_rounds=max_rounds, tol=tol)
        if lim.converged:
            return lim, eta
    return lim, etas[-1]


def local_newton_residual(problem: FederatedProblem, theta: Any) -> np.ndarray:
    """r(theta) = sum_i w_i H_i(theta)^{-1} g_i(theta): zero exactly at SOPM's K = 1 fixed
    points (delta = 0)."""
    from ..linalg import spd_solve

    o = problem.oracle(problem.xp.asarray(theta), grad=True, hess=True)
    return to_numpy(problem.weights @ spd_solve(o.H, o.g))
