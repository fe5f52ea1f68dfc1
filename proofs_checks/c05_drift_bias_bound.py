"""C5: the drift-coupled bias bound at the K = 1 SOPM limit.

At a limit theta_bar of SOPM with K = 1 (delta = 0), sum_i w_i P_i^{-1} g_i = 0 with
P_i = H_i(theta_bar), g_i = g_i(theta_bar) (C4). Writing Pbar = sum w_i P_i,

    grad f = sum w_i g_i = Pbar sum w_i (Pbar^{-1} - P_i^{-1}) g_i
           = Pbar sum w_i P_i^{-1} (P_i - Pbar) Pbar^{-1} g_i,

so ||grad f(theta_bar)||
    <= ||Pbar|| max_i ||P_i^{-1}|| ||Pbar^{-1}|| sum w_i ||P_i - Pbar||_2 ||g_i||
    <= (Lambda / mu^2) sqrt(Delta_D) zeta                          (Cauchy-Schwarz),
with Delta_D = sum w_i ||P_i - Pbar||_2^2 and zeta^2 = sum w_i ||g_i||^2.

Reading of the constants (docs/claims.md names them without defining them; this is the reading under
which the displayed chain of inequalities is a theorem, and the tightest such):

- Lambda = max_i lambda_max(P_i) at the limit, an upper bound on ||Pbar|| (the largest
  eigenvalue over clients of the preconditioners at the limit);
- mu = min_i lambda_min(P_i) at the limit, a lower bound on every lambda_min(P_i) and on
  lambda_min(Pbar) (lambda_min is concave). For L2 logistic mu >= lam, and on these data sets,
  where some feature is absent from some client, mu = lam exactly.

The "floor" of the Spearman criterion is the bounded quantity, ||grad f(theta_bar)||; the
distance ||theta_bar - theta*|| is reported beside it.

Protocol (docs/claims.md): L2 logistic (lam = 1e-3), 10 clients, Dirichlet label skew alpha in
{0.05, 0.1, 0.5, 1, 10} and IID on two data sets: the first rows of a9a (2,000 quick, 4,000
full) and phishing (2,000 rows quick, all 8,619 full); partition seed 0 (quick) or seeds
0, 1, 2 (full); Dirichlet min_size 2 (two labels and small alpha leave some clients tiny).
The limit is :func:`fedtheory.claims.sopm_limit` (eta = 1, then 0.5, 0.25 if eta = 1 does not
settle; the K = 1 fixed points do not depend on eta). An instance counts only if the limit is
a fixed point: ||sum w_i P_i^{-1} g_i|| <= 1e-10 max(1, ||theta_bar||). Pass: the bound holds on
every instance, and on each data set the Spearman correlation (scipy.stats.spearmanr) of
||grad f(theta_bar)|| with sqrt(Delta_D) zeta over its instances is >= 0.8. Tightness
(bound / measured) is reported per instance. Added to these (both must hold too):

- **Near-tight witnesses.** On the protocol's instances the bound has 6.3e3-4.1e6 slack
  (3.6e3 in full mode), so it cannot fail there: the bound with Lambda / mu in place of
  Lambda / mu^2 (1000x smaller, not a theorem) holds on all of them. Two small instances
  (:data:`WITNESSES`) are built so that the chain of inequalities above is nearly an
  equality: one feature (so ||P_i^{-1}||, ||Pbar^{-1}|| and ||Pbar|| are the curvatures
  themselves) and two clients whose curvatures at the limit differ by a third (with d = 1
  and two clients the tightness is r sqrt(w_2 + w_1 r^2), r = Lambda / mu, client 1 the
  flatter; it tends to 1 as r -> 1). L2 logistic with lam = 1e-3 and small features, so
  mu = 3.5e-3 and 8.2e-3: a dimensionally wrong bound (Lambda / mu, off by the factor mu)
  fails there as surely as one off by a constant factor.
  Pass: each witness is a SOPM fixed point, the bound holds, and its tightness is
  <= :data:`MAX_WITNESS_TIGHTNESS` = 10 (measured 1.55 and 1.63). A bound 10x smaller
  than the theorem's fails.
- **The drift-floor law on these instances** (claim C13's statement, which is sharp where
  the bound is loose): theta_bar - theta* = -sum_i w_i H_i(theta*)^{-1} g_i(theta*) +
  O(||theta_bar - theta*||^2). C13 judges it at relative error 0.1 in the first-order regime;
  C5's instances reach floors of 96 % of ||theta*||, so the criterion here is the
  second-order form: the vector relative error ||measured - predicted|| / ||measured|| is
  <= 0.75 ||theta_bar - theta*|| / ||theta*|| on every instance (measured 0.014-0.34, i.e.
  0.21-0.51 times the relative floor, quick and full mode).
"""

from __future__ import annotations

import time

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from fedtheory import FederatedProblem
from fedtheory import claims_figures as cf
from fedtheory._backend import to_numpy
from fedtheory.claims import (
    ClaimRecord,
    MethodFactory,
    assert_claim,
    heterogeneous_problem,
    local_newton_residual,
    on_backend,
    record,
    scale_of,
    sopm_factory,
    sopm_limit,
)
from fedtheory.linalg import spd_solve

CLAIM_ID = "C5"
STATEMENT = (
    "At the K = 1 SOPM limit, ||grad f|| <= (Lambda / mu^2) sqrt(Delta_D) zeta, and the "
    "floor tracks sqrt(Delta_D) zeta across heterogeneity levels"
)
SOURCE = "Ishii et al. 2025 (arXiv 2511.09100), drift-coupled bias bound of simple mixing"
ALPHAS = (0.05, 0.1, 0.5, 1.0, 10.0, None)  # None: IID
MIN_SPEARMAN = 0.8
FIXED_POINT_TOL = 1e-10
MAX_LAW_RATIO = 0.75  # law's relative error / relative floor
MAX_WITNESS_TIGHTNESS = 10.0
#: near-tight instances of the bound: one feature, two clients (rows, labels), lam = 1e-3
WITNESSES = {
    "witness_1d_a": ([[0.1, 0.1, 0.1, 0.1], [0.12, 0.12, 0.12]], [[1, 1, 1, -1], [1, -1, -1]]),
    "witness_1d_b": ([[0.2, 0.1, 0.3], [0.15, 0.25, 0.1]], [[1, 1, -1], [-1, -1, 1]]),
}


def instances(quick: bool) -> list[tuple[str, int | None, float | None, int]]:
    sets = [("a9a", 2000), ("phishing", 2000)] if quick else [("a9a", 4000), ("phishing", None)]
    seeds = (0,) if quick else (0, 1, 2)
    return [(ds, rows, alpha, seed) for ds, rows in sets for seed in seeds for alpha in ALPHAS]


def bound_terms(problem, theta: np.ndarray) -> dict:
    """Delta_D, zeta, Lambda, mu, ||grad f|| at theta (P_i = H_i(theta), delta = 0)."""
    o = problem.oracle(problem.xp.asarray(theta), grad=True, hess=True)
    w = to_numpy(problem.weights)
    P, g = to_numpy(o.H), to_numpy(o.g)
    Pbar = np.tensordot(w, P, axes=1)
    spectral = np.abs(np.linalg.eigvalsh(P - Pbar)).max(axis=1)
    eig = np.linalg.eigvalsh(P)
    delta_D = float(w @ spectral**2)
    zeta = float(np.sqrt(w @ np.sum(g * g, axis=1)))
    Lam, mu = float(eig[:, -1].max()), float(eig[:, 0].min())
    grad = float(np.linalg.norm(w @ g))
    bound = Lam / mu**2 * np.sqrt(delta_D) * zeta
    return {
        "grad_norm": grad,
        "Delta_D": delta_D,
        "zeta": zeta,
        "Lambda": Lam,
        "mu": mu,
        "sqrt_DeltaD_zeta": float(np.sqrt(delta_D) * zeta),
        "bound": float(bound),
        "tightness": float(bound / grad) if grad > 0 else float("inf"),
    }


def drift_floor_law(problem) -> np.ndarray:
    """Claim C13's predicted floor -sum_i w_i H_i(theta*)^{-1} g_i(theta*)."""
    star = problem.xp.asarray(problem.reference.theta_star)
    o = problem.oracle(star, grad=True, hess=True)
    return -to_numpy(problem.weights @ spd_solve(o.H, o.g))


def _limit_and_bound(problem, factory: MethodFactory) -> dict:
    """The SOPM limit, whether it is a fixed point, and the bound's terms there."""
    lim, eta = sopm_limit(problem, factory, K=1)
    res = float(np.linalg.norm(local_newton_residual(problem, lim.theta)))
    fixed = lim.converged and res <= FIXED_POINT_TOL * max(1.0, float(np.linalg.norm(lim.theta)))
    terms = bound_terms(problem, lim.theta)
    return {
        "problem": problem.name,
        "eta_used": eta,
        "rounds": lim.rounds,
        "fixed_point_residual": res,
        "is_fixed_point": fixed,
        **terms,
        "bound_holds": terms["grad_norm"] <= terms["bound"],
        "theta": lim.theta,
    }


def measure(
    dataset: str, rows: int | None, alpha: float | None, seed: int, factory: MethodFactory
) -> dict:
    problem = heterogeneous_problem(dataset, rows=rows, clients=10, alpha=alpha, seed=seed)
    out = _limit_and_bound(problem, factory)
    theta = out.pop("theta")
    star = to_numpy(problem.reference.theta_star)
    dist = float(np.linalg.norm(theta - star))
    predicted = drift_floor_law(problem)
    law = float(np.linalg.norm(theta - star - predicted)) / dist if dist > 0 else np.inf
    rel_floor = dist / scale_of(problem)
    law_ok = law <= MAX_LAW_RATIO * rel_floor  # nan fails
    return {
        "dataset": dataset,
        "rows": problem.n,
        "alpha": "iid" if alpha is None else alpha,
        "seed": seed,
        **out,
        "rel_dist": dist / max(1.0, scale_of(problem)),
        "rel_floor": rel_floor,
        "law_rel_error": law,
        "law_error_over_floor": law / rel_floor if rel_floor > 0 else np.inf,
        "predicted_floor": float(np.linalg.norm(predicted)),
        "law_ok": law_ok,
        "passed": out["is_fixed_point"] and out["bound_holds"] and law_ok,
        # for the figure's float floor of ||grad f||
        "L": problem.reference.L,
        "theta_star_norm": scale_of(problem),
    }


def witness(name: str, factory: MethodFactory) -> dict:
    """A near-tight instance of :data:`WITNESSES`: the bound must hold within a factor
    :data:`MAX_WITNESS_TIGHTNESS`."""
    rows, labels = WITNESSES[name]
    problem = on_backend(
        FederatedProblem.from_clients(
            [np.asarray(a, dtype=float)[:, None] for a in rows],
            [np.asarray(y, dtype=float) for y in labels],
            objective="logistic",
            lam=1e-3,
            name=name,
        )
    )
    out = _limit_and_bound(problem, factory)
    out.pop("theta")
    tight_ok = out["bound_holds"] and out["tightness"] <= MAX_WITNESS_TIGHTNESS
    return {**out, "tight_ok": tight_ok, "passed": out["is_fixed_point"] and tight_ok}


def check(quick: bool = True, method_factory: MethodFactory = sopm_factory) -> ClaimRecord:
    started = time.perf_counter()
    runs = [measure(*inst, method_factory) for inst in instances(quick)]
    witnesses = [witness(name, method_factory) for name in WITNESSES]
    spearman = {}
    for ds in dict.fromkeys(r["dataset"] for r in runs):
        sub = [r for r in runs if r["dataset"] == ds]
        rho = stats.spearmanr(
            [r["grad_norm"] for r in sub], [r["sqrt_DeltaD_zeta"] for r in sub]
        ).statistic
        spearman[ds] = float(rho) if np.isfinite(rho) else float("nan")
    pooled = stats.spearmanr(
        [r["grad_norm"] for r in runs], [r["sqrt_DeltaD_zeta"] for r in runs]
    ).statistic
    rho_min = min(spearman.values())
    all_hold = all(r["passed"] for r in runs)
    witnesses_ok = all(r["passed"] for r in witnesses)
    passed = all_hold and witnesses_ok and rho_min >= MIN_SPEARMAN  # nan compares False
    tight = [r["tightness"] for r in runs]
    law_ratio = max(r["law_error_over_floor"] for r in runs)
    failures = [
        f"{r['problem']}: "
        + (
            "not a SOPM fixed point"
            if not r["is_fixed_point"]
            else "bound violated"
            if not r["bound_holds"]
            else f"drift-floor law off by {r['law_rel_error']:.3g}"
            f" > {MAX_LAW_RATIO:g} x relative floor "
            f"{r['rel_floor']:.3g}"
        )
        for r in runs
        if not r["passed"]
    ]
    failures += [
        f"{r['problem']}: "
        + (
            "not a SOPM fixed point"
            if not r["is_fixed_point"]
            else "bound violated"
            if not r["bound_holds"]
            else f"bound / measured {r['tightness']:.3g} > {MAX_WITNESS_TIGHTNESS:g}"
        )
        for r in witnesses
        if not r["passed"]
    ]
    witness_tight = ", ".join(f"{r['tightness']:.2g}" for r in witnesses)
    return record(
        CLAIM_ID,
        STATEMENT,
        SOURCE,
        started,
        measured=f"holds {sum(r['is_fixed_point'] and r['bound_holds'] for r in runs)}"
        f"/{len(runs)}, "
        f"rho {', '.join(f'{v:.2f}' for v in spearman.values())}; "
        f"witness tight {witness_tight}; law/floor {law_ratio:.2f}",
        predicted=f"holds all, rho >= {MIN_SPEARMAN}; witness <= "
        f"{MAX_WITNESS_TIGHTNESS:g}; law <= {MAX_LAW_RATIO:g}",
        interval=f"tight {min(tight):.1e}..{max(tight):.1e}",
        passed=passed,
        details={
            "spearman_by_dataset": spearman,
            "spearman_pooled": float(pooled),
            "tightness_range": (min(tight), max(tight)),
            "constants": "Lambda = max_i lambda_max(P_i), mu = min_i lambda_min(P_i), at the limit",
            "witness_tightness": [r["tightness"] for r in witnesses],
            "law_max_error_over_floor": law_ratio,
            "criteria": f"bound holds on every instance; Spearman >= "
            f"{MIN_SPEARMAN} per data set; near-tight witnesses: "
            f"bound holds with bound / measured <= "
            f"{MAX_WITNESS_TIGHTNESS:g}; drift-floor law: "
            f"relative error <= {MAX_LAW_RATIO:g} x relative "
            f"floor on every instance",
            "failures": failures,
            "runs": runs,
            "witnesses": witnesses,
        },
    )


@cf.draws_claim
def figure(rec: ClaimRecord) -> Figure:
    """Left: the measured floor ||grad f|| at the SOPM limit against sqrt(Delta_D) zeta, one
    point per instance, with the bound (Lambda / mu^2) sqrt(Delta_D) zeta above it and each
    data set's Spearman correlation against the pass line 0.8. Right: the bound's tightness
    (bound / measured) per instance; the bound holds where it is >= 1; and on the near-tight
    witnesses, where it must lie in [1, 10]."""
    d = rec.details
    runs = d["runs"]
    fig, (left, right) = cf.new_figure(
        rec, "the drift-coupled bound on the SOPM bias", ncols=2, size=(12.0, 5.8)
    )
    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    ticks: tuple = ([], [])
    for i, name in enumerate(datasets):
        sel = [r for r in runs if r["dataset"] == name]
        c = cf.SERIES[i % len(cf.SERIES)]
        rho = float(d["spearman_by_dataset"][name])
        verdict = "meets" if rho >= MIN_SPEARMAN else "fails"
        x = [float(r["sqrt_DeltaD_zeta"]) for r in sel]
        left.loglog(
            x,
            [float(r["grad_norm"]) for r in sel],
            "o",
            color=c,
            label=f"{name}: measured floor; Spearman {rho:.2f} ({verdict} >= {MIN_SPEARMAN})",
        )
        left.loglog(
            x,
            [float(r["bound"]) for r in sel],
            "v",
            mfc="none",
            color=c,
            label=f"{name}: bound (holds {sum(r['bound_holds'] for r in sel)}/{len(sel)})",
        )
        bad = [r for r in sel if not r["is_fixed_point"]]
        if bad:
            left.loglog(
                [float(r["sqrt_DeltaD_zeta"]) for r in bad],
                [float(r["grad_norm"]) for r in bad],
                "x",
                color=cf.FAIL_COLOR,
                ms=9,
                label="not a SOPM fixed point (fails)",
            )
        seeds = len({r["seed"] for r in sel}) > 1
        labels = [
            ("IID" if r["alpha"] == "iid" else f"alpha {r['alpha']}")
            + (f", seed {r['seed']}" if seeds else "")
            for r in sel
        ]
        right.semilogy(
            range(len(sel)),
            [float(r["tightness"]) for r in sel],
            "-",
            color=c,
            marker=cf.MARKERS[i % 8],
            label=name,
        )
        ticks = (range(len(sel)), labels)
    witnesses = d.get("witnesses", [])  # records before the criterion: none
    if witnesses:
        wx = np.arange(len(witnesses)) + len(ticks[0]) + 0.5
        right.semilogy(
            wx,
            [float(r["tightness"]) for r in witnesses],
            "*",
            ms=12,
            color="black",
            ls="none",
            label=f"near-tight witnesses (pass: 1 <= . <= {MAX_WITNESS_TIGHTNESS:g})",
        )
        right.axhline(MAX_WITNESS_TIGHTNESS, color="black", ls=":", lw=1.0)
        ticks = ([*ticks[0], *wx], [*ticks[1], *(r["problem"] for r in witnesses)])
    right.set_xticks(list(ticks[0]), list(ticks[1]), fontsize=7, rotation=30, ha="right")
    floor = max(cf.grad_floor(r["L"], r["theta_star_norm"]) for r in runs)
    cf.float_floor(left, floor, of=r"$10^3\varepsilon\max(1, L\max(1, \|\theta^\star\|))$")
    left.set_xlabel(r"$\sqrt{\Delta_D}\,\zeta$ at the SOPM limit")
    left.set_ylabel(r"$\|\nabla f\|$ at the limit")
    cf.legend(left, **cf.BELOW)
    right.axhline(
        1.0, color=cf.FAIL_COLOR, ls="--", lw=1.3, label="bound = measured (pass: every point >= 1)"
    )
    right.set_ylabel(r"tightness: bound / $\|\nabla f\|$")
    right.set_title(
        r"$\Lambda = \max_i \lambda_{\max}(P_i)$, "
        r"$\mu = \min_i \lambda_{\min}(P_i)$ at the limit",
        fontsize=9,
    )
    cf.legend(right, **cf.BELOW)
    return fig


def test_claim():
    assert_claim(check)
