"""Local computations shared by the second-order methods (docs/algorithms.md).

- :func:`local_newton_steps`, the client loop of FedPM and SOPM (docs/algorithms.md#fedpm):
  client i in S_t starts from theta_i^0 = theta and, for k = 0..K-1,

      P_i^k = H_i(theta_i^k) + delta I          (``preconditioner="hessian"``, the default)
           or A_i^T A_i / n_i + (lam + delta) I  (``"foof"``, see FOOF in docs/algorithms.md)
      theta_i^{k+1} = theta_i^k - eta_i^k (P_i^k)^{-1} g_i(theta_i^k)

  with eta_i^k = eta, or (``line_search=True``, LocalNewton, Gupta et al. 2021) Armijo
  backtracking on f_i (:func:`armijo`): start at eta, halve until f_i decreases by
  >= 1e-4 * step * g^T p.
- :func:`solve_local_subproblem`, the exact local solve of DANE (docs/algorithms.md#dane):
  argmin_w f_i(w) - <c_i, w> + (mu/2) ||w - theta||^2 by Newton's method.
- :func:`backtrack`, a server-level backtracking line search along one direction (GIANT).

All participants step at once (batched); nothing loops over clients in Python.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .._backend import to_numpy
from ..linalg import add_diag, spd_solve
from ..objectives import OracleOut
from .base import RoundContext, check_choice

ARMIJO_C = 1e-4
MAX_HALVINGS = 60
PRECONDITIONERS = ("hessian", "foof")
EPS = float(np.finfo(np.float64).eps)

#: DANE's inner solve: relative gradient tolerance (docs/algorithms.md#dane), the rounding
#: allowance of the residual (in units of eps times the size of its cancelling terms) and the
#: iteration cap.
SUBPROBLEM_RTOL = 1e-12
SUBPROBLEM_FLOOR = 64.0
SUBPROBLEM_MAX_ITER = 50


class LocalRun(NamedTuple):
    theta: Any          # theta_i^K, (m, d)
    P_first: Any        # P_i^0, (m, d, d)
    P_last: Any         # P_i^{K-1}
    grad_evals: int     # totals over participants
    hess_evals: int


def check_preconditioner(preconditioner: Any) -> None:
    check_choice(preconditioner, "preconditioner", PRECONDITIONERS)


def foof_preconditioners(ctx: RoundContext, delta: float) -> Any:
    """P_i = A_i^T A_i / n_i + (lam + delta) I of the participants, (m, d, d).

    The uncentred covariance of client i's inputs (all its rows, whatever the oracle) plus the
    regulariser: constant in theta, no oracle call. These Gram matrices are exactly ridge's
    Hessians on the same rows, which the problem builds once and caches, so they are computed
    once per problem, not per round. Do not modify the result in place (it may be the cache).
    """
    gram = ctx.problem._H_const          # sum_j sw_ij a_j a_j^T + lam I, cached on the problem
    if ctx.clients is not None:
        gram = gram[ctx.problem.xp.asarray(ctx.clients)]
    return add_diag(gram, delta)


def local_newton_steps(ctx: RoundContext, theta: Any, *, K: int, eta: float, delta: float,
                       line_search: bool = False, preconditioner: str = "hessian") -> LocalRun:
    """K local preconditioned steps of every participant from the server's theta (see the
    module docstring). ``preconditioner="foof"`` evaluates no Hessian (hess_evals = 0)."""
    xp = ctx.problem.xp
    foof = preconditioner == "foof"
    x = ctx.to_clients(theta)     # every client starts from the server's theta
    P_first = P = foof_preconditioners(ctx, delta) if foof else None
    for _ in range(K):
        f, g, H = ctx.eval(x, value=line_search, grad=True, hess=not foof)
        if not foof:
            P = add_diag(H, delta)
            del H        # with delta > 0 the stack H_i is no longer needed: free it now
        p = spd_solve(P, g, labels=ctx.labels)
        if x.ndim == 1:
            x = xp.broadcast_to(x, p.shape)
        if line_search:
            step = armijo(ctx, x, f, g, p, eta)[:, None]
        else:
            step = eta
        x = x - step * p
        if P_first is None:
            P_first = P
    m = ctx.m
    return LocalRun(x, P_first, P, grad_evals=K * m, hess_evals=0 if foof else K * m)


def armijo(ctx: RoundContext, x: Any, f0: Any, g: Any, p: Any, eta: float,
           value: Callable[[Any, np.ndarray], Any] | None = None) -> Any:
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


def backtrack(f: Callable[[float], float], f0: float, slope: float, t0: float, *,
              gamma: float, c: float) -> tuple[float, int]:
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
    w: Any              # the local minimisers, (m, d)
    evals: np.ndarray   # gradient-and-Hessian evaluations of each participant (host ints, m)
    iterations: int     # Newton iterations of the slowest participant


def solve_local_subproblem(ctx: RoundContext, theta: Any, c: Any, mu: float, *,
                           at_theta: OracleOut | None = None, rtol: float = SUBPROBLEM_RTOL,
                           max_iter: int = SUBPROBLEM_MAX_ITER) -> LocalSolve:
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
    H = xp.array(at_theta.H, copy=True)           # updated row by row below
    rnorm = xp.linalg.norm(r, axis=1)
    tol = xp.maximum(rtol * rnorm, SUBPROBLEM_FLOOR * EPS * (
        xp.linalg.norm(at_theta.g, axis=1) + xp.linalg.norm(c, axis=1)))
    iterations = 0
    active = everyone[to_numpy(rnorm > tol)]
    while active.size and iterations < max_iter:
        iterations += 1
        ia = xp.asarray(active)
        p = spd_solve(add_diag(H[ia], mu), r[ia], labels=ctx.labels[active],
                      what="local subproblem Hessian", hint="use lam > 0 or mu_d > 0")
        trial = w[ia] - p
        phi_t, r_t, H_t = objective(trial, active, True, True)
        evals[active] += 1
        slope = xp.sum(r[ia] * p, axis=1)
        ok = (phi_t <= phi[ia] - ARMIJO_C * slope) | (xp.linalg.norm(r_t, axis=1) < rnorm[ia])
        bad = np.flatnonzero(~to_numpy(ok))
        if bad.size:
            back, ib = active[bad], xp.asarray(bad)      # ib: rows of the active arrays
            iw = xp.asarray(back)                         # iw: rows of the full arrays
            t = armijo(ctx, w[iw], phi[iw], r[iw], p[ib], 0.5,
                       value=lambda y, rows, back=back: objective(y, back[rows], False, False)[0])
            trial[ib] = w[iw] - t[:, None] * p[ib]
            phi_t[ib], r_t[ib], H_t[ib] = objective(trial[ib], back, True, True)
            evals[back] += 1
        w[ia], phi[ia], r[ia], H[ia] = trial, phi_t, r_t, H_t
        rnorm[ia] = xp.linalg.norm(r_t, axis=1)
        active = active[to_numpy(rnorm[ia] > tol[ia])]
    return LocalSolve(w, evals, iterations)
