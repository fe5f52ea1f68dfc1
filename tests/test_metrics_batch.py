"""A batch's metrics (runner.metrics.points_batch) equal each run's own (metrics.Point): f, the
gradient's norm and the distance to theta*, for dense logistic and ridge data computed as two
products over all rows (no per-run copy of the data), chunked or not, and by the gathered
per-run oracle calls that other data take."""

from __future__ import annotations

import numpy as np
import pytest

from fedtheory.runner import metrics
from fedtheory.testing import make_problem


def _own(problem, thetas):
    return [metrics.Point(problem, th) for th in thetas]


@pytest.mark.parametrize("objective", ["logistic", "ridge"])
@pytest.mark.parametrize("weighting", ["samples", "uniform"])
@pytest.mark.parametrize("chunk_bytes", [2.0**28, 1.0])  # one chunk; one run per chunk
def test_points_batch_equals_each_runs_point(objective, weighting, chunk_bytes, monkeypatch):
    # clients of 3 to 25 rows: padding rows in every client but the largest
    problem = make_problem(4, objective=objective, N=5, d=6, weighting=weighting)
    thetas = np.random.default_rng(1).normal(size=(7, problem.d)) * 2
    thetas[3] = problem.reference.theta_star  # a run at the optimum: g ~ 1e-16
    own = _own(problem, thetas)
    fast = metrics.points_batch(problem, thetas, chunk_bytes)
    monkeypatch.setattr(metrics, "_global_many", lambda *a: None)  # the gathered path
    gathered = metrics.points_batch(problem, thetas, chunk_bytes)
    for got in (fast, gathered):
        assert len(got) == len(own)
        for p, q in zip(got, own, strict=True):
            assert p.dist == pytest.approx(q.dist, rel=1e-15)
            assert p.f == pytest.approx(q.f, rel=1e-13, abs=1e-15)
            assert p.grad_norm == pytest.approx(q.grad_norm, rel=1e-12, abs=1e-14)
    assert own[3].grad_norm < 1e-9 and fast[3].grad_norm < 1e-9


def test_the_two_products_need_dense_logistic_or_ridge_data():
    problem = make_problem(4, N=3, d=4)
    assert metrics._global_many(problem, np.zeros((2, 4)), 2.0**28) is not None
    problem.objective = "other"
    assert metrics._global_many(problem, np.zeros((2, 4)), 2.0**28) is None
