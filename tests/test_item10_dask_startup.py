"""A Dask cluster that cannot start, or cannot be reached, is one line and exit 2 (issue 17
item 10), never "internal error ... a bug", and leaves no output folder behind.

The failure is real: every worker process loads a preload script (Dask's
``distributed.worker.preload``) that exits with status 3 before the worker starts. Dask
operations get a deadline that only catches a hang (SIGALRM), never a timing assertion."""

from __future__ import annotations

import signal
import sys

import pytest

distributed = pytest.importorskip("distributed")
import dask  # noqa: E402
from test_sweep import TINY  # noqa: E402

from fedtheory.cli import main  # noqa: E402
from fedtheory.errors import DaskStartError  # noqa: E402
from fedtheory.sweep import run_sweep  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="needs SIGALRM")]
DEADLINE_S = 600  # catches a hang only


@pytest.fixture(autouse=True)
def _deadline():
    def expire(signum, frame):
        raise TimeoutError(f"test ran past {DEADLINE_S} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(DEADLINE_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _spec(folder):
    path = folder / "tiny.toml"
    path.write_text(TINY)
    return path


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("fedtheory: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    return lines[0]


def test_a_worker_dying_while_the_cluster_starts_is_one_line_and_no_output(tmp_path, capfd):
    die = tmp_path / "die_at_start.py"
    die.write_text("import os\nos._exit(3)   # the worker process dies before it starts\n")
    out = tmp_path / "out"
    with dask.config.set({"distributed.worker.preload": [str(die)]}):
        code = main(
            ["sweep", str(_spec(tmp_path)), "--out", str(out), "--jobs", "1", "--executor", "dask"]
        )
    line = _one_error_line(capfd.readouterr().err)  # fd level: the worker's output too
    assert code == 2
    assert line.startswith("fedtheory: error: dask cluster failed to start: ")
    assert "exited with status 3" in line  # which worker died, and how
    assert not out.exists()  # connected before writing anything


def test_a_worker_failing_to_start_is_one_line_without_dasks_tracebacks(
    tmp_path, capfd, monkeypatch
):
    """A worker that raises while it starts: Dask logs a traceback from the worker and its
    nanny; the CLI shows the cause in its one line instead."""
    monkeypatch.delenv("FEDTHEORY_TRACEBACK", raising=False)
    broken = tmp_path / "broken_env.py"
    broken.write_text("raise ImportError('libfoo.so: cannot open shared object file')\n")
    out = tmp_path / "out"
    with dask.config.set({"distributed.worker.preload": [str(broken)]}):
        code = main(
            ["sweep", str(_spec(tmp_path)), "--out", str(out), "--jobs", "1", "--executor", "dask"]
        )
    line = _one_error_line(capfd.readouterr().err)
    assert code == 2
    assert line.startswith(
        "fedtheory: error: dask cluster failed to start: ImportError: "
        "libfoo.so: cannot open shared object file"
    )
    assert not out.exists()


def test_the_library_raises_the_start_failure_as_a_fedtheory_error(tmp_path):
    die = tmp_path / "die_at_start.py"
    die.write_text("import os\nos._exit(3)\n")
    with (
        dask.config.set({"distributed.worker.preload": [str(die)]}),
        pytest.raises(
            DaskStartError,
            match=r"^dask cluster failed to start: .*worker "
            r"process \d+ exited with status 3",
        ),
    ):
        run_sweep(_spec(tmp_path), tmp_path / "out", jobs=2, progress=False, executor="dask")
    assert not (tmp_path / "out").exists()


def test_an_unreachable_scheduler_is_one_line_and_no_output(tmp_path, capsys):
    out = tmp_path / "out"
    # nothing listens on the discard port of the loopback; a short connect timeout only makes
    # the (certain) failure quick
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        code = main(
            [
                "sweep",
                str(_spec(tmp_path)),
                "--out",
                str(out),
                "--executor",
                "dask",
                "--scheduler",
                "tcp://127.0.0.1:9",
            ]
        )
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith(
        "fedtheory: error: cannot reach the Dask scheduler at 'tcp://127.0.0.1:9' ("
    )
    assert not out.exists()
