"""The second-round methods (docs/algorithms.md): FedPM with server memory (FedPM-PP), the FOOF
preconditioner of FedPM and SOPM, GIANT, DANE and Newton-Star. Each identity is checked against
a formula computed here, client by client, independently of the method's batched code."""

from __future__ import annotations

import numpy as np
import pytest

from fedtheory import iterate, make_method, run
from fedtheory.errors import FedTheoryError
from fedtheory.methods.base import round_context
from fedtheory.rates import q_order
from fedtheory.runner import run_batch
from fedtheory.testing import make_problem


def trajectory(problem, name, params, rounds, *, participation=None, theta0=None, seed=0):
    """theta^1 .. theta^rounds of a method, through the runner's loop."""
    method = make_method(name, params)
    return np.array(
        [
            np.asarray(s.state.theta)
            for s in iterate(
                problem,
                method,
                rounds=rounds,
                participation=participation,
                seed=seed,
                theta0=theta0,
            )
        ]
    )


def schedule(N, S, rounds, seed):
    rng = np.random.default_rng(seed)
    return [sorted(rng.choice(N, size=S, replace=False).tolist()) for _ in range(rounds)]


def one_client(problem, i, theta, **kw):
    """f_i, g_i, H_i of client i alone at theta."""
    o = problem.oracle(np.asarray(theta, dtype=float), np.array([i]), **kw)
    return tuple(None if a is None else np.asarray(a)[0] for a in o)


def close(a, b, tol):
    scale = 1.0 + max(np.abs(np.asarray(a)).max(), np.abs(np.asarray(b)).max())
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale)


# ----------------------------------------------------------------- FedPM with server memory


@pytest.mark.parametrize("objective", ["logistic", "ridge"])
@pytest.mark.parametrize(
    "params",
    [
        {"K": 1, "eta": 1.0},
        {"K": 3, "eta": 0.6},
        {"K": 2, "eta": 0.8, "delta": 0.1, "mixing_preconditioner": "end"},
    ],
)
def test_fedpm_server_memory_with_every_client_is_fedpm(objective, params):
    """S = N: every pair is refreshed every round, so the memory rule is FedPM's rule."""
    problem = make_problem(21, objective=objective, N=5, d=4, heterogeneity=2.0)
    theta0 = np.full(4, 0.3)
    a = trajectory(problem, "fedpm", params, 6, theta0=theta0)
    b = trajectory(problem, "fedpm", {**params, "server_memory": True}, 6, theta0=theta0)
    close(a, b, 1e-12)


def stochastic_newton(problem, theta0, sets):
    """Kovalev, Mishchenko, Richtarik 2019, Alg. 1, client by client: z_i is the last point
    client i saw (theta^0 for all at the start); each round the participants set z_i = theta,
    then theta+ = [sum_i w_i H_i(z_i)]^{-1} sum_i w_i (H_i(z_i) z_i - g_i(z_i)), over ALL N."""
    w = np.asarray(problem.weights)
    z = [np.array(theta0, dtype=float) for _ in range(problem.N)]
    theta, out = np.array(theta0, dtype=float), []
    for S in sets:
        for i in S:
            z[i] = theta.copy()
        H = np.zeros((problem.d, problem.d))
        rhs = np.zeros(problem.d)
        for i in range(problem.N):
            _, g_i, H_i = one_client(problem, i, z[i], grad=True, hess=True)
            H += w[i] * H_i
            rhs += w[i] * (H_i @ z[i] - g_i)
        theta = np.linalg.solve(H, rhs)
        out.append(theta)
    return np.array(out)


@pytest.mark.parametrize("objective", ["logistic", "ridge"])
def test_fedpm_server_memory_k1_eta1_is_the_stochastic_newton_step(objective):
    problem = make_problem(
        22, objective=objective, N=6, d=4, heterogeneity=2.0, weighting="samples"
    )
    sets = schedule(problem.N, 2, 8, seed=3)
    theta0 = np.linspace(-0.5, 0.5, 4)
    fedpm_pp = trajectory(
        problem, "fedpm", {"server_memory": True}, 8, participation=sets, theta0=theta0
    )
    close(fedpm_pp, stochastic_newton(problem, theta0, sets), 1e-10)
    # without memory the same rounds give another trajectory (the test can tell them apart)
    plain = trajectory(problem, "fedpm", {}, 8, participation=sets, theta0=theta0)
    assert np.abs(plain - fedpm_pp).max() > 1e-3


def fedpm_pp_reference(problem, theta0, sets, K, eta, delta):
    """FedPM-PP written client by client from docs/algorithms.md: each participant takes K
    local steps with P_i^k = H_i(x) + delta I and uploads P_i = P_i^{K-1} (its LAST step's)
    and v_i = P_i theta_i^K; the server keeps every client's last pair (all of them computed
    at theta^0 first) and mixes over all N with w_i."""
    w, d = np.asarray(problem.weights), problem.d

    def client(i, theta):
        x = np.array(theta, dtype=float)
        for _ in range(K):
            _, g, H = one_client(problem, i, x, grad=True, hess=True)
            P = H + delta * np.eye(d)
            x = x - eta * np.linalg.solve(P, g)
        return P, P @ x

    pairs = [client(i, theta0) for i in range(problem.N)]
    theta, out = np.array(theta0, dtype=float), []
    for S in sets:
        for i in S:
            pairs[i] = client(i, theta)
        theta = np.linalg.solve(
            sum(w[i] * pairs[i][0] for i in range(problem.N)),
            sum(w[i] * pairs[i][1] for i in range(problem.N)),
        )
        out.append(theta)
    return np.array(out)


@pytest.mark.parametrize("S", [2, 5])
@pytest.mark.parametrize("K, eta, delta", [(2, 1.0, 0.0), (3, 0.6, 0.1)])
def test_fedpm_server_memory_with_k_local_steps_matches_a_client_by_client_loop(S, K, eta, delta):
    """K > 1 pins down which preconditioner is mixed (the last local step's), with and without
    partial participation (S = N = 5 is plain FedPM)."""
    problem = make_problem(26, N=5, d=4, heterogeneity=2.0)
    sets = schedule(problem.N, S, 5, seed=7)
    theta0 = np.linspace(0.5, -0.5, 4)
    params = {"server_memory": True, "K": K, "eta": eta, "delta": delta}
    got = trajectory(problem, "fedpm", params, 5, participation=sets, theta0=theta0)
    close(got, fedpm_pp_reference(problem, theta0, sets, K, eta, delta), 1e-10)


def test_fedpm_server_memory_counts_the_initial_upload_once():
    problem = make_problem(23, N=5, d=3)
    d, sym = 3, 6
    trace = run(
        problem, make_method("fedpm", {"server_memory": True, "K": 2}), 3, participation=2, seed=0
    )
    up = trace["uplink_floats"] * problem.N
    assert up[1] == problem.N * (sym + d) + 2 * (sym + d)
    assert up[2] - up[1] == up[3] - up[2] == 2 * (sym + d)
    hess = trace["local_hess_evals"] * problem.N
    assert hess[1] == 2 * problem.N + 2 * 2  # K = 2 at init (all) and in round 1


def test_fedpm_server_memory_state_is_not_shared_between_rounds():
    """The round map is pure: applying it twice to one state gives one result."""
    problem = make_problem(24, N=5, d=3)
    method = make_method("fedpm", {"server_memory": True})
    state = method.start(problem, np.zeros(3))[0]
    ctx = round_context(problem, np.array([1, 3]))
    a, _ = method.round(ctx, state)
    b, _ = method.round(ctx, state)
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.P, b.P)
    assert not np.shares_memory(a.P, state.P)


def test_fedpm_server_memory_runs_batched_with_a_memory_per_run():
    """Each run of a batch keeps its own memory (B, N, d, d); a batch equals its seeds run one
    by one (also for every oracle: tests/test_batch_every_method.py)."""
    problem = make_problem(25, N=4, d=3)
    method = make_method("fedpm", {"server_memory": True})
    assert make_method("fedpm").batchable and method.batchable
    batch = run_batch(problem, method, 3, seeds=[0, 1], participation=2)
    for seed, trace in zip([0, 1], batch, strict=True):
        single = run(problem, method, 3, participation=2, seed=seed, drift_metrics=False)
        np.testing.assert_allclose(trace["dist_to_opt"], single["dist_to_opt"], rtol=1e-12)


# ----------------------------------------------------------------- theta* is a fixed point


def heterogeneous(objective="logistic", seed=31):
    return make_problem(seed, objective=objective, N=6, d=5, heterogeneity=2.0, lam=1e-2)


def fixed_point_gap(problem, name, params, participation=None, rounds=1):
    """max |theta^t - theta*| / max(1, ||theta*||) over ``rounds`` rounds from theta*. (One
    round says whether theta* is fixed; more would also test its stability, and GIANT's and
    DANE's full step is unstable on such heterogeneous problems: rounding then grows.)"""
    star = problem.reference.theta_star
    theta = trajectory(problem, name, params, rounds, participation=participation, theta0=star)
    return np.abs(theta - star).max() / max(1.0, np.linalg.norm(star))


@pytest.mark.parametrize("objective", ["logistic", "ridge"])
@pytest.mark.parametrize(
    "name, params, S",
    [
        ("giant", {}, None),
        ("giant", {"line_search": False}, None),
        ("dane", {}, None),
        ("dane", {"local_solver": "newton"}, None),
        ("dane", {"eta": 0.5, "mu_d": 0.3}, None),
        ("newton_star", {}, None),
        ("fedpm", {"server_memory": True}, 1),
        ("fedpm", {"server_memory": True}, 3),
        ("fedpm", {"server_memory": True, "eta": 0.5}, 2),
    ],
)
def test_theta_star_is_a_fixed_point(objective, name, params, S):
    """One round from theta* stays there; FedPM-PP for three rounds of partial participation
    (K = 1: v_i = P_i theta* - eta g_i(theta*) and sum_i w_i g_i(theta*) = 0 over all N)."""
    problem = heterogeneous(objective)
    sets = None if S is None else schedule(problem.N, S, 3, seed=4)
    rounds = 1 if S is None else 3
    assert fixed_point_gap(problem, name, params, sets, rounds) <= 1e-12


def test_fedpm_server_memory_with_k_local_steps_keeps_theta_star_on_ridge_only():
    """K > 1: FedPM's own fixed point is biased on logistic (claim C10), memory or not; on
    ridge the local steps contract towards theta_i* exactly and theta* stays fixed."""
    params = {"server_memory": True, "K": 3, "eta": 0.5}
    sets = schedule(6, 2, 3, seed=4)
    assert fixed_point_gap(heterogeneous("ridge"), "fedpm", params, sets, 3) <= 1e-12
    assert fixed_point_gap(heterogeneous(), "fedpm", params, sets, 3) > 1e-4


@pytest.mark.parametrize("objective", ["logistic", "ridge"])
def test_the_fixed_point_problems_have_a_drift_floor(objective):
    """The problems above are heterogeneous enough: simple mixing and memoryless FedPM under
    partial participation move away from theta*."""
    problem = heterogeneous(objective)
    assert fixed_point_gap(problem, "sopm", {}) > 1e-3
    assert fixed_point_gap(problem, "fedpm", {}, schedule(problem.N, 2, 3, seed=4)) > 1e-3


# ----------------------------------------------------------------- GIANT


def giant_direction(problem, theta):
    """p = sum_i w_i H_i(theta)^{-1} g(theta), client by client (full participation)."""
    w = np.asarray(problem.weights)
    g = sum(w[i] * one_client(problem, i, theta)[1] for i in range(problem.N))
    return sum(
        w[i] * np.linalg.solve(one_client(problem, i, theta, grad=False, hess=True)[2], g)
        for i in range(problem.N)
    ), g


def test_giant_step_is_the_average_local_newton_direction_of_the_global_gradient():
    problem = heterogeneous()
    theta = np.linspace(-1, 1, problem.d)
    p, _ = giant_direction(problem, theta)
    got = trajectory(problem, "giant", {"line_search": False, "eta": 0.7}, 1, theta0=theta)[0]
    close(got, theta - 0.7 * p, 1e-12)


@pytest.mark.parametrize("where, backtracks", [("far", True), ("near", False)])
def test_giant_line_search_takes_the_first_armijo_step_from_eta(where, backtracks):
    """t = 0.5^j, the first with f(theta - t p) <= f(theta) - 1e-4 t g^T p: far from theta*
    the search backtracks, near it the full step passes."""
    problem = make_problem(35, N=6, d=5, heterogeneity=0.5, lam=1e-2, min_rows=60, max_rows=100)
    star = problem.reference.theta_star
    theta = np.full(problem.d, 3.0) if where == "far" else star + 0.05 * np.linalg.norm(star)
    p, g = giant_direction(problem, theta)
    f = problem.value
    t = 1.0
    while f(theta - t * p) > f(theta) - 1e-4 * t * (g @ p):
        t *= 0.5
    got = trajectory(problem, "giant", {}, 1, theta0=theta)[0]
    close(got, theta - t * p, 1e-12)
    assert (t < 1.0) == backtracks


def test_giant_reaches_the_float_floor_with_its_line_search():
    """Near theta* the Armijo test drowns in rounding; the step then stays as last searched,
    and GIANT still converges to theta* (on this problem the full step is unstable)."""
    problem = make_problem(32, N=6, d=5, heterogeneity=2.0, lam=1e-2)
    trace = run(problem, make_method("giant"), 400, target=1e-12, drift_metrics=False)
    assert trace.status == "reached_target"
    unstable = run(
        problem,
        make_method("giant", {"line_search": False}),
        60,
        theta0=problem.reference.theta_star + 1e-8,
        drift_metrics=False,
    )
    assert unstable.final["rel_dist"] > 1e-6


def test_giant_without_line_search_is_dane_on_quadratics():
    """On ridge both steps are theta - eta sum_i w_i H_i^{-1} g (Wang et al. 2018, Sec. 4)."""
    problem = heterogeneous("ridge")
    theta0 = np.linspace(0, 1, problem.d)
    a = trajectory(problem, "giant", {"line_search": False, "eta": 0.4}, 5, theta0=theta0)
    b = trajectory(problem, "dane", {"eta": 0.4}, 5, theta0=theta0)
    close(a, b, 1e-12)


# ----------------------------------------------------------------- DANE


def dane_residual(problem, theta, w_local, clients, eta, mu):
    """||grad_w of client i's DANE subproblem at w_i|| / (1 + ||g_i(theta)||), per client."""
    w = np.asarray(problem.weights)[clients]
    w = w / w.sum()
    g = sum(wi * one_client(problem, i, theta)[1] for wi, i in zip(w, clients, strict=True))
    out = []
    for i, wl in zip(clients, w_local, strict=True):
        gi_theta = one_client(problem, i, theta)[1]
        r = one_client(problem, i, wl)[1] - gi_theta + eta * g + mu * (wl - theta)
        out.append(np.linalg.norm(r) / (1 + np.linalg.norm(gi_theta)))
    return np.array(out)


@pytest.mark.parametrize("params", [{}, {"eta": 0.5, "mu_d": 0.2}, {"mu_d": 1.0}])
@pytest.mark.parametrize("clients", [None, [0, 2, 5]])
def test_dane_solves_its_local_subproblems_exactly(params, clients):
    problem = heterogeneous()
    method = make_method("dane", params)
    theta = np.linspace(-1, 1.5, problem.d)
    ctx = round_context(problem, None if clients is None else np.array(clients))
    new, info = method.round(ctx, method.start(problem, theta)[0])
    ids = list(range(problem.N)) if clients is None else clients
    res = dane_residual(problem, theta, np.asarray(info.theta_local), ids, method.eta, method.mu_d)
    assert res.max() <= 1e-10
    np.testing.assert_allclose(
        new.theta, np.asarray(ctx.weights) @ info.theta_local, rtol=0, atol=1e-14
    )


def test_dane_with_one_client_and_eta_one_minimises_f_in_one_round():
    """N = 1, eta = 1, mu_d = 0: the subproblem is f itself, so one round lands on theta*."""
    problem = make_problem(33, N=1, d=4, lam=1e-2)
    theta = trajectory(problem, "dane", {}, 1, theta0=np.full(4, 1.5))[0]
    star = problem.reference.theta_star
    assert np.linalg.norm(theta - star) <= 1e-10 * max(1.0, np.linalg.norm(star))


@pytest.mark.parametrize("params", [{}, {"eta": 0.3, "mu_d": 0.5}])
def test_dane_ridge_closed_form_equals_inner_newton_and_the_formula(params):
    problem = heterogeneous("ridge")
    theta0 = np.linspace(1, -1, problem.d)
    auto = trajectory(problem, "dane", params, 4, theta0=theta0)
    newton = trajectory(problem, "dane", {**params, "local_solver": "newton"}, 4, theta0=theta0)
    close(auto, newton, 1e-11)
    eta, mu = params.get("eta", 1.0), params.get("mu_d", 0.0)
    w = np.asarray(problem.weights)
    g = sum(w[i] * one_client(problem, i, theta0)[1] for i in range(problem.N))
    step = sum(
        w[i]
        * np.linalg.solve(
            one_client(problem, i, theta0, grad=False, hess=True)[2] + mu * np.eye(problem.d), g
        )
        for i in range(problem.N)
    )
    close(auto[0], theta0 - eta * step, 1e-12)


# ----------------------------------------------------------------- FOOF


def foof_matrix(problem, i, delta):
    A = np.asarray(problem.A)[i, : problem.sizes[i]]
    return A.T @ A / problem.sizes[i] + (problem.lam + delta) * np.eye(problem.d)


@pytest.mark.parametrize("name", ["fedpm", "sopm"])
@pytest.mark.parametrize("delta", [0.0, 0.3])
def test_foof_preconditioner_is_the_input_covariance(name, delta):
    problem = heterogeneous()
    method = make_method(name, {"preconditioner": "foof", "delta": delta, "K": 2})
    ctx = round_context(problem, np.array([1, 4]))
    _, info = method.round(ctx, method.start(problem, np.ones(problem.d))[0])
    for row, i in enumerate([1, 4]):
        close(info.P[row], foof_matrix(problem, i, delta), 1e-13)
    assert info.hess_evals == 0


@pytest.mark.parametrize("name", ["fedpm", "sopm"])
@pytest.mark.parametrize(
    "params", [{"K": 1, "eta": 1.0}, {"K": 3, "eta": 0.5}, {"K": 2, "eta": 0.7, "delta": 0.2}]
)
def test_foof_on_ridge_is_the_exact_hessian_method(name, params):
    """On ridge A_i^T A_i / n_i + lam I is the Hessian: FOOF changes nothing."""
    problem = heterogeneous("ridge")
    theta0 = np.linspace(-2, 2, problem.d)
    a = trajectory(problem, name, params, 5, theta0=theta0, participation=None)
    b = trajectory(problem, name, {**params, "preconditioner": "foof"}, 5, theta0=theta0)
    close(a, b, 1e-12)


def test_fedpm_foof_on_logistic_is_a_fixed_preconditioner_step():
    """K = 1: theta+ = theta - eta P^{-1} g(theta) with P = sum w_i P_i^FOOF: linear, with the
    error map I - eta P^{-1} H(theta*) near theta*."""
    problem = heterogeneous()
    theta = np.linspace(-1, 1, problem.d)
    w = np.asarray(problem.weights)
    P = sum(w[i] * foof_matrix(problem, i, 0.0) for i in range(problem.N))
    g = np.asarray(problem.global_oracle(theta).g)
    got = trajectory(problem, "fedpm", {"preconditioner": "foof", "eta": 0.9}, 1, theta0=theta)[0]
    close(got, theta - 0.9 * np.linalg.solve(P, g), 1e-12)
    exact = trajectory(problem, "fedpm", {"eta": 0.9}, 1, theta0=theta)[0]
    assert np.abs(exact - got).max() > 1e-3


# ----------------------------------------------------------------- Newton-Star


def test_newton_star_step_uses_the_hessian_at_the_solution():
    problem = heterogeneous()
    theta = np.linspace(-1, 1, problem.d)
    H_star = problem.global_oracle(problem.reference.theta_star, hess=True).H
    g = problem.global_oracle(theta).g
    got = trajectory(problem, "newton_star", {}, 1, theta0=theta)[0]
    close(got, theta - np.linalg.solve(H_star, g), 1e-12)


def test_newton_star_converges_quadratically_near_theta_star(a9a):
    ref = a9a.reference
    star = ref.theta_star
    theta0 = star + 0.5 * np.linalg.norm(star) / np.sqrt(a9a.d) * np.sign(np.sin(np.arange(a9a.d)))
    trace = run(a9a, make_method("newton_star"), 8, theta0=theta0, drift_metrics=False)
    e = trace["dist_to_opt"]
    scale = np.linalg.norm(star)
    floor = 1e3 * np.finfo(float).eps * scale
    window = [t for t in range(len(e) - 1) if e[t + 1] > floor]
    assert len(window) >= 3
    c = ref.L_H / (2 * ref.mu)
    for t in window:  # ||x+ - theta*|| <= (L_H / 2 mu) ||x - theta*||^2
        assert e[t + 1] <= c * e[t] ** 2
    fit = q_order(e, scale=scale)
    assert 1.8 <= fit.p <= 2.2, str(fit)


def test_newton_star_counts_the_hessians_at_the_solution_once():
    problem = make_problem(34, N=4, d=3)
    trace = run(problem, make_method("newton_star"), 3)
    up = trace["uplink_floats"] * problem.N
    assert up[1] == 4 * 6 + 4 * 3 and up[3] - up[2] == 4 * 3
    assert (trace["local_hess_evals"] * problem.N)[-1] == 4


# ----------------------------------------------------------------- bad hyperparameters

BAD = [
    ("fedpm", {"server_memory": "yes"}, "server_memory must be a bool, got 'yes'"),
    ("fedpm", {"server_memory": 1}, "server_memory must be True or False, got 1"),
    ("fedpm", {"preconditioner": "kfac"}, "preconditioner must be one of .*got 'kfac'"),
    ("sopm", {"preconditioner": "Foof"}, "preconditioner must be one of .*got 'Foof'"),
    ("sopm", {"local_search": 0.0}, "local_search must be True or False, got 0.0"),
    ("giant", {"eta": 0.0}, "eta must be a finite number > 0, got 0.0"),
    ("giant", {"eta": float("inf")}, "eta must be a finite number > 0, got inf"),
    ("giant", {"line_search": None}, "line_search must be True or False, got None"),
    ("dane", {"eta": -1.0}, "eta must be a finite number > 0, got -1.0"),
    ("dane", {"mu_d": -0.5}, "mu_d must be a finite number >= 0, got -0.5"),
    ("dane", {"mu_d": float("nan")}, "mu_d must be a finite number >= 0, got nan"),
    ("dane", {"local_solver": "cg"}, "local_solver must be one of .*got 'cg'"),
    ("newton_star", {"eta": 0.5}, "unknown parameter 'eta' for method newton_star"),
]


@pytest.mark.parametrize("name, params, message", BAD)
def test_bad_hyperparameters_are_refused_with_the_bad_value(name, params, message):
    with pytest.raises(FedTheoryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_method(name, params)


def test_cli_strings_reach_the_new_options():
    m = make_method("fedpm", {"server_memory": "true", "preconditioner": "foof"})
    assert m.server_memory is True and m.preconditioner == "foof"
    assert make_method("giant", {"line_search": "false"}).line_search is False
    assert make_method("dane", {"mu_d": "0.25"}).mu_d == 0.25
