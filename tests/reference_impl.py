"""A spec-only reference implementation of the suite's methods and metrics, for the tests.

Written directly from the definitions of docs/algorithms.md (and /work/shared/spec/ALGORITHMS.md),
NOT from :mod:`fedtheory.methods`: plain NumPy, one client at a time, one local step at a time,
no batching, no caches, no in-place updates, no shared helpers with the package. Nothing here
imports :mod:`fedtheory`. Every constant the definitions fix (Armijo's 1e-4, sup |sigma''| =
1/(6 sqrt 3), FedSophia's defaults, the top-K tie rule, ...) is written here again, on purpose:
a test that imported the constant from the module it checks could not see it change.

Where the definitions leave a choice open, the reference follows the choice the method's
docstring documents (so that a disagreement is a bug, not a difference of reading); each such
place says "documented choice".

Use: build the client data yourself, then ``RefProblem(Xs, ys, ...)`` here and
``FederatedProblem.from_clients(Xs, ys, ...)`` in the package, and compare round maps
(``ref_fedpm_round`` ...) or whole runs (:func:`ref_run`, per-round metric rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ARMIJO_C = 1e-4  # SOPM local search: f_i decreases by >= 1e-4 * step * slope
MAX_HALVINGS = 60  # documented choice of the package (never reached in the tests)
SUP_SIGMA2 = 1.0 / (6.0 * math.sqrt(3.0))  # sup_z |sigma''(z)|
RANK_GUARD = 1e-15  # FedNL rank-R's delta = kept / (total + 1e-15) (reference code)
BITS = 32  # FedNL papers' bit convention: 32-bit floats


def sym(d: int) -> int:
    """Floats of a symmetric d x d matrix (its upper triangle)."""
    return d * (d + 1) // 2


# ------------------------------------------------------------------------------ objectives
def _log1pexp(z: np.ndarray) -> np.ndarray:
    """log(1 + exp(z)) without overflow."""
    return np.where(z > 0, z + np.log1p(np.exp(-np.abs(z))), np.log1p(np.exp(-np.abs(z))))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) without overflow."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class RefProblem:
    """N clients' data (dense), the objective and the weights; oracles one client at a time."""

    def __init__(
        self, Xs: list, ys: list, *, objective: str, lam: float, weighting: str = "samples"
    ) -> None:
        self.Xs = [np.array(X, dtype=float) for X in Xs]
        self.ys = [np.array(y, dtype=float).ravel() for y in ys]
        self.objective, self.lam = objective, float(lam)
        self.N, self.d = len(self.Xs), self.Xs[0].shape[1]
        self.sizes = np.array([X.shape[0] for X in self.Xs])
        if weighting == "samples":
            self.w = self.sizes / self.sizes.sum()
        else:
            self.w = np.full(self.N, 1.0 / self.N)

    # f_i, g_i, H_i ------------------------------------------------------------------------
    def f(self, i: int, theta: np.ndarray) -> float:
        A, y, n = self.Xs[i], self.ys[i], self.sizes[i]
        z = A @ theta
        if self.objective == "logistic":
            data = np.sum(_log1pexp(-y * z)) / n
        else:
            data = np.sum((z - y) ** 2) / (2 * n)
        return float(data + 0.5 * self.lam * theta @ theta)

    def g(self, i: int, theta: np.ndarray) -> np.ndarray:
        A, y, n = self.Xs[i], self.ys[i], self.sizes[i]
        z = A @ theta
        if self.objective == "logistic":
            s = _sigmoid(-y * z)
            return -(A.T @ (y * s)) / n + self.lam * theta
        return A.T @ (z - y) / n + self.lam * theta

    def H(self, i: int, theta: np.ndarray) -> np.ndarray:
        A, y, n = self.Xs[i], self.ys[i], self.sizes[i]
        if self.objective == "logistic":
            s = _sigmoid(-y * (A @ theta))
            v = s * (1 - s)
        else:
            v = np.ones(n)
        M = (A * v[:, None]).T @ A / n + self.lam * np.eye(self.d)
        return 0.5 * (M + M.T)

    # the global objective -----------------------------------------------------------------
    def F(self, theta: np.ndarray) -> float:
        return float(sum(self.w[i] * self.f(i, theta) for i in range(self.N)))

    def G(self, theta: np.ndarray) -> np.ndarray:
        return sum(self.w[i] * self.g(i, theta) for i in range(self.N))

    def HH(self, theta: np.ndarray) -> np.ndarray:
        return sum(self.w[i] * self.H(i, theta) for i in range(self.N))

    def weights_over(self, S: list[int]) -> np.ndarray:
        """w~_i = w_i / sum_{j in S} w_j over the participants S (in the order given)."""
        w = self.w[np.asarray(S)]
        return w / w.sum()

    # reference solution -------------------------------------------------------------------
    def solve(self) -> dict:
        """theta* by plain Newton from 0 (with step halving far from theta*), its f*, mu, L
        and the L_H bound."""
        theta = np.zeros(self.d)
        tol = 1e-13 * max(1.0, float(np.linalg.norm(self.G(theta))))
        for _ in range(200):
            g = self.G(theta)
            if np.linalg.norm(g) <= tol:
                break
            step = np.linalg.solve(self.HH(theta), g)
            t, f0 = 1.0, self.F(theta)
            while (
                self.F(theta - t * step) > f0 - 1e-4 * t * (g @ step)
                and np.linalg.norm(self.G(theta - t * step)) >= np.linalg.norm(g)
                and t > 1e-10
            ):
                t *= 0.5
            theta = theta - t * step
        ev = np.linalg.eigvalsh(self.HH(theta))
        return {
            "theta_star": theta,
            "f_star": self.F(theta),
            "mu": float(ev[0]),
            "L": float(ev[-1]),
            "L_H": self.hessian_lipschitz(),
        }

    def hessian_lipschitz(self) -> float:
        """L_H <= (1/(6 sqrt 3)) sum_i w_i (1/n_i) sum_j ||a_j||^3 (logistic); 0 (ridge)."""
        if self.objective == "ridge":
            return 0.0
        total = 0.0
        for i in range(self.N):
            cubes = [float(np.linalg.norm(a)) ** 3 for a in self.Xs[i]]
            total += self.w[i] * sum(cubes) / self.sizes[i]
        return SUP_SIGMA2 * total


# ------------------------------------------------------------------------------ one round
@dataclass
class RefRound:
    """What a reference round produced: the new server iterate and, for the metrics, the
    participants, their renormalised weights, the preconditioners of their last local step,
    their uploaded local iterates and the round's counts (totals over participants)."""

    theta: np.ndarray
    S: list[int]
    wt: np.ndarray
    P: list | None = None
    local: list | None = None
    uplink: float = 0.0
    downlink: float = 0.0
    grad: float = 0.0
    hess: float = 0.0
    bits: float | None = None
    state: Any = None


def _all(pb: RefProblem, S: list[int] | None) -> list[int]:
    return list(range(pb.N)) if S is None else sorted(int(i) for i in S)


def armijo_step(pb: RefProblem, i: int, x: np.ndarray, p: np.ndarray, eta: float) -> float:
    """LocalNewton's step along -p from x (p = P^{-1} g): start at eta and halve until
    f_i(x - t p) <= f_i(x) - 1e-4 t g_i(x)^T p."""
    f0, slope = pb.f(i, x), float(pb.g(i, x) @ p)
    t = float(eta)
    for _ in range(MAX_HALVINGS):
        if pb.f(i, x - t * p) <= f0 - ARMIJO_C * t * slope:
            return t
        t = t / 2
    return t


def local_newton(
    pb: RefProblem,
    i: int,
    theta: np.ndarray,
    K: int,
    eta: float,
    delta: float,
    line_search: bool = False,
) -> tuple[np.ndarray, list]:
    """Client i's K damped local Newton steps from theta: (theta_i^K, [P_i^0 .. P_i^{K-1}])."""
    x, Ps = theta.copy(), []
    for _ in range(K):
        Pk = pb.H(i, x) + delta * np.eye(pb.d)
        p = np.linalg.solve(Pk, pb.g(i, x))
        t = armijo_step(pb, i, x, p, eta) if line_search else eta
        x = x - t * p
        Ps.append(Pk)
    return x, Ps


def ref_newton_round(
    pb: RefProblem, theta: np.ndarray, S: list[int] | None, *, eta: float = 1.0
) -> RefRound:
    S = _all(pb, S)
    wt = pb.weights_over(S)
    Hm = sum(w * pb.H(i, theta) for w, i in zip(wt, S, strict=True))
    gm = sum(w * pb.g(i, theta) for w, i in zip(wt, S, strict=True))
    d, m = pb.d, len(S)
    return RefRound(
        theta - eta * np.linalg.solve(Hm, gm),
        S,
        wt,
        uplink=m * (d + sym(d)),
        downlink=m * d,
        grad=m,
        hess=m,
    )


def ref_fedpm_round(
    pb: RefProblem,
    theta: np.ndarray,
    S: list[int] | None,
    *,
    K: int = 1,
    eta: float = 1.0,
    delta: float = 0.0,
    mixing_preconditioner: str = "last",
) -> RefRound:
    """FedPM: local Newton steps; upload theta_i^K and P_i (default the LAST step's);
    theta+ = (sum w~_i P_i)^{-1} sum w~_i P_i theta_i^K."""
    S = _all(pb, S)
    wt = pb.weights_over(S)
    d, m = pb.d, len(S)
    locals_, P_last, P_mix = [], [], []
    extra_hess = 0
    for i in S:
        x, Ps = local_newton(pb, i, theta, K, eta, delta)
        locals_.append(x)
        P_last.append(Ps[-1])
        if mixing_preconditioner == "last":
            P_mix.append(Ps[-1])
        elif mixing_preconditioner == "start":
            P_mix.append(pb.H(i, theta) + delta * np.eye(d))
        else:  # "end": one more Hessian
            P_mix.append(pb.H(i, x) + delta * np.eye(d))
            extra_hess += 1
    Pbar = sum(w * P for w, P in zip(wt, P_mix, strict=True))
    rhs = sum(w * (P @ x) for w, P, x in zip(wt, P_mix, locals_, strict=True))
    return RefRound(
        np.linalg.solve(Pbar, rhs),
        S,
        wt,
        P=P_last,
        local=locals_,
        uplink=m * (d + sym(d)),
        downlink=m * d,
        grad=K * m,
        hess=K * m + extra_hess,
    )


def ref_sopm_round(
    pb: RefProblem,
    theta: np.ndarray,
    S: list[int] | None,
    *,
    K: int = 1,
    eta: float = 1.0,
    delta: float = 0.0,
    local_search: bool = False,
) -> RefRound:
    """SOPM: the same local steps, theta+ = sum w~_i theta_i^K."""
    S = _all(pb, S)
    wt = pb.weights_over(S)
    d, m = pb.d, len(S)
    locals_, P_last = [], []
    for i in S:
        x, Ps = local_newton(pb, i, theta, K, eta, delta, line_search=local_search)
        locals_.append(x)
        P_last.append(Ps[-1])
    theta_new = sum(w * x for w, x in zip(wt, locals_, strict=True))
    return RefRound(
        theta_new,
        S,
        wt,
        P=P_last,
        local=locals_,
        uplink=m * d,
        downlink=m * d,
        grad=K * m,
        hess=K * m,
    )


# ---------------------------------------------------------------------------- FedPAC
@dataclass
class PACState:
    theta: np.ndarray
    Theta: np.ndarray | None
    gG: np.ndarray
    pending_up: float = 0.0
    pending_hess: float = 0.0


def ref_fedpac_init(
    pb: RefProblem, theta0: np.ndarray, *, theta_init: str = "hessian", align: bool = True
) -> PACState:
    """Theta^0 = sum_i w_i H_i(theta^0) over all N clients (one d(d+1)/2 upload each,
    counted with the first round: documented choice) or I; gG = 0."""
    d = pb.d
    if not align:
        return PACState(theta0.copy(), None, np.zeros(d))
    if theta_init == "hessian":
        return PACState(theta0.copy(), pb.HH(theta0), np.zeros(d), pb.N * sym(d), pb.N)
    return PACState(theta0.copy(), np.eye(d), np.zeros(d))


def ref_fedpac_round(
    pb: RefProblem,
    st: PACState,
    S: list[int] | None,
    *,
    K: int = 1,
    eta: float = 1.0,
    beta: float = 0.5,
    rho: float = 0.9,
    delta: float = 0.0,
    order: str = "update_then_use",
    align: bool = True,
) -> RefRound:
    S = _all(pb, S)
    wt = pb.weights_over(S)
    d, m = pb.d, len(S)
    theta = st.theta
    deltas, thetas_K, P_last, locals_ = [], [], [], []
    hess = 0
    for i in S:
        x = theta.copy()
        Th = st.Theta.copy() if align else pb.H(i, theta)  # alignment (warm start)
        for _ in range(K):
            Hx = pb.H(i, x)
            Th_new = rho * Th + (1 - rho) * Hx  # curvature EMA
            P = (Th_new if order == "update_then_use" else Th) + delta * np.eye(d)
            dk = np.linalg.solve(P, pb.g(i, x))
            x = x - eta * ((1 - beta) * dk + beta * st.gG)  # correction
            Th = Th_new
        hess += K if rho < 1 else (0 if align else 1)
        deltas.append(x - theta)
        thetas_K.append(Th)
        P_last.append(P)
        locals_.append(x)
    Delta = sum(w * D for w, D in zip(wt, deltas, strict=True))
    Theta = sum(w * T for w, T in zip(wt, thetas_K, strict=True)) if align else None
    mat = sym(d) if align else 0
    new = PACState(theta + Delta, Theta, -Delta / (K * eta))
    return RefRound(
        theta + Delta,
        S,
        wt,
        P=P_last,
        local=locals_,
        uplink=m * (d + mat) + st.pending_up,
        downlink=m * (d + (d if beta > 0 else 0) + mat),
        grad=K * m,
        hess=hess + st.pending_hess,
        state=new,
    )


# ---------------------------------------------------------------------------- FedSophia
@dataclass
class SophiaState:
    theta: np.ndarray
    m: dict = field(default_factory=dict)  # client -> m_i (keep_state only)
    h: dict = field(default_factory=dict)


def ref_fedsophia_round(
    pb: RefProblem,
    st: SophiaState,
    S: list[int] | None,
    *,
    K: int = 1,
    eta: float = 0.01,
    b1: float = 0.9,
    b2: float = 0.99,
    gamma: float = 1.0,
    eps: float = 1e-12,
    rho: float = 1.0,
    tau: int = 1,
    keep_state: bool = False,
) -> RefRound:
    """K local Sophia steps with the exact Hessian diagonal (refreshed at k = 0, tau, ...;
    m, h start at 0 and are reset every round unless keep_state), server average."""
    S = _all(pb, S)
    wt = pb.weights_over(S)
    d, mm = pb.d, len(S)
    locals_, P_last = [], []
    new_m, new_h = dict(st.m), dict(st.h)
    hess = 0
    for i in S:
        x = st.theta.copy()
        m = st.m.get(i, np.zeros(d)) if keep_state else np.zeros(d)
        h = st.h.get(i, np.zeros(d)) if keep_state else np.zeros(d)
        for k in range(K):
            m = b1 * m + (1 - b1) * pb.g(i, x)
            if k % tau == 0:
                h = b2 * h + (1 - b2) * np.diag(pb.H(i, x))
                hess += 1
            scale = np.maximum(gamma * h, eps)
            x = x - eta * np.clip(m / scale, -rho, rho)
        locals_.append(x)
        P_last.append(np.diag(scale))
        if keep_state:
            new_m[i], new_h[i] = m, h
    theta = sum(w * x for w, x in zip(wt, locals_, strict=True))
    return RefRound(
        theta,
        S,
        wt,
        P=P_last,
        local=locals_,
        uplink=mm * d,
        downlink=mm * d,
        grad=K * mm,
        hess=hess,
        state=SophiaState(theta, new_m, new_h),
    )


# ---------------------------------------------------------------------------- first order
def ref_gd_round(
    pb: RefProblem, theta: np.ndarray, S: list[int] | None, *, eta: float = 0.5
) -> RefRound:
    S = _all(pb, S)
    wt = pb.weights_over(S)
    g = sum(w * pb.g(i, theta) for w, i in zip(wt, S, strict=True))
    m, d = len(S), pb.d
    return RefRound(theta - eta * g, S, wt, uplink=m * d, downlink=m * d, grad=m)


def ref_fedprox_round(
    pb: RefProblem,
    theta: np.ndarray,
    S: list[int] | None,
    *,
    K: int = 1,
    eta: float = 0.5,
    mu_p: float = 0.0,
) -> RefRound:
    """K local GD steps on f_i + (mu_p/2)||. - theta||^2 (mu_p = 0: FedAvg), simple average."""
    S = _all(pb, S)
    wt = pb.weights_over(S)
    m, d = len(S), pb.d
    locals_ = []
    for i in S:
        x = theta.copy()
        for _ in range(K):
            x = x - eta * (pb.g(i, x) + mu_p * (x - theta))
        locals_.append(x)
    theta_new = sum(w * x for w, x in zip(wt, locals_, strict=True))
    return RefRound(theta_new, S, wt, local=locals_, uplink=m * d, downlink=m * d, grad=K * m)


@dataclass
class ScaffoldState:
    theta: np.ndarray
    c: np.ndarray
    c_local: dict


def ref_scaffold_round(
    pb: RefProblem,
    st: ScaffoldState,
    S: list[int] | None,
    *,
    K: int = 1,
    eta: float = 0.5,
    eta_g: float = 1.0,
) -> RefRound:
    """Option II control variates; the server's c moves by sum_{i in S} w_i (c_i^+ - c_i)
    with the original weights (documented choice: keeps c = sum_i w_i c_i)."""
    S = _all(pb, S)
    wt = pb.weights_over(S)
    m, d = len(S), pb.d
    locals_, c_local = [], dict(st.c_local)
    dc = np.zeros(d)
    for i in S:
        ci = st.c_local.get(i, np.zeros(d))
        x = st.theta.copy()
        for _ in range(K):
            x = x - eta * (pb.g(i, x) + st.c - ci)
        c_new = ci - st.c + (st.theta - x) / (K * eta)
        dc = dc + pb.w[i] * (c_new - ci)
        c_local[i] = c_new
        locals_.append(x)
    step = sum(w * (x - st.theta) for w, x in zip(wt, locals_, strict=True))
    theta = st.theta + eta_g * step
    return RefRound(
        theta,
        S,
        wt,
        local=locals_,
        uplink=2 * m * d,
        downlink=2 * m * d,
        grad=K * m,
        state=ScaffoldState(theta, st.c + dc, c_local),
    )


# ---------------------------------------------------------------------------- FedNL
def topk_sym(M: np.ndarray, K: int) -> np.ndarray:
    """The K entries of largest |M_ij| of the upper triangle (diagonal included), mirrored;
    exact ties go to the LARGER (i, j) (the reference code sorts (|M_ij|, i, j) tuples)."""
    d = M.shape[0]
    entries = [(abs(M[i, j]), i, j) for i in range(d) for j in range(i, d)]
    entries.sort(reverse=True)
    out = np.zeros_like(M)
    for _, i, j in entries[:K]:
        out[i, j] = M[i, j]
        out[j, i] = M[i, j]
    return out


def rankr_sym(M: np.ndarray, R: int) -> tuple[np.ndarray, float]:
    """Best rank-R approximation of a symmetric M (R eigenpairs of largest |lambda|) and the
    fraction of sum lambda^2 it keeps (rank-R's contraction constant, with the 1e-15 guard)."""
    lam, V = np.linalg.eigh(M)
    top = np.argsort(-np.abs(lam))[:R]
    C = (V[:, top] * lam[top]) @ V[:, top].T
    kept = float(np.sum(lam[top] ** 2) / (np.sum(lam**2) + RANK_GUARD))
    return 0.5 * (C + C.T), kept


def fednl_alpha(alpha: Any, compressor: str, d: int, Kc: int, kept: float | None) -> float:
    if alpha == "one":
        return 1.0
    if alpha == "rule1":
        if compressor == "identity":
            delta_c = 1.0
        elif compressor == "topK":
            delta_c = min(Kc, sym(d)) / sym(d)  # 2 K / (d (d + 1))
        else:
            delta_c = kept
        return 1.0 - math.sqrt(max(1.0 - delta_c, 0.0))
    return float(alpha)


@dataclass
class FedNLState:
    x: np.ndarray
    Hl: list  # learned Hessians H_i^k
    pending_up: float = 0.0
    pending_hess: float = 0.0
    pending_bits: float = 0.0


def ref_fednl_init(pb: RefProblem, x0: np.ndarray, *, H_init: str = "hessian") -> FedNLState:
    d = pb.d
    if H_init == "hessian":
        return FedNLState(
            x0.copy(), [pb.H(i, x0) for i in range(pb.N)], pb.N * sym(d), pb.N, pb.N * BITS * sym(d)
        )
    return FedNLState(x0.copy(), [np.zeros((d, d)) for _ in range(pb.N)])


def ref_fednl_round(
    pb: RefProblem,
    st: FedNLState,
    *,
    option: int = 1,
    compressor: str = "identity",
    Kc: int = 1,
    R: int = 1,
    alpha: Any = "one",
    l_norm: str = "spectral",
) -> RefRound:
    """FedNL option 1 ([H^k]_mu with mu = lam, eigenvalues clipped below) or option 2
    (H^k + l^k I, l^k = sum w_i ||H_i(x) - H_i^k||), then H_i += alpha C(H_i(x) - H_i) at the
    OLD point. Full participation."""
    d, N, x = pb.d, pb.N, st.x
    w = pb.w
    Hk = sum(w[i] * st.Hl[i] for i in range(N))
    g = sum(w[i] * pb.g(i, x) for i in range(N))
    Htrue = [pb.H(i, x) for i in range(N)]
    diffs = [Htrue[i] - st.Hl[i] for i in range(N)]
    if option == 1:
        lam_, V = np.linalg.eigh(Hk)
        M = (V * np.maximum(lam_, pb.lam)) @ V.T
    else:
        if l_norm == "spectral":
            norms = [float(np.max(np.abs(np.linalg.eigvalsh(D)))) for D in diffs]
        else:
            norms = [float(np.sqrt(np.sum(D * D))) for D in diffs]
        M = Hk + sum(w[i] * norms[i] for i in range(N)) * np.eye(d)
    x_new = x - np.linalg.solve(M, g)
    Hl = []
    for i in range(N):
        kept = None
        if compressor == "identity":
            C = diffs[i]
        elif compressor == "topK":
            C = topk_sym(diffs[i], Kc)
        else:
            C, kept = rankr_sym(diffs[i], R)
        Hl.append(st.Hl[i] + fednl_alpha(alpha, compressor, d, Kc, kept) * C)
    if compressor == "identity":
        msg, msg_bits = sym(d), BITS * sym(d)
    elif compressor == "topK":
        msg, msg_bits = min(2 * min(Kc, sym(d)), sym(d)), BITS * min(Kc, sym(d))
    else:
        msg, msg_bits = min(min(R, d) * (d + 1), sym(d)), BITS * min(R, d) * d
    extra = 1 if option == 2 else 0
    S = list(range(N))
    return RefRound(
        x_new,
        S,
        w.copy(),
        uplink=N * (d + msg + extra) + st.pending_up,
        downlink=N * d,
        grad=N,
        hess=N + st.pending_hess,
        bits=N * (BITS * d + msg_bits) + st.pending_bits,
        state=FedNLState(x_new, Hl),
    )


# ------------------------------------------------------------------------------ runs and rows
METHOD_ROUNDS = {
    "newton": ref_newton_round,
    "fedpm": ref_fedpm_round,
    "sopm": ref_sopm_round,
    "gd": ref_gd_round,
    "fedprox": ref_fedprox_round,
}


def ref_run(
    pb: RefProblem, method: str, params: dict, schedule: list, *, theta0: np.ndarray | None = None
) -> list[RefRound]:
    """Rounds of ``method`` with the participants of ``schedule`` (one list per round; None
    means all clients), from theta0 (default 0). ``fedavg`` is FedProx with mu_p = 0."""
    theta = np.zeros(pb.d) if theta0 is None else np.array(theta0, dtype=float)
    out = []
    params = dict(params)
    if method == "fedavg":
        method, params = "fedprox", {**params, "mu_p": 0.0}
    if method == "fedpac":
        st = ref_fedpac_init(
            pb,
            theta,
            theta_init=params.pop("theta_init", "hessian"),
            align=params.get("align", True),
        )
        for S in schedule:
            r = ref_fedpac_round(pb, st, S, **params)
            out.append(r)
            st = r.state
        return out
    if method == "fedsophia":
        st = SophiaState(theta)
        for S in schedule:
            r = ref_fedsophia_round(pb, st, S, **params)
            out.append(r)
            st = r.state
        return out
    if method == "scaffold":
        st = ScaffoldState(theta, np.zeros(pb.d), {})
        for S in schedule:
            r = ref_scaffold_round(pb, st, S, **params)
            out.append(r)
            st = r.state
        return out
    if method == "fednl":
        st = ref_fednl_init(pb, theta, H_init=params.pop("init", "hessian"))
        for _ in schedule:
            r = ref_fednl_round(pb, st, **params)
            out.append(r)
            st = r.state
        return out
    step = METHOD_ROUNDS[method]
    for S in schedule:
        r = step(pb, theta, S, **params)
        out.append(r)
        theta = r.theta
    return out


def _frob2(M: np.ndarray) -> float:
    return float(np.sum(M * M))


def ref_rows(
    pb: RefProblem, sol: dict, rounds: list[RefRound], theta0: np.ndarray | None = None
) -> list[dict]:
    """The per-round metric rows of docs/algorithms.md "Per-round metrics" for a reference run:
    row 0 at theta^0, row t after round t; counts cumulative and divided by N; the drift
    metrics of row t over round t's participants (their last-step P_i, H and g at the round's
    start point theta^{t-1}, theta+ = theta^t)."""
    theta_star = sol["theta_star"]
    scale = max(1.0, float(np.linalg.norm(theta_star)))
    N = pb.N
    prev = np.zeros(pb.d) if theta0 is None else np.array(theta0, dtype=float)
    nan = float("nan")
    tot = {"up": 0.0, "down": 0.0, "grad": 0.0, "hess": 0.0, "bits": 0.0}

    def base(t: int, theta: np.ndarray, S: int) -> dict:
        dist = float(np.linalg.norm(theta - theta_star))
        return {
            "round": t,
            "dist_to_opt": dist,
            "rel_dist": dist / scale,
            "subopt": pb.F(theta) - sol["f_star"],
            "grad_norm": float(np.linalg.norm(pb.G(theta))),
            "participants": S,
            "uplink_floats": tot["up"] / N,
            "downlink_floats": tot["down"] / N,
            "bits": tot["bits"] / N,
            "local_grad_evals": tot["grad"] / N,
            "local_hess_evals": tot["hess"] / N,
            "drift": nan,
            "rel_drift": nan,
            "hess_gap": nan,
            "grad_dissimilarity": nan,
            "client_drift": nan,
        }

    rows = [base(0, prev, 0)]
    for t, r in enumerate(rounds, start=1):
        tot["up"] += r.uplink
        tot["down"] += r.downlink
        tot["grad"] += r.grad
        tot["hess"] += r.hess
        tot["bits"] += BITS * r.uplink if r.bits is None else r.bits
        row = base(t, r.theta, len(r.S))
        g_all = pb.G(prev)
        row["grad_dissimilarity"] = float(
            sum(
                w * float(np.sum((pb.g(i, prev) - g_all) ** 2))
                for w, i in zip(r.wt, r.S, strict=True)
            )
        )
        if r.P is not None:
            Pbar = sum(w * P for w, P in zip(r.wt, r.P, strict=True))
            drift = float(sum(w * _frob2(P - Pbar) for w, P in zip(r.wt, r.P, strict=True)))
            Hprev = pb.HH(prev)
            gap = float(sum(w * _frob2(P - Hprev) for w, P in zip(r.wt, r.P, strict=True)))
            row.update(drift=drift, rel_drift=drift / _frob2(Pbar), hess_gap=gap)
        if r.local is not None:
            row["client_drift"] = float(
                sum(
                    w * float(np.sum((x - r.theta) ** 2))
                    for w, x in zip(r.wt, r.local, strict=True)
                )
            )
        rows.append(row)
        prev = r.theta
    return rows
