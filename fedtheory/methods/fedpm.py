"""FedPM, federated preconditioned mixing, after Ishii et al. 2025 (arXiv 2511.09100, eq. 6-8).

Client i in S_t runs K local preconditioned steps (:mod:`._local`) and uploads theta_i^K and
P_i (by default the preconditioner of its LAST local step). The server mixes the local
iterates through the preconditioners:

    P = sum w~_i P_i,   theta+ = P^{-1} sum w~_i P_i theta_i^K.

For K = 1 and delta = 0, P_i theta_i^1 = P_i theta - eta g_i, hence theta+ = theta - eta P^{-1} g:
exactly the damped Newton step on S_t (claim C1), for any eta and any S.

``mixing_preconditioner`` selects P_i for ablations: "last" (P_i^{K-1}, the paper's), "start"
(H_i(theta) + delta I) or "end" (H_i(theta_i^K) + delta I, one more Hessian per client, counted).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..linalg import add_diag, spd_solve, sym_floats
from ._local import local_newton_steps
from .base import (
    Method,
    RoundContext,
    RoundInfo,
    ServerState,
    check_choice,
    check_eta,
    check_K,
    check_nonneg,
    register,
)

MIXING = ("last", "start", "end")


@register
@dataclass(frozen=True)
class FedPM(Method):
    K: int = 1
    eta: float = 1.0
    delta: float = 0.0
    mixing_preconditioner: str = "last"

    name = "fedpm"
    batchable = True
    description = "local Newton steps, server mixes local iterates through their preconditioners"
    source = "Ishii et al. 2025, arXiv 2511.09100"

    def __post_init__(self) -> None:
        check_K(self.K)
        check_eta(self.eta)
        check_nonneg(self.delta, "delta")
        check_choice(self.mixing_preconditioner, "mixing_preconditioner", MIXING)

    def round(self, ctx: RoundContext, state: ServerState) -> tuple[ServerState, RoundInfo]:
        loc = local_newton_steps(ctx, state.theta, K=self.K, eta=self.eta, delta=self.delta)
        hess_evals = loc.hess_evals
        if self.mixing_preconditioner == "last":
            P_mix = loc.P_last
        elif self.mixing_preconditioner == "start":
            P_mix = loc.P_first
        else:
            P_mix = add_diag(ctx.eval(loc.theta, grad=False, hess=True).H, self.delta)
            hess_evals += ctx.m
        xp = ctx.problem.xp
        rhs = ctx.mix(xp.matmul(P_mix, loc.theta[:, :, None])[..., 0])
        theta = spd_solve(ctx.mix(P_mix), rhs, what="mixed preconditioner",
                          hint="use lam > 0 or delta > 0")
        d, m = ctx.problem.d, ctx.m
        info = RoundInfo(uplink=m * (d + sym_floats(d)), downlink=m * d,
                         grad_evals=loc.grad_evals, hess_evals=hess_evals, P=loc.P_last,
                         theta_local=loc.theta)
        return ServerState(theta), info
