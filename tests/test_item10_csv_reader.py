"""The trace-CSV reader (issue 17 item 10): pandas' pyarrow engine, bit-for-bit exact.

The values are the hardest input for a decimal parser: random float64 bit patterns (every
exponent, denormals, the largest and smallest normals), written as ``Trace.to_csv`` writes
them (``repr``). pandas' default C engine reads about a third of them one ulp off on pandas
2.0.0 (measured; exact on 3.1); the reader must give the bits of Python's ``float`` on every
cell, on every pandas/pyarrow the project allows (``.ci/floors`` runs this test at the
floors). Speed is measured by ``benchmarks/bench_trace_csv.py``, not asserted here."""

from __future__ import annotations

import numpy as np
import pytest

from fedtheory.errors import FedTheoryError
from fedtheory.results import load
from fedtheory.trace import COLUMNS, Trace, _fmt, read_csv

ROWS = 6000  # x 17 float columns: ~100k doubles


def _hard_doubles(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bits = np.frombuffer(rng.bytes(8 * n), dtype=np.float64).copy()
    edges = np.array(
        [
            5e-324,
            -5e-324,
            2.2250738585072014e-308,
            2.225073858507201e-308,
            1.7976931348623157e308,
            -1.7976931348623157e308,
            0.0,
            -0.0,
            1.0,
            0.1,
            1 / 3,
            9007199254740993.0,
            123.16597182755741,
            9371099159.056545,
            2.2602467420398052e18,
            0.0006455714183435443,
            np.nan,
            np.inf,
            -np.inf,
        ]
    )
    bits[: edges.size] = edges
    return bits


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    nan = np.isnan(a)
    # NaN is written "nan": its payload is not kept (nor was it by the old reader)
    return bool(
        np.array_equal(nan, np.isnan(b))
        and np.array_equal(a[~nan].view(np.int64), b[~nan].view(np.int64))
    )


def test_random_doubles_round_trip_bit_for_bit(tmp_path):
    values = _hard_doubles(ROWS * (len(COLUMNS) - 1), seed=17).reshape(ROWS, -1)
    assert np.sum(np.abs(values) < 2.2250738585072014e-308) > 0  # denormals are in
    trace = Trace(
        rows=[
            {"round": i, **dict(zip(COLUMNS[1:], map(float, values[i]), strict=True))}
            for i in range(ROWS)
        ]
    )
    path = trace.to_csv(tmp_path / "t.csv")
    back = read_csv(path)
    assert list(back.columns) == list(COLUMNS)
    assert back["round"].dtype == np.int64 and list(back["round"]) == list(range(ROWS))
    for j, column in enumerate(COLUMNS[1:]):
        assert back[column].dtype == np.float64
        exact = [float(_fmt(v)) for v in values[:, j]]  # Python's parser
        assert _bits_equal(back[column].to_numpy(), exact), column
    # the whole-file path (results.load) gives the same bits
    loaded = load(path)
    for column in COLUMNS[1:]:
        assert _bits_equal(loaded[column].to_numpy(), back[column].to_numpy())


def test_a_column_of_integers_that_turns_float_after_the_first_block(tmp_path):
    """Arrow infers a column's type from its first block (1 MB); a float after 150k integer
    cells must still be read, exactly, as float64."""
    n = 150_000
    text = "round,bits\n" + "".join(f"{i},{i}\n" for i in range(n)) + f"{n},0.1\n"
    path = tmp_path / "t.csv"
    path.write_text(text)
    back = read_csv(path)
    assert back["bits"].dtype == np.float64
    assert back["bits"].iloc[-1] == 0.1 and back["bits"].iloc[n - 1] == n - 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty file"),
        ("round,a\n0,1\n1\n", "Expected 2 columns, got 1"),
        ("round,a\n0,1,2\n", "Expected 2 columns, got 3"),
        ("round,a\n0,x\n", "x"),
        ("round,a\n0,\n", "''"),  # an empty cell is not a number
        ("round,a\n0,NA\n", "NA"),  # nor are pandas' NA strings
        ("round,a,a\n0,1,2\n", "duplicated column names a"),
    ],
)
def test_a_malformed_file_is_a_value_error(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        read_csv(path)


def test_special_values_and_a_header_only_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("round,a\n0,nan\n1,inf\n2,-inf\n3,-0.0\n4,5e-324\n")
    back = read_csv(path)
    a = back["a"].to_numpy()
    assert np.isnan(a[0]) and a[1] == np.inf and a[2] == -np.inf
    assert a[3] == 0 and np.signbit(a[3]) and a[4] == 5e-324
    path.write_text("round,a\n")
    empty = read_csv(path)
    assert list(empty.columns) == ["round", "a"] and len(empty) == 0
    assert list(empty.dtypes) == [np.int64, np.float64]


def test_results_load_names_the_file_of_a_malformed_trace(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(",".join(COLUMNS) + "\n" + ",".join(["0"] * (len(COLUMNS) - 1)) + "\n")
    with pytest.raises(FedTheoryError, match=r"bad\.csv: not a readable CSV file"):
        load(path)
