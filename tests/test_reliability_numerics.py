"""Numerical faults (issue 7.2): divergence ends a run at the round it happens with the rows
before it kept; a preconditioner that is not positive definite is a clear error that only the
documented damping delta gets around; an ill-conditioned problem warns with its kappa."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pytest

from fedtheory import make_method, run
from fedtheory.cli import main
from fedtheory.errors import ConditioningWarning, FactorizationError, FedTheoryError
from fedtheory.methods import Method, RoundInfo
from fedtheory.oracles import make_oracle
from fedtheory.problem import KAPPA_WARN, FederatedProblem
from fedtheory.testing import make_problem

FINITE_COLUMNS = ("dist_to_opt", "rel_dist", "subopt", "grad_norm", "uplink_floats")


# ----------------------------------------------------------------------------- divergence


class Step(NamedTuple):
    theta: Any
    t: int


@dataclass(frozen=True)
class Expand(Method):
    """theta^t = theta* + factor (theta^{t-1} - theta*): the error grows by ``factor`` a round."""

    name: ClassVar[str] = "expand"
    factor: float = 10.0

    def start(self, problem, theta0):
        return Step(theta0, 0), RoundInfo(0, 0, 0, 0)

    def round(self, ctx, state):
        star = ctx.problem.xp.asarray(ctx.problem.reference.theta_star)
        return Step(star + self.factor * (state.theta - star), state.t + 1), RoundInfo(0, 0, 0, 0)


@dataclass(frozen=True)
class BadAt(Method):
    """Gradient descent whose iterate becomes ``value`` (NaN or +-inf) at round ``at``."""

    name: ClassVar[str] = "bad_at"
    at: int = 3
    value: float = math.nan

    def start(self, problem, theta0):
        return Step(theta0, 0), RoundInfo(0, 0, 0, 0)

    def round(self, ctx, state):
        t = state.t + 1
        theta = state.theta - 0.1 * ctx.mix(ctx.eval(state.theta).g)
        if t == self.at:
            theta = theta * self.value
        return Step(theta, t), RoundInfo(0, 0, ctx.m, 0)


class NanOracle:
    """The exact oracle, except that its gradients are NaN from call number ``at`` on."""

    name = "nan_oracle"

    def __init__(self, at: int):
        self.at, self.calls = at, 0

    def __call__(self, problem, theta, clients, *, value, grad, hess, rng):
        self.calls += 1
        out = problem.oracle(theta, clients, value=value, grad=grad, hess=hess)
        if self.calls >= self.at and out.g is not None:
            out = out._replace(g=out.g * math.nan)
        return out


def _kept_rows_are_clean(trace, n_rows):
    assert trace.status == "diverged"
    assert trace.meta["status"] == "diverged"
    assert len(trace) == n_rows
    assert list(trace["round"]) == list(range(n_rows))
    for column in FINITE_COLUMNS:
        assert np.isfinite(trace[column]).all(), column


# the runner evaluates the metrics at the bad iterate before it stops: NumPy warns there
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("at", [1, 3])
def test_a_nan_or_inf_iterate_at_round_t_ends_the_run_there_keeping_rows_before(value, at):
    problem = make_problem(4, N=3, d=3)
    trace = run(problem, BadAt(at=at, value=value), 10)
    _kept_rows_are_clean(trace, at)  # rows 0 .. at-1; round `at` not written
    clean = run(problem, BadAt(at=99), at - 1)
    np.testing.assert_array_equal(trace["dist_to_opt"], clean["dist_to_opt"])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_an_oracle_that_returns_nan_at_round_3_ends_the_run_at_round_3():
    """GD calls its oracle once a round, so call 3 is round 3; FedPM calls it more often but
    its first NaN gradient still poisons the iterate of the round it happens in."""
    problem = make_problem(5, N=4, d=3)
    trace = run(problem, make_method("gd", {"eta": 0.1}), 10, oracle=NanOracle(at=3))
    _kept_rows_are_clean(trace, 3)
    exact = run(problem, make_method("gd", {"eta": 0.1}), 2, oracle=make_oracle("exact"))
    np.testing.assert_array_equal(trace["dist_to_opt"], exact["dist_to_opt"])
    fedpm = run(problem, make_method("fedpm", {"K": 2}), 10, oracle=NanOracle(at=3))
    _kept_rows_are_clean(fedpm, 2)  # calls 1-2 are round 1, call 3 round 2


@pytest.mark.parametrize("diverge_factor", [1e3, 1e8])
def test_an_error_growing_past_the_bound_ends_the_run_at_the_first_round_beyond_it(diverge_factor):
    """Bound: diverge_factor * max(1, ||theta*||, ||theta^0 - theta*||) (runner.py docstring).
    With the error multiplied by 10 a round, the run stops at the first t with
    10^t e_0 > bound and keeps rows 0 .. t-1, the last of them within the bound."""
    problem = make_problem(6, objective="ridge", N=3, d=4)
    star = problem.reference.theta_star
    theta0 = star + np.full(4, 0.5)
    e0 = float(np.linalg.norm(theta0 - star))
    bound = diverge_factor * max(1.0, float(np.linalg.norm(star)), e0)
    first_beyond = next(t for t in range(1, 100) if 10.0**t * e0 > bound)
    trace = run(problem, Expand(), 100, theta0=theta0, diverge_factor=diverge_factor)
    _kept_rows_are_clean(trace, first_beyond)
    np.testing.assert_allclose(
        trace["dist_to_opt"], e0 * 10.0 ** np.arange(first_beyond), rtol=1e-6
    )
    assert trace["dist_to_opt"][-1] <= bound


def test_a_run_within_the_bound_completes():
    problem = make_problem(6, objective="ridge", N=3, d=4)
    trace = run(problem, Expand(factor=1.5), 5, theta0=np.ones(4))
    assert trace.status == "completed" and len(trace) == 6


# ----------------------------------------------------------------------------- preconditioners


def _rank_deficient_clients(d=4, N=4, rows=2, seed=0):
    """Ridge with lam = 0 and every client holding fewer rows than d: each client Hessian is
    singular while the global one (N * rows >= d rows in all) is positive definite."""
    rng = np.random.default_rng(seed)
    Xs = [rng.standard_normal((rows, d)) for _ in range(N)]
    ys = [X @ rng.standard_normal(d) for X in Xs]
    return FederatedProblem.from_clients(Xs, ys, objective="ridge", lam=0.0, name="rankdef")


@pytest.mark.parametrize("method", ["fedpm", "sopm"])
def test_a_singular_local_preconditioner_is_an_error_naming_the_client_and_delta(method):
    problem = _rank_deficient_clients()
    assert problem.reference.mu > 0
    with pytest.raises(
        FactorizationError, match=r"preconditioner of client 0 is not positive definite.*delta > 0"
    ):
        run(problem, make_method(method), 3)


@pytest.mark.parametrize("method", ["fedpm", "sopm"])
def test_damping_delta_is_the_documented_way_around_a_singular_preconditioner(method):
    problem = _rank_deficient_clients()
    trace = run(problem, make_method(method, {"delta": 1e-2, "eta": 0.5}), 30)
    assert trace.status == "completed"
    assert np.isfinite(trace["dist_to_opt"]).all()
    assert trace["dist_to_opt"][-1] < trace["dist_to_opt"][0]


# ----------------------------------------------------------------------------- conditioning


def _ridge_with_condition_number(
    kappa: float, N: int = 2, n: int = 6, d: int = 4, seed: int = 0
) -> FederatedProblem:
    """Ridge (lam = 0) whose clients share the Hessian R diag(s) R^T, s geometric from 1 down
    to 1/kappa: the global Hessian has condition number kappa (up to rounding)."""
    rng = np.random.default_rng(seed)
    s = np.geomspace(1.0, 1.0 / kappa, d)
    R, _ = np.linalg.qr(rng.standard_normal((d, d)))
    Xs, ys = [], []
    for _ in range(N):
        Q, _ = np.linalg.qr(rng.standard_normal((n, d)))
        X = math.sqrt(n) * (Q * np.sqrt(s)) @ R.T
        Xs.append(X)
        ys.append(X @ rng.standard_normal(d))
    return FederatedProblem.from_clients(
        Xs, ys, objective="ridge", lam=0.0, name=f"kappa{kappa:.0e}"
    )


@pytest.mark.parametrize("kappa", [1e10, 1e12])
def test_an_ill_conditioned_problem_warns_with_its_kappa_and_the_accuracy_floor(kappa):
    problem = _ridge_with_condition_number(kappa)
    with pytest.warns(ConditioningWarning) as record:
        ref = problem.reference
    assert len(record) == 1
    assert ref.kappa == pytest.approx(kappa, rel=1e-3)
    msg = str(record[0].message)
    assert f"kappa = L/mu = {ref.kappa:.3g}" in msg
    assert f"kappa * eps = {ref.kappa * np.finfo(float).eps:.1e} relative" in msg
    assert problem.name in msg and "rounding, not convergence" in msg
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert problem.reference is ref  # cached: warned once per problem


@pytest.mark.parametrize("kappa", [1e2, KAPPA_WARN / 10])
def test_a_well_conditioned_problem_does_not_warn(kappa):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConditioningWarning)
        assert _ridge_with_condition_number(kappa).reference.kappa < KAPPA_WARN


def test_the_cli_prints_the_conditioning_warning_as_one_line_and_runs(tmp_path, capsys):
    spec = tmp_path / "illcond.toml"
    spec.write_text(
        'name = "illcond"\n[data]\nsource = "heterogeneous_quadratic"\n'
        "clients = 1\nd = 3\nn_per_client = 5\nmu = 1e-10\nL = 1.0\nseed = 0\n"
        '[objective]\nkind = "ridge"\nlam = 0.0\n'
    )
    assert main(["run", str(spec), "--method", "newton", "--rounds", "2"]) == 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("fedtheory: warning: ConditioningWarning: illcond: ")
    assert "kappa = L/mu = 1e+10" in lines[0]
    assert "status completed" in captured.out


# ----------------------------------------------------------------------------- certified reference
# (issue 17 item 2) The reference solver certifies theta* (finite, ||grad f|| within the
# tolerance, mu > 0) or refuses; it never hands a made-up or NaN optimum to a run.


def _separable_logistic(lam: float, seed: int = 0) -> FederatedProblem:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((40, 3))
    y = np.where(X @ rng.standard_normal(3) >= 0, 1.0, -1.0)  # linearly separable
    return FederatedProblem.from_dataset(
        X, y, [np.arange(20), np.arange(20, 40)], objective="logistic", lam=lam, name="separable"
    )


def test_separable_logistic_with_lam_zero_is_refused_naming_lam():
    """theta* does not exist: ||theta|| grows without bound while the gradient decays, so the
    old solver reported ||theta*|| ~ 236 with mu ~ 1e-14 (kappa ~ 11, no warning)."""
    problem = _separable_logistic(0.0)
    with pytest.raises(FedTheoryError, match=r"separable.*lam = 0|lam = 0.*separable") as exc:
        _ = problem.reference
    assert "no minimiser" in str(exc.value) and "use lam > 0" in str(exc.value)
    with pytest.raises(FedTheoryError, match="no minimiser"):
        run(problem, make_method("gd"), 2)  # refused before any row is written


def test_separable_logistic_with_lam_positive_is_certified():
    ref = _separable_logistic(1e-3).reference
    assert ref.mu >= 1e-3 and ref.grad_norm <= 1e-13 * 10


def _huge_feature_problem() -> FederatedProblem:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((20, 3))
    X[0, 0] = 1e300
    y = np.where(rng.random(20) < 0.5, 1.0, -1.0)
    return FederatedProblem.from_dataset(
        X, y, [np.arange(10), np.arange(10, 20)], objective="logistic", lam=1e-3, name="huge"
    )


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_feature_of_1e300_is_refused_before_any_run():
    """The old solver returned a NaN-laden reference (grad_norm = inf, mu = nan) and the run
    ended 'diverged' with grad_norm = inf in row 0."""
    problem = _huge_feature_problem()
    with pytest.raises(FedTheoryError, match=r"not finite.*overflow.*1e\+300.*rescale"):
        _ = problem.reference
    with pytest.raises(FedTheoryError, match="overflow"):
        run(problem, make_method("gd"), 2)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_feature_of_1e300_through_the_cli_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "data.svm").write_text("+1 1:1e300 2:1\n-1 1:1 2:2\n+1 1:-1 2:1\n-1 2:-3\n")
    spec = tmp_path / "p.toml"
    spec.write_text(
        'name = "huge"\n[data]\nsource = "libsvm"\npath = "data.svm"\n'
        '[partition]\nkind = "contiguous"\nclients = 2\n'
        '[objective]\nkind = "logistic"\nlam = 1e-3\n'
    )
    out = tmp_path / "out.csv"
    assert main(["run", str(spec), "--method", "gd", "--rounds", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedtheory: error: ") and "\n" not in err, err
    assert "overflow" in err and "internal error" not in err
    assert not out.exists()


def _independent_newton(problem: FederatedProblem) -> np.ndarray:
    """Plain Newton on sum_i w_i (1/n_i) sum_j log(1 + exp(-y a^T theta)) + lam/2 ||theta||^2,
    written from the definition, on the clients' dense rows."""
    A, y, sw = problem.A, problem.y, problem.sw
    w = (np.asarray(problem.weights)[:, None] * sw).ravel()  # one weight per row
    A2, y2 = A.reshape(-1, problem.d), y.ravel()
    theta = np.zeros(problem.d)
    for _ in range(50):
        z = y2 * (A2 @ theta)
        s = 1.0 / (1.0 + np.exp(z))  # sigma(-z)
        g = -(A2.T @ (w * y2 * s)) + problem.lam * theta
        H = (A2.T * (w * s * (1 - s))) @ A2 + problem.lam * np.eye(problem.d)
        theta = theta - np.linalg.solve(H, g)
    return theta


def test_a_well_posed_problem_keeps_its_reference():
    """Saved values from before the certification (make_problem(3, N=3, d=4)), and an
    independent Newton."""
    problem = make_problem(3, N=3, d=4)
    ref = problem.reference
    saved = [1.955829865618266, -1.6247282733198023, 0.07479869772010339, -0.5113860924394207]
    np.testing.assert_allclose(ref.theta_star, saved, rtol=1e-12, atol=1e-14)
    assert ref.f_star == pytest.approx(0.2508129506868055, rel=1e-14)
    assert ref.newton_iters == 7 and 0 < ref.mu <= ref.L
    np.testing.assert_allclose(ref.theta_star, _independent_newton(problem), rtol=1e-10)
    ridge = make_problem(3, objective="ridge", N=3, d=4).reference
    np.testing.assert_allclose(
        ridge.theta_star,
        [2.7265611068958244, -2.410671634155549, -0.22861951818242804, -1.3469386695217445],
        rtol=1e-12,
    )
