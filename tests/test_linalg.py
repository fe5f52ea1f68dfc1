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
        ref = np.stack([sl.solve_triangular(L[i], b[i], lower=True, trans=trans)
                        for i in range(m)])
        np.testing.assert_allclose(_solve_tri(L, b, trans), ref, rtol=1e-10,
                                   atol=1e-12 * np.abs(ref).max())


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
