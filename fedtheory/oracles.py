"""Oracle models: how a method sees f_i, g_i and H_i (docs/algorithms.md "Stochastic oracles").

An oracle is a callable ``oracle(problem, theta, clients, *, value, grad, hess, rng)`` returning
an :class:`~fedtheory.objectives.OracleOut`. Its randomness, if any, is drawn from the run's one
seeded NumPy generator on the host and moved to the problem's backend with
``problem.xp.asarray``, so NumPy and CuPy runs see identical samples.

- ``exact``: f_i, g_i, H_i themselves.
- ``minibatch`` (``b``): every call (one call per local step) draws, for each selected client,
  b row indices uniformly WITH replacement among that client's n_i real rows (never its
  padding) and returns the objective of those rows,
      f_i^B = (1/b) sum_{j in B} loss(a_j, y_j, theta) + (lam/2) ||theta||^2,
  with g_i^B and H_i^B its exact gradient and Hessian: the same rows for f, g and H, the
  regulariser exact. Each is an unbiased estimate of f_i, g_i, H_i.
- ``gaussian`` (``sigma``): exact f_i and H_i; g_i + xi_i with xi_i ~ N(0, sigma^2 I / d)
  independent across clients and calls, so E||xi_i||^2 = sigma^2.

Every call draws afresh; the methods call the oracle once per local step, so a minibatch is
drawn per local step (a line search's extra value calls draw their own rows). A call that asks
for nothing random (``grad=False`` for ``gaussian``) draws nothing.

Batched runs (:func:`fedtheory.runner.run_batch`): one call holds the rows of several runs and
``rng`` is a :class:`RunDraws`, each run's generator and the run of every row. Each run's rows
then draw from that run's own generator, exactly the draws (same generator, same shapes, same
order) that the run makes alone, so a batch of seeds equals the seeds run one by one; a run with
no row in a call draws nothing (as it makes no such call alone). :func:`draw` is the one place
that splits a call's draws by run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ._types import Array
from .draws import integers_rows
from .errors import check
from .objectives import ORACLES, OracleOut
from .validate import check_count, check_nonneg, check_options


class Oracle(Protocol):
    """``oracle(problem, theta, clients, *, value, grad, hess, rng) -> OracleOut``: f_i, g_i,
    H_i (each only when asked) of the selected clients at theta, as the method sees them (exact,
    minibatch, Gaussian noise). ``rng`` is the run's seeded host generator (or a batched run's
    :class:`~fedtheory.oracles.RunDraws`); an oracle with no randomness ignores it."""

    name: str

    def __call__(
        self,
        problem: Any,
        theta: Array,
        clients: Array | None,
        *,
        value: bool,
        grad: bool,
        hess: bool,
        rng: Any,
    ) -> OracleOut: ...


@dataclass(frozen=True)
class RunDraws:
    """The generators of a batched call: ``generators[r]`` is run r's, ``runs[j]`` the run of
    the call's row j (host ints)."""

    generators: Sequence[np.random.Generator]
    runs: np.ndarray


class DrawTape:
    """The host draws of a round recorded as a CUDA graph (:mod:`fedtheory.runner.graph`).

    A recorded round cannot draw on the host: its kernels are recorded once and replayed. So
    while it is recorded, each stochastic oracle call asks the tape (:func:`host_draws`) for a
    device buffer of its draws' shape and records kernels that read it; before every replay
    :meth:`draw` makes the round's draws on the host, call by call in the recorded order from
    the run's generators (the same draws, in the same order, as the unrecorded round) and
    copies them into those buffers. Outside a recording (``recording`` False) a call draws at
    once, as without a tape.

    ``rng``: the run's generator, or a batch's sequence of generators; ``clients``: the device
    buffer of the round's participants (None: all N clients, every round).
    """

    def __init__(self, problem: Any, rng: Any, clients: Any) -> None:
        self.problem, self.rng, self.clients = problem, rng, clients
        self.entries: list[tuple[Callable[[np.ndarray], np.ndarray], Any, bool]] = []
        self.host_clients: np.ndarray | None = None
        self.recording = False
        #: the batch's generators on the device (a :class:`fedtheory.device_draws.
        #: DeviceGenerators`) when a recorded round draws there instead (then no entry is kept)
        self.device: Any = None

    def later(
        self,
        clients: Any,
        fn: Callable[[np.ndarray], np.ndarray],
        shape: tuple,
        dtype: Any,
        device: Callable[[Any, Any], Any] | None = None,
    ) -> Any:
        """The device array of ``fn(host participants)``: drawn now (not recording) or before
        each replay into a buffer of its own (recording); or, recording with the generators
        on the device (:attr:`device`), ``device(generators, participants)`` drawn there,
        inside the recorded round."""
        check(
            clients is None or clients is self.clients,
            "a recorded round draws only for the round's participants",
        )
        if not self.recording:
            return self.problem.xp.asarray(fn(self._selected(clients)))
        if self.device is not None:
            check(device is not None, "this oracle's draws cannot be made on the device")
            check(
                clients is not None and shape[0] == clients.size,
                "draws on the device are made for the round's participants, one row each",
            )
            return device(self.device, self.clients)
        import cupy  # a recording is on CuPy

        # the default pool, not the recording's: there the buffer could share memory with a
        # temporary freed earlier in the round, which every replay would write over it
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        out = cupy.ndarray(shape, dtype, cupy.get_default_memory_pool().malloc(nbytes))
        self.entries.append((fn, out, clients is None))
        return out

    def _selected(self, clients: Any) -> np.ndarray:
        if clients is None or self.host_clients is None:
            return np.arange(self.problem.N)
        return self.host_clients

    def draw(self, host_clients: np.ndarray | None) -> None:
        """Round's draws (participants ``host_clients``, None: all) into the recorded buffers."""
        self.host_clients = host_clients
        for fn, out, every in self.entries:
            host = fn(np.arange(self.problem.N) if every else self._selected(self.clients))
            out.set(np.ascontiguousarray(host, dtype=out.dtype))


@dataclass(frozen=True)
class Deferred:
    """What an oracle receives as ``rng`` in a context drawing through a :class:`DrawTape`:
    the tape and the generator object it would have received otherwise (a Generator, or a
    batched call's :class:`RunDraws`)."""

    tape: DrawTape
    rng: Any


def host_draws(
    problem: Any,
    clients: Array | None,
    rng: Any,
    fn: Callable[[np.ndarray, Any], np.ndarray],
    shape: tuple,
    dtype: Any,
    device: Callable[[Any, Any], Any] | None = None,
) -> Any:
    """``fn(selected host client indices, rng)`` on the problem's backend: the one way an oracle
    draws, so that a recorded round (``rng`` a :class:`Deferred`) draws before each replay.
    ``device(generators, participants)``: the same draws made on the device by a batch's
    :class:`~fedtheory.device_draws.DeviceGenerators` (an oracle that gives it sets
    ``device_draws = True``)."""
    if isinstance(rng, Deferred):
        inner = rng.rng
        return rng.tape.later(clients, lambda sel: fn(sel, inner), shape, dtype, device)
    return problem.xp.asarray(fn(_selected(problem, clients), rng))


def draw(
    rng: np.random.Generator | RunDraws,
    sample: Callable[[np.random.Generator, Array], Array],
    n: int,
) -> np.ndarray:
    """The draws of a call with ``n`` rows: ``sample(generator, rows)`` draws for the rows
    ``rows`` (an index into the call's rows) from ``generator``, one leading entry per row.

    One run (``rng`` a Generator): ``sample(rng, slice(None))``. Batched (``rng`` a
    :class:`RunDraws`): each run's rows, in their order, from that run's generator.
    """
    if not isinstance(rng, RunDraws):
        return sample(rng, slice(None))
    out = None
    # each run's rows in increasing order (a stable sort of the rows by run, split at the
    # runs' counts): one pass instead of one comparison of every row per run
    runs = np.asarray(rng.runs, dtype=np.int64)
    order = np.argsort(runs, kind="stable")
    counts = np.bincount(runs, minlength=len(rng.generators))
    ends = np.cumsum(counts)
    for r, gen in enumerate(rng.generators):
        if counts[r] == 0:
            continue
        rows = order[ends[r] - counts[r] : ends[r]]
        part = sample(gen, rows)
        if out is None:
            out = np.empty((n, *part.shape[1:]), dtype=part.dtype)
        out[rows] = part
    return sample(rng.generators[0], np.arange(0)) if out is None else out


@dataclass(frozen=True)
class Exact:
    """The exact oracle (the default)."""

    name = "exact"
    #: Whether the oracle draws (from the run's generator). An oracle that marks itself
    #: ``recordable`` draws only through :func:`host_draws`, so a round using it can be
    #: recorded as a CUDA graph (:mod:`fedtheory.runner.graph`); any other is never recorded.
    draws = False
    recordable = True
    #: Whether a batch on the GPU may make the oracle's draws on the device (through
    #: :func:`host_draws`'s ``device``, the same numbers as the host's; none here).
    device_draws = True

    def __call__(
        self,
        problem: Any,
        theta: Array,
        clients: Array | None,
        *,
        value: bool,
        grad: bool,
        hess: bool,
        rng: np.random.Generator | RunDraws,
    ) -> OracleOut:
        return problem.oracle(theta, clients, value=value, grad=grad, hess=hess)


def _selected(problem: Any, clients: Array | None) -> np.ndarray:
    """Host indices of the selected clients (all of them when ``clients`` is None)."""
    return np.arange(problem.N) if clients is None else np.asarray(clients)


@dataclass(frozen=True)
class Minibatch:
    """b rows per client and call, drawn uniformly with replacement among the client's rows."""

    b: int = 1
    draws = True
    recordable = True  # draws only through host_draws
    device_draws = True  # and can make them on the device (device_draws.integers_rows)

    def __post_init__(self) -> None:
        check_count(self.b, "minibatch size b")

    @property
    def name(self) -> str:
        return f"minibatch(b={self.b})"

    def __call__(
        self,
        problem: Any,
        theta: Array,
        clients: Array | None,
        *,
        value: bool,
        grad: bool,
        hess: bool,
        rng: np.random.Generator | RunDraws,
    ) -> OracleOut:
        xp = problem.xp

        def rows_of(sel: np.ndarray, rng: Any) -> np.ndarray:
            if isinstance(rng, RunDraws):  # every run's rows in one compiled call, same bits
                return integers_rows(rng.generators, rng.runs, problem.sizes[sel], self.b)

            def sample(gen: np.random.Generator, at: Array) -> np.ndarray:
                n = problem.sizes[sel[at]]
                return gen.integers(0, n[:, None], size=(len(n), self.b))

            return draw(rng, sample, len(sel))

        m = problem.N if clients is None else len(clients)
        ri = host_draws(
            problem,
            clients,
            rng,
            rows_of,
            (m, self.b),
            np.int64,
            device=lambda gens, c: gens.integers_rows(c, self.b),
        )
        ci = xp.arange(problem.N)[:, None] if clients is None else xp.asarray(clients)[:, None]
        if xp is not np and not hess and problem.objective == "logistic":
            from . import cuda_kernels  # f and g in one kernel, the rows read in place

            if cuda_kernels.minibatch_fits(problem.A, self.b) and theta.shape in (
                (problem.d,),
                (m, problem.d),
            ):
                f, g = cuda_kernels.minibatch_logistic(
                    problem.A, problem.y, ci, ri, theta, problem.lam, value, grad
                )
                return OracleOut(f, g, None)
        A, y = problem.A[ci, ri], problem.y[ci, ri]  # (m, b, d), (m, b)
        sw = xp.full(y.shape, 1.0 / self.b)
        return ORACLES[problem.objective](
            A, y, sw, problem.lam, theta, value=value, grad=grad, hess=hess
        )


@dataclass(frozen=True)
class Gaussian:
    """Exact oracle plus N(0, sigma^2 I / d) noise on every client's gradient."""

    sigma: float = 0.0
    draws = True
    recordable = True  # draws only through host_draws
    device_draws = False  # NumPy's normals (ziggurat) are drawn on the host

    def __post_init__(self) -> None:
        check_nonneg(self.sigma, "gaussian oracle sigma")

    @property
    def name(self) -> str:
        return f"gaussian(sigma={self.sigma:g})"

    def __call__(
        self,
        problem: Any,
        theta: Array,
        clients: Array | None,
        *,
        value: bool,
        grad: bool,
        hess: bool,
        rng: np.random.Generator | RunDraws,
    ) -> OracleOut:
        out = problem.oracle(theta, clients, value=value, grad=grad, hess=hess)
        if not grad:
            return out
        shape = out.g.shape

        def sample(gen: np.random.Generator, at: Array) -> np.ndarray:
            return gen.standard_normal((np.arange(shape[0])[at].size, *shape[1:]))

        def noise_of(sel: np.ndarray, rng: Any) -> np.ndarray:
            return draw(rng, sample, shape[0]) * (self.sigma / math.sqrt(problem.d))

        noise = host_draws(problem, clients, rng, noise_of, shape, np.float64)
        return out._replace(g=out.g + noise)


ORACLE_MODELS: dict[str, type] = {"exact": Exact, "minibatch": Minibatch, "gaussian": Gaussian}


def make_oracle(spec: str | Oracle = "exact", **options: Any) -> Oracle:
    """An oracle from its name and options (``make_oracle("minibatch", b=8)``,
    ``make_oracle("gaussian", sigma=0.1)``), or an oracle object passed through unchanged."""
    if callable(spec):
        check(
            not options,
            f"options {sorted(options)} given with an oracle object {spec!r}; "
            f"pass options only with an oracle name",
        )
        return spec
    check(
        spec in ORACLE_MODELS, f"unknown oracle {spec!r}; known oracles: {', '.join(ORACLE_MODELS)}"
    )
    cls = ORACLE_MODELS[spec]
    check_options(options, tuple(cls.__dataclass_fields__), owner=f"oracle {spec!r}")
    return cls(**options)
