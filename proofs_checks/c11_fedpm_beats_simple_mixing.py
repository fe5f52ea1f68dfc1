"""C11: FedPM beats simple mixing under heterogeneity and matches FedNL-class speed (FedPM's
main empirical claim).

Protocol (docs/claims.md): L2 logistic on ``a9a_fednl`` (a9a, 80 clients x 407 rows, lam = 1e-3)
and ``breast_cancer_dirichlet`` (breast cancer, Dirichlet(0.1) label skew over 10 clients,
lam = 1e-3), from theta^0 = 0, full participation, exact oracle:

- FedPM (K = 1, eta = 1) must reach rel_dist = ||theta - theta*|| / max(1, ||theta*||) <= 1e-8
  within 15 rounds;
- SOPM (simple mixing, K = 1, eta = 1) must never reach it in 100 rounds;
- FedNL (identity compressor, alpha = 1, option 1, init = "hessian") within 25 rounds.

Both modes run the same protocol (it takes a few seconds). Each method is injectable
(``fedpm_factory``, ``sopm_factory``, ``fednl_factory``) so that a broken one can be shown to
fail the check.
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
    record,
    sopm_factory,
)
from fedtheory.claims.protocol import load_problem
from fedtheory.methods import make_method
from fedtheory.plot import curve_styles
from fedtheory.runner import run

CLAIM_ID = "C11"
STATEMENT = (
    "FedPM beats simple mixing under heterogeneity (SOPM never reaches rel_dist 1e-8) "
    "and matches FedNL-class speed"
)
SOURCE = "Ishii et al. 2025 (arXiv 2511.09100), experiments; FedNL (Safaryan et al. 2022)"
TARGET = 1e-8
BUDGETS = {"FedPM": 15, "FedNL": 25}
SOPM_ROUNDS = 100
PROBLEMS = ("a9a_fednl", "breast_cancer_dirichlet")


def fednl_factory(**params) -> object:
    return make_method("fednl", {"compressor": "identity", "alpha": 1.0, "option": 1, **params})


def rounds_to_target(
    problem, method, rounds: int, curve: list | None = None
) -> tuple[int | None, float]:
    """First round with rel_dist <= TARGET (None if never within ``rounds``), best rel_dist.
    ``curve``, if given, receives the rel_dist of every round (for the figure)."""
    trace = run(problem, method, rounds, target=TARGET, drift_metrics=False)
    rel = trace["rel_dist"]
    if curve is not None:
        curve.extend(cf.rounded(rel, 4))
    hit = int(trace["round"][-1]) if trace.status == "reached_target" else None
    return hit, float(rel.min())


def check(
    quick: bool = True,
    fedpm_factory: MethodFactory = fedpm_factory,
    sopm_factory: MethodFactory = sopm_factory,
    fednl_factory: MethodFactory = fednl_factory,
) -> ClaimRecord:
    started = time.perf_counter()
    runs, ok = [], True
    for name in PROBLEMS:
        problem = load_problem(name)
        curves: dict[str, list] = {"FedPM": [], "SOPM": [], "FedNL": []}
        fedpm = rounds_to_target(problem, fedpm_factory(K=1, eta=1.0), SOPM_ROUNDS, curves["FedPM"])
        sopm = rounds_to_target(problem, sopm_factory(K=1, eta=1.0), SOPM_ROUNDS, curves["SOPM"])
        fednl = rounds_to_target(problem, fednl_factory(), SOPM_ROUNDS, curves["FedNL"])
        verdict = {
            "FedPM": fedpm[0] is not None and fedpm[0] <= BUDGETS["FedPM"],
            "SOPM": sopm[0] is None,
            "FedNL": fednl[0] is not None and fednl[0] <= BUDGETS["FedNL"],
        }
        ok = ok and all(verdict.values())
        runs.append(
            {
                "problem": name,
                "FedPM_round": fedpm[0],
                "SOPM_round": sopm[0],
                "FedNL_round": fednl[0],
                "FedPM_best_rel_dist": fedpm[1],
                "SOPM_best_rel_dist": sopm[1],
                "FedNL_best_rel_dist": fednl[1],
                "verdict": verdict,
                "rel_dist": curves,
            }
        )

    def cell(key: str) -> str:
        return "/".join("-" if r[key] is None else str(r[key]) for r in runs)

    return record(
        CLAIM_ID,
        STATEMENT,
        SOURCE,
        started,
        measured=f"FedPM {cell('FedPM_round')}, SOPM {cell('SOPM_round')}, "
        f"FedNL {cell('FedNL_round')} (rounds)",
        predicted=f"<= {BUDGETS['FedPM']}, never in {SOPM_ROUNDS}, <= {BUDGETS['FedNL']}",
        passed=ok,
        details={"target_rel_dist": TARGET, "problems": PROBLEMS, "runs": runs},
    )


@cf.draws_claim
def figure(rec: ClaimRecord) -> Figure:
    """One panel per problem: rel_dist of FedPM, SOPM and FedNL against the round, the target
    1e-8, each method's round budget (FedPM 15, FedNL 25; SOPM must not reach the target in
    100), and the relative float floor."""
    d = rec.details
    runs = d["runs"]
    fig, axes = cf.new_figure(
        rec,
        "FedPM beats simple mixing and matches FedNL's speed",
        ncols=len(runs),
        size=(6.2 * len(runs), 5.8),
    )
    methods = ("FedPM", "SOPM", "FedNL")
    styles = dict(zip(methods, curve_styles([m.lower() for m in methods]), strict=True))
    budgets = {**BUDGETS, "SOPM": SOPM_ROUNDS}
    floor = cf.relative_floor()
    for ax, r in zip(axes, runs, strict=True):
        for m in methods:
            st = styles[m]
            rel, low = cf.log_values(r["rel_dist"][m], floor / 100)
            t = np.arange(len(rel))
            hit = r[f"{m}_round"]
            ok = r["verdict"][m]
            what = (
                f"reaches 1e-8 at round {hit}"
                if hit is not None
                else f"never reaches 1e-8 (best {float(r[f'{m}_best_rel_dist']):.1e})"
            )
            rule = "must not reach it in" if m == "SOPM" else "budget"
            ax.semilogy(
                t,
                rel,
                color=st["color"],
                marker=st["marker"],
                ls=st["ls"],
                ms=3,
                lw=1.2,
                markevery=max(1, len(t) // 25),
                label=f"{m}: {what}; {rule} {budgets[m]} ({'meets' if ok else 'fails'})",
            )
            cf.mark_zeros(ax, t, rel, low, st["color"], floor / 100)
            if m != "SOPM":
                ax.axvline(budgets[m], color=st["color"], ls="-.", lw=1.2)
        ax.plot([], [], "-.", color="grey", label="round budgets (FedPM 15, FedNL 25)")
        cf.pass_line(
            ax, d["target_rel_dist"], f"target rel_dist {d['target_rel_dist']:g}", color="black"
        )
        cf.float_floor(ax, floor, of=r"$10^3\varepsilon$ (relative)")
        ax.set_xlabel("round $t$")
        ax.set_ylabel(r"$\|\theta^t - \theta^\star\| / \max(1, \|\theta^\star\|)$")
        ax.set_title(r["problem"], fontsize=9)
        cf.legend(ax, **cf.BELOW)
    return fig


def test_claim():
    assert_claim(check)
