"""Compiled kernels of the hot path: client Gram matrices, sparse products, Cholesky solves.

The oracles of :mod:`fedtheory.objectives` and the SPD solves of :mod:`fedtheory.linalg` spend
their time here on NumPy (docs/algorithms.md "Objectives": margins once per evaluation, client
Hessians H_i = A_i^T diag(v_i) A_i + lam I batched over clients). Each kernel is one Numba loop
over the clients, so a stack of small problems costs no Python call per client:

- sparse data (one CSR matrix, client c's rows at ``row_start[c]:row_start[c + 1]``): margins
  A_i theta_i, gradients A_i^T u_i and Gram matrices by loops over the non-zeros. A row with k
  non-zeros adds k (k + 1) / 2 products to a packed lower triangle in cache (column indices are
  sorted), from which each matrix is written once, both triangles;
- dense data: rows scaled by sqrt(v_ij) into a buffer of one client's size (in cache, no
  N x n x d temporary) and one BLAS ``dsyrk`` per client (half the flops of a product, v >= 0);
- Cholesky: LAPACK ``dpotrf`` / ``dpotrs`` per matrix, in place on the caller's stack or on one
  d x d buffer, never through NumPy's copies in and out of LAPACK's column-major layout; a
  coordinate coupled to no other (a feature none of a client's rows uses) is solved alone and
  only the coupled block is factored.

BLAS and LAPACK are SciPy's (``scipy.linalg.cython_blas`` / ``cython_lapack``), reached from
Numba by symbol name, so compiled kernels are cached on disk. A C-ordered matrix is the
transpose of the same memory read column-major: LAPACK's "U" (upper) is the lower triangle of a
C-ordered matrix, and "L" its upper one. Every kernel takes and returns float64 arrays,
C-contiguous; callers check this. Inner loops index with unsigned integers (``_U``): Numba
adds a negative-index check to every signed index, which halved the speed of the sparse loops
(margins of a9a: 0.46 ms signed, 0.24 ms unsigned, as fast as SciPy's CSR product).
"""

from __future__ import annotations

import llvmlite.binding as _llvm
import numba as nb
import numpy as np
from numba import types
from numba.extending import get_cython_function_address


def _external(module: str, name: str, nargs: int) -> types.ExternalFunction:
    symbol = f"fedtheory_{name}"
    _llvm.add_symbol(symbol, get_cython_function_address(f"scipy.linalg.cython_{module}", name))
    return types.ExternalFunction(symbol, types.void(*([types.voidptr] * nargs)))


# Fortran calling convention: every argument by pointer
_dsyrk = _external("blas", "dsyrk", 10)  # uplo trans n k alpha a lda beta c ldc
_dpotrf = _external("lapack", "dpotrf", 5)  # uplo n a lda info
_dpotrs = _external("lapack", "dpotrs", 8)  # uplo n nrhs a lda b ldb info
_dsytrd = _external("lapack", "dsytrd", 10)  # uplo n a lda d e tau work lwork info
# range order n vl vu il iu abstol d e m nsplit w iblock isplit work iwork info
_dstebz = _external("lapack", "dstebz", 18)

_U = np.uint64  # unsigned indices: no negative-index wraparound in the inner loops
_BLOCK = 32  # tile of the blocked lower -> upper copy


@nb.njit(cache=True, nogil=True)
def _mirror_lower(H, lam):
    """H[q, p] = H[p, q] for q < p (tiled, in cache) and H[p, p] += lam."""
    d, B = _U(H.shape[0]), _U(_BLOCK)
    for p0 in range(_U(0), d, B):
        p1 = min(p0 + B, d)
        for q0 in range(_U(0), p1, B):
            for p in range(p0, p1):
                for q in range(q0, min(q0 + B, p)):
                    H[q, p] = H[p, q]
    for p in range(d):
        H[p, p] += lam


@nb.njit(cache=True, nogil=True)
def _zero_lower(H):
    d = _U(H.shape[0])
    for p in range(d):
        for q in range(p + _U(1)):
            H[p, q] = 0.0


# ---- sparse: one CSR matrix of all rows, clients as row ranges -------------------------------
@nb.njit(cache=True, nogil=True)
def csr_margins(data, indices, indptr, row_start, clients, n_max, theta):
    """z[k, j] = a_j^T theta_k for the j-th row of client clients[k]; 0 on padding.
    ``theta`` is (1, d) (one point for all) or (m, d)."""
    m = clients.shape[0]
    z = np.zeros((m, n_max))
    shared = theta.shape[0] == 1
    for k in range(m):
        c = _U(clients[k])
        th = theta[0 if shared else k]
        zk = z[k]
        r0 = _U(row_start[c])
        for j in range(_U(row_start[c + _U(1)]) - r0):
            acc = 0.0
            for p in range(_U(indptr[r0 + j]), _U(indptr[r0 + j + _U(1)])):
                acc += data[p] * th[_U(indices[p])]
            zk[j] = acc
    return z


@nb.njit(cache=True, nogil=True)
def csr_rmatvec(data, indices, indptr, row_start, clients, u, d):
    """g[k] = A_c^T u[k] for c = clients[k] (u in the padded (m, n_max) layout)."""
    m = clients.shape[0]
    g = np.zeros((m, d))
    for k in range(m):
        c = _U(clients[k])
        gk, uk = g[k], u[k]
        r0 = _U(row_start[c])
        for j in range(_U(row_start[c + _U(1)]) - r0):
            w = uk[j]
            if w != 0.0:
                for p in range(_U(indptr[r0 + j]), _U(indptr[r0 + j + _U(1)])):
                    gk[_U(indices[p])] += w * data[p]
    return g


@nb.njit(cache=True, nogil=True)
def _binary_row(T, w, cols, offs, nnz):
    """T += w a a^T for a row a whose non-zeros are all 1.0 (binary features: a9a, w8a), on
    the packed lower triangle: (w 1) 1 = w exactly, so each product is w itself (an entry
    reached twice in the row adds w twice, in any order), and with no value to load four
    non-zeros a..a + 3 share each load of a column index."""
    a = _U(0)
    while a + _U(3) < nnz:
        o0, o1, o2, o3 = offs[a], offs[a + _U(1)], offs[a + _U(2)], offs[a + _U(3)]
        for b in range(a + _U(1)):
            q = cols[b]
            T[o0 + q] += w
            T[o1 + q] += w
            T[o2 + q] += w
            T[o3 + q] += w
        q = cols[a + _U(1)]
        T[o1 + q] += w
        T[o2 + q] += w
        T[o3 + q] += w
        q = cols[a + _U(2)]
        T[o2 + q] += w
        T[o3 + q] += w
        T[o3 + cols[a + _U(3)]] += w
        a += _U(4)
    while a < nnz:
        o0 = offs[a]
        for b in range(a + _U(1)):
            T[o0 + cols[b]] += w
        a += _U(1)


@nb.njit(cache=True, nogil=True)
def _real_row(T, w, cols, vals, offs, nnz, repeats):
    """T += w a a^T for one row a whose ``nnz`` non-zeros are loaded in ``cols``, ``vals`` and
    ``offs`` (see :func:`_csr_accumulate`), two non-zeros at a time unless ``repeats`` (a
    column appears twice in the row). Binary rows go to :func:`_binary_row` instead, called
    from the row loop itself (behind a call to this function, a9a's Gram matrices took 3.9
    ms instead of 2.2)."""
    a = _U(0)
    # a column repeated in the row (a CSR with duplicates) would reach an entry from two
    # pairs in another order: one non-zero at a time then
    while a + _U(1) < nnz and not repeats:
        o0, o1 = offs[a], offs[a + _U(1)]
        w0, w1 = w * vals[a], w * vals[a + _U(1)]
        for b in range(a + _U(1)):
            q, x = cols[b], vals[b]
            T[o0 + q] += w0 * x
            T[o1 + q] += w1 * x
        T[o1 + cols[a + _U(1)]] += w1 * vals[a + _U(1)]
        a += _U(2)
    while a < nnz:
        o0, w0 = offs[a], w * vals[a]
        for b in range(a + _U(1)):
            T[o0 + cols[b]] += w0 * vals[b]
        a += _U(1)


@nb.njit(cache=True, nogil=True)
def _csr_accumulate(T, data, indices, indptr, c, row_start, v_row, cols, vals, offs):
    """T += sum_j v_row[j] a_j a_j^T over client c's rows, on the packed lower triangle T
    (entry (p, q), q <= p, at p (p + 1) / 2 + q: half a d x d matrix, mostly in L1). The
    CSR must be canonical (:class:`~fedtheory.objectives.ClientCSR` makes it so): column
    indices sorted within each row, so that a pair (a, b <= a) has cols[b] <= cols[a], inside
    the row of T it addresses (unsorted, it would write past that row, unchecked), and no
    column repeated (a pair of repeats would add x_a x_b to a diagonal entry once, not twice).
    Rows with repeats are still added in a fixed order, one non-zero at a time.
    ``cols`` (uint64), ``vals`` and ``offs`` (uint64; where the row of each column starts in T)
    hold one row's non-zeros while it is added (:func:`_real_row`). Two non-zeros a, a + 1 of
    a row are added at once, sharing the loads of the (column, value) pairs b <= a; binary
    rows go to :func:`_binary_row` (a9a's 3.4 million products: 2.2 ms one at a time into
    the d x d matrix, 1.6 two at a time, 1.4 binary). Every entry still gets the rows'
    products one at a time, in row order, and within a row in the order (a, b), each
    (v_j a_ja) a_jb: the result is bit for bit that of one non-zero at a time."""
    r0 = _U(row_start[c])
    for j in range(_U(row_start[c + _U(1)]) - r0):
        w = v_row[j]
        if w == 0.0:
            continue
        lo = _U(indptr[r0 + j])
        nnz = _U(indptr[r0 + j + _U(1)]) - lo
        binary, repeats = True, False
        for a in range(nnz):
            col = _U(indices[lo + a])
            repeats |= a > 0 and col == cols[a - _U(1)]
            cols[a] = col
            vals[a] = data[lo + a]
            binary &= vals[a] == 1.0
            offs[a] = (col * (col + _U(1))) >> _U(1)
        if binary:
            _binary_row(T, w, cols, offs, nnz)
        else:
            _real_row(T, w, cols, vals, offs, nnz, repeats)


@nb.njit(cache=True, nogil=True)
def _unpack_lower(T, lam, H):
    """H = the symmetric matrix of the packed lower triangle T, plus lam I: one pass writing
    H row by row (the upper part read down T's columns, in cache)."""
    d = _U(H.shape[0])
    for p in range(d):
        Hp = H[p]
        start = (p * (p + _U(1))) >> _U(1)
        for q in range(p + _U(1)):
            Hp[q] = T[start + q]
        Hp[p] += lam
        at = start + p  # T's (q, p) = q (q + 1) / 2 + p, stepping q = p + 1, p + 2, ...
        for q in range(p + _U(1), d):
            at += q
            Hp[q] = T[at]


@nb.njit(cache=True, nogil=True)
def _row_buffers(indptr, row_start, clients):
    """(cols, vals, offs): buffers for one row's non-zeros, as long as the longest row of the
    selected clients. Not d: a CSR with repeated columns can have more non-zeros in a row than
    columns (Numba does not check bounds; a buffer of d was written past, corrupting the
    heap)."""
    longest = 0
    for k in range(clients.shape[0]):
        c = clients[k]
        for r in range(row_start[c], row_start[c + 1]):
            longest = max(longest, indptr[r + 1] - indptr[r])
    return np.empty(longest, dtype=np.uint64), np.empty(longest), np.empty(longest, dtype=np.uint64)


@nb.njit(cache=True, nogil=True)
def csr_gram(data, indices, indptr, row_start, clients, v, lam, out):
    """out[k] = A_c^T diag(v[k]) A_c + lam I for c = clients[k]; out (m, d, d) is overwritten.
    Each client's products go into one packed triangle in cache, then out[k] is written once,
    both triangles (zeroing out[k], adding into it and mirroring were three passes over it)."""
    d = out.shape[1]
    cols, vals, offs = _row_buffers(indptr, row_start, clients)
    T = np.empty(d * (d + 1) // 2)
    for k in range(clients.shape[0]):
        T[:] = 0.0
        _csr_accumulate(T, data, indices, indptr, _U(clients[k]), row_start, v[k], cols, vals, offs)
        _unpack_lower(T, lam, out[k])


@nb.njit(cache=True, nogil=True)
def csr_gram_sum(data, indices, indptr, row_start, clients, v, lam, out):
    """out = sum_k A_c^T diag(v[k]) A_c + lam I (client weights folded into v); out (d, d)."""
    d = out.shape[0]
    cols, vals, offs = _row_buffers(indptr, row_start, clients)
    T = np.zeros(d * (d + 1) // 2)
    for k in range(clients.shape[0]):
        _csr_accumulate(T, data, indices, indptr, _U(clients[k]), row_start, v[k], cols, vals, offs)
    _unpack_lower(T, lam, out)


@nb.njit(cache=True, nogil=True)
def csr_logistic(  # noqa: C901 - one compiled loop; helpers cost calls in numba
    data, indices, indptr, row_start, clients, theta, y, sw, lam, hw, lam_h, flags, wl, g, H
):
    """The logistic oracle of :func:`fedtheory.objectives.logistic` on sparse data, one pass
    over each client's rows. For row j of client c = clients[k]: the margin z = a_j^T theta_k
    (the loop of :func:`csr_margins`), the logistic terms, then, with the row's non-zeros still
    in cache, the gradient (the loop of :func:`csr_rmatvec`) and the Gram products (the packed
    triangle of :func:`csr_gram`), with those kernels' arithmetic in their order. The CSR must
    be canonical, as for :func:`_csr_accumulate`.

    The terms are those of :func:`fedtheory.objectives._logistic_terms` from one exp and one
    division: with t = y z, e = exp(-|t|) and r = 1 / (1 + e), s = sigmoid(-t) and 1 - s =
    exp(-loss) are (e r, r) for t >= 0 and (r, e r) for t < 0 (loss = max(-t, 0) + log1p(e),
    computed only for the value). ``_logistic_terms`` takes s = exp(-(loss + t)) and exp(-loss)
    instead (NumPy's vectorised exp: 4 transcendental calls per row cost 0.2 ms on a9a's
    32,560 margins there; scalar libm calls here cost 1.2 ms, more than the fusion saves). The
    two agree to a few ulps (s here is the more accurate: exp(-(loss + t)) carries the rounding
    of loss + t, |t| ulps), and libm's scalar exp / log1p may differ from NumPy's by an ulp.

    ``theta`` (1, d) (one point for all) or (m, d). ``flags`` = (value, grad, hess, summed):
    ``wl`` (m, n_max) gets sw_j loss_j on real rows (zeros elsewhere: the caller sums it as
    NumPy sums the padded array), ``g`` (m, d) gets lam theta_k - A_c^T (gradient weights),
    ``H`` (m, d, d) gets A_c^T diag(Hessian weights) A_c + lam_h I, or, ``summed``, H[0] gets
    sum_k A_c^T diag(hw[k] Hessian weights) A_c + lam_h I (``hw`` (m,): the client weights of
    the weighted-sum Hessian; unread otherwise). Outputs not asked for are not touched."""
    value, grad, hess, summed = flags[0], flags[1], flags[2], flags[3]
    m, d = clients.shape[0], theta.shape[1]
    shared = theta.shape[0] == 1
    cols, vals, offs = _row_buffers(indptr, row_start, clients)
    T = np.zeros(d * (d + 1) // 2 if hess else 0)
    acc_g = np.empty(d if grad else 0)
    for k in range(m):
        c = _U(clients[k])
        th, yk, swk = theta[0 if shared else k], y[k], sw[k]
        if hess and not summed and k > 0:
            T[:] = 0.0
        if grad:
            acc_g[:] = 0.0
        hwk = hw[k] if hess and summed else 1.0
        r0 = _U(row_start[c])
        for j in range(_U(row_start[c + _U(1)]) - r0):
            lo = _U(indptr[r0 + j])
            nnz = _U(indptr[r0 + j + _U(1)]) - lo
            z = 0.0
            binary, repeats = True, False
            for a in range(nnz):
                col = _U(indices[lo + a])
                x = data[lo + a]
                z += x * th[col]
                repeats |= a > 0 and col == cols[a - _U(1)]
                cols[a] = col
                vals[a] = x
                binary &= x == 1.0
                offs[a] = (col * (col + _U(1))) >> _U(1)
            t = yk[j] * z
            e = np.exp(-abs(t))
            r = 1.0 / (1.0 + e)
            if t >= 0.0:
                s, s1 = e * r, r
            else:
                s, s1 = r, e * r
            if value:
                loss = max(-t, 0.0) + np.log1p(e)
                wl[k, j] = swk[j] * loss
            if grad:
                w = swk[j] * yk[j] * s
                if w != 0.0:
                    for a in range(nnz):
                        acc_g[cols[a]] += w * vals[a]
            if hess:
                w = swk[j] * s * s1
                if summed:
                    w = w * hwk
                if w == 0.0:
                    continue
                if binary:
                    _binary_row(T, w, cols, offs, nnz)
                else:
                    _real_row(T, w, cols, vals, offs, nnz, repeats)
        if grad:
            gk = g[k]
            for q in range(d):
                gk[q] = lam * th[q] - acc_g[q]
        if hess and not summed:
            _unpack_lower(T, lam_h, H[k])
    if hess and summed:
        _unpack_lower(T, lam_h, H[0])


# ---- dense: rows scaled in a one-client buffer, one dsyrk per client ------------------------
@nb.njit(cache=True, nogil=True)
def _syrk_client(A_k, v_k, buf, H, beta, consts):
    """Lower triangle of H = beta H + sum_j v_k[j] a_j a_j^T, one dsyrk on the rows with
    v > 0 scaled by sqrt(v) into ``buf``. consts: [uplo 'U', trans 'N'] bytes and [d] int32
    (the order and both leading dimensions)."""
    d = _U(A_k.shape[1])
    cnt = _U(0)
    for j in range(_U(A_k.shape[0])):
        w = v_k[j]
        if w > 0.0:
            s = np.sqrt(w)
            row, out = A_k[j], buf[cnt]
            for q in range(d):
                out[q] = s * row[q]
            cnt += _U(1)
    if cnt == 0:
        if beta[0] == 0.0:
            _zero_lower(H)
        return
    ch, dims = consts
    kk = np.empty(1, dtype=np.int32)
    kk[0] = cnt
    alpha = np.ones(1)
    # column-major buf is B^T (d x cnt): B^T B into the column-major upper = C-order lower
    _dsyrk(
        ch[0:].ctypes,
        ch[1:].ctypes,
        dims.ctypes,
        kk.ctypes,
        alpha.ctypes,
        buf.ctypes,
        dims.ctypes,
        beta.ctypes,
        H.ctypes,
        dims.ctypes,
    )


@nb.njit(cache=True, nogil=True)
def dense_gram(A, v, lam, out):
    """out[k] = A[k]^T diag(v[k]) A[k] + lam I, A (m, n, d), v (m, n) >= 0, out (m, d, d)."""
    m, n, d = A.shape
    buf = np.empty((n, d))
    consts = (np.array([ord("U"), ord("N")], dtype=np.uint8), np.array([d], dtype=np.int32))
    beta = np.zeros(1)
    for k in range(m):
        _syrk_client(A[k], v[k], buf, out[k], beta, consts)
        _mirror_lower(out[k], lam)


@nb.njit(cache=True, nogil=True)
def dense_gram_sum(A, v, lam, out):
    """out = sum_k A[k]^T diag(v[k]) A[k] + lam I (weights folded into v >= 0); out (d, d)."""
    m, n, d = A.shape
    buf = np.empty((n, d))
    consts = (np.array([ord("U"), ord("N")], dtype=np.uint8), np.array([d], dtype=np.int32))
    beta = np.ones(1)
    _zero_lower(out)
    for k in range(m):
        _syrk_client(A[k], v[k], buf, out, beta, consts)
    _mirror_lower(out, lam)


# ---- Cholesky -------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def potrf_stack(L):
    """Factor every matrix of L (m, d, d) in place into its lower Cholesky factor (zeros above
    the diagonal). Returns the index of the first matrix that is not positive definite, or -1
    (the matrices from that one on are then left partly factored)."""
    m, d = L.shape[0], L.shape[1]
    uplo = np.array([ord("U")], dtype=np.uint8)
    n = np.array([d], dtype=np.int32)
    info = np.zeros(1, dtype=np.int32)
    for k in range(m):
        _dpotrf(uplo.ctypes, n.ctypes, L[k].ctypes, n.ctypes, info.ctypes)
        if info[0] != 0:
            return k
        for p in range(_U(d)):
            for q in range(p + _U(1), _U(d)):
                L[k, p, q] = 0.0
    return -1


@nb.njit(cache=True, nogil=True)
def potrs_stack(L, b, x):
    """x[k] = (L_k L_k^T)^{-1} b[k] for lower factors L (m, d, d) and b, x (m, r, d): r
    right-hand sides per matrix (x may be b)."""
    m, d = L.shape[0], L.shape[1]
    uplo = np.array([ord("U")], dtype=np.uint8)
    n = np.array([d], dtype=np.int32)
    nrhs = np.array([b.shape[1]], dtype=np.int32)
    info = np.zeros(1, dtype=np.int32)
    for k in range(m):
        if x.ctypes.data != b.ctypes.data:
            x[k] = b[k]
        _dpotrs(
            uplo.ctypes,
            n.ctypes,
            nrhs.ctypes,
            L[k].ctypes,
            n.ctypes,
            x[k].ctypes,
            n.ctypes,
            info.ctypes,
        )


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "contract"})
def _cholesky_substitutions(buf, n, y):
    """y <- (U^T U)^{-1} y for dpotrf's "L" factor of an n x n block, read row-major as the
    upper factor U = buf[:n * n]: U^T z = y along the rows of U (axpy), then U x = z along them
    (dot products). Twice as fast as dpotrs for one right-hand side (4.8 against 2.8 us at
    n = 97, 36 against 15 us at n = 300), whose two triangular solves walk columns."""
    for j in range(n):
        yj = y[j] / buf[j * n + j]
        y[j] = yj
        for i in range(j + _U(1), n):
            y[i] -= yj * buf[j * n + i]
    for back in range(n):
        i = n - _U(1) - back
        s = y[i]
        for t in range(i + _U(1), n):
            s -= buf[i * n + t] * y[t]
        y[i] = s / buf[i * n + i]


@nb.njit(cache=True, nogil=True)
def _all_coupled(Pk):
    """A quick sufficient test (O(d) on a dense matrix): every row but the last has a
    non-zero right of the diagonal and the last column one above it."""
    d = _U(Pk.shape[0])
    last = d - _U(1)
    for p in range(last):
        for q in range(p + _U(1), d):
            if Pk[p, q] != 0.0:
                break
        else:
            return False
    for q in range(last):
        if Pk[q, last] != 0.0:
            return True
    return d == 1


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _used_coordinates(Pk, col, idx):
    """Coordinates of Pk coupled to another one in its upper triangle (LAPACK reads only that
    triangle): a non-zero in row p right of the diagonal or in column p above it. Writes them
    to idx in increasing order and returns their count. One pass over the triangle, row by
    row; ``col`` (d,) accumulates |column| above the diagonal (a sum of |x| is 0 only when every
    x is 0; NaN and inf count as non-zero)."""
    d = _U(Pk.shape[0])
    if _all_coupled(Pk):
        for p in range(d):
            idx[p] = p
        return d
    col[:] = 0.0
    cnt = _U(0)
    for p in range(d):
        row = 0.0
        for q in range(p + _U(1), d):
            a = abs(Pk[p, q])
            col[q] += a
            row += a
        if not (row == 0.0 and col[p] == 0.0):
            idx[cnt] = p
            cnt += _U(1)
    return cnt


@nb.njit(cache=True, nogil=True)
def spd_solve_stack(P, b, x):  # noqa: C901 - one compiled loop; helpers cost calls in numba
    """x[k] = P[k]^{-1} b[k] for SPD P (m, d, d) (upper triangles read) and b, x (m, r, d).

    Each matrix is factored right before its solve on one buffer (P is left alone). A
    coordinate j whose row of the upper triangle and column above the diagonal are all zero
    (a feature that none of a client's rows uses: P_jj = lam + delta) is decoupled, x_j =
    b_j / P_jj, and only the other coordinates are factored: w8a's clients use 146 of 300
    features (median), so their factorisations cost 9 times fewer flops. Returns the index
    of the first matrix that is not positive definite, or -1.
    """
    m, d, r = P.shape[0], _U(P.shape[1]), _U(b.shape[1])
    buf = np.empty(d * d)
    rhs = np.empty(d * r)
    idx = np.empty(d, dtype=np.uint64)
    col = np.empty(d)
    uplo = np.array([ord("L")], dtype=np.uint8)  # OpenBLAS: 'L' is the faster of the two
    n = np.zeros(1, dtype=np.int32)
    nrhs = np.array([r], dtype=np.int32)
    info = np.zeros(1, dtype=np.int32)
    for k in range(m):
        Pk, bk, xk = P[k], b[k], x[k]
        cnt = _used_coordinates(Pk, col, idx)
        a = _U(0)
        for p in range(d):  # the decoupled coordinates: x_p = b_p / P_pp
            if a < cnt and idx[a] == p:
                a += _U(1)
            elif Pk[p, p] <= 0.0:
                return k
            else:
                for j in range(r):
                    xk[j, p] = bk[j, p] / Pk[p, p]
        if cnt == 0:
            continue
        # the used block, row-major upper = column-major lower, leading dimension cnt
        if cnt == d:
            for a in range(d):
                for c in range(a, d):
                    buf[a * d + c] = Pk[a, c]
        else:
            for a in range(cnt):
                row = Pk[idx[a]]
                for c in range(a, cnt):
                    buf[a * cnt + c] = row[idx[c]]
        n[0] = cnt
        _dpotrf(uplo.ctypes, n.ctypes, buf.ctypes, n.ctypes, info.ctypes)
        if info[0] != 0:
            return k
        for j in range(r):
            for a in range(cnt):
                rhs[j * cnt + a] = bk[j, idx[a]]
        if r == 1:
            _cholesky_substitutions(buf, cnt, rhs)
        else:
            _dpotrs(
                uplo.ctypes,
                n.ctypes,
                nrhs.ctypes,
                buf.ctypes,
                n.ctypes,
                rhs.ctypes,
                n.ctypes,
                info.ctypes,
            )
        for j in range(r):
            for a in range(cnt):
                xk[j, idx[a]] = rhs[j * cnt + a]
    return -1


# ---- FedNL's top-K Hessian learning, one client at a time -----------------------------------
@nb.njit(cache=True, nogil=True)
def _kth_largest(scratch, T, K):
    """The K-th largest value of scratch[:T] (1 <= K <= T), by quickselect in place."""
    lo, hi, want = 0, T - 1, T - K  # position of the K-th largest in ascending order
    while lo < hi:
        p = scratch[(lo + hi) >> 1]  # Hoare partition around the middle value
        a, b = lo, hi
        while a <= b:
            while scratch[a] < p:
                a += 1
            while scratch[b] > p:
                b -= 1
            if a <= b:
                scratch[a], scratch[b] = scratch[b], scratch[a]
                a += 1
                b -= 1
        if want <= b:
            hi = b
        elif want >= a:
            lo = a
        else:
            return scratch[want]
    return scratch[want]


@nb.njit(cache=True, nogil=True)
def _frobenius_norm(vals, start, d):
    """Frobenius norm of the symmetric matrix whose upper triangle is ``vals`` (row major,
    row i from ``start[i]``): an off-diagonal entry counts twice."""
    acc = 0.0
    for i in range(d):
        s = start[i]
        acc += vals[s] * vals[s]
        for t in range(s + 1, s + d - i):
            acc += 2.0 * (vals[t] * vals[t])
    return np.sqrt(acc)


@nb.njit(cache=True, nogil=True)
def _extreme_eigenvalues(S, n, work):
    """(smallest, largest) eigenvalue of the symmetric n x n matrix S (overwritten), from
    LAPACK's tridiagonal reduction ``dsytrd`` and bisection ``dstebz`` for the two extreme
    eigenvalues alone, to full accuracy (abstol = twice the underflow threshold, as LAPACK
    advises): all n eigenvalues (``dsyevd``'s ``dsterf``) cost as much again as the
    reduction. ``work`` holds at least 64 n + 7 n floats."""
    N = np.array([n], dtype=np.int32)
    info = np.zeros(1, dtype=np.int32)
    diag, off, tau = work[:n], work[n : 2 * n], work[2 * n : 3 * n]
    lwork = np.array([64 * n], dtype=np.int32)
    uplo = np.array([ord("L")], dtype=np.uint8)
    _dsytrd(uplo.ctypes, N.ctypes, S.ctypes, N.ctypes, diag.ctypes, off.ctypes, tau.ctypes,
            work[3 * n : 67 * n].ctypes, lwork.ctypes, info.ctypes)  # fmt: skip
    rng, order = np.array([ord("I")], dtype=np.uint8), np.array([ord("E")], dtype=np.uint8)
    vl, vu = np.zeros(1), np.zeros(1)
    abstol = np.array([2.0 * np.finfo(np.float64).tiny])
    m, nsplit = np.zeros(1, dtype=np.int32), np.zeros(1, dtype=np.int32)
    w = np.empty(n)
    iblock, isplit = np.empty(n, dtype=np.int32), np.empty(n, dtype=np.int32)
    iwork = np.empty(3 * n, dtype=np.int32)
    out = np.empty(2)
    for k in range(2):
        at = np.array([1 if k == 0 else n], dtype=np.int32)
        _dstebz(rng.ctypes, order.ctypes, N.ctypes, vl.ctypes, vu.ctypes, at.ctypes, at.ctypes,
                abstol.ctypes, diag.ctypes, off.ctypes, m.ctypes, nsplit.ctypes, w.ctypes,
                iblock.ctypes, isplit.ctypes, work[67 * n : 71 * n].ctypes, iwork.ctypes,
                info.ctypes)  # fmt: skip
        out[k] = w[0]
    return out[0], out[1]


@nb.njit(cache=True, nogil=True)
def _spectral_norm(vals, start, d, used, idx, sub):
    """max |eigenvalue| of the symmetric d x d matrix whose upper triangle is ``vals`` (row
    major, row i from ``start[i]``), from the principal block of its coordinates with a
    non-zero entry: a coordinate whose row and column are zero only adds the eigenvalue 0.
    NaN if an entry is NaN or infinite (as LAPACK's eigvalsh on the whole matrix gives).
    ``sub`` holds at least d * d + 71 d floats."""
    used[:] = False
    for i in range(d):
        s = start[i]
        for j in range(i, d):
            v = vals[s + j - i]
            if not (v - v == 0.0):  # NaN or +-inf (inf - inf is NaN)
                return np.nan
            if v != 0.0:
                used[i] = True
                used[j] = True
    n = 0
    for i in range(d):
        if used[i]:
            idx[n] = i
            n += 1
    if n == 0:
        return 0.0
    S = sub[: n * n].reshape(n, n)
    for a in range(n):
        i = idx[a]
        for b in range(a, n):
            v = vals[start[i] + idx[b] - i]
            S[a, b] = v
            S[b, a] = v
    lo, hi = _extreme_eigenvalues(S, n, sub[n * n : n * n + 71 * n])
    return max(abs(lo), abs(hi))


@nb.njit(cache=True, nogil=True)
def topk_learn(H, T, rows, K, alpha, norm_kind, norms):  # noqa: C901 - one compiled loop
    """FedNL's top-K learning, in place: for k < m, client slot r = rows[k] of the stack H
    (N, d, d) gets H[r] += alpha C(T[k] - H[r]), C = the K entries of largest magnitude of the
    upper triangle (diagonal included), mirrored; exact ties in magnitude go to the LARGER
    position in row-major order (the order of (i, j)), and a NaN counts as the largest
    magnitude (it reaches H[r] instead of being dropped). ``alpha`` = 1 adds the values
    themselves (no product). ``norm_kind``: 0 none, 1 / 2 Frobenius norm of the difference
    before / after the update, 3 / 4 its spectral norm before / after, written to norms[k].
    Temporaries: two vectors of d(d+1)/2 and one d x d buffer (spectral only)."""
    m, d = T.shape[0], T.shape[1]
    tri = d * (d + 1) // 2
    start = np.empty(d, dtype=np.int64)
    s = 0
    for i in range(d):
        start[i] = s
        s += d - i
    vals = np.empty(tri)
    scratch = np.empty(tri)
    used = np.empty(d, dtype=np.bool_)
    idx = np.empty(d, dtype=np.int64)
    sub = np.empty(d * d + 71 * d if norm_kind >= 3 else 1)
    K = min(K, tri)
    for k in range(m):
        Hr, Tk = H[rows[k]], T[k]
        npos = 0  # the non-zero magnitudes, gathered in scratch for the selection
        for i in range(_U(d)):
            s = _U(start[i]) - i
            for j in range(i, _U(d)):
                v = Tk[i, j] - Hr[i, j]
                vals[s + j] = v
                a = np.inf if v != v else abs(v)
                if a > 0.0:
                    scratch[npos] = a
                    npos += 1
        if norm_kind == 1:
            norms[k] = _frobenius_norm(vals, start, d)
        elif norm_kind == 3:
            norms[k] = _spectral_norm(vals, start, d, used, idx, sub)
        # the K-th largest magnitude: -1 when every entry is kept; 0 when fewer than K are
        # non-zero (sparse data: a third to a half of the w8a clients' differences); else the
        # K-th largest of the non-zero ones alone (the same value, from a shorter list)
        # and how many magnitudes lie above it and at it
        if K >= tri:
            kth, greater, equal = -1.0, tri, 0
        elif npos < K:
            kth, greater, equal = 0.0, npos, tri - npos
        else:
            kth = _kth_largest(scratch, npos, K)
            greater, equal = 0, 0
            for t in range(npos):  # the others are 0 < kth (scratch is permuted: counts only)
                greater += scratch[t] > kth
                equal += scratch[t] == kth
        skip = equal - (K - greater)  # the first ties in (i, j) order are left out
        for i in range(_U(d)):
            s = _U(start[i]) - i
            for j in range(i, _U(d)):
                w = vals[s + j]
                a = np.inf if w != w else abs(w)  # the magnitude again: no array of them
                if a < kth:
                    continue
                if a == kth and skip > 0:
                    skip -= 1
                    continue
                v = vals[s + j] if alpha == 1.0 else alpha * vals[s + j]
                Hr[i, j] += v
                if i != j:
                    Hr[j, i] += v
                vals[s + j] -= v
        if norm_kind == 2:
            norms[k] = _frobenius_norm(vals, start, d)
        elif norm_kind == 4:
            norms[k] = _spectral_norm(vals, start, d, used, idx, sub)


# ---- FedPM's server inputs in one pass over the stack ------------------------------------------
@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "contract"})
def mix_and_apply(P, x, w, S, v):
    """S = sum_k w[k] P[k] (d, d) and v[k] = P[k] x[k] (m, d) in one pass over the stack P
    (m, d, d): each row of P[k] is read once, for both (two BLAS calls read the stack twice)."""
    m, d = _U(P.shape[0]), _U(P.shape[1])
    S[:, :] = 0.0
    for k in range(m):
        wk, xk = w[k], x[k]
        for i in range(d):
            row, Si = P[k, i], S[i]
            acc = 0.0
            for j in range(d):
                p = row[j]
                Si[j] += wk * p
                acc += p * xk[j]
            v[k, i] = acc
