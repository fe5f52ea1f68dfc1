"""``run_batch`` for every registered method and every oracle model: a batch of seeds equals
the same seeds run one by one (``run(..., drift_metrics=False)``) to 1e-12 relative on every
logged column except timing, with partial participation wherever the method allows it (so
per-client state of clients that sit out, SCAFFOLD's c_i, FedSophia's (m, h), FedPM's and
FedNL-PP's memories, must stay with their own run) and with stochastic oracles (so each run's
minibatches and gradient noise must come from its own seed, in the order the run draws them).

Tolerance: rtol 1e-12 with an absolute floor of 1e-15 for columns at the rounding floor (a
subopt or grad_norm of 1e-16 at the optimum). The cases avoid knife-edge configurations whose
discrete decisions are taken at the rounding level, where the batched and the one-by-one
summation orders may decide differently and the trajectories then part: a quadratic objective
with FedNL-LS's c = 1/2 (the Armijo test of a Newton step on a quadratic is an exact tie),
FedNL-LS once the gradient noise dominates (every trial is decided by rounding), and DANE's
unregularised subproblem on b = 4 row minibatches (rounding amplified 1e7-fold in 5 rounds).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedtheory import make_method, run
from fedtheory.errors import FedTheoryError
from fedtheory.methods import METHODS
from fedtheory.methods.base import Method, round_context
from fedtheory.oracles import make_oracle
from fedtheory.runner import run_batch
from fedtheory.testing import make_problem
from fedtheory.trace import TIMING

SEEDS = [5, 0, 17]
ROUNDS = 5
RTOL, ATOL = 1e-12, 1e-15
ORACLES = {
    "exact": make_oracle("exact"),
    "minibatch": make_oracle("minibatch", b=4),
    "gaussian": make_oracle("gaussian", sigma=0.01),
}

# (method, hyperparameters, objective): every registered method, its stateful and line-search
# variants, with hyperparameters that make each round do something non-trivial
CASES = [
    ("gd", {"eta": 0.1}, "logistic"),
    ("fedavg", {"K": 3, "eta": 0.1}, "logistic"),
    ("fedprox", {"K": 3, "eta": 0.1, "mu_p": 0.1}, "logistic"),
    ("scaffold", {"K": 3, "eta": 0.1}, "logistic"),
    ("scaffold", {"K": 2, "eta": 0.2, "eta_g": 0.5}, "ridge"),
    ("fedpac", {"K": 2, "beta": 0.3, "rho": 0.5}, "logistic"),
    ("fedpac", {"K": 2, "align": False, "order": "use_then_update", "delta": 0.1}, "logistic"),
    # the server's Theta, one per run, as each participant's Theta^0: broadcast in the average,
    # repeated where it is a preconditioner itself (use_then_update; rho = 1)
    ("fedpac", {"K": 2, "order": "use_then_update", "rho": 0.7}, "logistic"),
    ("fedpac", {"K": 1, "rho": 1.0, "theta_init": "identity", "delta": 0.1}, "logistic"),
    ("fedpm", {"K": 2}, "logistic"),
    ("fedpm", {"K": 2, "server_memory": True}, "logistic"),
    ("fedpm", {"mixing_preconditioner": "end", "eta": 0.8}, "logistic"),
    ("fedpm", {"K": 2, "preconditioner": "foof", "server_memory": True}, "ridge"),
    ("sopm", {"K": 2}, "logistic"),
    ("sopm", {"K": 2, "local_search": True}, "logistic"),
    ("fedsophia", {"K": 3, "keep_state": True, "tau": 2}, "logistic"),
    ("fedsophia", {"K": 2}, "logistic"),
    ("fednl", {"compressor": "rankR", "R": 2}, "logistic"),
    ("fednl", {"option": 2, "compressor": "topK", "Kc": 3, "alpha": "rule1"}, "logistic"),
    ("fednl", {"option": 2, "l_norm": "spectral", "init": "zero"}, "ridge"),
    ("fednl_pp", {"compressor": "topK", "Kc": 4}, "logistic"),
    ("fednl_pp", {"compressor": "rankR", "R": 1, "alpha": "rule1"}, "ridge"),
    ("fednl_ls", {"c": 0.3}, "logistic"),
    ("fednl_cr", {}, "logistic"),
    ("fednl_cr", {"M": 0.5, "compressor": "topK", "Kc": 5}, "ridge"),
    ("newton", {"eta": 0.7}, "logistic"),
    ("newton_star", {}, "logistic"),
    ("dane", {"mu_d": 0.1}, "logistic"),
    ("dane", {}, "ridge"),
    ("giant", {}, "logistic"),
    ("giant", {"line_search": False, "eta": 0.8}, "logistic"),
]

PROBLEMS = {
    objective: make_problem(31, objective=objective, N=6, d=4, heterogeneity=0.5)
    for objective in ("logistic", "ridge")
}


def _id(case):
    name, params, objective = case
    return f"{name}-{objective}-" + "-".join(f"{k}={v}" for k, v in params.items())


def assert_same_trace(batched, single):
    """Same status, rows and every column but timing to RTOL (NaN where one is NaN)."""
    assert batched.status == single.status
    assert batched.meta["seed"] == single.meta["seed"]
    assert batched.meta["oracle"] == single.meta["oracle"]
    assert len(batched.rows) == len(single.rows)
    for ra, rb in zip(batched.rows, single.rows, strict=True):
        assert ra.keys() == rb.keys()
        for c in ra:
            if c in TIMING:
                continue
            x, y = ra[c], rb[c]
            if isinstance(y, float) and math.isnan(y):
                assert math.isnan(x), (ra["round"], c)
                continue
            assert abs(x - y) <= RTOL * abs(y) + ATOL, (ra["round"], c, x, y)


def test_every_registered_method_is_covered_and_batchable():
    assert {name for name, _, _ in CASES} == set(METHODS)
    for name, params, _ in CASES:
        assert make_method(name, params).batchable, name


@pytest.mark.parametrize("oracle", list(ORACLES))
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_a_batch_of_seeds_equals_the_seeds_run_one_by_one(case, oracle):
    name, params, objective = case
    problem = PROBLEMS[objective]
    method = make_method(name, params)
    S = None if method.full_participation_only else 3
    batch = run_batch(problem, method, ROUNDS, seeds=SEEDS, participation=S, oracle=ORACLES[oracle])
    singles = [
        run(
            problem,
            method,
            ROUNDS,
            participation=S,
            seed=seed,
            oracle=ORACLES[oracle],
            drift_metrics=False,
        )
        for seed in SEEDS
    ]
    for trace, single in zip(batch, singles, strict=True):
        assert_same_trace(trace, single)
    if S is not None or oracle != "exact":  # the seeds matter: the runs differ
        dist = [tuple(t["dist_to_opt"]) for t in singles]
        assert len(set(dist)) == len(SEEDS)


@pytest.mark.parametrize(
    "name,params",
    [
        ("scaffold", {"K": 2, "eta": 0.1}),
        ("fedsophia", {"K": 2, "keep_state": True}),
        ("fednl_pp", {}),
        ("fednl_ls", {"c": 0.3}),
        ("giant", {}),
        ("fedpm", {"server_memory": True}),
        ("sopm", {"K": 2}),
    ],
)
def test_a_batch_of_one_seed_equals_its_run(name, params):
    """B = 1 keeps the run axis (a batch whose other runs have left has one run too)."""
    problem = PROBLEMS["logistic"]
    method = make_method(name, params)
    S = None if method.full_participation_only else 3
    oracle = ORACLES["minibatch"]
    (trace,) = run_batch(problem, method, ROUNDS, seeds=[9], participation=S, oracle=oracle)
    assert_same_trace(
        trace,
        run(problem, method, ROUNDS, participation=S, seed=9, oracle=oracle, drift_metrics=False),
    )


@pytest.mark.parametrize(
    "name,params",
    [
        ("scaffold", {"K": 2, "eta": 0.3}),
        ("giant", {}),
        ("fednl_pp", {}),
        ("fedsophia", {"K": 2, "keep_state": True, "eta": 0.05}),
    ],
)
def test_runs_that_reach_the_target_leave_the_batch_with_their_state(name, params):
    """Runs stop at different rounds; the others go on with their own per-client state and
    server scalars (GIANT's last step)."""
    problem = PROBLEMS["logistic"]
    method = make_method(name, params)
    S = None if method.full_participation_only else 3
    seeds = list(range(6))
    oracle = ORACLES["gaussian"]
    singles = [
        run(problem, method, 12, participation=S, seed=s, oracle=oracle, drift_metrics=False)
        for s in seeds
    ]
    target = _spreading_target([t["rel_dist"] for t in singles])
    batch = run_batch(
        problem, method, 12, seeds=seeds, participation=S, oracle=oracle, target=target
    )
    lengths = set()
    for seed, trace in zip(seeds, batch, strict=True):
        single = run(
            problem,
            method,
            12,
            participation=S,
            seed=seed,
            oracle=oracle,
            target=target,
            drift_metrics=False,
        )
        assert_same_trace(trace, single)
        lengths.add(len(trace.rows))
    assert len(lengths) > 1


def _spreading_target(curves):
    """A target between two logged values (none on the edge) that the runs reach at the most
    different rounds (or never)."""
    values = np.unique(np.concatenate([c[1:] for c in curves]))
    best, spread = None, 0
    for lo, hi in zip(values[:-1], values[1:], strict=True):
        target = math.sqrt(lo * hi)
        hits = {int(np.argmax(c <= target)) if (c <= target).any() else -1 for c in curves}
        if len(hits) > spread:
            best, spread = target, len(hits)
    return best


def test_a_batched_context_splits_into_the_runs_own_contexts():
    """ctx.one_run(r) is the context run r has alone; take/put address each run's rows."""
    problem = PROBLEMS["logistic"]
    N = problem.N
    rngs = [np.random.default_rng(s) for s in (1, 2)]
    clients = np.array([0, 2, 5, 1, 2, 3])
    ctx = round_context(problem, clients, rng=rngs, runs=2)
    assert ctx.batched and ctx.S == 3
    for r in range(2):
        alone = round_context(problem, clients[3 * r : 3 * r + 3], rng=rngs[r])
        one = ctx.one_run(r)
        np.testing.assert_array_equal(one.clients, alone.clients)
        np.testing.assert_array_equal(one.weights, alone.weights)
        assert one.rng is rngs[r] and not one.batched
    np.testing.assert_array_equal(ctx.slots, [0, 2, 5, N + 1, N + 2, N + 3])
    state = np.arange(2 * N * 2, dtype=float).reshape(2, N, 2)
    np.testing.assert_array_equal(ctx.take(state), state[[0, 0, 0, 1, 1, 1], [0, 2, 5, 1, 2, 3]])
    new = ctx.put(state, -np.ones((6, 2)))
    assert (new[0, [0, 2, 5]] == -1).all() and (new[1, [1, 2, 3]] == -1).all()
    np.testing.assert_array_equal(new[0, [1, 3, 4]], state[0, [1, 3, 4]])
    np.testing.assert_array_equal(new[1, [0, 4, 5]], state[1, [0, 4, 5]])
    assert (state >= 0).all()  # put copies unless in_place
    w = problem.weights
    np.testing.assert_allclose(ctx.mix_all(state), [w @ state[0], w @ state[1]], rtol=1e-15)


def test_a_method_not_written_for_a_run_axis_is_refused():
    class Plain(Method):
        name = "plain"

    with pytest.raises(FedTheoryError, match="cannot run batched"):
        run_batch(PROBLEMS["logistic"], Plain(), 2, seeds=[0])


@pytest.mark.gpu
@pytest.mark.parametrize("oracle", list(ORACLES))
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_a_batch_on_cupy_equals_the_batch_on_numpy(case, oracle):
    """The same batch on the GPU: same participants and oracle draws (drawn on the host), the
    per-client state and the per-run server steps on the device; rows agree to 1e-10."""
    cupy = pytest.importorskip("cupy")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception:
        pytest.skip("no CUDA device")
    name, params, objective = case
    host = PROBLEMS[objective]
    method = make_method(name, params)
    S = None if method.full_participation_only else 3
    a = run_batch(host, method, ROUNDS, seeds=SEEDS, participation=S, oracle=ORACLES[oracle])
    b = run_batch(
        host.to("cupy"), method, ROUNDS, seeds=SEEDS, participation=S, oracle=ORACLES[oracle]
    )
    for ta, tb in zip(a, b, strict=True):
        assert tb.meta["backend"] == "cupy" and ta.status == tb.status
        assert len(ta.rows) == len(tb.rows)
        for ra, rb in zip(ta.rows, tb.rows, strict=True):
            for c in ra:
                if c not in TIMING and not (isinstance(ra[c], float) and math.isnan(ra[c])):
                    assert abs(rb[c] - ra[c]) <= 1e-10 * abs(ra[c]) + 1e-13, (
                        ra["round"],
                        c,
                        ra[c],
                        rb[c],
                    )
