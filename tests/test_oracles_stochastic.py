"""Stochastic oracles: the minibatch oracle is unbiased, samples only real rows and uses the
same rows for f, g and H; the Gaussian oracle adds noise of the requested variance; all
randomness comes from the run's generator; bad options are refused by name."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedtheory.errors import FedTheoryError
from fedtheory.methods import make_method
from fedtheory.objectives import ORACLES
from fedtheory.oracles import ORACLE_MODELS, Exact, Gaussian, Minibatch, make_oracle
from fedtheory.problem import FederatedProblem
from fedtheory.runner import run
from fedtheory.testing import make_problem

Z = 5.0  # tolerance in standard errors: a two-sided N(0, 1) exceeds 5 with prob. 5.7e-7


def draws(oracle, problem, theta, n, seed=0, clients=None, **what):
    rng = np.random.default_rng(seed)
    return [oracle(problem, theta, clients, rng=rng, **what) for _ in range(n)]


@pytest.mark.parametrize("objective", ["logistic", "ridge"])
def test_minibatch_estimates_are_unbiased(objective):
    """Mean of 3000 minibatch f, g, H (b = 2) against the exact values: every coordinate within
    Z = 5 standard errors of the mean (sample std / sqrt(3000), the CLT for an average of iid
    draws). With about 150 coordinates per problem, a false alarm has probability < 1e-4."""
    problem = make_problem(1, objective=objective, N=3, d=4, min_rows=2, max_rows=12)
    theta = np.random.default_rng(2).normal(size=problem.d)
    exact = problem.oracle(theta, value=True, grad=True, hess=True)
    outs = draws(
        make_oracle("minibatch", b=2), problem, theta, 3000, value=True, grad=True, hess=True
    )
    for field in ("f", "g", "H"):
        x = np.stack([getattr(o, field) for o in outs])
        se = x.std(axis=0, ddof=1) / math.sqrt(len(x))
        err = np.abs(x.mean(axis=0) - getattr(exact, field))
        assert (err <= Z * se + 1e-12).all(), field


def test_minibatch_samples_only_the_clients_real_rows():
    """A one-row client's minibatch objective is its exact objective, whatever the draw,
    although its padded array has zero rows that a careless sampler would pick."""
    rng = np.random.default_rng(3)
    Xs = [rng.normal(size=(1, 3)), rng.normal(size=(9, 3))]
    ys = [np.array([1.0]), np.where(rng.normal(size=9) > 0, 1.0, -1.0)]
    problem = FederatedProblem.from_clients(Xs, ys, objective="logistic", lam=0.1)
    theta = rng.normal(size=3)
    exact = problem.oracle(theta, [0], value=True, grad=True, hess=True)
    for o in draws(
        make_oracle("minibatch", b=5),
        problem,
        theta,
        50,
        clients=np.array([0]),
        value=True,
        grad=True,
        hess=True,
    ):
        np.testing.assert_allclose(o.f, exact.f, rtol=1e-14)
        np.testing.assert_allclose(o.g, exact.g, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(o.H, exact.H, rtol=1e-13, atol=1e-15)


def test_minibatch_uses_the_same_rows_for_f_g_and_h_and_keeps_lam_exact():
    """With b = 1 every call is the objective of one real row j of the client, regulariser
    included: find j from g, then f and H must be that same row's."""
    problem = make_problem(4, N=3, d=3, min_rows=4, max_rows=8, lam=0.3)
    A, y, sizes = np.asarray(problem.A), np.asarray(problem.y), problem.sizes
    theta = np.random.default_rng(5).normal(size=3)
    oracle = ORACLES[problem.objective]
    for o in draws(
        make_oracle("minibatch", b=1), problem, theta, 20, value=True, grad=True, hess=True
    ):
        for i in range(problem.N):
            rows = oracle(
                A[i, : sizes[i], None],
                y[i, : sizes[i], None],
                np.ones((sizes[i], 1)),
                problem.lam,
                theta,
            )
            j = int(np.argmin(np.abs(rows.g - o.g[i]).sum(axis=1)))
            np.testing.assert_allclose(o.g[i], rows.g[j], rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(o.f[i], rows.f[j], rtol=1e-13)
            np.testing.assert_allclose(o.H[i], rows.H[j], rtol=1e-13, atol=1e-15)


def test_gaussian_noise_has_the_requested_variance():
    """xi = g~ - g over 400 draws of N = 4 clients in d = 8: sum ||xi||^2 d / sigma^2 is
    chi-square with k = 400 * 4 * 8 = 12800 degrees of freedom (mean k, variance 2k); accept
    within Z = 5 of its standard deviations. The mean of xi is within Z standard errors of 0."""
    problem = make_problem(6, N=4, d=8)
    sigma = 0.7
    theta = np.random.default_rng(7).normal(size=problem.d)
    exact = problem.oracle(theta, value=True, grad=True, hess=True)
    outs = draws(
        make_oracle("gaussian", sigma=sigma), problem, theta, 400, value=True, grad=True, hess=True
    )
    xi = np.stack([o.g for o in outs]) - exact.g
    k = xi.size
    chi2 = float((xi**2).sum()) * problem.d / sigma**2
    assert abs(chi2 - k) <= Z * math.sqrt(2 * k)
    se = sigma / math.sqrt(problem.d) / math.sqrt(len(outs))
    assert (np.abs(xi.mean(axis=0)) <= Z * se).all()
    for o in outs[:5]:  # f and H stay exact
        np.testing.assert_array_equal(o.f, exact.f)
        np.testing.assert_array_equal(o.H, exact.H)


def test_gaussian_sigma_zero_is_exact_and_no_gradient_draws_nothing():
    problem = make_problem(8, N=3, d=4)
    theta = np.ones(4)
    rng = np.random.default_rng(0)
    o = make_oracle("gaussian", sigma=0.0)(
        problem, theta, None, value=False, grad=True, hess=False, rng=rng
    )
    np.testing.assert_array_equal(o.g, problem.oracle(theta).g)
    state = rng.bit_generator.state
    make_oracle("gaussian", sigma=1.0)(
        problem, theta, None, value=True, grad=False, hess=True, rng=rng
    )
    assert rng.bit_generator.state == state


@pytest.mark.parametrize("spec", [("minibatch", {"b": 3}), ("gaussian", {"sigma": 0.2})])
def test_stochastic_oracles_draw_everything_from_the_given_generator(spec):
    name, options = spec
    problem = make_problem(9, N=4, d=3)
    theta = np.zeros(3)
    oracle = make_oracle(name, **options)
    a = draws(oracle, problem, theta, 3, seed=11, grad=True, value=False, hess=False)
    b = draws(oracle, problem, theta, 3, seed=11, grad=True, value=False, hess=False)
    c = draws(oracle, problem, theta, 3, seed=12, grad=True, value=False, hess=False)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.g, y.g)
    assert not np.array_equal(a[0].g, c[0].g)


def test_subsets_of_clients_and_per_client_points():
    problem = make_problem(10, N=5, d=3)
    clients = np.array([1, 4])
    theta = np.random.default_rng(1).normal(size=(2, 3))
    for oracle in (make_oracle("minibatch", b=2), make_oracle("gaussian", sigma=0.1)):
        o = oracle(
            problem, theta, clients, value=True, grad=True, hess=True, rng=np.random.default_rng(0)
        )
        assert o.f.shape == (2,) and o.g.shape == (2, 3) and o.H.shape == (2, 3, 3)


def test_runs_accept_stochastic_oracles_and_record_them():
    problem = make_problem(11, N=4, d=3)
    for oracle, name in (
        (make_oracle("minibatch", b=8), "minibatch(b=8)"),
        (make_oracle("gaussian", sigma=0.1), "gaussian(sigma=0.1)"),
        ("minibatch", "minibatch(b=1)"),
    ):
        trace = run(problem, make_method("fedpac"), 3, participation=2, oracle=oracle)
        assert trace.status == "completed" and trace.meta["oracle"] == name


def test_oracle_registry():
    assert ORACLE_MODELS == {"exact": Exact, "minibatch": Minibatch, "gaussian": Gaussian}
    assert make_oracle("minibatch", b=8) == Minibatch(b=8)
    exact = Exact()
    assert make_oracle(exact) is exact


@pytest.mark.parametrize(
    "name,options,fragment",
    [
        ("minibatch", {"b": 0}, "got 0"),
        ("minibatch", {"b": -3}, "-3"),
        ("minibatch", {"b": 2.5}, "2.5"),
        ("minibatch", {"b": True}, "True"),
        ("gaussian", {"sigma": -0.1}, "-0.1"),
        ("gaussian", {"sigma": float("nan")}, "nan"),
        ("gaussian", {"sigma": float("inf")}, "inf"),
        ("gaussian", {"sigma": "big"}, "big"),
        ("minibatch", {"sigma": 1.0}, "sigma"),
        ("exact", {"b": 2}, "'b'"),
        ("noisy", {}, "noisy"),
    ],
)
def test_bad_oracle_options_are_refused_by_name(name, options, fragment):
    with pytest.raises(FedTheoryError, match=fragment):
        make_oracle(name, **options)


def test_options_with_an_oracle_object_are_refused():
    with pytest.raises(FedTheoryError, match="oracle name"):
        make_oracle(Exact(), b=3)


@pytest.mark.gpu
def test_numpy_and_cupy_see_identical_samples(cupy_gpu):
    cupy = cupy_gpu
    problem = make_problem(12, N=4, d=3)
    gpu = problem.to("cupy")
    theta = np.random.default_rng(0).normal(size=3)
    for oracle in (make_oracle("minibatch", b=4), make_oracle("gaussian", sigma=0.3)):
        a = oracle(
            problem, theta, None, value=True, grad=True, hess=True, rng=np.random.default_rng(5)
        )
        b = oracle(
            gpu,
            cupy.asarray(theta),
            None,
            value=True,
            grad=True,
            hess=True,
            rng=np.random.default_rng(5),
        )
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(cupy.asnumpy(y), x, rtol=1e-12, atol=1e-14)


@pytest.mark.gpu
@pytest.mark.parametrize("d,b", [(3, 1), (20, 11), (50, 8), (70, 40)])
def test_the_fused_minibatch_oracle_on_cupy_equals_numpys(d, b, cupy_gpu):
    """Without a Hessian, the logistic minibatch oracle on CuPy is one kernel reading the
    sampled rows in place (cuda_kernels.minibatch_logistic): its f and g equal NumPy's
    gathered computation to rounding, for one theta and for one theta per participant, each
    output alone and both."""
    cupy = cupy_gpu
    from fedtheory import cuda_kernels

    problem = make_problem(12, N=5, d=d, heterogeneity=1.0)
    gpu = problem.to("cupy")
    assert cuda_kernels.minibatch_fits(gpu.A, b)
    oracle = make_oracle("minibatch", b=b)
    gen = np.random.default_rng(1)
    # 4 participants (whole blocks of 4 warps), 5 = every client (clients None), 3 (a block
    # with idle warps)
    for clients in (np.array([0, 2, 3, 4]), None, np.array([1, 3, 4])):
        m = problem.N if clients is None else len(clients)
        for theta in (gen.normal(size=d), gen.normal(size=(m, d))):
            for value, grad in ((True, True), (True, False), (False, True)):
                kw = dict(value=value, grad=grad, hess=False)
                a = oracle(problem, theta, clients, rng=np.random.default_rng(5), **kw)
                c = oracle(gpu, cupy.asarray(theta), clients, rng=np.random.default_rng(5), **kw)
                assert c.H is None and (c.f is None) != value and (c.g is None) != grad
                for x, y in zip(a, c, strict=True):
                    if x is not None:  # O(1) terms, at most 40 + d of them: rounding < 1e-14
                        np.testing.assert_allclose(cupy.asnumpy(y), x, rtol=1e-13, atol=1e-14)
