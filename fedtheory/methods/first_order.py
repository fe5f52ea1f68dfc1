"""First-order baselines (docs/algorithms.md#first-order-baselines): GD, FedAvg, FedProx, SCAFFOLD.

All four share one local loop (:func:`local_gd`): client i in S_t starts from the server's
theta and takes K gradient steps on its local objective,

    theta_i^{k+1} = theta_i^k - eta (g_i(theta_i^k) + c_i(theta_i^k)),   k = 0..K-1,

with a method-specific correction c_i: none (FedAvg), mu_p (theta_i^k - theta) (FedProx,
the gradient of (mu_p/2)||. - theta||^2) or c - c_i (SCAFFOLD's control variates).

- GD / PSGD:  theta+ = theta - eta sum_{S} w~_i g_i(theta)  (with a stochastic oracle: PSGD).
- FedAvg (McMahan et al. 2017, arXiv 1602.05629): theta+ = sum_{S} w~_i theta_i^K.
- FedProx (Li et al. 2020, arXiv 1812.06127): the local objective is
  f_i + (mu_p/2)||. - theta||^2, minimised inexactly by the same K local GD steps (the paper
  leaves the local solver open; this is the spec's choice); theta+ = sum w~_i theta_i^K.
- SCAFFOLD (Karimireddy et al. 2020, arXiv 1910.06378, Algorithm 1 with option II control
  variates): c_i^+ = c_i - c + (theta - theta_i^K) / (K eta);
  theta+ = theta + eta_g sum_{S} w~_i (theta_i^K - theta);  c+ = c + sum_{i in S} w_i (c_i^+ - c_i).
  The server's c update is the paper's (|S|/N) mean_{i in S}(c_i^+ - c_i) written for weights
  w_i: both agree when w_i = 1/N (equal client sizes, as in the paper and on a9a_fednl), and the
  weighted form keeps c = sum_i w_i c_i exactly, over all N clients, under any participation.
  c_i and c start at 0; the c_i of clients that sit out a round are kept unchanged.

Defaults: K = 1 (as for every method of the suite) and eta = 0.5, about 0.8 / L on
a9a_fednl, whose global smoothness constant is L = lambda_max(A^T A / n) / 4 + lam = 1.57
(largest client constant 1.63); other problems may need their own eta < 2 / L.
Communication per participant and round: d floats up and d down (the local iterate or, for GD,
the gradient; theta); SCAFFOLD sends 2d each way (theta_i^K and c_i^+ - c_i up; theta and c
down). ``theta_local`` is reported (client drift metric); there are no preconditioners.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..validate import check_eta, check_K, check_nonneg
from .base import NO_SETUP, Method, RoundContext, RoundInfo, ServerState, register

DEFAULT_ETA = 0.5


def local_gd(
    ctx: RoundContext,
    theta: Any,
    *,
    K: int,
    eta: float,
    correction: Callable[[Any], Any] | None = None,
) -> tuple[Any, int]:
    """K local gradient steps of every participant from theta: returns theta_i^K (m, d) and
    the number of gradient evaluations. ``correction(x)`` (m, d) is added to the gradients."""
    xp = ctx.problem.xp
    x = xp.broadcast_to(ctx.to_clients(theta), (ctx.m, ctx.problem.d))
    for _ in range(K):
        g = ctx.eval(x).g
        if correction is not None:
            g = g + correction(x)
        x = x - eta * g
    return x, K * ctx.m


def _info(
    ctx: RoundContext, grad_evals: int, theta_local: Any = None, vectors: int = 1
) -> RoundInfo:
    d, m = ctx.problem.d, ctx.m
    return RoundInfo(
        uplink=vectors * m * d,
        downlink=vectors * m * d,
        grad_evals=grad_evals,
        hess_evals=0,
        theta_local=theta_local,
    )


@register
@dataclass(frozen=True)
class GD(Method):
    eta: float = DEFAULT_ETA

    name = "gd"
    batchable = True
    description = "gradient descent on the participants' weighted gradient (PSGD when stochastic)"
    source = "distributed (stochastic) gradient descent; Cauchy 1847, Robbins and Monro 1951"

    def __post_init__(self) -> None:
        check_eta(self.eta)

    def round(self, ctx: RoundContext, state: ServerState) -> tuple[ServerState, RoundInfo]:
        g = ctx.mix(ctx.eval(ctx.to_clients(state.theta)).g)
        return ServerState(state.theta - self.eta * g), _info(ctx, ctx.m)


@register
@dataclass(frozen=True)
class FedAvg(Method):
    K: int = 1
    eta: float = DEFAULT_ETA

    name = "fedavg"
    batchable = True
    description = "K local gradient steps, server averages the local iterates"
    source = "McMahan et al. 2017, arXiv 1602.05629"

    def __post_init__(self) -> None:
        check_K(self.K)
        check_eta(self.eta)

    def round(self, ctx: RoundContext, state: ServerState) -> tuple[ServerState, RoundInfo]:
        x, evals = local_gd(ctx, state.theta, K=self.K, eta=self.eta)
        return ServerState(ctx.mix(x)), _info(ctx, evals, x)


@register
@dataclass(frozen=True)
class FedProx(Method):
    K: int = 1
    eta: float = DEFAULT_ETA
    mu_p: float = 0.01

    name = "fedprox"
    batchable = True
    description = "K local gradient steps on f_i + (mu_p/2)||. - theta||^2, server averages"
    source = "Li et al. 2020, arXiv 1812.06127"

    def __post_init__(self) -> None:
        check_K(self.K)
        check_eta(self.eta)
        check_nonneg(self.mu_p, "mu_p")

    def round(self, ctx: RoundContext, state: ServerState) -> tuple[ServerState, RoundInfo]:
        theta = state.theta
        x, evals = local_gd(
            ctx,
            theta,
            K=self.K,
            eta=self.eta,
            correction=lambda x: self.mu_p * (x - ctx.to_clients(theta)),
        )
        return ServerState(ctx.mix(x)), _info(ctx, evals, x)


class ScaffoldState(NamedTuple):
    theta: Any  # server model (d,)
    c: Any  # server control variate c = sum_i w_i c_i (d,)
    c_local: Any  # client control variates c_i (N, d), kept for clients that sit out


@register
@dataclass(frozen=True)
class Scaffold(Method):
    K: int = 1
    eta: float = DEFAULT_ETA
    eta_g: float = 1.0

    name = "scaffold"
    batchable = True
    description = "local gradient steps corrected by control variates c - c_i (option II)"
    source = "Karimireddy et al. 2020, arXiv 1910.06378"

    def __post_init__(self) -> None:
        check_K(self.K)
        check_eta(self.eta)
        check_eta(self.eta_g, "eta_g")

    def start(self, problem: Any, theta0: Any) -> tuple[ScaffoldState, RoundInfo]:
        xp = problem.xp
        zeros = ScaffoldState(theta0, xp.zeros(problem.d), xp.zeros((problem.N, problem.d)))
        return zeros, NO_SETUP

    def round(self, ctx: RoundContext, state: ScaffoldState) -> tuple[ScaffoldState, RoundInfo]:
        theta, c = ctx.to_clients(state.theta), ctx.to_clients(state.c)  # as clients see them
        c_i = ctx.take(state.c_local)
        shift = c - c_i
        x, evals = local_gd(ctx, state.theta, K=self.K, eta=self.eta, correction=lambda x: shift)
        c_i_new = c_i - c + (theta - x) / (self.K * self.eta)
        c_new = state.c + ctx.sum_w(c_i_new - c_i)  # w_i, not renormalised
        c_local = ctx.put(state.c_local, c_i_new)
        theta_new = state.theta + self.eta_g * ctx.mix(x - theta)
        return ScaffoldState(theta_new, c_new, c_local), _info(ctx, evals, x, vectors=2)
