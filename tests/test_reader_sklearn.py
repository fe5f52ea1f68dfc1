"""The LIBSVM reader on top of scikit-learn (issue 17 item 7, issue 11 item 14).

``read_libsvm`` parses with scikit-learn's ``load_svmlight_file`` and keeps LIBSVM's rules on
top. These tests pin (1) that valid files read back exactly as an independent, plain-Python
parse written here reads them, at every chunk size of the stream handed to scikit-learn; (2)
the arrays are bit-identical to the pre-switch hand-written parser on the real data sets
(SHA-256 of its output, recorded before the switch); (3) each rule scikit-learn alone would
not enforce is enforced, and what scikit-learn alone would refuse but LIBSVM reads is read.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import re
import tempfile
from datetime import timedelta
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fedtheory.data as data_module
from fedtheory.data import read_libsvm
from fedtheory.errors import FedTheoryError

SETTINGS = settings(
    deadline=timedelta(seconds=5), max_examples=150, suppress_health_check=[HealthCheck.too_slow]
)


# ============================================================================ the reference


def reference_parse(
    body: bytes,
    *,
    zero_based=False,
    rows=None,
    n_features=None,
    intercept=False,
    task="classification",
):
    """A straightforward parse of a VALID LIBSVM file, written without the package's code:
    the CSR arrays (data, indices, indptr), the shape and the labels it should give."""
    text = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
    lines = text.decode("utf-8").removeprefix("\ufeff").split("\n")
    data, indices, indptr, labels = [], [], [0], []
    for line in lines:
        tokens = line.split("#")[0].split()
        if not tokens:
            continue
        if rows is not None and len(labels) == rows:
            break
        label = float(tokens[0])
        labels.append(-1.0 if task == "classification" and label == 0 else label)
        for tok in tokens[1:]:
            i, v = tok.split(":")
            indices.append(int(i) - (0 if zero_based else 1))
            data.append(float(v))
        indptr.append(len(data))
    d = n_features if n_features is not None else max(indices, default=-1) + 1
    if intercept:  # a column of ones after the d feature columns, at the end of every row
        rows_out = [
            (data[a:b] + [1.0], indices[a:b] + [d])
            for a, b in zip(indptr, indptr[1:], strict=False)
        ]
        data = [v for r in rows_out for v in r[0]]
        indices = [i for r in rows_out for i in r[1]]
        indptr = [0, *np.cumsum([len(r[0]) for r in rows_out]).tolist()]
        d += 1
    return (
        np.array(data, dtype=np.float64),
        np.array(indices),
        np.array(indptr),
        (len(labels), d),
        np.array(labels, dtype=np.float64),
    )


VALUE_FORMATS = [
    repr,
    lambda v: f"{v:.17g}",
    lambda v: f"{v:g}",
    lambda v: f"{v:+.16e}",
    lambda v: str(int(v)) if float(v).is_integer() else repr(v),
]
SEPARATORS = [" ", "\t", "  ", " \t", "\x0b", "\u00a0", "\x1c"]  # the last two: text only


@st.composite
def valid_files(draw):
    """The bytes of a valid LIBSVM file and the options to read it with."""
    task = draw(st.sampled_from(["classification", "regression"]))
    zero_based = draw(st.booleans())
    first = 0 if zero_based else 1
    label_set = draw(st.sampled_from([("-1", "+1"), ("0", "1"), ("-1.0", "1"), ("-1", "1e0")]))
    n = draw(st.integers(1, 12))
    lines = []
    for _ in range(n):
        if task == "classification":
            label = draw(st.sampled_from(label_set))
        else:
            label = repr(draw(st.floats(-1e3, 1e3, allow_nan=False)))
        idx = sorted(draw(st.sets(st.integers(first, 9), max_size=6)))
        vals = draw(
            st.lists(
                st.one_of(
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from([0.0, -0.0, 1.0, 0.5, 1e-300]),
                ),
                min_size=len(idx),
                max_size=len(idx),
            )
        )
        fmt = draw(st.sampled_from(VALUE_FORMATS))
        sep = draw(st.sampled_from(SEPARATORS))
        tokens = [label, *(f"{i}:{fmt(v)}" for i, v in zip(idx, vals, strict=True))]
        lines.append(sep.join(tokens) + draw(st.sampled_from(["", " ", " # note", "#é qid_"])))
        if draw(st.integers(0, 4)) == 0:
            lines.append(draw(st.sampled_from(["", "# comment", "   ", "#", "\r"])))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    text = (
        draw(st.sampled_from(["", "\ufeff"])) + eol.join(lines) + draw(st.sampled_from([eol, ""]))
    )
    body = text.encode("utf-8")
    if draw(st.booleans()):
        body = gzip.compress(body, mtime=0)
    kwargs = {
        "task": task,
        "zero_based": zero_based,
        "intercept": draw(st.booleans()),
        "rows": draw(st.sampled_from([None, None, 1, n])),
        "n_features": draw(st.sampled_from([None, None, 10 - first + 2])),
    }
    return body, kwargs


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.shape == b.shape
        and np.asarray(a, np.float64).tobytes() == np.asarray(b, np.float64).tobytes()
    )


@SETTINGS
@given(case=valid_files(), chunk=st.sampled_from([1, 7, 64, 1 << 20]))
def test_valid_files_read_back_exactly_as_a_plain_python_parse(case, chunk):
    """Bit for bit: values (explicit zeros and -0.0 kept), columns, rows, labels, shape; the
    stream handed to scikit-learn is cut into chunks of ``chunk`` bytes (1 MiB by default), so
    lines split across chunks are covered too."""
    body, kwargs = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.svm"
        path.write_bytes(body)
        with mock.patch.object(data_module, "_CHUNK", chunk):
            ds = read_libsvm(path, **kwargs)
    data, indices, indptr, shape, y = reference_parse(body, **kwargs)
    assert ds.X.format == "csr" and ds.X.dtype == np.float64 and ds.X.shape == shape
    assert _same_bits(ds.X.data, data)
    np.testing.assert_array_equal(ds.X.indices, indices)
    np.testing.assert_array_equal(ds.X.indptr, indptr)
    assert _same_bits(ds.y, y) and ds.y.dtype == np.float64


# ============================================================================ the real data


def _digest(ds) -> str:
    h = hashlib.sha256(repr((ds.X.shape, ds.X.format)).encode())
    for a in (ds.X.data, ds.X.indices, ds.X.indptr, ds.y):
        h.update(str(a.dtype).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


PACKAGE = Path(data_module.__file__).parent / "datasets"
SHARED = Path(os.environ.get("FEDTHEORY_DATASETS", "/work/shared/datasets"))

# SHA-256 of (shape, format, then dtype + bytes of X.data, X.indices, X.indptr, y) as the
# pre-switch parser (benchmarks/bench_reader.py: old_read_libsvm) read these files.
PRE_SWITCH = [
    (
        PACKAGE / "a9a.txt.gz",
        {"n_features": 123},
        "0f3a9123d887be1e1e5b65ec2a4d28038f9c4f9921a53232af4dbb55dca486d4",
    ),
    (
        PACKAGE / "a9a.txt.gz",
        {"rows": 32560, "n_features": 123},
        "ecce826ef3ea551aa672317247b50b3b49219fe42a561805a78fc220f0916569",
    ),
    (
        PACKAGE / "phishing.txt.gz",
        {"n_features": 68},
        "c18ee2db71eff96aa0815ec16fdb5d6dcb5a58c85b0fc3a51026cd5904623ce0",
    ),
    (
        SHARED / "w8a.txt.gz",
        {"n_features": 300},
        "f5f068fa33516499cfe59e3ca033cddfa8cb420c2caa780b8aeae8f1f6b844eb",
    ),
    (
        SHARED / "w8a.txt.gz",
        {"rows": 49700, "n_features": 300},
        "bae9ec2bfc5acc6a4826eddb3b0d0d865ed3cd93b44ea5e4a5dbdc838c1386a6",
    ),
]


@pytest.mark.parametrize(
    "path, kwargs, sha",
    PRE_SWITCH,
    ids=[f"{p.name}-{k.get('rows', 'all')}" for p, k, _ in PRE_SWITCH],
)
def test_real_data_are_bit_identical_to_the_pre_switch_parser(path, kwargs, sha):
    if not path.is_file():
        pytest.skip(f"{path} is not here (set FEDTHEORY_DATASETS to its folder)")
    ds = read_libsvm(path, **kwargs)
    assert ds.X.dtype == np.float64 and ds.y.dtype == np.float64
    assert _digest(ds) == sha


def test_shipped_data_agree_with_scikit_learn_alone():
    from sklearn.datasets import load_svmlight_file

    for name, d in (("a9a.txt.gz", 123), ("phishing.txt.gz", 68)):
        X_ref, y_ref = load_svmlight_file(str(PACKAGE / name), n_features=d, zero_based=False)
        ds = read_libsvm(PACKAGE / name, n_features=d)
        assert ds.X.data.tobytes() == X_ref.data.tobytes()
        np.testing.assert_array_equal(ds.X.indices, X_ref.indices)
        np.testing.assert_array_equal(ds.X.indptr, X_ref.indptr)
        np.testing.assert_array_equal(ds.y, np.where(y_ref == 0, -1.0, y_ref))


# ============================================================================ the rules on top


@pytest.mark.parametrize(
    "line, pattern",
    [
        ("+1 qid:3 1:1", "feature index 'qid' is not a valid 64-bit integer"),  # sklearn: skipped
        ("+1 1_0:1", "feature index '1_0' is not a valid"),  # sklearn: 10
        ("+1 1:1_000", "feature value '1_000' is not a valid number"),  # sklearn: 1000
        ("1_0 1:1", "class label '1_0' is not accepted"),  # sklearn: 10
        ("+1 1:nan", "feature value nan is not finite"),
        ("+1 1:-inf", "feature value -inf is not finite"),
        ("+1 1:1e999", "feature value inf is not finite"),
        ("2 1:1", "class label '2' is not accepted"),
        ("0 1:1", r"labels -1 and 0 both occur \(lines 1 and 3\)"),
        ("+1 1:1 9:1", "feature index 9 exceeds n_features=4"),
    ],
)
def test_what_scikit_learn_alone_accepts_is_refused_naming_the_line(tmp_path, line, pattern):
    from sklearn.datasets import load_svmlight_file

    path = tmp_path / "f.svm"
    path.write_text(f"-1 1:1\n# comment\n{line}\n+1 2:1\n", encoding="utf-8")
    load_svmlight_file(str(path), zero_based=False)  # scikit-learn reads it without a word
    with pytest.raises(FedTheoryError, match=pattern) as info:
        read_libsvm(path, n_features=4)
    assert str(info.value).startswith(f"{path}, line 3: ")


@pytest.mark.parametrize(
    "body",
    [
        b"\xef\xbb\xbf+1 1:1\n-1 2:3\n",  # a UTF-8 byte-order mark
        "+1\u00a01:1\n-1\u20032:3\n".encode(),  # Unicode spaces between tokens
        b"+1\x1c1:1\n-1\x1f2:3\n",  # ASCII separators: spaces to str.split()
        "+1 1:1 # caf\u00e9\n-1 2:3 # \u00fcber\n".encode(),
    ],
)
def test_what_scikit_learn_alone_refuses_but_libsvm_reads_is_read(tmp_path, body):
    from sklearn.datasets import load_svmlight_file

    path = tmp_path / "f.svm"
    path.write_bytes(body)
    if b"caf" not in body:
        with pytest.raises(ValueError):
            load_svmlight_file(str(path), zero_based=False)
    ds = read_libsvm(path)
    np.testing.assert_array_equal(ds.X.toarray(), [[1.0, 0.0], [0.0, 3.0]])
    np.testing.assert_array_equal(ds.y, [1.0, -1.0])


def _big_file(path: Path, n: int, bad: dict[int, str]) -> None:
    """``n`` lines of about 20 bytes (more than one 1 MiB chunk for n >= 60000); line k (1-based)
    replaced by ``bad[k]``."""
    lines = [bad.get(k, f"{(-1) ** k:+d} {k % 7 + 1}:{k / 3:.6f}") for k in range(1, n + 1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("bad_line", ["+1 1:nan", "+1 1_0:1", "+1 \u0661:1", "2 1:1", "+1 3:1 2:1"])
def test_a_bad_line_past_the_first_chunks_is_named_exactly(tmp_path, bad_line):
    path = tmp_path / "big.svm"
    _big_file(path, 120_000, {98_765: bad_line})
    with pytest.raises(FedTheoryError, match=re.escape(f"{path}, line 98765: ")):
        read_libsvm(path)


def test_rows_stops_before_a_bad_line_and_reads_past_chunk_boundaries(tmp_path):
    path = tmp_path / "big.svm"
    _big_file(path, 120_000, {1: "# header é", 110_001: "garbage"})
    ds = read_libsvm(path, rows=110_000 - 1)
    assert ds.n == 109_999 and ds.X.nnz == 109_999
    assert ds.X[-1, 110_000 % 7].item() == pytest.approx(110_000 / 3, abs=1e-6)
    with pytest.raises(FedTheoryError, match="line 110001: class label 'garbage'"):
        read_libsvm(path, rows=110_000)


def test_a_line_longer_than_a_chunk_is_read(tmp_path):
    path = tmp_path / "wide.svm"
    n = 150_000  # about 2.2 MB on one line
    path.write_text("+1 " + " ".join(f"{j}:{j % 5}" for j in range(1, n + 1)) + "\n-1 2:1\n")
    ds = read_libsvm(path)
    assert ds.X.shape == (2, n) and ds.X.nnz == n + 1
    np.testing.assert_array_equal(ds.X[0, :6].toarray(), [[1, 2, 3, 4, 0, 1]])


def test_a_damaged_gzip_stream_is_refused_even_past_the_rows_kept(tmp_path):
    """A CRC that does not match means the bytes decompressed may be wrong, the rows kept
    included: the rest of the stream is decompressed (not parsed) to check it."""
    body = bytearray(gzip.compress(b"+1 1:1\n-1 2:1\n" * 50, mtime=0))
    body[-8] ^= 0xFF  # the CRC-32 in the trailer
    path = tmp_path / "crc.svm.gz"
    path.write_bytes(bytes(body))
    with pytest.raises(FedTheoryError, match=r"cannot be read as plain or gzip text \(CRC"):
        read_libsvm(path, rows=1)


def test_zero_based_detection_and_regression_targets_still_hold(tmp_path):
    """issue 11 item 14: an index 0 read as 1-based says to set zero_based; ridge targets are
    real numbers (the fuller tests are in test_data.py)."""
    path = tmp_path / "z.svm"
    path.write_text("2.5 0:1 3:2\n-0.25 1:3\n")
    with pytest.raises(FedTheoryError, match=r"line 1: feature index 0: .*set zero_based = true"):
        read_libsvm(path, task="regression")
    ds = read_libsvm(path, task="regression", zero_based=True)
    np.testing.assert_array_equal(ds.X.toarray(), [[1, 0, 0, 2], [0, 3, 0, 0]])
    assert ds.y.tolist() == [2.5, -0.25] and not math.isnan(ds.y.sum())
