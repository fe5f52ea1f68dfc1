"""What every method is: a frozen set of hyperparameters with a pure round map.

A method (after optax's ``init``/``update`` pair) is a frozen dataclass of its hyperparameters
with two functions:

    init(problem, theta0) -> state          (a NamedTuple with at least ``theta``)
    round(ctx, state)     -> (state, RoundInfo)

``ctx`` (:class:`RoundContext`) carries the round's participants, their renormalised weights
w~_i, the run's seeded generator and the oracle; a method reads data only through ``ctx.eval``.
Methods never compute metrics: they report in :class:`RoundInfo` what the runner needs for them
(the last local preconditioners, the local iterates, floats sent, oracle calls).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from ..errors import FedTheoryError, check
from ..objectives import OracleOut
from ..oracles import make_oracle


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
    """

    uplink: int
    downlink: int
    grad_evals: int
    hess_evals: int
    P: Any = None
    theta_local: Any = None
    bits: float | None = None

    @property
    def uplink_bits(self) -> float:
        return 32.0 * self.uplink if self.bits is None else float(self.bits)


@dataclass(frozen=True)
class RoundContext:
    """The round's participants S_t (host indices, None = all clients), their weights w~_i
    (renormalised over S_t, on the problem's backend), the run's generator and the oracle.

    Batched runs (``runs = B > 1``, see :func:`fedtheory.runner.run_batch`): the context holds B
    independent runs side by side, their participants laid out run-major (``clients`` has
    B * S entries, run b's at positions b*S .. b*S + S - 1), server-level arrays carry a leading
    run axis (theta is (B, d)), ``to_clients`` lifts them to one row per participant and ``mix``
    sums each run's participants separately. ``RoundInfo`` counts are then totals over all runs.
    """

    problem: Any
    clients: np.ndarray | None
    weights: Any
    rng: Any
    oracle: Any
    runs: int = 1

    @property
    def m(self) -> int:
        """Participants in this context (all runs together)."""
        return self.problem.N if self.clients is None else len(self.clients)

    @property
    def labels(self) -> np.ndarray:
        """Client ids of the participants, for error messages."""
        return np.arange(self.problem.N) if self.clients is None else self.clients

    def eval(self, theta: Any, *, value: bool = False, grad: bool = True, hess: bool = False,
             sub: np.ndarray | None = None) -> OracleOut:
        """Oracle of the participants (or of the participants at positions ``sub``) at
        ``theta``: one server-level point (see ``to_clients``) or one row per participant."""
        clients = self.clients
        if sub is not None:
            clients = self.labels[sub]
        return self.oracle(self.problem, theta, clients, value=value, grad=grad, hess=hess,
                           rng=self.rng)

    def to_clients(self, x: Any) -> Any:
        """A server-level array as seen by the participants: unchanged for one run (it
        broadcasts against per-participant arrays), each run's row repeated S times for B runs."""
        if self.runs == 1:
            return x
        return self.problem.xp.repeat(x, self.m // self.runs, axis=0)

    def mix(self, x: Any) -> Any:
        """sum_i w~_i x_i over the participants of each run (leading axis)."""
        xp = self.problem.xp
        if self.runs == 1:
            return xp.tensordot(self.weights, x, axes=1)
        B = self.runs
        S = self.m // B
        w = self.weights.reshape(B, S, *([1] * (x.ndim - 1)))
        return (w * x.reshape(B, S, *x.shape[1:])).sum(axis=1)


def round_context(problem: Any, clients: Any = None, *, rng: Any = None, oracle: Any = None,
                  runs: int = 1) -> RoundContext:
    """The one constructor of a round's context (no ``RoundContext(`` anywhere else).

    clients: the participants S_t as host indices (None: all N, weights w_i as they are); for
        ``runs = B > 1`` the B runs' participants run-major (B groups of S).
    The weights are renormalised over each run's participants, w~_i = w_i / sum_{j in S_t} w_j
    (docs/algorithms.md, "Notation"). rng: the run's generator (default: a fresh one seeded 0);
    oracle: an oracle object (default: the exact one).
    """
    if clients is None and runs == 1:
        w = problem.weights
    else:
        xp = problem.xp
        clients = np.arange(problem.N) if clients is None else np.asarray(clients)
        check(clients.size % runs == 0, f"{clients.size} participants do not split into "
                                        f"{runs} runs")
        w = problem.weights[xp.asarray(clients)].reshape(runs, -1)
        w = (w / w.sum(axis=1, keepdims=True)).reshape(-1)
        if runs == 1 and clients.size == problem.N and (np.diff(clients) == 1).all():
            clients, w = None, problem.weights   # all clients in order: full participation
    return RoundContext(problem, clients, w, np.random.default_rng(0) if rng is None else rng,
                        make_oracle("exact") if oracle is None else oracle, runs=runs)


class Method:
    """Base of every method; subclasses are frozen dataclasses registered by name.

    A hyperparameter may not be called ``init``, ``round`` or ``params``: the dataclass field
    would shadow the method of that name.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    source: ClassVar[str] = ""
    full_participation_only: ClassVar[bool] = False
    batchable: ClassVar[bool] = False   # written with ctx.to_clients/ctx.mix for batched runs

    def init(self, problem: Any, theta0: Any) -> Any:
        return ServerState(theta=theta0)

    def round(self, ctx: RoundContext, state: Any) -> tuple[Any, RoundInfo]:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


# ---- hyperparameter validation, shared by every method -----------------------------------
#: local steps per round: K Hessian evaluations and solves per client, so K = 1e9 would run for
#: days without a word; larger K is refused (a local solve to convergence needs ~10-100)
MAX_K = 100_000


def check_K(K: Any) -> None:
    check(isinstance(K, (int, np.integer)) and not isinstance(K, bool) and 1 <= K <= MAX_K,
          f"K must be an integer in 1..{MAX_K:,} (each local step is a Hessian solve per "
          f"client), got {K!r}")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def check_eta(eta: Any, name: str = "eta") -> None:
    check(_is_number(eta) and math.isfinite(eta) and eta > 0,
          f"{name} must be a finite number > 0, got {eta!r}")


def check_nonneg(x: Any, name: str) -> None:
    check(_is_number(x) and math.isfinite(x) and x >= 0,
          f"{name} must be a finite number >= 0, got {x!r}")


def check_choice(x: Any, name: str, choices: tuple) -> None:
    check(x in choices, f"{name} must be one of {choices}, got {x!r}")


def _coerce(name: str, text: str, default: Any) -> Any:
    """Parse a CLI value ``text`` to the type of the field's default."""
    try:
        if isinstance(default, bool):
            low = text.lower()
            if low not in ("true", "false", "1", "0"):
                raise ValueError
            return low in ("true", "1")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise FedTheoryError(f"parameter {name} must be a {type(default).__name__}, "
                             f"got {text!r}") from None
    return text


def make_method(name: str, params: dict[str, Any] | None = None) -> Method:
    """The method registered as ``name`` with ``params`` (strings are parsed to the field types)."""
    check(name in METHODS, f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    cls = METHODS[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kw = {}
    for key, value in (params or {}).items():
        check(key in fields, f"unknown parameter {key!r} for method {name}; "
                             f"accepted: {', '.join(fields) or 'none'}")
        if isinstance(value, str):
            value = _coerce(key, value, fields[key].default)
        kw[key] = value
    return cls(**kw)
