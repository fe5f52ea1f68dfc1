"""FedNL: the identity compressor is Newton with a one-round-stale Hessian, the compressors
keep their promises, communication is counted per compressor, and bad set-ups are refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtheory.errors import FedTheoryError
from fedtheory.linalg import sym_floats
from fedtheory.methods import RoundContext, make_method
from fedtheory.methods.fednl import compress, message_floats, rank_r, top_k
from fedtheory.oracles import make_oracle
from fedtheory.problem import FederatedProblem
from fedtheory.rates import q_order
from fedtheory.runner import run
from fedtheory.testing import make_problem, problems


def full_context(problem):
    return RoundContext(problem, None, problem.weights, np.random.default_rng(0),
                        make_oracle("exact"))


def global_g_H(problem, x):
    o = problem.global_oracle(x, value=False, hess=True)
    return o.g, o.H


def local_hessians(problem, x):
    return problem.oracle(x, grad=False, hess=True).H


# --------------------------------------------------------------------------- stale Newton

@settings(max_examples=25, deadline=None)
@given(problem=problems(), option=st.sampled_from([1, 2]), seed=st.integers(0, 2**31 - 1))
def test_fednl_identity_is_newton_then_one_round_stale_newton(problem, option, seed):
    """x^1 = x^0 - H(x^0)^{-1} g(x^0) (H_init = hessian); afterwards, option 1:
    x^{k+1} = x^k - H(x^{k-1})^{-1} g(x^k); option 2 adds l^k I with
    l^k = sum w_i ||H_i(x^k) - H_i(x^{k-1})||_2 (a direct computation, client by client)."""
    method = make_method("fednl", {"option": option, "compressor": "identity"})
    ctx = full_context(problem)
    x = 0.3 * np.random.default_rng(seed).normal(size=problem.d)
    state = method.init(problem, x)
    w = np.asarray(problem.weights)
    x_prev = None
    for _ in range(4):
        g, H_now = global_g_H(problem, x)
        if x_prev is None:
            H = H_now                                                  # a Newton step
        else:
            H = global_g_H(problem, x_prev)[1]                         # one round stale
            if option == 2:
                Hi_now, Hi_prev = local_hessians(problem, x), local_hessians(problem, x_prev)
                H = H + sum(w[i] * np.linalg.norm(Hi_now[i] - Hi_prev[i], 2)
                            for i in range(problem.N)) * np.eye(problem.d)
        expected = x - np.linalg.solve(H, g)
        state, _ = method.round(ctx, state)
        scale = 1 + np.linalg.norm(x)
        assert np.linalg.norm(state.theta - expected) <= 1e-9 * scale * np.linalg.cond(H)
        x_prev, x = x, state.theta


def test_fednl_identity_on_ridge_is_newton_every_round():
    problem = make_problem(1, objective="ridge", N=3, d=4)
    trace = run(problem, make_method("fednl"), 2)
    assert trace["rel_dist"][1] < 1e-12 and trace["rel_dist"][2] < 1e-12


def test_fednl_identity_is_superlinear_with_golden_ratio_order():
    """C9 in miniature: the fitted order of the stale-Hessian Newton tends to 1.618."""
    problem = make_problem(2, N=4, d=6, lam=1e-2, heterogeneity=0.5)
    e = run(problem, make_method("fednl"), 12, drift_metrics=False)["dist_to_opt"]
    fit = q_order(e)
    assert 1.4 <= fit.p <= 1.85, str(fit)


@pytest.mark.parametrize("params", [
    {"compressor": "rankR", "R": 1}, {"compressor": "topK", "Kc": 6},
    {"compressor": "rankR", "R": 2, "option": 2}, {"compressor": "topK", "Kc": 3, "alpha": 0.5},
    {"compressor": "identity", "H_init": "zero", "option": 2},
])
def test_fednl_compressed_variants_converge(params):
    problem = make_problem(3, N=4, d=5, lam=5e-2, heterogeneity=0.5)
    trace = run(problem, make_method("fednl", params), 80, drift_metrics=False)
    assert trace.status == "completed" and trace["rel_dist"][-1] < 1e-8


# --------------------------------------------------------------------------- compressors

def random_symmetric(seed, m, d, rank=None):
    rng = np.random.default_rng(seed)
    if rank is None:
        X = rng.normal(size=(m, d, d))
        return X + X.transpose(0, 2, 1)
    U = rng.normal(size=(m, d, rank))
    s = rng.normal(size=(m, 1, rank))
    return (U * s) @ U.transpose(0, 2, 1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), d=st.integers(1, 9), R=st.integers(1, 10))
def test_rank_r_has_rank_at_most_r_and_is_the_best_approximation(seed, d, R):
    M = random_symmetric(seed, 3, d)
    C = rank_r(M, R)
    np.testing.assert_array_equal(C, C.transpose(0, 2, 1))
    for Mi, Ci in zip(M, C, strict=True):
        assert np.linalg.matrix_rank(Ci, tol=1e-9 * np.abs(Mi).max()) <= min(R, d)
        # Eckart-Young: the error's 2-norm is the (R+1)-th largest |eigenvalue|
        lam = np.sort(np.abs(np.linalg.eigvalsh(Mi)))[::-1]
        err = lam[R] if R < d else 0.0
        assert abs(np.linalg.norm(Mi - Ci, 2) - err) <= 1e-10 * (1 + lam[0])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), d=st.integers(2, 9), data=st.data())
def test_rank_r_of_a_rank_r_matrix_is_exact(seed, d, data):
    R = data.draw(st.integers(1, d))
    M = random_symmetric(seed, 3, d, rank=R)
    np.testing.assert_allclose(rank_r(M, R), M, rtol=0, atol=1e-10 * (1 + np.abs(M).max()))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), d=st.integers(1, 9), K=st.integers(1, 60))
def test_top_k_keeps_the_k_largest_upper_entries_mirrored(seed, d, K):
    M = random_symmetric(seed, 3, d)
    C = top_k(M, K)
    np.testing.assert_array_equal(C, C.transpose(0, 2, 1))
    iu = np.triu_indices(d)
    for Mi, Ci in zip(M, C, strict=True):
        kept = Ci[iu] != 0
        assert kept.sum() <= K
        assert kept.sum() == min(K, len(iu[0]))            # ties have probability 0 here
        np.testing.assert_array_equal(Ci[iu][kept], Mi[iu][kept])
        if (~kept).any():
            assert np.abs(Mi[iu][kept]).min() >= np.abs(Mi[iu][~kept]).max()


def test_identity_compressor_returns_its_input():
    M = random_symmetric(0, 2, 4)
    assert compress(M, "identity") is M


def test_compressors_work_on_a_single_matrix_and_zero():
    M = random_symmetric(1, 1, 5)[0]
    assert rank_r(M, 2).shape == top_k(M, 3).shape == (5, 5)
    Z = np.zeros((2, 5, 5))
    assert not rank_r(Z, 1).any() and not top_k(Z, 4).any()


# --------------------------------------------------------------------------- communication

@pytest.mark.parametrize("params,message", [
    ({"compressor": "identity"}, lambda d: sym_floats(d)),
    ({"compressor": "rankR", "R": 2}, lambda d: 2 * (d + 1)),
    ({"compressor": "topK", "Kc": 3}, lambda d: 2 * 3),
    ({"compressor": "topK", "Kc": 3, "option": 2}, lambda d: 2 * 3 + 1),
    ({"compressor": "rankR", "R": 50}, lambda d: sym_floats(d)),   # capped at the triangle
])
def test_fednl_uplink_counts_gradient_message_and_initial_hessian(params, message):
    problem = make_problem(4, N=3, d=6)
    d = problem.d
    trace = run(problem, make_method("fednl", params), 2, drift_metrics=False)
    per_round = d + message(d)
    assert trace["uplink_floats"].tolist() == [0, sym_floats(d) + per_round,
                                               sym_floats(d) + 2 * per_round]
    assert trace["downlink_floats"].tolist() == [0, d, 2 * d]
    assert trace["local_hess_evals"].tolist() == [0, 2, 3]
    zero = run(problem, make_method("fednl", {**params, "H_init": "zero", "option": 2}), 1,
               drift_metrics=False)
    assert zero["uplink_floats"][1] == d + message(d) + (0 if params.get("option") == 2 else 1)


def test_message_floats_never_exceed_the_dense_triangle():
    for d in (1, 2, 5, 123):
        for R in (1, 3, 200):
            assert message_floats("rankR", d, R=R) <= sym_floats(d)
        for K in (1, 7, 10**6):
            assert message_floats("topK", d, Kc=K) <= sym_floats(d)


def test_fednl_state_holds_every_client_hessian():
    problem = make_problem(5, N=4, d=3)
    state = make_method("fednl").init(problem, np.zeros(3))
    assert state.H_local.shape == (4, 3, 3)
    np.testing.assert_allclose(state.H_local, local_hessians(problem, np.zeros(3)))


# --------------------------------------------------------------------------- refusals

def test_fednl_refuses_partial_participation():
    problem = make_problem(6, N=4, d=3)
    with pytest.raises(FedTheoryError, match="full participation"):
        run(problem, make_method("fednl"), 1, participation=2)


def test_fednl_option_1_needs_lam_positive():
    base = make_problem(7, N=2, d=3)
    Xs = [np.asarray(base.A)[i, :n] for i, n in enumerate(base.sizes)]
    ys = [np.asarray(base.y)[i, :n] for i, n in enumerate(base.sizes)]
    problem = FederatedProblem.from_clients(Xs, ys, objective="logistic", lam=0.0)
    with pytest.raises(FedTheoryError, match="lam = 0"):
        make_method("fednl", {"option": 1}).init(problem, np.zeros(3))
    make_method("fednl", {"option": 2}).init(problem, np.zeros(3))
