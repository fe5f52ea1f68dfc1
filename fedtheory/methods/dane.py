"""DANE, Distributed Approximate NEwton: Shamir, Srebro, Zhang 2014 (ICML, arXiv 1312.7853,
Algorithm 1); docs/algorithms.md#dane.

Round at the server's theta: the participants send g_i(theta) and receive
g = sum w~_i g_i(theta); participant i solves its local subproblem EXACTLY,

    w_i = argmin_w  f_i(w) - <g_i(theta) - eta g(theta), w> + (mu_d / 2) ||w - theta||^2,

and the server averages, theta+ = sum w~_i w_i. Defaults eta = 1, mu_d = 0
(docs/algorithms.md#dane). The subproblem's gradient is
g_i(w) - g_i(theta) + eta g(theta) + mu_d (w - theta), so at theta = theta* (g = 0) the
solution is w_i = theta for every client: theta* is a fixed point for any heterogeneity.

Solvers (``local_solver``):

- ``"newton"``: Newton's method from w = theta with Armijo backtracking on the subproblem,
  until the gradient norm is 1e-12 of its value at theta, or down to its rounding level
  (:func:`._local.solve_local_subproblem`, which documents the stopping rule);
- ``"auto"`` (default): the same, except on ridge, where the subproblem is quadratic and its
  solution is closed form, w_i = theta - eta (H_i + mu_d I)^{-1} g(theta) (one Cholesky solve;
  the Newton iteration reaches the same point after its first step, tested).

Counting per participant: two exchanges, uplink g_i and w_i (2d), downlink g and theta (2d);
gradient and Hessian evaluations of the inner solver are counted as local oracle calls.
Needs H_i + mu_d I positive definite (lam > 0 or mu_d > 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..linalg import add_diag, spd_solve
from ..validate import check_choice, check_eta, check_nonneg
from ._local import solve_local_subproblem
from .base import (
    Method,
    RoundContext,
    RoundInfo,
    ServerState,
    register,
)

SOLVERS = ("auto", "newton")


@register
@dataclass(frozen=True)
class DANE(Method):
    eta: float = 1.0
    mu_d: float = 0.0
    local_solver: str = "auto"

    name = "dane"
    batchable = True
    description = (
        "clients minimise f_i with a gradient-corrected linear term exactly, "
        "server averages the local minimisers"
    )
    source = "Shamir, Srebro, Zhang 2014 (ICML), arXiv 1312.7853"

    def __post_init__(self) -> None:
        check_eta(self.eta)
        check_nonneg(self.mu_d, "mu_d")
        check_choice(self.local_solver, "local_solver", SOLVERS)

    def round(self, ctx: RoundContext, state: ServerState) -> tuple[ServerState, RoundInfo]:
        theta = state.theta
        closed_form = self.local_solver == "auto" and ctx.problem.objective == "ridge"
        o = ctx.eval(ctx.to_clients(theta), value=not closed_form, grad=True, hess=True)
        g = ctx.to_clients(ctx.mix(o.g))  # first exchange
        d, m = ctx.problem.d, ctx.m
        if closed_form:
            step = spd_solve(
                add_diag(o.H, self.mu_d),
                ctx.problem.xp.broadcast_to(self.eta * g, o.g.shape),
                labels=ctx.labels,
                what="local subproblem Hessian",
                hint="use lam > 0 or mu_d > 0",
            )
            w, evals = ctx.to_clients(theta) - step, m
        else:
            sol = solve_local_subproblem(ctx, theta, o.g - self.eta * g, self.mu_d, at_theta=o)
            w, evals = sol.w, ctx.count(1 + sol.evals)  # with the evaluation at theta
        info = RoundInfo(
            uplink=2 * m * d, downlink=2 * m * d, grad_evals=evals, hess_evals=evals, theta_local=w
        )
        return ServerState(ctx.mix(w)), info
