"""Participation schedules, the BLAS thread option, metrics that cost only what they report,
and the CLI options that reach the runner (--participation FILE, --threads, --no-drift,
--backend)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedtheory import FedTheoryError, iterate, make_method, run
from fedtheory.cli import main
from fedtheory.runner import read_schedule
from fedtheory.testing import make_problem
from fedtheory.trace import TIMING


@pytest.fixture(scope="module")
def problem():
    return make_problem(5, N=6, d=3)


def _rows(trace):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in trace.rows]


def test_a_schedule_replays_the_seeded_draws_exactly(problem):
    """The schedule of the clients that a seeded run drew gives the same trajectory."""
    method = make_method("fedpm", {"K": 2, "eta": 0.7})
    rng = np.random.default_rng(11)
    draws = [sorted(rng.choice(problem.N, size=3, replace=False).tolist()) for _ in range(5)]
    seeded = run(problem, method, 5, participation=3, seed=11)
    replay = run(problem, method, 5, participation=draws, seed=99)
    assert _rows(replay) == _rows(seeded)
    assert replay.meta["participation"] == "schedule"


def test_a_schedule_with_varying_sizes_logs_each_rounds_participants(problem, tmp_path):
    path = tmp_path / "who.txt"
    path.write_text("# round per line\n0 1 2\n3,4\n\n0 1 2 3 4 5\n")
    assert read_schedule(path) == [[0, 1, 2], [3, 4], [0, 1, 2, 3, 4, 5]]
    trace = run(problem, make_method("newton"), 3, participation=str(path))
    assert trace["participants"].tolist() == [0, 3, 2, 6]
    step = next(iter(iterate(problem, make_method("newton"), rounds=3, participation=str(path))))
    assert step.ctx.clients.tolist() == [0, 1, 2]
    np.testing.assert_allclose(step.ctx.weights.sum(), 1.0)
    # the round with every client is full participation: the same as an unscheduled round
    last = list(
        iterate(problem, make_method("newton"), rounds=3, participation=[[0, 1, 2, 3, 4, 5]] * 3)
    )[0]
    full = next(iter(iterate(problem, make_method("newton"), rounds=1)))
    assert last.ctx.clients is None
    np.testing.assert_array_equal(last.state.theta, full.state.theta)


@pytest.mark.parametrize(
    "schedule, message",
    [
        ([[0, 1], [2]], "round 3 has no entry"),
        ([[0, 1], [], [1]], "round 2 is empty"),
        ([[0, 1], [1, 6], [1]], "round 2: client index must be in 0..5, got 6"),
        ([[0, 1], [1, 1], [1]], "round 2: client 1 appears twice"),
        ([[0, 1], [-1], [1]], "round 2: client index must be in 0..5, got -1"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_round(problem, schedule, message):
    with pytest.raises(FedTheoryError, match=message):
        run(problem, make_method("fedpm"), 3, participation=schedule)


def test_a_bad_schedule_file_names_the_round_and_token(tmp_path, problem):
    path = tmp_path / "bad.txt"
    path.write_text("0 1\n2 x\n")
    with pytest.raises(FedTheoryError, match=r"round 2: client index must be an integer"):
        run(problem, make_method("fedpm"), 2, participation=str(path))


def test_fednl_refuses_a_schedule_with_a_partial_round(problem):
    with pytest.raises(FedTheoryError, match="needs full participation"):
        run(problem, make_method("fednl"), 2, participation=[list(range(6)), [0, 1]])


def test_methods_without_preconditioners_never_evaluate_the_global_hessian(problem, monkeypatch):
    calls = {"n": 0}
    real = type(problem).global_oracle

    def counting(self, theta, **kw):
        calls["n"] += kw.get("hess", False)
        return real(self, theta, **kw)

    monkeypatch.setattr(type(problem), "global_oracle", counting)
    run(problem, make_method("gd", {"eta": 0.5}), 4)
    assert calls["n"] == 0
    trace = run(problem, make_method("fedpm", {"K": 2}), 4)
    assert calls["n"] == 4 and np.isfinite(trace["hess_gap"][1:]).all()


def test_metric_time_is_its_own_column(problem):
    trace = run(problem, make_method("fedpm"), 3)
    ms = trace["metric_seconds"]
    assert (ms > 0).all() and (np.diff(ms) >= 0).all()


def test_threads_are_validated_and_recorded(problem):
    assert run(problem, make_method("newton"), 1).meta["threads"] == 1
    assert run(problem, make_method("newton"), 1, threads=2).meta["threads"] == 2
    with pytest.raises(FedTheoryError, match="threads must be an integer >= 1 or None, got 0"):
        run(problem, make_method("newton"), 1, threads=0)


def test_threads_limit_blas_inside_the_run(problem, monkeypatch):
    from threadpoolctl import threadpool_info

    seen = []
    method = make_method("newton")
    real = type(method).round

    def spy(self, ctx, state):
        seen.append({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})
        return real(self, ctx, state)

    monkeypatch.setattr(type(method), "round", spy)
    run(problem, method, 1, threads=1)
    assert seen == [{1}]


def test_cli_no_drift_threads_and_schedule_reach_the_run(tmp_path, capsys):
    sched = tmp_path / "s.txt"
    sched.write_text("\n".join(["0 3 5"] * 3))
    out = tmp_path / "r.csv"
    argv = [
        "run",
        "het_quadratic",
        "--method",
        "fedpm",
        "--rounds",
        "3",
        "--no-drift",
        "--threads",
        "1",
        "--participation",
        str(sched),
        "--out",
        str(out),
        "--no-timing",
    ]
    assert main(argv) == 0
    import pandas as pd

    df = pd.read_csv(out)
    assert df["drift"].isna().all() and (df["participants"][1:] == 3).all()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["threads"] == 1 and meta["participation"] == "schedule"
    assert {"python", "numpy", "scipy", "blas", "platform"} <= set(meta["environment"])
    assert "date" not in meta["environment"]  # --no-timing: byte-identical reruns
    assert main(["run", "het_quadratic", "--method", "fedpm", "--threads", "0"]) == 2
    assert "--threads must be an integer >= 1, got 0" in capsys.readouterr().err


def test_cli_backend_cupy_is_used_or_refused_in_one_line(capsys, monkeypatch):
    """--backend cupy reaches the problem (the run prints backend=cupy) or, where CuPy or a
    GPU is missing, is one line naming the cause, exit 2: never silently NumPy."""
    code = main(["run", "het_quadratic", "--method", "fedpm", "--rounds", "1", "--backend", "cupy"])
    out, err = capsys.readouterr()
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
        has_gpu = True
    except Exception:
        has_gpu = False
    if has_gpu:
        assert code == 0 and "backend=cupy" in out
    else:
        assert code == 2 and err.count("\n") == 1
        assert "--backend cupy needs CuPy and a CUDA GPU" in err and "backend=numpy" not in out


def test_cli_theta0_and_diverge_factor(tmp_path, capsys):
    out = tmp_path / "r.csv"
    base = ["run", "het_quadratic", "--method", "newton", "--rounds", "2", "--out", str(out)]
    assert main([*base, "--theta0", "star+0.5"]) == 0
    import pandas as pd

    assert pd.read_csv(out)["dist_to_opt"][0] == pytest.approx(0.5, rel=1e-12)
    assert main([*base, "--theta0", "star"]) == 0
    assert pd.read_csv(out)["dist_to_opt"][0] == 0.0
    start = tmp_path / "t0.txt"
    start.write_text(" ".join(["0.25"] * 20))
    assert main([*base, "--theta0", str(start)]) == 0
    start.write_text("1 2 3")
    assert main([*base, "--theta0", str(start)]) == 2
    assert "expected 20 numbers, got 3" in capsys.readouterr().err
    # GD with a huge step diverges; a tight factor ends the run early
    gd = ["run", "het_quadratic", "--method", "gd", "--param", "eta=0.5", "--rounds", "30"]
    assert main([*gd, "--diverge-factor", "2"]) == 0
    assert "status diverged" in capsys.readouterr().out
    assert main([*gd, "--diverge-factor", "0"]) == 2


def test_simple_mixing_ends_stalled_and_fedpm_completed():
    problem = make_problem(4, N=6, d=3, heterogeneity=2.0)
    sopm = run(problem, make_method("sopm"), 40)
    fedpm = run(problem, make_method("fedpm"), 40)
    assert sopm.status == "stalled" and sopm.meta["status"] == "stalled"
    assert fedpm.status == "completed" and fedpm["dist_to_opt"][-1] < 1e-10
    short = run(problem, make_method("sopm"), 3)  # too few rounds to tell
    assert short.status == "completed"


@pytest.mark.parametrize(
    "e, status",
    [
        ([1.0] * 12, "stalled"),
        ([1.0 + 1e-2 * 0.5**t for t in range(12)], "stalled"),
        ([1.0, 3.0] * 6, "oscillating"),
        ([1.0, 1.001] * 6, "stalled"),  # a 0.1 % cycle is a stall
        ([0.5**t for t in range(12)], "completed"),  # still converging
        ([1e-15] * 12, "completed"),  # at theta* to the float floor
        ([1.0] * 5, "completed"),  # too short to tell
    ],
)
def test_settled_status_reads_stalls_and_two_cycles(e, status):
    from fedtheory.runner.metrics import settled_status

    assert settled_status(e, 1.0) == status


def test_absurd_sizes_are_refused_before_running(problem, monkeypatch, capsys):
    with pytest.raises(FedTheoryError, match=r"K must be an integer in 1..100,000"):
        make_method("fedpm", {"K": 10**9})
    import fedtheory.runner.loop as loop

    monkeypatch.setattr(loop, "available_memory", lambda: 2.0**30)  # 1 GiB free
    with pytest.raises(FedTheoryError, match=r"rounds = 10,000,000 .* keeps 10,000,002 rows"):
        run(problem, make_method("gd"), 10**7)
    run(problem, make_method("gd"), 10)  # small runs are untouched
    assert main(["run", "het_quadratic", "--method", "fedpm", "--param", "K=1000000000"]) == 2
    assert "K must be an integer in 1..100,000" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name,params",
    [
        ("fedpm", {"K": 2, "server_memory": True}),
        ("fednl", {}),
        ("fednl_pp", {}),
        ("newton_star", {}),
        ("fedpac", {}),
    ],
)
def test_the_setup_cost_comes_from_start_and_is_booked_with_round_one(problem, name, params):
    """``start`` returns the state (mathematics only) and what setting it up cost; the runner
    adds that cost to round 1's counts, and to no other round."""
    method = make_method(name, params)
    state, setup = method.start(problem, np.zeros(problem.d))
    assert not any(f.startswith("pending") for f in state._fields)
    assert setup.uplink > 0 and setup.hess_evals > 0
    from fedtheory.methods import round_context

    rounds = []
    for _ in range(2):
        state, info = method.round(round_context(problem), state)
        rounds.append(info)
    steps = list(iterate(problem, make_method(name, params), rounds=2))
    first, second = steps[0].info, steps[1].info
    assert (first.uplink, first.hess_evals, first.grad_evals, first.uplink_bits) == (
        rounds[0].uplink + setup.uplink,
        rounds[0].hess_evals + setup.hess_evals,
        rounds[0].grad_evals + setup.grad_evals,
        rounds[0].uplink_bits + setup.uplink_bits,
    )
    assert (second.uplink, second.hess_evals) == (rounds[1].uplink, rounds[1].hess_evals)


@pytest.mark.parametrize("name", ["fednl", "fednl_pp", "fednl_ls", "fednl_cr"])
def test_the_former_spelling_h_init_is_refused_naming_init(name, capsys):
    """FedNL's option is ``init``, as the spec writes it; ``H_init`` is refused in one line
    that names the new spelling (from Python and from the CLI)."""
    assert make_method(name, {"init": "zero"}).init == "zero"
    with pytest.raises(FedTheoryError, match=r"'H_init' of method \w+ is now called 'init'"):
        make_method(name, {"H_init": "zero"})
    argv = ["run", "het_quadratic", "--method", name, "--param", "H_init=zero", "--rounds", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is now called 'init'" in err[0] and "init=" in err[0]
