"""Results that survive and repeat (issues 7.3 and 7.4).

Interrupted sweeps: a sweep killed with SIGKILL half-way leaves only whole result files, and
started again it recomputes nothing that finished and ends with exactly one result per
configuration. Every file a sweep writes goes through a temporary file and os.replace.

Reproducibility: the same seed gives byte-identical ``fedtheory run --out`` files on CPU, in
this process or a fresh one, once wall time is left out (``--no-timing`` writes ``seconds`` as
nan, "not measured"); every result carries its provenance (version, spec hash, parameters,
seed, backend).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedtheory import __version__
from fedtheory.cli import main
from fedtheory.errors import FedTheoryError
from fedtheory.results import consolidate, load, write_parquet
from fedtheory.suite import load_problem, read_spec, resolve, spec_hash
from fedtheory.sweep import expand, read_sweep, run_sweep
from fedtheory.trace import TIMING

ROUNDS = 20
SPEC = f"""
name = "killed"
problems = ["het_quadratic"]
rounds = {ROUNDS}
seeds = {{count = 12, start = 0}}
participation = [5]

[[methods]]
name = "fedpm"
params = {{K = [1, 2], eta = 0.5}}

[[methods]]
name = "sopm"
params = {{K = [1, 2], eta = 0.5}}
"""
RESULT = re.compile(r"[0-9a-f]{16}\.parquet")


def _fingerprint(path: Path) -> tuple[int, int, str]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def _kill_half_way(spec: Path, out: Path, jobs: int, total: int) -> None:
    """Start `python -m fedtheory.cli sweep` in its own process group and SIGKILL the whole
    group once some, not all, run files exist."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedtheory.cli",
            "sweep",
            str(spec),
            "--out",
            str(out),
            "--jobs",
            str(jobs),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    runs = out / "runs"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if runs.is_dir() and len(list(runs.glob("*.parquet"))) >= 5:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the sweep ended before it could be killed"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = len(list(runs.glob("*.parquet")))
    assert 5 <= done < total, done


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_sweep_killed_half_way_resumes_without_recomputing_and_ends_with_one_file_each(
    tmp_path, jobs
):
    spec = tmp_path / "killed.toml"
    spec.write_text(SPEC)
    ids = {c.id for c in expand(read_sweep(spec))}
    out = tmp_path / "out"
    _kill_half_way(spec, out, jobs, len(ids))

    # what a kill leaves: whole result files, perhaps a hidden temporary, nothing else
    runs = out / "runs"
    for f in runs.iterdir():
        assert RESULT.fullmatch(f.name) or (f.name.startswith(".") and f.name.endswith(".tmp")), f
    # a temporary cut short by a kill in the middle of a write must stay invisible
    (runs / f".{min(ids)}.parquet.partial.tmp").write_bytes(b"PAR1 half a file")
    finished = {f.name: _fingerprint(f) for f in runs.glob("*.parquet")}
    for name in finished:
        df = pd.read_parquet(runs / name)
        assert (
            list(df["round"]) == list(range(ROUNDS + 1))
            and df["config_id"].iloc[0] + ".parquet" == name
        )
    assert load(out)["config_id"].nunique() == len(finished)

    summary = run_sweep(spec, out, jobs=1, progress=False)
    assert (summary.total, summary.skipped, summary.ran, summary.failed) == (
        len(ids),
        len(finished),
        len(ids) - len(finished),
        {},
    )
    files = {f.name for f in runs.glob("*.parquet")}
    assert files == {f"{i}.parquet" for i in ids}  # one file per configuration
    for name, before in finished.items():  # none of them rewritten
        assert _fingerprint(runs / name) == before, name
    df = load(out)
    assert len(df) == len(ids) * (ROUNDS + 1)
    assert not df.duplicated(["config_id", "round"]).any()
    assert set(df["status"]) == {"completed"}
    assert set(df["problem_hash"]) == {spec_hash(read_spec(resolve("het_quadratic")))}
    assert load(consolidate(out))["config_id"].nunique() == len(ids)


def test_a_write_interrupted_by_an_exception_leaves_neither_file_nor_temporary(
    tmp_path, monkeypatch
):
    df = pd.DataFrame({"round": [0, 1], "x": [1.0, 2.0]})
    target = tmp_path / "abcdef0123456789.parquet"
    write_parquet(df, target)
    before = _fingerprint(target)

    def half_then_die(self, path, **kwargs):
        Path(path).write_bytes(b"PAR1 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        write_parquet(df.assign(x=[3.0, 4.0]), target)
    assert _fingerprint(target) == before  # the old whole file stays
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # and no temporary


def test_every_file_a_sweep_writes_appears_by_os_replace_of_a_temporary(tmp_path, monkeypatch):
    """runs/*.parquet, errors/*.json, sweep.toml (and a superseded spec kept aside) and
    results.parquet: each one comes into being by os.replace from a temporary beside it,
    so a reader (or a kill) never sees half a file."""
    renames: dict[Path, Path] = {}
    real_replace = os.replace

    def recording_replace(src, dst, **kwargs):
        renames[Path(dst)] = Path(src)
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", recording_replace)
    spec = tmp_path / "s.toml"
    # S = 30 > N = 20 fails at run time: that configuration is recorded in errors/
    spec.write_text(SPEC.replace("count = 12", "count = 1").replace("[5]", "[5, 30]"))
    out = tmp_path / "out"
    summary = run_sweep(spec, out, progress=False)
    assert summary.ran == 4 and len(summary.failed) == 4
    spec.write_text(SPEC.replace("count = 12", "count = 2"))  # a grown sweep: spec kept aside
    run_sweep(spec, out, progress=False)
    consolidate(out)
    written = [f for f in out.rglob("*") if f.is_file()]
    assert {f.parent.name for f in written} == {"out", "runs", "errors"}
    assert len([f for f in written if f.name.startswith("sweep.")]) == 2
    assert (out / "results.parquet").is_file()
    for f in written:
        assert f in renames, f"{f} was not written by os.replace"
        src = renames[f]
        if not re.fullmatch(r"sweep\.[0-9a-f]{12}\.toml", f.name):  # kept spec: a plain move
            assert (
                src.parent == f.parent
                and src.name.startswith(f".{f.name}.")
                and src.name.endswith(".tmp")
            ), (f, src)


# ----------------------------------------------------------------------------- reproducibility

RUN = [
    "run",
    "het_quadratic",
    "--method",
    "sopm",
    "--param",
    "K=2",
    "--participation",
    "5",
    "--oracle",
    "gaussian",
    "--oracle-param",
    "sigma=0.1",
    "--rounds",
    "6",
]


def _run_cli(out: Path, *extra: str, fresh: bool = False) -> None:
    argv = [*RUN, *extra, "--out", str(out)]
    if fresh:  # a new interpreter: nothing cached, nothing shared
        subprocess.run(
            [sys.executable, "-m", "fedtheory.cli", *argv], check=True, capture_output=True
        )
    else:
        assert main(argv) == 0


def test_the_same_seed_gives_byte_identical_output_files_in_this_and_a_fresh_process(
    tmp_path, capsys
):
    _run_cli(tmp_path / "a.csv", "--seed", "3", "--no-timing")
    _run_cli(tmp_path / "b.csv", "--seed", "3", "--no-timing", fresh=True)
    _run_cli(tmp_path / "c.csv", "--seed", "4", "--no-timing")
    a, b, c = (tmp_path / f"{x}.csv" for x in "abc")
    assert a.read_bytes() == b.read_bytes()
    assert a.with_suffix(".json").read_bytes() == b.with_suffix(".json").read_bytes()
    assert a.read_bytes() != c.read_bytes()  # the seed does matter
    assert np.isnan(pd.read_csv(a)[list(TIMING)]).all().all()  # not measured, not zero


def test_with_timing_only_the_seconds_column_differs(tmp_path, capsys):
    _run_cli(tmp_path / "a.csv", "--seed", "3")
    _run_cli(tmp_path / "b.csv", "--seed", "3")
    a, b = (pd.read_csv(tmp_path / f"{x}.csv") for x in "ab")
    assert a["seconds"].iloc[0] == 0 and (a["seconds"].iloc[1:] > 0).all()  # measured
    pd.testing.assert_frame_equal(
        a.drop(columns=list(TIMING)), b.drop(columns=list(TIMING)), check_exact=True
    )


def test_run_metadata_carries_the_provenance_of_the_result(tmp_path, capsys):
    out = tmp_path / "a.csv"
    _run_cli(out, "--seed", "3", "--no-timing")
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["version"] == __version__
    assert (
        meta["spec_hash"]
        == spec_hash(load_problem("het_quadratic").spec)
        == spec_hash(read_spec(resolve("het_quadratic")))
    )
    assert meta["params"]["K"] == 2 and meta["seed"] == 3 and meta["participation"] == 5
    assert (meta["backend"], meta["problem"], meta["method"]) == ("numpy", "het_quadratic", "sopm")
    assert meta["oracle"].startswith("gaussian") and meta["timing"] is False
    assert meta["status"] == "completed" and meta["rounds"] == 6


def test_the_spec_hash_covers_a_libsvm_files_bytes(tmp_path):
    """Editing a user's LIBSVM file changes the problem's hash, hence its cache entry."""
    from fedtheory.suite import load_problem, read_spec, spec_hash

    data = tmp_path / "d.svm"
    data.write_text("1 1:0.5 2:1\n-1 1:0.1\n1 2:0.3\n-1 1:0.9 2:0.2\n")
    spec = tmp_path / "p.toml"
    spec.write_text(
        '[data]\nsource = "libsvm"\npath = "d.svm"\n[partition]\n'
        'kind = "contiguous"\nclients = 2\n[objective]\nkind = "logistic"\nlam = 0.1\n'
    )
    before, problem = spec_hash(read_spec(spec)), load_problem(spec)
    data.write_text("1 1:0.5 2:1\n-1 1:0.1\n1 2:0.3\n-1 1:0.9 2:0.7\n")
    assert spec_hash(read_spec(spec)) != before
    assert load_problem(spec) is not problem


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_killing_only_the_main_process_leaves_no_process_of_the_sweep(tmp_path):
    """SIGKILL to the sweep's main process alone (not its group): its workers notice within a
    second and exit, so nothing of the sweep keeps computing or writing."""
    spec = tmp_path / "orphans.toml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedtheory.cli",
            "sweep",
            str(spec),
            "--out",
            str(out),
            "--jobs",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    runs = out / "runs"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if runs.is_dir() and len(list(runs.glob("*.parquet"))) >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(proc.pid):
        time.sleep(0.1)
    survivors = _alive(proc.pid)
    if survivors:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not survivors, "processes of the killed sweep are still running"
    frozen = {f.name for f in runs.glob("*")}
    time.sleep(1.0)
    assert {f.name for f in runs.glob("*")} == frozen  # nobody writes any more


def test_a_resumed_sweep_removes_stale_temporaries_and_a_second_sweep_is_refused(tmp_path):
    from fedtheory.sweep import _exclusive

    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    stale = out / "runs" / ".0123456789abcdef.parquet.x1y2.tmp"
    stale.write_bytes(b"")
    with _exclusive(out), pytest.raises(FedTheoryError, match="another sweep is running"):
        run_sweep(spec, out, jobs=1, progress=False)
    assert stale.exists()  # refused before touching anything
    run_sweep(spec, out, jobs=1, progress=False)
    assert not stale.exists()


def test_a_cupy_sweep_without_a_gpu_is_one_clear_line(tmp_path, capsys):
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    spec = tmp_path / "gpu.toml"
    spec.write_text(SPEC.replace('name = "killed"', 'name = "killed"\nbackend = "cupy"'))
    assert main(["sweep", str(spec), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert 'backend = "cupy" needs CuPy and a CUDA GPU' in err and "internal error" not in err
    assert not (tmp_path / "o").exists()


def test_sweep_backend_option_replaces_the_specs_key(tmp_path, capsys):
    """``sweep --backend`` reaches every run: a spec asking for cupy runs on numpy with
    ``--backend numpy`` (each result records numpy), and ``--backend cupy`` without a GPU is
    one line naming the option, nothing written."""
    from fedtheory.results import load
    from fedtheory.sweep import expand, read_sweep

    spec = tmp_path / "gpu.toml"
    spec.write_text(SPEC.replace('name = "killed"', 'name = "killed"\nbackend = "cupy"'))
    assert {c.spec["backend"] for c in expand(read_sweep(spec, "numpy"))} == {"numpy"}
    assert main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--backend", "numpy"]) == 0
    assert set(load(tmp_path / "o")["backend"]) == {"numpy"}
    try:
        import cupy  # noqa: F401
    except ImportError:
        plain = tmp_path / "plain.toml"
        plain.write_text(SPEC)
        assert main(["sweep", str(plain), "--out", str(tmp_path / "g"), "--backend", "cupy"]) == 2
        err = capsys.readouterr().err
        assert "--backend cupy needs CuPy and a CUDA GPU" in err and "internal error" not in err
        assert not (tmp_path / "g").exists()
