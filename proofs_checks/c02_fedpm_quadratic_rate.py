"""C2: FedPM with K = 1, eta = 1 converges quadratically near theta* (FedPM theorem).

With K = 1 FedPM is Newton's method (C1), so for a strongly convex f with an L_H-Lipschitz
Hessian, e_{t+1} <= (L_H / (2 mu)) e_t^2 near theta*, e_t = ||theta^t - theta*||.

Protocol (docs/claims.md): L2 logistic regression from theta^0 = 0, FedPM(K = 1, eta = 1), full
participation, exact oracle, on

- ``a9a_fednl``: a9a, the FedNL split, 80 clients x 407 rows, lam = 1e-3;
- ``fedprox_synthetic_1_1``: FedProx Synthetic(1, 1) made binary, 30 clients, d = 60,
  lam = 1e-2 (the first synthetic heterogeneous problem);
- ``breast_cancer_dirichlet``: breast cancer, Dirichlet(0.1) label skew over 10 clients,
  lam = 1e-3 (the second heterogeneous problem: real features, synthetic heterogeneity);
- full mode adds FedProx Synthetic(0.5, 0.5) and Synthetic(0, 0) (same sizes as (1, 1)).

Each run is measured on the asymptotic window of :func:`fedtheory.rates.asymptotic_window`
(scale ||theta*||: the pre-asymptotic phase and every e_t below 1e3 eps max(1, ||theta*||)
dropped). A problem passes when (i) the fitted Q-order p (:func:`~fedtheory.rates.q_order`)
lies in [1.8, 2.2] (the point estimate; its 95 % t-interval is reported, and it is infinite
when quadratic convergence leaves only two pairs above the float floor), (ii) the ratios
e_{t+1}/e_t decrease and the last is < 1e-3, (iii) e_{t+1} <= (L_H / (2 mu)) e_t^2 on every
pair of the window, with mu = lambda_min(H(theta*)) and L_H the bound of docs/algorithms.md
(``problem.reference``). The claim passes when every problem passes.
"""

from __future__ import annotations

import time

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
from fedtheory.errors import FedTheoryError
from fedtheory.rates import default_floor, q_order, superlinearity
from fedtheory.runner import run
from fedtheory.suite import load_problem

CLAIM_ID = "C2"
STATEMENT = ("FedPM with K = 1, eta = 1 converges quadratically near theta* "
             "(e_{t+1} <= (L_H / (2 mu)) e_t^2) on strongly convex logistic problems")
SOURCE = "Ishii et al. 2025 (arXiv 2511.09100), FedPM local convergence theorem"
ORDER_RANGE = (1.8, 2.2)
LAST_RATIO = 1e-3
MAX_ROUNDS = 40


def _synthetic(alpha: float, beta: float) -> dict:
    return {"name": f"fedprox_synthetic_{alpha:g}_{beta:g}",
            "data": {"source": "fedprox_synthetic", "alpha": alpha, "beta": beta,
                     "clients": 30, "d": 60, "sizes": "powerlaw", "mean_size": 100, "seed": 0},
            "objective": {"kind": "logistic", "lam": 1e-2}}


def problems(quick: bool) -> list:
    names: list = ["a9a_fednl", "fedprox_synthetic_1_1", "breast_cancer_dirichlet"]
    if not quick:
        names += [_synthetic(0.5, 0.5), _synthetic(0.0, 0.0)]
    return [load_problem(n) for n in names]


def measure(problem, method) -> dict:
    """Run ``method`` from 0 to the float floor and judge the three criteria on the window."""
    scale = scale_of(problem)
    floor = default_floor(scale)
    ref = problem.reference
    trace = run(problem, method, MAX_ROUNDS, target=floor / max(1.0, scale),
                drift_metrics=False)
    e = trace["dist_to_opt"]
    out = {"problem": problem.name, "N": problem.N, "d": problem.d, "lam": problem.lam,
           "theta_star_norm": scale, "status": trace.status, "errors": e.tolist(),
           "L_H": ref.L_H, "mu": ref.mu}
    try:
        fit = q_order(e, scale=scale)
        sup = superlinearity(e, window=fit.window)
    except FedTheoryError as exc:
        out.update(passed=False, reason=f"no rate can be fitted: {exc}", order=float("nan"),
                   order_ci=(float("nan"), float("nan")))
        return out
    start, stop = fit.window
    C = ref.L_H / (2 * ref.mu)
    pairs = [(float(e[t + 1]), float(C * e[t] ** 2)) for t in range(start, stop - 1)]
    bound_ok = all(lhs <= rhs for lhs, rhs in pairs)
    order_ok = ORDER_RANGE[0] <= fit.p <= ORDER_RANGE[1]
    ratio_ok = sup.passed(LAST_RATIO)
    reasons = []
    if not order_ok:
        reasons.append(f"order {fit.p:.3f} outside {list(ORDER_RANGE)}")
    if not ratio_ok:
        reasons.append(f"ratios not decreasing to < {LAST_RATIO:g}: {sup}")
    if not bound_ok:
        reasons.append("e_(t+1) > (L_H / (2 mu)) e_t^2 on some round of the window")
    out.update(order=fit.p, order_ci=fit.ci, window=fit.window, pairs=fit.n_points,
               ratios=sup.ratios, last_ratio=sup.last_ratio, ratios_decreasing=sup.decreasing,
               bound_constant=C,
               bound_tightness=[lhs / rhs for lhs, rhs in pairs],
               order_ok=order_ok, ratio_ok=ratio_ok, bound_ok=bound_ok,
               passed=order_ok and ratio_ok and bound_ok, reason="; ".join(reasons))
    return out


def check(quick: bool = True, method_factory: MethodFactory = fedpm_factory,
          on: list | None = None) -> ClaimRecord:
    """The claim on the protocol's problems, or on the problems ``on`` (a user's problem:
    ``fedtheory check --problem FILE --claim C2``)."""
    started = time.perf_counter()
    results = [measure(p, method_factory(K=1, eta=1.0)) for p in (on or problems(quick))]
    passed = all(r["passed"] for r in results)
    head = results[0]
    orders = ", ".join(f"{r['order']:.2f}" for r in results)
    details = {"problems": [r["problem"] for r in results],
               "criteria": f"order in {list(ORDER_RANGE)}; ratios decreasing, last < "
                           f"{LAST_RATIO:g}; e_(t+1) <= (L_H/(2 mu)) e_t^2 on the window",
               "runs": results}
    return record(CLAIM_ID, STATEMENT, SOURCE, started,
                  measured=f"order {orders} ({len(results)} problems)",
                  predicted=f"2 (pass: in {list(ORDER_RANGE)})",
                  interval=f"{fmt_ci(head['order_ci'], '.2f')} ({head['problem']})",
                  passed=passed, details=details)


@cf.draws_claim
def figure(rec: ClaimRecord) -> Figure:
    """Left: e_t of every problem with its fit window, the one-step bound (L_H / 2 mu) e_t^2
    and the float floor. Right: e_{t+1} against e_t with the fitted order, the predicted order
    2 and the pass band [1.8, 2.2]."""
    return cf.order_figure(rec, "FedPM (K = 1, eta = 1) converges quadratically",
                           predicted=2.0, predicted_label="predicted order 2 (slope 2)",
                           band=ORDER_RANGE, bound=True)


def test_claim():
    assert_claim(check)
