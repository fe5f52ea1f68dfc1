"""Arbitrary precision with rigorous error radii: oracles, theta* and round maps in arb.

Built on python-flint's ``arb`` ball arithmetic: every number is a midpoint and a radius, and
every operation returns a ball that provably contains the exact result of the same operation on
any numbers inside its operands' balls. ``to_precise(problem, prec)`` reads a float64
:class:`~fedtheory.problem.FederatedProblem` into arb at ``prec`` bits; ``run_precise`` runs
one method on it and returns a :class:`PreciseTrace` whose errors go far below float64's floor
(1e-70 at 256 bits, 1e-150 at 512) with a rigorous radius on each. The maths is the float64
suite's, equation for equation (docs/algorithms.md: "Objectives", "Reference solution",
"Newton", "FedPM", "SOPM", "FedNL", "GIANT", "First-order baselines"); claim C18 of
docs/claims.md uses it. Intended for small problems (d up to ~50, a few thousand rows):
:func:`to_precise` refuses a problem whose estimated round time exceeds
``max_round_seconds``, naming the estimate.

The exact problem. The float64 data A, y and lam are taken as the exact (dyadic) numbers they
are; only the weights, which float64 rounds, are taken as the exact rationals they stand for:
the row weights 1/n_i and the client weights n_i / n (``weighting="samples"``) or 1/N.

What a radius means (the trajectory convention). By default each round map is evaluated in
ball arithmetic from an EXACT point, the midpoint of the previous round's ball, so the stored
iterates theta^t are exact dyadic vectors and the ball of round t encloses both theta^t and
Phi(theta^{t-1}), the exact round map applied to the previous stored iterate. A row's
``dist_to_opt`` ball therefore encloses ||theta^t - theta*|| and ||Phi(theta^{t-1}) - theta*||
together: every pair (e_{t-1}, e_t) that is resolved (radius small against the value) is a
rigorous measurement of the exact map's contraction at an exact point, which is what a Q-order
measures. ``carry_radius=True`` instead carries the balls from round to round, so every row
encloses the exact-arithmetic trajectory Phi^t(theta^0) itself; ball arithmetic cannot see that
Newton-type maps contract perturbations, so those radii grow by about the condition number
each round (the wrapping effect) and small errors go unresolved after a few rounds.

The reference solution (docs/algorithms.md "Reference solution", at precision). Logistic:
Newton at ``prec + guard`` bits (guard = 64 + log2(1/lam) bits) from the float64 theta*, until
||grad f|| <= 2^-prec max(1, ||grad f(0)||), then until the gradient stops shrinking at the
guard precision's floor (at most 3 more steps). Its midpoint theta~ is stored exactly with
rho = ||grad f(theta~)|| / lam, a rigorous bound on ||theta~ - theta*|| since f is
lam-strongly convex (lam > 0 is required), and f(theta~) - f* in [0, ||grad f(theta~)||^2 /
(2 lam)]. Ridge: theta* = H^{-1} A^T W y solved in ball arithmetic (any lam >= 0 with H
nonsingular), f(theta~) - f* = g~^T H^{-1} g~ / 2.

Metrics of a row, each an arb ball: dist_to_opt = ||theta - theta*|| (widened by rho),
rel_dist = dist / max(1, ||theta*||), grad_norm = ||grad f(theta)||, and subopt = f(theta) - f*,
the intersection of the direct difference and the Taylor form g~^T delta + delta^T H(B) delta / 2
+ (f(theta~) - f*), delta = theta - theta~, with H evaluated on a ball B holding the segment
[theta~, theta] (Lagrange remainder): the direct form is resolved only down to 2^-prec |f*|,
the Taylor form down to about e_t times the iterate's radius.

Methods (``make_method`` names and parameters, validated by the float64 classes; full
participation and the exact oracle only; the solves are arb's rigorous LU solves, whose ball
contains the exact solution, so the spec's Cholesky choice does not change the maths):

- ``newton`` (eta), ``gd`` (eta), ``giant`` (eta, ``line_search=False`` only);
- ``fedpm`` (K >= 1, eta, delta, mixing_preconditioner, preconditioner "hessian" or "foof",
  server_memory, which under full participation refreshes every pair: the same map); damped
  FedPM is eta < 1;
- ``sopm`` (K, eta, delta, preconditioner; ``local_search=False`` only: Armijo's comparisons
  are not exact);
- ``fednl`` with the identity compressor. Option 1's projection [H^k]_mu onto {X >= mu I},
  mu = lam, is exact without an eigendecomposition: a convex combination of Hessians
  H_i(x) >= lam I is >= lam I, so with ``init="hessian"`` (any alpha) the projection is the
  identity, and with ``init="zero"`` (alpha = 1 only) the first round's [0]_mu is mu I and
  every later one the identity. Option 2 with ``l_norm="frobenius"`` (the default) is exact.
  Refused: the spectral l_norm (an eigenvalue problem) and the rank-R / top-K compressors
  (eigenvectors, a ranking of entries).

Any other option (:data:`ARB_OPTIONS` lists those implemented) must keep its default: a new
option of a float64 method is refused until its arb round map is written.

Output (:meth:`PreciseTrace.to_csv`): one row per round with ``round``, then for each of
dist_to_opt, rel_dist, subopt, grad_norm a decimal midpoint string and a radius string
(``dist_radius``, ``rel_dist_radius``, ``subopt_radius``, ``grad_radius``), then ``seconds``.
The midpoint carries ceil(prec log10 2) + 1 significant digits and both strings are exact
decimals (from arb's ``mid_rad_10exp``) such that [mid - radius, mid + radius] contains the
ball: the CSV is itself a rigorous enclosure. ``float(s)`` gives the float64 view (0 below
1e-308); :func:`read_precise_csv` reads the balls back.

Rates in log-space: :func:`precise_q_order` and :func:`precise_linear_rate` fit
:func:`fedtheory.rates.q_order` / :func:`~fedtheory.rates.linear_rate` on log10 values computed
in arb, over the resolved prefix of the trace (a point is resolved when its radius is at most
``RESOLVED`` times its value; the first unresolved point ends the window, as the float floor
does in float64). :func:`successive_orders` gives q_t = log(e_{t+1}/e_t) / log(e_t/e_{t-1}).
"""

from __future__ import annotations

import csv
import dataclasses
import decimal
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ._io import write_atomic, write_together
from .errors import FactorizationError, FedTheoryError, check
from .methods import METHODS, FedNL, FedPM, Method, Newton, make_method
from .methods.first_order import GD
from .methods.sopm import SOPM
from .problem import FederatedProblem
from .rates import OrderFit, RateFit, asymptotic_window, linear_rate, q_order
from .validate import check_int

MIN_PREC = 64
#: A value is resolved when its radius is at most this fraction of it (its log is then known
#: to 1e-3): the rate fits drop every point from the first unresolved one on.
RESOLVED = 1e-3
#: Default refusal threshold of :func:`to_precise`: estimated seconds per round.
MAX_ROUND_SECONDS = 5.0
COLUMNS = ("dist_to_opt", "rel_dist", "subopt", "grad_norm")
RADIUS = {
    "dist_to_opt": "dist_radius",
    "rel_dist": "rel_dist_radius",
    "subopt": "subopt_radius",
    "grad_norm": "grad_radius",
}
CSV_COLUMNS = ("round", *(c for col in COLUMNS for c in (col, RADIUS[col])), "seconds")
STATUSES = ("completed", "diverged", "reached_floor")


# ------------------------------------------------------------------------------- python-flint


def python_flint_available() -> bool:
    """Whether python-flint (the ``flint`` module, arb ball arithmetic) can be imported."""
    try:
        import flint  # noqa: F401
    except ImportError:
        return False
    return True


def _flint() -> Any:
    try:
        import flint
    except ImportError:
        raise FedTheoryError(
            "the arbitrary-precision backend needs python-flint "
            "(pip install python-flint); it is not installed"
        ) from None
    return flint


# ------------------------------------------------------------------------------- cost model

# Seconds per operation at 256 bits on one core, measured by benchmarks/bench_precision.py
# (an arb multiply-add inside a matrix product, one Python-level arb multiplication per matrix
# entry, one row's exp/log1p/quotients); from 256 to 2048 bits a round costs about
# (bits / 256)^0.75 times more.
_MAC_S, _ENTRY_S, _ROW_S = 1.6e-8, 2.7e-7, 1.8e-6


def estimate_round_seconds(problem: FederatedProblem, prec: int, passes: float = 3.0) -> float:
    """Estimated seconds of one round at ``prec`` bits on one core: ``passes`` Hessian passes
    over all rows (FedPM K = 1 with run_precise's row metrics is about 3), each n d^2
    multiply-adds in an arb matrix product, n d entry scalings, n rows of elementwise functions
    and N d x d solves. Within a factor 2 of benchmarks/bench_precision.py's measurement on an
    unloaded core (a busy machine is slower)."""
    n, d, N = problem.n, problem.d, problem.N
    per_pass = n * d * d * _MAC_S + n * d * _ENTRY_S + n * _ROW_S + N * d**3 * _MAC_S
    return passes * per_pass * max(0.5, (prec / 256) ** 0.75)


# ------------------------------------------------------------------------------- arb helpers


def _col(values: Sequence[Any]) -> Any:
    """A column arb_mat (len, 1) from numbers or arb balls (floats convert exactly)."""
    return _flint().arb_mat([[v] for v in values])


def _norm(v: Any) -> Any:
    """||v||_2 of a column arb_mat, a ball clipped at 0 before the square root."""
    return (v.transpose() * v)[0, 0].nonnegative_part().sqrt()


def _eye(d: int, scale: Any) -> Any:
    flint = _flint()
    return flint.arb_mat([[scale if i == j else 0 for j in range(d)] for i in range(d)])


def _scale_rows(rows: list[list[Any]], v: Sequence[Any]) -> Any:
    """diag(v) A from A's rows: python-flint has no diagonal scaling of an arb_mat, so one
    multiplication per entry (about as costly as the Gram product that follows)."""
    return _flint().arb_mat([[vj * a for a in row] for vj, row in zip(v, rows, strict=True)])


def _mix(weights: Sequence[Any], mats: Sequence[Any]) -> Any:
    """sum_i w_i M_i."""
    out = weights[0] * mats[0]
    for w, M in zip(weights[1:], mats[1:], strict=True):
        out = out + w * M
    return out


def _solve(M: Any, b: Any, what: str) -> Any:
    """The ball of M^{-1} b: arb's preconditioned solve (Gaussian elimination on the system
    multiplied by an approximate inverse), whose radii are orders of magnitude tighter than
    plain LU's in ball arithmetic. FactorizationError when M's ball may hold a singular
    matrix."""
    try:
        return M.solve(b, algorithm="precond")
    except ZeroDivisionError:
        raise FactorizationError(
            f"the {what} cannot be certified nonsingular at this precision (its ball may hold "
            f"a singular matrix): raise prec, or use carry_radius=False"
        ) from None


def _upper(x: Any) -> float:
    """A float >= every point of the ball x (rounded outwards)."""
    u = float(x.upper())
    return math.nextafter(u, math.inf)


def _finite(v: Any) -> bool:
    return all(e.is_finite() for e in v.entries())


# ------------------------------------------------------------------------------- the problem


class _Rows(NamedTuple):
    """One block of rows: A (n x d), A^T, A's rows as lists of arb, the targets y (floats,
    exact) and the row weights c (exact rationals: 1/n_i for a client, w_i / n_i for the
    block of all rows)."""

    A: Any
    At: Any
    rows: list[list[Any]]
    y: list[float]
    c: list[Any]


class OracleOut(NamedTuple):
    """f, gradient (column arb_mat) and Hessian (arb_mat) balls; None where not asked for."""

    f: Any
    g: Any
    H: Any


@dataclass(frozen=True)
class PreciseReference:
    """theta* at precision: the exact midpoint ``theta_star`` (a column arb_mat) with a rigorous
    ``radius`` >= ||theta_star - theta*|| (an exact arb); f (``f_tilde``) and grad f
    (``g_tilde``) at theta_star; ``gap`` encloses f(theta_star) - f* and ``f_star`` f*;
    ``norm`` encloses ||theta*||; ``prec``: the bits used; ``newton_iters``."""

    theta_star: Any
    radius: Any
    f_tilde: Any
    g_tilde: Any
    gap: Any
    f_star: Any
    norm: Any
    prec: int
    newton_iters: int


class PreciseProblem:
    """A :class:`FederatedProblem` read into arb at ``prec`` bits (use :func:`to_precise`).

    Oracles take a column arb_mat theta (d, 1), exact or a ball, and must be called inside
    ``flint.ctx.workprec(prec)`` (the public functions of this module do that).
    """

    def __init__(self, problem: FederatedProblem, prec: int) -> None:
        flint = _flint()
        check(
            problem.objective in ("logistic", "ridge"),
            f"objective must be 'logistic' or 'ridge', got {problem.objective!r}",
        )
        check(
            problem.objective != "logistic" or problem.lam > 0,
            f"the arb backend encloses a logistic theta* through lam-strong convexity, but "
            f"problem {problem.name!r} has lam = {problem.lam:g}; use lam > 0",
        )
        self.problem, self.prec = problem, int(prec)
        self.name, self.objective = problem.name, problem.objective
        self.N, self.d, self.n = problem.N, problem.d, problem.n
        A = np.asarray(problem.A, dtype=np.float64)
        y = np.asarray(problem.y, dtype=np.float64)
        sizes = [int(s) for s in problem.sizes]
        self.lam = flint.arb(problem.lam)  # exact: a float64 is a dyadic number
        # the weights as exact rationals (fmpq), rounded only where used, at the caller's bits
        n = sum(sizes)
        self.weights = [
            flint.fmpq(s, n) if problem.weighting == "samples" else flint.fmpq(1, self.N)
            for s in sizes
        ]
        self.clients = [
            self._rows(A[i, :s], y[i, :s], [flint.fmpq(1, s)] * s) for i, s in enumerate(sizes)
        ]
        self.all = self._rows(
            np.concatenate([A[i, :s] for i, s in enumerate(sizes)]),
            np.concatenate([y[i, :s] for i, s in enumerate(sizes)]),
            [w / s for w, s in zip(self.weights, sizes, strict=True) for _ in range(s)],
        )
        self._ridge_H: dict[int, Any] = {}

    @staticmethod
    def _rows(A: np.ndarray, y: np.ndarray, c: list[Any]) -> _Rows:
        flint = _flint()
        rows = [[flint.arb(float(a)) for a in r] for r in A]
        M = flint.arb_mat(rows) if len(rows) else flint.arb_mat(0, A.shape[1])
        return _Rows(M, M.transpose(), rows, [float(v) for v in y], c)

    def __repr__(self) -> str:
        return (
            f"PreciseProblem({self.name!r}, {self.objective}, N={self.N}, d={self.d}, "
            f"n={self.n}, prec={self.prec})"
        )

    # ---- oracles (docs/algorithms.md "Objectives") -----------------------------------------
    def _losses(
        self, z: list[Any], y: list[float], value: bool, grad: bool, hess: bool
    ) -> tuple[list, list, list]:
        """Per row: loss, dloss/dz and d2loss/dz2 at the margins z."""
        if self.objective == "ridge":
            r = [zj - yj for zj, yj in zip(z, y, strict=True)]
            return [0.5 * rj * rj for rj in r] if value else [], r, []
        loss, d1, d2 = [], [], []
        for zj, yj in zip(z, y, strict=True):
            t = zj if yj > 0 else -zj  # t = y a^T theta, y in {-1, +1}
            # u = exp(-|t|) <= 1: log1p and the quotients below never overflow
            pos = t.mid() >= 0
            u = (-t).exp() if pos else t.exp()
            if value:
                loss.append(u.log1p() if pos else u.log1p() - t)  # log(1 + exp(-t))
            if grad:
                s = u / (1 + u) if pos else 1 / (1 + u)  # sigmoid(-t)
                d1.append(-s if yj > 0 else s)  # d/dz = -y sigmoid(-t)
            if hess:
                d2.append(u / ((1 + u) * (1 + u)))  # s (1 - s)
        return loss, d1, d2

    def _oracle(self, rows: _Rows, theta: Any, value: bool, grad: bool, hess: bool) -> OracleOut:
        z = (rows.A * theta).entries()
        loss, d1, d2 = self._losses(z, rows.y, value, grad, hess and self.objective != "ridge")
        c = rows.c
        f = None
        if value:
            reg = (theta.transpose() * theta)[0, 0] * self.lam / 2
            f = sum((cj * lj for cj, lj in zip(c, loss, strict=True)), reg)
        g = (
            rows.At * _col([cj * v for cj, v in zip(c, d1, strict=True)]) + self.lam * theta
            if grad
            else None
        )
        H = None
        if hess:
            if self.objective == "ridge":
                H = self._ridge_hessian(rows)
            else:
                H = rows.At * _scale_rows(rows.rows, [cj * v for cj, v in zip(c, d2, strict=True)])
                H = H + _eye(self.d, self.lam)
        return OracleOut(f, g, H)

    def _ridge_hessian(self, rows: _Rows) -> Any:
        key = (id(rows), _flint().ctx.prec)
        if key not in self._ridge_H:  # constant: A^T diag(c) A + lam I
            self._ridge_H[key] = rows.At * _scale_rows(rows.rows, rows.c) + _eye(self.d, self.lam)
        return self._ridge_H[key]

    def client_oracle(
        self, i: int, theta: Any, *, value: bool = False, grad: bool = True, hess: bool = False
    ) -> OracleOut:
        """f_i, g_i, H_i of client i at theta."""
        return self._oracle(self.clients[i], theta, value, grad, hess)

    def foof_preconditioner(self, i: int) -> Any:
        """FOOF's P_i = A_i^T A_i / n_i + lam I (ridge's Hessian on client i's rows), cached."""
        return self._ridge_hessian(self.clients[i])

    def global_oracle(
        self, theta: Any, *, value: bool = True, grad: bool = True, hess: bool = False
    ) -> OracleOut:
        """f, g, H of sum_i w_i f_i, as one product over all rows with the weights folded in
        (sum_i w_i = 1 exactly, so the regulariser is lam/2 ||theta||^2 once)."""
        return self._oracle(self.all, theta, value, grad, hess)

    # ---- reference solution -----------------------------------------------------------------
    @property
    def guard_bits(self) -> int:
        lam = float(self.problem.lam)
        return 64 + (math.ceil(math.log2(1 / lam)) if 0 < lam < 1 else 0)

    @cached_property
    def reference(self) -> PreciseReference:
        """theta* at ``prec + guard_bits`` bits with a rigorous radius (see the module doc)."""
        flint = _flint()
        wp = self.prec + self.guard_bits
        with flint.ctx.workprec(wp):
            if self.objective == "ridge":
                return self._ridge_reference(wp)
            return self._logistic_reference(wp)

    def _logistic_reference(self, wp: int) -> PreciseReference:
        theta = _col([float(v) for v in self.problem.reference.theta_star])
        g0 = self.global_oracle(_col([0.0] * self.d), value=False).g
        # exact binary numbers throughout: 2^-prec underflows a float64 from 1075 bits on
        tol = (_flint().arb(2) ** -self.prec * _norm(g0).mid().max(1)).upper()
        o = self.global_oracle(theta, hess=True)
        gnorm = _norm(o.g).upper()
        polish = 0
        for it in range(1, 101):  # noqa: B007 (it is reported below)
            step = _solve(o.H, o.g, "global Hessian")
            t = 1.0
            while True:  # the float64 reference's safeguard: a smaller gradient counts
                cand = (theta - t * step).mid()
                oc = self.global_oracle(cand, hess=True)
                gc = _norm(oc.g).upper()
                if gc < gnorm or gnorm <= tol or t < 1e-10:
                    break
                t *= 0.5
            if gc >= gnorm:  # no progress: the guard precision's floor, or a failure
                break
            theta, o, gnorm = cand, oc, gc
            if gnorm <= tol:
                polish += 1
                if polish == 3:
                    break
        check(
            gnorm <= tol,
            f"{self.name}: Newton at {wp} bits stopped at ||grad f|| <= "
            f"{_sci(gnorm, 4)} after {it} steps, above 2^-{self.prec} max(1, "
            f"||grad f(0)||) = {_sci(tol, 4)}",
        )
        radius = (gnorm / self.lam).upper()  # lam-strong convexity
        half_gap = (gnorm * gnorm / (4 * self.lam)).upper()
        gap = flint_ball(half_gap, half_gap)  # [0, ||g||^2 / (2 lam)]
        return self._make_reference(theta, o, radius, gap, wp, it)

    def _ridge_reference(self, wp: int) -> PreciseReference:
        H = self._ridge_hessian(self.all)
        arb = _flint().arb
        b = self.all.At * _col(
            [arb(yj) * cj for cj, yj in zip(self.all.c, self.all.y, strict=True)]
        )
        ball = _solve(H, b, "ridge Hessian")
        theta = ball.mid()
        radius = _norm(_col([e.rad() for e in ball.entries()])).upper()
        o = self.global_oracle(theta)
        gap = (o.g.transpose() * _solve(H, o.g, "ridge Hessian"))[0, 0] / 2
        return self._make_reference(theta, o, radius, gap, wp, 1)

    def _make_reference(
        self, theta: Any, o: OracleOut, radius: Any, gap: Any, wp: int, iters: int
    ) -> PreciseReference:
        if o.f is None:
            o = self.global_oracle(theta)
        return PreciseReference(
            theta_star=theta,
            radius=radius,
            f_tilde=o.f,
            g_tilde=o.g,
            gap=gap,
            f_star=o.f - gap,
            norm=_norm(theta) + flint_ball(0, radius),
            prec=wp,
            newton_iters=iters,
        )

    # ---- row metrics --------------------------------------------------------------------------
    def metrics(self, theta: Any) -> dict[str, Any]:
        """dist_to_opt, rel_dist, subopt, grad_norm balls at theta (exact or a ball): see the
        module docstring for what each encloses."""
        ref = self.reference
        delta = theta - ref.theta_star
        dist = _norm(delta) + flint_ball(0, ref.radius)
        one = _flint().arb(1)
        rel = dist / (ref.norm.max(one))
        o = self.global_oracle(theta, value=True, grad=True)
        direct = o.f - ref.f_star
        hull = _col(
            [a.union(b) for a, b in zip(theta.entries(), ref.theta_star.entries(), strict=True)]
        )
        HB = self.global_oracle(hull, value=False, grad=False, hess=True).H
        taylor = (
            (ref.g_tilde.transpose() * delta)[0, 0]
            + (delta.transpose() * (HB * delta))[0, 0] / 2
            + ref.gap
        )
        subopt = direct
        if taylor.is_finite():  # far from theta*, H(B) may overflow to [+- inf]: no help
            if not direct.overlaps(taylor):  # both enclose f(theta) - f*, if H = f''
                raise FedTheoryError(
                    f"the direct and the Taylor enclosures of f(theta) - f* are disjoint "
                    f"({direct.str(5)} and {taylor.str(5)}): the Hessian oracle does not "
                    f"match f (a wrong derivative)"
                )
            subopt = direct.intersection(taylor)
        return {"dist_to_opt": dist, "rel_dist": rel, "subopt": subopt, "grad_norm": _norm(o.g)}


def flint_ball(mid: Any, rad: Any) -> Any:
    """The arb ball [mid +- rad] (numbers or exact arbs; rad rounded up by arb)."""
    return _flint().arb(mid, rad)


def to_precise(
    problem: FederatedProblem, prec: int = 256, *, max_round_seconds: float = MAX_ROUND_SECONDS
) -> PreciseProblem:
    """``problem`` in arb at ``prec`` bits (>= 64, so the float64 data convert exactly).

    Refuses, before converting anything, a problem whose estimated round time
    (:func:`estimate_round_seconds`) exceeds ``max_round_seconds``. A CuPy problem is moved
    to the host first; sparse storage is read as its dense padded array.
    """
    _flint()
    check_int(prec, "prec", MIN_PREC, note=" bits")
    est = estimate_round_seconds(problem, int(prec))
    if est > max_round_seconds:
        raise FedTheoryError(
            f"problem {problem.name!r} (N = {problem.N}, n = {problem.n} rows, d = "
            f"{problem.d}) is too large for the arb backend at {prec} bits: estimated "
            f"{est:.3g} s per round (FedPM K = 1 with metrics; about {est * 20 / 60:.3g} min "
            f"for 20 rounds), above max_round_seconds = {max_round_seconds:g}. It is meant "
            f"for d up to ~50 and a few thousand rows: use a smaller problem, fewer bits, or "
            f"raise max_round_seconds"
        )
    if problem.backend != "numpy":
        problem = problem.to("numpy")
    return PreciseProblem(problem, int(prec))


# ------------------------------------------------------------------------------- round maps


class PreciseState(NamedTuple):
    theta: Any  # column arb_mat (d, 1)
    H_local: Any = None  # FedNL: list of the learned Hessians H_i^k (None: all zero)


def _local_newton(
    pp: PreciseProblem,
    theta: Any,
    K: int,
    eta: float,
    delta: float,
    preconditioner: str = "hessian",
) -> tuple[list, list, list]:
    """FedPM/SOPM client loop: theta_i^{k+1} = theta_i^k - eta (P_i^k)^{-1} g_i(theta_i^k) with
    P_i^k = H_i(theta_i^k) + delta I, or FOOF's constant A_i^T A_i / n_i + (lam + delta) I;
    returns theta_i^K, P_i^0 and P_i^{K-1} of every client."""
    foof = preconditioner == "foof"
    shift = _eye(pp.d, _flint().arb(delta)) if delta else None
    x, P_first, P = [theta] * pp.N, None, None
    for _ in range(K):
        outs = [pp.client_oracle(i, x[i], grad=True, hess=not foof) for i in range(pp.N)]
        P = [pp.foof_preconditioner(i) if foof else o.H for i, o in enumerate(outs)]
        P = [Pi + shift if shift is not None else Pi for Pi in P]
        x = [
            xi - eta * _solve(Pi, o.g, f"preconditioner of client {i}")
            for i, (xi, Pi, o) in enumerate(zip(x, P, outs, strict=True))
        ]
        P_first = P if P_first is None else P_first
    return x, P_first, P


def _newton_round(pp: PreciseProblem, m: Newton, st: PreciseState) -> PreciseState:
    """theta+ = theta - eta H(theta)^{-1} g(theta) (full participation: sum w_i H_i = H)."""
    o = pp.global_oracle(st.theta, value=False, grad=True, hess=True)
    return st._replace(theta=st.theta - m.eta * _solve(o.H, o.g, "global Hessian"))


def _fedpm_round(pp: PreciseProblem, m: FedPM, st: PreciseState) -> PreciseState:
    """P = sum w_i P_i, theta+ = P^{-1} sum w_i P_i theta_i^K (P_i per mixing_preconditioner;
    with server_memory the same map: under full participation every pair is refreshed)."""
    x, P_first, P_last = _local_newton(pp, st.theta, m.K, m.eta, m.delta, m.preconditioner)
    if m.mixing_preconditioner == "last" or m.preconditioner == "foof":
        P = P_last
    elif m.mixing_preconditioner == "start":
        P = P_first
    else:
        shift = _eye(pp.d, _flint().arb(m.delta))
        P = [pp.client_oracle(i, xi, grad=False, hess=True).H + shift for i, xi in enumerate(x)]
    rhs = _mix(pp.weights, [Pi * xi for Pi, xi in zip(P, x, strict=True)])
    return st._replace(theta=_solve(_mix(pp.weights, P), rhs, "mixed preconditioner"))


def _sopm_round(pp: PreciseProblem, m: SOPM, st: PreciseState) -> PreciseState:
    """theta+ = sum w_i theta_i^K."""
    x, _, _ = _local_newton(pp, st.theta, m.K, m.eta, m.delta, m.preconditioner)
    return st._replace(theta=_mix(pp.weights, x))


def _gd_round(pp: PreciseProblem, m: GD, st: PreciseState) -> PreciseState:
    """theta+ = theta - eta g(theta)."""
    return st._replace(theta=st.theta - m.eta * pp.global_oracle(st.theta, value=False).g)


def _fednl_round(pp: PreciseProblem, m: FedNL, st: PreciseState) -> PreciseState:
    """Identity compressor. x+ = x - [H^k]^{-1} g(x), H^k = sum w_i H_i^k made [H^k]_mu
    (option 1: H^k itself, or mu I when H^k = 0, see the module docstring) or H^k + l^k I
    (option 2, l^k = sum w_i ||H_i(x) - H_i^k||_F); then H_i^{k+1} = H_i^k + alpha
    (H_i(x) - H_i^k), at the old point x."""
    flint = _flint()
    outs = [pp.client_oracle(i, st.theta, grad=True, hess=True) for i in range(pp.N)]
    g = _mix(pp.weights, [o.g for o in outs])
    H_old = st.H_local if st.H_local is not None else [flint.arb_mat(pp.d, pp.d)] * pp.N
    diff = [o.H - Hi for o, Hi in zip(outs, H_old, strict=True)]
    if m.option == 2:
        l_k = sum(
            (w * _norm(_col(D.entries())) for w, D in zip(pp.weights, diff, strict=True)),
            flint.arb(0),
        )
        Hk = _mix(pp.weights, H_old) + _eye(pp.d, l_k)
    elif st.H_local is None:  # init = "zero": [0]_mu = mu I
        Hk = _eye(pp.d, pp.lam)
    else:
        Hk = _mix(pp.weights, H_old)
    alpha = m._alpha_fixed(pp.d)  # the float64 method's alpha for identity
    H_local = [Hi + alpha * D for Hi, D in zip(H_old, diff, strict=True)]
    return PreciseState(st.theta - _solve(Hk, g, "FedNL Hessian estimate"), H_local)


def _fednl_init(pp: PreciseProblem, m: FedNL, theta: Any) -> PreciseState:
    if m.init == "zero":
        return PreciseState(theta, None)
    return PreciseState(
        theta, [pp.client_oracle(i, theta, grad=False, hess=True).H for i in range(pp.N)]
    )


def _giant_round(pp: PreciseProblem, m: Method, st: PreciseState) -> PreciseState:
    """GIANT without line search: theta+ = theta - eta sum w_i H_i(theta)^{-1} g(theta)."""
    outs = [pp.client_oracle(i, st.theta, grad=True, hess=True) for i in range(pp.N)]
    g = _mix(pp.weights, [o.g for o in outs])
    p = _mix(pp.weights, [_solve(o.H, g, f"Hessian of client {i}") for i, o in enumerate(outs)])
    return st._replace(theta=st.theta - m.eta * p)


#: The arb round map of each method name (the float64 class of that name validates its
#: parameters; a subclass is refused: its maths may differ).
ROUND_MAPS: dict[str, Callable[..., PreciseState]] = {
    "newton": _newton_round,
    "gd": _gd_round,
    "fedpm": _fedpm_round,
    "sopm": _sopm_round,
    "fednl": _fednl_round,
    "giant": _giant_round,
}
#: The options each arb round map implements; any other option must keep its default (a new
#: option of a float64 method is refused here until its arb map is written).
ARB_OPTIONS: dict[str, tuple[str, ...]] = {
    "newton": ("eta",),
    "gd": ("eta",),
    "fedpm": ("K", "eta", "delta", "mixing_preconditioner", "server_memory", "preconditioner"),
    "sopm": ("K", "eta", "delta", "preconditioner"),
    "fednl": ("compressor", "alpha", "init", "option", "l_norm", "R", "Kc"),
    "giant": ("eta", "line_search"),
}


def _check_supported(m: Method) -> None:
    names = ", ".join(sorted(ROUND_MAPS))
    check(
        m.name in ROUND_MAPS and type(m) is METHODS.get(m.name),
        f"method {m.name!r} ({type(m).__name__}) has no arb round map; the arb backend "
        f"runs: {names}",
    )
    for f in dataclasses.fields(m):
        value = getattr(m, f.name)
        check(
            f.name in ARB_OPTIONS[m.name] or value == f.default,
            f"{m.name} option {f.name}={value!r} has no arb round map (only the default "
            f"{f.name}={f.default!r}; arb implements {', '.join(ARB_OPTIONS[m.name])})",
        )
    check(
        m.name != "giant" or not m.line_search,
        "giant in arb needs line_search=False (Armijo's comparisons are not exact in ball "
        "arithmetic)",
    )
    if isinstance(m, FedNL):
        check(
            m.compressor == "identity",
            f"fednl in arb supports compressor='identity' only (rank-R and top-K need "
            f"eigenvectors or a ranking of entries), got {m.compressor!r}",
        )
        check(
            m.option == 1 or m.l_norm == "frobenius",
            "fednl option 2 in arb needs l_norm='frobenius' (the spectral norm needs an "
            "eigenvalue problem), got l_norm='spectral'",
        )
        check(
            m.option == 2 or m.init == "hessian" or m._alpha_fixed(2) == 1.0,
            f"fednl option 1 with init='zero' needs alpha = 1 in arb (otherwise the "
            f"projection [H^k]_mu is not provably the identity), got alpha = {m.alpha!r}",
        )


# ------------------------------------------------------------------------------- the trace


@dataclass
class PreciseTrace:
    """Rows of one arb run: ``round``, ``seconds`` (cumulative round-map time) and one arb ball
    per column of :data:`COLUMNS`; ``status`` (one of :data:`STATUSES`) and ``meta``.

    ``trace[col]`` is the float64 view (midpoints, 0 below 1e-308), ``trace[RADIUS[col]]`` the
    radii (floats rounded up), ``trace.log10(col)`` log10 of the midpoints computed in arb,
    ``trace.balls(col)`` the balls themselves.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    status: str = "completed"
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def balls(self, column: str) -> list[Any]:
        check(column in COLUMNS, f"unknown column {column!r}; arb columns: {', '.join(COLUMNS)}")
        return [r[column] for r in self.rows]

    def __getitem__(self, column: str) -> np.ndarray:
        if column in ("round", "seconds"):
            return np.array([r[column] for r in self.rows], dtype=float)
        for col, rad in RADIUS.items():
            if column == rad:
                return np.array([_upper(b.rad()) for b in self.balls(col)])
        return np.array([float(b.mid()) for b in self.balls(column)])

    def log10(self, column: str = "dist_to_opt", *, radius: bool = False) -> np.ndarray:
        """log10 of each midpoint (or, with ``radius``, of each radius), computed in arb:
        finite far below float64's 1e-308; -inf where the value is <= 0."""
        flint = _flint()
        out = []
        with flint.ctx.workprec(64):
            for b in self.balls(column):
                m = b.rad() if radius else b.mid()
                out.append(float(m.log_base(10).mid()) if m > 0 else -math.inf)
        return np.array(out)

    def resolved(self, column: str = "dist_to_opt", rel_radius: float = RESOLVED) -> np.ndarray:
        """Whether each value is resolved: midpoint > 0 and radius <= rel_radius * midpoint."""
        return np.array([_resolved(b, rel_radius) for b in self.balls(column)])

    def decimals(self, column: str) -> list[tuple[str, str]]:
        """(midpoint, radius) exact decimal strings of each ball (see the module docstring)."""
        digits = math.ceil(self.meta.get("prec", 256) * math.log10(2)) + 1
        return [_decimal_ball(b, digits) for b in self.balls(column)]

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write :data:`CSV_COLUMNS` to ``path`` atomically; returns the path."""
        return write_atomic(path, self.csv_writer())

    def csv_writer(self) -> Callable[[str], None]:
        """A writer of :data:`CSV_COLUMNS` into a given file (for :mod:`fedtheory._io`)."""
        cols = {c: self.decimals(c) for c in COLUMNS}

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(CSV_COLUMNS)
                for t, r in enumerate(self.rows):
                    writer.writerow(
                        [
                            r["round"],
                            *(s for c in COLUMNS for s in cols[c][t]),
                            repr(float(r["seconds"])),
                        ]
                    )

        return write

    def table(
        self, columns: tuple[str, ...] = ("dist_to_opt", "subopt", "grad_norm"), digits: int = 6
    ) -> str:
        """Fixed-width text: round, then each column as mid +- radius (``digits`` digits) and
        whether it is resolved (``*`` marks an unresolved value)."""
        w = digits + 20
        lines = [f"{'round':>6}" + "".join(f"{c:>{w}}" for c in columns)]
        for r in self.rows:
            cells = []
            for c in columns:
                b = r[c]
                mark = " " if _resolved(b, RESOLVED) else "*"
                cells.append(f"{_sci(b.mid(), digits)} +- {_sci(b.rad(), 2, up=True)}{mark}")
            lines.append(f"{r['round']:>6d}" + "".join(f"{c:>{w}}" for c in cells))
        return "\n".join(lines)


def _resolved(b: Any, rel_radius: float) -> bool:
    return bool(b.mid() > 0 and b.rad() <= rel_radius * b.mid())


def _sci_int(m: int, e: int) -> str:
    """The exact decimal m * 10^e in scientific notation."""
    if m == 0:
        return "0"
    sign, s = ("-" if m < 0 else ""), str(abs(m))
    s_trim = s.rstrip("0") or "0"
    e += len(s) - len(s_trim)
    exp = e + len(s_trim) - 1
    mant = s_trim[0] + ("." + s_trim[1:] if len(s_trim) > 1 else "")
    return f"{sign}{mant}e{exp:+d}"


def _decimal_ball(b: Any, digits: int) -> tuple[str, str]:
    m, r, e = b.mid_rad_10exp(digits)
    return _sci_int(int(m), int(e)), _sci_int(int(r), int(e))


def _sci(x: Any, digits: int, *, up: bool = False) -> str:
    """x (an exact arb) as d.dddde-XX with ``digits`` significant digits, for display: rounded
    to nearest, or upwards (``up``, for radii)."""
    if x == 0:
        return "0"
    m, _, e = x.mid_rad_10exp(digits + 2)
    exact = decimal.Decimal(_sci_int(int(m), int(e)))
    with decimal.localcontext() as dc:
        dc.prec, dc.rounding = digits, (decimal.ROUND_CEILING if up else decimal.ROUND_HALF_EVEN)
        mant, exp = f"{+exact:.{digits - 1}e}".split("e")
    return f"{mant}e{int(exp):+03d}"


def read_precise_csv(path: str | os.PathLike, prec: int = 256) -> list[dict[str, Any]]:
    """The rows of a :meth:`PreciseTrace.to_csv` file: ``round`` (int), ``seconds`` (float)
    and one arb ball per column of :data:`COLUMNS`, enclosing the file's decimal ball at
    ``prec`` bits."""
    flint = _flint()
    out = []
    with open(path, newline="", encoding="utf-8") as fh, flint.ctx.workprec(prec):
        for row in csv.DictReader(fh):
            rec: dict[str, Any] = {"round": int(row["round"]), "seconds": float(row["seconds"])}
            for c in COLUMNS:
                rec[c] = flint.arb(row[c], row[RADIUS[c]])
            out.append(rec)
    return out


# ------------------------------------------------------------------------------- the run


def run_precise(
    problem: FederatedProblem | PreciseProblem,
    method_name: str,
    params: dict[str, Any] | None = None,
    rounds: int = 20,
    prec: int = 256,
    seed: int = 0,
    *,
    theta0: Any = None,
    carry_radius: bool = False,
    stop_at_floor: bool = False,
    diverge_factor: float = 1e8,
    max_round_seconds: float = MAX_ROUND_SECONDS,
) -> PreciseTrace:
    """Run ``method_name`` (with ``params``, as :func:`fedtheory.methods.make_method` parses
    them) for ``rounds`` rounds in arb at ``prec`` bits; row 0 is theta0 (default 0).

    ``problem`` is a float64 problem (converted by :func:`to_precise`, which may refuse it as
    too large) or a :class:`PreciseProblem` of the same ``prec`` (reusing its theta*). Full
    participation and the exact oracle: nothing is random, ``seed`` is only recorded. See the
    module docstring for ``carry_radius`` and for what each ball encloses. A round whose
    iterate is farther than ``diverge_factor`` max(1, ||theta^0 - theta*||, ||theta*||) from
    theta* (or not finite) ends the run with status "diverged"; its row is not written.
    ``stop_at_floor``: end the run (status "reached_floor") after the first round whose
    dist_to_opt is not resolved (radius > RESOLVED x value): the precision's floor.
    """
    flint = _flint()
    method = make_method(method_name, params)
    _check_supported(method)
    check_int(rounds, "rounds", 0)
    if isinstance(problem, PreciseProblem):
        check(
            problem.prec == prec,
            f"the PreciseProblem is at {problem.prec} bits but prec = "
            f"{prec}; pass prec={problem.prec} or convert again",
        )
        pp = problem
    else:
        pp = to_precise(problem, prec, max_round_seconds=max_round_seconds)
    ref = pp.reference
    with flint.ctx.workprec(pp.prec):
        x0 = np.zeros(pp.d) if theta0 is None else np.asarray(theta0, dtype=np.float64)
        check(x0.shape == (pp.d,), f"theta0 must have shape ({pp.d},), got {x0.shape}")
        theta = _col([float(v) for v in x0])
        state = _fednl_init(pp, method, theta) if isinstance(method, FedNL) else PreciseState(theta)
        step = ROUND_MAPS[method.name]
        first = pp.metrics(theta)
        scale = max(1.0, float(ref.norm.mid()))
        bound = diverge_factor * max(scale, float(first["dist_to_opt"].mid()))
        trace = PreciseTrace(
            rows=[{"round": 0, "seconds": 0.0, **first}],
            meta=_meta(pp, method, rounds, seed, carry_radius),
        )
        seconds = 0.0
        for t in range(1, rounds + 1):
            start = time.perf_counter()
            try:
                state = step(pp, method, state)
            except FactorizationError:
                if not _finite(state.theta):
                    trace.status = "diverged"
                    break
                raise
            seconds += time.perf_counter() - start
            if not _finite(state.theta) or float(_norm(state.theta - ref.theta_star).mid()) > bound:
                trace.status = "diverged"
                break
            trace.rows.append({"round": t, "seconds": seconds, **pp.metrics(state.theta)})
            if stop_at_floor and not _resolved(trace.rows[-1]["dist_to_opt"], RESOLVED):
                trace.status = "reached_floor"
                break
            if not carry_radius:
                state = state._replace(theta=state.theta.mid())
    trace.meta["status"] = trace.status
    return trace


def _meta(
    pp: PreciseProblem, method: Method, rounds: int, seed: int, carry_radius: bool
) -> dict[str, Any]:
    ref = pp.reference
    return {
        "problem": pp.name,
        "method": method.name,
        "params": method.params(),
        "rounds": rounds,
        "participation": pp.N,
        "N": pp.N,
        "d": pp.d,
        "n": pp.n,
        "seed": seed,
        "oracle": "exact",
        "backend": "arb",
        "prec": pp.prec,
        "carry_radius": carry_radius,
        "reference_prec": ref.prec,
        "theta_star_radius": _sci(ref.radius, 3, up=True),
        "theta_star_norm": float(ref.norm.mid()),
        "reference_newton_iters": ref.newton_iters,
    }


def main_run_precise(
    problem: FederatedProblem,
    method_name: str,
    params: dict[str, Any] | None,
    rounds: int,
    prec: int,
    seed: int = 0,
    out: str | os.PathLike | None = None,
) -> int:
    """``fedtheory run PROBLEM --method M --precision BITS [--out FILE.csv]``: run, print a
    header and :meth:`PreciseTrace.table`, write the CSV (and FILE.json with the metadata)."""
    import json

    trace = run_precise(problem, method_name, params, rounds, prec, seed)
    m = trace.meta
    params_txt = ", ".join(f"{k}={v}" for k, v in m["params"].items())
    print(
        f"# {problem!r} in arb at {prec} bits (theta* at {m['reference_prec']} bits, "
        f"radius {m['theta_star_radius']})"
    )
    print(
        f"# method {m['method']}({params_txt}), S = {m['N']}, status {trace.status}; "
        f"mid +- rigorous radius, * = unresolved (radius > {RESOLVED:g} x value)"
    )
    print(trace.table())
    if out is not None:
        path = Path(out)
        meta = path.with_suffix(".json")
        text = json.dumps(m, indent=2, default=str)
        write_together([(meta, lambda tmp: Path(tmp).write_text(text)), (path, trace.csv_writer())])
        print(f"# wrote {path} and {meta}")
    return 0


# ------------------------------------------------------------------------------- rates


def resolved_stop(
    trace: PreciseTrace, column: str = "dist_to_opt", rel_radius: float = RESOLVED
) -> int:
    """The number of leading rows whose ``column`` is resolved (the first unresolved row and
    everything after it are dropped, as the float floor drops rows in float64)."""
    ok = trace.resolved(column, rel_radius)
    return int(np.argmin(ok)) if not ok.all() else ok.size


def _powered(log10_e: np.ndarray) -> tuple[np.ndarray, int]:
    """e^(1/k) as floats, with k the smallest integer keeping them above float64's smallest
    normal number. log e^(1/k) = (log e) / k: a Q-order fit is unchanged by that scaling of
    both axes, a linear rate's ratio becomes q^(1/k)."""
    arr = np.asarray(log10_e, dtype=np.float64)
    check(
        arr.ndim == 1 and bool(np.isfinite(arr).all()),
        "log10 errors must be a 1-D array of finite values",
    )
    k = max(1, math.ceil(float(np.max(np.abs(arr), initial=0.0)) / 300))
    return 10.0 ** (arr / k), k


def q_order_log10(
    log10_e: Sequence[float],
    *,
    window: slice | tuple[int, int] | None = None,
    tol: float = 0.1,
    min_points: int = 3,
    level: float = 0.95,
) -> OrderFit:
    """:func:`fedtheory.rates.q_order` of errors given by their log10 (any size: 1e-5000 is
    fine). Without ``window`` the window is :func:`~fedtheory.rates.asymptotic_window` with
    ``tol`` and ``min_points`` and no floor (drop unresolved points before calling)."""
    e, k = _powered(np.asarray(log10_e, dtype=np.float64))
    if window is None:
        window = asymptotic_window(e, floor=0.0, tol=tol / k, min_points=min_points)
    fit = q_order(e, window=window, level=level)
    return replace(fit, log_C=fit.log_C * k, residual_std=fit.residual_std * k)


def precise_q_order(
    trace: PreciseTrace, column: str = "dist_to_opt", *, rel_radius: float = RESOLVED, **kw: Any
) -> OrderFit:
    """Q-order of ``column`` over the asymptotic window of its resolved prefix
    (:func:`q_order_log10` with ``kw``)."""
    stop = resolved_stop(trace, column, rel_radius)
    return q_order_log10(trace.log10(column)[:stop], **kw)


def precise_linear_rate(
    trace: PreciseTrace,
    column: str = "dist_to_opt",
    *,
    rel_radius: float = RESOLVED,
    window: slice | tuple[int, int] | None = None,
    tol: float = 0.1,
    min_points: int = 3,
    level: float = 0.95,
) -> RateFit:
    """:func:`fedtheory.rates.linear_rate` of the resolved prefix of ``column``, in log-space
    like :func:`precise_q_order`."""
    stop = resolved_stop(trace, column, rel_radius)
    e, k = _powered(trace.log10(column)[:stop])
    if window is None:
        window = asymptotic_window(e, floor=0.0, tol=tol / k, min_points=min_points)
    fit = linear_rate(e, window=window, level=level)
    return replace(
        fit,
        q=fit.q**k,
        ci=(fit.ci[0] ** k, fit.ci[1] ** k),
        log_e0=fit.log_e0 * k,
        residual_std=fit.residual_std * k,
        ratios=tuple(r**k for r in fit.ratios),
        median_ratio=fit.median_ratio**k,
    )


def successive_orders(log10_e: Sequence[float]) -> np.ndarray:
    """q_t = log(e_{t+1} / e_t) / log(e_t / e_{t-1}) for t = 1..T-2 (NaN at t = 0 and T-1, and
    where e_t = e_{t-1}); it tends to the Q-order of a sequence that has one."""
    x = np.asarray(log10_e, dtype=np.float64)
    q = np.full(x.size, np.nan)
    if x.size >= 3:
        num, den = x[2:] - x[1:-1], x[1:-1] - x[:-2]
        with np.errstate(divide="ignore", invalid="ignore"):
            q[1:-1] = np.where(den != 0, num / den, np.nan)
    return q


__all__ = [
    "ARB_OPTIONS",
    "COLUMNS",
    "CSV_COLUMNS",
    "MAX_ROUND_SECONDS",
    "RADIUS",
    "RESOLVED",
    "STATUSES",
    "OracleOut",
    "PreciseProblem",
    "PreciseReference",
    "PreciseState",
    "PreciseTrace",
    "ROUND_MAPS",
    "estimate_round_seconds",
    "main_run_precise",
    "precise_linear_rate",
    "precise_q_order",
    "python_flint_available",
    "q_order_log10",
    "read_precise_csv",
    "resolved_stop",
    "run_precise",
    "successive_orders",
    "to_precise",
]
