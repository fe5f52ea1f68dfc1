"""The sparse data path: same oracles, reference and trajectories as the dense one.

Storage "sparse" (one CSR matrix, compiled non-zero loops) and "dense" (padded array, BLAS
dsyrk per client) are two ways to compute the same maths (docs/algorithms.md "Objectives");
they may differ only by rounding: 1e-12 relative for one oracle call, 1e-10 along trajectories.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtheory import make_method
from fedtheory._backend import to_numpy
from fedtheory.errors import FedTheoryError
from fedtheory.methods import round_context
from fedtheory.objectives import ClientCSR, gram
from fedtheory.oracles import make_oracle
from fedtheory.problem import SPARSE_DENSITY, FederatedProblem


def _clients(
    seed: int, *, N: int, d: int, density: float, objective: str, max_rows: int = 14
) -> tuple[list[sp.csr_matrix], list[np.ndarray]]:
    """Clients of unequal sizes with random sparse rows, about a fifth of them empty."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    Xs, ys = [], []
    for _ in range(N):
        n_i = int(rng.integers(1, max_rows + 1))
        X = rng.normal(size=(n_i, d)) * (rng.random((n_i, d)) < density)
        X[rng.random(n_i) < 0.2] = 0.0  # empty rows
        z = X @ w + 0.5 * rng.normal(size=n_i)
        ys.append(np.where(z >= 0, 1.0, -1.0) if objective == "logistic" else z)
        Xs.append(sp.csr_matrix(X))
    return Xs, ys


def _pair(
    seed: int,
    *,
    N: int = 5,
    d: int = 7,
    density: float = 0.3,
    objective: str = "logistic",
    lam: float = 1e-2,
    weighting: str = "samples",
) -> tuple[FederatedProblem, FederatedProblem]:
    Xs, ys = _clients(seed, N=N, d=d, density=density, objective=objective)
    kw = dict(objective=objective, lam=lam, weighting=weighting, name=f"sparse-{seed}")
    return (
        FederatedProblem.from_clients(Xs, ys, storage="sparse", **kw),
        FederatedProblem.from_clients(Xs, ys, storage="dense", **kw),
    )


@st.composite
def pairs(draw):
    """The same random sparse problem stored both ways."""
    return _pair(
        draw(st.integers(0, 2**31 - 1)),
        N=draw(st.integers(1, 6)),
        d=draw(st.integers(1, 12)),
        density=draw(st.sampled_from([0.05, 0.2, 0.6])),
        objective=draw(st.sampled_from(["logistic", "ridge"])),
        lam=draw(st.sampled_from([1e-3, 1e-1])),
        weighting=draw(st.sampled_from(["samples", "uniform"])),
    )


def _close(a, b, rel):
    """max |a - b| <= rel * max |b| (normwise relative; exact when b is zero)."""
    a, b = to_numpy(a), to_numpy(b)
    assert a.shape == b.shape
    assert np.max(np.abs(a - b), initial=0.0) <= rel * np.max(np.abs(b), initial=0.0)


@given(pairs(), st.integers(0, 1000))
def test_sparse_and_dense_storage_give_the_same_oracles(pair, seed):
    sparse, dense = pair
    assert (sparse.storage, dense.storage) == ("sparse", "dense")
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=sparse.d)
    for kw in ({"value": True, "grad": True, "hess": True}, {"grad": False, "hess": True}):
        for a, b in zip(sparse.oracle(theta, **kw), dense.oracle(theta, **kw), strict=True):
            if b is None:
                assert a is None
            else:
                _close(a, b, 1e-12)
    clients = rng.integers(0, sparse.N, size=2 * sparse.N)  # repeats allowed
    thetas = rng.normal(size=(clients.size, sparse.d))
    a = sparse.oracle(thetas, clients, value=True, grad=True, hess=True)
    b = dense.oracle(thetas, clients, value=True, grad=True, hess=True)
    for x, y in zip(a, b, strict=True):
        _close(x, y, 1e-12)
    a = sparse.global_oracle(theta, hess=True)
    b = dense.global_oracle(theta, hess=True)
    for x, y in zip(a, b, strict=True):
        _close(x, y, 1e-12)


@given(pairs())
def test_both_layouts_give_exactly_symmetric_hessians(pair):
    for problem in pair:
        H = problem.oracle(np.ones(problem.d), hess=True).H
        np.testing.assert_array_equal(H, H.transpose(0, 2, 1))
        G = problem.global_oracle(np.ones(problem.d), hess=True).H
        np.testing.assert_array_equal(G, G.T)


@settings(max_examples=10)
@given(pairs())
def test_reference_solution_is_the_same_in_both_layouts(pair):
    sparse, dense = pair
    a, b = sparse.reference, dense.reference
    _close(a.theta_star, b.theta_star, 1e-10)
    np.testing.assert_allclose(
        [a.f_star, a.mu, a.L, a.L_H], [b.f_star, b.mu, b.L, b.L_H], rtol=1e-10
    )


def _trajectory(problem, name, params, rounds, S, seed=0):
    method = make_method(name, params)
    theta0 = 0.3 * np.random.default_rng(seed).normal(size=problem.d)
    state, _ = method.start(problem, theta0)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rounds):
        clients = None if S is None else np.sort(rng.choice(problem.N, S, replace=False))
        state, _ = method.round(round_context(problem, clients, rng=rng), state)
        out.append(to_numpy(state.theta))
    return np.array(out)


@pytest.mark.parametrize("objective", ["logistic", "ridge"])
@pytest.mark.parametrize("S", [None, 3])
@pytest.mark.parametrize(
    "name,params",
    [
        ("fedpm", {"K": 1}),
        ("fedpm", {"K": 3, "eta": 0.7, "delta": 1e-3}),
        ("fedpm", {"K": 2, "mixing_preconditioner": "end"}),
        ("newton", {"eta": 0.9}),
        ("sopm", {"K": 2, "eta": 0.8}),
        ("sopm", {"K": 2, "local_search": True}),
    ],
)
def test_trajectories_are_the_same_on_a_sparse_problem_stored_densely(objective, S, name, params):
    sparse, dense = _pair(5, N=6, d=9, density=0.15, objective=objective)
    a = _trajectory(sparse, name, params, 8, S)
    b = _trajectory(dense, name, params, 8, S)
    for x, y in zip(a, b, strict=True):
        _close(x, y, 1e-10)


def test_minibatch_oracle_draws_the_same_rows_in_both_layouts():
    sparse, dense = _pair(8, N=5, d=6)
    theta = np.linspace(-1, 1, 6)
    clients = np.array([4, 0, 0, 2])
    oracle = make_oracle("minibatch", b=3)
    a = oracle(
        sparse, theta, clients, value=True, grad=True, hess=True, rng=np.random.default_rng(1)
    )
    b = oracle(
        dense, theta, clients, value=True, grad=True, hess=True, rng=np.random.default_rng(1)
    )
    for x, y in zip(a, b, strict=True):
        _close(x, y, 1e-12)


def test_the_sparse_array_reads_as_the_padded_dense_one():
    sparse, dense = _pair(9, N=4, d=5)
    A, D = sparse.A, dense.A
    assert isinstance(A, ClientCSR) and A.shape == D.shape and A.ndim == 3
    np.testing.assert_array_equal(np.asarray(A), D)
    np.testing.assert_array_equal(A[1, : sparse.sizes[1]], D[1, : sparse.sizes[1]])
    np.testing.assert_array_equal(A[-1], D[-1])
    np.testing.assert_array_equal(A[2, 0, 1:], D[2, 0, 1:])
    np.testing.assert_array_equal(A[1:3], D[1:3])
    np.testing.assert_array_equal(A[..., 0], D[..., 0])
    k = np.array([[3], [0]])
    j = np.array([[0, 1, sparse.A.n_max - 1], [2, 0, 0]])  # the last row may be padding
    np.testing.assert_array_equal(A[k, j], D[k, j])
    sel = np.array([2, 2, 0])
    np.testing.assert_array_equal(np.asarray(A[sel]), D[sel])
    assert A[sel].X is A.X  # a selection shares the data
    assert A.nbytes < D.nbytes


def test_auto_storage_follows_the_measured_density():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 10))
    y = np.where(rng.random(60) < 0.5, 1.0, -1.0)
    parts = np.array_split(np.arange(60), 3)
    mask = rng.random(X.shape) < 0.5 * SPARSE_DENSITY
    kw = dict(objective="logistic", lam=0.1)
    assert FederatedProblem.from_dataset(X * mask, y, parts, **kw).storage == "sparse"
    assert FederatedProblem.from_dataset(sp.csr_matrix(X), y, parts, **kw).storage == "dense"
    assert FederatedProblem.from_dataset(X, y, parts, storage="sparse", **kw).storage == "sparse"
    assert (
        FederatedProblem.from_dataset(
            sp.csr_matrix(X * mask), y, parts, storage="dense", **kw
        ).storage
        == "dense"
    )
    with pytest.raises(FedTheoryError, match="storage must be one of"):
        FederatedProblem.from_dataset(X, y, parts, storage="csr", **kw)


def test_sparse_data_with_nan_are_refused():
    X = sp.csr_matrix(np.array([[0.0, np.nan], [1.0, 0.0]]))
    with pytest.raises(FedTheoryError, match="NaN or inf"):
        FederatedProblem.from_clients(
            [X], [np.ones(2)], objective="logistic", lam=0.1, storage="sparse"
        )


def test_constant_ridge_hessians_and_lipschitz_bound_agree():
    sparse, dense = _pair(3, objective="ridge")
    _close(sparse._H_const, dense._H_const, 1e-12)
    sparse, dense = _pair(3, objective="logistic")
    np.testing.assert_allclose(sparse._hessian_lipschitz(), dense._hessian_lipschitz(), rtol=1e-12)


def test_a_sparse_problem_moves_to_a_backend_and_back(backend):
    sparse, dense = _pair(4)
    moved = sparse.to(backend)
    theta = np.linspace(-1, 1, sparse.d)
    a = moved.oracle(moved.xp.asarray(theta), value=True, grad=True, hess=True)
    b = dense.oracle(theta, value=True, grad=True, hess=True)
    for x, y in zip(a, b, strict=True):
        _close(x, y, 1e-12)
    # the GPU computes on the dense layout; the way back restores the sparse data
    assert moved.storage == ("sparse" if backend == "numpy" else "dense")
    back = moved.to("numpy")
    assert back.storage == "sparse" and back.A.X is sparse.A.X


@given(st.integers(1, 6), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_dense_gram_by_dsyrk_equals_the_batched_product(m, n, d, seed):
    """v >= 0 takes the dsyrk kernel; a negative weight takes the batched product."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(m, n, d))
    v = rng.random((m, n)) * (rng.random((m, n)) < 0.7)  # zero rows too
    ref = np.matmul(A.transpose(0, 2, 1), A * v[:, :, None]) + 0.5 * np.eye(d)
    _close(gram(A, v, 0.5), ref, 1e-12)
    w = rng.random(m)
    _close(gram(A, v, 0.5, hess_weights=w), np.tensordot(w, ref, axes=1), 1e-12)
    v[0, 0] = -1.0
    ref = np.matmul(A.transpose(0, 2, 1), A * v[:, :, None]) + 0.5 * np.eye(d)
    _close(gram(A, v, 0.5), ref, 1e-12)


def test_a_kept_hessian_stack_is_never_overwritten_and_a_dropped_one_is_reused():
    """Stacks above REUSE_BYTES are recycled only once nothing refers to them."""
    from fedtheory.objectives import REUSE_BYTES

    d = int(np.ceil(np.sqrt(REUSE_BYTES / 16))) + 1  # two clients: just above it
    X = sp.random(6, d, density=0.01, random_state=1, format="csr")
    A = ClientCSR(X, np.array([0, 3, 6]), 3)
    v = np.ones((2, 3))
    H1 = gram(A, v, 1.0)
    keep = H1[0, :5, :5].copy()
    H2 = gram(A, 2 * v, 1.0)  # H1 is held: a new stack
    assert H2 is not H1
    np.testing.assert_array_equal(H1[0, :5, :5], keep)
    address = H2.ctypes.data
    del H2
    H3 = gram(A, 3 * v, 1.0)  # H2 was dropped: reused
    assert H3.ctypes.data == address
    np.testing.assert_array_equal(H1[0, :5, :5], keep)


@given(pairs(), st.integers(0, 1000))
def test_weighted_hessians_of_a_selection_equal_the_mixed_stack(pair, seed):
    """oracle(..., hess_weights=w) gives sum_i w_i H_i without the stack, in both layouts."""
    rng = np.random.default_rng(seed)
    for problem in pair:
        clients = rng.integers(0, problem.N, size=3)
        thetas = rng.normal(size=(3, problem.d))
        w = rng.random(3)
        stack = problem.oracle(thetas, clients, hess=True).H
        mixed = problem.oracle(thetas, clients, hess=True, hess_weights=w).H
        _close(mixed, np.tensordot(w, stack, axes=1), 1e-12)


def test_a_spec_chooses_its_storage_and_a_bad_one_is_named(tmp_path):
    from fedtheory.suite import load_problem, read_spec, resolve

    spec = read_spec(resolve("a9a_fednl"))
    auto = load_problem(
        {
            **spec,
            "data": {**spec["data"], "rows": 4070},
            "partition": {**spec["partition"], "clients": 10},
        }
    )
    dense = load_problem(
        {
            **spec,
            "data": {**spec["data"], "rows": 4070, "storage": "dense"},
            "partition": {**spec["partition"], "clients": 10},
        }
    )
    assert auto.storage == "sparse" and dense.storage == "dense"
    path = tmp_path / "p.toml"
    path.write_text(
        resolve("a9a_fednl")
        .read_text()
        .replace('source = "a9a"', 'source = "a9a"\nstorage = "diagonal"')
    )
    with pytest.raises(FedTheoryError, match="storage must be one of"):
        load_problem(path)


def _gram_one_product_at_a_time(X, row_start, clients, v, lam, summed=False):
    """The compiled sparse Gram kernel's arithmetic, written out: for each client's rows in
    order, each pair (a, b <= a) of a row's non-zeros adds (v_j x_a) x_b to the lower entry
    (col_a, col_b), one product at a time; then the lower triangle is mirrored and lam added.
    ``summed``: every client into one matrix (csr_gram_sum), shape (1, d, d)."""
    d = X.shape[1]
    out = np.zeros((1 if summed else len(clients), d, d))
    for k, c in enumerate(clients):
        H = out[0 if summed else k]
        for j, r in enumerate(range(row_start[c], row_start[c + 1])):
            lo, hi = X.indptr[r], X.indptr[r + 1]
            cols, vals = X.indices[lo:hi], X.data[lo:hi]
            for a in range(hi - lo):
                wa = v[k, j] * vals[a]
                for b in range(a + 1):
                    H[cols[a], cols[b]] += wa * vals[b]
    for H in out:
        H[...] = np.tril(H) + np.tril(H, -1).T
        H[np.diag_indices(d)] += lam
    return out


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    binary=st.sampled_from(["binary", "real", "mixed"]),
    duplicates=st.booleans(),
)
def test_the_sparse_gram_kernel_adds_every_product_in_row_order(seed, binary, duplicates):
    """csr_gram and csr_gram_sum equal, bit for bit, one product at a time in row order: the
    kernel's packed triangle, its two-at-a-time loop and its binary-row path (rows of 1.0,
    as a9a and w8a) change no rounding, with repeated columns in a row (a CSR with
    duplicates), empty rows, zero weights and unequal client sizes."""
    from fedtheory import kernels

    rng = np.random.default_rng(seed)
    d, sizes = int(rng.integers(1, 12)), rng.integers(0, 6, size=int(rng.integers(1, 5)))
    row_start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    rows = []
    for _ in range(int(row_start[-1])):
        k = int(rng.integers(0, d + 1))
        cols = np.sort(rng.choice(d, size=k, replace=duplicates))
        vals = rng.normal(size=k)
        if binary == "binary" or (binary == "mixed" and rng.random() < 0.5):
            vals = np.ones(k)
        rows.append((cols, vals))
    indptr = np.concatenate([[0], np.cumsum([len(c) for c, _ in rows])]).astype(np.int64)
    indices = np.concatenate([c for c, _ in rows] + [np.zeros(0)]).astype(np.int32)
    data = np.concatenate([v for _, v in rows] + [np.zeros(0)])
    X = sp.csr_matrix((data, indices, indptr), shape=(len(rows), d))  # duplicates kept as they are
    clients = rng.permutation(len(sizes)).astype(np.int64)
    v = rng.random((len(clients), max(1, int(sizes.max())))) * (rng.random() < 0.9)
    lam = float(rng.choice([0.0, 1e-3]))
    want = _gram_one_product_at_a_time(X, row_start, clients, v, lam)
    got = np.empty_like(want)
    kernels.csr_gram(data, indices, indptr, row_start, clients, v, lam, got)
    np.testing.assert_array_equal(got, want)
    total = np.empty((d, d))
    kernels.csr_gram_sum(data, indices, indptr, row_start, clients, v, lam, total)
    want_sum = _gram_one_product_at_a_time(X, row_start, clients, v, lam, summed=True)[0]
    np.testing.assert_array_equal(total, want_sum)
