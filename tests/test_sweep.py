"""Sweeps: one atomic file per configuration with provenance, resume without recomputation,
the same rows whatever the number of workers, and every bad spec key named."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pandas as pd
import pytest

from fedtheory import COLUMNS, FedTheoryError, __version__
from fedtheory.results import PROVENANCE, consolidate, load
from fedtheory.sweep import expand, main_sweep, read_sweep, run_sweep
from fedtheory.trace import TIMING as TRACE_TIMING

TINY = """
name = "tiny"
problems = ["het_quadratic"]
rounds = 3
seeds = [0, 1]
participation = [10]

[[methods]]
name = "newton"

[[methods]]
name = "fedpm"
params = {K = 2, eta = 0.9}
"""
TIMING = [*TRACE_TIMING, "started_at"]


def _spec(folder, text=TINY, name="tiny.toml"):
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The tiny sweep run once with jobs=2 and once with jobs=1."""
    base = tmp_path_factory.mktemp("sweep")
    spec = _spec(base)
    two = run_sweep(spec, base / "two", jobs=2, progress=False)
    one = run_sweep(spec, base / "one", jobs=1, progress=False)
    return spec, base, two, one


def test_one_file_per_configuration_with_provenance_on_every_row(swept):
    spec, base, two, _ = swept
    assert (two.total, two.ran, two.skipped, two.failed) == (4, 4, 0, {})
    files = sorted((base / "two" / "runs").iterdir())
    assert len(files) == 4
    assert all(re.fullmatch(r"[0-9a-f]{16}\.parquet", f.name) for f in files)
    assert (base / "two" / "sweep.toml").read_text() == spec.read_text()
    for f in files:
        df = pd.read_parquet(f)
        assert list(df["round"]) == [0, 1, 2, 3]
        for col in (*COLUMNS, *PROVENANCE, "config_id", "problem_hash", "started_at"):
            assert col in df.columns, col
            assert df[col].nunique(dropna=False) == 1 or col in COLUMNS
        row = df.iloc[0]
        assert row["config_id"] == f.stem
        assert row["version"] == __version__ and row["problem"] == "het_quadratic"
        assert (row["backend"], row["oracle"], row["status"]) == ("numpy", "exact", "completed")
        assert row["participation"] == 10 and row["seed"] in (0, 1)
        assert isinstance(json.loads(row["params"]), dict)
        assert datetime.fromisoformat(row["started_at"]).utcoffset().total_seconds() == 0


def test_load_returns_every_row_of_every_run(swept):
    _, base, _, _ = swept
    df = load(base / "two")
    assert len(df) == 4 * 4
    assert sorted(df["label"].unique()) == ["fedpm", "newton"]
    assert df.groupby("config_id").size().tolist() == [4] * 4


def test_rerun_recomputes_nothing(swept):
    spec, base, _, _ = swept
    runs = base / "two" / "runs"
    before = {f.name: f.stat().st_mtime_ns for f in runs.iterdir()}
    again = run_sweep(spec, base / "two", jobs=2, progress=False)
    assert (again.ran, again.skipped, again.failed) == (0, 4, {})
    assert {f.name: f.stat().st_mtime_ns for f in runs.iterdir()} == before


def test_jobs_1_and_jobs_2_give_identical_rows(swept):
    _, base, _, _ = swept
    a, b = (load(base / d).drop(columns=TIMING) for d in ("one", "two"))
    pd.testing.assert_frame_equal(a, b)


def test_resume_runs_only_the_missing_configuration(tmp_path):
    spec = _spec(tmp_path)
    run_sweep(spec, tmp_path / "out", progress=False)
    victim = sorted((tmp_path / "out" / "runs").iterdir())[0]
    rows = pd.read_parquet(victim).drop(columns=TIMING)
    victim.unlink()
    summary = run_sweep(spec, tmp_path / "out", progress=False)
    assert (summary.ran, summary.skipped) == (1, 3)
    pd.testing.assert_frame_equal(pd.read_parquet(victim).drop(columns=TIMING), rows)
    path = consolidate(tmp_path / "out")
    assert path.name == "results.parquet"
    pd.testing.assert_frame_equal(load(path), load(tmp_path / "out"))


def test_grids_and_seed_ranges_expand_to_stable_ids(tmp_path):
    spec = _spec(
        tmp_path,
        TINY.replace("seeds = [0, 1]", "seeds = {count = 3, start = 5}")
        .replace("K = 2,", "K = [1, 2],")
        .replace("participation = [10]", 'participation = ["all", 10]'),
    )
    configs = expand(read_sweep(spec))
    assert len(configs) == (1 + 2) * 2 * 3
    assert {c.spec["seed"] for c in configs} == {5, 6, 7}
    assert len({c.id for c in configs}) == len(configs)
    assert [c.id for c in expand(read_sweep(spec))] == [c.id for c in configs]
    assert {c.label for c in configs} == {
        "newton S=all",
        "newton S=10",
        "fedpm K=1 S=all",
        "fedpm K=1 S=10",
        "fedpm K=2 S=all",
        "fedpm K=2 S=10",
    }


def test_defaults_spelled_out_are_the_same_configuration(tmp_path):
    short = expand(read_sweep(_spec(tmp_path, TINY, "a.toml")))
    long = expand(
        read_sweep(
            _spec(
                tmp_path,
                TINY.replace(
                    "params = {K = 2, eta = 0.9}", "params = {K = 2, eta = 0.9, delta = 0.0}"
                ).replace('name = "newton"', 'name = "newton"\nparams = {eta = 1.0}'),
                "b.toml",
            )
        )
    )
    assert [c.id for c in short] == [c.id for c in long]


@pytest.mark.parametrize(
    "edit, match",
    [
        (("rounds = 3", "rounds = 3\nround = 3"), "unknown key 'round' in the top level"),
        (
            ('name = "fedpm"', 'name = "fedpm"\nparam = {K = 1}'),
            r"unknown key 'param' in \[\[methods\]\] #2",
        ),
        (("seeds = [0, 1]", "seeds = {count = 2, first = 0}"), "unknown key 'first' in seeds"),
        (("K = 2,", "Kappa = 2,"), "unknown parameter 'Kappa' for method fedpm"),
        (('name = "newton"', 'name = "newtn"'), "'newtn'"),
        (("participation = [10]", "participation = [0]"), "participation"),
        (("K = 2,", "K = [],"), "K is an empty list"),
        (("rounds = 3", "rounds = 0"), "rounds must be an integer >= 1"),
        (
            ('name = "fedpm"', 'name = "fedpm"\noracle = {name = "minibatch", batch = 4}'),
            r"unknown option\(s\) \['batch'\]",
        ),
    ],
)
def test_bad_spec_is_refused_naming_the_key_and_the_file(tmp_path, edit, match):
    spec = _spec(tmp_path, TINY.replace(*edit))
    with pytest.raises(FedTheoryError, match=match) as info:
        expand(read_sweep(spec))
    if "unknown key" in match:
        assert "tiny.toml" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_a_failing_run_is_recorded_retried_and_reported(tmp_path, capsys):
    spec = _spec(
        tmp_path,
        TINY.replace("participation = [10]", "participation = [50]").replace(
            "seeds = [0, 1]", "seeds = [0]"
        ),
    )
    assert main_sweep(str(spec), str(tmp_path / "out"), 1) == 1
    errors = sorted((tmp_path / "out" / "errors").iterdir())
    assert len(errors) == 2 and not any((tmp_path / "out" / "runs").iterdir())
    assert "participation S must be an integer in 1..20" in capsys.readouterr().out
    with pytest.raises(FedTheoryError, match="no runs found"):
        load(tmp_path / "out")
    assert main_sweep(str(spec), str(tmp_path / "out"), 1) == 1  # tried again, not skipped


def test_jobs_must_be_a_positive_integer(tmp_path):
    with pytest.raises(FedTheoryError, match="jobs must be an integer >= 1, got 0"):
        run_sweep(_spec(tmp_path), tmp_path / "out", jobs=0)


def test_every_sweep_row_and_claim_json_records_its_environment(tmp_path):
    import json as _json

    from fedtheory.claims import main_check

    path = _spec(tmp_path)
    run_sweep(path, tmp_path / "out", progress=False)
    df = load(tmp_path / "out")
    env = _json.loads(df["environment"].iloc[0])
    assert {"python", "platform", "numpy", "scipy", "blas", "git_commit"} <= set(env)
    assert (df["threads"] == 1).all()
    out = tmp_path / "c.json"
    assert main_check(["C3"], True, out, None) == 0
    payload = _json.loads(out.read_text())
    assert payload["threads"] == 1 and "date" in payload["environment"]
