"""Newton (SOGM), the ideal global second-order update (ALGORITHMS.md "Newton").

    theta+ = theta - eta (sum_{i in S} w~_i H_i(theta))^{-1} sum_{i in S} w~_i g_i(theta)

Each participant uploads g_i and H_i (d + d(d+1)/2 floats). Newton has no local
preconditioners or local iterates, so the runner reports NaN for the drift metrics.

Newton-Star (``newton_star``, docs/algorithms.md#newton-star), the theoretical baseline of the
Newton Learn and FedNL papers (Islamov, Qian, Richtarik 2021, arXiv 2102.07158, "NS"):

    x+ = x - (sum_{i in S} w~_i H_i(theta*))^{-1} sum_{i in S} w~_i g_i(x)

It needs theta* (``problem.reference``). Since g(x) = H(theta*)(x - theta*) + O(||x - theta*||^2),
x+ - theta* = O(||x - theta*||^2): linear with a ratio that vanishes near theta*, a local
quadratic rate (precisely ||x+ - theta*|| <= (L_H / (2 mu)) ||x - theta*||^2). Choices made
here: the H_i(theta*) are computed once by ``start`` with the exact oracle (a stochastic oracle
perturbs only the gradients) and charged as one d(d+1)/2 upload and one Hessian per client,
reported with the first round, as FedNL charges its initial Hessians; each round costs one
gradient and a d-vector each way per participant; no step size (the papers' NS takes full
steps); under partial participation the frozen Hessians are mixed over the participants with
the renormalised weights, like the gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from ..linalg import spd_solve, sym_floats
from ..validate import check_eta
from .base import Method, RoundContext, RoundInfo, ServerState, register


@register
@dataclass(frozen=True)
class Newton(Method):
    eta: float = 1.0

    name = "newton"
    batchable = True
    description = "damped global Newton step on the participants' weighted Hessian and gradient"
    source = "the 'ideal global second-order update' of FedPM (Ishii et al. 2025, eq. 6)"

    def __post_init__(self) -> None:
        check_eta(self.eta)

    def round(self, ctx: RoundContext, state: ServerState) -> tuple[ServerState, RoundInfo]:
        o = ctx.eval(ctx.to_clients(state.theta), grad=True, hess=True, mixed_hess=True)
        step = spd_solve(o.H, ctx.mix(o.g), what="global Hessian", hint="use lam > 0")
        d, m = ctx.problem.d, ctx.m
        info = RoundInfo(uplink=m * (d + sym_floats(d)), downlink=m * d, grad_evals=m, hess_evals=m)
        return ServerState(state.theta - self.eta * step), info


class NewtonStarState(NamedTuple):
    theta: Any  # x (d,)
    H_star: Any  # H_i(theta*) of every client (N, d, d)


@register
@dataclass(frozen=True)
class NewtonStar(Method):
    """Newton-Star: Newton's step with the Hessian frozen at the solution."""

    name = "newton_star"
    batchable = True
    description = "Newton steps with the global Hessian at the solution, H(theta*)^{-1} g(x)"
    source = (
        "Islamov, Qian, Richtarik 2021 (Newton Learn), arXiv 2102.07158; a theoretical "
        "baseline of the FedNL papers"
    )

    def start(self, problem: Any, theta0: Any) -> tuple[NewtonStarState, RoundInfo]:
        xp, N = problem.xp, problem.N
        theta_star = xp.asarray(problem.reference.theta_star)
        H = problem.oracle(theta_star, grad=False, hess=True).H
        setup = RoundInfo(uplink=N * sym_floats(problem.d), downlink=0, grad_evals=0, hess_evals=N)
        return NewtonStarState(theta0, xp.array(H, copy=True)), setup

    def round(self, ctx: RoundContext, state: NewtonStarState) -> tuple[NewtonStarState, RoundInfo]:
        H_star = ctx.take(state.H_star)
        g = ctx.mix(ctx.eval(ctx.to_clients(state.theta), grad=True).g)
        step = spd_solve(ctx.mix(H_star), g, what="global Hessian at theta*", hint="use lam > 0")
        d, m = ctx.problem.d, ctx.m
        info = RoundInfo(uplink=m * d, downlink=m * d, grad_evals=m, hess_evals=0)
        return NewtonStarState(state.theta - step, state.H_star), info
