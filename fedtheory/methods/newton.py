"""Newton (SOGM), the ideal global second-order update (ALGORITHMS.md "Newton").

    theta+ = theta - eta (sum_{i in S} w~_i H_i(theta))^{-1} sum_{i in S} w~_i g_i(theta)

Each participant uploads g_i and H_i (d + d(d+1)/2 floats). Newton has no local
preconditioners or local iterates, so the runner reports NaN for the drift metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..linalg import spd_solve, sym_floats
from .base import Method, RoundContext, RoundInfo, ServerState, check_eta, register


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
        o = ctx.eval(ctx.to_clients(state.theta), grad=True, hess=True)
        step = spd_solve(ctx.mix(o.H), ctx.mix(o.g), what="global Hessian",
                         hint="use lam > 0")
        d, m = ctx.problem.d, ctx.m
        info = RoundInfo(uplink=m * (d + sym_floats(d)), downlink=m * d, grad_evals=m,
                         hess_evals=m)
        return ServerState(state.theta - self.eta * step), info
