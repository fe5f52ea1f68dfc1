"""A federated problem: client data, weights, exact oracles and the reference solution.

``FederatedProblem`` holds N clients' data (see :mod:`fedtheory.objectives` for the two
layouts), the client weights w_i (``weighting="samples"``: n_i / n, ``"uniform"``: 1 / N) and
evaluates f_i, g_i, H_i for any subset of clients at once. Its :attr:`reference` is the solution
of docs/algorithms.md "Reference solution", computed once and cached.

Storage (``storage=`` of :meth:`~FederatedProblem.from_clients` and
:meth:`~FederatedProblem.from_dataset`): ``"sparse"`` keeps the rows in one CSR matrix
(:class:`~fedtheory.objectives.ClientCSR`), ``"dense"`` pads them into one (N, n_max, d) array,
``"auto"`` (default) picks sparse when at most :data:`SPARSE_DENSITY` of the entries are
non-zero (LIBSVM data such as a9a, 11 %, and w8a, 3.9 %). Both give the same oracles up to
rounding (about 1e-15 relative); ``problem.storage`` says which one a problem uses.

The backend travels with the arrays: a problem built from NumPy arrays computes on NumPy;
``problem.to("cupy")`` returns the same problem with its arrays on the GPU, in the dense layout
(sparse data are padded on the way; ``.to("numpy")`` of that problem gives the sparse one back).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp

from ._backend import to_numpy, xp_of
from ._types import Array, ArrayModule
from .errors import ConditioningWarning, FactorizationError, FedTheoryError, check
from .linalg import spd_solve
from .objectives import ORACLES, ClientCSR, OracleOut
from .resources import available_memory
from .validate import check_choice, check_nonneg

WEIGHTINGS = ("samples", "uniform")
STORAGES = ("auto", "dense", "sparse")
#: ``storage="auto"`` keeps the data sparse when at most this fraction of the entries is
#: non-zero. Measured on the 2-core development machine (BENCHMARKS.md "Second round"), one
#: logistic oracle with Hessians on w8a-shaped random data (142 x 350 rows, d = 300): sparse
#: 81 ms against dense (BLAS dsyrk) 113 ms at density 0.2, 111 against 116 ms at 0.25, 151
#: against 116 ms at 0.3.
SPARSE_DENSITY = 0.2
#: Above this condition number kappa = L / mu of the global Hessian at theta*, ``reference``
#: warns (:class:`~fedtheory.errors.ConditioningWarning`): a float64 solve is then accurate only
#: to about kappa * 2.2e-16 relative, so errors below that floor are rounding, not convergence.
KAPPA_WARN = 1e8


@dataclass(frozen=True)
class Reference:
    """theta*, f*, ||grad f(theta*)||, mu = lambda_min(H(theta*)), L = lambda_max, L_H bound."""

    theta_star: np.ndarray
    f_star: float
    grad_norm: float
    mu: float
    L: float
    L_H: float
    newton_iters: int

    @property
    def kappa(self) -> float:
        return self.L / self.mu


class FederatedProblem:
    """N clients of an L2 logistic or ridge objective.

    Parameters are the arrays of :mod:`fedtheory.objectives`: ``A`` (N, n_max, d), padded
    or a :class:`~fedtheory.objectives.ClientCSR`, ``y`` (N, n_max), ``sw`` (N, n_max) with
    sw_ij = 1/n_i on real rows and 0 on padding. Use :meth:`from_dataset` or
    :meth:`from_clients` rather than this constructor.
    """

    def __init__(
        self,
        A: Array | ClientCSR,
        y: Array,
        sw: Array,
        sizes: Sequence[int],
        *,
        objective: str,
        lam: float,
        weighting: str = "samples",
        name: str = "problem",
        spec: dict | None = None,
    ) -> None:
        check_choice(objective, "objective", sorted(ORACLES))
        check_choice(weighting, "weighting", WEIGHTINGS)
        check_nonneg(lam, "lam")
        self.A, self.y, self.sw = A, y, sw
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.objective, self.lam, self.weighting = objective, float(lam), weighting
        self.name, self.spec = name, spec or {}
        w = self.sizes / self.sizes.sum() if weighting == "samples" else np.full(self.N, 1 / self.N)
        self.weights = xp_of(A).asarray(w)
        self._oracle = ORACLES[objective]

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_clients(
        cls,
        Xs: Sequence[Any],
        ys: Sequence[Any],
        *,
        objective: str,
        lam: float,
        weighting: str = "samples",
        name: str = "problem",
        spec: dict | None = None,
        storage: str = "auto",
    ) -> FederatedProblem:
        """Build from one (X_i, y_i) per client; X_i dense or scipy.sparse, float64.

        ``storage``: "dense", "sparse" or "auto" (sparse when at most
        :data:`SPARSE_DENSITY` of the entries are non-zero); see the module docstring.
        """
        check_choice(storage, "storage", STORAGES)
        check(
            len(Xs) == len(ys) and len(Xs) >= 1,
            f"need one target vector per client and at least one client, got {len(Xs)} "
            f"design matrices and {len(ys)} target vectors",
        )
        Xs = [
            sp.csr_matrix(X, dtype=np.float64)
            if sp.issparse(X)
            else np.asarray(X, dtype=np.float64)
            for X in Xs
        ]
        ys = [np.asarray(v, dtype=np.float64).ravel() for v in ys]
        d = Xs[0].shape[1] if Xs[0].ndim == 2 else 0
        check(
            d >= 1,
            f"the data have no features (client 0's design matrix has shape "
            f"{Xs[0].shape}): a problem needs d >= 1",
        )
        for i, (X, v) in enumerate(zip(Xs, ys, strict=True)):
            check(
                X.ndim == 2 and X.shape[1] == d,
                f"client {i}: design matrix must be (n_i, {d}), got shape {X.shape}",
            )
            check(X.shape[0] >= 1, f"client {i} is empty: every client needs at least one sample")
            check(
                X.shape[0] == v.shape[0], f"client {i}: {X.shape[0]} rows but {v.shape[0]} targets"
            )
            values = X.data if sp.issparse(X) else X
            check(bool(np.isfinite(values).all()), f"client {i}: the data contain NaN or inf")
            check(bool(np.isfinite(v).all()), f"client {i}: the targets contain NaN or inf")
            if objective == "logistic":
                bad = v[(v != 1.0) & (v != -1.0)]
                if bad.size:
                    raise FedTheoryError(
                        f"client {i}: logistic labels must be -1 or +1, got {bad[0]!r}"
                    )
        sizes = [X.shape[0] for X in Xs]
        N, n_max = len(Xs), max(sizes)
        if storage == "auto":
            nnz = sum(X.count_nonzero() if sp.issparse(X) else np.count_nonzero(X) for X in Xs)
            storage = "sparse" if nnz <= SPARSE_DENSITY * sum(sizes) * d else "dense"
        y = np.zeros((N, n_max))
        sw = np.zeros((N, n_max))
        for i, v in enumerate(ys):
            y[i, : len(v)], sw[i, : len(v)] = v, 1.0 / len(v)
        if storage == "sparse":
            X = sp.vstack([sp.csr_matrix(X) for X in Xs], format="csr", dtype=np.float64)
            X.eliminate_zeros()
            _check_memory(N, n_max, d, data_bytes=12 * X.nnz)
            A = ClientCSR(X, np.concatenate([[0], np.cumsum(sizes)]), n_max)
        else:
            _check_memory(N, n_max, d)  # before densifying anything
            A = np.zeros((N, n_max, d))
            for i, X in enumerate(Xs):
                A[i, : X.shape[0]] = X.toarray() if sp.issparse(X) else X
        return cls(
            A, y, sw, sizes, objective=objective, lam=lam, weighting=weighting, name=name, spec=spec
        )

    @classmethod
    def from_dataset(
        cls, X: Array | sp.spmatrix, y: Array, parts: Sequence[np.ndarray], **kw: Any
    ) -> FederatedProblem:
        """Build from a design matrix X (n, d), targets y (n,) and a partition of the rows;
        keywords as :meth:`from_clients` (``storage`` included)."""
        n = X.shape[0]
        check(len(parts) <= n, f"more clients ({len(parts)}) than samples ({n})")
        X = X.tocsr() if sp.issparse(X) else np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        return cls.from_clients([X[p] for p in parts], [y[p] for p in parts], **kw)

    def to(self, backend: str) -> FederatedProblem:
        """The same problem with its arrays on ``backend`` ("numpy" or "cupy")."""
        check(backend in ("numpy", "cupy"), f"backend must be 'numpy' or 'cupy', got {backend!r}")
        if backend == "cupy":
            import cupy as xp

            move = xp.asarray
        else:
            move = to_numpy
        new = object.__new__(FederatedProblem)
        new.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_H_const"})
        new.y, new.sw, new.weights = (move(a) for a in (self.y, self.sw, self.weights))
        host_csr = self.__dict__.get("_host_csr")  # the sparse data of a problem sent to a GPU
        if isinstance(self.A, ClientCSR):
            if backend == "cupy":  # CuPy computes on the dense layout
                new._host_csr, new.A = self.A, move(self.A.toarray())
        elif backend == "numpy" and host_csr is not None:
            new.A = host_csr
            del new._host_csr
        else:
            new.A = move(self.A)
        return new

    # ---- sizes --------------------------------------------------------------------------
    @property
    def N(self) -> int:
        return self.A.shape[0]

    @property
    def d(self) -> int:
        return self.A.shape[2]

    @property
    def n(self) -> int:
        return int(self.sizes.sum())

    @property
    def xp(self) -> ArrayModule:
        return xp_of(self.y)

    @property
    def storage(self) -> str:
        """ "sparse" (rows in one CSR matrix) or "dense" (padded (N, n_max, d) array)."""
        return "sparse" if isinstance(self.A, ClientCSR) else "dense"

    @property
    def backend(self) -> str:
        return "numpy" if self.xp is np else "cupy"

    def __repr__(self) -> str:
        return (
            f"FederatedProblem({self.name!r}, {self.objective}, N={self.N}, d={self.d}, "
            f"n={self.n}, lam={self.lam:g}, backend={self.backend}, storage={self.storage})"
        )

    # ---- oracles ------------------------------------------------------------------------
    @cached_property
    def _H_const(self) -> Array:
        return ORACLES["ridge"](
            self.A,
            self.y,
            self.sw,
            self.lam,
            self.xp.zeros(self.d),
            value=False,
            grad=False,
            hess=True,
        ).H

    def oracle(
        self,
        theta: Array,
        clients: Array | None = None,
        *,
        value: bool = False,
        grad: bool = True,
        hess: bool = False,
        hess_weights: Array | None = None,
    ) -> OracleOut:
        """f_i, g_i, H_i of the given clients (all when ``clients`` is None).

        ``theta`` is (d,) or (m, d) with one row per selected client. Ridge Hessians are
        constant and served from a cache (do not modify them in place). With ``hess_weights``
        w (m,) (on the problem's backend), H is the one matrix sum_i w_i H_i (d, d), built
        without the (m, d, d) stack (all a method that only mixes the Hessians needs).
        A host ``theta`` is moved to the problem's backend.
        """
        theta = self.xp.asarray(theta)
        sel = slice(None) if clients is None else clients
        A, y, sw = (
            (self.A, self.y, self.sw)
            if clients is None
            else (
                self.A.take(clients) if isinstance(self.A, ClientCSR) else self.A[sel],
                self.y[sel],
                self.sw[sel],
            )
        )
        const_hess = hess and self.objective == "ridge" and hess_weights is None
        out = self._oracle(
            A,
            y,
            sw,
            self.lam,
            theta,
            value=value,
            grad=grad,
            hess=hess and not const_hess,
            hess_weights=hess_weights,
        )
        if const_hess:
            out = out._replace(H=self._H_const[sel])
        return out

    def global_oracle(
        self, theta: Array, *, value: bool = True, grad: bool = True, hess: bool = False
    ) -> OracleOut:
        """f, g, H of the global objective sum_i w_i f_i at one point theta (d,).

        The Hessian is built as one product over all rows with the client weights folded in,
        never as the (N, d, d) stack of client Hessians.
        """
        w = self.weights
        o = self.oracle(theta, value=value, grad=grad, hess=hess, hess_weights=w)
        return OracleOut(
            None if o.f is None else w @ o.f,
            None if o.g is None else w @ o.g,
            o.H,
        )

    def value(self, theta: Array) -> float:
        return float(self.global_oracle(theta, grad=False).f)

    # ---- reference solution -------------------------------------------------------------
    @cached_property
    def reference(self) -> Reference:
        """docs/algorithms.md "Reference solution": centralised Newton, Cholesky solves, float64.

        Logistic: Newton from theta = 0 with a backtracking safeguard (a step is accepted when
        it satisfies Armijo's condition or reduces ||grad f||, so every step near theta* is a
        full Newton step) until
        ||grad f|| <= 1e-13 max(1, ||grad f(0)||). Ridge: the first Newton step from 0 is the
        closed form; further steps only refine it to the same tolerance. Warns
        :class:`~fedtheory.errors.ConditioningWarning` when kappa = L / mu > :data:`KAPPA_WARN`.
        """
        host = self if self.backend == "numpy" else self.to("numpy")
        start = host.global_oracle(np.zeros(host.d), hess=True)
        _refuse_overflow(host, start)
        try:
            theta, iters = _newton_solve(host, np.zeros(host.d))
        except FactorizationError as exc:
            raise FactorizationError(f"{self.name}: {exc}") from None
        o = host.global_oracle(theta, hess=True)
        ev = _certify(host, theta, o, start)
        kappa = ev[-1] / ev[0]
        if kappa > KAPPA_WARN:
            eps = np.finfo(np.float64).eps
            warnings.warn(
                f"{self.name}: the global Hessian at theta* has condition number kappa = L/mu "
                f"= {kappa:.3g} (L = {ev[-1]:.3g}, mu = {ev[0]:.3g}), above {KAPPA_WARN:.0e}: "
                f"in float64 theta* and every iterate are accurate only to about kappa * eps "
                f"= {kappa * eps:.1e} relative, so smaller errors are rounding, not convergence",
                ConditioningWarning,
                stacklevel=2,
            )
        return Reference(
            theta_star=theta,
            f_star=float(o.f),
            grad_norm=float(np.linalg.norm(o.g)),
            mu=float(ev[0]),
            L=float(ev[-1]),
            L_H=host._hessian_lipschitz(),
            newton_iters=iters,
        )

    def _hessian_lipschitz(self) -> float:
        if self.objective == "ridge":
            return 0.0
        if isinstance(self.A, ClientCSR):
            X, sizes = self.A.X, self.sizes
            owner = np.repeat(np.arange(self.N), sizes)  # client of each row
            norms3 = np.zeros((self.N, self.A.n_max))
            norms3[owner, np.arange(X.shape[0]) - self.A.row_start[owner]] = (
                np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel()) ** 3
            )
        else:
            norms3 = np.linalg.norm(to_numpy(self.A), axis=2) ** 3
        per_client = (to_numpy(self.sw) * norms3).sum(axis=1)
        return float(to_numpy(self.weights) @ per_client / (6 * math.sqrt(3)))


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: no check
        return None


def memory_estimate(N: int, n_max: int, d: int, data_bytes: float | None = None) -> float:
    """Bytes a run on N clients of up to n_max rows and d features allocates at its peak, in
    float64: the data (``data_bytes``, by default the padded (N, n_max, d) array), the targets
    and row weights (two (N, n_max) arrays), the oracle's temporaries (the Hessian product
    weights a copy of the data's rows), the client Hessian stack (N, d, d) and a second stack
    of that size for the factorisation and solve of a method's round."""
    data = 8.0 * N * n_max * d if data_bytes is None else float(data_bytes)
    return 2 * data + 16.0 * N * n_max + 2 * 8.0 * N * d * d


def _check_memory(N: int, n_max: int, d: int, data_bytes: float | None = None) -> None:
    """Refuse a problem whose run cannot fit in the memory available now
    (:func:`~fedtheory.resources.available_memory`; the machine's total where that is
    unknown), by :func:`memory_estimate`."""
    need = memory_estimate(N, n_max, d, data_bytes)
    free, what = available_memory(), "available"
    if free is None:
        free, what = _physical_memory(), "total"
    layout = "the padded data" if data_bytes is None else "the sparse data"
    check(
        free is None or need <= free,
        f"N = {N} clients of up to {n_max} rows with d = {d} features need "
        f"{need / 2**30:.3g} GiB ({layout}, the oracle's temporaries and two (N, d, d) stacks "
        f"of client Hessians, float64), more than the {free / 2**30 if free else 0:.3g} GiB "
        f"of memory {what} on this machine; use fewer features or clients",
    )


#: Logistic with lam = 0 has no minimiser when mu = lambda_min(H(theta)) at the returned point
#: is below this fraction of lambda_max(H(0)): the loss flattens out because ||theta|| has run
#: off towards infinity (separable data), not because a minimiser was found.
SEPARABLE_MU = 1e-12


def _largest_feature(problem: FederatedProblem) -> float:
    values = problem.A.X.data if isinstance(problem.A, ClientCSR) else to_numpy(problem.A)
    return float(np.abs(values).max(initial=0.0))


def _finite(o: OracleOut) -> bool:
    return all(v is None or bool(np.isfinite(v).all()) for v in o)


def _refuse_overflow(problem: FederatedProblem, o: OracleOut) -> None:
    """Refuse data whose objective, gradient or Hessian at theta = 0 is not finite in float64
    (features so large that x^T x or the Hessian overflows): no reference solution exists."""
    if not _finite(o):
        raise FedTheoryError(
            f"{problem.name}: the objective, gradient or Hessian at theta = 0 is not finite in "
            f"float64 (overflow: the largest |feature| is {_largest_feature(problem):.3g}), so "
            f"no reference solution can be computed (it would be NaN); rescale the features"
        )


def _no_minimiser(problem: FederatedProblem, theta: np.ndarray, detail: str) -> FedTheoryError:
    return FedTheoryError(
        f"{problem.name}: logistic objective with lam = 0 has no minimiser: the data are "
        f"linearly separable, so f decreases towards its infimum while ||theta|| grows without "
        f"bound (the reference Newton reached ||theta|| = {np.linalg.norm(theta):.3g}, "
        f"{detail}); use lam > 0"
    )


def _certify(
    problem: FederatedProblem, theta: np.ndarray, o: OracleOut, start: OracleOut
) -> np.ndarray:
    """The eigenvalues of H(theta*) once theta*, f*, grad f(theta*) are finite, ||grad f|| is
    within the tolerance and mu > 0 (relative to L for logistic with lam = 0); else an error."""
    tol = 1e-13 * max(1.0, float(np.linalg.norm(start.g)))
    if not (_finite(o) and bool(np.isfinite(theta).all())):
        raise FedTheoryError(
            f"{problem.name}: the reference solution is not finite (theta*, f* or the gradient "
            f"is NaN or inf: overflow, largest |feature| {_largest_feature(problem):.3g}); "
            f"rescale the features"
        )
    gnorm = float(np.linalg.norm(o.g))
    check(
        gnorm <= tol,
        f"{problem.name}: the reference solution is not certified: "
        f"||grad f(theta*)|| = {gnorm:.3e} is above the tolerance {tol:.3e}",
    )
    ev = np.linalg.eigvalsh(o.H)
    L0 = float(np.linalg.eigvalsh(start.H)[-1])
    if problem.objective == "logistic" and problem.lam == 0 and ev[0] <= SEPARABLE_MU * L0:
        raise _no_minimiser(
            problem,
            theta,
            f"where mu = lambda_min(H) = {ev[0]:.3g} is {ev[0] / L0:.1e} times lambda_max(H(0))",
        )
    check(
        ev[0] > 0 and math.isfinite(ev[-1] / ev[0]),
        f"{problem.name}: the global Hessian at theta* is not positive definite (mu = "
        f"lambda_min = {ev[0]:.3g}, L = {ev[-1]:.3g}): theta* is not a unique minimiser; "
        f"use lam > 0",
    )
    return ev


def _newton_solve(
    problem: FederatedProblem, theta: np.ndarray, max_iter: int = 100
) -> tuple[np.ndarray, int]:
    o = problem.global_oracle(theta, hess=True)
    tol = 1e-13 * max(1.0, float(np.linalg.norm(o.g)))
    best = math.inf
    for it in range(1, max_iter + 1):
        step = spd_solve(o.H, o.g, what="global Hessian", hint="use lam > 0")
        slope = float(o.g @ step)
        t = 1.0
        while True:
            cand = problem.global_oracle(theta - t * step, hess=True)
            # near theta* the decrease of f drowns in rounding: a smaller gradient also counts
            if (
                cand.f <= o.f - 1e-4 * t * slope
                or t < 1e-10
                or np.linalg.norm(cand.g) < np.linalg.norm(o.g)
            ):
                break
            t *= 0.5
        theta, o = theta - t * step, cand
        gnorm = float(np.linalg.norm(o.g))
        if gnorm <= tol:
            return theta, it
        if not _finite(o) or (gnorm >= best and it > 20):
            break
        best = min(best, gnorm)
    if problem.objective == "logistic" and problem.lam == 0:
        raise _no_minimiser(
            problem,
            theta,
            f"||grad f|| = {gnorm:.3e} still above the tolerance {tol:.3e} after {it} iterations",
        )
    raise FedTheoryError(
        f"reference Newton stopped at ||grad f|| = {gnorm:.3e} above the tolerance {tol:.3e} "
        f"after {it} iterations ({problem.name}); the problem may be too ill-conditioned"
    )
