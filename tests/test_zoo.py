"""The method zoo: FedPAC's identities (claim C7), reductions between methods, and the
properties every registered method must have (client-permutation invariance, S = N is full
participation, same seed gives the same trace, bad hyperparameters are refused by name)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtheory.errors import FedTheoryError
from fedtheory.methods import METHODS, ServerState, make_method, round_context
from fedtheory.oracles import make_oracle
from fedtheory.problem import FederatedProblem
from fedtheory.runner import run
from fedtheory.testing import make_problem, problems
from fedtheory.trace import TIMING

EXACT = make_oracle("exact")
EPS = np.finfo(np.float64).eps

# Hyperparameters that make each method do something non-trivial on a small problem
# (K > 1 where there are local steps); methods not listed run with their defaults.
CASES = {
    "fedpac": {"K": 2, "beta": 0.3, "rho": 0.5},
    "fedpm": {"K": 2},
    "sopm": {"K": 2},
    "fedsophia": {"K": 3, "keep_state": True},
    "fedavg": {"K": 3, "eta": 0.1},
    "fedprox": {"K": 3, "eta": 0.1, "mu_p": 0.1},
    "scaffold": {"K": 3, "eta": 0.1},
    "gd": {"eta": 0.1},
    "fednl": {"compressor": "rankR", "R": 2},
}


def method_for(name: str):
    return make_method(name, CASES.get(name, {}))


def context(problem, clients=None, seed=0):
    """The RoundContext the runner would build for participants ``clients`` (None = all)."""
    return round_context(
        problem,
        None if clients is None else np.asarray(clients),
        rng=np.random.default_rng(seed),
        oracle=EXACT,
    )


def rows_without_seconds(trace):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in trace.rows]


def client_data(problem):
    """(X_i, y_i) of every client, without padding."""
    A, y = np.asarray(problem.A), np.asarray(problem.y)
    return (
        [A[i, :n] for i, n in enumerate(problem.sizes)],
        [y[i, :n] for i, n in enumerate(problem.sizes)],
    )


# --------------------------------------------------------------------------- FedPAC, C7


def reference_fedpac_clients(problem, method, state, clients):
    """FedPAC's client loop written directly from docs/algorithms.md, one client at a time:
    returns, per participant, theta_i^K and sum_k d_i^k."""
    d = problem.d
    theta_K, d_sum = [], []
    for i in clients:
        x = np.array(state.theta)
        Th = np.array(state.Theta) if method.align else problem.oracle(x, [i], hess=True).H[0]
        total = np.zeros(d)
        for _ in range(method.K):
            o = problem.oracle(x, [i], grad=True, hess=True)
            Th_new = method.rho * Th + (1 - method.rho) * o.H[0]
            P = Th_new if method.order == "update_then_use" else Th
            dk = np.linalg.solve(P + method.delta * np.eye(d), o.g[0])
            x = x - method.eta * ((1 - method.beta) * dk + method.beta * state.gG)
            Th = Th_new
            total += dk
        theta_K.append(x)
        d_sum.append(total)
    return np.array(theta_K), np.array(d_sum)


fedpac_params = st.fixed_dictionaries(
    {
        "K": st.integers(1, 3),
        "eta": st.floats(0.2, 1.0),
        "beta": st.sampled_from([0.0, 0.3, 0.8]),
        "rho": st.sampled_from([0.0, 0.5, 0.9, 1.0]),
        "delta": st.sampled_from([0.0, 0.1]),
        "order": st.sampled_from(["update_then_use", "use_then_update"]),
        "theta_init": st.sampled_from(["hessian", "identity"]),
        "align": st.booleans(),
    }
)


@settings(max_examples=25, deadline=None)
@given(
    problem=problems(objectives=("logistic", "ridge"), N=(2, 6), d=(2, 6)),
    params=fedpac_params,
    partial=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_fedpac_server_trajectory_is_heavy_ball(problem, params, partial, seed):
    """C7: theta^{r+1} - theta^r = -eta (1 - beta) sum w~_i sum_k d_i^k
    + beta (theta^r - theta^{r-1}), with the d_i^k of an independent per-client loop."""
    method = make_method("fedpac", params)
    rng = np.random.default_rng(seed)
    state = method.start(problem, np.zeros(problem.d))[0]
    prev = state.theta
    for _ in range(4):
        S = int(rng.integers(1, problem.N + 1)) if partial else problem.N
        clients = np.sort(rng.choice(problem.N, size=S, replace=False))
        ctx = context(problem, clients)
        theta_K, d_sum = reference_fedpac_clients(problem, method, state, clients)
        new, info = method.round(ctx, state)
        np.testing.assert_allclose(
            info.theta_local, theta_K, rtol=1e-8, atol=1e-8 * (1 + np.abs(theta_K).max())
        )
        step = new.theta - state.theta
        heavy_ball = -method.eta * (1 - method.beta) * (ctx.weights @ d_sum) + method.beta * (
            state.theta - prev
        )
        # relative 1e-10, floored at the rounding of theta^{r+1} - theta^r itself
        scale = max(np.linalg.norm(step), np.linalg.norm(heavy_ball))
        floor = 16 * EPS * (1 + np.linalg.norm(state.theta))
        assert np.linalg.norm(step - heavy_ball) <= 1e-10 * scale + floor
        prev, state = state.theta, new


@pytest.mark.parametrize("rho", [0.0, 0.5])
def test_fedpac_k1_fixed_point_does_not_depend_on_beta(rho):
    """C7: with K = 1, beta in {0, 0.3, 0.8} leads to the same fixed point (to 1e-8); that point
    is the drift-biased one, not theta*."""
    problem = make_problem(3, N=4, d=5, lam=1e-2)
    ctx = context(problem)
    limits = []
    for beta in (0.0, 0.3, 0.8):
        method = make_method("fedpac", {"K": 1, "beta": beta, "rho": rho})
        state = method.start(problem, np.zeros(problem.d))[0]
        for _ in range(3000):
            new, _ = method.round(ctx, state)
            done = np.linalg.norm(new.theta - state.theta) <= 1e-15 * (
                1 + np.linalg.norm(new.theta)
            )
            state = new
            if done:
                break
        assert done, f"beta = {beta} did not converge"
        limits.append(state.theta)
    for lim in limits[1:]:
        np.testing.assert_allclose(lim, limits[0], rtol=0, atol=1e-8)
    assert np.linalg.norm(limits[0] - problem.reference.theta_star) > 1e-6


@settings(max_examples=25, deadline=None)
@given(
    problem=problems(),
    eta=st.floats(0.05, 1.0),
    partial=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_fedpac_rho0_beta0_k1_equals_sopm_k1(problem, eta, partial, seed):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=problem.d)
    S = int(rng.integers(1, problem.N + 1)) if partial else problem.N
    ctx = context(problem, np.sort(rng.choice(problem.N, size=S, replace=False)))
    fedpac = make_method("fedpac", {"K": 1, "eta": eta, "rho": 0.0, "beta": 0.0})
    sopm = make_method("sopm", {"K": 1, "eta": eta})
    a, _ = fedpac.round(ctx, fedpac.start(problem, theta)[0])
    b, _ = sopm.round(ctx, sopm.start(problem, theta)[0])
    assert np.linalg.norm(a.theta - b.theta) <= 1e-10 * (1 + np.linalg.norm(theta))


def test_fedpac_counts_the_initial_hessian_upload_once():
    problem = make_problem(1, N=3, d=4)
    d, tri = 4, 4 * 5 // 2
    trace = run(problem, make_method("fedpac", {"beta": 0.5}), 2)
    per_round = d + tri  # Delta_i + Theta_i^K
    assert trace["uplink_floats"].tolist() == [0, tri + per_round, tri + 2 * per_round]
    assert trace["downlink_floats"].tolist() == [0, 2 * d + tri, 2 * (2 * d + tri)]
    assert trace["local_hess_evals"].tolist() == [0, 2, 3]
    bare = run(problem, make_method("fedpac", {"align": False, "beta": 0.0}), 1)
    assert bare["uplink_floats"][1] == d and bare["downlink_floats"][1] == d
    assert bare["local_hess_evals"][1] == 1


def test_fedpac_reports_the_last_preconditioner_for_drift_metrics():
    problem = make_problem(2, N=3, d=4)
    trace = run(problem, make_method("fedpac", {"K": 2}), 2)
    for col in ("drift", "rel_drift", "hess_gap", "client_drift"):
        assert np.isfinite(trace[col][1:]).all() and (trace[col][1:] > 0).all()


# --------------------------------------------------------------------------- first order


@settings(max_examples=25, deadline=None)
@given(
    problem=problems(),
    eta=st.floats(0.01, 1.0),
    partial=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_fedavg_k1_equals_gd(problem, eta, partial, seed):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=problem.d)
    S = int(rng.integers(1, problem.N + 1)) if partial else problem.N
    ctx = context(problem, np.sort(rng.choice(problem.N, size=S, replace=False)))
    a, _ = make_method("fedavg", {"K": 1, "eta": eta}).round(ctx, ServerState(theta))
    b, _ = make_method("gd", {"eta": eta}).round(ctx, ServerState(theta))
    assert np.linalg.norm(a.theta - b.theta) <= 1e-12 * (1 + np.linalg.norm(theta))


@pytest.mark.parametrize("objective", ["logistic", "ridge"])
def test_scaffold_with_identical_clients_equals_fedavg(objective):
    base = make_problem(4, objective=objective, N=1, d=5, min_rows=10)
    Xs, ys = client_data(base)
    problem = FederatedProblem.from_clients(Xs * 4, ys * 4, objective=objective, lam=1e-2)
    params = {"K": 4, "eta": 0.1}
    a = run(problem, make_method("scaffold", params), 8, drift_metrics=False)
    b = run(problem, make_method("fedavg", params), 8, drift_metrics=False)
    np.testing.assert_allclose(a["dist_to_opt"], b["dist_to_opt"], rtol=1e-10, atol=1e-14)


def test_scaffold_removes_the_fedavg_drift_floor():
    """Under heterogeneity FedAvg with K > 1 stalls at a biased point; SCAFFOLD does not."""
    problem = make_problem(5, objective="ridge", N=4, d=4, lam=0.1)
    params = {"K": 5, "eta": 0.02}
    scaffold = run(problem, make_method("scaffold", params), 400, drift_metrics=False)
    fedavg = run(problem, make_method("fedavg", params), 400, drift_metrics=False)
    assert scaffold["rel_dist"][-1] < 1e-8 < 1e-3 < fedavg["rel_dist"][-1]


def test_scaffold_keeps_the_control_variates_of_absent_clients():
    problem = make_problem(6, N=5, d=3)
    method = make_method("scaffold", {"K": 2, "eta": 0.1})
    state = method.start(problem, np.zeros(3))[0]
    state, _ = method.round(context(problem), state)
    before = state.c_local.copy()
    state, _ = method.round(context(problem, [1, 3]), state)
    np.testing.assert_array_equal(state.c_local[[0, 2, 4]], before[[0, 2, 4]])
    assert not np.allclose(state.c_local[[1, 3]], before[[1, 3]])
    # c = sum_i w_i c_i over all clients, whoever took part
    np.testing.assert_allclose(state.c, np.asarray(problem.weights) @ state.c_local, atol=1e-14)


def test_fedprox_mu0_equals_fedavg():
    problem = make_problem(7, N=4, d=4)
    a = run(problem, make_method("fedprox", {"K": 3, "eta": 0.1, "mu_p": 0.0}), 3)
    b = run(problem, make_method("fedavg", {"K": 3, "eta": 0.1}), 3)
    assert rows_without_seconds(a) == rows_without_seconds(b)


def test_first_order_methods_converge_linearly_at_the_gd_rate_on_ridge():
    """On a quadratic, GD with eta = 1/L contracts asymptotically by exactly 1 - mu/L; with
    K = 1, FedAvg, FedProx and SCAFFOLD are GD (under full participation)."""
    problem = make_problem(8, objective="ridge", N=4, d=4, lam=0.1)
    ref = problem.reference
    for name in ("gd", "fedavg", "fedprox", "scaffold"):
        trace = run(problem, make_method(name, {"eta": 1 / ref.L}), 60, drift_metrics=False)
        e = trace["dist_to_opt"]
        np.testing.assert_allclose(e[41:] / e[40:-1], 1 - ref.mu / ref.L, rtol=1e-3, err_msg=name)


# --------------------------------------------------------------------------- FedSophia


def test_fedsophia_keep_state_persists_moments_for_absent_clients():
    problem = make_problem(9, N=4, d=3)
    method = make_method("fedsophia", {"K": 2, "keep_state": True})
    state = method.start(problem, np.zeros(3))[0]
    state, _ = method.round(context(problem), state)
    m0, h0 = state.m.copy(), state.h.copy()
    state, info = method.round(context(problem, [0, 2]), state)
    np.testing.assert_array_equal(state.m[[1, 3]], m0[[1, 3]])
    np.testing.assert_array_equal(state.h[[1, 3]], h0[[1, 3]])
    assert not np.allclose(state.h[[0, 2]], h0[[0, 2]])
    assert info.P.shape == (2, 3, 3) and info.hess_evals == 4


def test_fedsophia_step_is_clipped_at_eta_rho():
    problem = make_problem(10, N=3, d=4)
    method = make_method("fedsophia", {"K": 1, "eta": 0.05, "rho": 0.5})
    theta = np.full(4, 3.0)
    _, info = method.round(context(problem), method.start(problem, theta)[0])
    assert np.abs(info.theta_local - theta).max() <= 0.05 * 0.5 * (1 + 1e-12)


# --------------------------------------------------------------------------- every method


def permuted(problem, perm):
    Xs, ys = client_data(problem)
    return FederatedProblem.from_clients(
        [Xs[i] for i in perm],
        [ys[i] for i in perm],
        objective=problem.objective,
        lam=problem.lam,
        weighting=problem.weighting,
    )


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_is_invariant_to_a_permutation_of_the_clients(name):
    problem = make_problem(11, N=5, d=4, lam=0.05)
    other = permuted(problem, [3, 0, 4, 2, 1])
    a = run(problem, method_for(name), 4)
    b = run(other, method_for(name), 4)
    assert a.status == b.status == "completed"
    for col in (
        "dist_to_opt",
        "subopt",
        "grad_norm",
        "uplink_floats",
        "local_hess_evals",
        "drift",
        "hess_gap",
        "grad_dissimilarity",
        "client_drift",
    ):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-8, atol=1e-12, err_msg=col)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_participation_n_is_full_participation(name):
    problem = make_problem(12, N=4, d=3)
    a = run(problem, method_for(name), 3, participation=4, seed=5)
    b = run(problem, method_for(name), 3, participation=None, seed=5)
    assert rows_without_seconds(a) == rows_without_seconds(b)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_same_seed_same_trace(name):
    problem = make_problem(13, N=5, d=3)
    S = None if METHODS[name].full_participation_only else 3
    oracle = make_oracle("minibatch", b=4)
    a = run(problem, method_for(name), 4, participation=S, seed=21, oracle=oracle)
    b = run(problem, method_for(name), 4, participation=S, seed=21, oracle=oracle)
    c = run(problem, method_for(name), 4, participation=S, seed=22, oracle=oracle)
    assert rows_without_seconds(a) == rows_without_seconds(b)
    assert rows_without_seconds(a) != rows_without_seconds(c)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_documents_itself(name):
    cls = METHODS[name]
    assert cls.name == name and cls.description and "\n" not in cls.description
    assert cls.source and cls.__module__ and (cls.__doc__ or "").strip()
    assert (__import__(cls.__module__, fromlist=["_"]).__doc__ or "").strip()


@pytest.mark.parametrize(
    "name", [n for n in sorted(METHODS) if not METHODS[n].full_participation_only]
)
def test_every_method_accepts_partial_participation(name):
    problem = make_problem(14, N=6, d=3)
    trace = run(problem, method_for(name), 5, participation=2, seed=3)
    assert trace.status == "completed" and (trace["participants"][1:] == 2).all()


# --------------------------------------------------------------------------- bad input

BAD = [
    ("fedpac", {"K": 0}, "0"),
    ("fedpac", {"eta": -1.0}, "-1.0"),
    ("fedpac", {"beta": 1.0}, "beta"),
    ("fedpac", {"beta": -0.1}, "-0.1"),
    ("fedpac", {"rho": 1.5}, "1.5"),
    ("fedpac", {"delta": -2.0}, "-2.0"),
    ("fedpac", {"order": "sideways"}, "sideways"),
    ("fedpac", {"theta_init": "zero"}, "zero"),
    ("fedpac", {"align": "yes"}, "yes"),
    ("fedsophia", {"b1": 1.0}, "b1"),
    ("fedsophia", {"b2": -0.5}, "-0.5"),
    ("fedsophia", {"gamma": 0.0}, "gamma"),
    ("fedsophia", {"eps": -1e-3}, "-0.001"),
    ("fedsophia", {"rho": 0.0}, "rho"),
    ("fedsophia", {"tau": 0}, "tau"),
    ("fedsophia", {"keep_state": 1}, "keep_state"),
    ("fedsophia", {"eta": 0.0}, "eta"),
    ("gd", {"eta": float("nan")}, "nan"),
    ("fedavg", {"K": 1.5}, "1.5"),
    ("fedprox", {"mu_p": -1.0}, "mu_p"),
    ("scaffold", {"eta_g": 0.0}, "eta_g"),
    ("fednl", {"option": 3}, "3"),
    ("fednl", {"compressor": "randK"}, "randK"),
    ("fednl", {"R": 0}, "R"),
    ("fednl", {"Kc": -4}, "-4"),
    ("fednl", {"alpha": 1.5}, "1.5"),
    ("fednl", {"init": "identity"}, "identity"),
]


@pytest.mark.parametrize("name,params,fragment", BAD)
def test_bad_hyperparameters_are_refused_by_name(name, params, fragment):
    with pytest.raises(FedTheoryError, match=fragment.replace(".", r"\.")):
        make_method(name, params)


def test_cli_strings_are_parsed_to_field_types():
    m = make_method(
        "fedpac", {"K": "3", "beta": "0.2", "align": "false", "order": "use_then_update"}
    )
    assert (m.K, m.beta, m.align, m.order) == (3, 0.2, False, "use_then_update")
    assert make_method("fednl", {"compressor": "topK", "Kc": "7"}).Kc == 7


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_gives_the_same_trace_on_cupy(name, cupy_gpu):
    """Same seed, same participants and minibatch rows (drawn on the host): NumPy and CuPy
    traces agree to rounding."""
    problem = make_problem(15, N=5, d=4, lam=0.05)
    S = None if METHODS[name].full_participation_only else 3
    oracle = make_oracle("minibatch", b=4)
    a = run(problem, method_for(name), 3, participation=S, seed=1, oracle=oracle)
    b = run(problem.to("cupy"), method_for(name), 3, participation=S, seed=1, oracle=oracle)
    assert a.status == b.status == "completed"
    for col in ("dist_to_opt", "subopt", "grad_norm", "uplink_floats", "drift", "client_drift"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-7, atol=1e-12, err_msg=col)
