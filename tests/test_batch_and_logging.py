"""Batched runs equal seed-by-seed runs; log_every logs a subset of the same rows."""

from __future__ import annotations

import numpy as np
import pytest

from fedtheory import FedTheoryError, make_method, run
from fedtheory.runner import run_batch
from fedtheory.testing import make_problem

COMPARED = (
    "round",
    "dist_to_opt",
    "rel_dist",
    "subopt",
    "grad_norm",
    "participants",
    "uplink_floats",
    "downlink_floats",
    "local_grad_evals",
    "local_hess_evals",
)


def _assert_same_rows(a, b, rtol=1e-12):
    assert len(a.rows) == len(b.rows)
    for ra, rb in zip(a.rows, b.rows, strict=True):
        for c in COMPARED:
            np.testing.assert_allclose(ra[c], rb[c], rtol=rtol, atol=1e-15, err_msg=c)


@pytest.mark.parametrize(
    "name,params",
    [
        ("newton", {"eta": 0.7}),
        ("fedpm", {"K": 2, "eta": 0.6}),
        ("sopm", {"K": 2, "eta": 0.8}),
        ("sopm", {"K": 1, "local_search": True}),
        ("fedpac", {"K": 2, "eta": 0.5, "beta": 0.3}),
    ],
)
@pytest.mark.parametrize("S", [3, None])
def test_batched_runs_equal_runs_seed_by_seed(name, params, S):
    problem = make_problem(12, N=7, d=4, heterogeneity=1.0)
    method = make_method(name, params)
    seeds = [5, 0, 17, 3]
    batched = run_batch(problem, method, 6, seeds=seeds, participation=S)
    for seed, trace in zip(seeds, batched, strict=True):
        single = run(problem, method, 6, participation=S, seed=seed, drift_metrics=False)
        assert trace.meta["seed"] == seed and trace.status == single.status
        _assert_same_rows(trace, single)


def test_batched_metrics_in_chunks_equal_one_chunk():
    problem = make_problem(13, N=5, d=3)
    method = make_method("fedpm", {"K": 1, "eta": 0.5})
    whole = run_batch(problem, method, 4, seeds=range(6), participation=2)
    chunked = run_batch(problem, method, 4, seeds=range(6), participation=2, chunk_bytes=1)
    for a, b in zip(whole, chunked, strict=True):
        _assert_same_rows(a, b, rtol=1e-14)


def test_a_diverging_batch_keeps_the_rows_before():
    problem = make_problem(2, objective="ridge", N=3, d=3)
    traces = run_batch(
        problem, make_method("fedpm", {"eta": 3.0}), 200, seeds=[0, 1], theta0=np.ones(3)
    )
    for tr in traces:
        single = run(
            problem, make_method("fedpm", {"eta": 3.0}), 200, theta0=np.ones(3), drift_metrics=False
        )
        assert tr.status == "diverged" == single.status
        _assert_same_rows(tr, single)


def test_batched_runs_refuse_a_participation_schedule():
    """Every seed draws its own participants; a fixed schedule runs with run() (methods with
    per-client state and stochastic oracles are batched: tests/test_batch_every_method.py)."""
    problem = make_problem(1, N=4)
    with pytest.raises(FedTheoryError, match="schedule runs with run"):
        run_batch(problem, make_method("scaffold"), 2, seeds=[0], participation=[[0, 1], [2]])


@pytest.mark.parametrize("k", [1, 3, 4])
def test_log_every_logs_the_same_rows_at_fewer_rounds(k):
    problem = make_problem(14, N=6, d=4, heterogeneity=1.0)
    method = make_method("sopm", {"K": 2, "eta": 0.7})
    full = run(problem, method, 10, participation=3, seed=2)
    sparse = run(problem, method, 10, participation=3, seed=2, log_every=k)
    expected = sorted({0, 10, *range(k, 11, k)})
    assert [r["round"] for r in sparse.rows] == expected
    for r in sparse.rows:
        ref = full.rows[r["round"]]
        for c in (*COMPARED, "drift", "hess_gap", "grad_dissimilarity", "client_drift"):
            np.testing.assert_allclose(r[c], ref[c], rtol=1e-13, err_msg=c)
