"""Exact oracles of the two objectives, batched over clients (ALGORITHMS.md "Objectives").

Client data are stored padded: ``A`` (m, n_max, d), targets ``y`` (m, n_max) and per-row weights
``sw`` (m, n_max) equal to 1/n_i on the client's real rows and 0 on padding, so clients of
unequal sizes share one array and

    f_i(theta) = sum_j sw_ij loss(a_ij, y_ij, theta) + (lam/2) ||theta||^2.

The margins A_i theta are computed once per evaluation and reused for value, gradient and
Hessian; all client Hessians come out of one batched matrix product
A^T (D A), with no per-sample outer product and no per-client Python loop. Logistic terms use
log-add-exp forms, finite for margins of any size (|z| = 1e3 included).

``theta`` is (d,) (every client at the same point) or (m, d) (one point per client).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._backend import xp_of


class OracleOut(NamedTuple):
    """Per-client value (m,), gradient (m, d) and Hessian (m, d, d); None where not asked for."""

    f: Any
    g: Any
    H: Any


def margins(A: Any, theta: Any) -> Any:
    """z_ij = a_ij^T theta_i, shape (m, n_max)."""
    if theta.ndim == 1:
        return A @ theta
    return (A @ theta[:, :, None])[..., 0]


def _weighted_gram(A: Any, v: Any, lam: float, hess_weights: Any = None) -> Any:
    """A_i^T diag(v_i) A_i + lam I for every client, one batched BLAS-3 product; or, with
    ``hess_weights`` w (m,), the single matrix sum_i w_i (A_i^T diag(v_i) A_i + lam I), built
    as one product over all rows without the (m, d, d) stack."""
    xp = xp_of(A)
    d = A.shape[-1]
    if hess_weights is None:
        H = xp.matmul(A.transpose(0, 2, 1), A * v[:, :, None])
        diag = H.reshape(H.shape[0], -1)[:, :: d + 1]
    else:
        flat = A.reshape(-1, d)
        H = flat.T @ (flat * (v * hess_weights[:, None]).reshape(-1, 1))
        diag = H.reshape(-1)[:: d + 1]
        lam = lam * float(hess_weights.sum())
    if lam:
        diag += lam
    return H


def _reg(theta: Any, m: int, lam: float, xp: Any) -> tuple[Any, Any]:
    t = theta if theta.ndim == 2 else xp.broadcast_to(theta, (m, theta.shape[0]))
    return 0.5 * lam * xp.sum(t * t, axis=-1), lam * t


def logistic(A: Any, y: Any, sw: Any, lam: float, theta: Any, *, value: bool = True,
             grad: bool = True, hess: bool = True, hess_weights: Any = None) -> OracleOut:
    """L2-regularised logistic loss, labels in {-1, +1}. With ``hess_weights`` the Hessian
    returned is sum_i w_i H_i (d, d) (see :func:`_weighted_gram`)."""
    xp = xp_of(A, theta)
    t = y * margins(A, theta)                  # y_j a_j^T theta
    loss = xp.logaddexp(0.0, -t)               # log(1 + exp(-t)), never overflows
    s = xp.exp(-(loss + t))                    # sigmoid(-t) = 1 / (1 + exp(t))
    f = g = H = None
    m = A.shape[0]
    if value or grad:
        r_val, r_grad = _reg(theta, m, lam, xp)
    if value:
        f = xp.sum(sw * loss, axis=1) + r_val
    if grad:
        g = -(A.transpose(0, 2, 1) @ (sw * y * s)[:, :, None])[..., 0] + r_grad
    if hess:
        H = _weighted_gram(A, sw * s * xp.exp(-loss), lam,  # s (1 - s), 1 - s = exp(-loss)
                           hess_weights)
    return OracleOut(f, g, H)


def ridge(A: Any, y: Any, sw: Any, lam: float, theta: Any, *, value: bool = True,
          grad: bool = True, hess: bool = True, hess_weights: Any = None) -> OracleOut:
    """Ridge regression f_i = (1/(2 n_i)) ||A_i theta - b_i||^2 + (lam/2) ||theta||^2."""
    xp = xp_of(A, theta)
    r = margins(A, theta) - y
    f = g = H = None
    m = A.shape[0]
    if value or grad:
        r_val, r_grad = _reg(theta, m, lam, xp)
    if value:
        f = 0.5 * xp.sum(sw * r * r, axis=1) + r_val
    if grad:
        g = (A.transpose(0, 2, 1) @ (sw * r)[:, :, None])[..., 0] + r_grad
    if hess:
        H = _weighted_gram(A, sw, lam, hess_weights)
    return OracleOut(f, g, H)


ORACLES = {"logistic": logistic, "ridge": ridge}
