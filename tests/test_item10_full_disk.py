"""A full disk mid-sweep (issue 17 item 10): the sweep stops with one line naming the path, the
OS error and how many runs are saved; those files are whole, and the same command resumes.

The disk "fills" inside the atomic writer: ``DataFrame.to_parquet`` (what the writer calls on
its temporary) writes part of the file and then raises ``OSError(ENOSPC)`` at the k-th run, as
a real write would when the disk fills under it."""

from __future__ import annotations

import errno
import os
import re
import signal
import sys

import pandas as pd
import pytest
from test_sweep import TINY  # noqa: E402  (four runs: newton and fedpm, two seeds)

from fedtheory.cli import main
from fedtheory.errors import WriteError
from fedtheory.results import load
from fedtheory.sweep import expand, read_sweep, run_sweep
from fedtheory.trace import TIMING

FAIL_AT = 3  # the third run's file meets the full disk
DEADLINE_S = 600  # catches a hang only (the Dask test): never a timing assertion


def _spec(folder):
    path = folder / "tiny.toml"
    path.write_text(TINY)
    return path


def _fill_disk_at(monkeypatch, k):
    """Make the k-th Parquet write (and every later one) fail with ENOSPC after writing a
    few bytes of its temporary; returns the list of paths it was asked to write."""
    real = pd.DataFrame.to_parquet
    calls = []

    def to_parquet(self, path, *args, **kwargs):
        calls.append(str(path))
        if len(calls) < k:
            return real(self, path, *args, **kwargs)
        with open(path, "wb") as fh:
            fh.write(b"PAR1 half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", to_parquet)
    return calls


def _leftovers(out):
    return [p.name for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def _rows(out):
    return (
        load(out)
        .drop(columns=[*TIMING, "started_at"])
        .sort_values(["config_id", "round"], ignore_index=True)
    )


def test_a_full_disk_stops_a_local_sweep_saying_how_many_runs_are_saved(
    tmp_path, monkeypatch, capsys
):
    spec, out = _spec(tmp_path), tmp_path / "out"
    ids = [c.id for c in expand(read_sweep(spec))]  # jobs=1 runs them in this order
    _fill_disk_at(monkeypatch, FAIL_AT)
    code = main(["sweep", str(spec), "--out", str(out), "--jobs", "1"])
    stderr = capsys.readouterr().err  # the progress bar's line, then the error's
    assert code == 2 and "Traceback" not in stderr and "internal error" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("fedtheory:")]
    assert len(errors) == 1
    err = errors[0]
    target = out / "runs" / f"{ids[FAIL_AT - 1]}.parquet"
    assert err == (
        f"fedtheory: error: cannot write {target}: {os.strerror(errno.ENOSPC)}; "
        f"{FAIL_AT - 1} of {len(ids)} runs finished and saved; re-run the same "
        f"command to resume"
    )
    # the runs before it are whole files; nothing half-written is left
    saved = sorted(p.stem for p in (out / "runs").iterdir())
    assert saved == sorted(ids[: FAIL_AT - 1])
    assert _leftovers(out) == []
    assert len(load(out)) == (FAIL_AT - 1) * 4  # 4 rows a run (rounds 0..3)

    monkeypatch.undo()  # space again: the same command
    assert main(["sweep", str(spec), "--out", str(out), "--jobs", "1"]) == 0
    assert "2 run, 2 already done, 0 failed" in capsys.readouterr().out
    fresh = run_sweep(spec, tmp_path / "fresh", jobs=1, progress=False)
    assert fresh.ran == len(ids)
    pd.testing.assert_frame_equal(_rows(out), _rows(tmp_path / "fresh"))


def test_a_full_disk_at_the_first_run_says_none_is_saved(tmp_path, monkeypatch):
    spec, out = _spec(tmp_path), tmp_path / "out"
    _fill_disk_at(monkeypatch, 1)
    with pytest.raises(
        WriteError,
        match=r"No space left on device; 0 of 4 runs finished and "
        r"saved; re-run the same command to resume$",
    ):
        run_sweep(spec, out, jobs=1, progress=False)
    assert list((out / "runs").iterdir()) == [] and _leftovers(out) == []


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGALRM")
def test_a_full_disk_stops_a_dask_sweep_saying_how_many_runs_are_saved(tmp_path, monkeypatch):
    """The Dask executor writes in this process too, so the same injection reaches it."""
    pytest.importorskip("distributed")

    def expire(signum, frame):
        raise TimeoutError(f"test ran past {DEADLINE_S} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(DEADLINE_S)
    try:
        spec, out = _spec(tmp_path), tmp_path / "out"
        calls = _fill_disk_at(monkeypatch, FAIL_AT)
        with pytest.raises(WriteError) as info:
            run_sweep(spec, out, jobs=2, progress=False, executor="dask")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    saved = sorted(p.stem for p in (out / "runs").iterdir())
    assert len(saved) == FAIL_AT - 1 and len(calls) == FAIL_AT  # completion order: any two
    runs = re.escape(str(out / "runs"))
    match = re.fullmatch(
        rf"cannot write {runs}/([0-9a-f]{{16}})\.parquet: "
        rf"{os.strerror(errno.ENOSPC)}; {FAIL_AT - 1} of 4 runs finished and "
        rf"saved; re-run the same command to resume",
        str(info.value),
    )
    assert match is not None, str(info.value)
    assert match[1] not in saved and _leftovers(out) == []
    monkeypatch.undo()
    again = run_sweep(spec, out, jobs=1, progress=False)
    assert (again.ran, again.skipped, again.failed) == (4 - len(saved), len(saved), {})
