"""The FedNL family beyond FedNL itself (Safaryan, Islamov, Qian, Richtarik 2022, arXiv
2106.02969): FedNL-PP (partial participation, Algorithm 3), FedNL-LS (line search) and FedNL-CR
(cubic regularisation), matching the public reference code (github.com/Rustem-Islamov/
FedNL-Public, ``methods.FedNL_PP``, ``FedNL_LS``, ``FedNL_CR``) except where noted
(docs/algorithms.md#fednl-pp, #fednl-ls, #fednl-cr).

All three learn Hessians exactly as FedNL does (:class:`~fedtheory.methods.fednl.HessianLearner`:
the same compressors, ``alpha`` = a number, ``"one"`` or ``"rule1"``, ``init``, in-place
updates, so a round consumes its input state) and count ``bits`` with the FedNL papers'
convention (32-bit floats, uplink only: init 32 d(d+1)/2 with ``init="hessian"``, every round
32 d + the compressor's cost per participant).

FedNL-PP (``fednl_pp``). Client state (H_i, l_i, g~_i, w_i), w_i the last point client i saw.
Init: H_i = H_i(x^0) or 0, l_i = ||H_i(x^0) - H_i||, w_i = x^0, g~_i = (H_i + l_i I) w_i - g_i(w_i).
Round: the server steps from the stored states of ALL N clients,

    x+ = (H + l I)^{-1} g~,   H = sum w_i H_i,  l = sum w_i l_i,  g~ = sum w_i g~_i,

THEN each participant i in S_t refreshes at the NEW point: w_i = x+,
H_i <- H_i + alpha C(H_i(x+) - H_i), l_i = ||H_i(x+) - H_i|| (after the update),
g~_i = (H_i + l_i I) w_i - g_i(w_i). The number of participants tau is the runner's S; the
runner draws them uniformly without replacement (the reference code shuffles all N clients and
keeps the first tau: the same law). ``l_norm`` defaults to "frobenius", the reference code's.
The weights are the problem's w_i (the reference code's plain mean for equal client sizes; with
unequal sizes the w_i keep theta* of f = sum w_i f_i the fixed point). With the identity
compressor and alpha = 1 this is the Stochastic Newton method (Kovalev, Mishchenko, Richtarik
2019); with tau = N it is Newton from its second step on (from the first with
``init="hessian"``). Per participant and round: g~_i (d), the message and l_i (1 float) up,
x+ (d) down; ``bits`` 32 d + the compressor's cost per participant, as the reference code
counts (it does not charge l_i). The reference code adds those bits once per round whatever
tau is (the bits of one participating node); here, as for every method, ``bits`` is the total
over participants divided by N (the average node): multiply by N / tau to compare.
Init costs: g~_i, l_i and (``init="hessian"``) the d(d+1)/2 triangle per client, one gradient
and one Hessian per client: ``start``'s RoundInfo, booked with the first round.

FedNL-LS (``fednl_ls``). Direction p = -[H^k]_mu^{-1} g(x^k) (FedNL option 1's); step t from 1,
t <- gamma t while f(x + t p) > f(x) + c t <g(x), p> (the shared :func:`backtrack`, at most 60
trials); x+ = x + t p; then every H_i is learned at the OLD point x^k. Defaults gamma = 0.5,
c = 0.5 (the reference code's). f(x) comes with the round's gradient; every trial costs one f_i
per client. ``uplink_floats`` charges them (1 + trials floats per client); ``bits`` follows the
reference code: 32 per rejected trial on top of 32 d + the compressor's cost.

FedNL-CR (``fednl_cr``). x+ = x + h with h the global minimiser of the cubic model

    m(h) = <g, h> + (1/2) h^T A h + (M/6) ||h||^3,   A = H^k + l^k I,
    l^k = sum w_i ||H_i(x^k) - H_i^k|| (``l_norm``, default Frobenius as the reference code),

M = L_H of the problem's reference solution (``M="L_H"``, the default; the reference code's
``get_M`` is the same bound) or a number >= 0. Solved accurately (:func:`cubic_step`): with
A = Q Lambda Q^T and c = Q^T g, h = -Q (Lambda + (M r / 2) I)^{-1} c where r = ||h|| is the root
of the secular equation ||(Lambda + M r / 2)^{-1} c|| = r (decreasing in r, bracketed and found
by Brent's method to rounding); M = 0 gives h = -A^{-1} g, i.e. FedNL option 2 with the same
norm. Then EVERY client learns its H_i at the old point x^k. Two defects of the reference code
are not reproduced: it updates only the last client's H_i (its update follows the client loop,
with the loop variable left at the last client), and its subproblem solver does not return the
minimiser of m (it takes the coefficients U g instead of U^T g and solves t = ||s(t)||^2 with
the shift M t / 2 before using sqrt(t); on a random 5 x 5 example the stationarity residual of
its step is 5e-2 for M = 1). The two agree for one client and M = 0 (the fixture test).
Per client and round: g_i, the message and l_i up; ``bits`` 32 d + the compressor's cost + 32
(the reference code charges l_i here).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy.optimize import brentq

from .._backend import matmul, to_numpy, xp_of
from ..errors import check
from ..linalg import spd_solve
from ..validate import check_choice, check_open_unit, is_real, number_or
from ._local import backtrack
from .base import RoundContext, RoundInfo, register
from .fednl import (
    BITS_PER_FLOAT,
    L_NORMS,
    Current,
    FedNLState,
    HessianLearner,
    OldPointLearner,
    consume,
    matrix_norms,
    project_mu,
    shift,
)


def _matvec(H: Any, x: Any) -> Any:
    """H_i x_i for stacks H (m, d, d) and x (m, d)."""
    return matmul(H, x[..., None])[..., 0]


# ------------------------------------------------------------------------------- FedNL-PP
class FedNLPPState(NamedTuple):
    theta: Any  # x^k, the last server iterate (d,)
    H_local: Any  # H_i of every client (N, d, d); updated in place by the next round
    l: Any  # l_i (N,)
    g_tilde: Any  # g~_i (N, d)
    w: Any  # w_i, the last point client i saw (N, d)
    token: Current  # whether this state still holds the current client states


@register
@dataclass(frozen=True)
class FedNLPP(HessianLearner):
    """FedNL-PP (module docstring)."""

    l_norm: str = "frobenius"

    name = "fednl_pp"
    batchable = True
    description = (
        "FedNL with partial participation: the server steps from every client's "
        "stored (H_i, l_i, g~_i); participants refresh at the new point"
    )
    source = "Safaryan, Islamov, Qian, Richtarik 2022 (ICML), arXiv 2106.02969, Algorithm 3"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.l_norm, "l_norm", L_NORMS)

    def _refresh(self, H: Any, x: Any, g: Any, l: Any) -> Any:
        """g~_i = (H_i + l_i I) x - g_i(x) for the stack H (m, d, d)."""
        xp = xp_of(H)
        X = xp.broadcast_to(x, g.shape)
        return _matvec(H, X) + l[:, None] * X - g

    def start(self, problem: Any, theta0: Any) -> tuple[FedNLPPState, RoundInfo]:
        xp, N, d = problem.xp, problem.N, problem.d
        o = problem.oracle(theta0, grad=True, hess=True)
        H = self.initial_hessians(o.H)
        l = matrix_norms(o.H - H, self.l_norm)
        w = xp.array(xp.broadcast_to(theta0, (N, d)))
        state = FedNLPPState(theta0, H, l, self._refresh(H, theta0, o.g, l), w, Current())
        setup = self.setup(N, d, uplink=N * (d + 1), grad_evals=N)  # g~_i and l_i up
        return state, dataclasses.replace(setup, hess_evals=N)  # H_i(x^0), any init

    def round(self, ctx: RoundContext, state: FedNLPPState) -> tuple[FedNLPPState, RoundInfo]:
        token = consume(state.token, self.name)
        d, m = ctx.problem.d, ctx.m
        H, l, g_tilde, pts = state.H_local, state.l, state.g_tilde, state.w
        # all N clients with their weights w_i, not the participants
        x_new = spd_solve(
            shift(ctx.mix_all(H), ctx.mix_all(l)),
            ctx.mix_all(g_tilde),
            what="FedNL-PP Hessian estimate",
            hint="use a problem with lam > 0",
        )
        x_seen = ctx.to_clients(x_new)
        o = ctx.eval(x_seen, grad=True, hess=True)  # the participants, at the NEW point
        l_new = self.learn(ctx.flat(H), o.H, ctx.slots, norm=self.l_norm, after=True)
        ctx.put(l, l_new, in_place=True)
        ctx.put(pts, x_seen, in_place=True)
        ctx.put(g_tilde, self._refresh(ctx.take(H), x_seen, o.g, l_new), in_place=True)
        info = RoundInfo(
            uplink=m * (d + self.message(d) + 1),
            downlink=m * d,
            grad_evals=m,
            hess_evals=m,
            bits=m * self.round_bits(d),
        )
        return FedNLPPState(x_new, H, l, g_tilde, pts, token), info


# ------------------------------------------------------------------------------- FedNL-LS
@register
@dataclass(frozen=True)
class FedNLLS(OldPointLearner):
    """FedNL-LS (module docstring)."""

    gamma: float = 0.5
    c: float = 0.5

    name = "fednl_ls"
    description = (
        "FedNL option 1's direction with backtracking line search on f; Hessians "
        "learned at the old point"
    )
    source = "Safaryan, Islamov, Qian, Richtarik 2022 (ICML), arXiv 2106.02969, FedNL-LS"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_open_unit(self.gamma, "gamma")
        check_open_unit(self.c, "c")

    def start(self, problem: Any, theta0: Any) -> tuple[FedNLState, RoundInfo]:
        check(
            problem.lam > 0,
            f"FedNL-LS projects onto {{X >= mu I}} with mu = lam, but problem "
            f"{problem.name!r} has lam = {problem.lam:g}; use a problem with lam > 0",
        )
        return super().start(problem, theta0)

    def round(self, ctx: RoundContext, state: FedNLState) -> tuple[FedNLState, RoundInfo]:
        o, Hk, _, token = self.learn_at_old_point(ctx, state, value=True)
        g = ctx.mix(o.g)
        p = -spd_solve(
            project_mu(Hk, ctx.problem.lam),
            g,
            what="FedNL-LS Hessian estimate",
            hint="use a problem with lam > 0",
        )
        x_new, trials = ctx.per_run(self.line_search, state.theta, p, g, ctx.mix(o.f))
        info = ctx.per_run(
            lambda c, trials: self.counts(
                c, state, extra_floats=1 + trials, extra_bits=BITS_PER_FLOAT * (trials - 1)
            ),
            trials,
        )
        return FedNLState(x_new, state.H_local, token), info

    def line_search(self, ctx: RoundContext, x: Any, p: Any, g: Any, f_x: Any) -> tuple[Any, int]:
        """x + t p with t from backtracking on f (one run), and the number of trials."""

        def f(t: float) -> float:
            return float(ctx.mix(ctx.eval(x + t * p, value=True, grad=False).f))

        t, trials = backtrack(f, float(f_x), -float(g @ p), 1.0, gamma=self.gamma, c=self.c)
        return x + t * p, trials


# ------------------------------------------------------------------------------- FedNL-CR
def cubic_step(A: Any, g: Any, M: float) -> Any:
    """argmin_h <g, h> + (1/2) h^T A h + (M/6) ||h||^3 for a symmetric A (d, d), M >= 0.

    M = 0: h = -A^{-1} g by Cholesky (A must be positive definite). M > 0: the global
    minimiser h = -(A + (M r / 2) I)^{-1} g with A + (M r / 2) I >= 0 and r = ||h||, found from
    the eigendecomposition A = Q Lambda Q^T as the root r of ||(Lambda + M r / 2)^{-1} Q^T g|| = r
    (Brent's method on a bracket, to rounding); the hard case (Q^T g orthogonal to the lowest
    eigenvector of an indefinite A) adds that eigenvector. Same backend as A.
    """
    if M == 0:
        return -spd_solve(A, g, what="FedNL-CR model matrix", hint="use a problem with lam > 0")
    xp = xp_of(A)
    lam, Q = np.linalg.eigh(to_numpy(A))
    c = Q.T @ to_numpy(g)
    r_lo = max(0.0, -2.0 * lam[0] / M)

    def gap(r: float) -> float:
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(c == 0, 0.0, c / (lam + 0.5 * M * r))
        return float(np.linalg.norm(s)) - r

    if gap(r_lo) <= 0:  # hard case, or g = 0
        s = np.zeros_like(c)
        free = lam + 0.5 * M * r_lo > 0
        s[free] = -c[free] / (lam[free] + 0.5 * M * r_lo)
        s[np.flatnonzero(~free)[:1]] = math.sqrt(max(r_lo * r_lo - float(s @ s), 0.0))
        return xp.asarray(Q @ s)
    r_a, step = r_lo, 1e-15 * max(1.0, r_lo)
    while not math.isfinite(gap(r_a)):  # a pole at r_lo: start just above it
        r_a, step = r_lo + step, 2.0 * step
    r_b = max(2.0 * r_a, 1.0)
    while gap(r_b) > 0:
        r_b *= 2.0
    r = brentq(gap, r_a, r_b, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)
    return xp.asarray(-(Q @ (c / (lam + 0.5 * M * r))))


@register
@dataclass(frozen=True)
class FedNLCR(OldPointLearner):
    """FedNL-CR (module docstring)."""

    M: Any = "L_H"
    l_norm: str = "frobenius"

    name = "fednl_cr"
    description = (
        "FedNL with a cubic-regularised step on the learned Hessian plus l^k I; "
        "every client learns its Hessian at the old point"
    )
    source = "Safaryan, Islamov, Qian, Richtarik 2022 (ICML), arXiv 2106.02969, FedNL-CR"

    def __post_init__(self) -> None:
        super().__post_init__()
        M = number_or(self.M, "M", ("L_H",))
        check(
            M == "L_H" or (is_real(M) and M >= 0),
            f"M must be a number >= 0 or 'L_H', got {self.M!r}",
        )
        object.__setattr__(self, "M", M)
        check_choice(self.l_norm, "l_norm", L_NORMS)

    def cubic_constant(self, problem: Any) -> float:
        return float(problem.reference.L_H) if self.M == "L_H" else float(self.M)

    def round(self, ctx: RoundContext, state: FedNLState) -> tuple[FedNLState, RoundInfo]:
        o, Hk, norms, token = self.learn_at_old_point(ctx, state, norm=self.l_norm)
        A = shift(Hk, ctx.mix(norms))
        M = self.cubic_constant(ctx.problem)
        h = ctx.per_run(lambda c, A, g: cubic_step(A, g, M), A, ctx.mix(o.g))  # on the host
        info = self.counts(ctx, state, extra_floats=1, extra_bits=BITS_PER_FLOAT)
        return FedNLState(state.theta + h, state.H_local, token), info


__all__ = ["FedNLPP", "FedNLLS", "FedNLCR", "FedNLPPState", "cubic_step"]
