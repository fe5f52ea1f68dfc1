"""The run loop: participation, stopping, metrics (ALGORITHMS.md "Notation", "Per-round metrics").

``run`` draws the participants of every round (S of N uniformly without replacement from the
run's seeded generator; S = N or None is full participation and draws nothing), renormalises
their weights, applies the method's round map and logs one tidy row per logged round. Methods
never see metrics; the runner never knows a method's algebra. ``run_batch`` runs many seeds of
one configuration side by side as one batched computation (a leading run axis), with the same
draws, hence the same trajectories, as ``run`` seed by seed.

Column conventions (documented choices where the spec leaves one open):

- row 0 is the starting point; row t is the state after round t;
- the drift metrics of row t describe round t: the preconditioners P_i of its last local step,
  the start point theta^{t-1} (for hess_gap's H(theta^{t-1}) and grad_dissimilarity's
  g_i(theta^{t-1}), g(theta^{t-1}) over the global objective), and theta+ = theta^t;
- ``uplink_floats``, ``downlink_floats``, ``local_grad_evals``, ``local_hess_evals`` are
  cumulative totals divided by N: per client under full participation, the average client
  under partial participation;
- ``seconds`` is cumulative wall time of the round maps only (metrics excluded); on a GPU each
  round ends with a device synchronisation so the time is the round's.

``log_every = k`` computes metrics (and so moves data to the host) only after rounds k, 2k, ...
and the last; the divergence and target checks run on those rounds only.
A logged round whose iterate is NaN/inf, or farther from theta* than ``diverge_factor`` times
max(1, ||theta^0 - theta*||, ||theta*||), ends the run with status "diverged"; the rows before it
are kept and that round's row is not written.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from . import __version__
from ._backend import to_numpy, xp_of
from .errors import FedTheoryError, check
from .methods.base import Method, RoundContext, RoundInfo
from .oracles import Exact, make_oracle
from .problem import FederatedProblem
from .trace import Trace

NAN = float("nan")
_COUNTS = (("up", "uplink"), ("down", "downlink"), ("grad", "grad_evals"), ("hess", "hess_evals"))


def _check_common(problem: FederatedProblem, method: Method, rounds: Any, participation: Any,
                  target: Any, log_every: Any) -> int:
    N = problem.N
    check(isinstance(rounds, (int, np.integer)) and rounds >= 0,
          f"rounds must be an integer >= 0, got {rounds!r}")
    S = N if participation is None else participation
    check(isinstance(S, (int, np.integer)) and 1 <= S <= N,
          f"participation S must be an integer in 1..{N} (N = {N}), got {participation!r}")
    check(not (method.full_participation_only and S < N),
          f"method {method.name} needs full participation (S = N = {N}), got S = {S}")
    check(target is None or target > 0, f"target must be > 0, got {target!r}")
    check(isinstance(log_every, (int, np.integer)) and log_every >= 1,
          f"log_every must be an integer >= 1, got {log_every!r}")
    return int(S)


def _check_seed(seed: Any) -> int:
    check(isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0,
          f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _start(problem: FederatedProblem, theta0: Any) -> Any:
    xp, d = problem.xp, problem.d
    theta = xp.zeros(d) if theta0 is None else xp.asarray(theta0, dtype=xp.float64)
    check(theta.shape == (d,), f"theta0 must have shape ({d},), got {tuple(theta.shape)}")
    return theta


def _draw(rng: np.random.Generator, N: int, S: int) -> np.ndarray | None:
    return None if S == N else np.sort(rng.choice(N, size=S, replace=False))


def run(problem: FederatedProblem, method: Method, rounds: int, *,
        participation: int | None = None, seed: int = 0, theta0: Any = None,
        oracle: Any = "exact", target: float | None = None, drift_metrics: bool = True,
        diverge_factor: float = 1e8, log_every: int = 1, progress: bool = False) -> Trace:
    """Run ``method`` on ``problem`` for up to ``rounds`` rounds and return its :class:`Trace`.

    participation: S, the number of clients per round (None or N: all of them).
    seed: seeds the run's one generator (participation draws and stochastic oracles).
    theta0: starting point (default 0), NumPy or the problem's backend.
    target: stop with status "reached_target" once rel_dist <= target.
    drift_metrics: compute drift, rel_drift, hess_gap, grad_dissimilarity, client_drift
        (needs every client's Hessian at theta^t, so one extra Hessian oracle per logged round).
    log_every: log (and check) only every k-th round and the last.
    """
    S = _check_common(problem, method, rounds, participation, target, log_every)
    seed = _check_seed(seed)
    N, xp = problem.N, problem.xp
    oracle = make_oracle(oracle)
    ref = problem.reference
    theta_star = xp.asarray(ref.theta_star)
    theta = _start(problem, theta0)
    rng = np.random.default_rng(seed)
    state = method.init(problem, theta)

    scale = max(1.0, float(np.linalg.norm(ref.theta_star)))
    bound = diverge_factor * max(scale, float(xp.linalg.norm(theta - theta_star)))
    totals = dict.fromkeys(("up", "down", "grad", "hess"), 0)
    seconds = 0.0
    point = _point(problem, theta, drift_metrics)       # metrics at the last logged iterate
    point_round = 0
    rows = [_row(0, point, theta_star, ref, scale, 0, totals, N, 0.0)]
    trace = Trace(rows=rows, meta=_meta(problem, method, rounds, S, seed, oracle))
    bar = _progress(rounds, f"{method.name} on {problem.name}") if progress else None
    for t in range(1, rounds + 1):
        log = t % log_every == 0 or t == rounds
        clients = _draw(rng, N, S)
        w = problem.weights if clients is None else problem.weights[xp.asarray(clients)]
        ctx = RoundContext(problem, clients, w / w.sum(), rng, oracle)
        theta_start = state.theta
        state, info, seconds = _timed_round(method, ctx, state, seconds, totals, bar)
        if not log:
            continue
        dist = float(xp.linalg.norm(state.theta - theta_star))
        if not (math.isfinite(dist) and dist <= bound):      # before any metric of a bad iterate
            trace.status = "diverged"
            break
        new_point = _point(problem, state.theta, drift_metrics)
        if not math.isfinite(new_point["f"]):
            trace.status = "diverged"
            break
        row = _row(t, new_point, theta_star, ref, scale, S, totals, N, seconds)
        if drift_metrics:
            start_point = point if point_round == t - 1 else _point(problem, theta_start, True)
            row.update(_drift(ctx, info, start_point, state.theta))
        rows.append(row)
        point, point_round = new_point, t
        if bar is not None:
            bar.set_postfix(rel_dist=f"{row['rel_dist']:.2e}")
        if target is not None and row["rel_dist"] <= target:
            trace.status = "reached_target"
            break
    if bar is not None:
        bar.close()
    trace.meta["status"] = trace.status
    return trace


def run_batch(problem: FederatedProblem, method: Method, rounds: int, *, seeds: list[int],
              participation: int | None = None, theta0: Any = None,
              target: float | None = None, diverge_factor: float = 1e8, log_every: int = 1,
              chunk_bytes: float = 2**28, progress: bool = False) -> list[Trace]:
    """Run one configuration for many seeds as ONE batched computation; a Trace per seed.

    Run b draws its participants from ``np.random.default_rng(seeds[b])`` exactly as
    :func:`run` does, so each trace equals ``run(..., seed=seeds[b], drift_metrics=False)`` up
    to floating-point summation order. All B * S participants of a round go through the oracle
    and the solves together. Restrictions (each a clear error): the exact oracle only (the
    stochastic oracles draw per run), methods marked ``batchable`` (no per-client state kept
    across rounds), no drift metrics (their columns are NaN). Metrics are evaluated for all
    runs at once, in chunks of runs whose gathered data stay under ``chunk_bytes``. A run that
    diverges leaves the batch; the others go on.
    """
    S = _check_common(problem, method, rounds, participation, target, log_every)
    check(method.batchable, f"method {method.name} cannot run batched (it keeps per-client "
                            f"state or was not written for a run axis); use run() per seed")
    seeds = [_check_seed(s) for s in seeds]
    check(len(seeds) >= 1, "seeds must list at least one seed")
    N, xp = problem.N, problem.xp
    oracle = Exact()
    ref = problem.reference
    theta_star = xp.asarray(ref.theta_star)
    theta = _start(problem, theta0)
    scale = max(1.0, float(np.linalg.norm(ref.theta_star)))
    bound = diverge_factor * max(scale, float(xp.linalg.norm(theta - theta_star)))
    rngs = [np.random.default_rng(s) for s in seeds]
    alive = list(range(len(seeds)))
    state = _stack([method.init(problem, theta) for _ in seeds], xp)
    totals = dict.fromkeys(("up", "down", "grad", "hess"), 0)
    seconds = 0.0
    traces = [Trace(meta=_meta(problem, method, rounds, S, s, oracle)) for s in seeds]
    for b, p in enumerate(_points_batch(problem, state.theta, chunk_bytes)):
        traces[b].rows.append(_row(0, p, theta_star, ref, scale, 0, totals, N, 0.0))
    bar = _progress(rounds, f"{method.name} x {len(seeds)} seeds") if progress else None
    for t in range(1, rounds + 1):
        B = len(alive)
        draws = [_draw(rngs[b], N, S) for b in alive]
        clients = None if S == N and B == 1 else np.concatenate(
            [np.arange(N) if c is None else c for c in draws])
        if clients is None:
            w = problem.weights
        else:
            w = problem.weights[xp.asarray(clients)].reshape(B, S)
            w = (w / w.sum(axis=1, keepdims=True)).reshape(-1)
        ctx = RoundContext(problem, clients, w, None, oracle, runs=B)
        state, info, seconds = _timed_round(method, ctx, state, seconds, totals, bar)
        if not (t % log_every == 0 or t == rounds):
            continue
        points = _points_batch(problem, state.theta, chunk_bytes)
        keep = []
        for j, (b, p) in enumerate(zip(alive, points, strict=True)):
            if not (math.isfinite(p["dist"]) and math.isfinite(p["f"]) and p["dist"] <= bound):
                traces[b].status = "diverged"
                continue
            row = _row(t, p, theta_star, ref, scale, S, totals, N, seconds)
            traces[b].rows.append(row)
            if target is not None and row["rel_dist"] <= target:
                traces[b].status = "reached_target"
                continue
            keep.append(j)
        if len(keep) < B:
            alive = [alive[j] for j in keep]
            if not alive:
                break
            state = _take(state, xp.asarray(keep), B)
    if bar is not None:
        bar.close()
    for tr in traces:
        tr.meta["status"] = tr.status
    return traces


def _timed_round(method: Method, ctx: RoundContext, state: Any, seconds: float, totals: dict,
                 bar: Any) -> tuple[Any, RoundInfo, float]:
    """One round map, timed (with a device sync on a GPU); adds its counts, per run, to totals."""
    xp = ctx.problem.xp
    start = time.perf_counter()
    state, info = method.round(ctx, state)
    if xp is not np:
        xp.cuda.Device().synchronize()
    seconds += time.perf_counter() - start
    for key, field in _COUNTS:
        totals[key] += getattr(info, field) / ctx.runs
    if bar is not None:
        bar.update(1)
    return state, info, seconds


def _stack(states: list[Any], xp: Any) -> Any:
    """One state with a leading run axis on its array fields; scalar fields must agree."""
    first = states[0]
    fields = {}
    for name in first._fields:
        values = [getattr(s, name) for s in states]
        if values[0] is None or isinstance(values[0], (int, float, str, bool)):
            check(all(v == values[0] for v in values),
                  f"cannot batch states whose field {name!r} differs between runs")
            fields[name] = values[0]
        else:
            fields[name] = xp.stack(values)
    return type(first)(**fields)


def _take(state: Any, keep: Any, B: int) -> Any:
    """The runs ``keep`` of a batched state (array fields with a leading run axis of size B)."""
    def sel(v: Any) -> Any:
        return v[keep] if hasattr(v, "shape") and v.ndim >= 1 and v.shape[0] == B else v
    return type(state)(*(sel(v) for v in state))


def _points_batch(problem: FederatedProblem, thetas: Any, chunk_bytes: float) -> list[dict]:
    """f, g, ||theta - theta*|| for each run's theta (B, d); one oracle call per chunk of runs."""
    xp, N = problem.xp, problem.N
    B = thetas.shape[0]
    per_run = N * problem.A.shape[1] * problem.d * 8
    step = max(1, int(chunk_bytes // per_run))
    theta_star = xp.asarray(problem.reference.theta_star)
    f_all, g_all = [], []
    for lo in range(0, B, step):
        th = thetas[lo:lo + step]
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
    dist = to_numpy(xp.linalg.norm(thetas - theta_star, axis=1))
    return [{"f": float(f[b]), "grad_norm": float(gnorm[b]), "dist": float(dist[b])}
            for b in range(B)]


def _point(problem: FederatedProblem, theta: Any, with_hess: bool) -> dict[str, Any]:
    """Everything the metrics need at one point: f, every client's g_i, g, and H if asked."""
    xp = problem.xp
    o = problem.oracle(theta, value=True, grad=True)
    w = problem.weights
    g = w @ o.g
    H = None
    if with_hess:
        H = problem.global_oracle(theta, value=False, grad=False, hess=True).H
    theta_star = xp.asarray(problem.reference.theta_star)
    return {"f": float(w @ o.f), "g_clients": o.g, "g": g, "H": H,
            "grad_norm": float(xp.linalg.norm(g)),
            "dist": float(xp.linalg.norm(theta - theta_star))}


def _row(t: int, point: dict, theta_star: Any, ref: Any, scale: float, S: int, totals: dict,
         N: int, seconds: float) -> dict[str, float]:
    dist = point["dist"]
    return {
        "round": t, "dist_to_opt": dist, "rel_dist": dist / scale,
        "subopt": point["f"] - ref.f_star, "grad_norm": point["grad_norm"],
        "participants": S, "uplink_floats": totals["up"] / N,
        "downlink_floats": totals["down"] / N, "local_grad_evals": totals["grad"] / N,
        "local_hess_evals": totals["hess"] / N, "seconds": seconds,
        "drift": NAN, "rel_drift": NAN, "hess_gap": NAN, "grad_dissimilarity": NAN,
        "client_drift": NAN,
    }


def _drift(ctx: RoundContext, info: RoundInfo, start: dict, theta_new: Any) -> dict[str, float]:
    """Drift metrics of one round (see the module docstring for which points they use)."""
    xp = ctx.problem.xp
    w = ctx.weights
    sel = slice(None) if ctx.clients is None else xp.asarray(ctx.clients)
    gi = start["g_clients"][sel]
    out = {"grad_dissimilarity": float(w @ xp.sum((gi - start["g"]) ** 2, axis=1))}
    if info.P is not None:
        P = info.P
        Pbar = ctx.mix(P)
        drift = _weighted_sq_dist(P, Pbar, w)
        out.update(drift=drift, rel_drift=drift / float(xp.sum(Pbar * Pbar)),
                   hess_gap=_weighted_sq_dist(P, start["H"], w))
    if info.theta_local is not None:
        out["client_drift"] = float(w @ xp.sum((info.theta_local - theta_new) ** 2, axis=1))
    return out


def _weighted_sq_dist(P: Any, Q: Any, w: Any, block_bytes: int = 2**25) -> float:
    """sum_i w_i ||P_i - Q||_F^2, in blocks of clients of at most ``block_bytes`` each, so no
    temporary of the size of the (m, d, d) stack is made."""
    xp = xp_of(P)
    block = max(1, block_bytes // (P.shape[-1] * P.shape[-2] * P.itemsize))
    total = 0.0
    for lo in range(0, P.shape[0], block):
        D = P[lo:lo + block] - Q
        total += float(w[lo:lo + block] @ xp.sum(D * D, axis=(1, 2)))
    return total


def _meta(problem: FederatedProblem, method: Method, rounds: int, S: int, seed: int,
          oracle: Any) -> dict[str, Any]:
    ref = problem.reference
    return {
        "problem": problem.name, "method": method.name, "params": method.params(),
        "rounds": rounds, "participation": S, "N": problem.N, "d": problem.d, "seed": seed,
        "oracle": getattr(oracle, "name", repr(oracle)), "backend": problem.backend,
        "version": __version__, "mu": ref.mu, "L": ref.L, "L_H": ref.L_H,
        "f_star": ref.f_star, "theta_star_norm": float(np.linalg.norm(ref.theta_star)),
        "grad_norm_star": ref.grad_norm, "spec_hash": _spec_hash(problem),
    }


def _spec_hash(problem: FederatedProblem) -> str | None:
    """The problem spec's content hash, for problems built from a spec (None otherwise)."""
    if not problem.spec:
        return None
    from .suite import spec_hash

    return spec_hash(problem.spec)


def _progress(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="round", leave=False)


__all__ = ["run", "run_batch", "FedTheoryError"]
