"""The runner and the trace: participation, reproducibility, metrics, divergence, CSV."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from fedtheory import COLUMNS, make_method, run
from fedtheory.testing import make_problem
from fedtheory.trace import TIMING, read_csv


def _rows(trace):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in trace.rows]


@pytest.mark.parametrize("name", ["newton", "fedpm", "sopm"])
def test_same_seed_same_trace_and_other_seed_other_trace(name):
    problem = make_problem(3, N=8, d=4)
    method = make_method(name, {"eta": 0.8})
    a = run(problem, method, 6, participation=3, seed=42)
    b = run(problem, method, 6, participation=3, seed=42)
    c = run(problem, method, 6, participation=3, seed=43)
    assert _rows(a) == _rows(b)
    assert _rows(a) != _rows(c)


@pytest.mark.parametrize("name", ["newton", "fedpm", "sopm"])
def test_participation_N_is_full_participation(name):
    problem = make_problem(4, N=5, d=3)
    method = make_method(name, {"eta": 0.9})
    full = run(problem, method, 4, seed=1)
    all_ = run(problem, method, 4, participation=problem.N, seed=2)
    assert _rows(full) == _rows(all_)


def test_partial_participation_draws_S_distinct_clients_with_renormalised_weights():
    problem = make_problem(5, N=7, d=3)
    seen = []

    class Spy(type(make_method("sopm"))):
        def round(self, ctx, state):
            seen.append((ctx.clients.copy(), np.asarray(ctx.weights).copy()))
            return super().round(ctx, state)

    run(problem, Spy(), 20, participation=3, seed=0, drift_metrics=False)
    counts = np.zeros(problem.N)
    for clients, w in seen:
        assert len(clients) == 3 and len(set(clients)) == 3
        np.testing.assert_allclose(w, problem.weights[clients] / problem.weights[clients].sum())
        counts[clients] += 1
    assert (counts > 0).all()


def test_row_columns_and_metric_definitions():
    problem = make_problem(6, N=4, d=3, heterogeneity=2.0)
    trace = run(problem, make_method("sopm", {"K": 2}), 3)
    assert list(trace.to_frame().columns) == list(COLUMNS)
    first, row = trace.rows[0], trace.rows[1]
    assert np.isnan(first["drift"]) and first["uplink_floats"] == 0
    ref = problem.reference
    np.testing.assert_allclose(
        row["rel_dist"], row["dist_to_opt"] / max(1, np.linalg.norm(ref.theta_star))
    )
    assert row["uplink_floats"] == problem.d and row["local_hess_evals"] == 2
    assert trace.rows[2]["uplink_floats"] == 2 * problem.d  # cumulative
    assert row["drift"] > 0 and row["hess_gap"] > 0 and row["client_drift"] > 0
    assert 0 < row["rel_drift"] < 1


def test_drift_metrics_match_a_direct_computation():
    problem = make_problem(7, N=3, d=3, heterogeneity=1.0)
    theta0 = np.array([0.3, -0.2, 0.1])
    trace = run(problem, make_method("sopm", {"K": 1, "eta": 1.0}), 1, theta0=theta0)
    o = problem.oracle(theta0, grad=True, hess=True)
    w = problem.weights
    P, g = o.H, o.g
    Pbar = np.einsum("i,ijk->jk", w, P)
    theta_local = theta0 - np.linalg.solve(P, g[:, :, None])[..., 0]
    theta_new = w @ theta_local
    row = trace.rows[1]
    np.testing.assert_allclose(
        row["drift"], sum(w[i] * np.sum((P[i] - Pbar) ** 2) for i in range(3)), rtol=1e-12
    )
    np.testing.assert_allclose(row["hess_gap"], row["drift"], rtol=1e-12)  # H(theta) = Pbar
    np.testing.assert_allclose(
        row["grad_dissimilarity"],
        sum(w[i] * np.sum((g[i] - w @ g) ** 2) for i in range(3)),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        row["client_drift"],
        sum(w[i] * np.sum((theta_local[i] - theta_new) ** 2) for i in range(3)),
        rtol=1e-12,
    )


def test_newton_reports_nan_preconditioner_metrics():
    trace = run(make_problem(1), make_method("newton"), 2)
    assert np.isnan(trace["drift"][1:]).all() and np.isnan(trace["client_drift"][1:]).all()
    assert np.isfinite(trace["grad_dissimilarity"][1:]).all()


def test_divergence_stops_the_run_and_keeps_the_rows_before():
    problem = make_problem(2, objective="ridge", N=3, d=3)
    # FedPM on ridge contracts by (1 - eta)^K = -2 per round: it must blow up
    trace = run(problem, make_method("fedpm", {"eta": 3.0}), 200, theta0=np.ones(3))
    assert trace.status == "diverged"
    assert 10 < len(trace) < 200
    assert all(np.isfinite(trace[c]).all() for c in ("dist_to_opt", "subopt", "grad_norm"))
    e = trace["dist_to_opt"]
    np.testing.assert_allclose(e[1:] / e[:-1], 2.0, rtol=1e-6)


def test_target_stops_early():
    problem = make_problem(3)
    trace = run(problem, make_method("newton"), 50, target=1e-8)
    assert trace.status == "reached_target"
    assert trace.final["rel_dist"] <= 1e-8 and trace["rel_dist"][-2] > 1e-8


def test_csv_round_trip_is_exact(tmp_path):
    trace = run(
        make_problem(8, N=4), make_method("fedpm", {"K": 2, "eta": 0.5}), 4, participation=2, seed=3
    )
    path = trace.to_csv(tmp_path / "t.csv")
    back = read_csv(path)
    pd.testing.assert_frame_equal(back, trace.to_frame(), check_dtype=False, rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temporary left
    with open(path) as fh:
        assert next(csv.reader(fh)) == list(COLUMNS)


def test_same_seed_gives_a_bit_identical_csv(tmp_path):
    problem = make_problem(9, N=6)
    method = make_method("sopm", {"K": 2})
    a = run(problem, method, 5, participation=2, seed=7)
    b = run(problem, method, 5, participation=2, seed=7)
    for t in (a, b):
        for r in t.rows:
            r.update(dict.fromkeys(TIMING, 0.0))
    assert a.to_csv(tmp_path / "a.csv").read_bytes() == b.to_csv(tmp_path / "b.csv").read_bytes()
