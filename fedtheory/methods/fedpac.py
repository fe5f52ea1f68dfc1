"""FedPAC, preconditioner alignment and correction, exact-curvature instance, after Liu et al.
2026 (arXiv 2602.19271, Algorithm 1 with the curvature state Theta an EMA of exact Hessians).

Server state: theta, the curvature state Theta (d x d) and the global direction gG (d).
Client i in S_t (the shared local loop :func:`._local.local_steps` with the curvature rule
:class:`._local.HessianEMA` and the correction eta beta gG):

    theta_i^0 = theta;  Theta_i^0 = Theta                              (alignment: warm start)
    for k = 0..K-1:
        Theta_i^{k+1} = rho Theta_i^k + (1 - rho) H_i(theta_i^k)       (curvature EMA)
        d_i^k = (Theta_i^{k+1} + delta I)^{-1} g_i(theta_i^k)          (order="update_then_use";
                                                   "use_then_update" uses Theta_i^k instead)
        theta_i^{k+1} = theta_i^k - eta [(1 - beta) d_i^k + beta gG]   (correction)
    uploads Delta_i = theta_i^K - theta and Theta_i^K.

Server: Delta = sum w~_i Delta_i;  theta+ = theta + Delta;  gG+ = -Delta / (K eta);
Theta+ = sum w~_i Theta_i^K.  Hence (claim C7) for constant eta and any participation

    theta^{r+1} - theta^r = -eta (1 - beta) sum w~_i sum_k d_i^k + beta (eta / eta_prev)
                            (theta^r - theta^{r-1}),

heavy-ball momentum with coefficient beta (eta / eta_prev = 1 here: eta is a constant of the
method, so the state does not keep the previous round's eta). With rho = 0, beta = 0 and K = 1
a round is SOPM's with K = 1.

Choices the spec leaves open, made here:

- ``theta_init="hessian"``: Theta^0 = sum_i w_i H_i(theta^0) over ALL N clients, computed by
  ``start`` with the exact oracle (``start`` has no round context). Its cost, one d(d+1)/2
  upload and one Hessian evaluation per client, is ``start``'s RoundInfo, which the runner
  books with the first round (uplink and hess_evals). ``"identity"``: Theta^0 = I, free.
- ``align=False``: Theta_i^0 = H_i(theta) (the client's own Hessian at the round's start, the
  same evaluation as H_i(theta_i^0), so it costs nothing extra) and the server keeps no Theta:
  ``start`` computes and counts nothing and the state's Theta is None.
- Communication per participant and round: uplink Delta_i (d) plus Theta_i^K (d(d+1)/2, only
  when align=True); downlink theta (d), plus gG (d) when beta > 0, plus Theta (d(d+1)/2) when
  align=True.
- Hessian evaluations: one per local step, none when rho = 1 (Theta never moves; with
  align=False the single H_i(theta) of step 0 is still needed and counted).
- Metrics: P = Theta_i^K + delta I ("update_then_use") or Theta_i^{K-1} + delta I
  ("use_then_update"), the preconditioner of the last local step; theta_local = theta_i^K.
- Defaults: K = 1, eta = 1, beta = 0.5, rho = 0.9, delta = 0. The paper tunes beta and the
  curvature EMA per task and gives no values for this instance. For K = 1 the fixed point does
  not depend on beta and its bias shrinks as rho -> 1 (at the fixed point Theta is the global
  Hessian and client i preconditions with rho H + (1 - rho) H_i); beta = 0.5 accelerates the
  slow curvature EMA. On a9a_fednl these defaults settle within 10 % of their fixed point
  (dist_to_opt 0.037, against 0.31 for SOPM with K = 1) in about 20 rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from ..linalg import sym_floats
from ..validate import check_bool, check_choice, check_eta, check_K, check_nonneg, check_unit
from ._local import HessianEMA, local_steps
from .base import NO_SETUP, Method, RoundContext, RoundInfo, register

ORDERS = ("update_then_use", "use_then_update")
THETA_INITS = ("hessian", "identity")


class FedPACState(NamedTuple):
    theta: Any  # server model (d,)
    Theta: Any  # server curvature state (d, d); None when align=False
    gG: Any  # global direction -Delta / (K eta) of the previous round (d,)


@register
@dataclass(frozen=True)
class FedPAC(Method):
    K: int = 1
    eta: float = 1.0
    beta: float = 0.5
    rho: float = 0.9
    delta: float = 0.0
    order: str = "update_then_use"
    theta_init: str = "hessian"
    align: bool = True

    name = "fedpac"
    batchable = True
    description = (
        "local Newton-type steps with an aligned curvature EMA, corrected by the "
        "last global direction"
    )
    source = "Liu et al. 2026, arXiv 2602.19271"

    def __post_init__(self) -> None:
        check_K(self.K)
        check_eta(self.eta)
        check_unit(self.beta, "beta", closed=False)
        check_unit(self.rho, "rho", closed=True)
        check_nonneg(self.delta, "delta")
        check_choice(self.order, "order", ORDERS)
        check_choice(self.theta_init, "theta_init", THETA_INITS)
        check_bool(self.align, "align")

    def start(self, problem: Any, theta0: Any) -> tuple[FedPACState, RoundInfo]:
        xp, d, N = problem.xp, problem.d, problem.N
        Theta, setup = None, NO_SETUP
        if self.align and self.theta_init == "hessian":
            Theta = problem.global_oracle(theta0, value=False, grad=False, hess=True).H
            setup = RoundInfo(uplink=N * sym_floats(d), downlink=0, grad_evals=0, hess_evals=N)
        elif self.align:
            Theta = xp.eye(d)
        return FedPACState(theta0, Theta, xp.zeros(d)), setup

    def round(self, ctx: RoundContext, state: FedPACState) -> tuple[FedPACState, RoundInfo]:
        d, m = ctx.problem.d, ctx.m
        shift = self.eta * self.beta * ctx.to_clients(state.gG)
        Theta0, runs = None, 0  # align=False: Theta_i^0 = H_i(theta)
        if self.align and ctx.batched:  # one per run, broadcast by the curvature (no copy)
            Theta0, runs = state.Theta, ctx.runs
        elif self.align:
            Theta0 = ctx.problem.xp.broadcast_to(state.Theta, (m, d, d))
        curvature = HessianEMA(self.rho, self.delta, self.order == "update_then_use", Theta0, runs)
        loc = local_steps(
            ctx,
            state.theta,
            curvature,
            K=self.K,
            eta=self.eta * (1 - self.beta),
            correction=lambda x: shift,
        )
        x, Th = loc.theta, loc.curvature.Theta
        Delta = ctx.mix(x - ctx.to_clients(state.theta))
        Theta = ctx.mix(Th) if self.align else None
        mat = sym_floats(d) if self.align else 0
        info = RoundInfo(
            uplink=m * (d + mat),
            downlink=m * (d + (d if self.beta > 0 else 0) + mat),
            grad_evals=loc.grad_evals,
            hess_evals=loc.hess_evals,
            P=loc.P_last,
            theta_local=x,
        )
        new = FedPACState(state.theta + Delta, Theta, -Delta / (self.K * self.eta))
        return new, info
