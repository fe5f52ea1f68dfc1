"""Rounds replayed as one CUDA graph (issue 15, item 1; docs/architecture.md, "GPU rounds").

A round on the GPU is some tens to hundreds of small kernels, each dispatched from Python; on
the w8a split the host's dispatch, not the device, bounds a FedNL round. When a round is a
pure function of the method state's arrays, the runner records the round ONCE with CuPy's
stream capture and then replays the recorded graph: one launch per round instead of one per
kernel, and no Python in between. The method files know nothing of this; :func:`replay`
decides whether a run qualifies and :class:`Replay` does the recording.

A run qualifies (:func:`reason_not`) when

- the problem is on CuPy;
- every client takes part in every round and the oracle is the exact one (a replayed round
  draws nothing, so the host generator must have nothing to draw);
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
  own that no replay resets; :meth:`Replay.check` reads them back at each synchronisation and
  raises the FactorizationError naming the client, as an unrecorded round would;
- counts: the recorded round's RoundInfo (its arrays, such as FedPM's P_i, are the graph's own
  buffers, rewritten by every replay) stands for every replayed round: with full participation
  and the exact oracle the counts do not change from round to round.

Bits: a replay runs the same kernels on the same buffers as the recorded round would, so a
replayed run equals the unrecorded run bit for bit (tests/test_graph.py, on a GPU).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..errors import FedTheoryError, check
from ..linalg import DeferredChecks, _raise
from ..methods.base import Method, RoundContext, RoundInfo
from ..methods.fednl import Current
from ..oracles import Exact

#: Rounds a run needs for a recording to pay: round 1 runs as usual (it compiles the kernels
#: and books the method's setup), round 2 is recorded, rounds 2.. are replayed.
MIN_ROUNDS = 3


def reason_not(problem: Any, method: Method, who: Any, oracle: Any, rounds: int | None) -> str:
    """Why the run cannot be replayed as a graph, or "" when it can be tried (module
    docstring); ``who`` is the run's Participation."""
    if problem.xp is np:
        return "the problem is on NumPy"
    if not who.full_every_round:
        return "partial participation draws clients on the host every round"
    if not isinstance(oracle, Exact):
        return f"the {getattr(oracle, 'name', oracle)!r} oracle draws on the host every round"
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

    def __init__(self, method: Method, ctx: RoundContext, state: Any) -> None:
        import cupy

        fields = _fields(state)
        if fields is None or "theta" not in state._fields:
            raise NotRecordable(
                f"the {method.name} state ({type(state).__name__}) is not a NamedTuple of "
                "arrays with a theta"
            )
        tokens = [v for v in fields if isinstance(v, Current)]
        marks = [t.current for t in tokens]
        cached = set(vars(ctx.problem))
        self.pool = cupy.cuda.MemoryPool()  # the graph's buffers, never lent to other arrays
        stream = cupy.cuda.Stream(non_blocking=True)
        checks = DeferredChecks()
        try:
            with cupy.cuda.using_allocator(self.pool.malloc), stream:
                stream.begin_capture()
                try:
                    theta_before = state.theta.copy()
                    with checks.active():
                        new, info = method.round(ctx, state)
                    self._copy_back(method, state, new)
                    statuses = [
                        (self._sticky(cupy, entry[0]), *entry[1:]) for entry in checks.pending
                    ]
                except BaseException:
                    _abandon(stream)  # end the capture; the round's own error is the reason
                    raise
                graph = stream.end_capture()  # an invalidated capture raises here
            if not set(vars(ctx.problem)) <= cached:  # filled by kernels never run
                raise NotRecordable(
                    f"the {method.name} round built a cache on the problem while it was recorded"
                )
            for status in statuses:
                status[0].fill(0)  # outside the graph: set once, OR-ed into by every replay
            graph.upload(cupy.cuda.get_current_stream())
        except Exception as exc:
            for token, mark in zip(tokens, marks, strict=True):  # the round consumed nothing
                token.current = mark
            if isinstance(exc, NotRecordable):
                raise
            first = " ".join(str(exc).split())[:200]
            raise NotRecordable(
                f"the {method.name} round could not be recorded ({type(exc).__name__}: {first})"
            ) from None
        self.graph = graph
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

    @staticmethod
    def _sticky(cupy: Any, info: Any) -> Any:
        """A status of the graph's own that every replay ORs ``info`` into. It is allocated
        from the default pool, not the recording's: there it could take the place of a
        temporary freed earlier in the round, which every replay would write into again."""
        mem = cupy.get_default_memory_pool().malloc(info.nbytes)  # not written while recording
        acc = cupy.ndarray(info.shape, info.dtype, mem)
        cupy.bitwise_or(acc, info, out=acc)
        return acc

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
        for acc, ndim, labels, what, hint in self.statuses:
            bad = acc.ravel().nonzero()[0]
            if bad.size:
                _raise(ndim, int(bad[0]), labels, what, hint)


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
