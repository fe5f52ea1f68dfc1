"""The run loop (docs/algorithms.md, "Notation" and "Per-round metrics").

:func:`iterate` is the loop itself: it draws each round's participants, builds the round's
context (:func:`fedtheory.methods.base.round_context`) and applies the method's round map,
yielding every round. :func:`run` is built on it: it logs one tidy row per logged round, stops
on divergence or a target, and returns a :class:`~fedtheory.trace.Trace`. Methods never see
metrics; the runner never knows a method's algebra.

``log_every = k`` computes metrics (and so moves data to the host) only after rounds k, 2k, ...
and the last; the divergence and target checks run on those rounds only. A logged round whose
iterate is NaN/inf, or farther from theta* than ``diverge_factor`` times
max(1, ||theta^0 - theta*||, ||theta*||), ends the run with status "diverged"; the rows before it
are kept and that round's row is not written. A run that uses all its rounds ends "completed",
or "stalled" / "oscillating" when its last logged errors settled away from theta*
(:func:`.metrics.settled_status`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import check
from ..linalg import DeferredChecks
from ..methods.base import Method, RoundContext, RoundInfo, round_context
from ..oracles import make_oracle
from ..problem import FederatedProblem
from ..resources import available_memory
from ..threads import DEFAULT_THREADS, blas_threads, check_threads
from ..trace import Trace
from ..validate import check_count, check_int, check_min, check_seed
from . import graph as replay_graph
from . import metrics
from .participation import Participation


@dataclass(frozen=True)
class Step:
    """One round of :func:`iterate`: its number t, the context it ran in, the state before
    and after it, what the method reported and the round map's wall time (s).

    A replayed round (``graph == "replayed"``, :mod:`.graph`): ``state`` is the replay's
    buffers, overwritten by the next round, and ``before`` is that state with theta copied
    before the round (its other arrays are the current buffers); ``info`` is the recorded
    round's, its arrays rewritten by every replay. ``owner`` keeps the recording (and the
    memory its arrays live in) alive as long as the step is referenced."""

    t: int
    ctx: RoundContext
    before: Any
    state: Any
    info: RoundInfo
    seconds: float
    graph: str = ""  # "replayed", or why the round could not be recorded (:mod:`.graph`)
    owner: Any = field(default=None, repr=False, compare=False)


def iterate(
    problem: FederatedProblem,
    method: Method,
    *,
    rounds: int | None = None,
    participation: Any = None,
    seed: int = 0,
    theta0: Any = None,
    oracle: Any = "exact",
    state: Any = None,
    sync_every: int = 1,
    graph: bool | None = False,
) -> Iterator[Step]:
    """The rounds of ``method`` on ``problem``, one :class:`Step` each (forever when
    ``rounds`` is None, which needs seeded or full participation).

    On a GPU the device is synchronised after every ``sync_every``-th round (and the last), and
    the factorisations of the rounds since the previous synchronisation are checked then
    (a FactorizationError naming the client is raised at that round, up to ``sync_every - 1``
    rounds after the failed factorisation): the rounds in between run without a host round
    trip. A synchronised step's ``seconds`` include the device time of the rounds since the
    previous synchronisation, the others' the host's dispatch alone, so cumulative sums of
    ``seconds`` are exact at synchronised rounds. :func:`run` synchronises at its logged
    rounds. On NumPy ``sync_every`` changes nothing.

    participation: None (all), S, or a schedule (see :mod:`.participation`); seed: the run's
    one generator (participation draws and stochastic oracles); theta0: the start (default 0);
    state: a method state to start from instead of ``method.start(problem, theta0)``.

    The cost of ``method.start`` (its RoundInfo) is booked with round 1: the first step's
    ``info`` is round 1's plus the setup's (none when ``state`` is given).

    graph (GPU only, :mod:`.graph`): True records round 2 as a CUDA graph and replays it for
    every later round (refused with the reason when the run cannot be replayed); None tries
    to and, where it cannot, runs every round as usual (when the recording itself failed, the
    step of round 2 says why in its ``graph`` field; :func:`.graph.reason_not` gives the
    reasons known before the run); False (the default) never records. Replayed steps
    (``graph == "replayed"``) all share the same state buffers: a step's ``state`` and
    ``before`` are valid until the next step is taken (copy what you keep); see
    :class:`Step`. Round 1's state is not among those buffers (the recording works on a copy).
    With partial participation or a stochastic oracle, round 1 already runs on the recording's
    participants buffer (:class:`.graph.Inputs`, so that its kernels are compiled before the
    capture): the ``ctx`` of round 1 and of every replayed step reads that buffer, valid until
    the next step, and round 1 is synchronised (a failed factorisation raises there).
    """
    seed = check_seed(seed)
    check_count(sync_every, "sync_every")
    check(
        graph is None or isinstance(graph, bool),
        f"graph must be None, True or False, got {graph!r}",
    )
    check(
        rounds is not None or not isinstance(participation, (list, tuple, str)),
        "a participation schedule needs a number of rounds",
    )
    who = participants(problem, method, participation, rounds or 0)
    oracle = make_oracle(oracle)
    rng = np.random.default_rng(seed)
    why = (
        replay_graph.reason_not(problem, method, who, oracle, rounds) if graph is not False else ""
    )
    replay_graph.require(why, graph)
    setup = None
    if state is None:
        state, setup = method.start(problem, start(problem, theta0))
    t = 0
    checks = DeferredChecks()
    replay = inputs = None
    if graph is not False and not why and replay_graph.needs_inputs(who, oracle):
        # what changes between rounds, read from device buffers from round 1 on (so that
        # round 1 compiles every kernel the recording of round 2 will use)
        inputs = replay_graph.Inputs(
            problem, oracle, rng, 1, who.S if who.S != problem.N else None, False
        )
    while rounds is None or t < rounds:
        t += 1
        sync = t % sync_every == 0 or t == rounds
        note, recording = "", 0.0
        clients = who.draw(t, rng)
        if inputs is not None:
            inputs.load(t, clients)  # after the recording's draws of the round it replays
        if replay is None:
            ctx = _context(problem, clients, rng, oracle, inputs)
            if t == 2 and graph is not False and not why:  # its time booked with round 2
                replay, note, recording = replay_graph.record(
                    method, ctx, state, inputs, graph, t, clients
                )
                why = note
                if replay is None:  # round 2 and the rest run as usual
                    inputs = None
                    ctx = _context(problem, clients, rng, oracle, inputs)
                else:
                    ctx = replay.ctx
        if replay is not None:
            seconds = recording + replay.run(sync)
            if sync:  # round 1's factorisations first (when round 1 was not synchronised)
                checks.check()
                replay.check()
            yield Step(
                t, ctx, replay.before, replay.state, replay.info, seconds, "replayed", replay
            )
            continue
        before = state
        # synchronised when on the buffers: a failure is named by the participants held there
        state, info, seconds = timed_round(
            method, ctx, state, checks=checks, sync=sync or inputs is not None
        )
        seconds += recording
        if setup is not None:
            info, setup = info.plus(setup), None
        yield Step(t, ctx, before, state, info, seconds, note)


def run(
    problem: FederatedProblem,
    method: Method,
    rounds: int,
    *,
    participation: Any = None,
    seed: int = 0,
    theta0: Any = None,
    oracle: Any = "exact",
    target: float | None = None,
    drift_metrics: bool = True,
    diverge_factor: float = 1e8,
    log_every: int = 1,
    progress: bool = False,
    threads: int | None = DEFAULT_THREADS,
    graph: bool | None = None,
) -> Trace:
    """Run ``method`` on ``problem`` for up to ``rounds`` rounds and return its :class:`Trace`.

    participation: S, the number of clients per round (None or N: all of them), or an explicit
        schedule: one list of client indices per round, or a file of them (one round a line).
    seed: seeds the run's one generator (participation draws and stochastic oracles).
    theta0: starting point (default 0), NumPy or the problem's backend.
    target: stop with status "reached_target" once rel_dist <= target.
    drift_metrics: compute drift, rel_drift, hess_gap, grad_dissimilarity, client_drift (for
        methods with local preconditioners one extra global Hessian per logged round).
    log_every: log (and check) only every k-th round and the last.
    threads: BLAS threads during the run (default 1, measured fastest on small and mid-sized
        rounds; see :mod:`fedtheory.threads`); None leaves BLAS as it is.
    graph: on a GPU, replay rounds 2.. as one recorded CUDA graph (:mod:`.graph`): None (the
        default) where the run allows it, True required (refused with the reason otherwise),
        False never. The results are the same bits either way; ``trace.meta["graph"]`` says
        what happened ("replayed" or why not).
    """
    check_common(rounds, target, log_every)
    who = participants(problem, method, participation, rounds)  # a schedule file read once
    check_seed(seed)
    check_threads(threads)
    check(
        graph is None or isinstance(graph, bool),
        f"graph must be None, True or False, got {graph!r}",
    )
    with blas_threads(threads):
        return _run(
            problem,
            method,
            rounds,
            who,
            seed,
            theta0,
            oracle,
            target,
            drift_metrics,
            diverge_factor,
            log_every,
            progress,
            threads,
            graph,
        )


def _run(
    problem: FederatedProblem,
    method: Method,
    rounds: int,
    who: Participation,
    seed: int,
    theta0: Any,
    oracle: Any,
    target: float | None,
    drift_metrics: bool,
    diverge_factor: float,
    log_every: int,
    progress: bool,
    threads: int | None,
    graph: bool | None,
) -> Trace:
    N, xp = problem.N, problem.xp
    oracle = make_oracle(oracle)
    ref = problem.reference
    theta = start(problem, theta0)
    scale = max(1.0, float(np.linalg.norm(ref.theta_star)))
    bound = diverge_factor * max(scale, float(xp.linalg.norm(theta - xp.asarray(ref.theta_star))))
    totals = metrics.new_totals()
    seconds = metric_seconds = 0.0
    clock = time.perf_counter()
    point = metrics.Point(problem, theta)  # metrics at the last logged iterate
    point_round = 0
    metric_seconds += time.perf_counter() - clock
    rows = [metrics.row(0, point, ref, scale, 0, totals, N, 0.0, metric_seconds)]
    trace = Trace(
        rows=rows, meta=metrics.meta(problem, method, rounds, who.describe(), seed, oracle, threads)
    )
    bar = _progress(rounds, f"{method.name} on {problem.name}") if progress else None
    steps = iterate(
        problem,
        method,
        rounds=rounds,
        participation=who,
        seed=seed,
        theta0=theta,
        oracle=oracle,
        sync_every=log_every,
        graph=graph,
    )
    trace.meta["graph"] = replay_graph.describe(problem, method, who, oracle, rounds, graph)
    for step in steps:
        t = step.t
        trace.meta["graph"] = step.graph or trace.meta["graph"]  # "replayed" or why not
        seconds += step.seconds
        metrics.add_counts(totals, step.info, 1)
        if bar is not None:
            bar.update(1)
        if not (t % log_every == 0 or t == rounds):
            continue
        clock = time.perf_counter()
        dist = float(xp.linalg.norm(step.state.theta - xp.asarray(ref.theta_star)))
        if not (math.isfinite(dist) and dist <= bound):  # before any metric of a bad iterate
            trace.status = "diverged"
            break
        # a copy: a replayed state's buffers change with the next round (:mod:`.graph`)
        new_point = metrics.Point(problem, step.state.theta.copy())
        if not math.isfinite(new_point.f):
            trace.status = "diverged"
            break
        if drift_metrics:
            start_point = (
                point if point_round == t - 1 else metrics.Point(problem, step.before.theta)
            )
            extra = metrics.drift(step.ctx, step.info, start_point, step.state.theta)
        metric_seconds += time.perf_counter() - clock
        r = metrics.row(t, new_point, ref, scale, who.size(t), totals, N, seconds, metric_seconds)
        if drift_metrics:
            r.update(extra)
        trace.rows.append(r)
        point, point_round = new_point, t
        if bar is not None:
            bar.set_postfix(rel_dist=f"{r['rel_dist']:.2e}")
        if target is not None and r["rel_dist"] <= target:
            trace.status = "reached_target"
            break
    if bar is not None:
        bar.close()
    if trace.status == "completed":
        trace.status = metrics.settled_status(trace["dist_to_opt"], scale)
    trace.meta["status"] = trace.status
    return trace


def _context(
    problem: FederatedProblem, clients: Any, rng: Any, oracle: Any, inputs: Any
) -> RoundContext:
    """The round's context: on the buffers of ``inputs`` (:class:`.graph.Inputs`) or as usual."""
    if inputs is not None:
        return inputs.context()
    return round_context(problem, clients, rng=rng, oracle=oracle)


def timed_round(
    method: Method,
    ctx: RoundContext,
    state: Any,
    *,
    checks: DeferredChecks | None = None,
    sync: bool = True,
) -> tuple[Any, RoundInfo, float]:
    """One round map and its wall time.

    On a GPU: with ``checks``, the round's factorisations leave their status on the device
    (:class:`~fedtheory.linalg.DeferredChecks`); with ``sync`` the device is synchronised after
    the round and every pending status checked (raising the FactorizationError that names the
    client), so the time includes the device's work since the last synchronisation. Without
    ``sync`` the time is the host's dispatch alone and the round needs no host round trip."""
    xp = ctx.problem.xp
    clock = time.perf_counter()
    if checks is not None and xp is not np:
        with checks.active():
            state, info = method.round(ctx, state)
    else:
        state, info = method.round(ctx, state)
    if xp is not np and sync:
        xp.cuda.Device().synchronize()
        if checks is not None:
            checks.check()
    return state, info, time.perf_counter() - clock


def participants(
    problem: FederatedProblem, method: Method, participation: Any, rounds: int
) -> Participation:
    """The run's :class:`Participation` (``participation`` as :func:`run` takes it, or one
    already built), refused when ``method`` needs every client."""
    who = (
        participation
        if isinstance(participation, Participation)
        else Participation(problem.N, participation, rounds)
    )
    check(
        not (method.full_participation_only and not who.full_every_round),
        f"method {method.name} needs full participation (S = N = {problem.N}), got "
        f"S = {who.describe()}",
    )
    return who


#: memory a logged row takes in a Trace (a dict of ~19 floats), measured: ~0.8 KB
ROW_BYTES = 1024


def check_common(rounds: Any, target: Any, log_every: Any) -> None:
    check_int(rounds, "rounds", 0)
    if target is not None:
        check_min(target, "target", 0, strict=True, show=repr)
    check_count(log_every, "log_every")
    rows = rounds // log_every + 2
    need, free = rows * ROW_BYTES, available_memory()
    check(
        free is None or need <= free / 2,
        f"rounds = {rounds:,} with log_every = {log_every} keeps {rows:,} rows "
        f"(~{need / 2**30:.2g} GiB), more than half of the {(free or 0) / 2**30:.2g} GiB "
        f"available; log fewer rounds (log_every) or run fewer rounds",
    )


def start(problem: FederatedProblem, theta0: Any) -> Any:
    xp, d = problem.xp, problem.d
    theta = xp.zeros(d) if theta0 is None else xp.asarray(theta0, dtype=xp.float64)
    check(theta.shape == (d,), f"theta0 must have shape ({d},), got {tuple(theta.shape)}")
    return theta


def _progress(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="round", leave=False)
