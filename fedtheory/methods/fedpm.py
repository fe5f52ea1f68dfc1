"""FedPM, federated preconditioned mixing, after Ishii et al. 2025 (arXiv 2511.09100, eq. 6-8);
docs/algorithms.md#fedpm.

Client i in S_t runs K local preconditioned steps (:mod:`._local`) and uploads theta_i^K and
P_i (by default the preconditioner of its LAST local step). The server mixes the local
iterates through the preconditioners:

    P = sum w~_i P_i,   theta+ = P^{-1} sum w~_i P_i theta_i^K.

For K = 1 and delta = 0, P_i theta_i^1 = P_i theta - eta g_i, hence theta+ = theta - eta P^{-1} g:
exactly the damped Newton step on S_t (claim C1), for any eta and any S.

``mixing_preconditioner`` selects P_i for ablations: "last" (P_i^{K-1}, the paper's), "start"
(H_i(theta) + delta I) or "end" (H_i(theta_i^K) + delta I, one more Hessian per client, counted).

``server_memory=True`` (FedPM-PP, docs/algorithms.md#fedpm-pp): the server keeps, for every
client, the pair (P_i, v_i = P_i theta_i^K) of the last round it took part in, and mixes over
ALL N clients with the original weights w_i (not renormalised):

    theta+ = (sum_i w_i P_i)^{-1} sum_i w_i v_i.

With S = N this is FedPM. With K = 1, eta = 1, delta = 0 it is the Stochastic Newton step
(Kovalev, Mishchenko, Richtarik 2019, arXiv 1912.01597, Algorithm 1):
theta+ = [sum_i w_i H_i(z_i)]^{-1} sum_i w_i (H_i(z_i) z_i - g_i(z_i)), z_i the last point
client i saw, and theta* is a fixed point for every S (claim C14). Choices made here:

- Initialisation: at theta^0 every client runs the same K local steps from theta^0 and uploads
  its pair (Stochastic Newton's z_i^0 = x^0), with the exact oracle (``start`` has no run
  generator); this costs d(d+1)/2 + d floats and K gradients (and K Hessians) per client,
  ``start``'s RoundInfo, which the runner books with the first round.
- Round t: the participants refresh their pairs at the current theta, then the server mixes.
  So the first round (its participants refresh at theta^0, as in the initialisation) is the
  full-participation FedPM step from theta^0, and theta^{t+1} here is Stochastic Newton's x^t.
- The memory is part of the method's state ((N, d, d) and (N, d); in a batch of runs each run
  has its own, (B, N, d, d) and (B, N, d)).

``preconditioner="foof"`` (docs/algorithms.md#foof-preconditioner): every P_i^k is FOOF's
P_i = A_i^T A_i / n_i + (lam + delta) I, constant in theta (:func:`._local.foof_preconditioners`),
so no Hessian is evaluated and the three ``mixing_preconditioner`` choices coincide. The uplink
is counted as for the Hessian (P_i every round), as the method is written; a deployment could
send the constant P_i once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from .._backend import matmul
from ..linalg import add_diag, spd_solve, sym_floats
from ..validate import check_bool, check_choice, check_eta, check_K, check_nonneg
from ._local import LocalRun, check_preconditioner, local_newton_steps
from .base import NO_SETUP, Method, RoundContext, RoundInfo, ServerState, register, round_context

MIXING = ("last", "start", "end")


class MemoryState(NamedTuple):
    """FedPM-PP's server state: theta and every client's last pair (P_i, v_i)."""

    theta: Any  # (d,)
    P: Any  # (N, d, d)
    v: Any  # (N, d)


@register
@dataclass(frozen=True)
class FedPM(Method):
    K: int = 1
    eta: float = 1.0
    delta: float = 0.0
    mixing_preconditioner: str = "last"
    server_memory: bool = False
    preconditioner: str = "hessian"

    name = "fedpm"
    batchable = True
    description = "local Newton steps, server mixes local iterates through their preconditioners"
    source = (
        "Ishii et al. 2025, arXiv 2511.09100; server memory: Stochastic Newton, Kovalev, "
        "Mishchenko, Richtarik 2019, arXiv 1912.01597"
    )

    def __post_init__(self) -> None:
        check_K(self.K)
        check_eta(self.eta)
        check_nonneg(self.delta, "delta")
        check_choice(self.mixing_preconditioner, "mixing_preconditioner", MIXING)
        check_bool(self.server_memory, "server_memory")
        check_preconditioner(self.preconditioner)

    def start(self, problem: Any, theta0: Any) -> tuple[ServerState | MemoryState, RoundInfo]:
        if not self.server_memory:
            return ServerState(theta0), NO_SETUP
        ctx = round_context(problem)  # every client, exact oracle
        loc, P, hess = self._clients(ctx, theta0)
        d, N = problem.d, problem.N
        setup = RoundInfo(
            uplink=N * (sym_floats(d) + d), downlink=0, grad_evals=loc.grad_evals, hess_evals=hess
        )
        return MemoryState(theta0, P, self._v(ctx, P, loc)), setup

    def round(
        self, ctx: RoundContext, state: ServerState | MemoryState
    ) -> tuple[ServerState | MemoryState, RoundInfo]:
        loc, P_mix, hess_evals = self._clients(ctx, state.theta)
        d, m = ctx.problem.d, ctx.m
        info = RoundInfo(
            uplink=m * (d + sym_floats(d)),
            downlink=m * d,
            grad_evals=loc.grad_evals,
            hess_evals=hess_evals,
            P=loc.P_last,
            theta_local=loc.theta,
        )
        if not self.server_memory:
            P_bar, v = ctx.mix_apply(P_mix, loc.theta)  # sum w~_i P_i and v_i = P_i theta_i
            theta = spd_solve(
                P_bar,
                ctx.mix(v),
                what="mixed preconditioner",
                hint="use lam > 0 or delta > 0",
            )
            return ServerState(theta), info
        v = self._v(ctx, P_mix, loc)
        P_all, v_all = ctx.put(state.P, P_mix), ctx.put(state.v, v)  # the state stays pure
        theta = spd_solve(
            ctx.mix_all(P_all),
            ctx.mix_all(v_all),  # w_i, all N clients
            what="mixed preconditioner",
            hint="use lam > 0 or delta > 0",
        )
        return MemoryState(theta, P_all, v_all), info

    def _clients(self, ctx: RoundContext, theta: Any) -> tuple[LocalRun, Any, int]:
        """The client loop and the preconditioner each participant uploads (with the Hessian
        evaluations both cost)."""
        loc = local_newton_steps(
            ctx, theta, K=self.K, eta=self.eta, delta=self.delta, preconditioner=self.preconditioner
        )
        if self.preconditioner == "foof" or self.mixing_preconditioner == "last":
            return loc, loc.P_last, loc.hess_evals
        if self.mixing_preconditioner == "start":
            return loc, loc.P_first, loc.hess_evals
        P_end = add_diag(ctx.eval(loc.theta, grad=False, hess=True).H, self.delta)
        return loc, P_end, loc.hess_evals + ctx.m

    @staticmethod
    def _v(ctx: RoundContext, P: Any, loc: LocalRun) -> Any:
        """v_i = P_i theta_i^K, one row per participant."""
        return matmul(P, loc.theta[:, :, None])[..., 0]
