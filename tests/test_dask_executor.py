"""The Dask executor: the same rows as local sweeps, one store that either executor resumes,
and a worker killed mid-sweep costing nothing. Every test starts and stops its own loopback
cluster and runs under an alarm, so a hung cluster fails the test instead of the session."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

import pandas as pd
import pytest

distributed = pytest.importorskip("distributed")

from fedtheory import dask_executor  # noqa: E402
from fedtheory.cli import main  # noqa: E402
from fedtheory.errors import FedTheoryError  # noqa: E402
from fedtheory.results import load  # noqa: E402
from fedtheory.sweep import expand, read_sweep, run_sweep  # noqa: E402
from fedtheory.trace import TIMING as TRACE_TIMING  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL and SIGALRM"),
]

from test_sweep import TINY  # noqa: E402  (the same tiny spec as the local executor's tests)

# eight runs of about half a second each: long enough for a kill to land mid-sweep
SLOW = """
name = "slow"
problems = ["het_quadratic"]
rounds = 120
seeds = {count = 8}
participation = [10]

[[methods]]
name = "fedpm"
params = {K = 4, eta = 0.5}
"""
TIMING = [*TRACE_TIMING, "started_at"]
DEADLINE_S = 600  # catches a hang only: a busy 2-core machine may be slow, never wrong


@pytest.fixture(autouse=True)
def _deadline():
    def expire(signum, frame):
        raise TimeoutError(f"test ran past {DEADLINE_S} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(DEADLINE_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _cluster() -> distributed.LocalCluster:
    return distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )


@pytest.fixture(scope="module")
def cluster():
    """A loopback cluster of two worker processes, and a client of it, for the tests that
    leave its workers alive (last in this file, so that no other cluster runs beside it)."""
    with _cluster() as cluster, distributed.Client(cluster) as client:
        yield cluster, client


def _spec(folder, text=TINY, name="tiny.toml"):
    path = folder / name
    path.write_text(text)
    return path


def _rows(out):
    return load(out).drop(columns=TIMING)


def _no_temp_files(out):
    return [p.name for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_cli_dask_executor_starts_a_loopback_cluster_of_jobs_workers(tmp_path, monkeypatch):
    made = []

    class Recording(distributed.LocalCluster):
        def __init__(self, **kwargs):
            made.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(dask_executor, "LocalCluster", Recording)
    spec = _spec(tmp_path)
    code = main(
        ["sweep", str(spec), "--out", str(tmp_path / "out"), "--jobs", "2", "--executor", "dask"]
    )
    assert code == 0
    assert made == [
        {
            "n_workers": 2,
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": None,
            "silence_logs": logging.CRITICAL,
        }
    ]
    assert len(list((tmp_path / "out" / "runs").glob("*.parquet"))) == 4


def test_a_worker_killed_mid_sweep_loses_and_duplicates_nothing(tmp_path):
    spec = _spec(tmp_path, SLOW, "slow.toml")
    out, ids = tmp_path / "out", sorted(c.id for c in expand(read_sweep(spec)))
    done: dict = {}

    def sweep(address):
        try:
            done["summary"] = run_sweep(
                spec, out, progress=False, executor="dask", scheduler=address
            )
        except BaseException as exc:  # re-raised in the test's thread below
            done["error"] = exc

    with _cluster() as cluster, distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        thread = threading.Thread(target=sweep, args=(cluster.scheduler_address,))
        thread.start()
        # wait until both workers are running a task and the first run is written
        while True:
            busy = [w for w, keys in client.processing().items() if keys]
            written = len(list((out / "runs").glob("*.parquet"))) if out.exists() else 0
            if (len(busy) == 2 and written >= 1) or not thread.is_alive():
                break
            time.sleep(0.02)
        assert thread.is_alive(), "the sweep finished before the kill; make SLOW slower"
        os.kill(pids[busy[0]], signal.SIGKILL)
        thread.join(DEADLINE_S - 5)
        assert not thread.is_alive()
    if "error" in done:
        raise done["error"]
    assert written < len(ids)
    summary = done["summary"]
    assert (summary.total, summary.ran, summary.skipped, summary.failed) == (8, 8, 0, {})
    assert sorted(f.name for f in (out / "runs").iterdir()) == [f"{i}.parquet" for i in ids]
    df = load(out)
    assert df.groupby("config_id").size().to_dict() == {i: 121 for i in ids}
    assert not (out / "errors").exists()
    assert _no_temp_files(out) == []


def test_scheduler_address_needs_the_dask_executor_and_a_live_scheduler(tmp_path):
    import dask

    spec = _spec(tmp_path)
    with pytest.raises(FedTheoryError, match="needs the dask executor"):
        run_sweep(spec, tmp_path / "a", progress=False, scheduler="tcp://127.0.0.1:8786")
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(FedTheoryError, match="cannot reach the Dask scheduler"),
    ):
        run_sweep(
            spec, tmp_path / "b", progress=False, executor="dask", scheduler="tcp://127.0.0.1:9"
        )
    assert not (tmp_path / "b").exists()  # connected before writing anything


def test_dask_and_local_sweeps_write_the_same_rows_and_resume_each_other(tmp_path, cluster):
    (cluster, client), spec = cluster, _spec(tmp_path)
    ids = sorted(c.id for c in expand(read_sweep(spec)))
    local, dask = tmp_path / "local", tmp_path / "dask"
    address = cluster.scheduler_address
    run_sweep(spec, local, jobs=1, progress=False)
    summary = run_sweep(spec, dask, progress=False, executor="dask", scheduler=address)
    assert (summary.total, summary.ran, summary.failed) == (4, 4, {})
    assert sorted(f.stem for f in (dask / "runs").iterdir()) == ids
    pd.testing.assert_frame_equal(_rows(dask), _rows(local))
    # each worker built het_quadratic at most once, from the spec its plugin holds
    built = client.run(lambda: len(__import__("fedtheory.sweep_worker").sweep_worker.PROBLEMS))
    assert set(built.values()) <= {0, 1} and sum(built.values()) >= 1

    # a run missing from the local store is redone by Dask, and the other way round
    (local / "runs" / f"{ids[0]}.parquet").unlink()
    again = run_sweep(spec, local, progress=False, executor="dask", scheduler=address)
    assert (again.ran, again.skipped) == (1, 3)
    (dask / "runs" / f"{ids[1]}.parquet").unlink()
    again = run_sweep(spec, dask, jobs=1, progress=False)
    assert (again.ran, again.skipped) == (1, 3)
    pd.testing.assert_frame_equal(_rows(dask), _rows(local))
    assert _no_temp_files(local) == _no_temp_files(dask) == []


def test_a_failing_run_is_recorded_by_the_client_as_in_local_sweeps(tmp_path, cluster):
    spec = _spec(tmp_path, TINY.replace("participation = [10]", "participation = [50]"))
    summary = run_sweep(
        spec,
        tmp_path / "out",
        progress=False,
        executor="dask",
        scheduler=cluster[0].scheduler_address,
    )
    assert (summary.ran, len(summary.failed)) == (0, 4)
    assert all(
        "participation S must be an integer in 1..20" in msg for msg in summary.failed.values()
    )
    errors = tmp_path / "out" / "errors"
    assert sorted(f.stem for f in errors.iterdir()) == sorted(summary.failed)
    assert not any((tmp_path / "out" / "runs").iterdir())
