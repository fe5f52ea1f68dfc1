"""SPD solves by Cholesky factorisation, batched over a leading axis, on NumPy or CuPy.

Every SPD solve in the suite goes through :func:`spd_solve` (ALGORITHMS.md: "All solves with
SPD matrices use Cholesky factorisations, never explicit inverses"). A failed factorisation
raises :class:`~fedtheory.errors.FactorizationError` naming the client, never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._backend import xp_of
from .errors import FactorizationError


class _NotPositiveDefinite(Exception):
    def __init__(self, index: int) -> None:
        self.index = index


def _failing_index(P: Any) -> int:
    """Index of the first matrix of the stack P (m, d, d) whose factorisation fails."""
    for k in range(P.shape[0]):
        try:
            np.linalg.cholesky(P[k])
        except np.linalg.LinAlgError:
            return k
    return 0


def cholesky(P: Any, *, labels: Sequence[Any] | None = None, what: str = "preconditioner",
             hint: str = "use lam > 0 or delta > 0") -> Any:
    """Lower Cholesky factors (zeros above the diagonal) of SPD matrices P (..., d, d).

    NumPy: LAPACK through ``numpy.linalg.cholesky``. CuPy: cuSOLVER's batched potrf on one copy
    of the stack, factored in place (CuPy's own ``cholesky`` makes a second temporary copy).
    Raises FactorizationError naming the first matrix that is not positive definite:
    ``labels[k]`` (a client id) for a stack of shape (m, d, d).
    """
    try:
        return _library_cholesky(P)
    except _NotPositiveDefinite as exc:
        if P.ndim == 2:
            raise FactorizationError(f"the {what} is not positive definite: {hint}") from None
        who = labels[exc.index] if labels is not None else exc.index
        raise FactorizationError(
            f"the {what} of client {who} is not positive definite: {hint}") from None


def _library_cholesky(P: Any) -> Any:
    xp = xp_of(P)
    if xp is np:
        try:
            return np.linalg.cholesky(P)
        except np.linalg.LinAlgError:
            raise _NotPositiveDefinite(
                _failing_index(P.reshape(-1, *P.shape[-2:])) if P.ndim > 2 else 0) from None
    if P.ndim == 2:
        import cupyx

        try:
            with cupyx.errstate(linalg="raise"):
                return xp.linalg.cholesky(P)
        except np.linalg.LinAlgError:
            raise _NotPositiveDefinite(0) from None
    return _cupy_batched_cholesky(P)


def _cupy_batched_cholesky(P: Any, check: bool = True) -> Any:
    """``check=False`` skips the info check (and its device sync): for the benchmark that
    measures what the check costs, never for results."""
    import cupy
    from cupy.cuda import device
    from cupy_backends.cuda.libs import cublas, cusolver

    x = cupy.array(P, dtype=cupy.float64, order="C", copy=True)
    n = x.shape[-1]
    batch = x.size // (n * n)
    step = n * n * x.itemsize
    ptrs = cupy.arange(x.data.ptr, x.data.ptr + step * batch, step, dtype=cupy.uintp)
    info = cupy.empty(batch, dtype=cupy.int32)
    # column-major UPPER of a C-ordered matrix is its row-major LOWER triangle
    cusolver.dpotrfBatched(device.get_cusolver_handle(), cublas.CUBLAS_FILL_MODE_UPPER, n,
                           ptrs.data.ptr, n, info.data.ptr, batch)
    if check:
        bad = cupy.flatnonzero(info)      # a device sync on a few bytes, to raise if needed
        if bad.size:
            raise _NotPositiveDefinite(int(bad[0]))
    x *= cupy.tri(n, dtype=x.dtype)      # zero the upper triangle in place
    return x


def cho_solve(L: Any, b: Any) -> Any:
    """Solve (L L^T) x = b for lower factors L (..., d, d) and right-hand sides b (..., d)."""
    return _solve_tri(L, _solve_tri(L, b, trans=0), trans=1)


def _solve_tri(L: Any, b: Any, trans: int) -> Any:
    """Solve L x = b (trans=0) or L^T x = b (trans=1), L lower (..., d, d), b (..., d).

    CuPy: cuBLAS's batched trsm. NumPy: SciPy's solve_triangular handles a batch one matrix
    at a time in Python, so for stacks with more matrices than columns the substitution runs
    over the d columns instead, each step batched over the stack.
    """
    xp = xp_of(L, b)
    if xp is not np:
        from cupyx.scipy.linalg import solve_triangular

        return solve_triangular(L, b[..., None], lower=True, trans=trans)[..., 0]
    d = L.shape[-1]
    batch = b.size // d
    if L.ndim == 2 or batch <= d:
        from scipy.linalg import solve_triangular

        return solve_triangular(L, b[..., None], lower=True, trans=trans,
                                check_finite=False)[..., 0]
    x = np.empty_like(b)
    if trans == 0:
        for i in range(d):
            x[..., i] = (b[..., i] - np.einsum("...j,...j->...", L[..., i, :i], x[..., :i])
                         ) / L[..., i, i]
    else:
        for i in range(d - 1, -1, -1):
            x[..., i] = (b[..., i] - np.einsum("...j,...j->...", L[..., i + 1:, i],
                                               x[..., i + 1:])) / L[..., i, i]
    return x


def spd_solve(P: Any, b: Any, *, labels: Sequence[Any] | None = None,
              what: str = "preconditioner", hint: str = "use lam > 0 or delta > 0") -> Any:
    """x = P^{-1} b through a Cholesky factorisation; batched over leading axes."""
    return cho_solve(cholesky(P, labels=labels, what=what, hint=hint), b)


def add_diag(P: Any, c: float) -> Any:
    """P + c I for a stack (..., d, d); returns a new array (P is left alone)."""
    if c == 0:
        return P
    xp = xp_of(P)
    return P + c * xp.eye(P.shape[-1], dtype=P.dtype)


def sym_floats(d: int) -> int:
    """Floats needed to send a symmetric d x d matrix (its upper triangle)."""
    return d * (d + 1) // 2
