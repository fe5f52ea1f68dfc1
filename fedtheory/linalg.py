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


def _failing_index(P: Any) -> int:
    """Index of the first matrix of the stack P (m, d, d) whose factorisation fails."""
    xp = xp_of(P)
    for k in range(P.shape[0]):
        if xp is np:
            try:
                np.linalg.cholesky(P[k])
            except np.linalg.LinAlgError:
                return k
        else:
            import cupyx

            try:
                with cupyx.errstate(linalg="raise"):
                    xp.linalg.cholesky(P[k])
            except np.linalg.LinAlgError:
                return k
    return 0


def cholesky(P: Any, *, labels: Sequence[Any] | None = None, what: str = "preconditioner",
             hint: str = "use lam > 0 or delta > 0", block: int | None = None) -> Any:
    """Lower Cholesky factors of a stack of SPD matrices ``P`` of shape (..., d, d).

    ``block=None`` calls the backend's LAPACK / cuSOLVER routine on each matrix of the stack;
    ``block=b`` runs a right-looking blocked factorisation over the whole stack at once: the
    library routine on b x b diagonal blocks, then a batched triangular solve for the panel and
    a batched matrix product for the trailing update. Same factor to rounding (tested), but the
    work becomes batched BLAS-3, which is faster for many mid-sized matrices on a GPU.
    Raises FactorizationError naming the first matrix that is not positive definite:
    ``labels[k]`` (a client id) for a stack of shape (m, d, d).
    """
    d = P.shape[-1]
    if block is not None and block < d and P.ndim == 3:
        try:
            return _blocked_cholesky(P, block)
        except np.linalg.LinAlgError:
            pass
    else:
        try:
            return _library_cholesky(P)
        except np.linalg.LinAlgError:
            pass
    if P.ndim == 2:
        raise FactorizationError(f"the {what} is not positive definite: {hint}")
    k = _failing_index(P.reshape(-1, *P.shape[-2:]))
    who = labels[k] if labels is not None else k
    raise FactorizationError(f"the {what} of client {who} is not positive definite: {hint}")


def _library_cholesky(P: Any) -> Any:
    """The backend's own (batched) Cholesky; raises numpy.linalg.LinAlgError on failure."""
    xp = xp_of(P)
    if xp is np:
        return np.linalg.cholesky(P)
    import cupyx  # CuPy returns garbage silently unless told to raise (a tiny device sync)

    with cupyx.errstate(linalg="raise"):
        return xp.linalg.cholesky(P)


def _blocked_cholesky(P: Any, nb: int) -> Any:
    xp = xp_of(P)
    d = P.shape[-1]
    L = P.copy()
    for j in range(0, d, nb):
        e = min(j + nb, d)
        L11 = _library_cholesky(L[:, j:e, j:e])
        L[:, j:e, j:e] = L11
        if e < d:
            L21 = _solve_tri(L11, L[:, e:, j:e].transpose(0, 2, 1), trans=0)
            L21 = L21.transpose(0, 2, 1)
            L[:, e:, j:e] = L21
            L[:, e:, e:] -= xp.matmul(L21, L21.transpose(0, 2, 1))
    return xp.tril(L)


def _solve_tri(L: Any, B: Any, trans: int) -> Any:
    """Solve L X = B (trans=0) or L^T X = B (trans=1) for lower-triangular L, batched."""
    if xp_of(L, B) is np:
        from scipy.linalg import solve_triangular
    else:
        from cupyx.scipy.linalg import solve_triangular
    return solve_triangular(L, B, lower=True, trans=trans, check_finite=False)


def cho_solve(L: Any, b: Any) -> Any:
    """Solve (L L^T) x = b for lower factors L (..., d, d) and right-hand sides b (..., d)."""
    z = _solve_tri(L, b[..., None], trans=0)
    return _solve_tri(L, z, trans=1)[..., 0]


# Block size of the blocked Cholesky per backend (None: the library routine), set from
# benchmarks/bench_linalg.py measurements; see BENCHMARKS.md.
CHOLESKY_BLOCK: dict[str, int | None] = {"numpy": None, "cupy": None}


def spd_solve(P: Any, b: Any, *, labels: Sequence[Any] | None = None,
              what: str = "preconditioner", hint: str = "use lam > 0 or delta > 0") -> Any:
    """x = P^{-1} b through a Cholesky factorisation; batched over leading axes."""
    block = CHOLESKY_BLOCK["numpy" if xp_of(P) is np else "cupy"]
    return cho_solve(cholesky(P, labels=labels, what=what, hint=hint, block=block), b)


def add_diag(P: Any, c: float) -> Any:
    """P + c I for a stack (..., d, d); returns a new array (P is left alone)."""
    if c == 0:
        return P
    xp = xp_of(P)
    return P + c * xp.eye(P.shape[-1], dtype=P.dtype)


def sym_floats(d: int) -> int:
    """Floats needed to send a symmetric d x d matrix (its upper triangle)."""
    return d * (d + 1) // 2
