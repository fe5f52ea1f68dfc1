"""Dask is an optional extra (issue 17 item 10): without it ``--executor dask`` is refused in
one line (exit 2) naming the extra, and the local path neither needs nor imports Dask."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_sweep import TINY  # noqa: E402

from fedtheory.cli import main
from fedtheory.errors import FedTheoryError
from fedtheory.sweep import run_sweep

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _spec(folder):
    path = folder / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture
def no_dask(monkeypatch):
    """This process as if Dask were not installed: importing dask or distributed fails."""
    monkeypatch.delitem(sys.modules, "fedtheory.dask_executor", raising=False)
    monkeypatch.setitem(sys.modules, "dask", None)
    monkeypatch.setitem(sys.modules, "distributed", None)


def test_the_dask_executor_without_dask_is_refused_in_one_line(tmp_path, no_dask, capsys):
    out = tmp_path / "out"
    code = main(["sweep", str(_spec(tmp_path)), "--out", str(out), "--executor", "dask"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "internal error" not in err
    assert err.startswith(
        "fedtheory: error: --executor dask needs Dask, which is not installed (no module "
    )
    assert err.rstrip().endswith("pip install 'fedtheory[dask]'")
    assert not out.exists()
    with pytest.raises(FedTheoryError, match=r"fedtheory\[dask\]"):
        run_sweep(
            _spec(tmp_path), out, progress=False, executor="dask", scheduler="tcp://127.0.0.1:8786"
        )


def test_a_local_sweep_runs_without_dask(tmp_path, no_dask):
    summary = run_sweep(_spec(tmp_path), tmp_path / "out", jobs=1, progress=False)
    assert (summary.ran, summary.failed) == (4, {})


def test_the_local_path_never_imports_dask(tmp_path):
    """A fresh process: the CLI, ``fedtheory run`` and a local sweep of two worker processes
    leave no dask module loaded."""
    script = textwrap.dedent(f"""
        import sys
        from fedtheory.cli import main
        assert main(["run", "het_quadratic", "--method", "newton",
                     "--rounds", "2"]) == 0
        assert main(["sweep", {str(_spec(tmp_path))!r}, "--out", {str(tmp_path / "o")!r},
                     "--jobs", "2"]) == 0
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed"))
        print("DASK MODULES:", loaded)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert "DASK MODULES: []" in done.stdout


def test_dask_is_an_extra_that_the_test_extra_includes():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = meta["dependencies"]
    extras = meta["optional-dependencies"]
    assert not any(d.startswith(("dask", "distributed")) for d in core)
    assert extras["dask"] == ["dask[distributed]>=2024.1"]
    assert "dask[distributed]>=2024.1" in extras["test"]
    assert any(d.startswith("sympy") for d in core)  # the claim checks (C12) import it
    for name in ("constraints.txt", "constraints-min.txt"):
        pins = (ROOT / name).read_text().splitlines()
        assert any(p.startswith("dask==") for p in pins)
        assert any(p.startswith("distributed==") for p in pins)
