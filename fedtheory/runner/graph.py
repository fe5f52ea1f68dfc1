"""Rounds replayed as one CUDA graph (issue 15, item 1; docs/architecture.md, "GPU rounds").

A round on the GPU is some tens to hundreds of small kernels, each dispatched from Python; on
the w8a split the host's dispatch, not the device, bounds a FedNL round. When a round is a
pure function of the method state's arrays, the runner records the round ONCE with CuPy's
stream capture and then replays the recorded graph: one launch per round instead of one per
kernel, and no Python in between. The method files know nothing of this; :func:`replay`
decides whether a run qualifies and :class:`Replay` does the recording.

A run qualifies (:func:`reason_not`) when

- the problem is on CuPy;
- every round has the same number of participants (full participation or a seeded S; an
  explicit schedule may change the size from round to round). What changes from round to
  round is read from device buffers the graph was recorded on (:class:`Inputs`): the
  participants (drawn on the host, as an unrecorded round draws them, and copied in before
  each replay) and a stochastic oracle's draws (a :class:`~fedtheory.oracles.DrawTape`:
  each call's draws made on the host, call by call in the recorded order, from the same
  generators). The participants' weights and slots are computed inside the graph;
- the method state is a NamedTuple of arrays, None and :class:`~fedtheory.methods.fednl.Current`
  tokens, and the recorded round returns one of the same type with arrays of the same shapes
  where the input had arrays (the round's outputs are copied into the input's buffers at the
  end of the graph, so the graph maps the state's buffers to themselves);
- the round needs no host round trip: a round that reads a device value back (a line search,
  a host root-finder) cannot be recorded. CUDA refuses the read, the recording is dropped,
  the round runs as usual, and the run says why (``Trace.meta["graph"]``), or, when the graph
  was required (``graph=True``), stops with that reason.

What a replay keeps exact:

- memory: the recording allocates from a memory pool of its own, kept with the graph, so
  the buffers the graph writes on every replay are never handed to other arrays; the only
  buffers that must keep their contents from one replay to the next (the state's, and the
  factorisation statuses below) are allocated outside that pool, since inside it they could
  share memory with a temporary of an earlier step of the round;
- failed factorisations: each factorisation status the round leaves on the device
  (:class:`~fedtheory.linalg.DeferredChecks`) is OR-ed, inside the graph, into a status of its
  own that no replay resets (with :class:`Inputs`: the number of the first round that failed
  there and the client it named, kept per position); :meth:`Replay.check` reads them back at
  each synchronisation and raises the FactorizationError naming the client of the earliest
  failure, as an unrecorded round would;
- counts: the recorded round's RoundInfo (its arrays, such as FedPM's P_i, are the graph's own
  buffers, rewritten by every replay) stands for every replayed round: a recordable round's
  counts depend only on the number of participants and the hyperparameters (a count read from
  the device would be a host round trip, which cannot be recorded).

Bits: a replay runs the same kernels on the same buffers as the recorded round would, so a
replayed run equals the unrecorded run bit for bit (tests/test_graph.py, on a GPU).
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np

from ..errors import FedTheoryError, check
from ..linalg import DeferredChecks, _raise
from ..methods.base import Method, RoundContext, RoundInfo, round_context
from ..methods.fednl import Current
from ..oracles import DrawTape
from .participation import Participation

#: Rounds a run needs for a recording to pay: round 1 runs as usual (it compiles the kernels
#: and books the method's setup), round 2 is recorded, rounds 2.. are replayed.
MIN_ROUNDS = 3


def reason_not(problem: Any, method: Method, who: Any, oracle: Any, rounds: int | None) -> str:
    """Why the run cannot be replayed as a graph, or "" when it can be tried (module
    docstring); ``who`` is the run's Participation."""
    if problem.xp is np:
        return "the problem is on NumPy"
    if who.schedule is not None and not who.full_every_round:
        return "a participation schedule (its rounds may differ in size)"
    if type(who) is not Participation and not who.full_every_round:
        return f"participation by a {type(who).__name__} (its rounds may differ in size)"
    if not getattr(oracle, "recordable", False):
        name = getattr(oracle, "name", oracle)
        return (
            f"the {name!r} oracle does not say it draws only through oracles.host_draws "
            "(recordable = True)"
        )
    if rounds is not None and rounds < MIN_ROUNDS:
        return f"{rounds} rounds (a recording pays from {MIN_ROUNDS} rounds)"
    return ""


def _is_array(x: Any) -> bool:
    return type(x).__module__.startswith("cupy") and hasattr(x, "data")


def _fields(state: Any) -> tuple[Any, ...] | None:
    """The state's fields when it is a NamedTuple of arrays, None and tokens, else None."""
    if not (isinstance(state, tuple) and hasattr(state, "_fields")):
        return None
    if all(_is_array(v) or v is None or isinstance(v, Current) for v in state):
        return tuple(state)
    return None


def _span(a: Any) -> tuple[int, int]:
    start = a.data.ptr + min(
        0, sum((n - 1) * s for n, s in zip(a.shape, a.strides, strict=True) if s < 0)
    )
    end = a.data.ptr + sum((n - 1) * s for n, s in zip(a.shape, a.strides, strict=True) if s > 0)
    return start, end + a.itemsize


def _overlap(a: Any, b: Any) -> bool:
    (a0, a1), (b0, b1) = _span(a), _span(b)
    return a.size > 0 and b.size > 0 and a0 < b1 and b0 < a1


class NotRecordable(FedTheoryError):
    """The round cannot be recorded as a graph (the message says why)."""


def device_draws_reason(problem: Any, who: Any, oracle: Any) -> str:
    """Why a batch's recorded rounds cannot draw on the device (:mod:`fedtheory.device_draws`),
    or "" when they can: seeded participation and an oracle that can."""
    if problem.xp is np:
        return "the problem is on NumPy"
    if type(who) is not Participation or who.schedule is not None:
        return "participation other than a seeded S"
    if not getattr(oracle, "device_draws", False):
        return f"the {getattr(oracle, 'name', oracle)!r} oracle draws on the host"
    from ..device_draws import supported

    return supported(problem.N, who.S, np.asarray(problem.sizes))


def needs_inputs(who: Any, oracle: Any) -> bool:
    """Whether a recorded round of this run reads per-round :class:`Inputs` (participants
    that change, or an oracle that draws), or nothing but the state."""
    return not who.full_every_round or bool(getattr(oracle, "draws", True))


class Inputs:
    """What a replayed round reads that changes from round to round.

    ``buffer`` holds the participants (run-major for a batch: ``runs * S`` client ids) and,
    last, the round's number; :meth:`load` copies round t's in (one host-to-device copy)
    and makes the round's oracle draws into the tape's buffers (:class:`DrawTape`).
    :meth:`context` is the round's context on these buffers (its weights and slots computed
    on the device, inside the recording). ``S`` None: every client in every round (one run;
    ``clients`` is then None). Also used, not recording, for the round before the recording,
    so that its kernels are compiled before the capture.
    """

    def __init__(
        self, problem: Any, oracle: Any, rng: Any, runs: int, S: int | None, batched: bool
    ) -> None:
        import cupy

        self.problem, self.oracle, self.runs, self.batched = problem, oracle, runs, batched
        m = 0 if S is None else runs * S
        self.buffer = cupy.zeros(m + 1, dtype=cupy.int64)  # outside any recording's pool
        self.clients = None if S is None else self.buffer[:m]
        self.round_no = self.buffer[m:]
        self.tape = DrawTape(problem, rng, self.clients)
        self.warm = False  # a round has run on these buffers (its kernels are compiled)

    def draw_on_device(self, generators: Any, S: int) -> None:
        """From the next recording on, the rounds draw on the device: the participants and
        the oracle's draws from ``generators``' states copied there now
        (:class:`fedtheory.device_draws.DeviceGenerators`), inside the recorded round."""
        from ..device_draws import DeviceGenerators

        self.tape.device = DeviceGenerators(generators, self.problem.N, S, self.problem.sizes)

    @property
    def device(self) -> Any:
        """The generators on the device (the tape's), or None: the host draws."""
        return self.tape.device

    def recorded_context(self) -> RoundContext:
        """The context of a round being recorded (its draws through the tape); with the draws
        on the device, the round's participants are drawn into the buffer first and its
        number counted on (both recorded)."""
        self.tape.recording = True
        if self.device is not None:
            self.device.participants(self.clients)
            self.round_no += 1
        return self.context()

    def context(self) -> RoundContext:
        return round_context(
            self.problem,
            self.clients,
            rng=self.tape,
            oracle=self.oracle,
            runs=self.runs,
            batched=self.batched,
        )

    def load(self, t: int, clients: np.ndarray | None) -> None:
        """Round t's participants (host ids, None: all) and oracle draws into the buffers."""
        host = np.empty(self.buffer.size, dtype=np.int64)
        if self.clients is not None:
            check(
                clients is not None and clients.size == self.clients.size,
                f"round {t} has {0 if clients is None else clients.size} participants, the "
                f"recorded round {self.clients.size}",
            )
            host[:-1] = clients
        host[-1] = t
        self.buffer.set(host)
        self.tape.draw(clients)


class Replay:
    """One round of ``method`` recorded as a CUDA graph on the buffers of ``state``.

    Recording does not run the round: after it, :meth:`run` runs one round (the state's arrays
    then hold the next state) and :attr:`state` is the state to read, always the same buffers.
    :attr:`before` is that state with theta replaced by a copy of theta taken at the start of
    the replayed round (the drift metrics need theta^{t-1}); its other arrays are the current
    buffers. Raises :class:`NotRecordable` (nothing changed: tokens restored, no graph kept)
    when the round cannot be recorded.

    The graph's buffers (the round's temporaries, :attr:`before`'s theta, the arrays of
    :attr:`info`) live in the recording's own memory pool, which lives as long as this object:
    keep a reference to it while those arrays are read (:class:`.loop.Step` does).
    """

    def __init__(
        self, method: Method, ctx: RoundContext | None, state: Any, inputs: Inputs | None = None
    ) -> None:
        import cupy

        fields = _fields(state)
        if fields is None or "theta" not in state._fields:
            raise NotRecordable(
                f"the {method.name} state ({type(state).__name__}) is not a NamedTuple of "
                "arrays with a theta"
            )
        tokens = [v for v in fields if isinstance(v, Current)]
        marks = [t.current for t in tokens]
        problem = inputs.problem if inputs is not None else ctx.problem  # type: ignore[union-attr]
        cached = set(vars(problem))
        self.inputs = inputs
        self.pool = cupy.cuda.MemoryPool()  # the graph's buffers, never lent to other arrays
        stream = cupy.cuda.Stream(non_blocking=True)
        checks = DeferredChecks()
        try:
            with cupy.cuda.using_allocator(self.pool.malloc), stream:
                stream.begin_capture()
                try:
                    if inputs is not None:  # the context on the buffers, built in the graph
                        ctx = inputs.recorded_context()
                    theta_before = state.theta.copy()
                    with checks.active():
                        new, info = method.round(ctx, state)
                    self._copy_back(method, state, new)
                    statuses = [self._status(cupy, *entry) for entry in checks.pending]
                except BaseException:
                    _abandon(stream)  # end the capture; the round's own error is the reason
                    raise
                finally:
                    if inputs is not None:
                        inputs.tape.recording = False
                graph = stream.end_capture()  # an invalidated capture raises here
            if not set(vars(problem)) <= cached:  # filled by kernels never run
                raise NotRecordable(
                    f"the {method.name} round built a cache on the problem while it was recorded"
                )
            for status in statuses:
                for acc in status[0]:
                    acc.fill(0)  # outside the graph: set once, written by every replay
            graph.upload(cupy.cuda.get_current_stream())
        except Exception as exc:
            if inputs is not None:
                inputs.tape.entries.clear()
            for token, mark in zip(tokens, marks, strict=True):  # the round consumed nothing
                token.current = mark
            if isinstance(exc, NotRecordable):
                raise
            first = " ".join(str(exc).split())[:200]
            raise NotRecordable(
                f"the {method.name} round could not be recorded ({type(exc).__name__}: {first})"
            ) from None
        self.graph = graph
        self.ctx: RoundContext = ctx  # type: ignore[assignment]
        self.statuses = statuses
        self.info: RoundInfo = info
        self.state = type(new)(
            *(old if _is_array(old) else v for old, v in zip(state, new, strict=True))
        )
        self.before = self.state._replace(theta=theta_before)

    @staticmethod
    def _copy_back(method: Method, state: Any, new: Any) -> None:
        """Copy the recorded round's new arrays into the input state's buffers (inside the
        graph), refusing outputs that do not line up with the input's arrays."""
        import cupy

        if type(new) is not type(state):
            raise NotRecordable(
                f"the {method.name} round returned a {type(new).__name__} for a "
                f"{type(state).__name__}"
            )
        pairs = []
        for name, old, v in zip(state._fields, state, new, strict=True):
            if _is_array(old) != _is_array(v) or (old is None) != (v is None):
                raise NotRecordable(f"the {method.name} round changes what the state's {name} is")
            if _is_array(old):
                if old.shape != v.shape or old.dtype != v.dtype:
                    raise NotRecordable(
                        f"the {method.name} round changes the shape of the state's {name}"
                    )
                if v is not old:
                    pairs.append((name, old, v))
        inputs = [v for v in state if _is_array(v)]
        for name, old, v in pairs:  # an output that is a view of another input: no safe order
            if any(_overlap(v, other) for other in inputs if other is not old):
                raise NotRecordable(
                    f"the {method.name} round's new {name} shares memory with another field"
                )
        for _, old, v in pairs:
            cupy.copyto(old, v)

    def _status(
        self, cupy: Any, info: Any, ndim: int, labels: Any, what: str, hint: str
    ) -> tuple[Any, ...]:
        """The statuses of the graph's own that every replay writes ``info`` into (inside
        the recording): without :class:`Inputs`, one OR-ed with ``info``; with them, the
        number of the first round that failed at each position and the client named there
        (``labels`` on the device, or positions into host ``labels``)."""
        if self.inputs is None:
            acc = _persistent(cupy, info.shape, info.dtype)
            cupy.bitwise_or(acc, info, out=acc)
            return ((acc,), ndim, labels, what, hint)
        first = _persistent(cupy, info.shape, cupy.int64)
        named = _persistent(cupy, info.shape, cupy.int64)
        device_labels = _is_array(labels) and labels.shape == info.shape
        who = labels if device_labels else cupy.arange(info.size, dtype=cupy.int64)
        _first_failure()(info, self.inputs.round_no, who.reshape(info.shape), first, named)
        return ((first, named), ndim, None if device_labels else labels, what, hint)

    def run(self, sync: bool) -> float:
        """One replayed round, queued on the current stream (as every other kernel of the
        run), and its wall time; with ``sync`` the device is synchronised, and the time
        includes the device's work since the last synchronisation (as
        :func:`.loop.timed_round`). The caller then reads the statuses (:meth:`check`)."""
        import cupy

        clock = time.perf_counter()
        self.graph.launch(cupy.cuda.get_current_stream())
        if sync:
            cupy.cuda.Device().synchronize()
        return time.perf_counter() - clock

    def check(self) -> None:
        """After a synchronisation: raise the FactorizationError of the first failed
        factorisation of any replayed round so far, naming the client."""
        if self.inputs is None:
            for (acc,), ndim, labels, what, hint in self.statuses:
                bad = acc.ravel().nonzero()[0]
                if bad.size:
                    _raise(ndim, int(bad[0]), labels, what, hint)
            return
        worst = None  # (round, order of the factorisation in the round, position)
        for order, ((first, _), *_rest) in enumerate(self.statuses):
            rounds = first.ravel().get()
            bad = rounds.nonzero()[0]
            if bad.size:
                pos = int(bad[np.argmin(rounds[bad])])  # the lowest position of that round
                worst = min(worst or (np.inf, 0, 0), (int(rounds[pos]), order, pos))
        if worst is not None:
            _, order, pos = worst
            (_, named), ndim, labels, what, hint = self.statuses[order]
            who = int(named.ravel()[pos].get())
            _raise(ndim, who if labels is None else pos, labels, what, hint)


def record(
    method: Method,
    ctx: RoundContext | None,
    state: Any,
    inputs: Inputs | None,
    graph: bool | None,
    t: int,
    clients: np.ndarray | None,
) -> tuple[Replay | None, str, float]:
    """Record round t on a copy of ``state`` (:func:`own_state`): (the replay, "", seconds),
    or (None, why not, seconds); ``graph=True`` raises instead. With ``inputs``, round t's
    draws are then made into the recorded buffers (the recording made none); with the draws on
    the device (:meth:`Inputs.draw_on_device`) the replays make them."""
    clock = time.perf_counter()
    try:
        replay = Replay(method, ctx, own_state(state), inputs)
    except NotRecordable as exc:
        require(str(exc), graph)
        return None, str(exc), time.perf_counter() - clock
    if inputs is not None and inputs.device is None:
        inputs.load(t, clients)
    return replay, "", time.perf_counter() - clock


def _persistent(cupy: Any, shape: tuple, dtype: Any) -> Any:
    """A device array allocated from the default pool, not the recording's: there it could
    take the place of a temporary freed earlier in the round, which every replay would write
    into again. Not written while recording."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return cupy.ndarray(shape, dtype, cupy.get_default_memory_pool().malloc(nbytes))


@functools.cache
def _first_failure() -> Any:
    """(info, round, who) -> (first, named): where a factorisation failed (info != 0) and no
    earlier replay failed there, the round's number and the client named at that position."""
    import cupy

    return cupy.ElementwiseKernel(
        "T info, raw int64 t, int64 who",
        "int64 first, int64 named",
        "if (first == 0 && info != 0) { first = t[0]; named = who; }",
        "fedtheory_first_failure",
    )


def describe(
    problem: Any, method: Method, who: Any, oracle: Any, rounds: int | None, graph: bool | None
) -> str | None:
    """What a run's metadata says before its rounds: None on NumPy, "off (graph=False)", the
    reason the run cannot be replayed, or None while it may be (the runner then writes
    "replayed" or why the recording failed)."""
    if problem.xp is np:
        return None
    if graph is False:
        return "off (graph=False)"
    return reason_not(problem, method, who, oracle, rounds) or None


def own_state(state: Any) -> Any:
    """``state`` with copies of its arrays, so the buffers that every replay overwrites are
    not those of a state the caller may keep (round 1's). A state with a
    :class:`~fedtheory.methods.fednl.Current` token is updated in place by its method anyway
    (the FedNL family: the next round consumes it); only its theta is copied."""
    fields = _fields(state)
    if not fields:
        return state
    if any(isinstance(v, Current) for v in fields):
        return state._replace(theta=state.theta.copy()) if _is_array(state.theta) else state
    return type(state)(*(v.copy() if _is_array(v) else v for v in fields))


def _abandon(stream: Any) -> None:
    """End a capture that failed half-way, ignoring the error an invalidated capture gives."""
    try:
        stream.end_capture()
    except Exception:  # the capture was invalidated by the error being raised
        pass


def require(reason: str, graph: bool | None) -> None:
    """``graph=True`` with a run that cannot be replayed: stop with the reason."""
    check(not (graph and reason), f"graph=True but this run cannot be replayed: {reason}")
