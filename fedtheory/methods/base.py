"""What every method is: a frozen set of hyperparameters with a pure round map.

A method (after optax's ``init``/``update`` pair) is a frozen dataclass of its hyperparameters
with two functions:

    start(problem, theta0) -> (state, RoundInfo)   (state: a NamedTuple with at least ``theta``;
                                                   the RoundInfo: what setting it up cost)
    round(ctx, state)      -> (state, RoundInfo)

``ctx`` (:class:`RoundContext`) carries the round's participants, their renormalised weights
w~_i, the run's seeded generator and the oracle; a method reads data only through ``ctx.eval``.
Methods never compute metrics: they report in :class:`RoundInfo` what the runner needs for them
(the last local preconditioners, the local iterates, floats sent, oracle calls). Hyperparameter
checks and the CLI's string parsing live in :mod:`fedtheory.validate`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from .. import kernels
from .._backend import matmul, weighted_sum
from ..errors import check
from ..objectives import OracleOut
from ..oracles import Deferred, DrawTape, Exact, RunDraws, make_oracle
from ..validate import coerce_params


class ServerState(NamedTuple):
    theta: Any


@dataclass(frozen=True)
class RoundInfo:
    """What one round did, as totals over its participants.

    ``uplink``/``downlink``: floats sent (a vector counts d, a symmetric matrix d(d+1)/2);
    ``grad_evals``/``hess_evals``: local oracle calls; ``P``: the preconditioners used in the
    last local step (m, d, d) or None; ``theta_local``: the uploaded local iterates (m, d) or None.
    ``bits``: uplink bits with the FedNL papers' convention (32-bit floats, one-sided); None
    means 32 bits per uplink float. Methods whose messages are not plain floats (FedNL's
    compressors) report their own count.

    In a batched round a count is either an integer, the total over all B runs (the same for
    every run), or a host array (B,) of each run's own count (what
    :meth:`RoundContext.per_run` and :meth:`RoundContext.count` give, for counts that differ
    between runs: line-search trials, the iterations of a local solve).
    """

    uplink: int
    downlink: int
    grad_evals: int
    hess_evals: int
    P: Any = None
    theta_local: Any = None
    bits: float | None = None

    @property
    def uplink_bits(self) -> Any:
        if self.bits is None:
            return 32.0 * self.uplink
        return float(self.bits) if np.ndim(self.bits) == 0 else np.asarray(self.bits, float)

    def plus(self, other: RoundInfo) -> RoundInfo:
        """These counts and ``other``'s together (a round and the setup booked with it); the
        preconditioners and local iterates are this round's."""
        bits = None
        if self.bits is not None or other.bits is not None:
            bits = _bits(self) + _bits(other)
        return RoundInfo(
            uplink=self.uplink + other.uplink,
            downlink=self.downlink + other.downlink,
            grad_evals=self.grad_evals + other.grad_evals,
            hess_evals=self.hess_evals + other.hess_evals,
            P=self.P,
            theta_local=self.theta_local,
            bits=bits,
        )


def _bits(info: RoundInfo) -> Any:
    """The uplink bits of ``info`` as its own count (an integer stays an integer)."""
    return 32 * info.uplink if info.bits is None else info.bits


#: What a method without a setup (its state at theta^0 is theta^0) reports from ``start``.
NO_SETUP = RoundInfo(uplink=0, downlink=0, grad_evals=0, hess_evals=0)


@dataclass(frozen=True)
class RoundContext:
    """The round's participants S_t (host indices, None = all clients), their weights w~_i
    (renormalised over S_t, on the problem's backend), the run's generator and the oracle.

    Batched runs (``batched``, see :func:`fedtheory.runner.run_batch`): the context holds
    ``runs = B`` independent runs side by side (B >= 1), their participants laid out run-major
    (``clients`` has B * S entries, run b's at positions b*S .. b*S + S - 1), ``rng`` is the
    sequence of the B runs' generators (the oracle draws each run's rows from its own), and
    every array of the method state carries a leading run axis: server-level arrays (theta is
    (B, d)) and per-client state ((B, N, ...)). The run axis lives in these helpers only, so a
    method reads the same batched or not:

    - ``to_clients``: a server-level array as one row per participant;
    - ``mix``: sum_i w~_i x_i over each run's participants; ``sum_w``: the same with the
      problem's weights w_i (not renormalised); ``mix_all``: sum_i w_i x_i of a per-client
      state over all N clients;
    - ``take`` / ``put``: the participants' rows of a per-client state (N, ...), and the state
      with those rows replaced; ``flat``: the state as rows, ``slots``: the participants' rows;
    - ``per_run``: a server-level computation that cannot be batched (a line search, a host
      root-finder) run once per run on that run's own single-run context.

    ``RoundInfo`` counts are then totals over all runs.
    """

    problem: Any
    clients: np.ndarray | None
    weights: Any
    rng: Any
    oracle: Any
    runs: int = 1
    batched: bool = False

    @property
    def m(self) -> int:
        """Participants in this context (all runs together)."""
        return self.problem.N if self.clients is None else len(self.clients)

    @property
    def S(self) -> int:
        """Participants of each run."""
        return self.m // self.runs

    @property
    def labels(self) -> np.ndarray:
        """Client ids of the participants, for error messages."""
        return np.arange(self.problem.N) if self.clients is None else self.clients

    def eval(
        self,
        theta: Any,
        *,
        value: bool = False,
        grad: bool = True,
        hess: bool = False,
        sub: np.ndarray | None = None,
        mixed_hess: bool = False,
    ) -> OracleOut:
        """Oracle of the participants (or of the participants at positions ``sub``) at
        ``theta``: one point for all of them (one run) or one row per participant.

        ``mixed_hess``: H is returned mixed, ``mix(H_i)`` = sum_i w~_i H_i over each run's
        participants, for a method that only needs that sum. The exact oracle of one run
        builds it without the (m, d, d) stack of client Hessians (weights folded into the
        Gram product; not for ridge, whose constant client Hessians are cached and mixed)."""
        check(not (mixed_hess and sub is not None), "mixed_hess mixes all the participants")
        clients = self.clients
        rng = self.rng
        tape = rng if isinstance(rng, DrawTape) else None
        if tape is not None and tape.recording:
            check(sub is None, "a recorded round evaluates all its participants at once")
        if sub is not None:
            clients = self.labels[sub]
        if (
            mixed_hess
            and hess
            and not self.batched
            and isinstance(self.oracle, Exact)
            and self.problem.objective != "ridge"
        ):
            return self.problem.oracle(
                theta, clients, value=value, grad=grad, hess=True, hess_weights=self.weights
            )
        if tape is not None:
            rng = tape.rng
            if not tape.recording:  # on the runner's buffers, not recorded: draw as usual
                host = tape.host_clients
                clients = host if sub is None or host is None else host[sub]
                if host is None and sub is not None:
                    clients = np.arange(self.problem.N)[sub]
                tape = None
        if self.batched:
            rows = np.arange(self.m) if sub is None else np.asarray(sub)
            rng = RunDraws(rng, rows // self.S)
        if tape is not None:  # a round recorded as a CUDA graph draws through the tape
            rng = Deferred(tape, rng)
        o = self.oracle(self.problem, theta, clients, value=value, grad=grad, hess=hess, rng=rng)
        return o._replace(H=self.mix(o.H)) if mixed_hess and hess else o

    # ---- server-level arrays --------------------------------------------------------------
    def to_clients(self, x: Any) -> Any:
        """A server-level array as seen by the participants: unchanged for one run (it
        broadcasts against per-participant arrays), each run's row repeated S times batched."""
        if not self.batched:
            return x
        return self.problem.xp.repeat(x, self.S, axis=0)

    def mix(self, x: Any) -> Any:
        """sum_i w~_i x_i over the participants of each run (leading axis)."""
        return self._weighted(self.weights, x)

    def mix_apply(self, P: Any, x: Any) -> tuple[Any, Any]:
        """(mix(P), P_i x_i): the mixed matrix of a stack P (m, d, d) and every participant's
        product with its own row of x (m, d). On NumPy, one run: one compiled pass over the
        stack (:func:`fedtheory.kernels.mix_and_apply`) instead of two."""
        xp = self.problem.xp
        if (
            not self.batched
            and xp is np
            and P.ndim == 3
            and P.dtype == np.float64
            and P.flags.c_contiguous
            and x.shape == P.shape[:2]
        ):
            S, v = np.empty(P.shape[1:]), np.empty(x.shape)
            w = np.ascontiguousarray(self.weights, dtype=np.float64)
            kernels.mix_and_apply(P, np.ascontiguousarray(x, dtype=np.float64), w, S, v)
            return S, v
        return self.mix(P), matmul(P, x[..., None])[..., 0]

    def sum_w(self, x: Any) -> Any:
        """sum_i w_i x_i over the participants of each run, with the problem's weights w_i
        (not renormalised over S_t)."""
        w = self.problem.weights
        if self.clients is not None:
            w = w[self.problem.xp.asarray(self.clients)]
        return self._weighted(w, x)

    def _weighted(self, w: Any, x: Any) -> Any:
        if not self.batched:
            return weighted_sum(w, x)
        B, S = self.runs, self.S  # one (1, S) x (S, rest) product per run
        out = matmul(w.reshape(B, 1, S), x.reshape(B, S, -1))
        return out.reshape(B, *x.shape[1:])

    def per_run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(ctx_r, *args_r)``: a server-level computation on run r alone, for each run.

        One run: ``fn(self, *args)``. Batched: ``ctx_r`` is run r's own single-run context
        (its participants, weights and generator, exactly the context of the run alone) and
        ``args_r`` the args' rows r (an array with a leading run axis; anything else, None or a
        Python number, as given). The results (a value or a tuple of them) are combined
        over the runs: integers (counts) summed, other numbers stacked into a host array (B,),
        arrays stacked along a new leading run axis. Results that are counts (integers, or a
        :class:`RoundInfo`'s counts) become each run's count, a host array (B,).
        """
        if not self.batched:
            return fn(self, *args)
        out = [fn(self.one_run(r), *(_row(a, r) for a in args)) for r in range(self.runs)]
        if isinstance(out[0], tuple):
            return tuple(_combine([o[k] for o in out], self.problem.xp) for k in range(len(out[0])))
        return _combine(out, self.problem.xp)

    def count(self, n: Any) -> Any:
        """Per-participant counts (host ints, one per participant) as a :class:`RoundInfo`
        count: their total for one run; batched, each run's total, a host array (B,)."""
        n = np.asarray(n)
        if not self.batched:
            return int(n.sum())
        return n.reshape(self.runs, self.S).sum(axis=1)

    def one_run(self, r: int) -> RoundContext:
        """Run r of a batched context as the single-run context the run has alone."""
        S = self.S
        rng, labels = self.rng, self.labels
        if isinstance(rng, DrawTape):  # the runner's device participants (runner.graph)
            check(not rng.recording, "a per-run step (host reads) cannot be recorded")
            labels = rng.host_clients
            if labels is None:
                labels = np.tile(np.arange(self.problem.N), self.runs)
            rng = rng.rng
        clients = labels[r * S : (r + 1) * S]
        return round_context(self.problem, clients, rng=rng[r], oracle=self.oracle)

    # ---- per-client state ((N, ...) for one run, (B, N, ...) batched) ----------------------
    @property
    def slots(self) -> np.ndarray | None:
        """Rows of the participants in a per-client state seen as rows (``flat``): the client
        ids for one run, b*N + id for run b of a batch; None: every row, in order."""
        if not self.batched:
            return self.clients
        N, xp = self.problem.N, self.problem.xp
        if on_device(self.clients, xp):  # a recorded round's participants: no host test
            return self.clients + xp.repeat(xp.arange(self.runs) * N, self.S)
        rows = self.labels + np.repeat(np.arange(self.runs) * N, self.S)
        return None if rows.size == self.runs * N and (rows == np.arange(rows.size)).all() else rows

    def flat(self, x: Any) -> Any:
        """A per-client state as rows, (N, ...) or (B * N, ...): a view of ``x``, so writing
        into it writes into ``x``."""
        if not self.batched:
            return x
        check(x.flags.c_contiguous, "a batched per-client state must be C-contiguous")
        return x.reshape(-1, *x.shape[2:])

    def take(self, x: Any) -> Any:
        """The participants' rows of a per-client state, one row per participant."""
        rows = self.slots
        return self.flat(x)[slice(None) if rows is None else self.problem.xp.asarray(rows)]

    def put(self, x: Any, values: Any, *, in_place: bool = False) -> Any:
        """The per-client state ``x`` with the participants' rows set to ``values`` (one row
        per participant, or anything that broadcasts to them); a copy unless ``in_place``.
        Clients that sit out keep their rows."""
        out = x if in_place else x.copy()
        rows = self.slots
        self.flat(out)[slice(None) if rows is None else self.problem.xp.asarray(rows)] = values
        return out

    def mix_all(self, x: Any) -> Any:
        """sum_i w_i x_i of a per-client state over ALL N clients, with the problem's weights
        w_i (not renormalised), per run."""
        w = self.problem.weights
        if not self.batched:
            return weighted_sum(w, x)
        out = matmul(w[None, None, :], x.reshape(x.shape[0], x.shape[1], -1))
        return out.reshape(x.shape[0], *x.shape[2:])


def on_device(clients: Any, xp: Any) -> bool:
    """Whether ``clients`` are participants held on a GPU (a recorded round's buffer, see
    :mod:`fedtheory.runner.graph`) rather than host indices."""
    return xp is not np and type(clients).__module__.startswith("cupy")


def _row(a: Any, r: int) -> Any:
    """Row r of an array with a leading run axis; anything else as it is."""
    return a[r] if getattr(a, "ndim", 0) >= 1 else a


def _combine(values: list[Any], xp: Any) -> Any:
    """Per-run results as one value (see :meth:`RoundContext.per_run`)."""
    first = values[0]
    if first is None:
        return None
    if isinstance(first, RoundInfo):
        return RoundInfo(
            **{
                f.name: _combine([getattr(v, f.name) for v in values], xp)
                for f in dataclasses.fields(first)
            }
        )
    if isinstance(first, (int, np.integer)) and not isinstance(first, bool):
        return np.asarray([int(v) for v in values], dtype=np.int64)
    if getattr(first, "ndim", 0) >= 1:
        return xp.stack(values)
    return np.asarray([float(v) for v in values])


def per_run_info(infos: list[RoundInfo]) -> RoundInfo:
    """The RoundInfos of B runs, each alone, as one batched RoundInfo whose counts are each
    run's own (host arrays (B,)); preconditioners and local iterates are dropped."""
    if all(i is infos[0] for i in infos):  # one RoundInfo for every run (run_batch's setup)
        return _combine([dataclasses.replace(infos[0], P=None, theta_local=None)] * len(infos), np)
    return _combine([dataclasses.replace(i, P=None, theta_local=None) for i in infos], np)


def round_context(
    problem: Any,
    clients: Any = None,
    *,
    rng: Any = None,
    oracle: Any = None,
    runs: int = 1,
    batched: bool | None = None,
) -> RoundContext:
    """The one constructor of a round's context (no ``RoundContext(`` anywhere else).

    clients: the participants S_t as host indices (None: all N, weights w_i as they are); for
        a batch of ``runs = B`` runs (``batched``, default ``runs > 1``) the B runs'
        participants run-major (B groups of S; None: all N clients in every run). A CuPy
        array (the buffer a recorded round reads, :mod:`fedtheory.runner.graph`) is kept
        as it is and the weights computed from it on the device, with no host step.
    The weights are renormalised over each run's participants, w~_i = w_i / sum_{j in S_t} w_j
    (docs/algorithms.md, "Notation"). rng: the run's generator (default: a fresh one seeded 0);
    batched, the sequence of the B runs' generators (default: fresh ones seeded 0); or a
    :class:`~fedtheory.oracles.DrawTape` holding either (a recorded round's draws).
    oracle: an oracle object (default: the exact one).
    """
    batched = runs > 1 if batched is None else batched
    check(batched or runs == 1, "a context of several runs is a batched one")
    if clients is None and not batched:
        w = problem.weights
    else:
        xp = problem.xp
        if not on_device(clients, xp):  # else a recorded round's participants (runner.graph)
            clients = (
                np.tile(np.arange(problem.N), runs) if clients is None else np.asarray(clients)
            )
        check(
            clients.size % runs == 0, f"{clients.size} participants do not split into {runs} runs"
        )
        w = problem.weights[xp.asarray(clients)].reshape(runs, -1)
        w = (w / w.sum(axis=1, keepdims=True)).reshape(-1)
        if isinstance(clients, np.ndarray) and not batched and clients.size == problem.N:
            if (np.diff(clients) == 1).all():  # all clients in order: full participation
                clients, w = None, problem.weights
    if batched:
        rng = tuple(np.random.default_rng(0) for _ in range(runs)) if rng is None else rng
        gens = rng.rng if isinstance(rng, DrawTape) else rng
        check(len(gens) == runs, f"a batch of {runs} runs needs {runs} generators, got {len(gens)}")
        if not isinstance(rng, DrawTape):
            rng = tuple(rng)
    elif rng is None:
        rng = np.random.default_rng(0)
    return RoundContext(
        problem,
        clients,
        w,
        rng,
        make_oracle("exact") if oracle is None else oracle,
        runs=runs,
        batched=batched,
    )


class Method:
    """Base of every method: a frozen dataclass whose fields are its hyperparameters, and
    nothing else, registered by name (``@register``).

    Lifecycle (the names below are taken, so no hyperparameter may use them; FedNL's option
    ``init`` can keep the spec's name):

        start(problem, theta0) -> (state, RoundInfo)   the state at theta^0 and the cost of
                                                       setting it up (uploads, oracle calls)
        round(ctx, state)      -> (state, RoundInfo)   one round
        params()               -> the hyperparameters as a dict

    The state holds only mathematics (iterates, curvature, client memories); a setup cost is
    never kept in it: the runner books ``start``'s RoundInfo with round 1 (so the first row of
    a trace counts it, as the papers do). Class attributes: ``name`` (the CLI name),
    ``description``, ``source``, ``full_participation_only``, ``batchable``, ``renamed`` (old
    spellings of options, refused with their new name).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    source: ClassVar[str] = ""
    full_participation_only: ClassVar[bool] = False
    batchable: ClassVar[bool] = False  # written with the run-axis helpers of RoundContext
    renamed: ClassVar[dict[str, str]] = {}

    def start(self, problem: Any, theta0: Any) -> tuple[Any, RoundInfo]:
        return ServerState(theta=theta0), NO_SETUP

    def round(self, ctx: RoundContext, state: Any) -> tuple[Any, RoundInfo]:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: The lifecycle names of :class:`Method` that a hyperparameter may not take.
LIFECYCLE = (
    "start",
    "round",
    "params",
    "name",
    "description",
    "source",
    "full_participation_only",
    "batchable",
    "renamed",
)

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


def make_method(name: str, params: dict[str, Any] | None = None) -> Method:
    """The method registered as ``name`` with ``params`` (strings are parsed to the field types,
    :func:`fedtheory.validate.coerce_params`)."""
    check(name in METHODS, f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    cls = METHODS[name]
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    return cls(**coerce_params(params, defaults, owner=f"method {name}", renamed=cls.renamed))
