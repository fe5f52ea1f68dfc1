"""One code path on NumPy and CuPy: same oracles, same trajectories, same errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fedtheory import make_method, run
from fedtheory._backend import to_numpy
from fedtheory.errors import FactorizationError
from fedtheory.problem import FederatedProblem
from fedtheory.runner import run_batch
from fedtheory.testing import make_problem

COMPARED = (
    "dist_to_opt",
    "subopt",
    "grad_norm",
    "drift",
    "hess_gap",
    "grad_dissimilarity",
    "client_drift",
)


def test_the_numpy_path_never_imports_cupy():
    code = (
        "import sys, fedtheory as ft; from fedtheory.testing import make_problem; "
        "p = make_problem(0); ft.run(p, ft.make_method('fedpac'), 2, participation=2); "
        "from fedtheory.runner import run_batch; "
        "run_batch(p, ft.make_method('fedpm'), 2, seeds=[0, 1]); "
        "assert 'cupy' not in sys.modules, 'cupy was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("objective", ["logistic", "ridge"])
def test_oracles_agree_with_numpy(backend, objective):
    host = make_problem(3, objective=objective, N=5, d=4)
    problem = host.to(backend)
    assert problem.backend == backend
    theta = np.linspace(-1, 1, 4)
    a = host.oracle(theta, value=True, grad=True, hess=True)
    b = problem.oracle(problem.xp.asarray(theta), value=True, grad=True, hess=True)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(to_numpy(y), x, rtol=1e-12, atol=1e-14)
    G = problem.global_oracle(problem.xp.asarray(theta), hess=True)
    np.testing.assert_allclose(
        to_numpy(G.H), host.global_oracle(theta, hess=True).H, rtol=1e-12, atol=1e-14
    )


@pytest.mark.parametrize(
    "name,params",
    [
        ("newton", {"eta": 0.8}),
        ("fedpm", {"K": 2}),
        ("sopm", {"K": 2, "eta": 0.7}),
        ("fedpac", {"K": 2, "eta": 0.5}),
        ("fednl", {"compressor": "rankR", "R": 2}),
    ],
)
def test_trajectories_agree_between_backends(backend, name, params):
    host = make_problem(21, N=6, d=5, heterogeneity=1.0)
    method = make_method(name, params)
    S = None if name == "fednl" else 3
    a = run(host, method, 8, participation=S, seed=4)
    b = run(host.to(backend), method, 8, participation=S, seed=4)
    assert b.meta["backend"] == backend and len(a) == len(b)
    for ra, rb in zip(a.rows, b.rows, strict=True):
        for c in COMPARED:
            np.testing.assert_allclose(rb[c], ra[c], rtol=1e-10, atol=1e-13, err_msg=c)


def test_batched_runs_agree_between_backends(backend):
    host = make_problem(22, N=8, d=4)
    method = make_method("fedpac", {"K": 2, "eta": 0.5})
    a = run_batch(host, method, 5, seeds=range(4), participation=3)
    b = run_batch(host.to(backend), method, 5, seeds=range(4), participation=3)
    for ta, tb in zip(a, b, strict=True):
        np.testing.assert_allclose(tb["dist_to_opt"], ta["dist_to_opt"], rtol=1e-10)


def test_failed_factorisation_raises_naming_the_client(backend):
    rng = np.random.default_rng(0)
    Xs = [rng.normal(size=(6, 3)), rng.normal(size=(1, 3)), rng.normal(size=(6, 3))]
    ys = [rng.normal(size=len(X)) for X in Xs]
    problem = FederatedProblem.from_clients(Xs, ys, objective="ridge", lam=0.0).to(backend)
    with pytest.raises(FactorizationError, match="client 1 is not positive definite"):
        run(problem, make_method("fedpm"), 1)
