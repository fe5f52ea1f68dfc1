"""C1: FedPM with K = 1 is the damped global Newton step (Ishii et al. 2025, eq. 6-8).

For K = 1 and delta = 0 every participant uploads theta_i = theta - eta P_i^{-1} g_i and P_i, so
P_i theta_i = P_i theta - eta g_i and the server's mix is

    P^{-1} sum w~_i P_i theta_i = theta - eta P^{-1} sum w~_i g_i      (eq. 8),

the Newton round map on the participants S_t, for any eta and any S.

Protocol (docs/claims.md): Hypothesis draws random heterogeneous logistic and ridge problems
(:func:`fedtheory.testing.problems`: N in 2..8, d in 2..10, unequal client sizes, shifted
features, client-specific labels), a random theta (norm from 0.1 to 10), eta in (0, 1] and a
random strict subset of clients; one round of FedPM and one of Newton are compared from the
same theta under full and under partial participation. The check returns the largest
residual ||theta_FedPM+ - theta_Newton+|| / (1 + ||theta||) over every example Hypothesis ran
(shrinking included); it passes when that maximum is <= 1e-9.
"""

from __future__ import annotations

import math
import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure

from fedtheory import claims_figures as cf
from fedtheory.claims import (
    ClaimRecord,
    MethodFactory,
    assert_claim,
    fedpm_factory,
    one_round,
    record,
)
from fedtheory.claims.protocol import on_backend
from fedtheory.methods import make_method
from fedtheory.testing import problems

CLAIM_ID = "C1"
STATEMENT = "FedPM with K = 1 is the damped global Newton step, for any eta and any participation"
SOURCE = "Ishii et al. 2025 (arXiv 2511.09100), FedPM eq. 6-8"
TOL = 1e-9


@st.composite
def cases(draw):
    """(problem, theta, eta, participants of the partial round)."""
    problem = draw(problems())
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0]))
    theta = scale * rng.normal(size=problem.d) / np.sqrt(problem.d)
    eta = draw(st.floats(min_value=1e-3, max_value=1.0, allow_nan=False))
    S = draw(st.integers(1, problem.N - 1))
    clients = np.sort(rng.choice(problem.N, size=S, replace=False))
    return problem, theta, eta, clients


def check(quick: bool = True, method_factory: MethodFactory = fedpm_factory) -> ClaimRecord:
    started = time.perf_counter()
    examples = 100 if quick else 400
    seen: list[dict] = []

    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=cases())
    def one_example(case):
        problem, theta, eta, clients = case
        problem = on_backend(problem)  # fedtheory check --backend cupy
        scale = 1.0 + float(np.linalg.norm(theta))
        for label, sel in (("full", None), ("partial", clients)):
            fedpm = one_round(problem, method_factory(K=1, eta=eta), theta, clients=sel)
            newton = one_round(problem, make_method("newton", {"eta": eta}), theta, clients=sel)
            residual = float(np.linalg.norm(fedpm - newton)) / scale
            seen.append(
                {
                    "residual": residual,
                    "participation": label,
                    "problem": problem.name,
                    "objective": problem.objective,
                    "N": problem.N,
                    "d": problem.d,
                    "lam": problem.lam,
                    "S": problem.N if sel is None else len(sel),
                    "eta": eta,
                    "theta_norm": scale - 1.0,
                }
            )
            assert residual <= TOL, (
                f"residual {residual:.3e} > {TOL:g} ({label} "
                f"participation, {problem!r}, eta = {eta:.4g})"
            )

    falsified = None
    try:
        one_example()
    except Exception as exc:  # Hypothesis re-raises the shrunk counterexample's failure
        falsified = f"{type(exc).__name__}: {exc}"
    residuals = np.array([s["residual"] for s in seen]) if seen else np.array([np.inf])
    worst = seen[int(np.argmax(residuals))] if seen else {}
    n_full = sum(s["participation"] == "full" for s in seen)
    passed = falsified is None and bool(np.all(residuals <= TOL)) and len(seen) > 0
    details = {
        "max_residual": float(residuals.max()),
        "median_residual": float(np.median(residuals)),
        "tolerance": TOL,
        "rounds_compared": len(seen),
        "full_participation_rounds": n_full,
        "partial_participation_rounds": len(seen) - n_full,
        "logistic_rounds": sum(s["objective"] == "logistic" for s in seen),
        "ridge_rounds": sum(s["objective"] == "ridge" for s in seen),
        "worst_example": worst,
        "falsifying_example": falsified,
        # for the figure: every residual, by (participation, objective), to 3 digits
        "residuals_by_case": {
            f"{part}, {obj}": cf.rounded(
                [
                    s["residual"]
                    for s in seen
                    if s["participation"] == part and s["objective"] == obj
                ],
                3,
            )
            for part in ("full", "partial")
            for obj in ("logistic", "ridge")
        },
    }
    return record(
        CLAIM_ID,
        STATEMENT,
        SOURCE,
        started,
        measured=f"max residual {residuals.max():.2e} ({len(seen)} rounds)",
        predicted=f"0 (pass: <= {TOL:g})",
        passed=passed,
        details=details,
    )


@cf.draws_claim
def figure(rec: ClaimRecord) -> Figure:
    """Every residual ||theta_FedPM+ - theta_Newton+|| / (1 + ||theta||), one column per case
    (participation x objective) with its median, against the pass line 1e-9 and the relative
    float floor 1e3 eps; exact zeros drawn at the bottom."""
    d = rec.details
    fig, (ax,) = cf.new_figure(
        rec, "one FedPM round (K = 1) equals one damped Newton round", size=(7.8, 4.6)
    )
    floor = cf.relative_floor()
    cases = d["residuals_by_case"]
    positive = [float(v) for vs in cases.values() for v in vs if float(v) > 0]
    bottom = 10.0 ** math.floor(math.log10(min(positive, default=1e-17))) / 10
    rng = np.random.default_rng(0)
    for k, values in enumerate(cases.values()):
        y, low = cf.log_values(values, bottom)
        ok = np.asarray(y) <= d["tolerance"]
        x = k + rng.uniform(-0.28, 0.28, size=len(y))
        for sel, c in ((ok, cf.PASS_COLOR), (~ok, cf.FAIL_COLOR)):
            ax.semilogy(x[sel], y[sel], "o", color=c, ms=3.5, alpha=0.6, ls="none")
        cf.mark_zeros(ax, x, y, low, "black", bottom)
        if len(values):
            ax.plot(
                [k - 0.35, k + 0.35],
                [max(float(np.median(y)), bottom)] * 2,
                "-",
                color="black",
                lw=2,
                label="median of the case" if k == 0 else "_nolegend_",
            )
    ax.set_xticks(
        range(len(cases)), [f"{c}\n({len(v)} rounds)" for c, v in cases.items()], fontsize=8
    )
    ax.set_xlim(-0.6, len(cases) - 0.4)
    ax.axhline(
        d["tolerance"],
        color=cf.FAIL_COLOR,
        ls="--",
        lw=1.3,
        label=f"pass: every residual <= {d['tolerance']:g}",
    )
    ax.plot([], [], "o", color=cf.PASS_COLOR, label=f"residual (max {d['max_residual']:.1e})")
    if d.get("falsifying_example"):
        ax.plot([], [], "o", color=cf.FAIL_COLOR, label="residual above the pass line")
    cf.float_floor(ax, floor, of=r"$10^3\varepsilon$ (relative)")
    ax.set_ylim(
        bottom / 3,
        max(1e-6, 10 * float(d["max_residual"]) if np.isfinite(float(d["max_residual"])) else 1e-6),
    )
    ax.set_ylabel(r"$\|\theta^+_{\rm FedPM} - \theta^+_{\rm Newton}\| / (1 + \|\theta\|)$")
    cf.legend(ax, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig


def test_claim():
    assert_claim(check)
