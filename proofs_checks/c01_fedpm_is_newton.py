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

import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedtheory.claims import (
    ClaimRecord,
    MethodFactory,
    assert_claim,
    fedpm_factory,
    one_round,
    record,
)
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

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(case=cases())
    def one_example(case):
        problem, theta, eta, clients = case
        scale = 1.0 + float(np.linalg.norm(theta))
        for label, sel in (("full", None), ("partial", clients)):
            fedpm = one_round(problem, method_factory(K=1, eta=eta), theta, clients=sel)
            newton = one_round(problem, make_method("newton", {"eta": eta}), theta, clients=sel)
            residual = float(np.linalg.norm(fedpm - newton)) / scale
            seen.append({"residual": residual, "participation": label,
                         "problem": problem.name, "objective": problem.objective,
                         "N": problem.N, "d": problem.d, "lam": problem.lam,
                         "S": problem.N if sel is None else len(sel), "eta": eta,
                         "theta_norm": scale - 1.0})
            assert residual <= TOL, (f"residual {residual:.3e} > {TOL:g} ({label} "
                                     f"participation, {problem!r}, eta = {eta:.4g})")

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
    }
    return record(CLAIM_ID, STATEMENT, SOURCE, started,
                  measured=f"max residual {residuals.max():.2e} ({len(seen)} rounds)",
                  predicted=f"0 (pass: <= {TOL:g})", passed=passed, details=details)


def test_claim():
    assert_claim(check)
