"""The compiled per-seed draws of :mod:`fedtheory.draws` are NumPy's own, bit for bit.

Every comparison runs two lists of generators made from the same seeds: one drawn by the
compiled call, the other by NumPy's own calls in a Python loop. The values must be equal, the
generators' states (``bit_generator.state``, PCG64's buffered 32-bit half included) must be
equal after every call, and a further draw from each generator must be equal too (so no call
consumed one random number more or less than NumPy's). Populations cover both branches of
NumPy's ``choice`` (Floyd's algorithm; the tail shuffle for N > 10000 and S > N // 50, on both
sides of the cutoff), ranges on both sides of 2**32 (Lemire's method on ``next_uint32`` or
``next_uint64``, and ``rng == 2**32 - 1`` that takes ``next_uint32`` whole) and ranges whose
rejection step rejects a quarter of the draws. Then ``run_batch`` with partial participation,
which draws through :func:`choice_sorted`, equals the seeds run one by one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from fedtheory import make_method, run
from fedtheory.draws import choice_rows, choice_sorted, integers_rows
from fedtheory.errors import FedTheoryError
from fedtheory.oracles import RunDraws, draw, make_oracle
from fedtheory.runner import batch as batch_module
from fedtheory.runner import run_batch
from fedtheory.testing import make_problem
from fedtheory.trace import TIMING

SEEDS = [0, 1, 2, 7, 42, 12345, 2**31 - 1, 2**40 + 3, 987654321987, 5, 6, 9]


def _pair(seeds):
    """Two lists of generators from the same seeds; in both, every other generator first draws
    one small integer, so it holds a buffered 32-bit half (has_uint32 = 1) when the draws under
    test begin."""
    ours = [np.random.default_rng(s) for s in seeds]
    theirs = [np.random.default_rng(s) for s in seeds]
    for k in range(0, len(seeds), 2):
        ours[k].integers(0, 7)
        theirs[k].integers(0, 7)
    return ours, theirs


def _assert_same_generators(ours, theirs):
    for k, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a.bit_generator.state == b.bit_generator.state, k


def _assert_same_next_draws(ours, theirs):
    """A further draw from each: 32-bit (the buffered half first), 64-bit and doubles."""
    for a, b in zip(ours, theirs, strict=True):
        assert_array_equal(a.integers(0, 1000, size=3), b.integers(0, 1000, size=3))
        assert_array_equal(a.integers(0, 2**40, size=2), b.integers(0, 2**40, size=2))
        assert_array_equal(a.random(2), b.random(2))
    _assert_same_generators(ours, theirs)


def _numpy_choices(gens, N, S):
    return np.array([g.choice(N, size=S, replace=False) for g in gens], dtype=np.int64).reshape(
        len(gens), S
    )


def _check_choice(N, S, seeds=SEEDS, calls=2):
    """choice_rows (NumPy's order) and choice_sorted against NumPy, ``calls`` rounds each."""
    ours, theirs = _pair(seeds)
    for _ in range(calls):
        assert_array_equal(choice_rows(ours, N, S), _numpy_choices(theirs, N, S))
        _assert_same_generators(ours, theirs)
    for _ in range(calls):
        want = np.sort(_numpy_choices(theirs, N, S), axis=1)
        got = choice_sorted(ours, N, S)
        assert got.dtype == np.int64 and got.shape == (len(seeds), S)
        assert_array_equal(got, want)
        _assert_same_generators(ours, theirs)
    _assert_same_next_draws(ours, theirs)


def _numpy_takes_the_tail_branch(N, S):
    return N > 10000 and S > N // 50


@pytest.mark.parametrize("N", range(1, 13))
def test_choice_every_sample_size_of_small_populations(N):
    for S in range(0, N + 1):
        _check_choice(N, S)


@pytest.mark.parametrize(
    "N,S",
    [(N, S) for N in (63, 64, 65, 100, 1000) for S in (1, 2, 8, N // 2, N - 1, N)]
    + [(10000, S) for S in (1, 200, 201, 5000, 10000)]  # N = 10000: never the tail branch
    + [(10001, 200), (10001, 201), (10001, 10001)]  # cutoff: 10001 // 50 = 200
    + [(20000, S) for S in (1, 399, 400, 401, 1000, 19999, 20000)],
)
def test_choice_around_the_branches_of_numpy(N, S):
    _check_choice(N, S)


def test_both_branches_are_exercised():
    cases = [(10001, 200), (10001, 201), (20000, 400), (20000, 401)]
    assert [_numpy_takes_the_tail_branch(N, S) for N, S in cases] == [False, True, False, True]


def test_choice_random_populations_and_sizes():
    pick = np.random.default_rng(2024)
    for _ in range(40):
        N = int(pick.integers(1, 20001))
        S = int(pick.integers(1, N + 1))
        _check_choice(N, S, seeds=SEEDS[:6], calls=1)


@pytest.mark.parametrize(
    "N,S",
    [
        (2**32, 3),  # j = 2**32 - 1: rng == 0xFFFFFFFF takes next_uint32 whole
        (2**32 + 1, 3),  # j = 2**32: the first 64-bit range
        (2**33, 5),  # Lemire on next_uint64
        (3 * 2**30, 6),  # 32-bit Lemire rejecting ~1/4 of the draws
        (3 * 2**61, 6),  # 64-bit Lemire rejecting ~1/4 of the draws
    ],
)
def test_choice_of_huge_populations_uses_numpy_64_bit_ranges(N, S):
    _check_choice(N, S, calls=3)


def test_the_buffered_32_bit_half_is_in_play():
    """The states under test hold a buffered uint32 at the start and between calls."""
    ours, theirs = _pair(SEEDS)
    assert any(g.bit_generator.state["has_uint32"] for g in ours)
    choice_sorted(ours, 64, 1)
    for g in theirs:
        g.choice(64, size=1, replace=False)
    _assert_same_generators(ours, theirs)
    assert len({g.bit_generator.state["has_uint32"] for g in ours}) == 2


def test_a_generator_listed_twice_draws_twice_in_list_order():
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    got = choice_sorted([g1, g1, g1], 50, 4)
    want = np.array([np.sort(g2.choice(50, size=4, replace=False)) for _ in range(3)])
    assert_array_equal(got, want)
    _assert_same_generators([g1], [g2])


def test_no_generator_gives_an_empty_batch():
    assert choice_sorted([], 10, 3).shape == (0, 3)
    assert choice_sorted((), 10, 3).shape == (0, 3)  # the empty tuple: one object in CPython


@pytest.mark.parametrize(
    "gen",
    [
        np.random.Generator(np.random.MT19937(1)),
        np.random.Generator(np.random.PCG64DXSM(1)),
        np.random.Generator(np.random.Philox(1)),
        np.random.RandomState(1),
        np.random.PCG64(1),
        1,
    ],
    ids=["mt19937", "pcg64dxsm", "philox", "randomstate", "bare-pcg64", "int"],
)
def test_anything_but_a_pcg64_generator_is_refused(gen):
    ok = np.random.default_rng(0)
    with pytest.raises(FedTheoryError, match="generator 1 is"):
        choice_sorted([ok, gen], 10, 2)
    with pytest.raises(FedTheoryError, match="generator 1 is"):
        integers_rows([ok, gen], np.array([0, 1]), np.array([3, 3]), 2)


def test_a_pcg64_subclass_is_refused():
    class Mine(np.random.PCG64):
        pass

    with pytest.raises(FedTheoryError, match="PCG64"):
        choice_sorted([np.random.Generator(Mine(1))], 10, 2)


@pytest.mark.parametrize(
    "N,S,fragment",
    [(0, 0, "population N"), (5, 6, "sample size S"), (5, -1, "sample size S"), (5.0, 2, "N")],
)
def test_bad_population_or_sample_size_is_refused(N, S, fragment):
    with pytest.raises(FedTheoryError, match=fragment):
        choice_sorted([np.random.default_rng(0)], N, S)


# ---- minibatch rows: Generator.integers(0, high[:, None], size=(m, b)) per run ----------------
HIGHS = [1, 2, 3, 7, 25, 1000, 2**31, 3 * 2**30, 2**32 - 1, 2**32, 2**32 + 1, 2**40, 3 * 2**61]


def _numpy_rows(gens, runs, high, b):
    """The per-run loop of fedtheory.oracles.draw before its rows were grouped by a sort: each
    run's rows in their order, from that run's generator (a run with no row draws nothing)."""
    out = np.empty((len(runs), b), dtype=np.int64)
    for r, g in enumerate(gens):
        rows = np.flatnonzero(runs == r)
        if rows.size:
            out[rows] = g.integers(0, high[rows][:, None], size=(rows.size, b))
    return out


@pytest.mark.parametrize("b", [0, 1, 4])
def test_integers_rows_equal_each_runs_integers(b):
    pick = np.random.default_rng(11)
    B = len(SEEDS)
    for _ in range(6):
        n = int(pick.integers(0, 40))
        runs = pick.integers(0, B - 2, size=n)  # the last two runs have no row
        high = np.asarray(HIGHS, dtype=np.int64)[pick.integers(0, len(HIGHS), size=n)]
        ours, theirs = _pair(SEEDS)
        got = integers_rows(ours, runs, high, b)
        assert got.shape == (n, b) and got.dtype == np.int64
        assert_array_equal(got, _numpy_rows(theirs, runs, high, b))
        assert np.all((got >= 0) & (got < high[:, None]))
        _assert_same_generators(ours, theirs)
        _assert_same_next_draws(ours, theirs)


def test_integers_rows_bad_input_is_refused():
    gens = [np.random.default_rng(0)]
    with pytest.raises(FedTheoryError, match="high must be >= 1"):
        integers_rows(gens, np.array([0]), np.array([0]), 2)
    with pytest.raises(FedTheoryError, match="runs must index"):
        integers_rows(gens, np.array([1]), np.array([3]), 2)
    with pytest.raises(FedTheoryError, match="one length"):
        integers_rows(gens, np.array([0, 0]), np.array([3]), 2)


def test_the_oracles_draw_splits_rows_by_run_as_before():
    """fedtheory.oracles.draw (rows grouped by a stable sort) gives each run its rows in order:
    the per-run loop's draws, and integers_rows' for a minibatch-like sample."""
    sizes = np.array([5, 9, 2**33, 1, 40])
    pick = np.random.default_rng(5)
    for n in (0, 1, 17, 60):
        runs = pick.integers(0, len(SEEDS) - 1, size=n)
        sel = pick.integers(0, len(sizes), size=n)

        def sample(gen, at, sel=sel):
            high = sizes[sel[at]]
            return gen.integers(0, high[:, None], size=(len(high), 3))

        ours, theirs = _pair(SEEDS)
        got = draw(RunDraws(ours, runs), sample, n)
        assert got.shape == (n, 3)
        assert_array_equal(got, _numpy_rows(theirs, runs, sizes[sel], 3))
        _assert_same_generators(ours, theirs)
        compiled, _ = _pair(SEEDS)
        assert_array_equal(integers_rows(compiled, runs, sizes[sel], 3), got)
        _assert_same_generators(compiled, ours)


# ---- run_batch: the compiled participation draw in place ---------------------------------
RTOL, ATOL = 1e-12, 1e-15


def _assert_same_trace(batched, single):
    assert batched.status == single.status
    assert len(batched.rows) == len(single.rows)
    for ra, rb in zip(batched.rows, single.rows, strict=True):
        for c in ra:
            if c in TIMING:
                continue
            x, y = ra[c], rb[c]
            if isinstance(y, float) and math.isnan(y):
                assert math.isnan(x), (ra["round"], c)
                continue
            assert abs(x - y) <= RTOL * abs(y) + ATOL, (ra["round"], c, x, y)


@pytest.mark.parametrize(
    "name,params,N,S,oracle",
    [
        ("fedavg", {"K": 2, "eta": 0.1}, 24, 5, "exact"),
        ("fedavg", {"K": 2, "eta": 0.1}, 24, 1, "minibatch"),
        ("fedpm", {"K": 2}, 24, 7, "exact"),
        ("fedpm", {"K": 2, "server_memory": True}, 9, 8, "minibatch"),
        ("scaffold", {"K": 2, "eta": 0.1}, 9, 3, "gaussian"),
    ],
)
def test_run_batch_with_partial_participation_equals_runs_one_by_one(
    monkeypatch, name, params, N, S, oracle
):
    problem = make_problem(31, objective="logistic", N=N, d=4, heterogeneity=0.5)
    method = make_method(name, params)
    oracle = {
        "exact": make_oracle("exact"),
        "minibatch": make_oracle("minibatch", b=3),
        "gaussian": make_oracle("gaussian", sigma=0.01),
    }[oracle]
    seeds = list(range(10)) + [2**40]
    rounds = 6
    drawn = []

    def spy(generators, N_, S_):
        out = choice_sorted(generators, N_, S_)
        drawn.append(out.copy())
        return out

    monkeypatch.setattr(batch_module, "choice_sorted", spy)
    batch = run_batch(problem, method, rounds, seeds=seeds, participation=S, oracle=oracle)
    assert len(drawn) == rounds and all(d.shape == (len(seeds), S) for d in drawn)
    singles = [
        run(
            problem,
            method,
            rounds,
            participation=S,
            seed=s,
            oracle=oracle,
            drift_metrics=False,
        )
        for s in seeds
    ]
    for trace, single in zip(batch, singles, strict=True):
        _assert_same_trace(trace, single)
    assert len({tuple(t["dist_to_opt"]) for t in singles}) == len(seeds)
    if oracle.name == "exact":  # the run draws nothing else: round t is its t-th choice
        for b, s in enumerate(seeds):
            g = np.random.default_rng(s)
            for t in range(rounds):
                assert_array_equal(drawn[t][b], np.sort(g.choice(N, size=S, replace=False)))


def test_run_batch_with_every_client_draws_nothing(monkeypatch):
    def refuse(*args):
        raise AssertionError("no participation draw when S = N")

    monkeypatch.setattr(batch_module, "choice_sorted", refuse)
    problem = make_problem(31, N=5, d=4)
    method = make_method("fedavg", {"K": 2, "eta": 0.1})
    batch = run_batch(problem, method, 3, seeds=[1, 2], participation=5)
    for trace, s in zip(batch, [1, 2], strict=True):
        _assert_same_trace(trace, run(problem, method, 3, seed=s, drift_metrics=False))


def test_the_state_lookup_follows_the_generators_asked_for():
    """The state addresses are looked up once per list of generators: a second call with the
    same generators draws on from where they are; a list of the same length but other
    generators draws from those (never from the previous list's states)."""
    ours_a, theirs_a = _pair(SEEDS)
    ours_b, theirs_b = _pair([s + 100 for s in SEEDS])
    runs = np.arange(len(SEEDS))
    high = np.full(len(SEEDS), 1000, dtype=np.int64)
    for ours, theirs in ((ours_a, theirs_a), (ours_a, theirs_a), (ours_b, theirs_b)):
        got = integers_rows(list(ours), runs, high, 2)
        assert_array_equal(got, _numpy_rows(theirs, runs, high, 2))
    _assert_same_generators(ours_a, theirs_a)
    _assert_same_generators(ours_b, theirs_b)
    # a tuple is recognised by identity; another tuple of other generators is not mistaken
    # for it, nor a tuple of the same generators after a list
    tup_a, tup_b = tuple(ours_a), tuple(ours_b)
    for ours, theirs in ((tup_a, theirs_a), (tup_a, theirs_a), (tup_b, theirs_b)):
        got = integers_rows(ours, runs, high, 3)
        assert_array_equal(got, _numpy_rows(theirs, runs, high, 3))
    _assert_same_generators(ours_a, theirs_a)
    _assert_same_generators(ours_b, theirs_b)


def test_the_state_address_is_the_ctypes_interfaces():
    """The state pointer read from the capsule is the one NumPy's ctypes interface gives."""
    from fedtheory.draws import _state_address

    for g in _pair(SEEDS)[0]:
        assert _state_address(g.bit_generator) == g.bit_generator.ctypes.state_address
