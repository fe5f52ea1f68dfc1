"""FedNL (Newton learn), Safaryan et al. 2022 (arXiv 2106.02969, Algorithm 1), matching the
public reference code (github.com/Rustem-Islamov/FedNL-Public, ``methods.FedNL``), and the
Hessian learning that the whole FedNL family shares (docs/algorithms.md#fednl).

Every client i keeps a learned Hessian H_i^k (the method state holds all of them, (N, d, d);
a batch of runs, :func:`fedtheory.runner.run_batch`, holds one stack per run, (B, N, d, d)).
Round k, at x^k: client i computes g_i(x^k) and H_i(x^k); the server forms H^k = sum w_i H_i^k and

    option 1:  x^{k+1} = x^k - [H^k]_mu^{-1} g(x^k),   [X]_mu = V max(Lambda, mu) V^T
               (projection onto {X >= mu I} by eigendecomposition, mu = lam of the problem);
    option 2:  x^{k+1} = x^k - (H^k + l^k I)^{-1} g(x^k),   l^k = sum w_i ||H_i(x^k) - H_i^k||;

then every client learns H_i^{k+1} = H_i^k + alpha C(H_i(x^k) - H_i^k), at the OLD point x^k.
The solve is a Cholesky solve of the (projected or shifted) matrix. With the identity compressor
and alpha = 1, H_i^{k+1} = H_i(x^k): after a first Newton step (``init="hessian"``) every step
uses the previous round's Hessian, and the order of convergence tends to the golden ratio
(claim C9).

Compressors C (docs/algorithms.md#compressors), each returning a symmetric matrix:

- ``"identity"``: C(M) = M; message d(d+1)/2 floats.
- ``"rankR"``: the best rank-R approximation, sum of the R eigenpairs of largest |lambda|
  (for a symmetric M these are its top-R singular triplets: sigma = |lambda|, u = sign(lambda) v;
  a batched symmetric eigendecomposition gives them; the result is symmetrised exactly).
  Message: R eigenvalues and R vectors, R (d + 1) floats.
- ``"topK"``: the ``Kc`` entries of largest magnitude of the upper triangle (diagonal included),
  mirrored; exact ties in |M_ij| go to the LARGER (i, j) in row-major order, as the reference
  code's sort of (|M_ij|, i, j) tuples does (one-hot data such as a9a give many exact ties, and
  the rule moves trajectories by up to 1e-3; which structural ties survive rounding exactly
  depends on how the Hessians were summed, so on a9a this code and the reference split a few
  of them differently). Parameter named ``Kc`` (the K of Top-K) so it is
  not confused with the local steps K of the other methods. Message: Kc values plus Kc indices
  into the d(d+1)/2 triangle; each index is counted as one float (any index below 2^53 is exact
  in a float64).
A message never costs more than the dense triangle in ``uplink_floats``: a client whose
compressed message would be longer sends the triangle instead, so the count is
min(message, d(d+1)/2); R is capped at d and Kc at d(d+1)/2.

Step size ``alpha`` (docs/algorithms.md#compressor-step-size-alpha): a number in (0, 1],
``"one"`` (alpha = 1, the default) or ``"rule1"``: alpha = 1 - sqrt(1 - delta_C) with delta_C the
compressor's contraction constant: 1 for the identity, 2 Kc / (d (d + 1)) for top-K and, for
rank-R, computed on every call and for every client as the reference code's ``Low_Rank`` does,
delta_C = (sum of the R largest sigma^2) / (sum of all sigma^2 + 1e-15) (its 1e-15 guard
included, so a zero difference gives alpha = 0).

Norm of l^k (``l_norm``): ``"spectral"`` (the default: ||.||_2, one symmetric eigenvalue
problem per client and round, as the definition in docs/algorithms.md#fednl and the public
reference code's FedNL option 2 have it) or ``"frobenius"`` (the FedNL paper's bound and
u-FedNL's choice: no eigenvalue problem, about 2x faster per round on the w8a split; use it to
compare costs with u-FedNL).

Bits (the ``bits`` column, docs/algorithms.md#bits, the FedNL papers' convention): 32-bit
floats, uplink only, per client; ``init="hessian"`` costs 32 d(d+1)/2 once; every round
32 d + the compressor's cost: identity 32 d(d+1)/2, rank-R 32 R d, top-K 32 Kc (values only,
no cap at the triangle). FedNL charges nothing for option 2's l_i, as the reference code.

Memory and speed (the hot path, issue 14): the learned Hessians are updated IN PLACE, so a round
makes no temporary of the size of the (N, d, d) stack. On NumPy, top-K runs as one compiled
loop over the clients (:func:`fedtheory.kernels.topk_learn`): each client's upper-triangle
difference, a quickselect of the K-th largest magnitude, the additions at the selected entries
and l_i, with temporaries of one client's size; a spectral l_i is computed on the principal
block of the coordinates where the difference is non-zero (exact: the other coordinates only
add the eigenvalue 0). On CuPy, top-K with no norm or the Frobenius norm is one fused kernel
launch (:func:`fedtheory.cuda_kernels.topk_learn`: one thread block per client, a radix select
of the K-th largest magnitude, the same selection and bits). Elsewhere (CuPy with the spectral
norm, and the identity and rank-R compressors) the update runs in blocks of clients of at
most 8 MB of matrices; top-K there works on the upper triangles alone (the d x d difference
is formed only for a spectral norm), keeps (values, indices) and adds them at the selected
entries. In the compiled loop a NaN in a difference
counts as the largest magnitude (it reaches H_i instead of being dropped). A round therefore
consumes its input state: the state it returns shares the Hessian buffer, and calling
``round`` again on the consumed state raises an error instead of silently using Hessians
already advanced (a deliberate exception to the methods' pure-state convention, for the
memory target; call ``start`` again to replay a round).

Choices the spec leaves open, made here:

- The spec's option ``init`` keeps its name (the method's lifecycle is ``start``; the old
  spelling ``H_init`` is refused with a pointer to ``init``). ``init="hessian"``
  (H_i^0 = H_i(x^0), computed by ``start`` with the exact oracle) costs one d(d+1)/2 upload and
  one Hessian per client, ``start``'s RoundInfo, booked with the first round; ``init="zero"``
  (H_i^0 = 0) costs nothing.
- Uplink per client and round: g_i (d) + the compressed message + l_i (1 float, option 2);
  downlink: x^{k+1} (d).
- No step size on x (the reference code's FedNL takes full steps).
  FedNL's guarantees are local: from theta = 0 on a9a_fednl, option 1 with Top-123 is thrown
  far off by its clipped (mu = 1e-3) estimate, while option 2 and Rank-1 converge.
- The weights w_i are the problem's (the paper's 1/n for equal client sizes).
- ``full_participation_only``: FedNL updates every H_i^k every round.
- No local preconditioners: P = None and theta_local = None, so the drift metrics are NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .._backend import xp_of
from ..errors import check
from ..kernels import topk_learn
from ..linalg import add_diag, spd_solve, sym_floats
from ..validate import check_choice, check_count, is_real, number_or
from .base import Method, RoundContext, RoundInfo, register

COMPRESSORS = ("identity", "rankR", "topK")
INITS = ("hessian", "zero")
L_NORMS = ("frobenius", "spectral")
ALPHA_RULES = ("one", "rule1")
BITS_PER_FLOAT = 32
#: The reference code's guard in rank-R's delta = kept / (total + 1e-15).
RANK_DELTA_GUARD = 1e-15
#: Bytes of the d x d matrices of one block of clients in the Hessian learning (at most this,
#: and at most 1 / BLOCK_FRACTION of the stack, so that the temporaries, a few blocks' worth
#: (rank-R about 6), stay well under one stack whatever N and d are).
BLOCK_BYTES = 2**23
BLOCK_FRACTION = 8


# ------------------------------------------------------------------------------ compressors
def _triu(d: int, xp: Any) -> tuple[Any, Any, Any]:
    """Rows, columns and row-major flat positions of the upper triangle (diagonal included),
    in row-major order, so position order is (i, j) order."""
    iu, ju = np.triu_indices(d)
    return xp.asarray(iu), xp.asarray(ju), xp.asarray(iu * d + ju)


def top_k_indices(a: Any, K: int) -> Any:
    """Positions of the K largest entries of every row of ``a`` (m, T), exact ties going to the
    LARGER position; (m, min(K, T)), increasing along each row.

    A partial partition finds the K-th largest value of each row; only rows with more entries
    equal to it than places left for them (ambiguous ties, e.g. the many exact zeros of sparse
    data) pay one more pass, which keeps their last tied positions.
    """
    xp = xp_of(a)
    m, T = a.shape
    K = min(K, T)
    if K == T:
        return xp.broadcast_to(xp.arange(T), (m, T))
    idx = xp.argpartition(-a, K - 1, axis=1)[:, :K]
    top = xp.take_along_axis(a, idx, axis=1)
    kth = top[:, K - 1 : K]  # the K-th largest value
    need = K - (top > kth).sum(axis=1)  # places left for ties, >= 1
    ambiguous = xp.nonzero((a == kth).sum(axis=1) > need)[0]
    out = xp.sort(idx, axis=1)
    if ambiguous.size:
        sub, k = a[ambiguous], kth[ambiguous]
        keep = sub > k
        rows, cols = xp.nonzero(sub == k)  # ties, row by row, in order
        ends = xp.cumsum(xp.bincount(rows, minlength=ambiguous.size))
        from_end = ends[rows] - xp.arange(rows.size)  # 1 for a row's last tie
        last = from_end <= need[ambiguous][rows]
        keep[rows[last], cols[last]] = True
        out[ambiguous] = xp.nonzero(keep)[1].reshape(-1, K)
    return out


def top_k_entries(M: Any, K: int) -> tuple[Any, Any, Any]:
    """Top-K of the upper triangle of every matrix of the stack M (m, d, d): (values, rows,
    columns), each (m, min(K, d(d+1)/2)), ties to the larger (i, j)."""
    xp = xp_of(M)
    d = M.shape[-1]
    iu, ju, flat = _triu(d, xp)
    vals = M.reshape(M.shape[0], d * d)[:, flat]  # (m, d(d+1)/2)
    idx = top_k_indices(xp.abs(vals), K)
    return xp.take_along_axis(vals, idx, axis=1), iu[idx], ju[idx]


def top_k(M: Any, K: int) -> Any:
    """The K entries of largest magnitude of the upper triangle (diagonal included) of every
    matrix of the stack M (..., d, d), mirrored into a symmetric matrix; zeros elsewhere.
    Exact ties go to the larger (i, j) (see the module docstring)."""
    xp = xp_of(M)
    d = M.shape[-1]
    flat = M.reshape(-1, d, d)
    v, i, j = top_k_entries(flat, K)
    out = xp.zeros_like(flat)
    b = xp.arange(flat.shape[0])[:, None]
    out[b, i, j] = v
    out[b, j, i] = v
    return out.reshape(M.shape)


def _rank_r_parts(M: Any, R: int) -> tuple[Any, Any, Any]:
    """Eigenvalues of every matrix of M (m, d, d) and its R eigenpairs of largest |lambda|."""
    xp = xp_of(M)
    R = min(R, M.shape[-1])
    lam, V = xp.linalg.eigh(M)
    top = xp.argsort(-xp.abs(lam), axis=-1)[..., :R]
    lam_r = xp.take_along_axis(lam, top, axis=-1)
    V_r = xp.take_along_axis(V, top[..., None, :], axis=-1)
    return lam, lam_r, V_r


def _outer_sum(lam_r: Any, V_r: Any) -> Any:
    xp = xp_of(V_r)
    C = xp.matmul(V_r * lam_r[..., None, :], xp.swapaxes(V_r, -1, -2))
    return 0.5 * (C + xp.swapaxes(C, -1, -2))  # exactly symmetric, not just to rounding


def rank_r(M: Any, R: int) -> Any:
    """Best rank-R approximation of every symmetric matrix of the stack M (..., d, d): the R
    eigenpairs of largest |eigenvalue|. R >= d returns M (up to rounding)."""
    _, lam_r, V_r = _rank_r_parts(M, R)
    return _outer_sum(lam_r, V_r)


def compress(M: Any, compressor: str, *, R: int = 1, Kc: int = 1) -> Any:
    """C(M) for a stack of symmetric matrices; ``"identity"`` returns M itself."""
    check_choice(compressor, "compressor", COMPRESSORS)
    if compressor == "rankR":
        return rank_r(M, R)
    if compressor == "topK":
        return top_k(M, Kc)
    return M


def message_floats(compressor: str, d: int, *, R: int = 1, Kc: int = 1) -> int:
    """Floats one client sends for C(M) of a d x d symmetric M (see the module docstring)."""
    dense = sym_floats(d)
    if compressor == "rankR":
        return min(min(R, d) * (d + 1), dense)
    if compressor == "topK":
        return min(2 * min(Kc, dense), dense)
    return dense


def message_bits(compressor: str, d: int, *, R: int = 1, Kc: int = 1) -> int:
    """Bits one client sends for C(M) with the FedNL papers' convention: identity
    32 d(d+1)/2, rank-R 32 R d, top-K 32 Kc (R capped at d, Kc at d(d+1)/2)."""
    if compressor == "rankR":
        return BITS_PER_FLOAT * min(R, d) * d
    if compressor == "topK":
        return BITS_PER_FLOAT * min(Kc, sym_floats(d))
    return BITS_PER_FLOAT * sym_floats(d)


def matrix_norms(D: Any, kind: str) -> Any:
    """||D_i|| of every matrix of the stack D (m, d, d): ``"frobenius"`` or ``"spectral"``
    (largest |eigenvalue|, D symmetric)."""
    xp = xp_of(D)
    if kind == "spectral":
        return xp.max(xp.abs(xp.linalg.eigvalsh(D)), axis=-1)
    return xp.sqrt(xp.sum(D * D, axis=(-2, -1)))


def project_mu(H: Any, mu: float) -> Any:
    """[H]_mu = V max(Lambda, mu) V^T, the projection onto {X >= mu I} (FedNL option 1), of a
    matrix or of every matrix of a stack (..., d, d)."""
    xp = xp_of(H)
    lam, V = xp.linalg.eigh(H)
    return xp.matmul(V * xp.maximum(lam, mu)[..., None, :], xp.swapaxes(V, -1, -2))


def shift(H: Any, l: Any) -> Any:
    """H + l I: one matrix and a number, or a stack (B, d, d) and one l per matrix (a batch of
    runs, each with its own l)."""
    xp = xp_of(H)
    if np.ndim(l) == 0 and xp is np:
        return add_diag(H, float(l))
    if np.ndim(l) == 0:  # a device scalar: no read-back (the same bits as add_diag)
        return H + l * xp.eye(H.shape[-1], dtype=H.dtype)
    return H + xp.asarray(l)[:, None, None] * xp.eye(H.shape[-1], dtype=H.dtype)


# ------------------------------------------------------------------------- Hessian learning
def _checked_rows(rows: Any, m: int, N: int) -> np.ndarray:
    """Host client slots as int64, refused unless they are m indices into the N learned
    Hessians (the compiled loop and the CUDA kernel do not check their indices)."""
    rows = np.asarray(rows, dtype=np.int64)
    check(
        rows.shape == (m,) and (m == 0 or 0 <= rows.min() <= rows.max() < N),
        f"rows must be {m} indices into the {N} learned Hessians",
    )
    return rows


class Current:
    """Whether a state still holds the current learned Hessians (they are updated in place)."""

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current = True


def consume(token: Current, method: str) -> Current:
    """Mark a state as used by a round; a second round on it is refused."""
    check(
        token.current,
        f"this {method} state was already advanced by a round (its learned "
        f"Hessians are updated in place): continue from the state that round "
        f"returned, or call start again to replay",
    )
    token.current = False
    return Current()


@dataclass(frozen=True)
class HessianLearner(Method):
    """The hyperparameters and the Hessian learning shared by the FedNL family:
    H_i <- H_i + alpha C(H_i(x) - H_i) with a compressor C, in place (module docstring)."""

    compressor: str = "identity"
    R: int = 1
    Kc: int = 1
    alpha: Any = "one"
    init: str = "hessian"

    renamed = {"H_init": "init"}

    def __post_init__(self) -> None:
        check_choice(self.compressor, "compressor", COMPRESSORS)
        check_count(self.R, "R")
        check_count(self.Kc, "Kc")
        alpha = number_or(self.alpha, "alpha", ALPHA_RULES)
        check(
            alpha in ALPHA_RULES if isinstance(alpha, str) else is_real(alpha) and 0 < alpha <= 1,
            f"alpha must be a number in (0, 1], 'one' or 'rule1', got {self.alpha!r}",
        )
        object.__setattr__(self, "alpha", alpha)
        check_choice(self.init, "init", INITS)

    # ---- counts ---------------------------------------------------------------------------
    def message(self, d: int) -> int:
        return message_floats(self.compressor, d, R=self.R, Kc=self.Kc)

    def round_bits(self, d: int) -> int:
        """Bits of one client's gradient (or g~_i) and compressed message: 32 d + C's cost."""
        return BITS_PER_FLOAT * d + message_bits(self.compressor, d, R=self.R, Kc=self.Kc)

    def setup(self, N: int, d: int, *, uplink: int = 0, grad_evals: int = 0) -> RoundInfo:
        """The setup cost of the option ``init`` for N clients: H_i(x^0) uploaded, or nothing;
        plus ``uplink`` floats and ``grad_evals`` gradients (whose bits are not charged)."""
        up, hess, bits = 0, 0, 0
        if self.init == "hessian":
            up, hess, bits = N * sym_floats(d), N, N * BITS_PER_FLOAT * sym_floats(d)
        return RoundInfo(
            uplink=up + uplink, downlink=0, grad_evals=grad_evals, hess_evals=hess, bits=bits
        )

    def initial_hessians(self, H_true: Any) -> Any:
        """H_i^0 from the clients' Hessians at x^0: a copy of them, or zeros."""
        xp = xp_of(H_true)
        return xp.array(H_true, copy=True) if self.init == "hessian" else xp.zeros_like(H_true)

    def _alpha_rank(self, lam: Any, lam_r: Any) -> Any:
        xp = xp_of(lam)
        delta = xp.sum(lam_r * lam_r, axis=-1) / (xp.sum(lam * lam, axis=-1) + RANK_DELTA_GUARD)
        return 1.0 - xp.sqrt(xp.maximum(1.0 - delta, 0.0))

    def _alpha_fixed(self, d: int) -> float | None:
        """alpha when it does not vary between calls; None for rank-R with ``"rule1"``."""
        if self.alpha == "one":
            return 1.0
        if self.alpha != "rule1":
            return float(self.alpha)
        if self.compressor == "topK":
            delta = min(self.Kc, sym_floats(d)) / sym_floats(d)  # 2K / (d (d + 1))
            return 1.0 - math.sqrt(1.0 - delta)
        return 1.0 if self.compressor == "identity" else None

    # ---- the update ------------------------------------------------------------------------
    def learn(
        self,
        H: Any,
        H_true: Any,
        rows: np.ndarray | None = None,
        *,
        norm: str | None = None,
        after: bool = False,
    ) -> Any:
        """H_i <- H_i + alpha C(H_i(x) - H_i), in place in the stack H (N, d, d), for the
        clients ``rows`` (host indices; None: all N, in order) whose Hessians at x are
        ``H_true`` (m, d, d). Works in blocks of clients (no temporary of the stack's size);
        top-K runs as one compiled loop on NumPy and, unless the norm is spectral, as one
        fused kernel launch on CuPy (:func:`fedtheory.cuda_kernels.topk_learn`).

        Returns ||H_i(x) - H_i|| in ``norm`` ("frobenius" or "spectral"; None: no norms), (m,),
        of the difference before the update (``after=False``, FedNL's l_i^k) or after it
        (FedNL-PP's l_i).
        """
        xp = xp_of(H)
        m, d = H_true.shape[0], H_true.shape[-1]
        if self.compressor == "topK" and xp is np:
            return self._learn_top_k_compiled(H, H_true, rows, norm, after)
        if self.compressor == "topK" and norm != "spectral" and xp.__name__ == "cupy":
            # One fused kernel launch for all the clients (fedtheory.cuda_kernels, imported here
            # only: the NumPy path never loads CuPy); a spectral norm takes the array path.
            from .. import cuda_kernels
            from .._backend import is_cupy

            check(H.flags.c_contiguous, "FedNL's learned Hessian stack must be C-contiguous")
            if rows is not None and not is_cupy(rows):  # host indices, checked on the host
                rows = _checked_rows(rows, m, H.shape[0])
            if rows is not None:
                rows = xp.asarray(rows, dtype=xp.int64)
            norms = None if norm is None else xp.empty(m)
            kind = 0 if norm is None else 1 + int(after)
            cuda_kernels.topk_learn(
                H,
                xp.ascontiguousarray(H_true),
                rows,
                self.Kc,
                self._alpha_fixed(d),
                kind,
                norms,
            )
            return norms
        norms = None if norm is None else xp.empty(m)
        block = max(1, min(BLOCK_BYTES, H.nbytes // BLOCK_FRACTION) // (d * d * H.itemsize))
        for lo in range(0, m, block):
            hi = min(m, lo + block)
            at = slice(lo, hi) if rows is None else xp.asarray(rows[lo:hi])
            learn_block = self._learn_top_k if self.compressor == "topK" else self._learn_dense
            out = learn_block(H, H_true[lo:hi], at, norm, after)
            if norm is not None:
                norms[lo:hi] = out
        return norms

    def _learn_top_k_compiled(
        self, H: np.ndarray, T: np.ndarray, rows: np.ndarray | None, norm: str | None, after: bool
    ) -> np.ndarray | None:
        """The top-K update on NumPy: one compiled loop over the clients
        (:func:`fedtheory.kernels.topk_learn`) that forms each client's upper-triangle difference,
        selects, adds in place and takes the norm, with temporaries of one client's size. The
        spectral norm is computed on the principal block of the coordinates where the difference
        has a non-zero entry (the others only add the eigenvalue 0): with ``init="hessian"``
        that is the features the client's rows use (w8a: 146 of 300, median)."""
        m = T.shape[0]
        rows = np.arange(m) if rows is None else _checked_rows(rows, m, H.shape[0])
        kind = 0 if norm is None else (1 if norm == "frobenius" else 3) + int(after)
        norms = np.empty(m)
        check(
            H.flags.c_contiguous and T.flags.c_contiguous,
            "FedNL's learned and evaluated Hessian stacks must be C-contiguous",
        )
        topk_learn(H, T, rows, self.Kc, self._alpha_fixed(T.shape[-1]), kind, norms)
        return None if norm is None else norms

    def _learn_dense(self, H: Any, T: Any, at: Any, norm: str | None, after: bool) -> Any:
        """The identity and rank-R update of the clients ``at`` (Hessians T at x), through the
        block's differences D = T - H[at]."""
        xp = xp_of(H)
        D = T - H[at]
        norms = None
        eig = _rank_r_parts(D, self.R) if self.compressor == "rankR" else None
        if norm is not None and not after:
            norms = (
                xp.max(xp.abs(eig[0]), axis=-1)
                if eig is not None and norm == "spectral"
                else matrix_norms(D, norm)
            )
        a = self._alpha_fixed(D.shape[-1])
        if eig is None:
            step = D if a == 1.0 else a * D
        else:
            lam, lam_r, V_r = eig
            C = _outer_sum(lam_r, V_r)
            if a is None:
                step = self._alpha_rank(lam, lam_r)[:, None, None] * C
            else:
                step = C if a == 1.0 else a * C
        H[at] += step
        if norm is not None and after:
            norms = matrix_norms(D - step, norm)
        return norms

    def _learn_top_k(self, H: Any, T: Any, at: Any, norm: str | None, after: bool) -> Any:
        """The top-K update of the clients ``at`` (Hessians T at x) from the upper triangles
        alone: (values, indices) of the selected entries are added to H in place; the full
        d x d difference is formed only for a spectral norm."""
        xp = xp_of(H)
        b, d = T.shape[0], T.shape[-1]
        iu, ju, flat = _triu(d, xp)
        H_flat = H.reshape(H.shape[0], d * d)
        if isinstance(at, slice):  # all clients, in order: a view
            vals = T.reshape(b, d * d)[:, flat] - H_flat[at][:, flat]
            ix = xp.arange(at.start, at.stop)[:, None]
        else:
            ix = at[:, None]
            vals = T.reshape(b, d * d)[:, flat] - H_flat[ix, flat[None, :]]
        weight = xp.where(iu == ju, 1.0, 2.0)  # an off-diagonal entry counts twice
        spectral = norm == "spectral"
        norms = None
        if norm is not None and not after:
            norms = (
                matrix_norms(T - H[at], norm)
                if spectral
                else xp.sqrt(xp.einsum("ij,ij,j->i", vals, vals, weight))
            )
        idx = top_k_indices(xp.abs(vals), self.Kc)
        v = xp.take_along_axis(vals, idx, axis=1)
        a = self._alpha_fixed(d)
        if a != 1.0:
            v = a * v
        i, j = iu[idx], ju[idx]
        r = xp.broadcast_to(ix, i.shape)
        off = i != j  # mirror the off-diagonal ones
        H[r, i, j] += v
        H[r[off], j[off], i[off]] += v[off]
        if norm is not None and after:
            if spectral:
                return matrix_norms(T - H[at], norm)
            rows_b = xp.broadcast_to(xp.arange(b)[:, None], idx.shape)
            vals[rows_b, idx] -= v
            norms = xp.sqrt(xp.einsum("ij,ij,j->i", vals, vals, weight))
        return norms


class FedNLState(NamedTuple):
    theta: Any  # x^k (d,)
    H_local: Any  # H_i^k of every client (N, d, d) (per run: (B, N, d, d) in a batch);
    #                         the next round updates it in place
    token: Current  # whether this state still holds the current H_i^k


@dataclass(frozen=True)
class OldPointLearner(HessianLearner):
    """The round start of FedNL, FedNL-LS and FedNL-CR: every client evaluates g_i, H_i at the
    current x^k, the server mixes H^k = sum w_i H_i^k, and every H_i is then learned at that
    OLD point x^k."""

    full_participation_only = True
    batchable = True

    def start(self, problem: Any, theta0: Any) -> tuple[FedNLState, RoundInfo]:
        H = problem.oracle(theta0, grad=False, hess=True).H
        state = FedNLState(theta0, self.initial_hessians(H), Current())
        return state, self.setup(problem.N, problem.d)

    def learn_at_old_point(
        self, ctx: RoundContext, state: FedNLState, *, value: bool = False, norm: str | None = None
    ) -> tuple[Any, Any, Any, Current]:
        """(oracle output at x^k, H^k, ||H_i(x^k) - H_i^k|| in ``norm`` or None, a fresh
        token); the state's H_local holds H_i^{k+1} afterwards."""
        token = consume(state.token, self.name)
        o = ctx.eval(ctx.to_clients(state.theta), value=value, grad=True, hess=True)
        Hk = ctx.mix(ctx.take(state.H_local))  # before the update
        norms = self.learn(ctx.flat(state.H_local), o.H, ctx.slots, norm=norm)  # in place
        return o, Hk, norms, token

    def counts(
        self, ctx: RoundContext, state: FedNLState, *, extra_floats: int = 0, extra_bits: int = 0
    ) -> RoundInfo:
        """One round's counts: g_i and the message per client (+ extras per client), x^{k+1}
        down."""
        d, m = ctx.problem.d, ctx.m
        return RoundInfo(
            uplink=m * (d + self.message(d) + extra_floats),
            downlink=m * d,
            grad_evals=m,
            hess_evals=m,
            bits=m * (self.round_bits(d) + extra_bits),
        )


@register
@dataclass(frozen=True)
class FedNL(OldPointLearner):
    """FedNL, options 1 and 2 (module docstring)."""

    option: int = 1
    l_norm: str = "spectral"

    name = "fednl"
    description = (
        "Newton steps with Hessians learned by compressed differences "
        "H_i <- H_i + alpha C(H_i(x) - H_i)"
    )
    source = "Safaryan, Islamov, Qian, Richtarik 2022 (ICML), arXiv 2106.02969"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.option in (1, 2) and not isinstance(self.option, bool),
            f"option must be 1 or 2, got {self.option!r}",
        )
        check_choice(self.l_norm, "l_norm", L_NORMS)

    def start(self, problem: Any, theta0: Any) -> tuple[FedNLState, RoundInfo]:
        check(
            self.option != 1 or problem.lam > 0,
            f"FedNL option 1 projects onto {{X >= mu I}} with mu = lam, but problem "
            f"{problem.name!r} has lam = {problem.lam:g}; use option=2 or a problem with lam > 0",
        )
        return super().start(problem, theta0)

    def round(self, ctx: RoundContext, state: FedNLState) -> tuple[FedNLState, RoundInfo]:
        option2 = self.option == 2
        o, Hk, norms, token = self.learn_at_old_point(
            ctx, state, norm=self.l_norm if option2 else None
        )
        if option2:
            Hk = shift(Hk, ctx.mix(norms))
        else:
            Hk = project_mu(Hk, ctx.problem.lam)
        step = spd_solve(
            Hk, ctx.mix(o.g), what="FedNL Hessian estimate", hint="use a problem with lam > 0"
        )
        info = self.counts(ctx, state, extra_floats=int(option2))
        return FedNLState(state.theta - step, state.H_local, token), info
