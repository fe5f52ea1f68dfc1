"""SPD solves by Cholesky factorisation, batched over a leading axis, on NumPy or CuPy.

Every SPD solve in the suite goes through :func:`spd_solve` (docs/algorithms.md: "All solves
with SPD matrices use Cholesky factorisations, never explicit inverses"). A failed factorisation
raises :class:`~fedtheory.errors.FactorizationError` naming the client, never NaN.

NumPy (float64): LAPACK's ``dpotrf`` / ``dpotrs`` called per matrix from one compiled loop
(:mod:`fedtheory.kernels`), with no copy of the stack in or out of LAPACK's layout:
:func:`spd_solve` factors each matrix on one d x d buffer right before its solve (no stack of
factors at all), :func:`cholesky` factors its one output copy in place. CuPy:
:func:`spd_solve` factors and solves matrices of up to 238 rows (an H100 or H200) in one
shared-memory kernel launch (:func:`fedtheory.cuda_kernels.chol_solve`); larger ones, and
:func:`cholesky`, use cuSOLVER's batched potrf and cuBLAS's batched trsm.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

from . import kernels
from ._backend import xp_of
from ._types import Array
from .errors import FactorizationError


class _NotPositiveDefinite(Exception):
    def __init__(self, index: int) -> None:
        self.index = index


def _failing_index(P: Array) -> int:
    """Index of the first matrix of the stack P (m, d, d) whose factorisation fails."""
    for k in range(P.shape[0]):
        try:
            np.linalg.cholesky(P[k])
        except np.linalg.LinAlgError:
            return k
    return 0


def cholesky(
    P: Array,
    *,
    labels: Sequence[Any] | None = None,
    what: str = "preconditioner",
    hint: str = "use lam > 0 or delta > 0",
) -> Array:
    """Lower Cholesky factors (zeros above the diagonal) of SPD matrices P (..., d, d).

    NumPy float64: LAPACK's dpotrf on one C-ordered copy of P, factored in place (the lower
    triangle of P is read). Other NumPy dtypes: ``numpy.linalg.cholesky``. CuPy: cuSOLVER's
    batched potrf on one copy of the stack, factored in place (CuPy's own ``cholesky`` makes a
    second temporary copy). Raises FactorizationError naming the first matrix that is not
    positive definite: ``labels[k]`` (a client id) for a stack of shape (m, d, d).
    """
    pending = _PENDING.get()
    if pending is not None and not _lapack_ready(P) and xp_of(P) is not np:
        L, info = _cupy_batched_cholesky(P if P.ndim > 2 else P[None], check=False, info=True)
        pending.append((info, P.ndim, labels, what, hint))
        return L if P.ndim > 2 else L[0]
    try:
        return _library_cholesky(P)
    except _NotPositiveDefinite as exc:
        _raise(P.ndim, exc.index, labels, what, hint)


#: The factorisation statuses left on the device by :class:`DeferredChecks` (None: check at
#: once).
_PENDING: ContextVar[list[tuple[Any, ...]] | None] = ContextVar("fedtheory_pending", default=None)


class DeferredChecks:
    """Factorisation checks on a GPU without a device synchronisation per factorisation.

    Inside ``with checks.active():`` a CuPy Cholesky factorisation leaves its status (cuSOLVER's
    info array) on the device instead of reading it back; :meth:`check` reads back every
    pending status at once and raises the :class:`~fedtheory.errors.FactorizationError` the
    first failed one would have raised, naming the client. The runner activates this around
    each round and checks at every device synchronisation (each logged round), so rounds in
    between need no host round trip (issue 15). NumPy factorisations raise at once, as always.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[Any, ...]] = []

    @contextmanager
    def active(self) -> Iterator[None]:
        token = _PENDING.set(self.pending)
        try:
            yield
        finally:
            _PENDING.reset(token)

    def check(self) -> None:
        pending, self.pending[:] = list(self.pending), []
        for info, ndim, labels, what, hint in pending:
            bad = xp_of(info).flatnonzero(info)
            if bad.size:
                _raise(ndim, int(bad[0]), labels, what, hint)


def _raise(ndim: int, index: int, labels: Sequence[Any] | None, what: str, hint: str) -> None:
    if ndim == 2:
        raise FactorizationError(f"the {what} is not positive definite: {hint}") from None
    who = labels[index] if labels is not None else index
    raise FactorizationError(
        f"the {what} of client {who} is not positive definite: {hint}"
    ) from None


def _lapack_ready(*arrays: Array) -> bool:
    """NumPy float64 arrays with a matrix axis: the compiled LAPACK loops apply."""
    return (
        all(type(a) is np.ndarray and a.dtype == np.float64 for a in arrays)
        and arrays[0].ndim >= 2
        and arrays[0].shape[-1] >= 1
    )


def _library_cholesky(P: Array) -> Array:
    xp = xp_of(P)
    if _lapack_ready(P):
        L = np.array(P, order="C", copy=True)
        bad = kernels.potrf_stack(L.reshape(-1, *P.shape[-2:]))
        if bad >= 0:
            raise _NotPositiveDefinite(bad)
        return L
    if xp is np:
        try:
            return np.linalg.cholesky(P)
        except np.linalg.LinAlgError:
            raise _NotPositiveDefinite(
                _failing_index(P.reshape(-1, *P.shape[-2:])) if P.ndim > 2 else 0
            ) from None
    if P.ndim == 2:  # cuSOLVER through fedtheory.gpu_blas, as the stacks (recordable)
        return _cupy_batched_cholesky(P[None])[0]
    return _cupy_batched_cholesky(P)


def _cupy_batched_cholesky(P: Array, check: bool = True, info: bool = False) -> Array:
    """``check=False`` skips the info check (and its device sync): for the benchmark that
    measures what the check costs, and for :class:`DeferredChecks`, which also asks for the
    info array (``info=True``: returns (factors, info))."""
    import cupy

    from . import gpu_blas

    x = cupy.array(P, dtype=cupy.float64, order="C", copy=True)
    n = x.shape[-1]
    status = gpu_blas.potrf_batched(x.reshape(-1, n, n))  # cuSOLVER, no host round trip
    if check:
        bad = cupy.flatnonzero(status)  # a device sync on a few bytes, to raise if needed
        if bad.size:
            raise _NotPositiveDefinite(int(bad[0]))
    x *= cupy.tri(n, dtype=x.dtype)  # zero the upper triangle in place
    return (x, status) if info else x


def cho_solve(L: Array, b: Array) -> Array:
    """Solve (L L^T) x = b for lower factors L (..., d, d) and right-hand sides b (..., d)."""
    stacked = _stacked(L, b)
    if stacked is not None:
        Ls, bs = stacked
        x = np.empty(bs.shape)
        kernels.potrs_stack(Ls, bs, x)
        return x.reshape(np.shape(b))
    return _solve_tri(L, _solve_tri(L, b, trans=0), trans=1)


def _stacked(P: Array, b: Array) -> tuple[np.ndarray, np.ndarray] | None:
    """P as a C-contiguous stack (k, d, d) and b as (k, r, d) for the compiled loops: one
    matrix with any number r of right-hand sides, or one right-hand side per matrix; None when
    the arrays are not NumPy float64 or do not pair up that way."""
    if not _lapack_ready(P, b) or P.shape[-1] != P.shape[-2] or b.shape[-1] != P.shape[-1]:
        return None
    d = P.shape[-1]
    if P.ndim == 2:
        return np.ascontiguousarray(P)[None], np.ascontiguousarray(b).reshape(1, -1, d)
    if b.shape[:-1] != P.shape[:-2]:
        return None
    return (np.ascontiguousarray(P).reshape(-1, d, d), np.ascontiguousarray(b).reshape(-1, 1, d))


def _solve_tri(L: Array, b: Array, trans: int) -> Array:
    """Solve L x = b (trans=0) or L^T x = b (trans=1), L lower (..., d, d), b (..., d).

    CuPy: cuBLAS's batched trsm. NumPy: SciPy's solve_triangular handles a batch one matrix
    at a time in Python, so for stacks with more matrices than columns the substitution runs
    over the d columns instead, each step batched over the stack.
    """
    xp = xp_of(L, b)
    if xp is not np and _trsm_ready(L, b):
        from . import gpu_blas

        n = L.shape[-1]
        stack = L.ndim > 2
        x = gpu_blas.trsm(L.reshape(-1, n, n) if stack else L, b.reshape(-1, n), trans)
        return x.reshape(b.shape)
    if xp is not np:
        from cupyx.scipy.linalg import solve_triangular

        return solve_triangular(L, b[..., None], lower=True, trans=trans)[..., 0]
    d = L.shape[-1]
    batch = b.size // d
    if L.ndim == 2 or batch <= d:
        from scipy.linalg import solve_triangular

        return solve_triangular(L, b[..., None], lower=True, trans=trans, check_finite=False)[
            ..., 0
        ]
    x = np.empty_like(b)
    if trans == 0:
        for i in range(d):
            x[..., i] = (b[..., i] - np.einsum("...j,...j->...", L[..., i, :i], x[..., :i])) / L[
                ..., i, i
            ]
    else:
        for i in range(d - 1, -1, -1):
            x[..., i] = (
                b[..., i] - np.einsum("...j,...j->...", L[..., i + 1 :, i], x[..., i + 1 :])
            ) / L[..., i, i]
    return x


def _trsm_ready(L: Array, b: Array) -> bool:
    """CuPy float64 factors that :func:`fedtheory.gpu_blas.trsm` takes as they are: one
    C-contiguous matrix with right-hand sides (..., d), or a C-contiguous stack with one
    right-hand side per matrix."""
    if not (L.dtype == b.dtype == np.float64 and L.flags.c_contiguous and L.ndim >= 2):
        return False
    d = L.shape[-1]
    if L.shape[-2] != d or b.shape[-1] != d:
        return False
    return L.ndim == 2 or b.shape[:-1] == L.shape[:-2]


def spd_solve(
    P: Array,
    b: Array,
    *,
    labels: Sequence[Any] | None = None,
    what: str = "preconditioner",
    hint: str = "use lam > 0 or delta > 0",
) -> Array:
    """x = P^{-1} b through a Cholesky factorisation; batched over leading axes.

    P (..., d, d) with b (..., d) (one right-hand side per matrix), or P (d, d) with b (d,) or
    (r, d). NumPy float64: each matrix is factored on one d x d buffer and solved at once
    (P is left alone, no stack of factors is formed; P's upper triangle is read), and a
    coordinate coupled to no other (a feature none of a client's rows uses) is solved alone,
    x_j = b_j / P_jj, so only the coupled block is factored
    (:func:`fedtheory.kernels.spd_solve_stack`). CuPy float64: matrices of up to 238 rows (an
    H100 or H200) in one fused kernel launch, which reads the upper triangle too
    (:func:`fedtheory.cuda_kernels.chol_solve`); larger ones by cuSOLVER and cuBLAS, which read
    the lower triangle. P is meant to be symmetric; a GPU Hessian product is symmetric only to
    rounding, so the triangle read matters at that level.
    """
    stacked = _stacked(P, b)
    if stacked is None:
        fused = _fused_gpu_solve(P, b, labels, what, hint)
        if fused is not None:
            return fused
        return cho_solve(cholesky(P, labels=labels, what=what, hint=hint), b)
    Ps, bs = stacked
    x = np.empty(bs.shape)
    bad = kernels.spd_solve_stack(Ps, bs, x)
    if bad >= 0:
        _raise(P.ndim, bad, labels, what, hint)
    return x.reshape(np.shape(b))


def _fused_gpu_solve(
    P: Array, b: Array, labels: Sequence[Any] | None, what: str, hint: str
) -> Array | None:
    """CuPy float64: a stack (m, d, d) with one right-hand side per matrix (m, d), or one
    matrix (d, d) with b (d,), whose matrices fit one block's shared memory, factored and
    solved in ONE kernel launch (:func:`fedtheory.cuda_kernels.chol_solve`), the status checked
    as :func:`cholesky` checks it (left on the device inside :class:`DeferredChecks`). None for
    anything else (the cuSOLVER / cuBLAS path)."""
    if xp_of(P, b) is np or not (P.dtype == b.dtype == np.float64):
        return None
    if not (P.ndim in (2, 3) and P.shape[-1] == P.shape[-2] and b.shape == P.shape[:-1]):
        return None
    from . import cuda_kernels

    if not cuda_kernels.chol_solve_fits(P.shape[-1]):
        return None
    xp = xp_of(P)
    x, status = cuda_kernels.chol_solve(
        xp.ascontiguousarray(P.reshape(-1, *P.shape[-2:])), b.reshape(-1, b.shape[-1])
    )
    pending = _PENDING.get()
    if pending is not None:
        pending.append((status, P.ndim, labels, what, hint))
    else:
        bad = xp.flatnonzero(status)  # a device sync on a few bytes
        if bad.size:
            _raise(P.ndim, int(bad[0]), labels, what, hint)
    return x.reshape(b.shape)


def add_diag(P: Array, c: float) -> Array:
    """P + c I for a stack (..., d, d); returns a new array (P is left alone)."""
    if c == 0:
        return P
    xp = xp_of(P)
    return P + c * xp.eye(P.shape[-1], dtype=P.dtype)


def sym_floats(d: int) -> int:
    """Floats needed to send a symmetric d x d matrix (its upper triangle)."""
    return d * (d + 1) // 2
