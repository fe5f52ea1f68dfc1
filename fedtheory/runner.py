"""The run loop: participation, stopping, metrics (ALGORITHMS.md "Notation", "Per-round metrics").

``run`` draws the participants of every round (S of N uniformly without replacement from the
run's seeded generator; S = N or None is full participation and draws nothing), renormalises
their weights, applies the method's round map and logs one tidy row per round. Methods never
see metrics; the runner never knows a method's algebra.

Column conventions (documented choices where the spec leaves one open):

- row 0 is the starting point; row t is the state after round t;
- the drift metrics of row t describe round t: the preconditioners P_i of its last local step,
  the start point theta^{t-1} (for hess_gap's H(theta^{t-1}) and grad_dissimilarity's
  g_i(theta^{t-1}), g(theta^{t-1}) over the global objective), and theta+ = theta^t;
- ``uplink_floats``, ``downlink_floats``, ``local_grad_evals``, ``local_hess_evals`` are
  cumulative totals divided by N: per client under full participation, the average client
  under partial participation;
- ``seconds`` is cumulative wall time of the round maps only (metrics excluded).

A round whose iterate is NaN/inf, or farther from theta* than ``diverge_factor`` times
max(1, ||theta^0 - theta*||, ||theta*||), ends the run with status "diverged"; the rows before it
are kept and that round's row is not written.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from . import __version__
from .errors import check
from .methods.base import Method, RoundContext, RoundInfo
from .oracles import make_oracle
from .problem import FederatedProblem
from .trace import Trace

NAN = float("nan")


def run(problem: FederatedProblem, method: Method, rounds: int, *,
        participation: int | None = None, seed: int = 0, theta0: Any = None,
        oracle: Any = "exact", target: float | None = None, drift_metrics: bool = True,
        diverge_factor: float = 1e8, progress: bool = False) -> Trace:
    """Run ``method`` on ``problem`` for up to ``rounds`` rounds and return its :class:`Trace`.

    participation: S, the number of clients per round (None or N: all of them).
    seed: seeds the run's one generator (participation draws and stochastic oracles).
    theta0: starting point (default 0), NumPy or the problem's backend.
    target: stop with status "reached_target" once rel_dist <= target.
    drift_metrics: compute drift, rel_drift, hess_gap, grad_dissimilarity, client_drift
        (needs every client's Hessian at theta^t, so one extra Hessian oracle per round).
    """
    N, d, xp = problem.N, problem.d, problem.xp
    check(isinstance(rounds, (int, np.integer)) and rounds >= 0,
          f"rounds must be an integer >= 0, got {rounds!r}")
    S = N if participation is None else participation
    check(isinstance(S, (int, np.integer)) and 1 <= S <= N,
          f"participation S must be an integer in 1..{N} (N = {N}), got {participation!r}")
    check(not (method.full_participation_only and S < N),
          f"method {method.name} needs full participation (S = N = {N}), got S = {S}")
    check(target is None or target > 0, f"target must be > 0, got {target!r}")
    oracle = make_oracle(oracle)
    ref = problem.reference
    theta_star = xp.asarray(ref.theta_star)
    theta = xp.zeros(d) if theta0 is None else xp.asarray(theta0, dtype=xp.float64)
    check(theta.shape == (d,), f"theta0 must have shape ({d},), got {tuple(theta.shape)}")
    rng = np.random.default_rng(seed)
    state = method.init(problem, theta)

    scale = max(1.0, float(np.linalg.norm(ref.theta_star)))
    bound = diverge_factor * max(scale, float(xp.linalg.norm(theta - theta_star)))
    totals = dict(up=0, down=0, grad=0, hess=0)
    seconds = 0.0
    point = _point(problem, theta, drift_metrics)
    rows = [_row(0, point, theta_star, ref, scale, 0, totals, N, 0.0)]
    trace = Trace(rows=rows, meta=_meta(problem, method, rounds, S, seed, oracle))
    bar = _progress(rounds, f"{method.name} on {problem.name}") if progress else None
    for t in range(1, rounds + 1):
        clients = None if S == N else np.sort(rng.choice(N, size=S, replace=False))
        w = problem.weights if clients is None else problem.weights[xp.asarray(clients)]
        ctx = RoundContext(problem, clients, w / w.sum(), rng, oracle)
        start = time.perf_counter()
        state, info = method.round(ctx, state)
        if xp is not np:
            xp.cuda.Device().synchronize()
        seconds += time.perf_counter() - start
        theta_new = state.theta
        new_point = _point(problem, theta_new, drift_metrics)
        dist = float(xp.linalg.norm(theta_new - theta_star))
        if not (math.isfinite(dist) and math.isfinite(new_point["f"]) and dist <= bound):
            trace.status = "diverged"
            break
        for key, val in (("up", info.uplink), ("down", info.downlink),
                         ("grad", info.grad_evals), ("hess", info.hess_evals)):
            totals[key] += val
        row = _row(t, new_point, theta_star, ref, scale, S, totals, N, seconds)
        if drift_metrics:
            row.update(_drift(ctx, info, point, theta_new))
        rows.append(row)
        point = new_point
        if bar is not None:
            bar.update(1)
            bar.set_postfix(rel_dist=f"{row['rel_dist']:.2e}")
        if target is not None and row["rel_dist"] <= target:
            trace.status = "reached_target"
            break
    if bar is not None:
        bar.close()
    trace.meta["status"] = trace.status
    return trace


def _point(problem: FederatedProblem, theta: Any, with_hess: bool) -> dict[str, Any]:
    """Everything the metrics need at one point: f, every client's g_i, g, and H if asked."""
    o = problem.oracle(theta, value=True, grad=True, hess=with_hess)
    w = problem.weights
    f = float(w @ o.f)
    g = w @ o.g
    H = (w[:, None, None] * o.H).sum(axis=0) if with_hess else None
    return {"theta": theta, "f": f, "g_clients": o.g, "g": g, "H": H, "xp": problem.xp}


def _row(t: int, point: dict, theta_star: Any, ref: Any, scale: float, S: int, totals: dict,
         N: int, seconds: float) -> dict[str, float]:
    xp = point["xp"]
    dist = float(xp.linalg.norm(point["theta"] - theta_star))
    return {
        "round": t, "dist_to_opt": dist, "rel_dist": dist / scale,
        "subopt": point["f"] - ref.f_star, "grad_norm": float(xp.linalg.norm(point["g"])),
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
        drift = float(w @ xp.sum((P - Pbar) ** 2, axis=(1, 2)))
        out.update(drift=drift, rel_drift=drift / float(xp.sum(Pbar * Pbar)),
                   hess_gap=float(w @ xp.sum((P - start["H"]) ** 2, axis=(1, 2))))
    if info.theta_local is not None:
        out["client_drift"] = float(w @ xp.sum((info.theta_local - theta_new) ** 2, axis=1))
    return out


def _meta(problem: FederatedProblem, method: Method, rounds: int, S: int, seed: int,
          oracle: Any) -> dict[str, Any]:
    ref = problem.reference
    return {
        "problem": problem.name, "method": method.name, "params": method.params(),
        "rounds": rounds, "participation": S, "N": problem.N, "d": problem.d, "seed": seed,
        "oracle": getattr(oracle, "name", repr(oracle)), "backend": problem.backend,
        "version": __version__, "mu": ref.mu, "L": ref.L, "L_H": ref.L_H,
        "f_star": ref.f_star, "theta_star_norm": float(np.linalg.norm(ref.theta_star)),
        "grad_norm_star": ref.grad_norm,
    }


def _progress(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="round", leave=False)

