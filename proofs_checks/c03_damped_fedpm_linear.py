"""C3: damped FedPM (K = 1, eta < 1) converges linearly with ratio 1 - eta.

With K = 1 FedPM is the damped Newton step theta+ = theta - eta H^{-1} g (C1), so near theta*
theta+ - theta* = (1 - eta)(theta - theta*) + O(eta ||theta - theta*||^2): the Q-linear ratio
is exactly 1 - eta.

Protocol (docs/claims.md): eta in {0.25, 0.5, 0.75}, FedPM(K = 1), full participation, from
theta^0 = 0 to the float floor, on heterogeneous logistic problems of the suite:
``fedprox_synthetic_1_1`` and ``breast_cancer_dirichlet`` (quick), plus ``a9a_fednl`` and
``phishing_iid`` (full). The ratio q is :func:`fedtheory.rates.linear_rate` on the asymptotic
window (scale ||theta*||); each (problem, eta) passes when |q - (1 - eta)| <= 0.05, and the
claim passes when all do. The interval printed is the fit's 95 % interval on q for the first
problem at eta = 0.25.
"""

from __future__ import annotations

import time

import numpy as np
from matplotlib.figure import Figure

from fedtheory import claims_figures as cf
from fedtheory.claims import (
    ClaimRecord,
    MethodFactory,
    assert_claim,
    fedpm_factory,
    fmt_ci,
    record,
    scale_of,
)
from fedtheory.claims.protocol import load_problem
from fedtheory.errors import FedTheoryError
from fedtheory.rates import default_floor, linear_rate
from fedtheory.runner import run

CLAIM_ID = "C3"
STATEMENT = "Damped FedPM (K = 1, eta < 1) converges linearly with ratio 1 - eta"
SOURCE = (
    "Ishii et al. 2025 (arXiv 2511.09100), FedPM with K = 1 is damped Newton (eq. 8); "
    "damped Newton's local linear rate"
)
ETAS = (0.25, 0.5, 0.75)
TOL = 0.05
MAX_ROUNDS = 300


def problem_names(quick: bool) -> list[str]:
    names = ["fedprox_synthetic_1_1", "breast_cancer_dirichlet"]
    return names if quick else [*names, "a9a_fednl", "phishing_iid"]


def measure(problem, method, eta: float) -> dict:
    scale = scale_of(problem)
    trace = run(
        problem,
        method,
        MAX_ROUNDS,
        target=default_floor(scale) / max(1.0, scale),
        drift_metrics=False,
    )
    e = trace["dist_to_opt"]
    out = {
        "problem": problem.name,
        "eta": eta,
        "predicted": 1 - eta,
        "rounds": len(e) - 1,
        "status": trace.status,
        "theta_star_norm": scale,
        "errors": cf.rounded(e, 6),
    }  # for the figure
    try:
        fit = linear_rate(e, scale=scale)
    except FedTheoryError as exc:
        return {
            **out,
            "q": float("nan"),
            "ci": (float("nan"),) * 2,
            "passed": False,
            "reason": f"no linear rate can be fitted: {exc}",
        }
    ok = abs(fit.q - (1 - eta)) <= TOL
    return {
        **out,
        "q": fit.q,
        "ci": fit.ci,
        "median_ratio": fit.median_ratio,
        "window": fit.window,
        "points": fit.n_points,
        "passed": ok,
        "reason": "" if ok else f"|q - (1 - eta)| = {abs(fit.q - (1 - eta)):.3g} > {TOL}",
    }


def check(
    quick: bool = True, method_factory: MethodFactory = fedpm_factory, on: list | None = None
) -> ClaimRecord:
    """The claim on the protocol's problems, or on the problems ``on`` (a user's problem)."""
    started = time.perf_counter()
    chosen = on or [load_problem(name) for name in problem_names(quick)]
    results = [measure(p, method_factory(K=1, eta=eta), eta) for p in chosen for eta in ETAS]
    passed = all(r["passed"] for r in results)
    worst: dict[float, dict] = {}
    for r in results:
        dev = abs(r["q"] - r["predicted"]) if r["q"] == r["q"] else float("inf")
        if r["eta"] not in worst or dev > worst[r["eta"]]["dev"]:
            worst[r["eta"]] = {**r, "dev": dev}
    first = results[0]
    largest = max(w["dev"] for w in worst.values())
    measured = (
        "q "
        + "/".join(f"{worst[eta]['q']:.3f}" for eta in ETAS)
        + f" (worst of {len(results) // len(ETAS)})"
    )
    return record(
        CLAIM_ID,
        STATEMENT,
        SOURCE,
        started,
        measured=measured,
        predicted="/".join(f"{1 - e:g}" for e in ETAS) + f" (+- {TOL})",
        interval=fmt_ci(first["ci"], ".3f"),
        passed=passed,
        details={
            "problems": problem_names(quick),
            "etas": ETAS,
            "tolerance": TOL,
            "interval_of": f"q of {first['problem']} at eta = {first['eta']:g}",
            "largest_deviation": largest,
            "runs": results,
        },
    )


@cf.draws_claim
def figure(rec: ClaimRecord) -> Figure:
    """One panel per problem: e_t for each eta with its fit window, the fitted ratio q^t and
    the predicted (1 - eta)^t through the window's centroid, and the float floor. Last panel:
    q - (1 - eta) with its 95 % interval against the pass band +- 0.05."""
    runs = rec.details["runs"]
    tol = rec.details["tolerance"]
    names = list(dict.fromkeys(r["problem"] for r in runs))
    fig, axes = cf.new_figure(
        rec,
        "damped FedPM (K = 1) is linear with ratio 1 - eta",
        ncols=3,
        panels=len(names) + 1,
        size=(14.5, 6.0 * (-(-(len(names) + 1) // 3))),
    )
    etas = list(dict.fromkeys(r["eta"] for r in runs))
    colors = {eta: cf.SERIES[k % len(cf.SERIES)] for k, eta in enumerate(etas)}
    for ax, name in zip(axes, names, strict=False):
        sel = [r for r in runs if r["problem"] == name]
        floor = default_floor(sel[0]["theta_star_norm"])
        bottom = floor / 10
        for r in sel:
            c = colors[r["eta"]]
            e, low = cf.log_values(r["errors"], bottom)
            t = np.arange(len(e))
            q = float(r["q"])
            verdict = "passes" if r["passed"] else "fails"
            ax.semilogy(
                t,
                e,
                "-",
                color=c,
                lw=1.2,
                label=f"eta {r['eta']:g}: q = {q:.3f}, 1 - eta = {r['predicted']:g} ({verdict})",
            )
            cf.mark_zeros(ax, t, e, low, c, bottom)
            if r.get("window"):
                start, stop = r["window"]
                cf.mark_window(ax, t, e, r["window"], c)
                tw = t[start:stop]
                cx, cy = tw.mean(), np.log(e[start:stop]).mean()
                ax.semilogy(tw, np.exp(cy + (tw - cx) * np.log(q)), "--", color="black", lw=1)
                ax.semilogy(tw, np.exp(cy + (tw - cx) * np.log(r["predicted"])), ":", color=c, lw=2)
        ax.plot([], [], "--", color="black", lw=1, label=r"fitted $q^t$ (over the window)")
        ax.plot([], [], ":", color="grey", lw=2, label=r"predicted $(1-\eta)^t$")
        ax.add_artist(ax.legend(handles=[cf.window_handle()], fontsize=7, loc="upper right"))
        cf.float_floor(ax, floor)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("round $t$")
        ax.set_ylabel(r"$e_t = \|\theta^t - \theta^\star\|$")
        cf.legend(ax, **cf.BELOW)
    ax = axes[len(names)]
    for k, name in enumerate(names):
        for r in (r for r in runs if r["problem"] == name):
            q, ci = float(r["q"]), [float(v) for v in r["ci"]]
            x = r["eta"] + 0.02 * (k - (len(names) - 1) / 2)
            dev = q - r["predicted"]
            ax.errorbar(
                [x],
                [dev],
                yerr=[[max(q - ci[0], 0)], [max(ci[1] - q, 0)]],
                fmt=cf.MARKERS[k % 8],
                color=cf.verdict_color(r["passed"]),
                mec="black",
                capsize=3,
                ms=6,
                label=name if r["eta"] == etas[0] else "_nolegend_",
            )
    ax.axhspan(
        -tol,
        tol,
        color=cf.PASS_COLOR,
        alpha=0.15,
        lw=0,
        label=f"pass band: |q - (1 - eta)| <= {tol:g}",
    )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(etas)
    ax.set_xlabel(r"$\eta$")
    ax.set_ylabel(r"fitted $q - (1 - \eta)$ (bars: 95 % CI)")
    ax.set_ylim(-2.5 * tol, 2.5 * tol)
    ax.set_title(
        "fitted ratio against the prediction (green: meets, vermillion: fails)", fontsize=9
    )
    cf.legend(ax, **cf.BELOW)
    return fig


def test_claim():
    assert_claim(check)
