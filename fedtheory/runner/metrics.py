"""The per-round metrics (docs/algorithms.md, "Per-round metrics"), computed only when asked.

Column conventions (documented choices where the definitions leave one open):

- row 0 is the starting point; row t is the state after round t;
- the drift metrics of row t describe round t: the preconditioners P_i of its last local step,
  the start point theta^{t-1} (for hess_gap's H(theta^{t-1}) and grad_dissimilarity's
  g_i(theta^{t-1}), g(theta^{t-1}) over the global objective), and theta+ = theta^t;
  the global Hessian H(theta^{t-1}) is evaluated only for methods that report preconditioners
  (the others have NaN preconditioner metrics and pay nothing for them);
- ``uplink_floats``, ``downlink_floats``, ``bits``, ``local_grad_evals``, ``local_hess_evals``
  are cumulative totals divided by N: per client under full participation, the average client
  under partial participation; ``bits`` counts uplink bits with the FedNL papers' convention
  (32-bit floats one-sided per node; compressed messages as the method reports them);
- ``seconds`` is cumulative wall time of the round maps only; ``metric_seconds`` the cumulative
  wall time of the metrics (on a GPU each round ends with a device synchronisation).
"""

from __future__ import annotations

import datetime
import platform
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .._backend import block_bytes, to_numpy, xp_of
from .._version import __version__
from ..methods.base import Method, RoundContext, RoundInfo

NAN = float("nan")
#: (totals key, RoundInfo attribute) of the cumulative count columns
COUNTS = (
    ("up", "uplink"),
    ("down", "downlink"),
    ("grad", "grad_evals"),
    ("hess", "hess_evals"),
    ("bits", "uplink_bits"),
)


def new_totals() -> dict[str, float]:
    return dict.fromkeys((key for key, _ in COUNTS), 0)


def add_counts(totals: dict[str, float], info: RoundInfo, runs: int) -> None:
    for key, field in COUNTS:
        totals[key] += getattr(info, field) / runs


class Point:
    """Everything the metrics need at one iterate: f, every client's g_i, g; H(theta) is
    evaluated on first use only."""

    def __init__(self, problem: Any, theta: Any) -> None:
        xp = problem.xp
        o = problem.oracle(theta, value=True, grad=True)
        w = problem.weights
        self.problem, self.theta = problem, theta
        self.f = float(w @ o.f)
        self.g_clients = o.g
        self.g = w @ o.g
        self.grad_norm = float(xp.linalg.norm(self.g))
        self.dist = float(xp.linalg.norm(theta - xp.asarray(problem.reference.theta_star)))
        self._H = None

    @property
    def H(self) -> Any:
        if self._H is None:
            self._H = self.problem.global_oracle(self.theta, value=False, grad=False, hess=True).H
        return self._H


def row(
    t: int,
    point: Any,
    ref: Any,
    scale: float,
    S: int,
    totals: dict,
    N: int,
    seconds: float,
    metric_seconds: float,
) -> dict[str, float]:
    """One tidy row; ``point`` has ``dist``, ``f`` and ``grad_norm`` attributes."""
    dist = point.dist
    return {
        "round": t,
        "dist_to_opt": dist,
        "rel_dist": dist / scale,
        "subopt": point.f - ref.f_star,
        "grad_norm": point.grad_norm,
        "participants": S,
        "uplink_floats": totals["up"] / N,
        "downlink_floats": totals["down"] / N,
        "bits": totals["bits"] / N,
        "local_grad_evals": totals["grad"] / N,
        "local_hess_evals": totals["hess"] / N,
        "seconds": seconds,
        "metric_seconds": metric_seconds,
        "drift": NAN,
        "rel_drift": NAN,
        "hess_gap": NAN,
        "grad_dissimilarity": NAN,
        "client_drift": NAN,
    }


def drift(ctx: RoundContext, info: RoundInfo, start: Point, theta_new: Any) -> dict[str, float]:
    """Drift metrics of one round (see the module docstring for which points they use)."""
    xp = ctx.problem.xp
    w = ctx.weights
    sel = slice(None) if ctx.clients is None else xp.asarray(ctx.clients)
    gi = start.g_clients[sel]
    out = {"grad_dissimilarity": float(w @ xp.sum((gi - start.g) ** 2, axis=1))}
    if info.P is not None:
        P = info.P
        Pbar = ctx.mix(P)
        d = weighted_sq_dist(P, Pbar, w)
        out.update(
            drift=d,
            rel_drift=d / float(xp.sum(Pbar * Pbar)),
            hess_gap=weighted_sq_dist(P, start.H, w),
        )
    if info.theta_local is not None:
        out["client_drift"] = float(w @ xp.sum((info.theta_local - theta_new) ** 2, axis=1))
    return out


#: the last STALL_WINDOW logged steps decide "stalled" / "oscillating" (see settled_status)
STALL_WINDOW, STALL_CHANGE, CYCLE_GAP = 5, 1e-3, 1e-2
#: a run with fewer logged rows is "completed" (settled_status needs both parities' windows)
SETTLE_ROWS = 2 * STALL_WINDOW + 2


def settled_status(dist: Any, scale: float) -> str:
    """The status of a run that used all its rounds, from its logged ||theta^t - theta*||:

    - "stalled": each of the last STALL_WINDOW steps changed the error by less than 0.1 %
      (relative) while it stays above the float floor 1e3 eps max(1, ||theta*||): the iterates
      settled at a point that is not theta* (SOPM's drift floor, a biased fixed point);
    - "oscillating": the even and the odd rounds each settled like that, at errors more than
      1 % apart (a 2-cycle, e.g. FedNL with top-K from theta^0 = 0);
    - "completed" otherwise (still moving, or at theta* to the float floor).
    """
    e = np.asarray(dist, dtype=float)
    floor = 1e3 * np.finfo(float).eps * max(1.0, scale)
    w = STALL_WINDOW
    if e.size < SETTLE_ROWS or not np.isfinite(e[-2 * w - 2 :]).all() or e[-1] <= floor:
        return "completed"

    def settled(x: np.ndarray) -> bool:
        return bool((np.abs(np.diff(x)) <= STALL_CHANGE * np.abs(x[1:])).all())

    if settled(e[-w - 1 :]):
        return "stalled"
    even, odd = e[-2 * w - 2 :: 2], e[-2 * w - 1 :: 2]
    if (
        settled(even)
        and settled(odd)
        and abs(even[-1] - odd[-1]) > CYCLE_GAP * max(even[-1], odd[-1])
        and min(even[-1], odd[-1]) > floor
    ):
        return "oscillating"
    return "completed"


def weighted_sq_dist(P: Any, Q: Any, w: Any) -> float:
    """sum_i w_i ||P_i - Q||_F^2, in blocks of clients of at most ``_backend.block_bytes`` (2 MiB
    on the host) and at most a quarter of the stack each, so no temporary of the size of the
    (m, d, d) stack is made. The weighted sum is taken once over the m squared distances, so
    the result does not depend on the block size."""
    xp = xp_of(P)
    m, size = P.shape[0], P.shape[-1] * P.shape[-2] * P.itemsize
    block = max(1, min(block_bytes(P), P.nbytes // 4) // size)
    sq = xp.empty(m)
    for lo in range(0, m, block):
        D = P[lo : lo + block] - Q
        sq[lo : lo + block] = xp.sum(D * D, axis=(1, 2))
    return float(w @ sq)


def points_batch(problem: Any, thetas: Any, chunk_bytes: float) -> list[SimpleNamespace]:
    """f, g, ||theta - theta*|| for each run's theta (B, d): for dense logistic or ridge data
    by :func:`_global_many` (two products over all rows per chunk of runs), else one oracle
    call per chunk of runs (each run's copy of the data gathered)."""
    xp, N = problem.xp, problem.N
    B = thetas.shape[0]
    theta_star = xp.asarray(problem.reference.theta_star)
    dist = to_numpy(xp.linalg.norm(thetas - theta_star, axis=1))
    many = _global_many(problem, thetas, chunk_bytes)
    if many is not None:
        f, gnorm = to_numpy(many[0]), to_numpy(xp.linalg.norm(many[1], axis=1))
        return [
            SimpleNamespace(f=float(f[b]), grad_norm=float(gnorm[b]), dist=float(dist[b]))
            for b in range(B)
        ]
    per_run = N * problem.A.shape[1] * problem.d * 8
    step = max(1, int(chunk_bytes // per_run))
    f_all, g_all = [], []
    for lo in range(0, B, step):
        th = thetas[lo : lo + step]
        b = th.shape[0]
        if b == 1:
            o = problem.oracle(th[0], value=True, grad=True)
        else:
            clients = np.tile(np.arange(N), b)
            o = problem.oracle(xp.repeat(th, N, axis=0), clients, value=True, grad=True)
        w = problem.weights
        f_all.append((o.f.reshape(b, N) * w).sum(axis=1))
        g_all.append((o.g.reshape(b, N, -1) * w[None, :, None]).sum(axis=1))
    f = to_numpy(xp.concatenate(f_all))
    g = xp.concatenate(g_all)
    gnorm = to_numpy(xp.linalg.norm(g, axis=1))
    return [
        SimpleNamespace(f=float(f[b]), grad_norm=float(gnorm[b]), dist=float(dist[b]))
        for b in range(B)
    ]


def _global_many(problem: Any, thetas: Any, chunk_bytes: float) -> tuple[Any, Any] | None:
    """(f (B,), g (B, d)) of the global objective sum_i w_i f_i at each row of ``thetas``, for
    dense logistic or ridge data (None otherwise): with the data as one (N n_max, d) matrix
    of rows, the margins of every row at every theta of a chunk are ONE product (rows x runs)
    and the data part of the gradients another, row weights w_i sw_ij (0 on padding), the
    regulariser added once with weight sum_i w_i. The same objective as the per-client
    oracle's, summed in another order (agrees to rounding), and no per-run copy of the data
    (a batch of 1000 runs of N = 64 clients of 64 rows gathered 1.6 GB for it). Chunks of
    runs keep the (rows x runs) temporaries (margins, the logistic terms and their products)
    under about ``chunk_bytes``."""
    from ..objectives import ClientCSR, _logistic_terms

    A = problem.A
    if isinstance(A, ClientCSR) or problem.objective not in ("logistic", "ridge"):
        return None
    xp = problem.xp
    N, n_max, d = A.shape
    rows = A.reshape(N * n_max, d)
    ws = (problem.weights[:, None] * problem.sw).reshape(-1, 1)
    y = problem.y.reshape(-1, 1)
    lam, wsum = problem.lam, problem.weights.sum()
    step = max(1, int(chunk_bytes // (N * n_max * 8 * 8)))  # about 8 (rows x runs) arrays
    f_all, g_all = [], []
    for lo in range(0, thetas.shape[0], step):
        th = thetas[lo : lo + step]
        Z = rows @ th.T  # margins (rows, runs)
        if problem.objective == "logistic":
            loss, gw, _ = _logistic_terms(Z, y, ws, xp)  # gw = w sw y sigmoid(-y z)
            f_all.append(xp.sum(ws * loss, axis=0))
            g_all.append(-(rows.T @ gw).T)
        else:
            r = Z - y
            f_all.append(0.5 * xp.sum(ws * r * r, axis=0))
            g_all.append((rows.T @ (ws * r)).T)
    th2 = xp.sum(thetas * thetas, axis=1)
    f = xp.concatenate(f_all) + 0.5 * lam * wsum * th2
    g = xp.concatenate(g_all) + lam * wsum * thetas
    return f, g


def meta(
    problem: Any,
    method: Method,
    rounds: int,
    S: int | str,
    seed: int,
    oracle: Any,
    threads: int | None,
) -> dict[str, Any]:
    """The run's metadata: what ran, on what, and the reference solution it is measured
    against (the environment is :func:`environment`, added to result files)."""
    ref = problem.reference
    return {
        "problem": problem.name,
        "method": method.name,
        "params": method.params(),
        "rounds": rounds,
        "participation": S,
        "N": problem.N,
        "d": problem.d,
        "seed": seed,
        "oracle": getattr(oracle, "name", repr(oracle)),
        "backend": problem.backend,
        "threads": threads,
        "version": __version__,
        "mu": ref.mu,
        "L": ref.L,
        "L_H": ref.L_H,
        "f_star": ref.f_star,
        "theta_star_norm": float(np.linalg.norm(ref.theta_star)),
        "grad_norm_star": ref.grad_norm,
        "spec_hash": (problem.spec or {}).get("_hash"),
    }


def environment(*, with_date: bool = True) -> dict[str, Any]:
    """Provenance of a result file: Python, platform, NumPy/SciPy and BLAS, the git commit of
    a checkout, and (unless ``with_date`` is False, for byte-identical reruns) the date. The
    BLAS thread count a run used is its metadata's ``threads``."""
    import scipy
    from threadpoolctl import threadpool_info

    blas = sorted(
        {
            f"{p.get('internal_api')} {p.get('version')}"
            for p in threadpool_info()
            if p.get("user_api") == "blas"
        }
    )
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "blas": blas,
        "git_commit": _git_commit(),
    }
    if with_date:
        env["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return env


def _git_commit() -> str | None:
    """The commit of the checkout this package runs from, or None (an installed wheel)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
