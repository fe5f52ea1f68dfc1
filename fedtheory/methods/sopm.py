"""SOPM: simple mixing of locally preconditioned parameters (the LocalNewton family).

Clients run the same K local preconditioned steps as FedPM (:mod:`._local`); the server takes
the plain weighted average theta+ = sum w~_i theta_i^K. Under heterogeneity the local
preconditioners differ and this average is biased: the drift floor of claims C4 and C5.

``local_search=True`` is LocalNewton (Gupta et al. 2021, arXiv 2105.07320): every local step
uses Armijo backtracking on f_i, starting at eta.

``preconditioner="foof"`` (docs/algorithms.md#foof-preconditioner) replaces every local
H_i(theta_i^k) + delta I by FOOF's constant P_i = A_i^T A_i / n_i + (lam + delta) I (no Hessian
is evaluated).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..validate import check_bool, check_eta, check_K, check_nonneg
from ._local import check_preconditioner, local_newton_steps
from .base import Method, RoundContext, RoundInfo, ServerState, register


@register
@dataclass(frozen=True)
class SOPM(Method):
    K: int = 1
    eta: float = 1.0
    delta: float = 0.0
    local_search: bool = False
    preconditioner: str = "hessian"

    name = "sopm"
    batchable = True
    description = "local Newton steps, server averages the local iterates (LocalNewton family)"
    source = (
        "LocalNewton, Gupta et al. 2021 (arXiv 2105.07320); the simple-mixing baseline of FedPM"
    )

    def __post_init__(self) -> None:
        check_K(self.K)
        check_eta(self.eta)
        check_nonneg(self.delta, "delta")
        check_bool(self.local_search, "local_search")
        check_preconditioner(self.preconditioner)

    def round(self, ctx: RoundContext, state: ServerState) -> tuple[ServerState, RoundInfo]:
        loc = local_newton_steps(
            ctx,
            state.theta,
            K=self.K,
            eta=self.eta,
            delta=self.delta,
            line_search=self.local_search,
            preconditioner=self.preconditioner,
        )
        d, m = ctx.problem.d, ctx.m
        info = RoundInfo(
            uplink=m * d,
            downlink=m * d,
            grad_evals=loc.grad_evals,
            hess_evals=loc.hess_evals,
            P=loc.P_last,
            theta_local=loc.theta,
        )
        return ServerState(ctx.mix(loc.theta)), info
