"""The command line: demo, problems, run; and every bad input of issue 2 as one line + exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedtheory import COLUMNS, FedTheoryError, make_method, run
from fedtheory.cli import main
from fedtheory.problem import FederatedProblem
from fedtheory.trace import TIMING


def _libsvm(path, rows):
    path.write_text("".join(rows))
    return path


def _toml(path, data, partition='kind = "contiguous"\nclients = 4', objective=None):
    objective = objective or 'kind = "logistic"\nlam = 0.01'
    path.write_text(
        f'name = "t"\n[data]\n{data}\n[partition]\n{partition}\n[objective]\n{objective}\n'
    )
    return path


@pytest.fixture
def small(tmp_path):
    """12 rows, d = 5, 4 clients of 3 rows: every client Hessian is singular without lam."""
    rng = np.random.default_rng(0)
    lines = []
    for j in range(12):
        feats = " ".join(f"{k + 1}:{rng.normal():.6f}" for k in range(5))
        lines.append(f"{1 if j % 2 else -1} {feats}\n")
    data = _libsvm(tmp_path / "small.svm", lines)
    return tmp_path, data


def _fails(argv, capsys, *needles, out=None):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("fedtheory: error: "), err
    for needle in needles:
        assert needle in err, err
    if out is not None:
        assert not out.exists() and not out.with_suffix(".json").exists()


def test_demo_prints_the_three_methods(capsys):
    assert main(["demo", "--rounds", "8"]) == 0
    out = capsys.readouterr().out
    for name in ("FedPM(K=1)", "SOPM(K=1)", "Newton"):
        assert name in out
    last = [line.split() for line in out.splitlines() if line.strip().startswith("8 ")][0]
    fedpm, sopm = float(last[1]), float(last[2])
    assert fedpm < 1e-9 and sopm > 1e-2


def test_problems_lists_the_suite(capsys):
    assert main(["problems"]) == 0
    out = capsys.readouterr().out
    for name in (
        "a9a_fednl",
        "breast_cancer_dirichlet",
        "diabetes_ridge_dirichlet",
        "fedprox_synthetic_1_1",
        "het_quadratic",
    ):
        assert name in out


def test_run_writes_the_spec_columns_and_metadata(tmp_path, capsys):
    out = tmp_path / "r.csv"
    argv = [
        "run",
        "het_quadratic",
        "--method",
        "fedpm",
        "--param",
        "K=2",
        "--param",
        "eta=0.5",
        "--rounds",
        "3",
        "--participation",
        "5",
        "--seed",
        "4",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    header = out.read_text().splitlines()[0].split(",")
    assert header == list(COLUMNS)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["params"] == {
        "K": 2,
        "eta": 0.5,
        "delta": 0.0,
        "mixing_preconditioner": "last",
        "server_memory": False,
        "preconditioner": "hessian",
    }
    assert meta["seed"] == 4 and meta["participation"] == 5 and meta["status"] == "completed"


def test_run_on_a_user_libsvm_file(small, capsys):
    tmp, data = small
    spec = _toml(tmp / "p.toml", f'source = "libsvm"\npath = "{data.name}"')
    assert main(["run", str(spec), "--method", "newton", "--rounds", "6"]) == 0
    assert "status completed" in capsys.readouterr().out


# ---- bad input: one line naming the value, exit code 2, no output file ----------------------
def test_non_binary_labels(small, capsys):
    tmp, _ = small
    bad = _libsvm(tmp / "bad.svm", ["1 1:0.5\n", "2 1:0.1\n"])
    spec = _toml(
        tmp / "p.toml",
        f'source = "libsvm"\npath = "{bad.name}"',
        partition='kind = "contiguous"\nclients = 1',
    )
    _fails(
        ["run", str(spec), "--method", "fedpm", "--out", str(tmp / "o.csv")],
        capsys,
        "bad.svm",
        "line 2",
        "2",
        out=tmp / "o.csv",
    )


def test_nan_in_data(small, capsys):
    tmp, _ = small
    bad = _libsvm(tmp / "nan.svm", ["1 1:0.5\n", "-1 1:nan\n"])
    spec = _toml(
        tmp / "p.toml",
        f'source = "libsvm"\npath = "{bad.name}"',
        partition='kind = "contiguous"\nclients = 1',
    )
    _fails(["run", str(spec), "--method", "fedpm"], capsys, "nan.svm", "line 2")
    with pytest.raises(FedTheoryError, match="NaN or inf"):
        FederatedProblem.from_clients(
            [np.array([[np.inf]])], [np.ones(1)], objective="logistic", lam=0.1
        )


def test_negative_lam(small, capsys):
    tmp, data = small
    spec = _toml(
        tmp / "p.toml",
        f'source = "libsvm"\npath = "{data.name}"',
        objective='kind = "logistic"\nlam = -0.5',
    )
    _fails(["run", str(spec), "--method", "fedpm"], capsys, "lam", "-0.5")


def test_failed_cholesky_names_the_client_and_suggests_a_fix(small, capsys):
    tmp, data = small
    spec = _toml(
        tmp / "p.toml",
        f'source = "libsvm"\npath = "{data.name}"',
        objective='kind = "ridge"\nlam = 0.0',
    )
    out = tmp / "o.csv"
    _fails(
        ["run", str(spec), "--method", "fedpm", "--out", str(out)],
        capsys,
        "client 0",
        "not positive definite",
        "lam > 0 or delta > 0",
        out=out,
    )
    # delta > 0 is the documented way out
    assert (
        main(["run", str(spec), "--method", "fedpm", "--param", "delta=0.1", "--rounds", "2"]) == 0
    )


@pytest.mark.parametrize(
    "param,needle",
    [
        ("K=0", "K must be an integer in 1..100,000"),
        ("eta=0", "eta must be a finite number > 0, got 0.0"),
        ("eta=-1", "got -1.0"),
        ("K=two", "'two'"),
        ("mixing_preconditioner=mid", "'mid'"),
        ("gamma=1", "unknown parameter 'gamma'"),
    ],
)
def test_bad_method_parameters(param, needle, capsys, tmp_path):
    out = tmp_path / "o.csv"
    _fails(
        ["run", "het_quadratic", "--method", "fedpm", "--param", param, "--out", str(out)],
        capsys,
        needle,
        out=out,
    )


@pytest.mark.parametrize("S", ["0", "21", "-3"])
def test_participation_outside_1_to_N(S, capsys):
    _fails(
        ["run", "het_quadratic", "--method", "fedpm", "--participation", S],
        capsys,
        "participation S must be an integer in 1..20",
        S,
    )


def test_more_clients_than_samples(small, capsys):
    tmp, data = small
    spec = _toml(
        tmp / "p.toml",
        f'source = "libsvm"\npath = "{data.name}"',
        partition='kind = "contiguous"\nclients = 100',
    )
    _fails(["run", str(spec), "--method", "fedpm"], capsys, "100", "12")


def test_empty_client():
    with pytest.raises(FedTheoryError, match="client 1 is empty"):
        FederatedProblem.from_clients(
            [np.ones((2, 2)), np.ones((0, 2))], [np.ones(2), np.ones(0)], objective="ridge", lam=0.1
        )


def test_unknown_method_and_problem(capsys):
    _fails(["run", "het_quadratic", "--method", "adam"], capsys, "unknown method 'adam'", "fedpm")
    _fails(["run", "no_such_problem", "--method", "fedpm"], capsys, "no_such_problem", "a9a_fednl")


def test_malformed_toml(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[data\nsource = 1\n')
    _fails(["run", str(bad), "--method", "fedpm"], capsys, "bad.toml", "malformed TOML")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text(
        '[data]\nsource = "a9a"\nsize = 3\n[partition]\nkind = "iid"\n'
        'clients = 2\n[objective]\nkind = "logistic"\n'
    )
    _fails(["run", str(unknown), "--method", "fedpm"], capsys, "unknown key 'size'")


def test_out_must_be_a_csv_in_an_existing_folder(tmp_path, capsys):
    _fails(
        ["run", "het_quadratic", "--method", "fedpm", "--out", str(tmp_path / "x.txt")],
        capsys,
        "x.txt",
    )
    _fails(
        ["run", "het_quadratic", "--method", "fedpm", "--out", str(tmp_path / "missing" / "x.csv")],
        capsys,
        "does not exist",
    )


def test_api_and_cli_agree(capsys, tmp_path):
    from fedtheory.suite import load_problem

    out = tmp_path / "o.csv"
    assert (
        main(["run", "het_quadratic", "--method", "sopm", "--rounds", "3", "--out", str(out)]) == 0
    )
    trace = run(load_problem("het_quadratic"), make_method("sopm"), 3)
    import pandas as pd

    cli = pd.read_csv(out).drop(columns=list(TIMING))
    api = trace.to_frame().drop(columns=list(TIMING))
    # equal to the last bits on one BLAS thread; a many-threaded BLAS may reorder reductions
    pd.testing.assert_frame_equal(cli, api, check_dtype=False, rtol=1e-12, atol=1e-15)
