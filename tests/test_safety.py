"""Safety (issue 7.5): configuration files are data only (nothing in the package evaluates,
executes or unpickles anything), NumPy never loads pickles, and no spec can make a sweep or a
run write outside the output it was given."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

import fedtheory
from fedtheory.cli import main
from fedtheory.errors import FedTheoryError
from fedtheory.sweep import expand, read_sweep, run_sweep
from fedtheory.sweep_worker import run_file

PACKAGE = Path(fedtheory.__file__).resolve().parent
SOURCES = sorted(PACKAGE.rglob("*.py"))

# builtins that run code, and modules that run code while reading data
CODE_BUILTINS = {"eval", "exec", "compile", "__import__", "execfile", "input"}
CODE_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "cloudpickle",
    "marshal",
    "shelve",
    "joblib",
    "yaml",
}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_the_package_source_is_found():
    assert len(SOURCES) > 10 and PACKAGE / "suite.py" in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_eval_exec_or_pickle_in_the_package_source(path):
    """The text grep the issue asks for (a method named ``eval``, defined as ``def eval(`` and
    called as ``ctx.eval(...)``, is not the builtin), then the same on the syntax tree."""
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"(?<![\w.])(?<!def )(eval|exec)\(", text), "eval( or exec( in source"
    assert "pickle" not in text.lower(), "pickle mentioned in the source"
    assert not re.search(r"allow_pickle\s*=\s*True", text)
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in CODE_BUILTINS, f"line {node.lineno}: {node.func.id}()"
        if isinstance(node, ast.Import):
            names = {a.name.split(".")[0] for a in node.names}
            assert not names & CODE_MODULES, f"line {node.lineno}: import {names}"
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in CODE_MODULES, node.lineno
        if isinstance(node, ast.Attribute):
            assert node.attr not in (
                "read_pickle",
                "to_pickle",
                "loads",
                "unsafe_load",
            ) or _is_json_loads(node), f"line {node.lineno}: .{node.attr}"


def _is_json_loads(node: ast.Attribute) -> bool:
    """``json.loads`` and ``tomllib.loads`` parse data; any other ``.loads`` is suspect."""
    return (
        node.attr == "loads"
        and isinstance(node.value, ast.Name)
        and node.value.id in ("json", "tomllib")
    )


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_numpy_load_passes_allow_pickle_false(path):
    for node in ast.walk(_tree(path)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("load", "fromfile", "loadtxt", "genfromtxt")
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in ("np", "numpy")
        ):
            kw = {k.arg: k.value for k in node.keywords}
            if node.func.attr == "load":
                assert (
                    isinstance(kw.get("allow_pickle"), ast.Constant)
                    and kw["allow_pickle"].value is False
                ), f"line {node.lineno}: np.load"


# ----------------------------------------------------------------------------- output paths

ESCAPE = "../../../escaped"
PROBLEM = f"""name = "{ESCAPE}"
description = "../../x"
[data]
source = "heterogeneous_quadratic"
clients = 2
d = 2
n_per_client = 3
seed = 0
[objective]
kind = "ridge"
lam = 0.1
"""
SWEEP = f"""name = "{ESCAPE}"
description = "/tmp/escaped"
problems = ["evil.toml"]
rounds = 2
participation = ["all", 9]

[[methods]]
name = "newton"
"""


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_a_crafted_sweep_spec_writes_nothing_outside_the_output_folder(tmp_path):
    """Problem and sweep names with ``../`` only ever appear inside files: every path a sweep
    writes is out/sweep.toml or out/{runs,errors}/<16 hex digits>.<ext>."""
    base = tmp_path / "deep" / "er" / "spec"
    base.mkdir(parents=True)
    (base / "evil.toml").write_text(PROBLEM)
    spec = base / "sweep.toml"
    spec.write_text(SWEEP)
    out = base / "out"
    before = _files(tmp_path)
    summary = run_sweep(spec, out, progress=False)
    assert summary.ran == 1 and len(summary.failed) == 1  # S = 9 > N = 2 fails
    new = _files(tmp_path) - before
    assert new and all(out in p.parents for p in new), sorted(new)
    for p in new:
        rel = p.relative_to(out).as_posix()
        assert rel == "sweep.toml" or re.fullmatch(
            r"(runs|errors)/[0-9a-f]{16}\.(parquet|json)", rel
        ), rel
    assert {c.spec["problem"] for c in expand(read_sweep(spec))} == {ESCAPE}


@pytest.mark.parametrize(
    "cid",
    [
        "../../x",
        "..",
        "0123456789abcdeg",
        "/etc/passwd",
        "0123456789ABCDEF",
        "0123456789abcdef/../../x",
    ],
)
def test_a_run_file_is_named_only_by_a_16_hex_digit_id(tmp_path, cid):
    with pytest.raises(FedTheoryError, match="16 hex digits"):
        run_file(tmp_path, cid)


def test_a_crafted_problem_name_cannot_move_the_output_of_fedtheory_run(tmp_path, capsys):
    spec = tmp_path / "spec" / "evil.toml"
    spec.parent.mkdir()
    spec.write_text(PROBLEM)
    out = tmp_path / "res" / "run.csv"
    out.parent.mkdir()
    before = _files(tmp_path)
    assert main(["run", str(spec), "--method", "newton", "--rounds", "2", "--out", str(out)]) == 0
    assert _files(tmp_path) - before == {out, out.with_suffix(".json")}
    assert ESCAPE in capsys.readouterr().out  # the name is only printed


def test_result_files_keep_the_users_umask_and_a_failed_unit_leaves_nothing(tmp_path):
    from fedtheory._io import write_together

    old = os.umask(0o022)
    try:
        (p,) = write_together([(tmp_path / "a.txt", lambda t: open(t, "w").write("x"))])
        assert (p.stat().st_mode & 0o777) == 0o644  # not mkstemp's 0600
    finally:
        os.umask(old)

    def boom(tmp):
        raise OSError(28, "No space left on device", tmp)

    with pytest.raises(FedTheoryError, match="cannot write .*No space left on device"):
        write_together(
            [(tmp_path / "r.json", lambda t: open(t, "w").write("{}")), (tmp_path / "r.csv", boom)]
        )
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.txt"]  # no json, no temporary


def test_an_unusable_out_path_is_refused_before_computing(tmp_path, capsys, monkeypatch):
    from fedtheory.cli import main

    def never(*a, **k):
        raise AssertionError("computed before checking the destination")

    monkeypatch.setattr("fedtheory.cli.run", never)
    (tmp_path / "dir.csv").mkdir()
    base = ["run", "het_quadratic", "--method", "newton"]
    assert main([*base, "--out", str(tmp_path / "dir.csv")]) == 2
    assert "is a folder, not a file" in capsys.readouterr().err
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if not os.access(ro, os.W_OK):  # root may write anywhere
        assert main([*base, "--out", str(ro / "r.csv")]) == 2
        assert "cannot write into folder" in capsys.readouterr().err
    assert main(["plot", "missing.csv", "--out", str(tmp_path / "nope" / "f.png")]) == 2
    assert "--out: folder" in capsys.readouterr().err  # the destination is checked first
