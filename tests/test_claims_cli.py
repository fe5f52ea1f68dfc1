"""``fedtheory check`` (:func:`fedtheory.claims.main_check`): the table, the exit code, the JSON
and Markdown outputs, and refusals of bad input before anything runs."""

from __future__ import annotations

import json
import time
import types

import pytest

from fedtheory import claims
from fedtheory.claims import ClaimRecord, main_check, record, resolve_ids
from fedtheory.errors import FedTheoryError


def _fake_module(claim_id: str, *, passed: bool = True, crash: bool = False):
    def check(quick: bool = True) -> ClaimRecord:
        if crash:
            raise RuntimeError("boom")
        return record(
            claim_id,
            f"statement of {claim_id}",
            "a paper, eq. 1",
            time.perf_counter(),
            measured="1.00",
            predicted="1 (pass: +- 0.1)",
            interval="[0.9, 1.1]",
            passed=passed,
            details={"quick": quick, "value": float("nan")},
        )

    return types.SimpleNamespace(
        CLAIM_ID=claim_id,
        STATEMENT=f"statement of {claim_id}",
        SOURCE="a paper, eq. 1",
        check=check,
        __file__=f"{claim_id}.py",
    )


@pytest.fixture
def fake_registry(monkeypatch):
    def install(**modules):
        monkeypatch.setattr(claims.checks, "registry", lambda: dict(modules))

    return install


def test_registry_finds_every_check_module_in_claim_order():
    ids = claims.claim_ids()
    assert ids[:6] == ["C1", "C2", "C3", "C4", "C5", "C6"]
    assert "C10" in ids and "C12" in ids and ids[-1] == "EXT-PP"
    numbered = [int(c[1:]) for c in ids if c[1:].isdigit()]
    assert numbered == sorted(numbered)
    for cid in ids:
        module = claims.load_check(cid)
        assert module.STATEMENT and module.SOURCE
        assert callable(module.test_claim)
    assert claims.checks_dir().name in ("proofs_checks", "_checks")


def test_claim_ids_are_case_insensitive_and_deduplicated():
    assert resolve_ids(["c1", "ext-pp", "C1"]) == ["C1", "EXT-PP"]
    assert resolve_ids(None) == claims.claim_ids()


def test_check_prints_a_row_per_claim_and_writes_json_and_report(tmp_path, capsys):
    json_path, report_path = tmp_path / "claims.json", tmp_path / "report.md"
    code = main_check(["C1", "c6"], True, json_path, report_path)
    out = capsys.readouterr().out
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("claim"))
    for column in ("measured", "predicted", "interval", "result", "seconds"):
        assert column in header
    rows = [line for line in out.splitlines() if line.startswith(("C1 ", "C6 "))]
    assert len(rows) == 2 and all("PASS" in row for row in rows)
    assert "2 passed, 0 failed" in out
    payload = json.loads(json_path.read_text())
    assert payload["passed"] is True and payload["mode"] == "quick"
    assert [r["id"] for r in payload["records"]] == ["C1", "C6"]
    assert {
        "id",
        "statement",
        "source",
        "measured",
        "predicted",
        "interval",
        "passed",
        "details",
        "seconds",
    } <= set(payload["records"][0])
    report = report_path.read_text()
    assert "| C1 |" in report and "### C6: PASS" in report
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "claims.json",
        "report.md",
        "report_figures",
    ]
    figures = sorted(p.name for p in (tmp_path / "report_figures").iterdir())
    assert figures == ["C1.pdf", "C1.png", "C6.pdf", "C6.png"]  # every claim has one


def test_a_failing_claim_makes_the_exit_code_1(fake_registry, tmp_path, capsys):
    fake_registry(C1=_fake_module("C1"), C2=_fake_module("C2", passed=False))
    code = main_check(None, True, tmp_path / "out.json", None)
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL" in next(line for line in out.splitlines() if line.startswith("C2"))
    assert "1 passed, 1 failed (C2)" in out
    records = json.loads((tmp_path / "out.json").read_text())["records"]
    assert [r["passed"] for r in records] == [True, False]
    assert records[0]["details"]["value"] == "nan"  # JSON has no NaN


def test_a_crashing_check_is_a_failed_claim_not_a_crash(fake_registry, tmp_path):
    fake_registry(C1=_fake_module("C1", crash=True), C2=_fake_module("C2"))
    assert main_check(None, False, tmp_path / "out.json", tmp_path / "r.md") == 1
    first = json.loads((tmp_path / "out.json").read_text())["records"][0]
    assert first["measured"] == "error" and "RuntimeError: boom" in first["details"]["error"]
    assert "### C1: FAIL" in (tmp_path / "r.md").read_text()


def test_quick_flag_reaches_the_checks(fake_registry, tmp_path):
    fake_registry(C1=_fake_module("C1"))
    main_check(["C1"], False, tmp_path / "full.json", None)
    record_ = json.loads((tmp_path / "full.json").read_text())["records"][0]
    assert record_["details"]["quick"] is False


def test_unknown_claim_id_is_refused_naming_it(tmp_path, capsys):
    with pytest.raises(FedTheoryError, match=r"unknown claim id 'C99'.*known claims: C1"):
        main_check(["C1", "C99"], True, tmp_path / "out.json", None)
    assert not (tmp_path / "out.json").exists()
    assert "C1 " not in capsys.readouterr().out  # nothing ran


@pytest.mark.parametrize(
    "json_path, report_path, message",
    [
        ("out.txt", None, "--json must name a .json file"),
        (None, "report.txt", "--report must name a .md file"),
        ("missing/out.json", None, "folder"),
    ],
)
def test_bad_output_paths_are_refused_before_running(
    tmp_path, json_path, report_path, message, fake_registry
):
    ran = []
    module = _fake_module("C1")
    module.check = lambda quick=True: ran.append(1)
    fake_registry(C1=module)
    with pytest.raises(FedTheoryError, match=message):
        main_check(
            None, True, json_path and tmp_path / json_path, report_path and tmp_path / report_path
        )
    assert not ran


def test_record_renders_a_summary_and_markdown():
    rec = _fake_module("C7").check()
    assert rec.summary().startswith("C7 PASS: measured 1.00 [0.9, 1.1]; predicted 1")
    md = rec.to_markdown()
    assert md.startswith("### C7: PASS") and "| 1.00 | 1 (pass: +- 0.1) | [0.9, 1.1] |" in md
    assert json.loads(json.dumps(rec.to_dict()))["details"]["value"] == "nan"
    with pytest.raises(AttributeError):
        rec.passed = False  # frozen


def test_a_claim_runs_on_the_users_own_problem(tmp_path, capsys):
    """--problem runs C2's protocol and pass criterion on a problem of the user's (here the
    suite's breast-cancer problem by file), and refuses claims without such a protocol."""
    from fedtheory.cli import main
    from fedtheory.suite import resolve

    path = resolve("breast_cancer_dirichlet")
    out = tmp_path / "c2.json"
    assert main(["check", "--claim", "C2", "--problem", str(path), "--json", str(out)]) == 0
    rec = json.loads(out.read_text())["records"][0]
    assert rec["details"]["problems"] == ["breast_cancer_dirichlet"]
    assert main(["check", "--claim", "C7", "--problem", str(path)]) == 2
    err = capsys.readouterr().err
    assert "C7 have no protocol for a problem of your own" in err and "C2" in err


def test_the_claim_table_exports_as_csv_and_latex(tmp_path):
    import pandas as pd

    from fedtheory.cli import main

    csv, tex = tmp_path / "t.csv", tmp_path / "t.tex"
    assert main(["check", "--claim", "C3", "--quick", "--csv", str(csv), "--latex", str(tex)]) == 0
    table = pd.read_csv(csv)
    assert table["claim"].tolist() == ["C3"] and table["result"].tolist() == ["PASS"]
    text = tex.read_text()
    assert text.startswith(r"\begin{tabular}") and r"C3 & q " in text and r"\bottomrule" in text
    from fedtheory.claims import ClaimRecord, claim_table_latex

    rec = ClaimRecord("X", "s", "src", "a_b & 5% $x$", "p", "", True)
    assert r"a\_b \& 5\% \$x\$" in claim_table_latex([rec])


def test_check_leaves_no_hypothesis_folder_in_the_users_directory(tmp_path, monkeypatch):
    from fedtheory.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["check", "--claim", "C1", "--quick"]) == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["run", "demo", "check", "sweep", "plot"])
def test_every_subcommand_help_shows_its_defaults(command, capsys):
    from fedtheory.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "(default:" in capsys.readouterr().out


def test_check_backend_cupy_is_refused_in_one_line_without_a_gpu(tmp_path, capsys, monkeypatch):
    """--backend cupy on a machine without CuPy or a GPU: exit 2, one line, nothing written."""
    from fedtheory import _backend
    from fedtheory.cli import main

    def no_gpu(what):
        raise FedTheoryError(f'{what} needs CuPy and a CUDA GPU (pip install ".[gpu]"): none')

    monkeypatch.setattr(_backend, "require_gpu", no_gpu)
    out = tmp_path / "c3.json"
    assert main(["check", "--claim", "C3", "--quick", "--backend", "cupy", "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--backend cupy needs CuPy and a CUDA GPU" in err[0]
    assert not out.exists()


def test_check_backend_refuses_claims_without_a_gpu_protocol(capsys, monkeypatch):
    """C12 (exact rationals) and C18 (ball arithmetic) have no GPU protocol: refused by name,
    before anything runs, with the claims that have one."""
    from fedtheory import _backend
    from fedtheory.cli import main

    monkeypatch.setattr(_backend, "require_gpu", lambda what: None)
    assert (
        main(["check", "--claim", "C12", "--claim", "C3", "--claim", "C18", "--backend", "cupy"])
        == 2
    )
    err = capsys.readouterr().err
    assert "claim(s) C12, C18 have no GPU protocol" in err and "C3" in err
    assert not claims.runs_on_gpu(claims.load_check("C12"))
    assert claims.runs_on_gpu(claims.load_check("C3"))


def test_check_backend_reaches_every_problem_the_checks_build(tmp_path, monkeypatch):
    """--backend X moves every problem a check builds to X: here C3 and C5 (suite problems,
    Dirichlet-built problems and hand-built witnesses) with FederatedProblem.to recorded (a
    stand-in for the GPU that keeps the arrays where they are)."""
    from fedtheory import _backend
    from fedtheory.cli import main
    from fedtheory.problem import FederatedProblem

    moved: list[str] = []
    real_to = FederatedProblem.to
    monkeypatch.setattr(_backend, "require_gpu", lambda what: None)
    monkeypatch.setattr(
        FederatedProblem, "backend", property(lambda self: getattr(self, "_fake_backend", "numpy"))
    )

    def fake_to(self, backend):
        new = real_to(self, "numpy")
        new._fake_backend = backend
        moved.append(f"{self.name}->{backend}")
        return new

    monkeypatch.setattr(FederatedProblem, "to", fake_to)
    out = tmp_path / "gpu.json"
    assert (
        main(
            [
                "check",
                "--claim",
                "C3",
                "--claim",
                "C5",
                "--quick",
                "--backend",
                "cupy",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    payload = json.loads(out.read_text())
    assert payload["backend"] == "cupy"
    names = {m.split("->")[0] for m in moved if m.endswith("->cupy")}  # (->numpy: the host
    # reference solver's copy of a device problem)
    assert set(payload["records"][0]["details"]["problems"]) <= names  # C3's suite
    assert {"witness_1d_a", "witness_1d_b"} <= names  # C5's witnesses
    assert any("dirichlet" in n for n in names), names  # C5's sweep
