"""C17: FedNL-PP reaches theta* for every number of participants tau, with a linear rate that
improves with tau / n (Safaryan et al. 2022, FedNL-PP, Algorithm 3 and its local linear rate).

FedNL-PP (docs/algorithms.md#fednl-pp) keeps every client's (H_i, l_i, g~_i, w_i) on the server
and steps x+ = (H + l I)^{-1} g~ from ALL clients' stored states; only the tau participants
refresh theirs, at the new point. theta* is then a fixed point for every tau (at theta* every
refreshed g~_i equals (H_i + l_i I) theta* - g_i(theta*), and the g_i(theta*) sum to zero), and
the theorem gives a local linear rate whose contraction per round grows with tau / n (a client's
state is on average n / tau rounds old), so the rounds to a given accuracy fall about like
n / tau.

Protocol (CLAIMS.md C17): L2 logistic on ``a9a_fednl`` (a9a, n = 80 clients x 407 rows,
lam = 1e-3), x^0 = 0, init = "hessian", alpha = 1, two compressors: the identity (FedNL-PP
is then the Stochastic Newton method) and top-K with K = 4d = 492 (the learned Hessians are
then approximations); participants drawn by the runner, uniformly without replacement, seeded.

- full: tau in {4, 8, 20, 80}, 10 seeds per tau < n (tau = n draws nothing: one run), at most
  3000 rounds;
- quick: the same problem and compressors, tau in {8, 20, 80} and 3 seeds (tau = 4 is the
  slowest to run), at most 2000 rounds.

Every run stops at rel_dist = ||x - theta*|| / max(1, ||theta*||) <= 1e-10, or as stalled when
100 rounds bring no new smallest error (a run that cannot reach theta*: FedNL-PP makes a new
smallest error at least every 5 rounds on this problem, tau = 4 included), or at the round
cap. The check drives the runner's loop (:func:`fedtheory.runner.iterate`: the same
participants as ``run``, seed by seed) and computes only ||x - theta*|| per round. "Rounds to
1e-8" is the first round with rel_dist <= 1e-8.

Pass: every run reaches 1e-10, and for each compressor the median over seeds of the rounds to
1e-8 decreases strictly with tau. Also reported (not judged): the median per-round
log-contraction between rel_dist 1e-3 and 1e-10 (C14's definition) and tau / n times the median
rounds (about constant when the rounds scale like n / tau).
"""

from __future__ import annotations

import math
import time

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from fedtheory._backend import to_numpy
from fedtheory.claims import ClaimRecord, MethodFactory, assert_claim, record
from fedtheory.claims.protocol import load_problem
from fedtheory.methods import make_method
from fedtheory.plot import LINESTYLES, OKABE_ITO
from fedtheory.runner import iterate

CLAIM_ID = "C17"
STATEMENT = (
    "FedNL-PP reaches theta* for every number of participants tau, with a linear rate "
    "that improves with tau / n"
)
SOURCE = (
    "Safaryan, Islamov, Qian, Richtarik 2022 (ICML, arXiv 2106.02969), FedNL-PP "
    "(Algorithm 3) and its local linear rate"
)
PROBLEM = "a9a_fednl"
TARGET = 1e-10
MILESTONE = 1e-8
LOCAL = 1e-3
STALL = 100
COMPRESSORS = {
    "identity": {"compressor": "identity"},
    "top-4d": {"compressor": "topK", "Kc": 4 * 123},
}


def fednl_pp_factory(**params) -> object:
    """FedNL-PP, alpha = 1, init = "hessian" (the method under test)."""
    return make_method("fednl_pp", {"alpha": "one", "init": "hessian", **params})


def configuration(quick: bool) -> dict:
    if quick:
        return {
            "taus": (8, 20, 80),
            "seeds": 3,
            "cap": 2000,
            "scope": "quick: tau in {8, 20, 80}, 3 seeds",
        }
    return {
        "taus": (4, 8, 20, 80),
        "seeds": 10,
        "cap": 3000,
        "scope": "full: tau in {4, 8, 20, 80}, 10 seeds",
    }


def first_round(e: np.ndarray, level: float) -> int | None:
    hit = np.flatnonzero(e <= level)
    return int(hit[0]) if hit.size else None


def log_contraction(e: np.ndarray) -> float:
    """ln(e_a / e_b) / (b - a), a the first round with e <= 1e-3, b with e <= 1e-10."""
    b = first_round(e, TARGET)
    if b is None:
        return float("nan")
    a = min(first_round(e, LOCAL), b - 1)
    return math.log(e[a] / e[b]) / (b - a)


def errors(problem, method, tau: int, seed: int, cap: int) -> tuple[np.ndarray, str]:
    """rel_dist of x^0, x^1, ... (the runner's loop and draws, only ||x - theta*|| computed)
    until TARGET ("reached"), no new smallest error in STALL rounds ("stalled"), a non-finite
    iterate ("diverged") or ``cap`` rounds ("cap")."""
    star = problem.reference.theta_star
    scale = max(1.0, float(np.linalg.norm(star)))
    e = [float(np.linalg.norm(star)) / scale]  # x^0 = 0
    best_round = 0
    for step in iterate(problem, method, rounds=cap, participation=tau, seed=seed):
        e.append(float(np.linalg.norm(to_numpy(step.state.theta) - star)) / scale)
        if not math.isfinite(e[-1]):
            return np.array(e), "diverged"
        if e[-1] <= TARGET:
            return np.array(e), "reached"
        if e[-1] < e[best_round]:
            best_round = step.t
        elif step.t - best_round >= STALL:
            return np.array(e), "stalled"
    return np.array(e), "cap"


def measure(problem, method, taus, seeds: int, cap: int) -> list[dict]:
    per_tau = []
    for tau in taus:
        runs = []
        for seed in range(seeds if tau < problem.N else 1):
            e, status = errors(problem, method, tau, seed, cap)
            runs.append(
                {
                    "seed": seed,
                    "status": status,
                    "reached": status == "reached",
                    "rounds": len(e) - 1,
                    "rounds_to_milestone": first_round(e, MILESTONE),
                    "final_rel_dist": float(e[-1]),
                    "log_contraction": log_contraction(e),
                    "errors": [float(x) for x in e] if seed == 0 else None,
                }
            )
        hits = [r["rounds_to_milestone"] for r in runs]
        median = float(np.median(hits)) if None not in hits else float("inf")
        per_tau.append(
            {
                "tau": tau,
                "tau_over_n": tau / problem.N,
                "runs": runs,
                "all_reached": all(r["reached"] for r in runs),
                "median_rounds_to_milestone": median,
                "normalised_rounds": median * tau / problem.N,
                "median_log_contraction": float(np.median([r["log_contraction"] for r in runs])),
            }
        )
    return per_tau


def check(quick: bool = True, method_factory: MethodFactory = fednl_pp_factory) -> ClaimRecord:
    started = time.perf_counter()
    cfg = configuration(quick)
    problem = load_problem(PROBLEM)
    results, failures = {}, []
    for label, params in COMPRESSORS.items():
        per_tau = measure(problem, method_factory(**params), cfg["taus"], cfg["seeds"], cfg["cap"])
        med = [t["median_rounds_to_milestone"] for t in per_tau]
        decreasing = all(b < a for a, b in zip(med, med[1:], strict=False))
        reached = all(t["all_reached"] for t in per_tau)
        results[label] = {
            "params": params,
            "per_tau": per_tau,
            "all_reached": reached,
            "decreasing": decreasing,
        }
        if not reached:
            missed = [f"tau={t['tau']}" for t in per_tau if not t["all_reached"]]
            failures.append(f"{label}: not every run reached {TARGET:g} ({', '.join(missed)})")
        if not decreasing:
            failures.append(
                f"{label}: median rounds to {MILESTONE:g} not decreasing in tau ({med})"
            )

    def cell(label: str) -> str:
        return "/".join(
            "-"
            if math.isinf(t["median_rounds_to_milestone"])
            else f"{t['median_rounds_to_milestone']:g}"
            for t in results[label]["per_tau"]
        )

    taus = "/".join(str(t) for t in cfg["taus"])
    return record(
        CLAIM_ID,
        STATEMENT,
        SOURCE,
        started,
        measured=f"median rounds to 1e-8 (tau {taus}): "
        + "; ".join(f"{label} {cell(label)}" for label in results),
        predicted="every run reaches 1e-10; rounds fall with tau (about n / tau)",
        interval=cfg["scope"],
        passed=not failures,
        details={
            "mode": cfg["scope"],
            "problem": problem.name,
            "n": problem.N,
            "failures": failures,
            "compressors": results,
        },
    )


def figure(rec: ClaimRecord) -> Figure:
    """Left: median rounds to 1e-8 against tau (each seed a dot), one line per compressor, with
    the n / tau slope for reference. Right: one example trajectory (seed 0) per tau and
    compressor."""
    fig = Figure(figsize=(10.5, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    n = rec.details["n"]
    for k, (label, res) in enumerate(rec.details["compressors"].items()):
        c = OKABE_ITO[k % len(OKABE_ITO)]
        per_tau = res["per_tau"]
        taus = [t["tau"] for t in per_tau]
        left.loglog(
            taus,
            [t["median_rounds_to_milestone"] for t in per_tau],
            "o-",
            color=c,
            label=f"FedNL-PP, {label}: median",
        )
        for t in per_tau:
            pts = [r["rounds_to_milestone"] for r in t["runs"] if r["rounds_to_milestone"]]
            left.loglog([t["tau"]] * len(pts), pts, ".", color=c, alpha=0.4)
        ref = per_tau[0]["median_rounds_to_milestone"] * taus[0]
        left.loglog(
            taus,
            [ref / tau for tau in taus],
            ":",
            color=c,
            lw=1,
            label=r"$\propto n/\tau$" if k == 0 else None,
        )
        for j, t in enumerate(per_tau):
            e = t["runs"][0]["errors"]
            right.semilogy(
                range(len(e)),
                e,
                LINESTYLES[k % len(LINESTYLES)],
                color=OKABE_ITO[(j + 2) % len(OKABE_ITO)],
                lw=1.2,
                label=f"{label}, tau = {t['tau']}",
            )
    taus = [t["tau"] for t in next(iter(rec.details["compressors"].values()))["per_tau"]]
    left.set_xticks(taus, [str(t) for t in taus])
    left.xaxis.set_minor_locator(NullLocator())
    right.set_xlim(left=0)
    right.axhline(MILESTONE, color="grey", ls=":", lw=1)
    right.axhline(TARGET, color="k", ls=":", lw=1)
    left.set_xlabel(rf"participants per round $\tau$ (n = {n})")
    left.set_ylabel(f"rounds to rel_dist {MILESTONE:g}")
    right.set_xlabel("round")
    right.set_ylabel(r"$\|x - \theta^\star\| / \max(1, \|\theta^\star\|)$ (seed 0)")
    right.set_xscale("symlog", linthresh=10)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def test_claim():
    assert_claim(check)
