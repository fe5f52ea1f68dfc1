"""Exact oracles of the two objectives, batched over clients (docs/algorithms.md "Objectives").

Client data come in one of two layouts, with the same meaning:

- dense: ``A`` (m, n_max, d), clients padded with zero rows to a common n_max;
- sparse: ``A`` a :class:`ClientCSR`, all rows in one CSR matrix and client c's rows a range of
  it, seen as the same padded (m, n_max, d) array without storing the zeros.

Targets ``y`` (m, n_max) and per-row weights ``sw`` (m, n_max) (1/n_i on the client's real rows,
0 on padding) are padded in both layouts, so clients of unequal sizes share one array and

    f_i(theta) = sum_j sw_ij loss(a_ij, y_ij, theta) + (lam/2) ||theta||^2.

The margins A_i theta are computed once per evaluation and reused for value, gradient and
Hessian; Hessians H_i = A_i^T diag(v_i) A_i + lam I come from :func:`gram`, which never forms a
per-sample outer product nor loops over clients in Python: on NumPy one compiled kernel
(:mod:`fedtheory.kernels`) loops over the non-zeros (sparse) or calls BLAS ``dsyrk`` once per
client on rows scaled in cache (dense); on CuPy one batched product A^T (D A). Logistic terms
use log-add-exp forms, finite for margins of any size (|z| = 1e3 included).

``theta`` is (d,) (every client at the same point) or (m, d) (one point per client).
"""

from __future__ import annotations

import sys
import threading
from typing import Any, NamedTuple, Protocol

import numpy as np
import scipy.sparse as sp

from . import kernels
from ._backend import matmul, xp_of
from ._types import Array, ArrayModule


class OracleOut(NamedTuple):
    """Per-client value (m,), gradient (m, d) and Hessian (m, d, d); None where not asked for."""

    f: Array | None
    g: Array | None
    H: Array | None


class Objective(Protocol):
    """``objective(A, y, sw, lam, theta, *, value, grad, hess, hess_weights) -> OracleOut``:
    the per-client objective values, gradients and Hessians of padded client data (dense
    (N, n, d) or :class:`~fedtheory.objectives.ClientCSR`), labels y and row weights sw (N, n),
    at theta (d,) or one row per client (N, d)."""

    def __call__(
        self,
        A: Any,
        y: Array,
        sw: Array,
        lam: float,
        theta: Array,
        *,
        value: bool = True,
        grad: bool = True,
        hess: bool = False,
        hess_weights: Array | None = None,
    ) -> OracleOut: ...


class ClientCSR:
    """Rows of N clients in one CSR matrix, read as the padded array (m, n_max, d).

    ``X`` (n, d) holds every client's rows, client c's at ``row_start[c]:row_start[c + 1]``,
    stored canonically (column indices sorted within each row, a repeated column's entries
    summed: the compiled kernels need it); ``clients`` (m,) selects and orders the clients
    this object stands for (repeats allowed; all N by default). Selecting clients
    (``A[clients]``) shares ``X``; any other indexing, ``numpy.asarray(A)`` and
    :meth:`toarray` return dense padded NumPy arrays (zeros on padding), as the dense layout
    would. Host memory only: :meth:`FederatedProblem.to("cupy") <fedtheory.problem.
    FederatedProblem.to>` moves the dense layout to the GPU.
    """

    ndim = 3
    dtype = np.dtype(np.float64)

    def __init__(
        self, X: sp.csr_matrix, row_start: np.ndarray, n_max: int, clients: np.ndarray | None = None
    ) -> None:
        X = sp.csr_matrix(X, dtype=np.float64)
        if not X.has_canonical_format:  # sorted columns, each at most once per row
            X = X.copy()  # the caller's matrix is left as it is
            X.sum_duplicates()  # the compiled kernels need it (repeats would be mis-mirrored)
        self.X = X
        self.data = np.ascontiguousarray(X.data, dtype=np.float64)
        self.indices = np.ascontiguousarray(X.indices, dtype=np.int32)
        self.indptr = np.ascontiguousarray(X.indptr, dtype=np.int64)
        self.row_start = np.ascontiguousarray(row_start, dtype=np.int64)
        self.n_max = int(n_max)
        N = self.row_start.shape[0] - 1
        self.clients = (
            np.arange(N, dtype=np.int64)
            if clients is None
            else np.ascontiguousarray(clients, dtype=np.int64)
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.clients.shape[0], self.n_max, self.X.shape[1])

    @property
    def nbytes(self) -> int:
        return int(
            self.data.nbytes
            + self.indices.nbytes
            + self.indptr.nbytes
            + self.row_start.nbytes
            + self.clients.nbytes
        )

    @property
    def sizes(self) -> np.ndarray:
        """Rows of each selected client."""
        return (self.row_start[1:] - self.row_start[:-1])[self.clients]

    def take(self, clients: Array) -> ClientCSR:
        """The clients at positions ``clients`` of this selection (shares the data)."""
        new = object.__new__(ClientCSR)
        new.__dict__.update(self.__dict__)
        new.clients = np.ascontiguousarray(self.clients[np.asarray(clients)], dtype=np.int64)
        return new

    def rows(self, k: Any, j: Any) -> np.ndarray:
        """Dense rows: ``out[...] = A[k, j]`` for integer arrays k, j (broadcast together);
        rows past a client's size are zero (padding)."""
        k, j = np.broadcast_arrays(np.asarray(k), np.asarray(j))
        c = self.clients[k.ravel()]
        j = j.ravel()
        real = (j >= 0) & (j < self.row_start[c + 1] - self.row_start[c])
        out = np.zeros((j.size, self.X.shape[1]))
        out[real] = self.X[self.row_start[c[real]] + j[real]].toarray()
        return out.reshape(*k.shape, self.X.shape[1])

    def toarray(self) -> np.ndarray:
        m, n_max, d = self.shape
        out = np.zeros((m, n_max, d))
        for k, c in enumerate(self.clients):
            r0, r1 = self.row_start[c], self.row_start[c + 1]
            out[k, : r1 - r0] = self.X[r0:r1].toarray()
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.toarray()
        return out if dtype is None else out.astype(dtype, copy=False)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> Any:
        if (
            isinstance(key, tuple)
            and len(key) == 2
            and all(isinstance(k, (int, np.integer, np.ndarray)) for k in key)
        ):
            return self.rows(*key)
        if isinstance(key, (int, np.integer)):
            key = (key,)
        if isinstance(key, tuple) and key and isinstance(key[0], (int, np.integer)):
            return self.take([key[0]]).toarray()[0][key[1:]]  # one client, dense
        if isinstance(key, (list, np.ndarray)) and np.asarray(key).dtype.kind in "iu":
            return self.take(key)
        if isinstance(key, slice):
            return self.take(np.arange(self.shape[0])[key])
        return self.toarray()[key]

    def __repr__(self) -> str:
        m, n_max, d = self.shape
        return (
            f"ClientCSR({m} clients, n_max={n_max}, d={d}, nnz={self.X.nnz}, "
            f"density={self.density:.3g})"
        )

    @property
    def density(self) -> float:
        """Fraction of non-zeros among the real (unpadded) entries of the selected clients."""
        nnz = self.indptr[self.row_start[1:]] - self.indptr[self.row_start[:-1]]
        rows = int(self.sizes.sum())
        return float(nnz[self.clients].sum()) / max(1, rows * self.X.shape[1])


#: Stacks at least this large are reused across calls once their caller has dropped them: glibc
#: serves them by mmap, so every fresh one is page-faulted and zeroed by the kernel, one more
#: pass over the stack (5 to 7 % of a FedPM round on the w8a split and on its dense synthetic).
REUSE_BYTES = 32 * 2**20
_reuse_lock = threading.Lock()
_reused: list[Any] = [None]


def _hessian_stack(m: int, d: int) -> np.ndarray:
    """An uninitialised (m, d, d) float64 stack for the client Hessians. Above
    :data:`REUSE_BYTES` this is the previous call's stack when nothing else refers to it any
    more (its reference count is that of this cache alone), else a new one that replaces it in
    the cache: a result that a caller keeps is never overwritten, and at most one stack is held
    beyond the callers'."""
    if 8 * m * d * d < REUSE_BYTES:
        return np.empty((m, d, d))
    with _reuse_lock:
        buf = _reused[0]
        # references: the cache's, ``buf`` and getrefcount's argument
        if buf is not None and buf.shape == (m, d, d) and sys.getrefcount(buf) == 3:
            return buf
        _reused[0] = None
        buf = _reused[0] = np.empty((m, d, d))
        return buf


def _is_sparse(A: Array | ClientCSR) -> bool:
    return isinstance(A, ClientCSR)


def _numpy_f64(*arrays: Array) -> bool:
    return all(type(a) is np.ndarray and a.dtype == np.float64 for a in arrays)


def _theta_rows(theta: Array) -> Array:
    return np.ascontiguousarray(theta[None, :] if theta.ndim == 1 else theta, dtype=np.float64)


def margins(A: Array | ClientCSR, theta: Array) -> Array:
    """z_ij = a_ij^T theta_i, shape (m, n_max)."""
    if _is_sparse(A):
        return kernels.csr_margins(
            A.data, A.indices, A.indptr, A.row_start, A.clients, A.n_max, _theta_rows(theta)
        )
    if theta.ndim == 1:
        return matmul(A, theta)
    return matmul(A, theta[:, :, None])[..., 0]


def rmatvec(A: Array | ClientCSR, u: Array) -> Array:
    """A_i^T u_i for every client, shape (m, d); ``u`` (m, n_max) is 0 on padding."""
    if _is_sparse(A):
        return kernels.csr_rmatvec(
            A.data,
            A.indices,
            A.indptr,
            A.row_start,
            A.clients,
            np.ascontiguousarray(u, dtype=np.float64),
            A.shape[2],
        )
    return matmul(A.transpose(0, 2, 1), u[:, :, None])[..., 0]


def gram(A: Array | ClientCSR, v: Array, lam: float, hess_weights: Array | None = None) -> Array:
    """A_i^T diag(v_i) A_i + lam I for every client (m, d, d); or, with ``hess_weights`` w (m,),
    the single matrix sum_i w_i (A_i^T diag(v_i) A_i + lam I) (d, d), built without the
    (m, d, d) stack.

    NumPy: sparse data by the compiled non-zero loop, dense float64 data with v >= 0 by one
    ``dsyrk`` per client on rows scaled by sqrt(v) (the symmetric half of the product). Both
    write one triangle and mirror it, so the result is exactly symmetric. Otherwise (CuPy, or
    a negative weight) one batched product A^T (D A). A NumPy stack of at least
    :data:`REUSE_BYTES` is recycled by a later call once nothing refers to it any more.
    """
    m, _, d = A.shape
    if hess_weights is not None:
        v = v * hess_weights[:, None]
        # lam sum_i w_i: a device scalar on a GPU (no read-back inside a round)
        lam = lam * hess_weights.sum() if lam else 0.0
    if _is_sparse(A):
        v = np.ascontiguousarray(v, dtype=np.float64)
        if hess_weights is None:
            H = _hessian_stack(m, d)
            kernels.csr_gram(A.data, A.indices, A.indptr, A.row_start, A.clients, v, lam, H)
        else:
            H = np.empty((d, d))
            kernels.csr_gram_sum(A.data, A.indices, A.indptr, A.row_start, A.clients, v, lam, H)
        return H
    if _numpy_f64(A, v) and A.flags.c_contiguous and m and bool((v >= 0).all()):
        v = np.ascontiguousarray(v)
        if hess_weights is None:
            H = _hessian_stack(m, d)
            kernels.dense_gram(A, v, lam, H)
        else:
            H = np.empty((d, d))
            kernels.dense_gram_sum(A, v, lam, H)
        return H
    if hess_weights is None:
        H = matmul(A.transpose(0, 2, 1), A * v[:, :, None])
        diag = H.reshape(H.shape[0], -1)[:, :: d + 1]
    else:
        flat = A.reshape(-1, d)
        H = matmul(flat.T, flat * v.reshape(-1, 1))
        diag = H.reshape(-1)[:: d + 1]
    if not isinstance(lam, float) or lam:
        diag += lam
    return H


def _reg(theta: Array, m: int, lam: float, xp: ArrayModule) -> tuple[Array, Array]:
    t = theta if theta.ndim == 2 else xp.broadcast_to(theta, (m, theta.shape[0]))
    return 0.5 * lam * xp.sum(t * t, axis=-1), lam * t


def logistic(
    A: Array | ClientCSR,
    y: Array,
    sw: Array,
    lam: float,
    theta: Array,
    *,
    value: bool = True,
    grad: bool = True,
    hess: bool = True,
    hess_weights: Array | None = None,
) -> OracleOut:
    """L2-regularised logistic loss, labels in {-1, +1}. With ``hess_weights`` the Hessian
    returned is sum_i w_i H_i (d, d) (see :func:`gram`).

    Sparse data (:class:`ClientCSR`): one compiled pass over each client's rows
    (:func:`fedtheory.kernels.csr_logistic`: margin, logistic terms, gradient and Gram
    products per row, with the arithmetic of the unfused kernels). Its terms come from one
    scalar libm exp and a division per row, :func:`_logistic_terms`' from NumPy's vectorised
    exp and log1p: they agree to a few ulps (sigmoid(-t) to about |t| ulps), far below the
    1e-12 relative to which both layouts agree. A non-finite margin gives NaN value and
    gradient on both paths; its row's Hessian weight is 0 here (NaN there)."""
    if _is_sparse(A):
        return _logistic_sparse(A, y, sw, lam, theta, value, grad, hess, hess_weights)
    xp = xp_of(y, theta)
    loss, grad_w, hess_w = _logistic_terms(margins(A, theta), y, sw, xp)
    f = g = H = None
    m = A.shape[0]
    if value or grad:
        r_val, r_grad = _reg(theta, m, lam, xp)
    if value:
        f = xp.sum(sw * loss, axis=1) + r_val
    if grad:
        g = r_grad - rmatvec(A, grad_w)
    if hess:
        H = gram(A, hess_w, lam, hess_weights)
    return OracleOut(f, g, H)


def _logistic_sparse(
    A: ClientCSR,
    y: Array,
    sw: Array,
    lam: float,
    theta: Array,
    value: bool,
    grad: bool,
    hess: bool,
    hess_weights: Array | None,
) -> OracleOut:
    """:func:`logistic` on sparse data by :func:`fedtheory.kernels.csr_logistic`: what the
    unfused path computes (margins, :func:`_logistic_terms`, :func:`rmatvec`, :func:`gram`),
    in one pass over the rows, for the outputs asked for."""
    m, n_max, d = A.shape
    th = _theta_rows(theta)
    y = np.ascontiguousarray(y, dtype=np.float64)
    sw = np.ascontiguousarray(sw, dtype=np.float64)
    wl = np.zeros((m, n_max) if value else (0, 0))
    g = np.empty((m, d) if grad else (0, 0))
    summed = hess and hess_weights is not None
    hw, lam_h = np.empty(0), lam
    if summed:
        hw = np.ascontiguousarray(hess_weights, dtype=np.float64)
        lam_h = lam * hess_weights.sum() if lam else 0.0  # as gram()
        H_sum = np.empty((d, d))
        H = H_sum[None]
    elif hess:
        H = _hessian_stack(m, d)
    else:
        H = np.empty((0, 0, 0))
    flags = (bool(value), bool(grad), bool(hess), bool(summed))
    kernels.csr_logistic(
        A.data, A.indices, A.indptr, A.row_start, A.clients, th, y, sw, float(lam), hw,
        float(lam_h), flags, wl, g, H,
    )  # fmt: skip
    f = None
    if value:
        f = np.sum(wl, axis=1) + _reg(theta, m, lam, np)[0]
    return OracleOut(f, g if grad else None, (H_sum if summed else H) if hess else None)


def _logistic_terms(z: Array, y: Array, sw: Array, xp: ArrayModule) -> tuple[Array, Array, Array]:
    """From margins z: the losses log(1 + exp(-t)), t = y z, and the row weights of the
    gradient, sw y sigmoid(-t), and of the Hessian, sw sigmoid(-t) sigmoid(t). On a GPU one
    fused kernel (:data:`fedtheory.cuda_kernels.logistic_terms`, the same formulas)."""
    if xp is not np:
        from . import cuda_kernels

        return cuda_kernels.logistic_terms(z, y, sw)
    t = y * z  # y_j a_j^T theta
    # log(1 + exp(-t)), never overflows; NumPy's logaddexp(0, -t) is the same up to an ulp
    # but not vectorised (0.62 ms against 0.20 ms for a9a's 32,560 margins)
    loss = np.maximum(-t, 0.0) + np.log1p(np.exp(-np.abs(t)))
    s = np.exp(-(loss + t))  # sigmoid(-t) = 1 / (1 + exp(t))
    return loss, sw * y * s, sw * s * np.exp(-loss)  # s (1 - s), 1 - s = exp(-loss)


def ridge(
    A: Array | ClientCSR,
    y: Array,
    sw: Array,
    lam: float,
    theta: Array,
    *,
    value: bool = True,
    grad: bool = True,
    hess: bool = True,
    hess_weights: Array | None = None,
) -> OracleOut:
    """Ridge regression f_i = (1/(2 n_i)) ||A_i theta - b_i||^2 + (lam/2) ||theta||^2."""
    xp = xp_of(y, theta)
    r = margins(A, theta) - y
    f = g = H = None
    m = A.shape[0]
    if value or grad:
        r_val, r_grad = _reg(theta, m, lam, xp)
    if value:
        f = 0.5 * xp.sum(sw * r * r, axis=1) + r_val
    if grad:
        g = rmatvec(A, sw * r) + r_grad
    if hess:
        H = gram(A, sw, lam, hess_weights)
    return OracleOut(f, g, H)


ORACLES = {"logistic": logistic, "ridge": ridge}
