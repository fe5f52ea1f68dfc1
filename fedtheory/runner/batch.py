"""Many seeds of one configuration as ONE batched computation (a leading run axis).

Run b draws its participants from ``np.random.default_rng(seeds[b])`` exactly as
:func:`fedtheory.runner.run` does, so each trace equals ``run(..., seed=seeds[b],
drift_metrics=False)`` up to floating-point summation order. The round's context comes from the
same constructor (:func:`fedtheory.methods.base.round_context`, with ``runs = B``) and the rows
from the same :mod:`.metrics`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import check
from ..methods.base import Method, round_context
from ..oracles import Exact
from ..problem import FederatedProblem
from ..threads import DEFAULT_THREADS, blas_threads, check_threads
from ..trace import Trace
from . import metrics
from .loop import _progress, check_common, check_seed, participants, start, timed_round


def run_batch(problem: FederatedProblem, method: Method, rounds: int, *, seeds: list[int],
              participation: int | None = None, theta0: Any = None,
              target: float | None = None, diverge_factor: float = 1e8, log_every: int = 1,
              chunk_bytes: float = 2**28, progress: bool = False,
              threads: int | None = DEFAULT_THREADS) -> list[Trace]:
    """Run one configuration for many seeds as ONE batched computation; a Trace per seed.

    All B * S participants of a round go through the oracle and the solves together.
    Restrictions (each a clear error): the exact oracle only (the stochastic oracles draw per
    run), seeded participation (an integer S, not a schedule), methods marked ``batchable`` (no
    per-client state kept across rounds), no drift metrics (their columns are NaN). Metrics are
    evaluated for all runs at once, in chunks of runs whose gathered data stay under
    ``chunk_bytes``. A run that diverges leaves the batch; the others go on.
    """
    check_common(rounds, target, log_every)
    who = participants(problem, method, participation, rounds)
    check(who.schedule is None, "run_batch draws participants per seed; a participation "
                                "schedule runs with run()")
    check(method.batchable, f"method {method.name} cannot run batched (it keeps per-client "
                            f"state or was not written for a run axis); use run() per seed")
    seeds = [check_seed(s) for s in seeds]
    check(len(seeds) >= 1, "seeds must list at least one seed")
    check_threads(threads)
    with blas_threads(threads):
        return _run_batch(problem, method, rounds, seeds, who, theta0, target, diverge_factor,
                          log_every, chunk_bytes, progress, threads)


def _run_batch(problem: FederatedProblem, method: Method, rounds: int, seeds: list[int],
               who: Any, theta0: Any, target: float | None, diverge_factor: float,
               log_every: int, chunk_bytes: float, progress: bool,
               threads: int | None) -> list[Trace]:
    N, xp, S = problem.N, problem.xp, who.S
    oracle = Exact()
    ref = problem.reference
    theta = start(problem, theta0)
    scale = max(1.0, float(np.linalg.norm(ref.theta_star)))
    bound = diverge_factor * max(scale, float(xp.linalg.norm(theta - xp.asarray(ref.theta_star))))
    rngs = [np.random.default_rng(s) for s in seeds]
    alive = list(range(len(seeds)))
    state = _stack([method.init(problem, theta) for _ in seeds], xp)
    totals = metrics.new_totals()
    seconds = 0.0
    traces = [Trace(meta=metrics.meta(problem, method, rounds, S, s, oracle, threads))
              for s in seeds]
    for b, p in enumerate(metrics.points_batch(problem, state.theta, chunk_bytes)):
        traces[b].rows.append(metrics.row(0, p, ref, scale, 0, totals, N, 0.0, math.nan))
    bar = _progress(rounds, f"{method.name} x {len(seeds)} seeds") if progress else None
    for t in range(1, rounds + 1):
        B = len(alive)
        draws = [who.draw(t, rngs[b]) for b in alive]
        clients = None if S == N and B == 1 else np.concatenate(
            [np.arange(N) if c is None else c for c in draws])
        ctx = round_context(problem, clients, rng=None, oracle=oracle, runs=B)
        state, info, sec = timed_round(method, ctx, state)
        seconds += sec
        metrics.add_counts(totals, info, B)
        if bar is not None:
            bar.update(1)
        if not (t % log_every == 0 or t == rounds):
            continue
        keep = []
        for j, (b, p) in enumerate(zip(alive, metrics.points_batch(problem, state.theta,
                                                                   chunk_bytes), strict=True)):
            if not (math.isfinite(p.dist) and math.isfinite(p.f) and p.dist <= bound):
                traces[b].status = "diverged"
                continue
            r = metrics.row(t, p, ref, scale, S, totals, N, seconds, math.nan)
            traces[b].rows.append(r)
            if target is not None and r["rel_dist"] <= target:
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
        if tr.status == "completed":
            tr.status = metrics.settled_status(tr["dist_to_opt"], scale)
        tr.meta["status"] = tr.status
    return traces


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
