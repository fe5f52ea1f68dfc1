"""Rounds replayed as a CUDA graph (fedtheory.runner.graph): a replayed run is the unrecorded
run bit for bit, on every method that can be recorded; a failed factorisation inside a
replayed round still raises the error naming the client; runs that cannot be replayed say why,
and ``graph=True`` refuses them. The GPU tests skip without CuPy and a CUDA device."""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pytest

from fedtheory import make_method, run
from fedtheory.errors import FactorizationError, FedTheoryError
from fedtheory.linalg import spd_solve
from fedtheory.methods.base import METHODS, NO_SETUP, Method, ServerState
from fedtheory.oracles import make_oracle
from fedtheory.runner import graph as replay_graph
from fedtheory.runner.loop import iterate
from fedtheory.runner.participation import Participation
from fedtheory.testing import make_problem
from fedtheory.trace import TIMING


def _needs_gpu():
    from conftest import _gpu_available

    if not _gpu_available():
        pytest.skip("no CUDA GPU with CuPy on this machine")


# ------------------------------------------------------------------------------ any machine
def test_graph_true_is_refused_on_numpy_with_the_reason():
    problem = make_problem(0, N=4, d=3)
    with pytest.raises(FedTheoryError, match="graph=True but .* the problem is on NumPy"):
        run(problem, make_method("newton"), 4, graph=True)
    assert run(problem, make_method("newton"), 4).meta["graph"] is None  # not applicable


@pytest.mark.parametrize("bad", ["yes", 1, 0.0])
def test_graph_takes_none_true_or_false(bad):
    with pytest.raises(FedTheoryError, match="graph must be None, True or False"):
        run(make_problem(0, N=4, d=3), make_method("newton"), 3, graph=bad)


def test_the_reasons_a_run_cannot_be_replayed():
    gpu = types.SimpleNamespace(xp=object())  # stands for a problem on CuPy
    method = make_method("fedpm")
    exact, full = make_oracle("exact"), Participation(8, None, 10)
    assert replay_graph.reason_not(gpu, method, full, exact, 10) == ""
    assert replay_graph.reason_not(gpu, method, full, exact, None) == ""
    # seeded partial participation and stochastic oracles are recorded (their draws are
    # copied into the recorded buffers before each replay); a schedule may change S
    assert replay_graph.reason_not(gpu, method, Participation(8, 3, 10), exact, 10) == ""
    minibatch = make_oracle("minibatch", b=2)
    assert replay_graph.reason_not(gpu, method, full, minibatch, 10) == ""
    schedule = Participation(8, [[0, 1], [2, 3, 4]] * 5, 10)
    assert "schedule" in replay_graph.reason_not(gpu, method, schedule, exact, 10)

    class Growing(Participation):  # a subclass may change S from round to round
        pass

    assert "Growing" in replay_graph.reason_not(gpu, method, Growing(8, 3, 10), exact, 10)
    assert not replay_graph.needs_inputs(full, exact)
    assert replay_graph.needs_inputs(full, minibatch)
    assert replay_graph.needs_inputs(Participation(8, 3, 10), exact)
    assert "2 rounds" in replay_graph.reason_not(gpu, method, full, exact, 2)

    def own(problem, theta, clients, *, value, grad, hess, rng):  # may draw from rng directly
        return problem.oracle(theta, clients, value=value, grad=grad, hess=hess)

    assert "recordable" in replay_graph.reason_not(gpu, method, full, own, 10)
    assert replay_graph.needs_inputs(full, own)  # not known to draw nothing
    described = replay_graph.describe(gpu, method, full, exact, 10, False)
    assert described == "off (graph=False)"


# ------------------------------------------------------------------------------------- GPU
#: Every method, full participation, default hyperparameters but a few that change the code
#: path (FedNL's options and norms, local steps).
CASES = [(name, {}) for name in sorted(METHODS)] + [
    ("fednl", {"option": 2, "compressor": "topK", "Kc": 12, "l_norm": "frobenius"}),
    ("fednl", {"option": 2, "compressor": "topK", "Kc": 12, "l_norm": "spectral"}),
    ("fednl", {"option": 1, "compressor": "rankR", "R": 2}),
    ("fedpm", {"K": 2, "mixing_preconditioner": "end"}),
    ("fedpm", {"server_memory": True}),
]
#: Methods whose rounds must be recorded (the GPU benchmark's FedNL and FedPM among them).
MUST_REPLAY = {"fednl", "fedpm", "newton", "gd"}


def _rows_equal(a, b):
    assert len(a) == len(b) and a.status == b.status
    for ra, rb in zip(a.rows, b.rows, strict=True):
        for k, v in ra.items():
            if k in TIMING:
                continue
            same = v == rb[k] or (isinstance(v, float) and np.isnan(v) and np.isnan(rb[k]))
            assert same, (k, ra["round"], v, rb[k])


@pytest.mark.gpu
@pytest.mark.parametrize("log_every", [1, 3])
def test_a_replayed_run_is_the_unrecorded_run_bit_for_bit(log_every):
    _needs_gpu()
    problem = make_problem(7, N=6, d=5, heterogeneity=1.0).to("cupy")
    replayed, reasons = set(), {}
    for name, params in CASES:
        method = make_method(name, params)
        plain = run(problem, method, 9, graph=False, log_every=log_every)
        assert plain.meta["graph"] == "off (graph=False)"
        tried = run(problem, method, 9, log_every=log_every)
        _rows_equal(plain, tried)
        if tried.meta["graph"] == "replayed":
            replayed.add(name)
            _rows_equal(plain, run(problem, method, 9, graph=True, log_every=log_every))
        else:
            reasons[(name, str(params))] = tried.meta["graph"]
            assert "could not be recorded" in tried.meta["graph"] or "state" in tried.meta["graph"]
    assert MUST_REPLAY <= replayed, reasons
    print("replayed:", sorted(replayed), "not:", reasons)


class _DrainState(NamedTuple):
    theta: Any
    P: Any


@dataclass(frozen=True)
class _Drain(Method):
    """Toy method: each round solves with every client's P_i (the state's stack) and shrinks
    P_i by c_i I: client 2's P_i is (5 - t) I at round t, singular at round 5."""

    name = "draining"

    def start(self, problem, theta0):
        P = problem.xp.broadcast_to(
            4.0 * problem.xp.eye(problem.d), (problem.N, problem.d, problem.d)
        )
        return _DrainState(theta0, P.copy()), NO_SETUP

    def round(self, ctx, state):
        xp, d = ctx.problem.xp, ctx.problem.d
        x = spd_solve(
            state.P, xp.ones((ctx.m, d)), labels=ctx.labels, what="drained matrix", hint="toy"
        )
        c = xp.full(ctx.m, 0.5)
        c[2] = 1.0  # client 2: P = (5 - t) I at round t
        P = state.P - c[:, None, None] * xp.eye(d)
        return _DrainState(state.theta + x.mean(axis=0), P), NO_SETUP


@pytest.mark.gpu
def test_a_failed_factorisation_in_a_replayed_round_names_the_client():
    _needs_gpu()
    problem = make_problem(3, N=4, d=3).to("cupy")
    for graph in (False, True):
        with pytest.raises(FactorizationError, match="drained matrix of client 2"):
            for _ in iterate(problem, _Drain(), rounds=8, graph=graph, sync_every=8):
                pass
    steps = iterate(problem, _Drain(), rounds=3, graph=True)  # rounds 1-3 are fine
    assert [s.graph for s in steps] == ["", "replayed", "replayed"]


@pytest.mark.gpu
def test_a_round_that_reads_the_device_cannot_be_recorded():
    _needs_gpu()

    @dataclass(frozen=True)
    class Reads(Method):
        name = "reads"

        def round(self, ctx, state):
            g = ctx.eval(ctx.to_clients(state.theta)).g
            step = 0.1 if float(abs(g).max()) < 1e9 else 0.0  # a host round trip
            return ServerState(state.theta - step * ctx.mix(g)), NO_SETUP

    problem = make_problem(3, N=4, d=3).to("cupy")
    tr = run(problem, Reads(), 5)
    assert tr.meta["graph"].startswith("the reads round could not be recorded")
    _rows_equal(run(problem, Reads(), 5, graph=False), tr)
    with pytest.raises(FedTheoryError, match="graph=True but .* could not be recorded"):
        run(problem, Reads(), 5, graph=True)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "name,params", [("newton", {"eta": 0.5}), ("fedpm", {"server_memory": True})]
)
def test_round_one_state_is_not_among_the_replayed_buffers(name, params):
    """Round 1's arrays (theta, and FedPM-PP's P_i and v_i) keep their values while later
    rounds are replayed; the last step's arrays stay readable after the iterator is done."""
    _needs_gpu()
    problem = make_problem(3, N=4, d=3).to("cupy")
    method = make_method(name, params)
    plain = [s.state.theta.copy() for s in iterate(problem, method, rounds=5, graph=False)]
    steps = iterate(problem, method, rounds=5, graph=True)
    first = next(steps)
    kept = [v.copy() for v in first.state if hasattr(v, "shape")]
    rest = list(steps)  # the iterator is exhausted: only the steps keep the recording
    assert [s.graph for s in rest] == ["replayed"] * 4
    now = [v for v in first.state if hasattr(v, "shape")]
    assert all(bool((a == b).all()) for a, b in zip(kept, now, strict=True))
    last = rest[-1]
    assert bool((last.before.theta == plain[3]).all()) and bool(
        (last.state.theta == plain[4]).all()
    )


def test_the_cli_graph_option_reaches_the_run(tmp_path, capsys):
    """--graph on is handed to run: on NumPy it is refused with run's reason (exit 2, nothing
    written); off and auto run."""
    from fedtheory.cli import main

    out = tmp_path / "r.csv"
    argv = ["run", "het_quadratic", "--method", "newton", "--rounds", "3", "--out", str(out)]
    assert main([*argv, "--graph", "on"]) == 2
    err = capsys.readouterr().err
    assert "graph=True but this run cannot be replayed: the problem is on NumPy" in err
    assert not out.exists()
    assert main([*argv, "--graph", "off"]) == 0 and out.exists()
    assert main(["run", "het_quadratic", "--method", "newton", "--rounds", "3"]) == 0
    with pytest.raises(SystemExit):
        main([*argv, "--graph", "maybe"])


# ------------------------------------- partial participation and stochastic oracles (GPU)
#: (participation, oracle) pairs whose rounds change from round to round: the participants
#: and the draws are made on the host and copied into the recorded buffers.
VARYING = [
    (3, make_oracle("exact")),
    (None, make_oracle("minibatch", b=2)),
    (3, make_oracle("minibatch", b=2)),
    (3, make_oracle("gaussian", sigma=0.1)),
]
#: A batch's meta["graph"] when its replays draw on the device (fedtheory.device_draws).
DEVICE_DRAWS = "replayed, draws on the device"
#: Methods whose varying rounds must be recorded, one run and batched.
MUST_REPLAY_VARYING = {"fedpac", "scaffold", "fedpm", "gd", "fedavg"}


@pytest.mark.gpu
@pytest.mark.parametrize("S,oracle", VARYING, ids=lambda v: str(getattr(v, "name", v)))
def test_a_replayed_run_with_draws_is_the_unrecorded_run_bit_for_bit(S, oracle):
    """Partial participation and stochastic oracles: the replayed run (its participants and
    draws copied into the recorded buffers) equals the unrecorded run bit for bit, for every
    method that accepts the participation."""
    _needs_gpu()
    problem = make_problem(7, N=6, d=5, heterogeneity=1.0).to("cupy")
    replayed, reasons = set(), {}
    for name, params in CASES:
        method = make_method(name, params)
        if S is not None and method.full_participation_only:
            continue
        kw = dict(participation=S, oracle=oracle, seed=4, log_every=3)
        plain = run(problem, method, 8, graph=False, **kw)
        tried = run(problem, method, 8, **kw)
        _rows_equal(plain, tried)
        if tried.meta["graph"] == "replayed":
            replayed.add(name)
        else:
            reasons[(name, str(params))] = tried.meta["graph"]
    assert MUST_REPLAY_VARYING <= replayed, reasons


@pytest.mark.gpu
@pytest.mark.parametrize("S,oracle", VARYING, ids=lambda v: str(getattr(v, "name", v)))
def test_a_replayed_batch_is_the_unrecorded_batch_bit_for_bit(S, oracle):
    """run_batch records a round of the whole batch and replays it: every run's rows equal
    the unrecorded batch's bit for bit, also after runs leave the batch (a target that some
    runs reach first: the rest are recorded again)."""
    from fedtheory.runner import run_batch

    _needs_gpu()
    problem = make_problem(7, N=6, d=5, heterogeneity=1.0).to("cupy")
    replayed, reasons = set(), {}
    for name, params in CASES:
        method = make_method(name, params)
        if not method.batchable or (S is not None and method.full_participation_only):
            continue
        kw = dict(seeds=[3, 1, 4, 1, 5], participation=S, oracle=oracle, log_every=2)
        plain = run_batch(problem, method, 9, graph=False, **kw)
        tried = run_batch(problem, method, 9, **kw)
        for a, b in zip(plain, tried, strict=True):
            _rows_equal(a, b)
        if tried[0].meta["graph"].startswith("replayed"):
            replayed.add(name)
            # a seeded S and an oracle that can: the replays draw on the device
            host = oracle.name.startswith("gaussian")
            assert tried[0].meta["graph"] == ("replayed" if host else DEVICE_DRAWS), name
        else:
            reasons[(name, str(params))] = tried[0].meta["graph"]
    assert MUST_REPLAY_VARYING <= replayed, reasons
    # runs leaving the batch at different rounds: a target that some runs reach (each run's
    # best logged error, the median over the runs)
    method = make_method("fedpac")
    plain = run_batch(problem, method, 9, graph=False, **kw)
    kw["target"] = float(np.median([min(t["rel_dist"]) for t in plain]))
    plain = run_batch(problem, method, 9, graph=False, **kw)
    tried = run_batch(problem, method, 9, graph=True, **kw)
    statuses = {t.status for t in plain}
    assert "reached_target" in statuses and len(statuses) > 1, statuses
    for a, b in zip(plain, tried, strict=True):
        _rows_equal(a, b)


class _Own(NamedTuple):
    theta: Any
    P: Any  # per-client matrices (N, d, d), or (B, N, d, d) batched


@dataclass(frozen=True)
class _DrainSome(Method):
    """Toy method with per-client state: each round solves with the participants' P_i and
    shrinks them, client 2's by I and the others' by I / 4: client 2's P_i (4 I at first) is
    singular at its fourth participation."""

    name = "draining-some"
    batchable = True

    def start(self, problem, theta0):
        xp, d = problem.xp, problem.d
        P = xp.ascontiguousarray(xp.broadcast_to(4.0 * xp.eye(d), (problem.N, d, d)))
        return _Own(theta0, P), NO_SETUP

    def round(self, ctx, state):
        xp, d = ctx.problem.xp, ctx.problem.d
        P_i = ctx.take(state.P)
        x = spd_solve(P_i, xp.ones((ctx.m, d)), labels=ctx.labels, what="drained matrix", hint="")
        c = xp.where(xp.asarray(ctx.labels) == 2, 1.0, 0.25)
        P = ctx.put(state.P, P_i - c[:, None, None] * xp.eye(d))
        return _Own(state.theta + ctx.mix(x), P), NO_SETUP


@pytest.mark.gpu
def test_a_failed_factorisation_in_a_replayed_round_with_draws_names_the_client():
    """Partial participation: the failing client is named from the round it failed in (the
    participants' buffer holds a later round's by then), one run and batched, as unrecorded."""
    from fedtheory.runner import run_batch

    _needs_gpu()
    problem = make_problem(3, N=4, d=3).to("cupy")
    for graph in (False, None):
        with pytest.raises(FactorizationError, match="drained matrix of client 2 "):
            run(problem, _DrainSome(), 30, participation=2, log_every=30, graph=graph)
        with pytest.raises(FactorizationError, match="drained matrix of client 2 "):
            run_batch(
                problem,
                _DrainSome(),
                30,
                seeds=[0, 1, 2],
                participation=2,
                log_every=30,
                graph=graph,
            )
    ok = run(problem, _DrainSome(), 3, participation=2, seed=0)  # < 4 participations
    assert ok.meta["graph"] == "replayed"
