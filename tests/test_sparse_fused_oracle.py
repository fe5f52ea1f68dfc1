"""The fused sparse logistic oracle (kernels.csr_logistic) against the unfused computation.

For sparse data :func:`fedtheory.objectives.logistic` makes one compiled pass over each
client's rows (margin, logistic terms, gradient and Gram products per row). Here it is checked
against the unfused kernels it replaces (``margins`` + ``_logistic_terms`` + ``rmatvec`` +
``gram``) on random clients: unequal sizes (empty clients included), empty rows, binary and
real values, repeated clients, rows with repeated columns (a CSR with duplicates: the kernels'
one-non-zero-at-a-time path), rows and clients of weight 0, margins up to |z| = 1e3, every
combination of the flags and the weighted-sum Hessian. The two compute the logistic terms by
different formulas (one exp and a division against NumPy's four transcendental calls) and may
differ by a few ulps per row (sigmoid(-t) by about |t| ulps).
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtheory.objectives import ClientCSR, _logistic_terms, _reg, gram, logistic, margins, rmatvec

REL = 1e-13


def _unfused(A, y, sw, lam, theta, value, grad, hess, hess_weights):
    loss, gw, hw = _logistic_terms(margins(A, theta), y, sw, np)
    r_val, r_grad = _reg(theta, A.shape[0], lam, np)
    return (
        np.sum(sw * loss, axis=1) + r_val if value else None,
        r_grad - rmatvec(A, gw) if grad else None,
        gram(A, hw, lam, hess_weights) if hess else None,
    )


def _close(a, b):
    """max |a - b| <= REL * max |b| (normwise relative; exact when b is zero)."""
    assert a.shape == b.shape
    assert np.all(np.isfinite(a))
    assert np.max(np.abs(a - b), initial=0.0) <= REL * np.max(np.abs(b), initial=0.0)


@st.composite
def problems(draw):
    """Random sparse clients in a ClientCSR, labels, row weights, a point and a scale."""
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    d = draw(st.integers(1, 14))
    N = draw(st.integers(1, 6))
    sizes = rng.integers(0, 12, size=N)
    density = draw(st.sampled_from([0.05, 0.3, 0.8]))
    values = draw(st.sampled_from(["binary", "real", "mixed"]))
    n = int(sizes.sum())
    X = rng.normal(size=(n, d)) * (rng.random((n, d)) < density)
    if values == "binary":
        X = (X != 0).astype(np.float64)
    elif values == "mixed":
        b = rng.random(n) < 0.5
        X[b] = X[b] != 0
    X[rng.random(n) < 0.2] = 0.0  # empty rows
    row_start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n_max = max(1, int(sizes.max()))
    clients = (
        rng.integers(0, N, size=int(rng.integers(1, 2 * N + 1)))  # repeats allowed
        if draw(st.booleans())
        else None
    )
    csr = sp.csr_matrix(X)
    if draw(st.booleans()):  # a CSR with duplicates: entries split in two at the same column
        split = rng.random(csr.nnz) < 0.3
        data = np.concatenate([np.where(split, csr.data / 2, csr.data), csr.data[split] / 2])
        cols = np.concatenate([csr.indices, csr.indices[split]])
        rows = np.concatenate([np.repeat(np.arange(n), np.diff(csr.indptr))] * 2)
        rows = np.concatenate([rows[: csr.nnz], rows[csr.nnz :][split]])
        order = np.lexsort((cols, rows))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
        csr = sp.csr_matrix((data[order], cols[order], indptr), shape=(n, d))
    A = ClientCSR(csr, row_start, n_max, clients)
    m = A.shape[0]
    y, sw = np.zeros((m, n_max)), np.zeros((m, n_max))
    for k, n_k in enumerate(A.sizes):
        y[k, :n_k] = rng.choice([-1.0, 1.0], size=n_k)
        sw[k, :n_k] = (1.0 / max(n_k, 1)) * (rng.random(n_k) > 0.1)  # some rows weigh 0
    scale = draw(st.sampled_from([0.0, 0.1, 3.0, 100.0, 1e3]))  # margins up to |z| ~ 1e3
    theta = scale * rng.normal(size=(m, d) if draw(st.booleans()) else d)
    lam = draw(st.sampled_from([0.0, 1e-3, 0.1]))
    hess_weights = rng.random(m) / m * (rng.random(m) > 0.2)  # some clients weigh 0
    return A, y, sw, lam, theta, hess_weights


@settings(max_examples=200, deadline=None)
@given(problems())
def test_the_fused_sparse_oracle_equals_the_unfused_one(problem):
    A, y, sw, lam, theta, hess_weights = problem
    for value, grad, hess in itertools.product([False, True], repeat=3):
        for hw in (None, hess_weights) if hess else (None,):
            kw = dict(value=value, grad=grad, hess=hess, hess_weights=hw)
            got = logistic(A, y, sw, lam, theta, **kw)
            want = _unfused(A, y, sw, lam, theta, value, grad, hess, hw)
            for a, b in zip(got, want, strict=True):
                if b is None:
                    assert a is None
                else:
                    _close(a, b)


def test_the_fused_oracle_on_one_client_by_hand():
    """Two rows, d = 2: every output against the formulas written out in NumPy."""
    X = np.array([[1.0, 0.0], [2.0, -1.0]])
    A = ClientCSR(sp.csr_matrix(X), np.array([0, 2]), 2)
    y, sw = np.array([[1.0, -1.0]]), np.array([[0.5, 0.5]])
    theta, lam = np.array([0.3, -0.7]), 0.1
    o = logistic(A, y, sw, lam, theta, value=True, grad=True, hess=True)
    t = y[0] * (X @ theta)
    sig = 1.0 / (1.0 + np.exp(t))  # sigmoid(-t)
    f = 0.5 * np.sum(np.log1p(np.exp(-t))) + 0.5 * lam * theta @ theta
    g = lam * theta - X.T @ (0.5 * y[0] * sig)
    H = X.T @ np.diag(0.5 * sig * (1 - sig)) @ X + lam * np.eye(2)
    np.testing.assert_allclose(o.f, [f], rtol=1e-14)
    np.testing.assert_allclose(o.g, [g], rtol=1e-14)
    np.testing.assert_allclose(o.H, [H], rtol=1e-14)


def _repeated_columns(n=4, d=3):
    """A CSR whose rows hold every column twice (2d non-zeros in a row of d columns)."""
    cols = np.tile(np.repeat(np.arange(d), 2), n)
    data = np.linspace(0.5, 1.5, cols.size)
    indptr = np.arange(0, cols.size + 1, 2 * d)
    return sp.csr_matrix((data, cols, indptr), shape=(n, d))


def test_a_matrix_with_repeated_columns_is_read_as_their_sum():
    """ClientCSR stores its matrix canonically (a repeated column's entries summed, as SciPy
    reads such a matrix): the oracle equals that of the summed matrix, and the caller's
    matrix is left alone. (The compiled kernels would mirror a pair of repeats onto the
    diagonal once instead of twice.)"""
    dup = _repeated_columns()
    before = dup.copy()
    plain = dup.copy()
    plain.sum_duplicates()
    rs = np.array([0, 2, 4])
    y, sw = np.array([[1.0, -1.0], [-1.0, 1.0]]), np.full((2, 2), 0.5)
    theta = np.array([0.3, -0.2, 0.1])
    kw = dict(value=True, grad=True, hess=True)
    got = logistic(ClientCSR(dup, rs, 2), y, sw, 0.1, theta, **kw)
    want = logistic(ClientCSR(plain, rs, 2), y, sw, 0.1, theta, **kw)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    assert dup.nnz == before.nnz and np.array_equal(dup.data, before.data)


def test_the_sparse_kernels_stay_in_bounds_on_rows_longer_than_d(tmp_path):
    """Called directly on a CSR with repeated columns (more non-zeros in a row than columns),
    the sparse kernels must not write past their row buffers (Numba checks no bounds: a
    buffer of d entries was written past, corrupting the heap). Run with Numba's bounds
    checks on, in a fresh process and cache."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import numpy as np, scipy.sparse as sp
        from fedtheory import kernels
        d, n = 3, 4
        cols = np.tile(np.repeat(np.arange(d), 2), n).astype(np.int32)
        data = np.linspace(0.5, 1.5, cols.size)
        indptr = np.arange(0, cols.size + 1, 2 * d).astype(np.int64)
        rs, clients = np.array([0, 2, 4], dtype=np.int64), np.arange(2, dtype=np.int64)
        v = np.full((2, 2), 0.5)
        kernels.csr_gram(data, cols, indptr, rs, clients, v, 0.1, np.empty((2, d, d)))
        kernels.csr_gram_sum(data, cols, indptr, rs, clients, v, 0.1, np.empty((d, d)))
        kernels.csr_logistic(
            data, cols, indptr, rs, clients, np.full((1, d), 0.1), np.ones((2, 2)), v, 0.1,
            np.ones(2), 0.1, (True, True, True, False), np.zeros((2, 2)), np.empty((2, d)),
            np.empty((2, d, d)),
        )
        print("ok")
        """
    )
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
