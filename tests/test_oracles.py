"""Exact oracles: derivatives, batching, padding, overflow safety."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedtheory.objectives import logistic
from fedtheory.problem import FederatedProblem
from fedtheory.testing import make_problem, problems


def _fd_grad(problem, theta, h=1e-6):
    """Central differences of every client's f_i (one column per coordinate)."""
    d = problem.d
    cols = []
    for j in range(d):
        e = np.zeros(d)
        e[j] = h
        fp = problem.oracle(theta + e, value=True, grad=False).f
        fm = problem.oracle(theta - e, value=True, grad=False).f
        cols.append((fp - fm) / (2 * h))
    return np.stack(cols, axis=1)


def _fd_hess(problem, theta, h=1e-6):
    d = problem.d
    cols = []
    for j in range(d):
        e = np.zeros(d)
        e[j] = h
        gp = problem.oracle(theta + e).g
        gm = problem.oracle(theta - e).g
        cols.append((gp - gm) / (2 * h))
    return np.stack(cols, axis=2)


@given(problems(), st.integers(0, 1000))
def test_gradient_and_hessian_match_finite_differences(problem, seed):
    theta = np.random.default_rng(seed).normal(size=problem.d) * 0.5
    o = problem.oracle(theta, value=True, grad=True, hess=True)
    scale = 1 + np.abs(o.g).max()
    np.testing.assert_allclose(o.g, _fd_grad(problem, theta), atol=1e-6 * scale)
    np.testing.assert_allclose(o.H, _fd_hess(problem, theta), atol=1e-6 * (1 + np.abs(o.H).max()))
    np.testing.assert_allclose(o.H, o.H.transpose(0, 2, 1), atol=0)


@given(problems(), st.integers(0, 1000))
def test_batched_oracle_equals_per_sample_sums(problem, seed):
    """The batched BLAS-3 Hessian equals the per-sample outer-product definition of the spec."""
    theta = np.random.default_rng(seed).normal(size=problem.d)
    o = problem.oracle(theta, value=True, grad=True, hess=True)
    for i in range(problem.N):
        n_i = problem.sizes[i]
        A, y = problem.A[i, :n_i], problem.y[i, :n_i]
        f = g = 0.0
        H = problem.lam * np.eye(problem.d)
        for a, b in zip(A, y, strict=True):
            z = a @ theta
            if problem.objective == "logistic":
                s = 1 / (1 + np.exp(b * z))
                f += np.log1p(np.exp(-b * z)) / n_i
                g = g - b * s * a / n_i
                H = H + s * (1 - s) * np.outer(a, a) / n_i
            else:
                f += 0.5 * (z - b) ** 2 / n_i
                g = g + (z - b) * a / n_i
                H = H + np.outer(a, a) / n_i
        f += 0.5 * problem.lam * theta @ theta
        g = g + problem.lam * theta
        np.testing.assert_allclose(o.f[i], f, rtol=1e-12)
        np.testing.assert_allclose(o.g[i], g, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(o.H[i], H, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("objective", ["logistic", "ridge"])
def test_per_client_points_equal_separate_evaluations(objective):
    """theta of shape (m, d) evaluates client i at row i, and a subset picks those clients."""
    problem = make_problem(1, objective=objective, N=5, d=4)
    thetas = np.random.default_rng(2).normal(size=(3, 4))
    clients = np.array([4, 0, 2])
    o = problem.oracle(thetas, clients, value=True, grad=True, hess=True)
    for row, i in enumerate(clients):
        single = problem.oracle(thetas[row], value=True, grad=True, hess=True)
        np.testing.assert_allclose(o.f[row], single.f[i], rtol=1e-14)
        np.testing.assert_allclose(o.g[row], single.g[i], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(o.H[row], single.H[i], rtol=1e-13, atol=1e-15)


def test_padding_does_not_change_a_client():
    """A client's oracle does not depend on the other clients' sizes (padding rows are inert)."""
    rng = np.random.default_rng(0)
    Xs = [rng.normal(size=(n, 3)) for n in (2, 40)]
    ys = [np.sign(rng.normal(size=len(X))) for X in Xs]
    both = FederatedProblem.from_clients(Xs, ys, objective="logistic", lam=0.1)
    alone = FederatedProblem.from_clients(Xs[:1], ys[:1], objective="logistic", lam=0.1)
    theta = rng.normal(size=3)
    a, b = both.oracle(theta, value=True, hess=True), alone.oracle(theta, value=True, hess=True)
    np.testing.assert_allclose(a.f[0], b.f[0], rtol=1e-15)
    np.testing.assert_allclose(a.g[0], b.g[0], rtol=1e-15)
    np.testing.assert_allclose(a.H[0], b.H[0], rtol=1e-15)


@pytest.mark.parametrize("z", [1e3, -1e3, 800.0, -800.0, 40.0, -40.0, 0.0])
def test_logistic_is_finite_and_exact_for_large_margins(z):
    A = np.ones((1, 1, 1))
    y = np.ones((1, 1))
    sw = np.ones((1, 1))
    o = logistic(A, y, sw, 0.0, np.array([z]))
    assert np.isfinite(o.f).all() and np.isfinite(o.g).all() and np.isfinite(o.H).all()
    # closed forms: log(1 + e^{-z}), -sigmoid(-z), sigmoid(z) sigmoid(-z), in stable forms
    f = max(-z, 0.0) + np.log1p(np.exp(-abs(z)))
    s = np.exp(-np.logaddexp(0.0, z))
    np.testing.assert_allclose(o.f[0], f, rtol=1e-15)
    np.testing.assert_allclose(o.g[0, 0], -s, rtol=1e-14)
    np.testing.assert_allclose(
        o.H[0, 0, 0], s * (1 - s) if abs(z) < 30 else np.exp(-abs(z)), rtol=1e-12
    )


@given(problems())
def test_global_oracle_is_the_weighted_sum(problem):
    theta = np.linspace(-1, 1, problem.d)
    o = problem.oracle(theta, value=True, hess=True)
    G = problem.global_oracle(theta, hess=True)
    w = problem.weights
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-15)
    if problem.weighting == "samples":
        np.testing.assert_allclose(w, problem.sizes / problem.sizes.sum(), rtol=1e-15)
    else:
        np.testing.assert_allclose(w, 1 / problem.N, rtol=1e-15)
    np.testing.assert_allclose(G.f, w @ o.f, rtol=1e-14)
    np.testing.assert_allclose(G.g, w @ o.g, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(G.H, np.einsum("i,ijk->jk", w, o.H), rtol=1e-12, atol=1e-15)


def test_sparse_input_equals_dense():
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 6)) * (rng.random((30, 6)) < 0.3)
    y = np.sign(rng.normal(size=30))
    parts = [np.arange(0, 10), np.arange(10, 30)]
    dense = FederatedProblem.from_dataset(X, y, parts, objective="logistic", lam=0.1)
    sparse = FederatedProblem.from_dataset(
        sp.csr_matrix(X), y, parts, objective="logistic", lam=0.1
    )
    np.testing.assert_array_equal(dense.A, sparse.A)
    np.testing.assert_allclose(dense.reference.theta_star, sparse.reference.theta_star, rtol=0)


@given(problems())
def test_reference_solution_is_stationary_and_consistent(problem):
    ref = problem.reference
    o = problem.global_oracle(ref.theta_star, hess=True)
    gnorm0 = np.linalg.norm(problem.global_oracle(np.zeros(problem.d)).g)
    assert ref.grad_norm <= 1e-13 * max(1.0, gnorm0)
    ev = np.linalg.eigvalsh(o.H)
    np.testing.assert_allclose([ref.mu, ref.L], [ev[0], ev[-1]], rtol=1e-12)
    assert ref.mu >= problem.lam * (1 - 1e-12)
    assert ref.L_H == 0.0 if problem.objective == "ridge" else ref.L_H > 0
