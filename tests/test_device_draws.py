"""Draws made on the GPU (fedtheory.device_draws) against NumPy's own calls: the same numbers,
and the generators left in the same states (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from fedtheory.draws import choice_sorted, integers_rows
from fedtheory.trace import TIMING

pytestmark = pytest.mark.gpu


def _gens(seeds, burn=0):
    """Generators, each advanced by a few draws of its own (so that some hold a buffered
    32-bit half: has_uint32 = 1)."""
    gens = [np.random.default_rng(s) for s in seeds]
    for k, g in enumerate(gens):
        g.integers(0, 7, size=(k + burn) % 3)
    return gens


def _states(gens):
    return [g.bit_generator.state for g in gens]


@pytest.mark.parametrize(
    "N,S",
    [(1, 1), (6, 1), (6, 3), (6, 5), (6, 6), (64, 8), (64, 63), (500, 200), (10000, 300)],
)
def test_participants_are_numpy_sorted_choice_and_leave_its_states(N, S, cupy_gpu):
    cupy = cupy_gpu
    from fedtheory.device_draws import DeviceGenerators

    seeds = list(range(11))
    host, dev = _gens(seeds), _gens(seeds)
    gd = DeviceGenerators(dev, N, S, np.full(N, 5))
    out = cupy.empty(len(seeds) * S, dtype=cupy.int64)
    for _ in range(3):  # three rounds: the states carry over
        want = (
            np.tile(np.arange(N), len(seeds)) if S == N else choice_sorted(host, N, S).reshape(-1)
        )
        gd.participants(out)
        np.testing.assert_array_equal(out.get(), want)
    gd.to_host(dev)
    assert _states(dev) == _states(host)


def test_many_blocks_of_generators(cupy_gpu):
    """300 generators: three blocks of threads, the last one partly empty."""
    cupy = cupy_gpu
    from fedtheory.device_draws import DeviceGenerators

    seeds = list(range(300))
    host, dev = _gens(seeds), _gens(seeds)
    N, S, sizes = 20, 4, np.arange(1, 21)
    gd = DeviceGenerators(dev, N, S, sizes)
    clients = cupy.empty(len(seeds) * S, dtype=cupy.int64)
    c = choice_sorted(host, N, S).reshape(-1)
    gd.participants(clients)
    np.testing.assert_array_equal(clients.get(), c)
    runs = np.repeat(np.arange(len(seeds)), S)
    np.testing.assert_array_equal(
        gd.integers_rows(clients, 3).get(), integers_rows(host, runs, sizes[c], 3)
    )
    gd.to_host(dev)
    assert _states(dev) == _states(host)


def test_full_participation_batch_with_the_exact_oracle_draws_nothing(cupy_gpu):
    """S = N and the exact oracle: the replayed batch equals the unrecorded one and says it
    replayed, without "draws on the device" (there are none)."""
    from fedtheory import make_method
    from fedtheory.runner import run_batch
    from fedtheory.testing import make_problem

    problem = make_problem(7, N=4, d=3).to("cupy")
    kw = dict(seeds=[1, 2, 3], participation=None, log_every=3)
    plain = run_batch(problem, make_method("fedpac"), 7, graph=False, **kw)
    tried = run_batch(problem, make_method("fedpac"), 7, **kw)
    assert tried[0].meta["graph"] == "replayed"
    for a, b in zip(plain, tried, strict=True):
        assert len(a.rows) == len(b.rows) == 4  # rounds 0, 3, 6, 7
        for ra, rb in zip(a.rows, b.rows, strict=True):
            for k, v in ra.items():  # bit for bit; the drift columns are NaN in a batch
                if k not in TIMING:
                    assert v == rb[k] or (np.isnan(v) and np.isnan(rb[k])), (k, v, rb[k])


def test_rows_are_numpy_integers_per_run_and_interleave_with_the_participants(cupy_gpu):
    """A round's order: participants, then each oracle call's rows (run-major, per run in
    order); ranges from 1 (no draw) to just below 2**32."""
    cupy = cupy_gpu
    from fedtheory.device_draws import DeviceGenerators

    N, S, b = 7, 3, 4
    sizes = np.array([1, 2, 3, 64, 1000, 2**31 + 5, 2**32 - 1])
    seeds = [5, 3, 5, 9]  # a seed twice: two generators of the same seed, apart
    host, dev = _gens(seeds, 1), _gens(seeds, 1)
    gd = DeviceGenerators(dev, N, S, sizes)
    clients = cupy.empty(len(seeds) * S, dtype=cupy.int64)
    runs = np.repeat(np.arange(len(seeds)), S)
    for _ in range(4):
        c = choice_sorted(host, N, S).reshape(-1)
        gd.participants(clients)
        np.testing.assert_array_equal(clients.get(), c)
        for _call in range(2):
            want = integers_rows(host, runs, sizes[c], b)
            got = gd.integers_rows(clients, b)
            np.testing.assert_array_equal(got.get(), want)
    gd.to_host(dev)
    assert _states(dev) == _states(host)
    # and NumPy goes on from there as from its own calls
    np.testing.assert_array_equal(
        [g.integers(0, 2**40, size=5) for g in dev], [g.integers(0, 2**40, size=5) for g in host]
    )


def test_what_is_not_drawn_on_the_device_is_said(cupy_gpu):
    from fedtheory.device_draws import DeviceGenerators, supported
    from fedtheory.errors import FedTheoryError

    assert supported(64, 8, np.full(64, 10)) == ""
    assert "2**32" in supported(64, 8, np.array([2**32]))
    assert "whole-population shuffle" in supported(20000, 1000, np.full(20000, 3))
    with pytest.raises(FedTheoryError, match="generator 1 is"):
        DeviceGenerators(
            [np.random.default_rng(0), np.random.Generator(np.random.MT19937(0))],
            4,
            2,
            np.full(4, 3),
        )
