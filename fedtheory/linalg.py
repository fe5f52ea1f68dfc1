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
             hint: str = "use lam > 0 or delta > 0") -> Any:
    """Lower Cholesky factors of a stack of SPD matrices ``P`` of shape (..., d, d).

    Raises FactorizationError naming the first matrix that is not positive definite:
    ``labels[k]`` (a client id) for a stack of shape (m, d, d).
    """
    xp = xp_of(P)
    if xp is np:
        try:
            return np.linalg.cholesky(P)
        except np.linalg.LinAlgError:
            pass
    else:  # CuPy returns garbage silently unless told to raise (this syncs on a tiny flag)
        import cupyx

        try:
            with cupyx.errstate(linalg="raise"):
                return xp.linalg.cholesky(P)
        except np.linalg.LinAlgError:
            pass
    if P.ndim == 2:
        raise FactorizationError(f"the {what} is not positive definite: {hint}")
    k = _failing_index(P.reshape(-1, *P.shape[-2:]))
    who = labels[k] if labels is not None else k
    raise FactorizationError(f"the {what} of client {who} is not positive definite: {hint}")


def cho_solve(L: Any, b: Any) -> Any:
    """Solve (L L^T) x = b for lower factors L (..., d, d) and right-hand sides b (..., d)."""
    xp = xp_of(L, b)
    if xp is np:
        from scipy.linalg import solve_triangular
    else:
        from cupyx.scipy.linalg import solve_triangular
    z = solve_triangular(L, b[..., None], lower=True, check_finite=False)
    x = solve_triangular(L, z, lower=True, trans="T", check_finite=False)
    return x[..., 0]


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
