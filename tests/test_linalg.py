"""The SPD-solve shim: Cholesky factors, batched substitutions, failures naming the client."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sl
from hypothesis import given
from hypothesis import strategies as st

from fedtheory.errors import FactorizationError
from fedtheory.linalg import _solve_tri, cho_solve, cholesky, spd_solve


def _spd(rng, m, d):
    X = rng.normal(size=(m, d + 3, d))
    return X.transpose(0, 2, 1) @ X + 0.1 * np.eye(d)


@given(st.integers(1, 40), st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_batched_substitutions_equal_scipy_matrix_by_matrix(m, d, seed):
    """Both the per-matrix path (m <= d) and the column-substitution path (m > d)."""
    rng = np.random.default_rng(seed)
    L = cholesky(_spd(rng, m, d))
    b = rng.normal(size=(m, d))
    for trans in (0, 1):
        ref = np.stack([sl.solve_triangular(L[i], b[i], lower=True, trans=trans) for i in range(m)])
        np.testing.assert_allclose(
            _solve_tri(L, b, trans), ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max()
        )


def test_cholesky_is_lower_and_reproduces_the_matrix(backend):
    rng = np.random.default_rng(1)
    P = _spd(rng, 30, 6)
    if backend == "cupy":
        import cupy

        L = cupy.asnumpy(cholesky(cupy.asarray(P)))
    else:
        L = cholesky(P)
    np.testing.assert_array_equal(np.triu(L, 1), 0.0)
    np.testing.assert_allclose(L @ L.transpose(0, 2, 1), P, rtol=1e-12)
    np.testing.assert_allclose(L, np.linalg.cholesky(P), rtol=1e-12, atol=1e-14)


def test_spd_solve_solves(backend):
    rng = np.random.default_rng(2)
    P, b = _spd(rng, 25, 5), rng.normal(size=(25, 5))
    if backend == "cupy":
        import cupy

        x = cupy.asnumpy(spd_solve(cupy.asarray(P), cupy.asarray(b)))
    else:
        x = spd_solve(P, b)
    np.testing.assert_allclose(np.einsum("bij,bj->bi", P, x), b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x, cho_solve(np.linalg.cholesky(P), b), rtol=1e-12)


@pytest.mark.parametrize("bad", [0, 7, 19])
def test_a_failed_factorisation_names_the_client(backend, bad):
    rng = np.random.default_rng(3)
    P = _spd(rng, 20, 4)
    P[bad] -= 100 * np.eye(4)
    labels = np.arange(100, 120)
    if backend == "cupy":
        import cupy

        P = cupy.asarray(P)
    with pytest.raises(FactorizationError, match=f"client {100 + bad} is not positive definite"):
        cholesky(P, labels=labels)


def _with_free_coordinates(rng, P, fraction):
    """Zero the rows and columns of a random subset of coordinates, keeping a positive
    diagonal: features that none of a client's rows uses."""
    P = P.copy()
    m, d = P.shape[:2]
    for k in range(m):
        free = np.flatnonzero(rng.random(d) < fraction)
        P[k, free, :] = 0.0
        P[k, :, free] = 0.0
        P[k, free, free] = rng.uniform(0.1, 2.0, free.size)
    return P


@given(
    st.integers(1, 30),
    st.integers(1, 12),
    st.sampled_from([0.0, 0.3, 0.7, 1.0]),
    st.integers(0, 2**32 - 1),
)
def test_decoupled_coordinates_solve_as_the_full_factorisation_would(m, d, fraction, seed):
    rng = np.random.default_rng(seed)
    P = _with_free_coordinates(rng, _spd(rng, m, d), fraction)
    b = rng.normal(size=(m, d))
    x = spd_solve(P, b)
    ref = np.linalg.solve(P, b[..., None])[..., 0]
    np.testing.assert_allclose(x, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())


def test_only_the_upper_triangle_is_read_couplings_included():
    """A coupling stored only above the diagonal, in the column of a coordinate whose row is
    empty right of the diagonal, still couples it (the matrix is read as LAPACK reads it)."""
    P = np.diag([2.0, 3.0, 4.0])
    P[0, 2] = 1.0  # upper only; P[2, 0] stays 0
    b = np.array([1.0, 2.0, 3.0])
    S = np.triu(P) + np.triu(P, 1).T
    np.testing.assert_allclose(spd_solve(P, b), np.linalg.solve(S, b), rtol=1e-14)
    np.testing.assert_allclose(spd_solve(P[None], b[None])[0], np.linalg.solve(S, b), rtol=1e-14)


def test_a_decoupled_coordinate_that_is_not_positive_names_the_client():
    rng = np.random.default_rng(4)
    P = _with_free_coordinates(rng, _spd(rng, 6, 5), 0.0)
    P[3, 2, :] = P[3, :, 2] = 0.0
    P[3, 2, 2] = -1.0
    with pytest.raises(FactorizationError, match="client 13 is not positive definite"):
        spd_solve(P, rng.normal(size=(6, 5)), labels=np.arange(10, 16))


@pytest.mark.parametrize("r", [1, 4])
def test_one_matrix_solves_several_right_hand_sides(r):
    rng = np.random.default_rng(5)
    P, b = _spd(rng, 1, 7)[0], rng.normal(size=(r, 7))
    np.testing.assert_allclose(spd_solve(P, b), np.linalg.solve(P, b.T).T, rtol=1e-11)
    L = cholesky(P)
    np.testing.assert_allclose(cho_solve(L, b), np.linalg.solve(P, b.T).T, rtol=1e-11)
    np.testing.assert_allclose(spd_solve(P, b[0]), np.linalg.solve(P, b[0]), rtol=1e-11)


def test_the_factorisation_leaves_its_input_alone():
    rng = np.random.default_rng(6)
    P = _spd(rng, 5, 4)
    keep = P.copy()
    cholesky(P)
    spd_solve(P, rng.normal(size=(5, 4)))
    np.testing.assert_array_equal(P, keep)


def test_deferred_checks_raise_at_the_check_naming_the_client(backend):
    """Inside DeferredChecks.active() a CuPy factorisation leaves its status on the device and
    check() raises the error naming the client (NumPy raises at once, as without it); a 2-d
    factor from the deferred path equals the immediate one."""
    from fedtheory.linalg import DeferredChecks

    rng = np.random.default_rng(5)
    P = _spd(rng, 12, 4)
    P[9] -= 100 * np.eye(4)
    good = _spd(rng, 1, 5)[0]
    labels = np.arange(40, 52)
    if backend == "cupy":
        import cupy

        P, good = cupy.asarray(P), cupy.asarray(good)
    checks = DeferredChecks()
    if backend == "numpy":
        with checks.active(), pytest.raises(FactorizationError, match="client 49 is not"):
            cholesky(P, labels=labels)
        return
    with checks.active():
        cholesky(P, labels=labels)  # no error yet: the status stays on the device
        L = cholesky(good)
    np.testing.assert_allclose(cupy.asnumpy(L), cupy.asnumpy(cholesky(good)), rtol=1e-12)
    with pytest.raises(FactorizationError, match="client 49 is not positive definite"):
        checks.check()
    checks.check()  # checked once: nothing pending any more


def test_a_run_logging_every_k_rounds_still_names_the_client(backend):
    """With log_every = 4 a GPU run synchronises only at logged rounds; a singular client
    Hessian is still an error naming the client, raised by the run."""
    from fedtheory import make_method, run
    from fedtheory.problem import FederatedProblem

    rng = np.random.default_rng(0)
    Xs = [rng.normal(size=(6, 3)), rng.normal(size=(1, 3)), rng.normal(size=(6, 3))]
    ys = [rng.normal(size=len(X)) for X in Xs]
    problem = FederatedProblem.from_clients(Xs, ys, objective="ridge", lam=0.0).to(backend)
    with pytest.raises(FactorizationError, match="client 1 is not positive definite"):
        run(problem, make_method("fedpm"), 10, log_every=4)
