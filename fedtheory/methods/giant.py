"""GIANT, Globally Improved Approximate NewTon: Wang, Roosta, Xu, Mahoney 2018 (NeurIPS,
arXiv 1709.03528, Algorithm 1); docs/algorithms.md#giant.

Two exchanges per round, at the server's theta:

1. every participant sends g_i(theta); the server broadcasts g = sum w~_i g_i(theta);
2. every participant returns p_i = H_i(theta)^{-1} g (its LOCAL Hessian, the GLOBAL gradient);

and the server steps theta+ = theta - eta p, p = sum w~_i p_i (the paper's "globally improved"
direction: the average of local Newton directions for the same global gradient). Since every
p_i is a positive-definite map of g, p = 0 iff g = 0: theta* is a fixed point for any
heterogeneity, unlike SOPM, whose clients use their local gradients (claim C15). Near theta*
the error map is I - eta (sum w~_i H_i(theta*)^{-1}) H(theta*): linear convergence.

``line_search=True`` (default): eta is the first t = eta_0 * 0.5^j (eta_0 = ``eta``, default 1
as in docs/algorithms.md#giant) with f(theta - t p) <= f(theta) - 1e-4 t g^T p, where
f = sum w~_i f_i over the participants (:func:`._local.backtrack`, at most 60 trials).
Choices made here:

- Near theta* the decrease of f (about t g^T p / 2) falls below the rounding of f and the test
  answers at random, which stalls the search above the float floor (on a heterogeneous problem
  whose full step is unstable it settles near 1e-7). So when eta g^T p <= 1e3 eps |f(theta)|
  the round reuses the step of the last round that could search (the state keeps it, starting
  at eta) and evaluates no trial point.
- Counting, per participant: downlink theta and g (2d), uplink g_i and p_i (2d); with the line
  search the uplink also carries f_i(theta) and one f_i value per trial step, and the downlink
  (when trial points are evaluated) the direction p (d), with which each participant evaluates
  its f_i at them.
- ``line_search=False``: theta+ = theta - eta p with the fixed eta (the rate of claim C15).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..linalg import spd_solve
from ..validate import check_bool, check_eta
from ._local import backtrack
from .base import NO_SETUP, Method, RoundContext, RoundInfo, register

GAMMA = 0.5
ARMIJO_C = 1e-4
ROUNDING = 1e3 * float(np.finfo(np.float64).eps)


class GIANTState(NamedTuple):
    theta: Any  # (d,)
    step: Any  # the step of the last line search (eta before the first; one per run in
    #                 a batch)


@register
@dataclass(frozen=True)
class GIANT(Method):
    eta: float = 1.0
    line_search: bool = True

    name = "giant"
    batchable = True
    description = (
        "server steps along the average of local Newton directions H_i^{-1} g "
        "for the global gradient g"
    )
    source = "Wang, Roosta, Xu, Mahoney 2018 (NeurIPS), arXiv 1709.03528"

    def __post_init__(self) -> None:
        check_eta(self.eta)
        check_bool(self.line_search, "line_search")

    def start(self, problem: Any, theta0: Any) -> tuple[GIANTState, RoundInfo]:
        return GIANTState(theta0, float(self.eta)), NO_SETUP

    def round(self, ctx: RoundContext, state: GIANTState) -> tuple[GIANTState, RoundInfo]:
        o = ctx.eval(ctx.to_clients(state.theta), value=self.line_search, grad=True, hess=True)
        g = ctx.mix(o.g)  # first exchange
        p_i = spd_solve(
            o.H,
            ctx.problem.xp.broadcast_to(ctx.to_clients(g), o.g.shape),
            labels=ctx.labels,
            what="local Hessian",
            hint="use lam > 0",
        )
        p = ctx.mix(p_i)  # second exchange
        f = ctx.mix(o.f) if self.line_search else None
        theta, t, info = ctx.per_run(self.server_step, state.theta, g, p, f, state.step)
        return GIANTState(theta, t), info

    def server_step(
        self, ctx: RoundContext, theta: Any, g: Any, p: Any, f_theta: Any, last_step: Any
    ) -> tuple[Any, float, RoundInfo]:
        """theta - t p with t fixed or from the line search (one run), t and the round's
        counts."""
        d, m = ctx.problem.d, ctx.m
        up, down = 2 * m * d, 2 * m * d
        t = float(self.eta)
        if self.line_search:
            f0, slope = float(f_theta), float(g @ p)
            up += m  # f_i(theta)
            if self.eta * slope <= ROUNDING * abs(f0):  # unresolvable: reuse
                t = float(last_step)
            else:

                def f(step: float) -> float:
                    return float(ctx.mix(ctx.eval(theta - step * p, value=True, grad=False).f))

                t, calls = backtrack(f, f0, slope, self.eta, gamma=GAMMA, c=ARMIJO_C)
                up += m * calls
                down += m * d
        info = RoundInfo(uplink=up, downlink=down, grad_evals=m, hess_evals=m)
        return theta - t * p, t, info
