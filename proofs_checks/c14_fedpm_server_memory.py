"""C14: FedPM with server memory (FedPM-PP, = Stochastic Newton) keeps theta* as its fixed point
under partial participation, and its linear rate improves with S / N.

FedPM-PP (docs/algorithms.md#fedpm-pp) keeps every client's last pair (P_i, P_i theta_i^K) and
mixes over all N clients. With K = 1, eta = 1 it is the Stochastic Newton method of Kovalev,
Mishchenko and Richtarik 2019 (arXiv 1912.01597), whose theorem gives a local linear rate whose
per-round contraction improves with S / N (the memory is on average N / S rounds stale), with
theta* a fixed point for every S. Today's FedPM with S < N mixes only the sampled clients: it is
Newton on a random sub-objective and stalls at a floor (shown beside it, not judged).

Protocol (CLAIMS.md C14) and how it is made well-posed:

- full: ``a9a_fednl`` (80 clients), S / N in {1/80, 1/10, 1/4, 1/2, 1}, K = 1, eta = 1; and the
  heterogeneous quadratic ``het_quadratic`` (20 clients) with S in {1, 2, 5, 10, 20}
  (S / N = 1/20 is the smallest fraction 20 clients allow, then 1/10 .. 1); 20 seeds each;
- quick: a smaller logistic problem (the first 4,000 rows of a9a, contiguous FedNL-style split
  over 20 clients, lam = 1e-3) and the same quadratic, S / N in {1/10, 1/4, 1/2, 1}, 5 seeds;
- on the quadratic eta = 0.5: with eta = 1 and K = 1, P_i = H_i and P_i theta_i^1 = A_i^T b_i /
  n_i do not depend on the point, so FedPM-PP lands on theta* after one round for every S and
  there is no rate to compare; with eta = 0.5 the error obeys the delayed linear recursion
  e+ = (1 - eta) H^{-1} sum_i w_i H_i e(z_i), whose contraction grows with S / N;
- every run starts at 0 and stops at rel_dist <= 1e-10 (or after a round cap: 5000 full,
  1000 quick, about twice the slowest seed's need); after a run that misses the target the
  other seeds of its S are skipped (the claim fails already);
- "per-round log-contraction" of a run: ln(e_a / e_b) / (b - a) with a the first round with
  rel_dist <= 1e-3 (the local phase the theory speaks of) and b the first with
  rel_dist <= 1e-10 (a = b - 1 if one round crosses both);
- "S = N is quadratic (C2)": on the logistic problem (eta = 1; on the quadratic eta = 0.5 makes
  S = N linear with ratio 1/2 by design) the fitted order (:func:`fedtheory.rates.q_order`) of
  the S = N run lies in C2's [1.8, 2.2].

Pass: every run reaches rel_dist <= 1e-10; on each problem the median log-contraction over the
seeds increases strictly with S; the S = N order is in [1.8, 2.2]. The memoryless rule's floor
(median rel_dist over its last 20 of 100 rounds, 3 seeds) is reported per S < N.
"""

from __future__ import annotations

import math
import time

import numpy as np
from matplotlib.figure import Figure

from fedtheory.claims import ClaimRecord, MethodFactory, assert_claim, record
from fedtheory.claims.protocol import load_problem
from fedtheory.errors import FedTheoryError
from fedtheory.methods import make_method
from fedtheory.plot import OKABE_ITO
from fedtheory.rates import q_order
from fedtheory.runner import run

CLAIM_ID = "C14"
STATEMENT = (
    "FedPM with server memory (FedPM-PP, = Stochastic Newton) keeps theta* as its fixed "
    "point under partial participation, and its linear rate improves with S / N"
)
SOURCE = (
    "Kovalev, Mishchenko, Richtarik 2019 (arXiv 1912.01597), Stochastic Newton; FedPM "
    "(Ishii et al. 2025) with server memory"
)
TARGET = 1e-10
LOCAL = 1e-3
ORDER_RANGE = (1.8, 2.2)
MEMORYLESS_ROUNDS = 100
MEMORYLESS_SEEDS = 3

QUICK_LOGISTIC = {
    "name": "a9a4000_fednl_N20",
    "description": "a9a, first 4,000 rows, contiguous split over 20 clients x 200 rows, "
    "lam = 1e-3 (C14's quick problem)",
    "data": {"source": "a9a", "rows": 4000, "intercept": False},
    "partition": {"kind": "contiguous", "clients": 20},
    "objective": {"kind": "logistic", "lam": 1e-3},
}


def memory_factory(**params) -> object:
    """FedPM-PP: FedPM with server memory (the method under test)."""
    return make_method("fedpm", {"server_memory": True, **params})


def configurations(quick: bool) -> list[dict]:
    if quick:
        return [
            {"problem": QUICK_LOGISTIC, "S": (2, 5, 10, 20), "eta": 1.0, "seeds": 5, "cap": 1000},
            {"problem": "het_quadratic", "S": (2, 5, 10, 20), "eta": 0.5, "seeds": 5, "cap": 1000},
        ]
    return [
        {"problem": "a9a_fednl", "S": (1, 8, 20, 40, 80), "eta": 1.0, "seeds": 20, "cap": 5000},
        {"problem": "het_quadratic", "S": (1, 2, 5, 10, 20), "eta": 0.5, "seeds": 20, "cap": 5000},
    ]


def log_contraction(e: np.ndarray) -> float:
    """ln(e_a / e_b) / (b - a) over the local phase (module docstring); nan if unreached."""
    hit = np.flatnonzero(e <= TARGET)
    if hit.size == 0:
        return float("nan")
    b = int(hit[0])
    a = int(np.flatnonzero(e <= LOCAL)[0])
    a = min(a, b - 1)
    return math.log(e[a] / e[b]) / (b - a)


def measure(cfg: dict, factory: MethodFactory) -> dict:
    problem = load_problem(cfg["problem"])
    scale = float(np.linalg.norm(problem.reference.theta_star))
    method = factory(K=1, eta=cfg["eta"])
    per_S, order = [], None
    for S in cfg["S"]:
        seeds = range(cfg["seeds"]) if S < problem.N else range(1)  # S = N draws nothing
        runs = []
        for seed in seeds:
            tr = run(
                problem,
                method,
                cfg["cap"],
                participation=S,
                seed=seed,
                target=TARGET,
                drift_metrics=False,
            )
            e = tr["rel_dist"]
            runs.append(
                {
                    "seed": seed,
                    "reached": tr.status == "reached_target",
                    "rounds": len(e) - 1,
                    "final_rel_dist": float(e[-1]),
                    "log_contraction": log_contraction(e),
                }
            )
            if S == problem.N and cfg["eta"] == 1.0:
                try:
                    order = q_order(tr["dist_to_opt"], scale=scale)
                except FedTheoryError as exc:
                    order = str(exc)
                errors = [float(x) for x in tr["dist_to_opt"]]
            if not runs[-1]["reached"]:
                break  # the claim fails already: the other seeds would not save it
        memoryless, statuses = None, []
        if S < problem.N:
            floors = []
            for seed in range(MEMORYLESS_SEEDS):
                tr = run(
                    problem,
                    make_method("fedpm", {"eta": cfg["eta"]}),
                    MEMORYLESS_ROUNDS,
                    participation=S,
                    seed=seed,
                    drift_metrics=False,
                )
                floors.append(float(np.median(tr["rel_dist"][-20:])))
                statuses.append(tr.status)
            memoryless = float(np.median(floors))
        lc = [r["log_contraction"] for r in runs]
        per_S.append(
            {
                "S": S,
                "S_over_N": S / problem.N,
                "runs": runs,
                "all_reached": all(r["reached"] for r in runs),
                "median_log_contraction": float(np.median(lc)),
                "median_rounds": float(np.median([r["rounds"] for r in runs])),
                "memoryless_floor": memoryless,
                "memoryless_status": statuses,
            }
        )
    med = [s["median_log_contraction"] for s in per_S]
    monotone = all(b > a for a, b in zip(med, med[1:], strict=False))  # nan compares False
    out = {
        "problem": problem.name,
        "N": problem.N,
        "eta": cfg["eta"],
        "per_S": per_S,
        "all_reached": all(s["all_reached"] for s in per_S),
        "monotone": monotone,
    }
    if cfg["eta"] == 1.0:
        ok = not isinstance(order, str) and ORDER_RANGE[0] <= order.p <= ORDER_RANGE[1]
        out.update(
            full_order=order.p if not isinstance(order, str) else float("nan"),
            full_order_ci=order.ci if not isinstance(order, str) else None,
            full_order_error="" if not isinstance(order, str) else order,
            full_errors=errors,
            quadratic=ok,
        )
    out["passed"] = out["all_reached"] and monotone and out.get("quadratic", True)
    return out


def check(quick: bool = True, method_factory: MethodFactory = memory_factory) -> ClaimRecord:
    started = time.perf_counter()
    problems = [measure(cfg, method_factory) for cfg in configurations(quick)]
    failures = []
    for p in problems:
        if not p["all_reached"]:
            missed = [f"S={s['S']}" for s in p["per_S"] if not s["all_reached"]]
            failures.append(f"{p['problem']}: not every run reached {TARGET:g} ({missed})")
        if not p["monotone"]:
            failures.append(f"{p['problem']}: median log-contraction not increasing in S")
        if not p.get("quadratic", True):
            failures.append(
                f"{p['problem']}: S = N order {p['full_order']:.3g} outside {list(ORDER_RANGE)}"
            )
    head = problems[0]
    contractions = ", ".join(f"{s['median_log_contraction']:.2g}" for s in head["per_S"])
    scope = "quick: smaller a9a, 5 seeds, S/N >= 1/10" if quick else "full: 20 seeds"
    return record(
        CLAIM_ID,
        STATEMENT,
        SOURCE,
        started,
        measured=f"reached all: {all(p['all_reached'] for p in problems)}; "
        f"log-contr. {contractions}; order {head.get('full_order', 0):.2f}",
        predicted="reach 1e-10; increasing in S; order in [1.8, 2.2]",
        interval=scope,
        passed=not failures,
        details={"mode": scope, "failures": failures, "problems": problems},
    )


def figure(rec: ClaimRecord) -> Figure:
    """Left: median per-round log-contraction against S / N (min-max over seeds as bars), one
    line per problem. Right: the memoryless rule's floor against S / N, FedPM-PP reaching 1e-10
    at every S."""
    fig = Figure(figsize=(10.5, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    for k, p in enumerate(rec.details["problems"]):
        c = OKABE_ITO[k % len(OKABE_ITO)]
        x = [s["S_over_N"] for s in p["per_S"]]
        med = [s["median_log_contraction"] for s in p["per_S"]]
        lo = [min(r["log_contraction"] for r in s["runs"]) for s in p["per_S"]]
        hi = [max(r["log_contraction"] for r in s["runs"]) for s in p["per_S"]]
        err = np.array([np.subtract(med, lo), np.subtract(hi, med)])
        left.errorbar(
            x,
            med,
            yerr=np.clip(err, 0, None),
            fmt="o-",
            color=c,
            capsize=3,
            label=f"{p['problem']} (eta {p['eta']:g})",
        )
        sel = [s for s in p["per_S"] if s["memoryless_floor"] is not None]
        right.loglog(
            [s["S_over_N"] for s in sel],
            [s["memoryless_floor"] for s in sel],
            "v--",
            color=c,
            mfc="none",
            label=f"{p['problem']}: memoryless FedPM floor",
        )
        right.loglog(
            x,
            [max(r["final_rel_dist"] for r in s["runs"]) for s in p["per_S"]],
            "o-",
            color=c,
            label=f"{p['problem']}: FedPM-PP, worst final error",
        )
    right.axhline(TARGET, color="k", ls=":", lw=1, label=f"target {TARGET:g}")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("participation S / N")
    left.set_ylabel("per-round log-contraction (nats, local phase)")
    right.set_xlabel("participation S / N")
    right.set_ylabel(r"$\|\theta - \theta^\star\| / \max(1, \|\theta^\star\|)$")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def test_claim():
    assert_claim(check)
