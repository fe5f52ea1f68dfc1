"""Local preconditioned steps shared by FedPM and SOPM (ALGORITHMS.md, FedPM client loop).

Client i in S_t: theta_i^0 = theta; for k = 0..K-1:
    P_i^k = H_i(theta_i^k) + delta I;
    theta_i^{k+1} = theta_i^k - eta_i^k (P_i^k)^{-1} g_i(theta_i^k)
with eta_i^k = eta, or (``line_search=True``, LocalNewton, Gupta et al. 2021) Armijo
backtracking on f_i: start at eta, halve until f_i decreases by >= 1e-4 * step * g^T p.
All participants step at once (batched); nothing loops over clients in Python.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .._backend import to_numpy
from ..linalg import add_diag, spd_solve
from .base import RoundContext

ARMIJO_C = 1e-4
MAX_HALVINGS = 60


class LocalRun(NamedTuple):
    theta: Any          # theta_i^K, (m, d)
    P_first: Any        # P_i^0, (m, d, d)
    P_last: Any         # P_i^{K-1}
    grad_evals: int     # totals over participants
    hess_evals: int


def local_newton_steps(ctx: RoundContext, theta: Any, *, K: int, eta: float, delta: float,
                       line_search: bool = False) -> LocalRun:
    xp = ctx.problem.xp
    x = ctx.to_clients(theta)     # every client starts from the server's theta
    P_first = P = None
    for _ in range(K):
        f, g, H = ctx.eval(x, value=line_search, grad=True, hess=True)
        P = add_diag(H, delta)
        del H            # with delta > 0 the stack H_i is no longer needed: free it now
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
    return LocalRun(x, P_first, P, grad_evals=K * m, hess_evals=K * m)


def armijo(ctx: RoundContext, x: Any, f0: Any, g: Any, p: Any, eta: float) -> Any:
    """Per-client Armijo steps along -p: the largest eta / 2^j with
    f_i(x_i - t p_i) <= f_i(x_i) - 1e-4 t g_i^T p_i (batched over the clients still searching)."""
    xp = ctx.problem.xp
    t = xp.full(ctx.m, float(eta))
    slope = xp.sum(g * p, axis=1)
    active = xp.arange(ctx.m)
    for _ in range(MAX_HALVINGS):
        idx = to_numpy(active)
        f_new = ctx.eval(x[active] - t[active, None] * p[active], value=True, grad=False,
                         sub=idx).f
        ok = f_new <= f0[active] - ARMIJO_C * t[active] * slope[active]
        active = active[~ok]
        if active.shape[0] == 0:
            break
        t[active] *= 0.5
    return t
