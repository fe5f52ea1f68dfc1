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
