"""C7: FedPAC's server trajectory is heavy-ball momentum with coefficient beta, and beta leaves
the K = 1 fixed point unchanged (Liu et al. 2026; docs/algorithms.md "FedPAC", identity (a)).

Every client's local step is theta_i^{k+1} = theta_i^k - eta [(1 - beta) d_i^k + beta gG], so
Delta = -eta (1 - beta) sum w~_i sum_k d_i^k - K eta beta gG, and gG = -Delta^{r-1} / (K eta):

    theta^{r+1} - theta^r = -eta (1 - beta) sum w~_i sum_k d_i^k + beta (theta^r - theta^{r-1}).

For K = 1, at a fixed point Delta = 0 and gG = 0, so the fixed-point equation
sum w_i d_i = 0 (with the fixed point's Theta) does not involve beta.

Protocol (docs/claims.md):

- identity: FedPAC with beta in {0, 0.3, 0.8}, K in {1, 3}, rho = 0.5, constant eta = 0.7,
  under full participation and under partial participation (S = N / 2, participants drawn
  from a seeded generator), 8 rounds from theta^0 = 0 on ``fedprox_synthetic_1_1`` (quick) and
  also ``a9a_fednl`` (full). The directions d_i^k are recomputed here, independently of the
  method's code, from the recursion of docs/algorithms.md and the server state (theta, Theta, gG)
  the method holds at the start of each round; the residual of each round is
  ||step - heavy_ball|| / (||step|| + beta ||theta^r - theta^{r-1}||), and its maximum over all
  rounds must be <= 1e-10;
- fixed points: FedPAC with K = 1, eta = 1, rho = 0.5, full participation, iterated to its
  limit (:func:`fedtheory.claims.limit_point`, steps below 1e-13 relative) for each beta on
  ``fedprox_synthetic_1_1`` (quick) and ``breast_cancer_dirichlet`` (full); the limits must
  agree with beta = 0's to 1e-8 relative (max(1, ||limit||)).

rho = 0.5 (not the method's default 0.9) only shortens the run to the fixed point; the
identity and the fixed-point statement hold for every rho.
"""

from __future__ import annotations

import time

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fedtheory import claims_figures as cf
from fedtheory.claims import (
    ClaimRecord,
    MethodFactory,
    assert_claim,
    limit_point,
    record,
)
from fedtheory.claims.protocol import load_problem
from fedtheory.linalg import add_diag, spd_solve
from fedtheory.methods import make_method
from fedtheory.methods.base import round_context

CLAIM_ID = "C7"
STATEMENT = (
    "FedPAC's server trajectory is heavy-ball momentum with coefficient beta; beta "
    "leaves the K = 1 fixed point unchanged"
)
SOURCE = "Liu et al. 2026 (arXiv 2602.19271), FedPAC; docs/algorithms.md identity (a)"
BETAS = (0.0, 0.3, 0.8)
IDENTITY_TOL = 1e-10
FIXED_POINT_TOL = 1e-8
ROUNDS = 8
ETA = 0.7
RHO = 0.5


def fedpac_factory(**params) -> object:
    return make_method("fedpac", params)


def direction_sums(
    problem, state, clients, *, K: int, eta: float, beta: float, rho: float, delta: float = 0.0
) -> np.ndarray:
    """sum_k d_i^k of every participant, from the recursion of docs/algorithms.md (one client at
    a time, written out as the spec writes it; "update_then_use", align = True)."""
    ids = range(problem.N) if clients is None else clients
    out = []
    for i in ids:
        x, Th = state.theta, state.Theta
        total = problem.xp.zeros(problem.d)
        for _ in range(K):
            o = problem.oracle(x, [i], grad=True, hess=True)
            Th = rho * Th + (1 - rho) * o.H[0]
            d = spd_solve(add_diag(Th, delta), o.g[0])
            total = total + d
            x = x - eta * ((1 - beta) * d + beta * state.gG)
        out.append(total)
    return problem.xp.stack(out)


def identity_residuals(
    problem, factory: MethodFactory, *, K: int, beta: float, partial: bool
) -> list[float]:
    method = factory(K=K, eta=ETA, beta=beta, rho=RHO)
    rng = np.random.default_rng(1)
    state, _ = method.start(problem, problem.xp.zeros(problem.d))
    prev_theta = state.theta
    residuals = []
    for _ in range(ROUNDS):
        clients = (
            np.sort(rng.choice(problem.N, size=problem.N // 2, replace=False)) if partial else None
        )
        ctx = round_context(problem, clients, rng=rng)
        new, _ = method.round(ctx, state)
        sums = direction_sums(problem, state, clients, K=K, eta=ETA, beta=beta, rho=RHO)
        step = new.theta - state.theta
        momentum = state.theta - prev_theta
        heavy_ball = -ETA * (1 - beta) * (ctx.weights @ sums) + beta * momentum
        scale = np.linalg.norm(step) + beta * np.linalg.norm(momentum)
        residuals.append(float(np.linalg.norm(step - heavy_ball) / scale))
        prev_theta, state = state.theta, new
    return residuals


def check(quick: bool = True, method_factory: MethodFactory = fedpac_factory) -> ClaimRecord:
    started = time.perf_counter()
    id_problems = ["fedprox_synthetic_1_1"] + ([] if quick else ["a9a_fednl"])
    identity = []
    for name in id_problems:
        problem = load_problem(name)
        for beta in BETAS:
            for K in (1, 3):
                for partial in (False, True):
                    res = identity_residuals(
                        problem, method_factory, K=K, beta=beta, partial=partial
                    )
                    identity.append(
                        {
                            "problem": name,
                            "beta": beta,
                            "K": K,
                            "participation": "partial" if partial else "full",
                            "max_residual": max(res),
                            "residuals": cf.rounded(res, 3),
                        }
                    )  # for the figure
    fp_problem = load_problem("fedprox_synthetic_1_1" if quick else "breast_cancer_dirichlet")
    limits = {
        beta: limit_point(
            fp_problem, method_factory(K=1, eta=1.0, beta=beta, rho=RHO), max_rounds=3000
        )
        for beta in BETAS
    }
    base = limits[BETAS[0]].theta
    scale = max(1.0, float(np.linalg.norm(base)))
    fixed = [
        {
            "beta": beta,
            "rounds": lim.rounds,
            "converged": lim.converged,
            "rel_gap_to_beta0": float(np.linalg.norm(lim.theta - base)) / scale,
            "dist_to_theta_star": float(
                np.linalg.norm(lim.theta - fp_problem.reference.theta_star)
            ),
        }
        for beta, lim in limits.items()
    ]
    max_res = max(r["max_residual"] for r in identity)
    max_gap = max(f["rel_gap_to_beta0"] for f in fixed)
    converged = all(f["converged"] for f in fixed)
    passed = max_res <= IDENTITY_TOL and max_gap <= FIXED_POINT_TOL and converged
    return record(
        CLAIM_ID,
        STATEMENT,
        SOURCE,
        started,
        measured=f"identity {max_res:.1e}, fixed-point gap {max_gap:.1e}",
        predicted=f"0 (<= {IDENTITY_TOL:g}), 0 (<= {FIXED_POINT_TOL:g})",
        passed=passed,
        details={
            "identity_problems": id_problems,
            "fixed_point_problem": fp_problem.name,
            "eta": ETA,
            "rho": RHO,
            "all_limits_converged": converged,
            "identity": identity,
            "fixed_points": fixed,
        },
    )


@cf.draws_claim
def figure(rec: ClaimRecord) -> Figure:
    """Left: the heavy-ball identity's relative residual in every round of every run (colour:
    beta, marker: K, line: participation) against the pass line 1e-10 and the relative float
    floor. Right: the K = 1 fixed point reached with each beta, its relative gap to beta = 0's
    against the pass line 1e-8."""
    d = rec.details
    fig, (left, right) = cf.new_figure(
        rec, "FedPAC's server trajectory is heavy-ball momentum", ncols=2, size=(12.0, 5.8)
    )
    floor = cf.relative_floor()
    bottom = 1e-19
    betas = list(dict.fromkeys(r["beta"] for r in d["identity"]))
    Ks = list(dict.fromkeys(r["K"] for r in d["identity"]))
    color = {b: cf.SERIES[k % len(cf.SERIES)] for k, b in enumerate(betas)}
    marker = {K: cf.MARKERS[k % 8] for k, K in enumerate(Ks)}
    style = {"full": "-", "partial": "--"}
    for r in d["identity"]:
        y, low = cf.log_values(r.get("residuals", [r["max_residual"]]), bottom)
        t = np.arange(1, len(y) + 1)
        c = color[r["beta"]]
        left.semilogy(
            t, y, ls=style[r["participation"]], marker=marker[r["K"]], color=c, ms=4, lw=1
        )
        cf.mark_zeros(left, t, y, low, "black", bottom)
    left.axhline(
        IDENTITY_TOL,
        color=cf.FAIL_COLOR,
        ls="--",
        lw=1.3,
        label=f"pass: every residual <= {IDENTITY_TOL:g}",
    )
    cf.float_floor(left, floor, of=r"$10^3\varepsilon$ (relative)")
    left.set_ylim(bottom / 3, 1e-6)
    handles = (
        [Line2D([], [], color=color[b], lw=2, label=f"beta = {b:g}") for b in betas]
        + [Line2D([], [], color="grey", marker=marker[K], ls="none", label=f"K = {K}") for K in Ks]
        + [Line2D([], [], color="grey", ls=s, label=f"{p} participation") for p, s in style.items()]
    )
    left.legend(
        handles=[*handles, *left.get_legend_handles_labels()[0]], fontsize=7, ncols=2, **cf.BELOW
    )
    left.grid(alpha=0.3)
    left.set_xlabel("round $r + 1$")
    left.set_ylabel(
        r"$\|\Delta\theta - \mathrm{heavy\ ball}\| / (\|\Delta\theta\|"
        r" + \beta\|\theta^r - \theta^{r-1}\|)$"
    )
    left.set_title(
        f"identity (a), eta = {d['eta']:g}, rho = {d['rho']:g}, "
        f"{', '.join(d['identity_problems'])}",
        fontsize=9,
    )
    fixed = d["fixed_points"]
    x = np.arange(len(fixed))
    gaps = [f["rel_gap_to_beta0"] for f in fixed]
    y, low = cf.log_values(gaps, bottom)
    ok = [f["converged"] and float(f["rel_gap_to_beta0"]) <= FIXED_POINT_TOL for f in fixed]
    right.bar(x, y, color=[cf.verdict_color(o) for o in ok], width=0.6)
    right.set_yscale("log")
    cf.mark_zeros(right, x, y, low, "black", bottom)
    right.axhline(
        FIXED_POINT_TOL,
        color=cf.FAIL_COLOR,
        ls="--",
        lw=1.3,
        label=f"pass: gap <= {FIXED_POINT_TOL:g} (every limit converged)",
    )
    cf.float_floor(right, floor, of=r"$10^3\varepsilon$ (relative)")
    right.set_ylim(bottom / 3, 1e-4)
    right.set_xticks(
        x,
        [
            f"beta = {f['beta']:g}\n{f['rounds']} rounds"
            + ("" if f["converged"] else ", not converged")
            for f in fixed
        ],
    )
    right.set_ylabel(r"$\|\bar\theta_\beta - \bar\theta_0\| / \max(1, \|\bar\theta_0\|)$")
    right.set_title(
        f"K = 1 fixed points ({d['fixed_point_problem']}; beta = 0 is the reference)", fontsize=9
    )
    right.legend(
        handles=[*cf.pass_fail_handles(), *right.get_legend_handles_labels()[0]],
        fontsize=7,
        **cf.BELOW,
    )
    right.grid(alpha=0.3, axis="y")
    return fig


def test_claim():
    assert_claim(check)
