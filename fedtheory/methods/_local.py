"""Local computations shared by the second-order methods (docs/algorithms.md).

- :func:`local_steps`, the ONE client loop of FedPM, SOPM, FedPAC and FedSophia (the model is
  :func:`.first_order.local_gd`): client i in S_t starts from theta_i^0 = theta and, for
  k = 0..K-1,

      (state_i^{k+1}, P_i^k) = curvature update at theta_i^k     (a :class:`Curvature`)
      p_i^k = the curvature's direction from g_i(theta_i^k)
      theta_i^{k+1} = theta_i^k - eta_i^k p_i^k - c_i(theta_i^k)   (``correction`` c, if any)

  with eta_i^k = eta, or (``line_search=True``, LocalNewton, Gupta et al. 2021) Armijo
  backtracking on f_i (:func:`armijo`): start at eta, halve until f_i decreases by
  >= 1e-4 * step * g^T p. The curvature rules:

  - :class:`ExactHessian`: P_i^k = H_i(theta_i^k) + delta I, p = P^{-1} g (FedPM, SOPM; the
    default ``preconditioner="hessian"``);
  - :class:`Foof`: P_i = A_i^T A_i / n_i + (lam + delta) I, constant (``"foof"``, FOOF in
    docs/algorithms.md), no Hessian evaluated;
  - :class:`HessianEMA`: Theta_i^{k+1} = rho Theta_i^k + (1 - rho) H_i(theta_i^k), P from
    Theta_i^{k+1} or Theta_i^k, p = P^{-1} g (FedPAC);
  - :class:`DiagonalEMA`: Sophia's elementwise m_i, h_i EMAs and clipped step (FedSophia).

  :func:`local_newton_steps` is FedPM's and SOPM's call of it.
- :func:`solve_local_subproblem`, the exact local solve of DANE (docs/algorithms.md#dane):
  argmin_w f_i(w) - <c_i, w> + (mu/2) ||w - theta||^2 by Newton's method.
- :func:`backtrack`, a server-level backtracking line search along one direction (GIANT).

All participants step at once (batched); nothing loops over clients in Python.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from .._backend import block_bytes, to_numpy, xp_of
from ..linalg import add_diag, spd_solve
from ..objectives import OracleOut
from ..validate import check_choice
from .base import RoundContext

ARMIJO_C = 1e-4
MAX_HALVINGS = 60
PRECONDITIONERS = ("hessian", "foof")
EPS = float(np.finfo(np.float64).eps)

#: DANE's inner solve: relative gradient tolerance (docs/algorithms.md#dane), the rounding
#: allowance of the residual (in units of eps times the size of its cancelling terms) and the
#: iteration cap.
#: A block of a stack computed at once: at most 1 / BLOCK_FRACTION of the stack and
#: ``_backend.block_bytes`` (2 MiB on the host).
BLOCK_FRACTION = 8


def client_blocks(stack: Any) -> list[tuple[int, int]]:
    """(lo, hi) ranges over the leading axis of ``stack`` (m, d, d) whose matrices take at most
    ``block_bytes(stack)`` and 1 / BLOCK_FRACTION of the stack's bytes (at least one matrix
    each)."""
    m = stack.shape[0]
    per = max(1, stack.nbytes // max(1, m))
    step = max(1, min(block_bytes(stack), stack.nbytes // BLOCK_FRACTION) // per)
    return [(lo, min(m, lo + step)) for lo in range(0, m, step)]


SUBPROBLEM_RTOL = 1e-12
SUBPROBLEM_FLOOR = 64.0
SUBPROBLEM_MAX_ITER = 50


class LocalRun(NamedTuple):
    theta: Any  # theta_i^K, (m, d)
    P_first: Any  # P_i^0 as the curvature represents it ((m, d, d); DiagonalEMA: (m, d))
    P_last: Any  # P_i^{K-1}
    grad_evals: int  # totals over participants
    hess_evals: int
    curvature: Any = None  # the curvature's state after step K-1 (FedPAC's Theta_i^K, ...)


class Curvature(Protocol):
    """How a client's preconditioner evolves over its local steps (the rule of one round).

    ``initial(ctx)``: its state before step 0; ``needs_hessian(k)``: whether step k evaluates
    H_i(theta_i^k); ``update(ctx, state, g, H, k)``: the state after step k's curvature update
    (H is None when not evaluated); ``direction(ctx, state, g)``: the step direction p (m, d)
    and the preconditioner P it used.
    """

    def initial(self, ctx: RoundContext) -> Any: ...

    def needs_hessian(self, k: int) -> bool: ...

    def update(self, ctx: RoundContext, state: Any, g: Any, H: Any, k: int) -> Any: ...

    def direction(self, ctx: RoundContext, state: Any, g: Any) -> tuple[Any, Any]: ...


def check_preconditioner(preconditioner: Any) -> None:
    check_choice(preconditioner, "preconditioner", PRECONDITIONERS)


def foof_preconditioners(ctx: RoundContext, delta: float) -> Any:
    """P_i = A_i^T A_i / n_i + (lam + delta) I of the participants, (m, d, d).

    The uncentred covariance of client i's inputs (all its rows, whatever the oracle) plus the
    regulariser: constant in theta, no oracle call. These Gram matrices are exactly ridge's
    Hessians on the same rows, which the problem builds once and caches, so they are computed
    once per problem, not per round. Do not modify the result in place (it may be the cache).
    """
    gram = ctx.problem._H_const  # sum_j sw_ij a_j a_j^T + lam I, cached on the problem
    if ctx.clients is not None:
        gram = gram[ctx.problem.xp.asarray(ctx.clients)]
    return add_diag(gram, delta)


@dataclass(frozen=True)
class ExactHessian:
    """P_i^k = H_i(theta_i^k) + delta I; p = P^{-1} g. State: P."""

    delta: float = 0.0

    def initial(self, ctx: RoundContext) -> Any:
        return None

    def needs_hessian(self, k: int) -> bool:
        return True

    def update(self, ctx: RoundContext, state: Any, g: Any, H: Any, k: int) -> Any:
        return add_diag(H, self.delta)

    def direction(self, ctx: RoundContext, state: Any, g: Any) -> tuple[Any, Any]:
        return spd_solve(state, g, labels=ctx.labels), state


@dataclass(frozen=True)
class Foof(ExactHessian):
    """FOOF's constant P_i = A_i^T A_i / n_i + (lam + delta) I (:func:`foof_preconditioners`);
    no Hessian is evaluated."""

    def initial(self, ctx: RoundContext) -> Any:
        return foof_preconditioners(ctx, self.delta)

    def needs_hessian(self, k: int) -> bool:
        return False

    def update(self, ctx: RoundContext, state: Any, g: Any, H: Any, k: int) -> Any:
        return state


class EMAState(NamedTuple):
    Theta: Any  # Theta_i^{k+1} after step k's update, (m, d, d)
    P: Any  # the preconditioner of step k


@dataclass(frozen=True)
class HessianEMA:
    """FedPAC's curvature: Theta_i^{k+1} = rho Theta_i^k + (1 - rho) H_i(theta_i^k) from
    Theta_i^0 = ``Theta0`` (one row per participant; None: Theta_i^0 = H_i(theta), the step-0
    Hessian); P = Theta_i^{k+1} + delta I (``use_new``) or Theta_i^k + delta I; p = P^{-1} g.
    rho = 1 keeps Theta fixed and evaluates no Hessian (but the step-0 one that Theta0 = None
    needs).

    ``runs`` > 0 (a batched round of that many runs): ``Theta0`` holds one matrix per RUN,
    (runs, d, d), the same for the run's participants; it is broadcast to them inside the
    first average (no (m, d, d) copy of it; the same values), or repeated where it is itself a
    preconditioner (rho = 1, or not ``use_new``)."""

    rho: float
    delta: float
    use_new: bool
    Theta0: Any = None
    runs: int = 0

    def initial(self, ctx: RoundContext) -> Any:
        return EMAState(self.Theta0, None)

    def needs_hessian(self, k: int) -> bool:
        return self.rho < 1 or (k == 0 and self.Theta0 is None)

    def update(self, ctx: RoundContext, state: EMAState, g: Any, H: Any, k: int) -> EMAState:
        Th = H if state.Theta is None else state.Theta
        if (self.rho == 1 or not self.use_new) and self._per_run(Th, ctx.m):
            Th = ctx.to_clients(Th)  # Th is (part of) a preconditioner itself: one per client
        Th_new = Th if self.rho == 1 else self.ema(Th, H)
        return EMAState(Th_new, add_diag(Th_new if self.use_new else Th, self.delta))

    def _per_run(self, Th: Any, m: int) -> bool:
        """Whether ``Th`` is a Theta0 of one matrix per run for m participants (``runs``)."""
        return bool(self.runs) and Th.ndim == 3 and Th.shape[0] == self.runs != m

    def ema(self, Th: Any, H: Any) -> Any:
        """rho Theta + (1 - rho) H for the stack H (m, d, d) (Theta: the same stack, one
        matrix, or one per run), written block by block into one new stack: no temporary of
        the stack's size."""
        xp = xp_of(H)
        shape = H.shape
        if self._per_run(Th, shape[0]):  # runs x S participants: each run's matrix broadcast
            Th, H = Th[:, None], H.reshape(self.runs, -1, *H.shape[1:])
        if xp is not np:  # one fused pass, the same roundings (no multiply-add contraction)
            from ..cuda_kernels import ema

            return ema(Th, H, self.rho).reshape(shape)
        out = xp.empty_like(H)
        Th = xp.broadcast_to(Th, H.shape)
        for lo, hi in client_blocks(H):
            o = out[lo:hi]
            xp.multiply(Th[lo:hi], self.rho, out=o)  # the same bits as rho Th + (1 - rho) H
            o += (1 - self.rho) * H[lo:hi]
        return out.reshape(shape)

    def direction(self, ctx: RoundContext, state: EMAState, g: Any) -> tuple[Any, Any]:
        return spd_solve(
            state.P,
            g,
            labels=ctx.labels,
            what="FedPAC preconditioner",
            hint="use lam > 0 or delta > 0",
        ), state.P


class SophiaState(NamedTuple):
    m: Any  # first moments (m, d)
    h: Any  # Hessian-diagonal EMAs (m, d)
    scale: Any  # max(gamma h, eps) of the last step (m, d); None before step 0


@dataclass(frozen=True)
class DiagonalEMA:
    """Sophia's elementwise rule: m <- b1 m + (1 - b1) g; h <- b2 h + (1 - b2) diag(H) at steps
    k % tau == 0; p = clip(m / max(gamma h, eps), -rho, rho). P is the diagonal
    max(gamma h, eps), (m, d). ``m0``, ``h0``: the moments before step 0."""

    b1: float
    b2: float
    gamma: float
    eps: float
    rho: float
    tau: int
    m0: Any
    h0: Any

    def initial(self, ctx: RoundContext) -> SophiaState:
        return SophiaState(self.m0, self.h0, None)

    def needs_hessian(self, k: int) -> bool:
        return k % self.tau == 0

    def update(self, ctx: RoundContext, state: SophiaState, g: Any, H: Any, k: int) -> SophiaState:
        xp = ctx.problem.xp
        m = self.b1 * state.m + (1 - self.b1) * g
        h = state.h
        if self.needs_hessian(k):
            h = self.b2 * h + (1 - self.b2) * xp.diagonal(H, axis1=-2, axis2=-1)
        return SophiaState(m, h, xp.maximum(self.gamma * h, self.eps))

    def direction(self, ctx: RoundContext, state: SophiaState, g: Any) -> tuple[Any, Any]:
        xp = ctx.problem.xp
        return xp.clip(state.m / state.scale, -self.rho, self.rho), state.scale


def local_steps(
    ctx: RoundContext,
    theta: Any,
    curvature: Curvature,
    *,
    K: int,
    eta: float,
    correction: Callable[[Any], Any] | None = None,
    line_search: bool = False,
) -> LocalRun:
    """K local steps of every participant from the server's theta with the preconditioners of
    ``curvature`` (see the module docstring): theta_i^{k+1} = theta_i^k - eta_i^k p_i^k
    - c_i(theta_i^k), ``correction(x)`` (m, d) giving c_i (a displacement, None: none).
    Hessians are evaluated (and counted) only at the steps the curvature needs them."""
    xp = ctx.problem.xp
    x = ctx.to_clients(theta)  # every client starts from the server's theta
    state = curvature.initial(ctx)
    P_first = None
    hess_evals = 0
    for k in range(K):
        hess = curvature.needs_hessian(k)
        f, g, H = ctx.eval(x, value=line_search, grad=True, hess=hess)
        hess_evals += ctx.m if hess else 0
        state = curvature.update(ctx, state, g, H, k)
        del H  # the curvature keeps what it needs of H_i: free the stack now
        p, P = curvature.direction(ctx, state, g)
        if x.ndim == 1:
            x = xp.broadcast_to(x, p.shape)
        step = armijo(ctx, x, f, g, p, eta)[:, None] if line_search else eta
        x_new = x - step * p
        x = x_new if correction is None else x_new - correction(x)
        if P_first is None:
            P_first = P
    return LocalRun(x, P_first, P, grad_evals=K * ctx.m, hess_evals=hess_evals, curvature=state)


def local_newton_steps(
    ctx: RoundContext,
    theta: Any,
    *,
    K: int,
    eta: float,
    delta: float,
    line_search: bool = False,
    preconditioner: str = "hessian",
) -> LocalRun:
    """FedPM's and SOPM's client loop: :func:`local_steps` with P_i^k = H_i(theta_i^k) + delta I
    (``"hessian"``) or FOOF's constant P_i (``"foof"``, no Hessian evaluated)."""
    curvature = Foof(delta) if preconditioner == "foof" else ExactHessian(delta)
    return local_steps(ctx, theta, curvature, K=K, eta=eta, line_search=line_search)


def armijo(
    ctx: RoundContext,
    x: Any,
    f0: Any,
    g: Any,
    p: Any,
    eta: float,
    value: Callable[[Any, np.ndarray], Any] | None = None,
) -> Any:
    """Per-client Armijo steps along -p: the largest eta / 2^j with
    phi_i(x_i - t p_i) <= phi_i(x_i) - 1e-4 t g_i^T p_i (batched over the clients still
    searching; at most 60 halvings).

    ``x``, ``f0``, ``g``, ``p`` have one row per participant (or per row of a subset of them).
    ``value(y, rows)`` returns phi at the points y for the rows ``rows`` (host indices into x);
    by default phi_i = f_i and x has one row per participant.
    """
    xp = ctx.problem.xp
    if value is None:

        def value(y: Any, rows: np.ndarray) -> Any:
            return ctx.eval(y, value=True, grad=False, sub=rows).f

    m = x.shape[0]
    t = xp.full(m, float(eta))
    slope = xp.sum(g * p, axis=1)
    active = xp.arange(m)
    for _ in range(MAX_HALVINGS):
        f_new = value(x[active] - t[active, None] * p[active], to_numpy(active))
        ok = f_new <= f0[active] - ARMIJO_C * t[active] * slope[active]
        active = active[~ok]
        if active.shape[0] == 0:
            break
        t[active] *= 0.5
    return t


def backtrack(
    f: Callable[[float], float], f0: float, slope: float, t0: float, *, gamma: float, c: float
) -> tuple[float, int]:
    """One backtracking line search: the first t = t0 gamma^j (j = 0..59) with
    f(t) <= f0 - c t slope, ``slope`` the directional decrease (> 0 for a descent direction).
    Returns t (the last one tried if none passes) and the number of f calls."""
    t = float(t0)
    for calls in range(1, MAX_HALVINGS + 1):
        if f(t) <= f0 - c * t * slope or calls == MAX_HALVINGS:
            return t, calls
        t *= gamma
    raise AssertionError("unreachable")


class LocalSolve(NamedTuple):
    w: Any  # the local minimisers, (m, d)
    evals: np.ndarray  # gradient-and-Hessian evaluations of each participant (host ints, m)
    iterations: int  # Newton iterations of the slowest participant


def solve_local_subproblem(
    ctx: RoundContext,
    theta: Any,
    c: Any,
    mu: float,
    *,
    at_theta: OracleOut | None = None,
    rtol: float = SUBPROBLEM_RTOL,
    max_iter: int = SUBPROBLEM_MAX_ITER,
) -> LocalSolve:
    """w_i = argmin_w phi_i(w), phi_i(w) = f_i(w) - <c_i, w> + (mu/2) ||w - theta||^2, for every
    participant (``c`` is (m, d)), by Newton's method from w = theta.

    Newton direction p = (H_i(w) + mu I)^{-1} r_i(w), r_i = g_i(w) - c_i + mu (w - theta). The
    full step is taken when it satisfies Armijo's test on phi_i or reduces ||r_i|| (near the
    solution the decrease of phi_i drowns in its rounding, the residual does not); otherwise
    :func:`armijo` on phi_i picks the step, starting from 1/2. A participant stops when
    ||r_i|| <= max(rtol ||r_i(theta)||, 64 eps (||g_i(theta)|| + ||c_i||)): the relative
    tolerance, or the rounding level of the residual, whose terms g_i(w) and c_i cancel at
    the solution (a smaller residual cannot be computed, let alone reached). At most
    ``max_iter`` iterations; a participant still above its tolerance then keeps its last
    iterate (this happens only at the rounding floor).

    ``at_theta``: the participants' f_i, g_i, H_i at theta if the caller has them (they are
    then not evaluated, nor counted, again). Needs every H_i + mu I positive definite
    (lam > 0 or mu > 0).
    """
    xp = ctx.problem.xp
    start = xp.broadcast_to(ctx.to_clients(theta), c.shape)
    w = xp.array(start, copy=True)

    def objective(y: Any, rows: np.ndarray, grad: bool, hess: bool) -> tuple[Any, Any, Any]:
        o = ctx.eval(y, value=True, grad=grad, hess=hess, sub=rows)
        ix = xp.asarray(rows)
        u = y - start[ix]
        phi = o.f - xp.sum(c[ix] * y, axis=1) + 0.5 * mu * xp.sum(u * u, axis=1)
        r = None if o.g is None else o.g - c[ix] + mu * u
        return phi, r, o.H

    everyone = np.arange(ctx.m)
    evals = np.zeros(ctx.m, dtype=np.int64)
    if at_theta is None:
        at_theta = ctx.eval(w, value=True, grad=True, hess=True)
        evals += 1
    phi = at_theta.f - xp.sum(c * w, axis=1)
    r = at_theta.g - c
    H = xp.array(at_theta.H, copy=True)  # updated row by row below
    rnorm = xp.linalg.norm(r, axis=1)
    tol = xp.maximum(
        rtol * rnorm,
        SUBPROBLEM_FLOOR * EPS * (xp.linalg.norm(at_theta.g, axis=1) + xp.linalg.norm(c, axis=1)),
    )
    iterations = 0
    active = everyone[to_numpy(rnorm > tol)]
    while active.size and iterations < max_iter:
        iterations += 1
        ia = xp.asarray(active)
        p = spd_solve(
            add_diag(H[ia], mu),
            r[ia],
            labels=ctx.labels[active],
            what="local subproblem Hessian",
            hint="use lam > 0 or mu_d > 0",
        )
        trial = w[ia] - p
        phi_t, r_t, H_t = objective(trial, active, True, True)
        evals[active] += 1
        slope = xp.sum(r[ia] * p, axis=1)
        ok = (phi_t <= phi[ia] - ARMIJO_C * slope) | (xp.linalg.norm(r_t, axis=1) < rnorm[ia])
        bad = np.flatnonzero(~to_numpy(ok))
        if bad.size:
            back, ib = active[bad], xp.asarray(bad)  # ib: rows of the active arrays
            iw = xp.asarray(back)  # iw: rows of the full arrays
            t = armijo(
                ctx,
                w[iw],
                phi[iw],
                r[iw],
                p[ib],
                0.5,
                value=lambda y, rows, back=back: objective(y, back[rows], False, False)[0],
            )
            trial[ib] = w[iw] - t[:, None] * p[ib]
            phi_t[ib], r_t[ib], H_t[ib] = objective(trial[ib], back, True, True)
            evals[back] += 1
        w[ia], phi[ia], r[ia], H[ia] = trial, phi_t, r_t, H_t
        rnorm[ia] = xp.linalg.norm(r_t, axis=1)
        active = active[to_numpy(rnorm[ia] > tol[ia])]
    return LocalSolve(w, evals, iterations)
