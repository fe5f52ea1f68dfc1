"""Readers under fuzzing (issue 7.1): LIBSVM data files, problem TOML specs, sweep TOML specs.

Whatever the bytes, a reader either returns data that agree with the file or raises one
:class:`FedTheoryError` naming the file and the line (LIBSVM) or the file and the key (TOML).
Through the command line that is one line on stderr and exit code 2, never a traceback.
Inputs are bounded (a few KB, a handful of rows and clients) and every example has a deadline,
so a reader that hangs fails the test instead of stalling it.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import tempfile
import zlib
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedtheory import problem as problem_module
from fedtheory.cli import main
from fedtheory.data import read_libsvm
from fedtheory.errors import FedTheoryError
from fedtheory.problem import FederatedProblem, memory_estimate
from fedtheory.suite import read_spec
from fedtheory.sweep import expand, read_sweep

# FEDTHEORY_FUZZ_SCALE=20 multiplies the example budgets for a deeper local fuzzing run.
_SCALE = int(os.environ.get("FEDTHEORY_FUZZ_SCALE", "1"))
FAST = settings(
    deadline=timedelta(seconds=5),
    max_examples=150 * _SCALE,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
CLI = settings(FAST, deadline=timedelta(seconds=20), max_examples=40 * _SCALE)


def _one_line_error(rc, capsys, *needles):
    """The CLI either succeeded or printed exactly one line naming every needle (besides a
    sweep's progress bar, which ends its own line)."""
    err = capsys.readouterr().err
    err = "\n".join(line for line in err.strip().splitlines() if not line.startswith("sweep "))
    if rc == 0:
        return None
    assert rc == 2, (rc, err)
    assert err.startswith("fedtheory: error: ") and "\n" not in err, err
    assert "Traceback" not in err and "internal error" not in err, err
    for needle in needles:
        assert str(needle) in err, (needle, err)
    return err


# ============================================================================ LIBSVM

# Label, index and value tokens: valid ones and every kind of bad one the issue lists
# (malformed, bad or unsorted indices, huge or NaN values, foreign digits and encodings).
LABEL = st.sampled_from(
    [
        "+1",
        "-1",
        "1",
        "0",
        "2",
        "1.0",
        "-1.0",
        "+1e0",
        "nan",
        "inf",
        "abc",
        "-0",
        "1_0",
        "\u0661",
        "\ufeff+1",
    ]
)
INDEX = st.one_of(
    st.integers(-2, 12).map(str),
    st.sampled_from(
        [
            "99999999999999999999",
            "4611686018427387904",
            "2147483648",
            "2147483647",
            "1_0",
            "+3",
            "1.5",
            "0x1",
            "\u0661",
            "\uff11",
            "a",
            " ",
        ]
    ),
)
VALUE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "1e999",
            "-1e999",
            "nan",
            "NaN",
            "inf",
            "-Infinity",
            "abc",
            "1_000",
            "0x1p3",
            "1e-400",
            "\u0661",
            "1,5",
            "--1",
            "1e",
            ".",
        ]
    ),
)
FEATURE = st.one_of(
    st.tuples(INDEX, VALUE).map(":".join),
    st.sampled_from(["7", "1:", ":1", "1:2:3", "::", "1::2", "\x00"]),
)
SEP = st.sampled_from([" ", "\t", "  ", " \t", "\x0b", "\u00a0"])
MESSY_LINE = st.one_of(
    st.builds(
        lambda label, feats, sep, tail: sep.join([label, *feats]) + tail,
        LABEL,
        st.lists(FEATURE, max_size=5),
        SEP,
        st.sampled_from(["", " ", " # note", "#", " \r"]),
    ),
    st.sampled_from(["", "   ", "# comment", "#", "\r"]),
    st.text(max_size=25),
)


@st.composite
def clean_rows(draw, max_rows=8, max_index=6):
    """Valid rows: (label, sorted unique 1-based indices, finite values)."""
    labels = draw(st.sampled_from([("-1", "+1"), ("0", "1"), ("-1", "1")]))
    rows = []
    for _ in range(draw(st.integers(1, max_rows))):
        idx = sorted(draw(st.sets(st.integers(1, max_index), max_size=max_index)))
        vals = draw(
            st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=len(idx), max_size=len(idx))
        )
        rows.append((draw(st.sampled_from(labels)), idx, vals))
    return rows


def _render(rows, sep=" "):
    return [
        sep.join([label, *(f"{i}:{v!r}" for i, v in zip(idx, vals, strict=True))])
        for label, idx, vals in rows
    ]


@st.composite
def libsvm_bytes(draw):
    """The bytes of a LIBSVM file: clean rows with a few messy lines spliced in, or any
    text, or raw bytes; in UTF-8, Latin-1 or UTF-16, with LF or CRLF, maybe gzipped, maybe
    truncated or with a flipped byte."""
    kind = draw(st.sampled_from(["clean", "spliced", "spliced", "messy", "bytes"]))
    if kind == "bytes":
        body = draw(st.binary(max_size=400))
    else:
        lines = _render(draw(clean_rows())) if kind != "messy" else []
        if kind != "clean":
            for line in draw(st.lists(MESSY_LINE, min_size=1, max_size=6)):
                lines.insert(draw(st.integers(0, len(lines))), line)
        eol = draw(st.sampled_from(["\n", "\r\n"]))
        text = eol.join(lines) + draw(st.sampled_from([eol, ""]))
        encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "latin-1", "utf-16"]))
        body = text.encode(encoding, errors="replace")
    if draw(st.booleans()):
        body = gzip.compress(body, mtime=0)
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate" and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif damage == "flip" and body:
        k = draw(st.integers(0, len(body) - 1))
        body = body[:k] + bytes([body[k] ^ draw(st.integers(1, 255))]) + body[k + 1 :]
    return body


def _lines_of(path: Path) -> list[bytes]:
    """The lines of a plain or gzip file, as far as a damaged gzip stream can be read."""
    if path.read_bytes()[:2] != b"\x1f\x8b":
        return path.read_bytes().split(b"\n")
    lines = []
    with gzip.open(path, "rb") as fh:
        try:
            lines.extend(line.rstrip(b"\n") for line in fh)
        except (OSError, EOFError, zlib.error):
            pass
    return lines


def _check_libsvm_error(path: Path, exc: FedTheoryError, kwargs: dict) -> None:
    """The message names the file, is one line, and the line it names is bad on its own."""
    msg = str(exc)
    assert msg.startswith(str(path)) and "\n" not in msg, msg
    named = re.match(re.escape(str(path)) + r", line (\d+): ", msg)
    if named is None or "both occur" in msg:  # file-level error, or a clash of label sets
        return
    line = _lines_of(path)[int(named.group(1)) - 1]
    alone = path.with_name("alone_" + path.name)  # after a good line: as line 2
    alone.write_bytes(b"+1\n" + line + b"\n")
    with pytest.raises(FedTheoryError, match=re.escape(f"{alone}, line 2: ")):
        read_libsvm(alone, n_features=kwargs.get("n_features"))


@FAST
@given(
    body=libsvm_bytes(),
    n_features=st.sampled_from([None, None, 4, 12]),
    rows=st.sampled_from([None, None, 1, 3]),
)
def test_fuzzed_libsvm_is_read_or_refused_naming_file_and_line(body, n_features, rows):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.svm"
        path.write_bytes(body)
        kwargs = {"n_features": n_features, "rows": rows}
        try:
            ds = read_libsvm(path, **kwargs)
        except FedTheoryError as exc:
            _check_libsvm_error(path, exc, kwargs)
            return
        assert set(np.unique(ds.y)) <= {-1.0, 1.0}
        assert np.isfinite(ds.X.data).all()
        assert ds.n >= 1 and (rows is None or ds.n == rows)
        assert n_features is None or ds.d == n_features


@FAST
@given(
    rows=clean_rows(),
    sep=SEP,
    eol=st.sampled_from(["\n", "\r\n"]),
    compress=st.booleans(),
    bom=st.booleans(),
)
def test_clean_libsvm_reads_back_every_value_exactly(rows, sep, eol, compress, bom):
    text = ("\ufeff" if bom else "") + eol.join(_render(rows, sep)) + eol
    body = text.encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.svm"
        path.write_bytes(gzip.compress(body) if compress else body)
        ds = read_libsvm(path, n_features=6)
    X = ds.X.toarray()
    for r, (label, idx, vals) in enumerate(rows):
        expect = np.zeros(6)
        expect[np.asarray(idx, dtype=int) - 1] = vals
        np.testing.assert_array_equal(X[r], expect)
        assert ds.y[r] == (1.0 if float(label) > 0 else -1.0)


@pytest.mark.parametrize(
    "line, pattern",
    [
        ("+1 1_0:1", "feature index '1_0' is not a valid"),
        ("+1 \u0661:1", "feature index '\u0661' is not a valid"),
        ("+1 1:1_000", "feature value '1_000' is not a valid"),
        ("+1 1:\u0661", "feature value '\u0661' is not a valid"),
        ("+1 4611686018427387904:1", "feature index 4611686018427387904 exceeds 2147483647"),
    ],
)
def test_libsvm_accepts_only_ascii_c_numbers_and_int_indices(tmp_path, line, pattern):
    """Python's int() and float() accept '1_0' and non-ASCII digits; LIBSVM (C strtol/strtod)
    does not, and a 2^62 column index is a corrupt file, not a 2^62-column matrix."""
    path = tmp_path / "f.svm"
    path.write_text(f"-1 1:1\n{line}\n", encoding="utf-8")
    with pytest.raises(FedTheoryError, match=pattern) as info:
        read_libsvm(path)
    assert f"{path}, line 2:" in str(info.value)


def test_libsvm_refuses_a_damaged_gzip_stream(tmp_path):
    """A gzip header followed by a corrupt deflate stream raises zlib.error inside gzip."""
    good = bytearray(gzip.compress(b"+1 1:1 2:0.5\n-1 3:2\n" * 200, mtime=0))
    good[12:20] = b"\xff" * 8
    path = tmp_path / "bad.svm.gz"
    path.write_bytes(bytes(good))
    with pytest.raises(FedTheoryError, match="cannot be read as plain or gzip text") as info:
        read_libsvm(path)
    assert str(info.value).startswith(str(path))


def test_libsvm_with_a_utf8_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "bom.svm"
    path.write_bytes(b"\xef\xbb\xbf+1 1:1\n-1 2:3\n")
    assert read_libsvm(path).y.tolist() == [1.0, -1.0]


_LIBSVM_SPEC = """name = "fuzz"
[data]
source = "libsvm"
path = "data.svm"
[partition]
kind = "iid"
clients = 2
seed = 0
[objective]
kind = "logistic"
lam = 0.1
"""


@CLI
@given(body=libsvm_bytes())
def test_fuzzed_libsvm_through_the_cli_is_one_line_and_exit_2(body, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "data.svm").write_bytes(body)
        spec = Path(tmp) / "p.toml"
        spec.write_text(_LIBSVM_SPEC)
        rc = main(["run", str(spec), "--method", "newton", "--rounds", "1"])
        err = _one_line_error(rc, capsys)
        if err is not None:  # a run-time error (e.g. the reference solve) names the problem
            assert str(spec) in err or "(fuzz)" in err, err
            assert ", line " not in err or "data.svm, line " in err, err


def test_a_huge_feature_index_is_refused_before_anything_is_allocated(tmp_path, capsys):
    (tmp_path / "data.svm").write_text("+1 1:1\n-1 2:1\n+1 2000000:1\n-1 1:2\n")
    spec = tmp_path / "p.toml"
    spec.write_text(_LIBSVM_SPEC)
    rc = main(["run", str(spec), "--method", "newton", "--rounds", "1"])
    _one_line_error(rc, capsys, spec, "d = 2000000", "GiB")


# (issue 17 item 7) The guard counts what a run allocates and compares with available memory.


def test_the_memory_estimate_counts_data_temporaries_and_two_hessian_stacks():
    N, n_max, d = 3, 50, 7
    data, hess = 8.0 * N * n_max * d, 8.0 * N * d * d
    assert memory_estimate(N, n_max, d) == 2 * data + 16.0 * N * n_max + 2 * hess
    assert memory_estimate(N, n_max, d, data_bytes=1200) == 2 * 1200 + 16.0 * N * n_max + 2 * hess


def _small_clients(N=2, n=40, d=20):
    rng = np.random.default_rng(0)
    return (
        [rng.standard_normal((n, d)) for _ in range(N)],
        [np.where(rng.random(n) < 0.5, 1.0, -1.0) for _ in range(N)],
    )


@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_the_memory_guard_compares_with_available_memory_not_the_total(monkeypatch, storage):
    Xs, ys = _small_clients()
    need = memory_estimate(2, 40, 20, None if storage == "dense" else 12 * 2 * 40 * 20)
    monkeypatch.setattr(problem_module, "_physical_memory", lambda: 2**40)  # 1 TiB total
    monkeypatch.setattr(problem_module, "available_memory", lambda: need * 0.9)
    with pytest.raises(FedTheoryError, match=r"GiB of memory available on this machine"):
        FederatedProblem.from_clients(Xs, ys, objective="logistic", lam=1e-3, storage=storage)
    monkeypatch.setattr(problem_module, "available_memory", lambda: need * 1.1)
    FederatedProblem.from_clients(Xs, ys, objective="logistic", lam=1e-3, storage=storage)


def test_the_memory_guard_falls_back_to_the_total_where_availability_is_unknown(monkeypatch):
    Xs, ys = _small_clients()
    monkeypatch.setattr(problem_module, "available_memory", lambda: None)
    monkeypatch.setattr(problem_module, "_physical_memory", lambda: 1000)
    with pytest.raises(FedTheoryError, match=r"memory total on this machine"):
        FederatedProblem.from_clients(Xs, ys, objective="logistic", lam=1e-3, storage="dense")
    monkeypatch.setattr(problem_module, "_physical_memory", lambda: None)  # no check at all
    FederatedProblem.from_clients(Xs, ys, objective="logistic", lam=1e-3, storage="dense")


# ============================================================================ TOML writing


def _toml_value(v) -> str:
    """A TOML literal for the values the strategies produce."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return (
            "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
        )
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    assert isinstance(v, dict)
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


def _toml(spec: dict) -> str:
    """Top-level scalars first, then [tables] and [[arrays of tables]]."""
    head, tail = [], []
    for key, v in spec.items():
        if isinstance(v, dict) and key in ("data", "partition", "objective"):
            tail.append(f"[{key}]")
            tail += [f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()]
        elif key == "methods" and isinstance(v, list) and all(isinstance(m, dict) for m in v):
            for m in v:
                tail.append("[[methods]]")
                tail += [f"{json.dumps(k)} = {_toml_value(x)}" for k, x in m.items()]
        else:
            head.append(f"{json.dumps(key)} = {_toml_value(v)}")
    return "\n".join(head + tail) + "\n"


# Replacement values: every TOML type, with edge cases, bounded so nothing valid runs long.
SCALARS = st.one_of(
    st.integers(-2, 4),
    st.sampled_from(
        [
            2**63 - 1,
            -(2**63),
            0.0,
            -0.5,
            0.5,
            1.0,
            2.5,
            1e300,
            -1e-300,
            math.nan,
            math.inf,
            -math.inf,
            True,
            False,
            date(1979, 5, 27),
        ]
    ),
    st.sampled_from(
        [
            "",
            "all",
            "iid",
            "dirichlet",
            "ridge",
            "logistic",
            "libsvm",
            "exact",
            "fedpm",
            "../../etc/passwd",
            "data.svm",
            "nope",
            "a\x00b",
            "\u00e9",
        ]
    ),
    st.text(max_size=8),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.sampled_from(["a", "count", "start", "name", "b"]), SCALARS, max_size=2),
)

# ============================================================================ problem specs

_BASES = {
    "libsvm": {
        "name": "fuzz",
        "description": "x",
        "data": {
            "source": "libsvm",
            "path": "data.svm",
            "rows": 12,
            "intercept": True,
            "n_features": 3,
            "task": "classification",
        },
        "partition": {
            "kind": "dirichlet",
            "clients": 2,
            "seed": 0,
            "alpha": 1.0,
            "min_size": 1,
            "max_tries": 20,
            "bins": 2,
        },
        "objective": {"kind": "logistic", "lam": 0.1, "weighting": "samples"},
    },
    "quadratic": {
        "name": "fuzzq",
        "data": {
            "source": "heterogeneous_quadratic",
            "clients": 2,
            "d": 2,
            "n_per_client": 3,
            "mu": 0.5,
            "L": 2.0,
            "spread": 1.0,
            "noise": 0.1,
            "seed": 0,
        },
        "objective": {"kind": "ridge", "lam": 0.0},
    },
    "synthetic": {
        "name": "fuzzs",
        "data": {
            "source": "fedprox_synthetic",
            "alpha": 1.0,
            "beta": 1.0,
            "clients": 2,
            "d": 3,
            "sizes": "equal",
            "mean_size": 4,
            "seed": 0,
        },
        "objective": {"kind": "logistic", "lam": 0.1},
    },
}
_LIBSVM_ROWS = "".join(f"{(-1) ** j} 1:{j / 7:.3f} 2:{(j * j) % 5 - 2} 3:1\n" for j in range(12))


def _mutate(draw, table: dict, new_keys: list[str]) -> set:
    """Replace (most often), delete or add one key of ``table`` in place; returns the keys
    involved, which an error message may name."""
    op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
    key = draw(st.sampled_from(new_keys if op == "add" else sorted(table)))
    if op == "delete":
        del table[key]
    else:
        table[key] = draw(VALUES)
    return {key, *table}


@st.composite
def mutated_problem_spec(draw):
    """A valid spec with one key replaced, deleted or added; returns the spec and the keys
    an error may name: the one touched, or a key beside it whose meaning it changed."""
    base = json.loads(json.dumps(_BASES[draw(st.sampled_from(sorted(_BASES)))]))
    tables = [t for t in ("data", "partition", "objective") if t in base]
    where = draw(st.sampled_from([None, *tables]))
    table = base if where is None else base[where]
    return base, _mutate(draw, table, ["zzz", "size", "path", "partition", "lam", "rows"])


def _write_problem(folder: Path, spec: dict) -> Path:
    (folder / "data.svm").write_text(_LIBSVM_ROWS)
    path = folder / "problem.toml"
    path.write_text(_toml(spec), encoding="utf-8")
    return path


@FAST
@given(spec_key=mutated_problem_spec())
def test_fuzzed_problem_spec_is_read_or_refused_naming_file_and_key(spec_key):
    spec, keys = spec_key
    with tempfile.TemporaryDirectory() as tmp:
        path = _write_problem(Path(tmp), spec)
        try:
            read_spec(path)
        except FedTheoryError as exc:
            msg = str(exc)
            assert msg.startswith(str(path)) and "\n" not in msg, msg
            assert any(k in msg for k in keys) or "table is missing" in msg, (keys, msg)


@CLI
@given(spec_key=mutated_problem_spec())
def test_fuzzed_problem_spec_through_the_cli_is_one_line_and_exit_2(spec_key, capsys):
    spec, keys = spec_key
    with tempfile.TemporaryDirectory() as tmp:
        path = _write_problem(Path(tmp), spec)
        rc = main(["run", str(path), "--method", "newton", "--rounds", "1"])
        err = _one_line_error(rc, capsys)
        if err is not None:  # a run-time error (e.g. the reference solve) names the problem
            name = spec.get("name")
            assert str(path) in err or f"{name}: " in err or f"({name})" in err, err


@FAST
@given(body=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_random_bytes_as_a_spec_are_refused_naming_the_file(body):
    with tempfile.TemporaryDirectory() as tmp:
        for reader in (read_spec, read_sweep):
            path = Path(tmp) / "spec.toml"
            path.write_bytes(body)
            try:
                reader(path)
            except FedTheoryError as exc:
                assert str(exc).startswith(str(path)) and "\n" not in str(exc), str(exc)


# ============================================================================ sweep specs

_SWEEP = {
    "name": "fz",
    "description": "x",
    "problems": ["tiny.toml"],
    "rounds": 2,
    "seeds": {"count": 1, "start": 0},
    "participation": ["all"],
    "drift_metrics": False,
    "backend": "numpy",
    "methods": [
        {"name": "fedpm", "params": {"K": 1, "eta": 1.0}, "oracle": {"name": "minibatch", "b": 2}}
    ],
}
_TINY_PROBLEM = _toml(_BASES["quadratic"])


@st.composite
def mutated_sweep_spec(draw):
    spec = json.loads(json.dumps(_SWEEP))
    method = spec["methods"][0]
    where = draw(st.sampled_from(["top", "method", "params", "oracle"]))
    table = {"top": spec, "method": method, "params": method["params"], "oracle": method["oracle"]}[
        where
    ]
    return spec, _mutate(draw, table, ["zzz", "rounds", "seed", "out", "delta"])


def _write_sweep(folder: Path, spec: dict) -> Path:
    (folder / "tiny.toml").write_text(_TINY_PROBLEM)
    path = folder / "sweep.toml"
    path.write_text(_toml(spec), encoding="utf-8")
    return path


@FAST
@given(spec_key=mutated_sweep_spec())
def test_fuzzed_sweep_spec_is_read_or_refused_naming_file_and_key(spec_key):
    spec, keys = spec_key
    with tempfile.TemporaryDirectory() as tmp:
        path = _write_sweep(Path(tmp), spec)
        try:
            expand(read_sweep(path))
        except FedTheoryError as exc:
            msg = str(exc)
            assert msg.startswith(str(path)) and "\n" not in msg, msg
            assert any(k in msg for k in keys), (keys, msg)


@CLI
@given(spec_key=mutated_sweep_spec())
def test_fuzzed_sweep_spec_through_the_cli_never_shows_a_traceback(spec_key, capsys):
    spec, _ = spec_key
    with tempfile.TemporaryDirectory() as tmp:
        path = _write_sweep(Path(tmp), spec)
        out = Path(tmp) / "out"
        rc = main(["sweep", str(path), "--out", str(out)])
        if rc == 1:  # some runs failed: each one recorded in errors/, the rest have a file
            captured = capsys.readouterr()
            assert "failed" in captured.out and "Traceback" not in captured.err
            assert any((out / "errors").glob("*.json"))
            return
        if _one_line_error(rc, capsys, path) is None:
            assert any((out / "runs").glob("*.parquet"))


# ============================================================================ the CLI's last line


def test_a_negative_seed_is_one_line_not_a_numpy_traceback(capsys):
    rc = main(["run", "het_quadratic", "--method", "newton", "--rounds", "1", "--seed", "-1"])
    _one_line_error(rc, capsys, "--seed must be an integer >= 0, got -1")


def test_any_other_exception_is_one_line_unless_a_traceback_is_asked_for(monkeypatch, capsys):
    import fedtheory.cli

    def broken(args):
        raise RuntimeError("deep inside\na library")

    monkeypatch.setattr(fedtheory.cli, "cmd_problems", broken)
    monkeypatch.delenv("FEDTHEORY_TRACEBACK", raising=False)
    assert main(["problems"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "fedtheory: error: internal error RuntimeError: deep inside a library (a bug: "
        "please report it; FEDTHEORY_TRACEBACK=1 shows the traceback)"
    )
    monkeypatch.setenv("FEDTHEORY_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="deep inside"):
        main(["problems"])
