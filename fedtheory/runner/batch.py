"""Many seeds of one configuration as ONE batched computation (a leading run axis).

Run b draws its participants, and a stochastic oracle its samples, from
``np.random.default_rng(seeds[b])`` exactly as :func:`fedtheory.runner.run` does (the same
generator, the same draws in the same order: participation first, then the oracle's draws in
the order of the run's oracle calls; see :mod:`fedtheory.oracles`), so each trace equals
``run(..., seed=seeds[b], drift_metrics=False)`` up to floating-point summation order. The
round's context comes from the same constructor (:func:`fedtheory.methods.base.round_context`,
batched, with ``runs = B``) and the rows from the same :mod:`.metrics`. Every array of the
method state carries a leading run axis, per-client state included (SCAFFOLD's c_i, FedNL's
H_i: (B, N, ...)); the counts of each run are kept apart (a line search takes its own number of
trials in each run).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..draws import choice_sorted
from ..errors import check
from ..linalg import DeferredChecks
from ..methods.base import Method, per_run_info, round_context
from ..oracles import make_oracle
from ..problem import FederatedProblem
from ..threads import DEFAULT_THREADS, blas_threads, check_threads
from ..trace import Trace
from . import graph as replay_graph
from . import metrics
from .loop import _progress, check_common, check_seed, participants, start, timed_round
from .participation import Participation


def run_batch(
    problem: FederatedProblem,
    method: Method,
    rounds: int,
    *,
    seeds: list[int],
    participation: int | None = None,
    theta0: Any = None,
    oracle: Any = "exact",
    target: float | None = None,
    diverge_factor: float = 1e8,
    log_every: int = 1,
    chunk_bytes: float = 2**28,
    progress: bool = False,
    threads: int | None = DEFAULT_THREADS,
    graph: bool | None = None,
) -> list[Trace]:
    """Run one configuration for many seeds as ONE batched computation; a Trace per seed.

    All B * S participants of a round go through the oracle and the solves together; server
    steps that cannot be batched (GIANT's and FedNL-LS's line searches, FedNL-CR's cubic
    step) run once per run inside the round. ``oracle``: as for :func:`run`; a stochastic
    oracle draws each run's samples from that run's generator. Restrictions (each a clear
    error): seeded participation (an integer S, not a schedule), methods marked ``batchable``
    (every registered method is), no drift metrics (their columns are NaN). Metrics are
    evaluated for all runs at once, in chunks of runs whose gathered data stay under
    ``chunk_bytes``. A run that diverges or reaches ``target`` leaves the batch; the others go
    on.

    ``graph`` (GPU only, as for :func:`run`): None (the default) records a round of the batch
    as a CUDA graph and replays it for the rounds after (participants and oracle draws made by
    each replay on the device, the same numbers, where :mod:`fedtheory.device_draws` can;
    else on the host as without it and copied into the recorded buffers before each replay;
    the batch recorded again after runs leave it); True requires it (refused with the reason
    where it cannot be); False never. Each trace's ``meta["graph"]`` says what happened:
    None (NumPy), "replayed", "replayed, draws on the device" (the replays drew the
    participants and the minibatch rows on the GPU: the same numbers), or why not.
    """
    check_common(rounds, target, log_every)
    check(
        graph is None or isinstance(graph, bool),
        f"graph must be None, True or False, got {graph!r}",
    )
    who = participants(problem, method, participation, rounds)
    check(
        who.schedule is None,
        "run_batch draws participants per seed; a participation schedule runs with run()",
    )
    check(
        method.batchable,
        f"method {method.name} cannot run batched (it was not written "
        f"for a run axis); use run() per seed",
    )
    seeds = [check_seed(s) for s in seeds]
    check(len(seeds) >= 1, "seeds must list at least one seed")
    oracle = make_oracle(oracle)
    check_threads(threads)
    with blas_threads(threads):
        return _run_batch(
            problem,
            method,
            rounds,
            seeds,
            who,
            theta0,
            oracle,
            target,
            diverge_factor,
            log_every,
            chunk_bytes,
            progress,
            threads,
            graph,
        )


def _run_batch(
    problem: FederatedProblem,
    method: Method,
    rounds: int,
    seeds: list[int],
    who: Any,
    theta0: Any,
    oracle: Any,
    target: float | None,
    diverge_factor: float,
    log_every: int,
    chunk_bytes: float,
    progress: bool,
    threads: int | None,
    graph: bool | None,
) -> list[Trace]:
    N, xp, S = problem.N, problem.xp, who.S
    graph_reason = (
        replay_graph.reason_not(problem, method, who, oracle, rounds)
        if graph is not False
        else "off (graph=False)"
    )
    replay_graph.require(graph_reason, graph)
    ref = problem.reference
    theta = start(problem, theta0)
    scale = max(1.0, float(np.linalg.norm(ref.theta_star)))
    bound = diverge_factor * max(scale, float(xp.linalg.norm(theta - xp.asarray(ref.theta_star))))
    rngs = [np.random.default_rng(s) for s in seeds]
    alive = list(range(len(seeds)))
    # start draws no random numbers (no generator reaches it), so one call serves every run:
    # FedPAC's global Hessian, FedNL's H_i(x^0), ... are computed once, not once per seed
    first, first_setup = method.start(problem, theta)
    state = _stack([first] * len(seeds), xp)
    setup = per_run_info([first_setup] * len(seeds))  # booked with round 1
    totals = np.zeros((len(metrics.COUNTS), len(seeds)))  # per count (metrics.COUNTS), per run
    seconds = 0.0
    common = metrics.meta(problem, method, rounds, S, seeds[0], oracle, threads)
    nested = [k for k, v in common.items() if isinstance(v, dict)]
    traces = [Trace(meta=_with_seed(common, nested, s)) for s in seeds]
    counts = _per_run(totals)
    for b, p in enumerate(metrics.points_batch(problem, state.theta, chunk_bytes)):
        traces[b].rows.append(metrics.row(0, p, ref, scale, 0, counts[b], N, 0.0, math.nan))
    bar = _progress(rounds, f"{method.name} x {len(seeds)} seeds") if progress else None
    checks = DeferredChecks()
    engine = _Rounds(problem, method, oracle, who, graph_reason, graph, checks)
    gens = tuple(rngs)  # the alive runs' generators: one tuple until runs leave (draws.py
    # recognises it by identity, round after round)
    draw = _drawer(who, N)
    for t in range(1, rounds + 1):
        B = len(alive)
        sync = t % log_every == 0 or t == rounds  # on a GPU: no host round trip in between
        state, info, sec = engine.round(t, rounds - t, draw, gens, state, sync)
        seconds += sec
        if t == 1:
            _add_counts(totals, setup, alive)
        _add_counts(totals, info, alive)
        if bar is not None:
            bar.update(1)
        if not (t % log_every == 0 or t == rounds):
            continue
        points = metrics.points_batch(problem, state.theta, chunk_bytes)
        counts = _per_run(totals)
        keep = [
            j
            for j, (b, p) in enumerate(zip(alive, points, strict=True))
            if _log_row(traces[b], t, p, ref, scale, S, counts[b], N, seconds, bound, target)
        ]
        if len(keep) < B:
            engine.drop()  # recorded for B runs: the rest are recorded anew
            alive = [alive[j] for j in keep]
            if not alive:
                break
            gens = tuple(rngs[b] for b in alive)
            state = _take(state, np.asarray(keep), B, xp)
    if bar is not None:
        bar.close()
    graph_meta = engine.describe()
    for tr in traces:
        tr.meta["graph"] = graph_meta
        if tr.status == "completed" and len(tr.rows) >= metrics.SETTLE_ROWS:
            tr.status = metrics.settled_status(tr["dist_to_opt"], scale)
        tr.meta["status"] = tr.status
    return traces


class _Rounds:
    """The batch's rounds: as usual, or (GPU, :mod:`.graph`) on device buffers of the
    participants and draws (:class:`.graph.Inputs`) from the round before the recording, then
    recorded once and replayed; after runs leave (:meth:`drop`), recorded again.

    Where it can (:func:`.graph.device_draws_reason`), a recorded round makes its draws on the
    device (:mod:`fedtheory.device_draws`): the generators' states after the round before the
    recording are copied there, and every replay draws its participants and its oracle's rows
    there, the same numbers as the host's; when runs leave, the states are copied back into
    the generators, whose next rounds draw on the host again until the next recording. The
    unrecorded rounds always draw on the host."""

    def __init__(
        self,
        problem: FederatedProblem,
        method: Method,
        oracle: Any,
        who: Participation,
        why: str,
        graph: bool | None,
        checks: DeferredChecks,
    ) -> None:
        self.problem, self.method, self.oracle, self.S = problem, method, oracle, who.S
        self.why, self.graph, self.checks = why, graph, checks
        self.device_why = why or replay_graph.device_draws_reason(problem, who, oracle)
        self.replay: Any = None
        self.inputs: Any = None
        self.gens: tuple[Any, ...] = ()
        self.replayed = False
        self.drew_on_device = False

    def round(
        self,
        t: int,
        left: int,
        draw: Callable[[int, tuple[Any, ...]], np.ndarray],
        gens: tuple[Any, ...],
        state: Any,
        sync: bool,
    ) -> tuple[Any, Any, float]:
        """Round t (``left`` rounds after it) of the alive runs (their generators ``gens``;
        ``draw(t, gens)`` draws their participants on the host): (state, info, seconds)."""
        self.gens = gens
        drawn: list[np.ndarray] = []

        def clients() -> np.ndarray:  # drawn once, and only when the round needs them
            if not drawn:
                drawn.append(draw(t, gens))
            return drawn[0]

        if not self.why and self.inputs is None and left >= 1:
            self.inputs = replay_graph.Inputs(
                self.problem, self.oracle, gens, len(gens), self.S, True
            )
        inputs = self.inputs
        recording = 0.0
        if inputs is not None and self.replay is None and inputs.warm:
            recording = self._record(t, clients, state)
            inputs = self.inputs
        elif self.replay is not None and inputs.device is None:
            inputs.load(t, clients())
        if self.replay is not None:
            self.replayed = True
            seconds = recording + self.replay.run(sync)
            if sync:
                self.checks.check()
                self.replay.check()
            return self.replay.state, self.replay.info, seconds
        if inputs is not None:
            inputs.load(t, clients())
            ctx = inputs.context()
        else:
            ctx = round_context(
                self.problem, clients(), rng=gens, oracle=self.oracle, runs=len(gens), batched=True
            )
        # synchronised when on the buffers: a failure is named by the participants held
        # there, which the next round overwrites
        state, info, seconds = timed_round(
            self.method, ctx, state, checks=self.checks, sync=sync or inputs is not None
        )
        if inputs is not None:
            inputs.warm = True
        return state, info, seconds + recording

    def _record(self, t: int, clients: Callable[[], np.ndarray], state: Any) -> float:
        """Record round t (seconds taken): with the draws on the device, from the generators'
        states now; else round t's host draws loaded into the buffers. A failed recording
        leaves the generators as they were (a recording runs nothing) and drops the buffers:
        round t then runs unrecorded."""
        inputs = self.inputs
        host = None
        if not self.device_why:
            try:  # compiling the draw kernels, device memory for the states
                inputs.draw_on_device(self.gens, self.S)
            except Exception as exc:  # the host draws then, as without it
                first = " ".join(str(exc).split())[:200]
                self.device_why = f"draws on the device failed ({type(exc).__name__}: {first})"
        if self.device_why:
            host = clients()
            inputs.load(t, host)
        self.replay, note, seconds = replay_graph.record(
            self.method, None, state, inputs, self.graph, t, host
        )
        if self.replay is None:
            self.why, self.inputs = note, None
        elif inputs.device is not None:  # "draws on the device" where there are draws
            self.drew_on_device = self.S < self.problem.N or bool(
                getattr(self.oracle, "draws", True)
            )
        return seconds

    def drop(self) -> None:
        """Runs leave: the recording is dropped, and the generators take back the states of
        draws made on the device."""
        if self.replay is not None and self.inputs.device is not None:
            self.inputs.device.to_host(self.gens)
        self.replay = self.inputs = None

    def describe(self) -> str | None:
        """The traces' ``meta["graph"]``: None on NumPy, "replayed" ("replayed, draws on the
        device" when the replays drew there), or why not."""
        if self.problem.xp is np:
            return None
        if self.replayed:
            return "replayed, draws on the device" if self.drew_on_device else "replayed"
        return self.why or "not recorded"


def _drawer(who: Participation, N: int) -> Callable[[int, tuple[Any, ...]], np.ndarray]:
    """``draw(t, gens)``: round t's participants of every run (host, run-major), drawn first
    in the round. A seeded draw of S < N clients (Participation.draw's sorted choice) is made
    for all runs in one compiled call, bit for bit the same. Not called for a round whose
    participants are drawn on the device (a recorded round, :mod:`fedtheory.device_draws`)."""
    S = who.S
    if type(who) is Participation and who.schedule is None and S < N:
        return lambda t, gens: choice_sorted(gens, N, S).reshape(-1)

    def draw(t: int, gens: tuple[Any, ...]) -> np.ndarray:
        draws = [who.draw(t, g) for g in gens]
        return np.concatenate([np.arange(N) if c is None else c for c in draws])

    return draw


def _log_row(
    trace: Trace,
    t: int,
    p: Any,
    ref: Any,
    scale: float,
    S: int,
    totals: dict[str, float],
    N: int,
    seconds: float,
    bound: float,
    target: float | None,
) -> bool:
    """Log round t of one run; False when the run leaves the batch (diverged: no row; or it
    reached the target: its last row)."""
    if not (math.isfinite(p.dist) and math.isfinite(p.f) and p.dist <= bound):
        trace.status = "diverged"
        return False
    r = metrics.row(t, p, ref, scale, S, totals, N, seconds, math.nan)
    trace.rows.append(r)
    if target is not None and r["rel_dist"] <= target:
        trace.status = "reached_target"
        return False
    return True


def _add_counts(totals: np.ndarray, info: Any, alive: list[int]) -> None:
    """Add a batched round's counts to each alive run's totals: an integer count is the total
    over the runs (the same for each), an array holds each run's own (see RoundInfo)."""
    rows = slice(None) if len(alive) == totals.shape[1] else np.asarray(alive)
    values = [getattr(info, field) for _, field in metrics.COUNTS]
    if not any(np.ndim(v) for v in values):  # one addition for every count (a replayed round)
        totals[:, rows] += (np.array(values, dtype=np.float64) / len(alive))[:, None]
        return
    for k, value in enumerate(values):
        totals[k, rows] += value if np.ndim(value) else value / len(alive)


def _with_seed(meta: dict[str, Any], nested: list[str], seed: int) -> dict[str, Any]:
    """A run's metadata from another run's of the batch (the same but for the seed; its
    nested dicts, the keys ``nested``, copied, so that no two traces share one)."""
    out = meta.copy()
    for k in nested:
        out[k] = dict(meta[k])
    out["seed"] = seed
    return out


def _per_run(totals: np.ndarray) -> list[dict[str, float]]:
    """Each run's totals as the dict a row takes (metrics.COUNTS' keys)."""
    keys = [key for key, _ in metrics.COUNTS]
    return [dict(zip(keys, column, strict=True)) for column in totals.T.tolist()]


def _stack(states: list[Any], xp: Any) -> Any:
    """One state with a leading run axis on its array fields (per-client state included);
    scalar fields must agree; other objects (FedNL's marker of a current state) are taken from
    the first run's state, whose arrays are the batch's."""
    first = states[0]
    fields = {}
    for name in first._fields:
        values = [getattr(s, name) for s in states]
        if values[0] is None or isinstance(values[0], (int, float, str, bool)):
            check(
                all(v == values[0] for v in values),
                f"cannot batch states whose field {name!r} differs between runs",
            )
            fields[name] = values[0]
        elif hasattr(values[0], "shape"):
            v = values[0]
            if all(u is v for u in values):  # one start for every run (run_batch): a broadcast
                # copy, not a stack of B views (3000 of them cost 20-90 ms on CuPy)
                fields[name] = xp.broadcast_to(v, (len(values), *v.shape)).copy()
            else:
                fields[name] = xp.ascontiguousarray(xp.stack(values))
        else:
            fields[name] = values[0]
    return type(first)(**fields)


def _take(state: Any, keep: np.ndarray, B: int, xp: Any) -> Any:
    """The runs ``keep`` (host indices) of a batched state (array fields with a leading run
    axis of size B, on the backend or, for per-run server scalars, on the host)."""

    def sel(v: Any) -> Any:
        if not (hasattr(v, "shape") and v.ndim >= 1 and v.shape[0] == B):
            return v
        return v[keep] if isinstance(v, np.ndarray) else v[xp.asarray(keep)]

    return type(state)(*(sel(v) for v in state))
