"""C9: FedNL with identity compression (a one-round-stale Hessian) is superlinear with order
tending to the golden ratio (Safaryan et al. 2022; the stale-Hessian Newton analysis).

With the identity compressor and alpha = 1, FedNL's learned Hessians are H_i^{k+1} = H_i(x^k):
every step after the first uses the previous round's Hessian, so
e_{k+1} ~ C e_k e_{k-1} near theta*, whose Q-order is the root of p^2 = p + 1,
(1 + sqrt 5) / 2 = 1.618...

Protocol (docs/claims.md): L2 logistic on ``a9a_fednl`` (a9a, 80 clients x 407 rows, lam = 1e-3),
FedNL option 1 (projection onto {X >= lam I}, the default), identity compressor, alpha = 1,
init = "hessian", from theta^0 = 0 to the float floor; full mode also runs option 2 and the
heterogeneous ``breast_cancer_dirichlet`` and ``fedprox_synthetic_1_1`` with option 1. Fitted
order = :func:`fedtheory.rates.q_order` on the asymptotic window (scale ||theta*||). A run
passes when the order lies in [1.5, 1.75] and the step ratios e_{t+1}/e_t decrease over the
window with the last < 1e-3 ("-> 0"; the threshold is C2's, docs/claims.md gives none).
"""

from __future__ import annotations

import math
import time

from matplotlib.figure import Figure

from fedtheory import claims_figures as cf
from fedtheory.claims import (
    ClaimRecord,
    MethodFactory,
    assert_claim,
    fmt_ci,
    record,
    scale_of,
)
from fedtheory.claims.protocol import load_problem
from fedtheory.errors import FedTheoryError
from fedtheory.methods import make_method
from fedtheory.rates import default_floor, q_order, superlinearity
from fedtheory.runner import run

CLAIM_ID = "C9"
STATEMENT = (
    "FedNL with identity compression (one-round-stale Hessian) converges superlinearly "
    "with order tending to the golden ratio 1.618"
)
SOURCE = "Safaryan, Islamov, Qian, Richtarik 2022 (ICML, arXiv 2106.02969), FedNL"
ORDER_RANGE = (1.5, 1.75)
LAST_RATIO = 1e-3
GOLDEN = (1 + math.sqrt(5)) / 2
MAX_ROUNDS = 60


def fednl_factory(**params) -> object:
    return make_method("fednl", {"compressor": "identity", "alpha": 1.0, **params})


def configurations(quick: bool) -> list[tuple[str, int]]:
    runs = [("a9a_fednl", 1)]
    if not quick:
        runs += [("a9a_fednl", 2), ("breast_cancer_dirichlet", 1), ("fedprox_synthetic_1_1", 1)]
    return runs


def measure(problem, method) -> dict:
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
        "status": trace.status,
        "errors": e.tolist(),
        "theta_star_norm": scale,
    }
    try:
        fit = q_order(e, scale=scale)
        sup = superlinearity(e, window=fit.window)
    except FedTheoryError as exc:
        return {
            **out,
            "order": float("nan"),
            "order_ci": (float("nan"),) * 2,
            "passed": False,
            "reason": f"no rate can be fitted: {exc}",
        }
    order_ok = ORDER_RANGE[0] <= fit.p <= ORDER_RANGE[1]
    ratio_ok = sup.passed(LAST_RATIO)
    reasons = [
        r
        for r, ok in (
            (f"order {fit.p:.3f} outside {list(ORDER_RANGE)}", order_ok),
            (f"ratios do not fall below {LAST_RATIO:g}: {sup}", ratio_ok),
        )
        if not ok
    ]
    return {
        **out,
        "order": fit.p,
        "order_ci": fit.ci,
        "window": fit.window,
        "pairs": fit.n_points,
        "ratios": sup.ratios,
        "last_ratio": sup.last_ratio,
        "passed": order_ok and ratio_ok,
        "reason": "; ".join(reasons),
    }


def check(
    quick: bool = True, method_factory: MethodFactory = fednl_factory, on: list | None = None
) -> ClaimRecord:
    """The claim on the protocol's problems, or on the problems ``on`` (a user's problem,
    option 1)."""
    started = time.perf_counter()
    runs = []
    chosen = (
        [(p, 1) for p in on]
        if on
        else [(load_problem(name), option) for name, option in configurations(quick)]
    )
    for problem, option in chosen:
        res = measure(problem, method_factory(option=option))
        runs.append({"option": option, **res})
    head = runs[0]
    return record(
        CLAIM_ID,
        STATEMENT,
        SOURCE,
        started,
        measured="order " + ", ".join(f"{r['order']:.3f}" for r in runs),
        predicted=f"{GOLDEN:.3f} (pass: in {list(ORDER_RANGE)})",
        interval=fmt_ci(head["order_ci"], ".3f"),
        passed=all(r["passed"] for r in runs),
        details={"golden_ratio": GOLDEN, "runs": runs},
    )


@cf.draws_claim
def figure(rec: ClaimRecord) -> Figure:
    """Left: e_t of every run with its fit window and the float floor. Right: e_{t+1} against
    e_t (log-log) with the fitted order, the golden-ratio reference slope 1.618 and the pass
    band [1.5, 1.75]."""
    return cf.order_figure(
        rec,
        "FedNL (identity compressor): order tends to the golden ratio",
        predicted=GOLDEN,
        predicted_label=f"golden ratio: slope {GOLDEN:.3f}",
        band=ORDER_RANGE,
    )


def test_claim():
    assert_claim(check)
