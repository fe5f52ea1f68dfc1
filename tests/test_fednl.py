"""FedNL: the identity compressor is Newton with a one-round-stale Hessian, the compressors
keep their promises (top-K's tie rule and in-place update included), alpha's rules, the l^k
norms, communication (floats and the FedNL papers' bits) is counted per compressor, rounds
consume their state, and bad set-ups are refused. The FedNL family's other members and the
trajectories of the public reference code are in test_fednl_family.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtheory.errors import FedTheoryError
from fedtheory.linalg import sym_floats
from fedtheory.methods import make_method, round_context
from fedtheory.methods.fednl import (
    compress,
    message_bits,
    message_floats,
    rank_r,
    top_k,
    top_k_entries,
    top_k_indices,
)
from fedtheory.problem import FederatedProblem
from fedtheory.rates import q_order
from fedtheory.runner import run
from fedtheory.testing import make_problem, problems


def full_context(problem):
    return round_context(problem)


def global_g_H(problem, x):
    o = problem.global_oracle(x, value=False, hess=True)
    return o.g, o.H


def local_hessians(problem, x):
    return problem.oracle(x, grad=False, hess=True).H


# --------------------------------------------------------------------------- stale Newton

NORMS = {"spectral": 2, "frobenius": "fro"}


@settings(max_examples=25, deadline=None)
@given(
    problem=problems(),
    option=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**31 - 1),
    l_norm=st.sampled_from(sorted(NORMS)),
)
def test_fednl_identity_is_newton_then_one_round_stale_newton(problem, option, seed, l_norm):
    """x^1 = x^0 - H(x^0)^{-1} g(x^0) (init = hessian); afterwards, option 1:
    x^{k+1} = x^k - H(x^{k-1})^{-1} g(x^k); option 2 adds l^k I with
    l^k = sum w_i ||H_i(x^k) - H_i(x^{k-1})|| in the chosen norm (the reference code's
    spectral norm, or the paper's Frobenius norm; a direct computation, client by client)."""
    method = make_method("fednl", {"option": option, "compressor": "identity", "l_norm": l_norm})
    ctx = full_context(problem)
    x = 0.3 * np.random.default_rng(seed).normal(size=problem.d)
    state = method.start(problem, x)[0]
    w = np.asarray(problem.weights)
    x_prev = None
    for _ in range(4):
        g, H_now = global_g_H(problem, x)
        if x_prev is None:
            H = H_now  # a Newton step
        else:
            H = global_g_H(problem, x_prev)[1]  # one round stale
            if option == 2:
                Hi_now, Hi_prev = local_hessians(problem, x), local_hessians(problem, x_prev)
                H = H + sum(
                    w[i] * np.linalg.norm(Hi_now[i] - Hi_prev[i], NORMS[l_norm])
                    for i in range(problem.N)
                ) * np.eye(problem.d)
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


@pytest.mark.parametrize(
    "params",
    [
        {"compressor": "rankR", "R": 1},
        {"compressor": "topK", "Kc": 6},
        {"compressor": "rankR", "R": 2, "option": 2},
        {"compressor": "topK", "Kc": 3, "alpha": 0.5},
        {"compressor": "identity", "init": "zero", "option": 2},
    ],
)
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
        assert kept.sum() == min(K, len(iu[0]))  # ties have probability 0 here
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


@pytest.mark.parametrize(
    "params,message",
    [
        ({"compressor": "identity"}, lambda d: sym_floats(d)),
        ({"compressor": "rankR", "R": 2}, lambda d: 2 * (d + 1)),
        ({"compressor": "topK", "Kc": 3}, lambda d: 2 * 3),
        ({"compressor": "topK", "Kc": 3, "option": 2}, lambda d: 2 * 3 + 1),
        ({"compressor": "rankR", "R": 50}, lambda d: sym_floats(d)),  # capped at the triangle
    ],
)
def test_fednl_uplink_counts_gradient_message_and_initial_hessian(params, message):
    problem = make_problem(4, N=3, d=6)
    d = problem.d
    trace = run(problem, make_method("fednl", params), 2, drift_metrics=False)
    per_round = d + message(d)
    assert trace["uplink_floats"].tolist() == [
        0,
        sym_floats(d) + per_round,
        sym_floats(d) + 2 * per_round,
    ]
    assert trace["downlink_floats"].tolist() == [0, d, 2 * d]
    assert trace["local_hess_evals"].tolist() == [0, 2, 3]
    zero = run(
        problem,
        make_method("fednl", {**params, "init": "zero", "option": 2}),
        1,
        drift_metrics=False,
    )
    assert zero["uplink_floats"][1] == d + message(d) + (0 if params.get("option") == 2 else 1)


@pytest.mark.parametrize(
    "params,bits",
    [
        ({"compressor": "identity"}, lambda d: 32 * sym_floats(d)),
        ({"compressor": "rankR", "R": 2}, lambda d: 32 * 2 * d),
        ({"compressor": "topK", "Kc": 3, "option": 2}, lambda d: 32 * 3),
        ({"compressor": "rankR", "R": 50}, lambda d: 32 * d * d),  # R capped at d, no more
        ({"compressor": "topK", "Kc": 10**6}, lambda d: 32 * sym_floats(d)),
    ],
)
def test_fednl_bits_follow_the_fednl_papers_convention(params, bits):
    """init 32 d(d+1)/2 (init = hessian), then 32 d + the compressor's cost per round and
    client (l_i of option 2 uncharged, as in the reference code); init = zero costs none."""
    problem = make_problem(4, N=3, d=6)
    d = problem.d
    trace = run(problem, make_method("fednl", params), 3, drift_metrics=False)
    per_round = 32 * d + bits(d)
    assert message_bits(
        params["compressor"], d, R=params.get("R", 1), Kc=params.get("Kc", 1)
    ) == bits(d)
    assert trace["bits"].tolist() == [
        0,
        32 * sym_floats(d) + per_round,
        32 * sym_floats(d) + 2 * per_round,
        32 * sym_floats(d) + 3 * per_round,
    ]
    zero = run(problem, make_method("fednl", {**params, "init": "zero"}), 2, drift_metrics=False)
    assert zero["bits"].tolist() == [0, per_round, 2 * per_round]


def test_message_floats_never_exceed_the_dense_triangle():
    for d in (1, 2, 5, 123):
        for R in (1, 3, 200):
            assert message_floats("rankR", d, R=R) <= sym_floats(d)
        for K in (1, 7, 10**6):
            assert message_floats("topK", d, Kc=K) <= sym_floats(d)


def test_fednl_state_holds_every_client_hessian():
    problem = make_problem(5, N=4, d=3)
    state = make_method("fednl").start(problem, np.zeros(3))[0]
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
        make_method("fednl", {"option": 1}).start(problem, np.zeros(3))[0]
    make_method("fednl", {"option": 2}).start(problem, np.zeros(3))[0]


# --------------------------------------------------------------------------- top-K ties


def reference_rule_top_k(M, K):
    """The reference code's top-K, written as its definition: sort the tuples (|M_ij|, i, j) of
    the upper triangle in decreasing order and keep the first K (ties -> larger (i, j))."""
    d = M.shape[0]
    entries = sorted(((abs(M[i, j]), i, j) for i in range(d) for j in range(i, d)), reverse=True)
    out = np.zeros_like(M)
    for _, i, j in entries[:K]:
        out[i, j] = out[j, i] = M[i, j]
    return out


def test_top_k_breaks_exact_ties_towards_the_larger_index():
    """|M| has the tie 2 = |2| = |-2| = |2| at (0, 1), (0, 2), (1, 2): the larger (i, j) wins."""
    M = np.array([[1.0, 2.0, -2.0], [2.0, 0.5, 2.0], [-2.0, 2.0, 3.0]])
    kept = {
        K: {tuple(ij) for ij in np.argwhere(np.triu(top_k(M[None], K)[0]) != 0)}
        for K in (1, 2, 3, 4, 5)
    }
    assert kept[1] == {(2, 2)}
    assert kept[2] == {(2, 2), (1, 2)}
    assert kept[3] == {(2, 2), (1, 2), (0, 2)}
    assert kept[4] == {(2, 2), (1, 2), (0, 2), (0, 1)}
    assert kept[5] == kept[4] | {(0, 0)}
    np.testing.assert_array_equal(top_k_indices(np.array([[5.0, 5.0, 5.0, 1.0]]), 2), [[1, 2]])
    np.testing.assert_array_equal(top_k_indices(np.array([[0.0, 0.0, 0.0]]), 1), [[2]])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), d=st.integers(1, 8), K=st.integers(1, 40))
def test_top_k_equals_the_reference_rule_on_matrices_full_of_ties(seed, d, K):
    """Small integers make exact ties everywhere; the selection must be the reference code's."""
    X = np.random.default_rng(seed).integers(-2, 3, size=(3, d, d)).astype(float)
    M = X + X.transpose(0, 2, 1)
    C = top_k(M, K)
    for Mi, Ci in zip(M, C, strict=True):
        np.testing.assert_array_equal(Ci, reference_rule_top_k(Mi, K))
    v, i, j = top_k_entries(M, K)
    assert v.shape == i.shape == j.shape == (3, min(K, d * (d + 1) // 2))
    np.testing.assert_array_equal(v, M[np.arange(3)[:, None], i, j])
    assert (i <= j).all()


# --------------------------------------------------------------------------- alpha and norms


def learned_once(params, M, d):
    """H^1 of one client with H^0 = 0 and H(x) = M: alpha C(M), through FedNL's update."""
    method = make_method("fednl", params)
    H = np.zeros((1, d, d))
    method.learn(H, M[None])
    return H[0]


def test_alpha_rule1_for_top_k_is_one_minus_sqrt_one_minus_2k_over_d_d_plus_1():
    d, K = 4, 3
    M = random_symmetric(7, 1, d)[0]
    alpha = 1 - np.sqrt(1 - 2 * K / (d * (d + 1)))
    np.testing.assert_allclose(
        learned_once({"compressor": "topK", "Kc": K, "alpha": "rule1"}, M, d),
        alpha * top_k(M[None], K)[0],
        rtol=1e-15,
    )


def test_alpha_rule1_for_rank_r_uses_the_kept_fraction_of_this_call():
    """M with eigenvalues 3, -2, 1: rank 1 keeps sigma^2 = 9 of 14, so
    alpha = 1 - sqrt(1 - 9 / (14 + 1e-15)) (the reference's guard included)."""
    Q = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]
    M = Q @ np.diag([3.0, -2.0, 1.0]) @ Q.T
    alpha = 1 - np.sqrt(1 - 9 / (14 + 1e-15))
    np.testing.assert_allclose(
        learned_once({"compressor": "rankR", "R": 1, "alpha": "rule1"}, M, 3),
        alpha * 3 * np.outer(Q[:, 0], Q[:, 0]),
        atol=1e-14,
    )
    M2 = 2 * M  # the same fraction: the same alpha
    np.testing.assert_allclose(
        learned_once({"compressor": "rankR", "R": 1, "alpha": "rule1"}, M2, 3),
        alpha * 6 * np.outer(Q[:, 0], Q[:, 0]),
        atol=1e-14,
    )
    assert not learned_once({"compressor": "rankR", "alpha": "rule1"}, 0 * M, 3).any()


@pytest.mark.parametrize("alpha,value", [("one", 1.0), (0.3, 0.3), ("0.25", 0.25), (1, 1.0)])
def test_alpha_number_or_one_scales_the_compressed_difference(alpha, value):
    M = random_symmetric(8, 1, 4)[0]
    for params in (
        {"compressor": "identity"},
        {"compressor": "topK", "Kc": 3},
        {"compressor": "rankR", "R": 2},
    ):
        expected = value * compress(M[None], params["compressor"], R=2, Kc=3)[0]
        np.testing.assert_allclose(
            learned_once({**params, "alpha": alpha}, M, 4), expected, rtol=1e-14, atol=1e-15
        )
    assert learned_once({"alpha": "rule1"}, M, 4).tolist() == M.tolist()  # identity: delta = 1


@pytest.mark.parametrize("alpha", ["two", 0, -0.5, 1.5, "1.5", float("nan"), True])
def test_bad_alpha_is_refused_by_name(alpha):
    with pytest.raises(FedTheoryError, match="alpha"):
        make_method("fednl", {"alpha": alpha})


def test_fednl_default_l_norm_is_spectral_and_the_two_norms_give_different_trajectories():
    problem = make_problem(9, N=4, d=5, lam=5e-2, heterogeneity=0.5)
    params = {"option": 2, "compressor": "rankR", "R": 1}
    assert make_method("fednl", params).l_norm == "spectral"
    fro = run(
        problem, make_method("fednl", {**params, "l_norm": "frobenius"}), 30, drift_metrics=False
    )
    spec = run(problem, make_method("fednl", params), 30, drift_metrics=False)
    assert fro["rel_dist"][-1] < 1e-8 and spec["rel_dist"][-1] < 1e-8
    assert fro["dist_to_opt"][1] == spec["dist_to_opt"][1]  # round 1: l^0 = 0 in any norm
    gap = np.abs(fro["dist_to_opt"][2:6] - spec["dist_to_opt"][2:6])
    assert (gap > 1e-3 * fro["dist_to_opt"][2:6]).all()
    with pytest.raises(FedTheoryError, match="l_norm"):
        make_method("fednl", {"l_norm": "nuclear"})


# --------------------------------------------------------------------------- in place


@pytest.mark.parametrize(
    "params",
    [
        {"compressor": "identity", "alpha": 0.5},
        {"compressor": "topK", "Kc": 7},
        {"compressor": "rankR", "R": 2, "alpha": "rule1"},
    ],
)
@pytest.mark.parametrize("after", [False, True])
@pytest.mark.parametrize("norm", ["frobenius", "spectral"])
def test_blocked_in_place_learning_equals_the_dense_formula(monkeypatch, params, after, norm):
    """H_i + alpha C(H_i(x) - H_i) written out densely, for all clients and for a subset
    (rows), with blocks of one client and of all; norms before or after the update."""
    import fedtheory.methods.fednl as fednl

    d = 5
    H0 = random_symmetric(10, 6, d)
    T = random_symmetric(11, 6, d)
    method = make_method("fednl", params)
    alpha = 0.5 if params.get("alpha") == 0.5 else 1.0
    rows = np.array([4, 0, 2])
    for block in (fednl.BLOCK_BYTES, d * d * 8):
        monkeypatch.setattr(fednl, "BLOCK_BYTES", block)
        for sel in (None, rows):
            H = H0.copy()
            idx = slice(None) if sel is None else sel
            D = T[idx] - H0[idx]
            C = compress(D, params["compressor"], R=2, Kc=7)
            if params.get("alpha") == "rule1":
                lam = np.linalg.eigvalsh(D)
                kept = np.sort(lam**2, axis=1)[:, -2:].sum(axis=1)
                a = 1 - np.sqrt(1 - kept / ((lam**2).sum(axis=1) + 1e-15))
                C = a[:, None, None] * C
            else:
                C = alpha * C
            norms = method.learn(H, T[idx], sel, norm=norm, after=after)
            expected = H0.copy()
            expected[idx] += C
            np.testing.assert_allclose(H, expected, rtol=1e-13, atol=1e-14)
            ref_norm = np.linalg.norm(D - C if after else D, NORMS[norm], axis=(1, 2))
            np.testing.assert_allclose(norms, ref_norm, rtol=1e-12, atol=1e-14)


def test_a_round_consumes_its_state_and_refuses_a_replay():
    problem = make_problem(12, N=3, d=4)
    method = make_method("fednl", {"compressor": "topK", "Kc": 3})
    state = method.start(problem, np.zeros(4))[0]
    ctx = full_context(problem)
    new, _ = method.round(ctx, state)
    assert new.H_local is state.H_local  # updated in place, no copy
    with pytest.raises(FedTheoryError, match="already advanced"):
        method.round(ctx, state)
    method.round(ctx, new)  # the returned state goes on


@pytest.mark.parametrize(
    "params",
    [
        {"compressor": "topK", "Kc": 20, "option": 2},
        {"compressor": "rankR", "R": 2, "option": 2},
        {"compressor": "identity", "alpha": 0.5},
    ],
)
def test_fednl_round_makes_no_temporary_of_the_stack_size(monkeypatch, params):
    """With blocks of 2 clients, a round allocates the oracle's Hessian stack and a fraction of
    a stack more (the learning's temporaries are a few matrices per client of a block); the
    former code held three more stacks (the difference, C and H + alpha C)."""
    import tracemalloc

    import fedtheory.methods.fednl as fednl

    N, d = 80, 16
    problem = make_problem(13, N=N, d=d, max_rows=30)
    monkeypatch.setattr(fednl, "BLOCK_BYTES", 2 * d * d * 8)
    method = make_method("fednl", params)
    ctx = full_context(problem)
    state, _ = method.round(ctx, method.start(problem, np.zeros(d))[0])
    stack = N * d * d * 8

    def peak_of(f):
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            f()
            return tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()

    oracle = peak_of(lambda: ctx.eval(state.theta, grad=True, hess=True))
    peak = peak_of(lambda: method.round(ctx, state))
    peak -= max(oracle, stack)  # the oracle's own peak, or its output held through the round
    assert peak <= 0.5 * stack, f"{peak / stack:.2f} stacks above the oracle's"


# ------------------------------------------------------------ compiled top-K learning (NumPy)
def _tied_pair(seed, N, d, zero_coords):
    """H and T with many exact ties in |T - H| (small integers) and coordinates where both
    agree, so the difference has zero rows and columns there."""
    rng = np.random.default_rng(seed)
    H = rng.integers(-3, 4, size=(N, d, d)).astype(float)
    T = rng.integers(-3, 4, size=(N, d, d)).astype(float)
    H, T = H + H.transpose(0, 2, 1), T + T.transpose(0, 2, 1)
    for i in zero_coords:
        T[:, i, :], T[:, :, i] = H[:, i, :], H[:, :, i]
    return H, T


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    N=st.integers(1, 5),
    d=st.integers(1, 9),
    Kc=st.integers(1, 50),
    alpha=st.sampled_from(["one", 0.5, "rule1"]),
    norm=st.sampled_from([None, "frobenius", "spectral"]),
    after=st.booleans(),
    subset=st.booleans(),
    n_zero=st.integers(0, 4),
)
def test_compiled_top_k_learning_equals_the_array_path(
    seed, N, d, Kc, alpha, norm, after, subset, n_zero
):
    """The NumPy path (one compiled loop, kernels.topk_learn) selects exactly the entries the
    array path (CuPy's, top_k_indices) selects, ties included, so H is bit-identical; the
    norms agree to rounding, the spectral one although it is taken on the block of the
    coordinates where the difference is non-zero (here, the ones not zeroed)."""
    method = make_method("fednl", {"compressor": "topK", "Kc": Kc, "alpha": alpha})
    H0, T = _tied_pair(seed, N, d, range(min(n_zero, d - 1)))
    rows = np.random.default_rng(seed).permutation(N)[: max(1, N - 1)] if subset else None
    m = N if rows is None else rows.size
    H_kernel, H_array = H0.copy(), H0.copy()
    got = method.learn(H_kernel, T[:m], rows, norm=norm, after=after)
    at = slice(0, m) if rows is None else rows
    want = method._learn_top_k(H_array, T[:m], at, norm, after)
    np.testing.assert_array_equal(H_kernel, H_array)
    if norm is None:
        assert got is None
    else:
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


def test_compiled_top_k_learning_propagates_nan_and_takes_the_larger_ties():
    """A NaN difference counts as the largest magnitude (it reaches H_i, never dropped); of
    tied magnitudes the larger (i, j) positions are kept; K past the triangle keeps all."""
    method = make_method("fednl", {"compressor": "topK", "Kc": 2})
    H = np.zeros((1, 3, 3))
    T = np.ones((1, 3, 3))  # six tied entries; keep (2, 2) and (1, 2)
    method.learn(H, T, None)
    expected = np.zeros((3, 3))
    expected[2, 2] = expected[1, 2] = expected[2, 1] = 1.0
    np.testing.assert_array_equal(H[0], expected)
    T[0, 0, 1] = T[0, 1, 0] = np.nan
    norms = method.learn(H, T, None, norm="spectral")
    assert np.isnan(H[0, 0, 1]) and np.isnan(H[0, 1, 0]) and np.isnan(norms[0])
    # an infinite difference: the spectral norm is NaN (it was a number read from
    # uninitialised memory; NumPy's eigvalsh of such a matrix returns NaN or does not converge)
    H, T = np.zeros((1, 3, 3)), np.ones((1, 3, 3))
    T[0, 0, 2] = T[0, 2, 0] = np.inf
    norms = method.learn(H, T, None, norm="spectral")
    assert np.isnan(norms[0])
    every = make_method("fednl", {"compressor": "topK", "Kc": 100})
    H = np.zeros((1, 3, 3))
    every.learn(H, np.full((1, 3, 3), 2.0), None)
    np.testing.assert_array_equal(H[0], np.full((3, 3), 2.0))


def test_compiled_top_k_learning_refuses_rows_outside_the_stack():
    """The compiled loop does not check its indices, so learn does: no write outside H."""
    method = make_method("fednl", {"compressor": "topK", "Kc": 2})
    H, T = np.zeros((3, 2, 2)), np.ones((2, 2, 2))
    with pytest.raises(FedTheoryError, match="rows must be 2 indices into the 3"):
        method.learn(H, T, np.array([0, 3]))
    with pytest.raises(FedTheoryError, match="rows must be 2 indices into the 3"):
        method.learn(H, T, np.array([-1, 0]))
    np.testing.assert_array_equal(H, 0.0)
