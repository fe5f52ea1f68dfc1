"""The package against the spec-only reference implementation (tests/reference_impl.py).

Small logistic (and ridge) problems with UNEQUAL client sizes (so w_i = n_i / n differ, and
uniform averaging is a visible bug), alpha < 1, K > 1 and partial participation from an
explicit schedule (including a one-client round and a full round). Whole trajectories, through
:func:`fedtheory.iterate`, and every per-round metric column, through :func:`fedtheory.run`,
must agree with the reference to 1e-10 relative.

The data are generated here and handed to both sides (``FederatedProblem.from_clients`` and
``RefProblem``): the reference never reads the package's arrays.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference_impl
from reference_impl import (
    ARMIJO_C,
    RefProblem,
    ref_fednl_init,
    ref_fednl_round,
    ref_rows,
    ref_run,
    topk_sym,
)

from fedtheory import FederatedProblem, iterate, make_method, run

RTOL = 1e-10
ROUNDS = 8
SIZES = (3, 8, 15, 6, 24)  # unequal client sizes: w = (3, 8, 15, 6, 24) / 56
#: a partial-participation schedule over N = 5 clients: pairs, triples, one full round,
#: a one-client round
SCHEDULE = [[0, 2, 4], [1, 3], [0, 1, 2, 3, 4], [1, 4], [0, 2, 3], [3, 4], [0, 1], [2]]


def client_data(
    seed: int,
    *,
    objective: str = "logistic",
    sizes=SIZES,
    d: int = 4,
    shift: float = 1.0,
    sparse_frac: float = 0.0,
) -> tuple[list, list]:
    """Heterogeneous clients: shifted feature means and scales, client-specific label models.
    ``sparse_frac`` zeroes that fraction of the features (so the package may store them CSR)."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=d)
    Xs, ys = [], []
    for n in sizes:
        X = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, size=d) + shift * rng.normal(size=d)
        if sparse_frac:
            X = X * (rng.uniform(size=X.shape) >= sparse_frac)
        wi = w0 + shift * rng.normal(size=d)
        if objective == "logistic":
            y = np.where(X @ wi + 0.5 * rng.normal(size=n) >= 0, 1.0, -1.0)
        else:
            y = X @ wi + 0.1 * rng.normal(size=n)
        Xs.append(X)
        ys.append(y)
    return Xs, ys


PROBLEMS = {
    # ||theta*|| > 1: rel_dist = dist / ||theta*||
    "logistic": dict(seed=3, objective="logistic", lam=1e-2),
    # ||theta*|| < 1 (strong regularisation): rel_dist = dist / 1
    "logistic_small": dict(seed=4, objective="logistic", lam=0.7),
    "ridge": dict(seed=5, objective="ridge", lam=1e-2),
}
_CACHE: dict = {}


def pair(name: str, *, storage: str = "dense", weighting: str = "samples"):
    """(package problem, reference problem, reference solution) for a named problem."""
    key = (name, storage, weighting)
    if key not in _CACHE:
        spec = PROBLEMS[name]
        Xs, ys = client_data(
            spec["seed"],
            objective=spec["objective"],
            sparse_frac=0.7 if storage == "sparse" else 0.0,
        )
        problem = FederatedProblem.from_clients(
            Xs,
            ys,
            objective=spec["objective"],
            lam=spec["lam"],
            weighting=weighting,
            storage=storage,
            name=f"ref-{name}",
        )
        ref = RefProblem(Xs, ys, objective=spec["objective"], lam=spec["lam"], weighting=weighting)
        _CACHE[key] = (problem, ref, ref.solve())
    return _CACHE[key]


def close(got, want, *, rtol: float = RTOL, scale: float = 1.0) -> bool:
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    return float(np.linalg.norm(got - want)) <= rtol * max(scale, float(np.linalg.norm(want)))


# ------------------------------------------------------------------------------ objectives
@pytest.mark.parametrize("name", list(PROBLEMS))
@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_oracles_match_the_definitions(name, storage):
    problem, ref, _ = pair(name, storage=storage)
    rng = np.random.default_rng(0)
    for theta in (rng.normal(size=ref.d), 3 * rng.normal(size=ref.d)):
        o = problem.oracle(theta, value=True, grad=True, hess=True)
        for i in range(ref.N):
            assert abs(o.f[i] - ref.f(i, theta)) <= 1e-12 * max(1.0, abs(ref.f(i, theta)))
            assert close(o.g[i], ref.g(i, theta), rtol=1e-12)
            assert close(o.H[i], ref.H(i, theta), rtol=1e-12)
        glob = problem.global_oracle(theta, hess=True)
        assert abs(glob.f - ref.F(theta)) <= 1e-12 * max(1.0, abs(ref.F(theta)))
        assert close(glob.g, ref.G(theta), rtol=1e-12)
        assert close(glob.H, ref.HH(theta), rtol=1e-12)


@pytest.mark.parametrize("storage", ["dense", "sparse"])
@pytest.mark.parametrize("weighting", ["samples", "uniform"])
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_reference_solution_and_constants(name, weighting, storage):
    """theta*, f*, mu, L and the Hessian-Lipschitz bound L_H (with ||a_j||^3), for both
    storage layouts of the package (each has its own L_H code)."""
    problem, ref, sol = pair(name, weighting=weighting, storage=storage)
    assert problem.storage == storage
    got = problem.reference
    assert close(got.theta_star, sol["theta_star"], rtol=1e-10)
    assert math.isclose(got.f_star, sol["f_star"], rel_tol=1e-12)
    assert math.isclose(got.mu, sol["mu"], rel_tol=1e-9)
    assert math.isclose(got.L, sol["L"], rel_tol=1e-9)
    assert math.isclose(got.L_H, sol["L_H"], rel_tol=1e-12, abs_tol=0.0)
    if ref.objective == "logistic":
        # the features' norms are far from 1, so ||a||^2 and ||a||^3 give different bounds
        norms = np.concatenate([np.linalg.norm(X, axis=1) for X in ref.Xs])
        assert norms.max() > 2 and sol["L_H"] > 0


def test_problems_cover_both_sides_of_max_one():
    """rel_dist divides by max(1, ||theta*||): one problem on each side of 1."""
    assert np.linalg.norm(pair("logistic")[2]["theta_star"]) > 1.5
    assert np.linalg.norm(pair("logistic_small")[2]["theta_star"]) < 0.7


# ------------------------------------------------------------------------------ trajectories
PARTIAL, FULL = "partial", "full"
CASES = [
    ("newton", {"eta": 0.8}, PARTIAL),
    ("fedpm", {"K": 1, "eta": 1.0}, PARTIAL),
    ("fedpm", {"K": 3, "eta": 0.7}, PARTIAL),
    ("fedpm", {"K": 2, "eta": 0.9, "delta": 0.05}, FULL),
    ("fedpm", {"K": 3, "eta": 0.6, "mixing_preconditioner": "start"}, PARTIAL),
    ("fedpm", {"K": 2, "eta": 0.8, "mixing_preconditioner": "end"}, PARTIAL),
    ("sopm", {"K": 2, "eta": 0.8}, PARTIAL),
    ("sopm", {"K": 3, "eta": 1.8, "local_search": True}, PARTIAL),
    ("sopm", {"K": 2, "eta": 4.0, "local_search": True, "delta": 0.01}, FULL),
    ("fedpac", {"K": 3, "eta": 0.6, "beta": 0.3, "rho": 0.7}, PARTIAL),
    (
        "fedpac",
        {
            "K": 2,
            "eta": 0.5,
            "beta": 0.5,
            "rho": 0.9,
            "order": "use_then_update",
            "theta_init": "identity",
            "delta": 0.1,
        },
        PARTIAL,
    ),
    ("fedpac", {"K": 2, "eta": 0.7, "beta": 0.2, "rho": 0.5, "align": False}, PARTIAL),
    ("fedpac", {"K": 1, "eta": 1.0, "beta": 0.0, "rho": 0.0}, FULL),
    ("fednl", {"option": 1, "alpha": 0.5}, FULL),
    ("fednl", {"option": 2, "alpha": 0.7, "l_norm": "spectral"}, FULL),
    ("fednl", {"option": 2, "alpha": 0.6, "l_norm": "frobenius"}, FULL),
    ("fednl", {"option": 1, "compressor": "topK", "Kc": 3, "alpha": "rule1", "init": "zero"}, FULL),
    (
        "fednl",
        {"option": 2, "compressor": "topK", "Kc": 4, "alpha": 0.8, "l_norm": "spectral"},
        FULL,
    ),
    (
        "fednl",
        {"option": 2, "compressor": "rankR", "R": 2, "alpha": "rule1", "l_norm": "spectral"},
        FULL,
    ),
    ("fedsophia", {"K": 3, "eta": 0.1, "b1": 0.5, "b2": 0.8, "rho": 5.0, "tau": 2}, PARTIAL),
    (
        "fedsophia",
        {"K": 2, "eta": 0.05, "b1": 0.7, "b2": 0.9, "gamma": 0.5, "rho": 3.0, "keep_state": True},
        PARTIAL,
    ),
    ("fedsophia", {"K": 2}, FULL),
    ("fedprox", {"K": 3, "eta": 0.3, "mu_p": 0.5}, PARTIAL),
    ("fedavg", {"K": 3, "eta": 0.3}, PARTIAL),
    ("scaffold", {"K": 3, "eta": 0.3, "eta_g": 0.8}, PARTIAL),
    ("gd", {"eta": 0.5}, PARTIAL),
]


def _id(case) -> str:
    name, params, part = case
    return f"{name}-{part}-" + ",".join(f"{k}={v}" for k, v in params.items())


def _schedule(part: str) -> tuple[object, list]:
    """(the package's participation argument, the reference's per-round participants)."""
    if part == FULL:
        return None, [None] * ROUNDS
    return SCHEDULE, SCHEDULE


def _package_thetas(problem, name, params, part):
    participation, _ = _schedule(part)
    method = make_method(name, params)
    return [
        s.state.theta
        for s in iterate(problem, method, rounds=ROUNDS, participation=participation, seed=0)
    ]


@pytest.mark.parametrize("case", CASES, ids=_id)
@pytest.mark.parametrize("pname", ["logistic", "logistic_small"])
def test_trajectory_matches_reference(case, pname):
    name, params, part = case
    problem, ref, _ = pair(pname)
    got = _package_thetas(problem, name, params, part)
    want = ref_run(ref, name, params, _schedule(part)[1])
    for t, (a, r) in enumerate(zip(got, want, strict=True), start=1):
        assert close(a, r.theta), (
            f"round {t}: package {a} vs reference {r.theta} "
            f"(difference {np.linalg.norm(a - r.theta):.3e})"
        )


@pytest.mark.parametrize("case", [c for c in CASES if c[0] not in ("fednl",)], ids=_id)
def test_trajectory_matches_reference_on_ridge(case):
    name, params, part = case
    problem, ref, _ = pair("ridge")
    got = _package_thetas(problem, name, params, part)
    want = ref_run(ref, name, params, _schedule(part)[1])
    for t, (a, r) in enumerate(zip(got, want, strict=True), start=1):
        assert close(a, r.theta), f"round {t}: difference {np.linalg.norm(a - r.theta):.3e}"


@pytest.mark.parametrize("S", [1, 2, 4])
def test_seeded_draws_are_without_replacement_and_follow_the_reference(S):
    """participation = S: S distinct clients a round (drawn WITHOUT replacement), and the
    round map on the drawn participants is the reference's."""
    problem, ref, _ = pair("logistic")
    params = {"K": 2, "eta": 0.8}
    steps = list(iterate(problem, make_method("fedpm", params), rounds=12, participation=S, seed=7))
    drawn = [
        list(range(ref.N)) if s.ctx.clients is None else [int(c) for c in s.ctx.clients]
        for s in steps
    ]
    assert all(len(c) == S and len(set(c)) == S for c in drawn), drawn
    assert len({tuple(c) for c in drawn}) > 1  # the draw changes between rounds
    want = ref_run(ref, "fedpm", params, drawn)
    for s, r in zip(steps, want, strict=True):
        assert close(s.state.theta, r.theta)


# ------------------------------------------------------------------------------ metric rows
COUNT_COLUMNS = (
    "round",
    "participants",
    "uplink_floats",
    "downlink_floats",
    "bits",
    "local_grad_evals",
    "local_hess_evals",
)
#: absolute allowance of each float column on top of RTOL (rounding of quantities that go to
#: zero: distances and subopt at the float floor); ``scale`` multiplies by max(1, ||theta*||)
FLOAT_COLUMNS = {
    "dist_to_opt": 1e-11,
    "rel_dist": 1e-11,
    "subopt": 1e-13,
    "grad_norm": 1e-12,
    "drift": 1e-12,
    "rel_drift": 1e-12,
    "hess_gap": 1e-12,
    "grad_dissimilarity": 1e-12,
    "client_drift": 1e-12,
}


def _compare_rows(got: list[dict], want: list[dict], scale: float) -> list[str]:
    bad = []
    assert len(got) == len(want), f"{len(got)} rows, reference {len(want)}"
    for g, w in zip(got, want, strict=True):
        t = w["round"]
        for c in COUNT_COLUMNS:
            if g[c] != w[c]:
                bad.append(f"round {t} {c}: {g[c]!r} != reference {w[c]!r}")
        for c, atol in FLOAT_COLUMNS.items():
            a, b = float(g[c]), float(w[c])
            if math.isnan(b):
                if not math.isnan(a):
                    bad.append(f"round {t} {c}: {a!r}, reference NaN")
                continue
            allow = RTOL * abs(b) + atol * (scale if c == "dist_to_opt" else 1.0)
            if not abs(a - b) <= allow:
                bad.append(
                    f"round {t} {c}: {a!r} vs reference {b!r} "
                    f"(difference {abs(a - b):.3e} > {allow:.1e})"
                )
    return bad


@pytest.mark.parametrize("case", CASES, ids=_id)
@pytest.mark.parametrize("pname", ["logistic", "logistic_small"])
def test_metric_rows_match_reference(case, pname):
    """Every column of every row: distances (rel_dist with max(1, ||theta*||)), subopt,
    gradient norm, participants, cumulative counts per client, and the drift metrics
    (Pbar = sum w~_i P_i over the round's participants)."""
    name, params, part = case
    problem, ref, sol = pair(pname)
    participation, schedule = _schedule(part)
    trace = run(problem, make_method(name, params), ROUNDS, participation=participation, seed=0)
    assert trace.status == "completed"
    want = ref_rows(ref, sol, ref_run(ref, name, params, schedule))
    scale = max(1.0, float(np.linalg.norm(sol["theta_star"])))
    bad = _compare_rows(trace.rows, want, scale)
    assert not bad, "\n".join(bad[:12])


# ------------------------------------------------------------------------------ focused pins
def test_rel_dist_divides_by_max_one_norm_theta_star():
    problem, _, sol = pair("logistic_small")
    trace = run(problem, make_method("fedpm", {"K": 2, "eta": 0.5}), 3)
    dist, rel = trace["dist_to_opt"], trace["rel_dist"]
    assert np.linalg.norm(sol["theta_star"]) < 1
    np.testing.assert_array_equal(rel, dist)  # max(1, ||theta*||) = 1


LOCAL_SEARCH = [c for c in CASES if c[1].get("local_search")]


@pytest.mark.parametrize("case", LOCAL_SEARCH, ids=_id)
def test_local_search_cases_see_the_armijo_constant(case, monkeypatch):
    """The local-search cases above have power against a wrong Armijo constant: with
    c = 0.3 instead of 1e-4 the reference trajectory moves by far more than the tolerance,
    and the package, which must follow c = 1e-4, stays on the 1e-4 trajectory."""
    name, params, part = case
    problem, ref, _ = pair("logistic")
    schedule = _schedule(part)[1]
    want = [r.theta for r in ref_run(ref, name, params, schedule)]
    monkeypatch.setattr(reference_impl, "ARMIJO_C", 0.3)
    other = [r.theta for r in ref_run(ref, name, params, schedule)]
    assert max(np.linalg.norm(a - b) for a, b in zip(want, other, strict=True)) > 1e-3
    got = _package_thetas(problem, name, params, part)
    assert all(close(a, b) for a, b in zip(got, want, strict=True))
    assert ARMIJO_C == 1e-4


def test_fednl_option1_projects_onto_mu_equals_lam():
    """With init = "zero", H^0 = 0 and [0]_mu = lam I: the first step is -g / lam (a
    projection onto {X >= 0} would leave a singular matrix)."""
    problem, ref, _ = pair("logistic_small")
    steps = list(
        iterate(
            problem,
            make_method("fednl", {"option": 1, "init": "zero", "compressor": "topK", "Kc": 2}),
            rounds=1,
        )
    )
    want = -ref.G(np.zeros(ref.d)) / ref.lam
    assert close(steps[0].state.theta, want)
    st = ref_fednl_round(
        ref, ref_fednl_init(ref, np.zeros(ref.d), H_init="zero"), option=1, compressor="topK", Kc=2
    )
    assert close(st.theta, want)


def test_topk_breaks_ties_towards_the_larger_index():
    M = np.array([[1.0, 2.0, -2.0], [2.0, 0.5, 2.0], [-2.0, 2.0, 3.0]])
    from fedtheory.methods.fednl import top_k

    want = topk_sym(M, 2)  # 3 at (2, 2), then the tie at (1, 2)
    assert want[1, 2] == 2.0 and want[0, 2] == 0.0 and want[0, 1] == 0.0
    np.testing.assert_array_equal(top_k(M, 2), want)


def test_fednl_option2_default_norm_is_the_spec_spectral_norm():
    problem, ref, _ = pair("logistic")
    got = _package_thetas(problem, "fednl", {"option": 2, "alpha": 0.7}, FULL)
    want = ref_run(ref, "fednl", {"option": 2, "alpha": 0.7}, [None] * ROUNDS)
    assert all(close(a, r.theta) for a, r in zip(got, want, strict=True))


# ------------------------------------------------------------------------------ rate helpers
def test_rate_helpers_follow_their_definitions():
    """The figures the claims read, on sequences whose answers are known in closed form
    (docs/claims.md "Fitted order"): the float floor 1e3 eps max(1, ||theta*||); the step
    ratios e_(t+1)/e_t and the LAST one of the window (not the smallest); the linear ratio q of
    e_t = q^t e_0; the Q-order p of e_(t+1) = C e_t^p."""
    from fedtheory.rates import default_floor, linear_rate, q_order, superlinearity

    eps = np.finfo(np.float64).eps
    assert default_floor(0.5) == 1e3 * eps and default_floor(7.0) == 7e3 * eps
    e = np.array([1.0, 0.1, 0.05, 0.04])  # ratios 0.1, 0.5, 0.8
    sup = superlinearity(e, window=(0, 4))
    np.testing.assert_allclose(sup.ratios, [0.1, 0.5, 0.8], rtol=1e-14)
    assert sup.last_ratio == pytest.approx(0.8, rel=1e-14) and not sup.decreasing
    assert linear_rate(0.3 * 0.7 ** np.arange(8), window=(0, 8)).q == pytest.approx(0.7, rel=1e-12)
    quad = [0.5]
    for _ in range(4):
        quad.append(0.3 * quad[-1] ** 2)
    assert q_order(np.array(quad), window=(0, 5)).p == pytest.approx(2.0, rel=1e-12)
