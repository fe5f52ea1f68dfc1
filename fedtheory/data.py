"""Datasets and generators: the rows a federated problem is built from.

Sources:

- LIBSVM text format and the binary data sets ``a9a`` and ``phishing``: Chang & Lin, "LIBSVM: a
  library for support vector machines", ACM TIST 2 (2011); data from the UCI repository (see
  ``fedtheory/datasets/README.md`` for origin and licence).
- ``load_breast_cancer`` / ``load_diabetes``: the copies bundled with scikit-learn (Wolberg et al.
  1995, UCI Breast Cancer Wisconsin (Diagnostic); Efron et al. 2004, "Least angle regression").
- ``fedprox_synthetic``: the Synthetic(alpha, beta) data of Li et al., "Federated Optimization in
  Heterogeneous Networks" (FedProx), MLSys 2020, Section 5.1, made binary (see its docstring).
- ``heterogeneous_quadratic``: ridge data with client Hessian spectra in ``[mu, L]``, built here
  for checking mu/L-dependent rates.

Every array is float64 on the host (NumPy or SciPy CSR); moving it to a GPU is the caller's job.
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO

import numpy as np
import scipy.sparse as sp

from fedtheory.errors import FedTheoryError, check
from fedtheory.validate import check_choice, check_min

Fail = Callable[[str], FedTheoryError]
"""The reader's error for the current line with the given reason (raised by the caller)."""

TASKS = ("classification", "regression")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A design matrix and its targets.

    ``X`` is ``(n, d)`` float64, dense or SciPy CSR; ``y`` is ``(n,)`` float64, in ``{-1, +1}``
    when ``task == "classification"`` and real when ``task == "regression"``.
    """

    X: np.ndarray | sp.csr_matrix = field(repr=False)
    y: np.ndarray = field(repr=False)
    name: str
    task: str

    def __post_init__(self) -> None:
        check_choice(self.task, "task", TASKS)
        check(self.X.ndim == 2, f"X must be 2-D, got shape {self.X.shape}")
        check(
            self.y.shape == (self.X.shape[0],),
            f"y must have shape ({self.X.shape[0]},) to match X, got {self.y.shape}",
        )
        if self.task == "classification":
            bad = np.setdiff1d(self.y, [-1.0, 1.0])
            check(bad.size == 0, f"classification labels must be -1 or +1, got {bad[:5]}")

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    def __repr__(self) -> str:
        kind = "sparse" if sp.issparse(self.X) else "dense"
        return f"Dataset({self.name!r}, {self.task}, n={self.n}, d={self.d}, {kind})"


# ---------------------------------------------------------------------------------------------
# LIBSVM text files
#
# scikit-learn's ``load_svmlight_file`` (compiled) does the parsing. It is lenient where LIBSVM
# is strict, so read_libsvm keeps LIBSVM's rules on top of it, at almost no cost on a clean file:
#
# - the bytes reach scikit-learn through :class:`_CheckedStream`, which hands on every line
#   made of printable ASCII as it is (scikit-learn then reads each token exactly as C's
#   strtol/strtod do: Python's int()/float() on ASCII without ``_``) and checks every other
#   line strictly, handing on its tokens rewritten as plain ASCII. Those are the lines that
#   scikit-learn would read differently: non-ASCII bytes (UTF-8 check, byte-order mark, Unicode
#   spaces between tokens, foreign digits), control bytes (NUL ends scikit-learn's search for
#   ``#``; \x1c-\x1f split tokens only in text), ``_`` (``1_0`` reads as 10) and ``qid``
#   (scikit-learn skips a leading ``qid:n`` token). It also stops after ``rows`` data lines;
# - what scikit-learn accepts but LIBSVM does not (labels outside the label set, NaN or inf,
#   an index past ``n_features``) is checked on the arrays it returns;
# - a refusal (scikit-learn's ValueError, a failed check) triggers a second, line-by-line pass
#   (:func:`_locate`) that names the first bad line in file order with its own message.
#   Peak memory stays that of scikit-learn's arrays (benchmarks/bench_reader.py measures it:
#   benchmarks/results/reader_issue17.txt).

_CLASS_LABELS = {"-1": -1.0, "+1": 1.0, "1": 1.0, "0": 0.0}
#: The largest feature index: LIBSVM's own reader stores indices as C ints.
MAX_INDEX = 2**31 - 1
_INT64 = (-(2**63), 2**63 - 1)
#: Bytes a line may hold to go to scikit-learn unchecked: printable ASCII except ``_``, and
#: the whitespace that bytes.split() and str.split() agree on.
_PLAIN = bytes(sorted(set(range(0x20, 0x7F)) - {ord("_")})) + b"\t\n\x0b\x0c\r"
_CHUNK = 1 << 20
_UNREADABLE = (OSError, EOFError, zlib.error)


@dataclass(frozen=True)
class _Format:
    """What a LIBSVM file is read as: the options of :func:`read_libsvm` that rule a line."""

    path: Path
    task: str
    zero_based: bool
    n_features: int | None


def _open_bytes(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if path.suffix == ".gz" or magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_libsvm(
    path: str | Path,
    *,
    rows: int | None = None,
    intercept: bool = False,
    n_features: int | None = None,
    task: str = "classification",
    zero_based: bool = False,
) -> Dataset:
    """Read a LIBSVM/SVMlight text file (plain or gzip) into a CSR :class:`Dataset`.

    Each data line is ``label idx:val idx:val ...`` with 1-based, strictly increasing ``idx``
    and finite ``val``; blank lines and ``#`` comments are skipped. Numbers are read as C's
    ``strtol``/``strtod`` (which LIBSVM uses) read them: ASCII only, no ``_`` separators, and
    ``idx <= 2**31 - 1``; a UTF-8 byte-order mark is ignored. For classification the
    labels must be one of the sets ``{-1, +1}`` or ``{0, 1}`` (0 becomes -1). ``rows`` keeps the
    first ``rows`` data lines, ``n_features`` fixes ``d`` (default: the largest index), and
    ``intercept`` appends a column of ones after the ``d`` feature columns. ``zero_based``
    reads 0-based indices (``idx >= 0``, column ``idx``, default ``d`` the largest index + 1),
    as scikit-learn's ``dump_svmlight_file`` writes by default (``zero_based=True``); a file
    with an index 0 read without it is refused with a message saying so. ``task="regression"``
    keeps every finite label as a real target. Every malformed input raises
    :class:`FedTheoryError` naming the file and the 1-based line (the first bad line of the
    file); a damaged gzip stream is refused even when ``rows`` stops before the damage.

    The parsing is scikit-learn's ``load_svmlight_file``; the rules above are checked on top of
    it (see the comment that opens this section), so the arrays are the ones it reads.
    """
    path = Path(path)
    check_choice(task, "task", TASKS)
    if rows is not None:
        check_min(rows, "rows", 1, note=" or None")
    if n_features is not None:
        check_min(n_features, "n_features", 0, note=" or None")
    check(path.is_file(), f"{path}: no such file")
    fmt = _Format(path, task, bool(zero_based), n_features)

    X, y = _parse(fmt, rows)
    problem = _array_problem(X, y, fmt)
    if problem:
        _locate(fmt, rows)
        raise FedTheoryError(f"{path}: {problem}, but no line was found to blame (a bug)")
    check(y.size > 0, f"{path}: no data rows (the file is empty or only comments)")
    check(
        rows is None or y.size == rows,
        f"{path}: rows={rows} asked for but the file has only {y.size} data rows",
    )

    if task == "classification":
        y[y == 0.0] = -1.0
    d = n_features if n_features is not None else int(X.indices.max(initial=-1)) + 1
    X = sp.csr_matrix((X.data, X.indices, X.indptr), shape=(y.size, d), dtype=np.float64)
    if intercept:
        X = _with_intercept(X)
    name = path.name.split(".")[0] or path.name
    return Dataset(X=X, y=y, name=name, task=task)


def _parse(fmt: _Format, rows: int | None) -> tuple[sp.csr_matrix, np.ndarray]:
    """scikit-learn's parse of the file's checked lines; a refusal names the bad line."""
    from sklearn.datasets import load_svmlight_file

    try:
        with (
            _open_bytes(fmt.path) as fh,
            io.BufferedReader(_CheckedStream(fh, fmt, rows), buffer_size=_CHUNK) as stream,
        ):
            X, y = load_svmlight_file(stream, dtype=np.float64, zero_based=fmt.zero_based)
    except FedTheoryError:
        _locate(fmt, rows)  # an earlier line may be bad in a way only the arrays show
        raise
    except _UNREADABLE as exc:
        _locate(fmt, rows)
        raise FedTheoryError(f"{fmt.path}: cannot be read as plain or gzip text ({exc})") from None
    except (ValueError, OverflowError) as exc:
        _locate(fmt, rows)
        raise FedTheoryError(
            f"{fmt.path}: scikit-learn's reader refused the file ({exc}), but no line was found "
            "to blame (a bug)"
        ) from None
    return X, np.array(y, dtype=np.float64)


def _array_problem(X: sp.csr_matrix, y: np.ndarray, fmt: _Format) -> str:
    """What in scikit-learn's arrays LIBSVM would refuse ("" if nothing)."""
    if fmt.task == "classification":
        if not np.isin(y, (-1.0, 0.0, 1.0)).all():
            return "a class label is not -1, 0 or +1"
        if (y == -1.0).any() and (y == 0.0).any():
            return "labels -1 and 0 both occur"
    elif not np.isfinite(y).all():
        return "a regression target is not finite"
    if not np.isfinite(X.data).all():
        return "a feature value is not finite"
    if fmt.n_features is not None and int(X.indices.max(initial=-1)) >= fmt.n_features:
        return f"a feature index exceeds n_features={fmt.n_features}"
    return ""


class _CheckedStream(io.RawIOBase):
    """The file's bytes as scikit-learn gets them: its first ``rows`` data lines (all of them
    if ``rows`` is None), each plain-ASCII line unchanged and every other line checked by
    :func:`_strict_line` and rewritten as its tokens in plain ASCII."""

    def __init__(self, fh: BinaryIO, fmt: _Format, rows: int | None) -> None:
        super().__init__()
        self._fh, self._fmt, self._rows = fh, fmt, rows
        self._tail: list[bytes] = []  # the start of a line whose end is not read yet
        self._out = memoryview(b"")
        self._lineno = 0  # lines handed on so far
        self._count = 0  # data lines among them
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        while not self._out and not self._eof:
            self._out = memoryview(self._next_block())
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _next_block(self) -> bytes:
        data = self._fh.read(_CHUNK)
        if not data:
            self._eof = True
            block, self._tail = b"".join(self._tail), []
            return self._filter(block) if block else b""
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            self._tail.append(data)
            return b""
        block = b"".join([*self._tail, data[:cut]])
        self._tail = [data[cut:]]
        return self._filter(block)

    def _filter(self, block: bytes) -> bytes:
        if self._rows is None and _is_plain(block):
            self._lineno += block.count(b"\n")
            return block
        lines = block.split(b"\n")
        if block.endswith(b"\n"):
            lines.pop()
        out = []
        for line in lines:
            self._lineno += 1
            if not _is_plain(line):
                parsed = _strict_line(line, self._lineno, self._fmt)
                line = b"" if parsed is None else " ".join(parsed[1]).encode("ascii")
            out.append(line)
            if self._rows is not None and _is_data(line):
                self._count += 1
                if self._count == self._rows:
                    self._eof = True
                    self._check_rest()
                    break
        out.append(b"")
        return b"\n".join(out)

    def _check_rest(self) -> None:
        """Decompress the rest of a gzip stream, unread: damage after the rows kept (a CRC
        that does not match) may have changed them too."""
        if isinstance(self._fh, gzip.GzipFile):
            while self._fh.read(_CHUNK):
                pass


def _is_plain(block: bytes) -> bool:
    """Whether scikit-learn reads ``block`` as LIBSVM does (see the comment above _Format)."""
    return not block.translate(None, _PLAIN) and b"qid" not in block


def _is_data(line: bytes) -> bool:
    """Whether a plain-ASCII line holds data (not blank, not only a comment)."""
    text = line.lstrip()
    return bool(text) and text[:1] != b"#"


def _locate(fmt: _Format, rows: int | None) -> None:
    """Read the file line by line as LIBSVM does and raise at its first bad line (or at an
    unreadable stream); return if the first ``rows`` data lines are all good."""
    first_line: dict[float, int] = {}  # first line of class label -1 and of 0
    count = 0
    try:
        with _open_bytes(fmt.path) as fh:
            for lineno, raw in enumerate(fh, start=1):
                if count == rows:
                    return
                parsed = _strict_line(raw, lineno, fmt)
                if parsed is None:
                    continue
                count += 1
                if fmt.task == "classification" and parsed[0] <= 0:
                    first_line.setdefault(parsed[0], lineno)
                    _check_label_sets(first_line, lineno, fmt.path)
    except _UNREADABLE as exc:
        raise FedTheoryError(f"{fmt.path}: cannot be read as plain or gzip text ({exc})") from None


def _check_label_sets(first_line: dict[float, int], lineno: int, path: Path) -> None:
    if len(first_line) == 2:
        raise FedTheoryError(
            f"{path}, line {lineno}: labels -1 and 0 both occur (lines {first_line[-1.0]} and "
            f"{first_line[0.0]}); accepted label sets are {{-1, +1}} and {{0, 1}}"
        )


def _strict_line(raw: bytes, lineno: int, fmt: _Format) -> tuple[float, list[str]] | None:
    """The label and the tokens of one line, every rule checked; None for a line without data.

    A refusal names the file and the line; when a line breaks several rules, the one reported
    is the first of: UTF-8, label, ``idx:val`` form, index syntax, value syntax, index 0 (1-based
    file), index too small, index too large, value not finite, order, ``n_features``.
    """
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FedTheoryError(
            f"{fmt.path}, line {lineno}: not valid UTF-8 text (byte {exc.start + 1}); "
            "a LIBSVM file must be plain text"
        ) from None
    if lineno == 1:
        line = line.removeprefix("\ufeff")
    parts = line.split("#", 1)[0].split()
    if not parts:
        return None
    label = _parse_label(parts[0], fmt.task, fmt.path, lineno)

    def fail(message: str) -> FedTheoryError:
        return FedTheoryError(f"{fmt.path}, line {lineno}: {message}")

    pairs = [tok.partition(":") for tok in parts[1:]]
    for tok, (i, colon, v) in zip(parts[1:], pairs, strict=True):
        if not colon or not i or not v:
            raise fail(f"feature {tok!r} is not of the form idx:val")
    idx = [_c_int(i, fail) for i, _, _ in pairs]
    val = [_c_value(v, fail) for _, _, v in pairs]
    _check_line_indices(idx, fmt, fail)
    for v in val:
        if not math.isfinite(v):
            raise fail(f"feature value {v} is not finite")
    for a, b in pairwise(idx):
        if b <= a:
            raise fail(f"feature indices must be strictly increasing, got {a} then {b}")
    _check_n_features(idx, fmt, fail)
    return label, parts


def _c_int(tok: str, fail: Fail) -> int:
    try:
        value = int(_c_number(tok))
    except ValueError:
        value = None
    if value is None or not _INT64[0] <= value <= _INT64[1]:
        raise fail(f"feature index {tok!r} is not a valid 64-bit integer")
    return value


def _c_value(tok: str, fail: Fail) -> float:
    try:
        return float(_c_number(tok))
    except ValueError:
        raise fail(f"feature value {tok!r} is not a valid number") from None


def _check_line_indices(idx: list[int], fmt: _Format, fail: Fail) -> None:
    first = 0 if fmt.zero_based else 1
    if not fmt.zero_based and 0 in idx:
        raise fail(
            "feature index 0: LIBSVM indices start at 1; this file looks 0-based, as "
            "scikit-learn's dump_svmlight_file writes by default, so set zero_based = true "
            "(read_libsvm(..., zero_based=True), or zero_based = true in a spec's [data] table)"
        )
    for i in idx:
        if i < first:
            raise fail(f"feature index {i} must be >= {first}")
    for i in idx:
        if i > MAX_INDEX:
            raise fail(f"feature index {i} exceeds {MAX_INDEX}, the largest LIBSVM index")


def _check_n_features(idx: list[int], fmt: _Format, fail: Fail) -> None:
    if fmt.n_features is None:
        return
    first = 0 if fmt.zero_based else 1
    for i in idx:
        if i + 1 - first > fmt.n_features:
            raise fail(
                f"feature index {i} exceeds n_features={fmt.n_features}"
                + (" (0-based: indices up to n_features - 1)" if fmt.zero_based else "")
            )


def _parse_label(tok: str, task: str, path: Path, lineno: int) -> float:
    if task == "classification":
        label = _CLASS_LABELS.get(tok)
        if label is None:
            label = _c_float(tok)
            if label not in (-1.0, 0.0, 1.0):
                raise FedTheoryError(
                    f"{path}, line {lineno}: class label {tok!r} is not accepted; "
                    "labels must be -1/+1 or 0/1 (for real-valued targets read the file with "
                    'task="regression", in a spec\'s [data] table task = "regression")'
                )
        return label
    label = _c_float(tok)
    if not math.isfinite(label):
        raise FedTheoryError(
            f"{path}, line {lineno}: regression target {tok!r} is not a finite number"
        )
    return label


def _c_float(tok: str) -> float:
    """``float(tok)`` for tokens C's strtod also reads, NaN for the rest."""
    try:
        return float(_c_number(tok))
    except ValueError:
        return math.nan


def _c_number(tok: str) -> str:
    """``tok`` unchanged, or ValueError if it is not ASCII or holds a ``_`` (Python's int()
    and float() read ``1_0`` and non-ASCII digits; C and LIBSVM do not)."""
    if not tok.isascii() or "_" in tok:
        raise ValueError(tok)
    return tok


def _with_intercept(X: np.ndarray | sp.spmatrix) -> np.ndarray | sp.spmatrix:
    ones = np.ones((X.shape[0], 1))
    if sp.issparse(X):
        return sp.hstack([X, sp.csr_matrix(ones)], format="csr")
    return np.hstack([X, ones])


def _standardize(X: np.ndarray) -> np.ndarray:
    sd = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


# ---------------------------------------------------------------------------------------------
# Shipped and bundled data


def _shipped(filename: str, *, rows: int | None, intercept: bool, d: int) -> Dataset:
    resource = resources.files("fedtheory") / "datasets" / filename
    with resources.as_file(resource) as path:
        return read_libsvm(path, rows=rows, intercept=intercept, n_features=d)


def load_a9a(rows: int | None = 32560, intercept: bool = False) -> Dataset:
    """LIBSVM ``a9a`` (UCI Adult), CSR with ``d = 123`` (+1 with ``intercept``), labels +-1.

    The default ``rows = 32560`` is the FedNL benchmark (80 clients x 407 rows in file order);
    ``rows=None`` reads all 32,561 rows.
    """
    return _shipped("a9a.txt.gz", rows=rows, intercept=intercept, d=123)


def load_phishing(rows: int | None = None, intercept: bool = False) -> Dataset:
    """LIBSVM ``phishing`` (UCI Phishing Websites), CSR, 8,619 rows, ``d = 68``, labels +-1."""
    return _shipped("phishing.txt.gz", rows=rows, intercept=intercept, d=68)


def load_breast_cancer(standardize: bool = True, intercept: bool = False) -> Dataset:
    """scikit-learn's Breast Cancer Wisconsin: 569 x 30 dense, benign = +1, malignant = -1.

    ``standardize`` z-scores each column (population std); the intercept column is added after.
    """
    from sklearn import datasets

    raw = datasets.load_breast_cancer()
    X = np.asarray(raw.data, dtype=np.float64)
    X = _standardize(X) if standardize else X
    X = _with_intercept(X) if intercept else X
    y = np.where(raw.target == 1, 1.0, -1.0)
    return Dataset(X=X, y=y, name="breast_cancer", task="classification")


def load_diabetes(standardize: bool = True, intercept: bool = False) -> Dataset:
    """scikit-learn's diabetes regression data: 442 x 10 dense, ``y`` centred with unit std.

    ``standardize`` z-scores each column (population std); the intercept column is added after.
    """
    from sklearn import datasets

    raw = datasets.load_diabetes()
    X = np.asarray(raw.data, dtype=np.float64)
    X = _standardize(X) if standardize else X
    X = _with_intercept(X) if intercept else X
    y = np.asarray(raw.target, dtype=np.float64)
    y = (y - y.mean()) / y.std()
    return Dataset(X=X, y=y, name="diabetes", task="regression")


# ---------------------------------------------------------------------------------------------
# Generators


def _client_sizes(
    sizes: Sequence[int] | str, n_clients: int, mean_size: int, rng: np.random.Generator
) -> np.ndarray:
    if isinstance(sizes, str):
        check(
            sizes in ("powerlaw", "equal"),
            f"sizes must be 'powerlaw', 'equal' or a list of ints, got {sizes!r}",
        )
        check_min(mean_size, "mean_size", 1)
        if sizes == "equal":
            return np.full(n_clients, mean_size, dtype=np.int64)
        # FedProx draws 50 + LogNormal(4, 2) rows per client (mean 50 + e^6); rescale so that the
        # expected size is mean_size, keeping the shape of the distribution.
        z = 50.0 + rng.lognormal(4.0, 2.0, n_clients)
        return np.maximum(10, np.rint(mean_size * z / (50.0 + math.exp(6.0)))).astype(np.int64)
    out = np.asarray(sizes, dtype=np.int64)
    check(
        out.shape == (n_clients,) and bool(np.all(out >= 1)),
        f"sizes must list {n_clients} positive ints, got {list(sizes)}",
    )
    return out


def fedprox_synthetic(
    alpha: float,
    beta: float,
    n_clients: int,
    *,
    d: int = 60,
    sizes: str | Sequence[int] = "powerlaw",
    mean_size: int = 100,
    seed: int,
) -> tuple[Dataset, list[np.ndarray]]:
    """FedProx Synthetic(alpha, beta), binary version; returns the data and its client partition.

    As in Li et al. (2020, Sec. 5.1 and their ``generate_niid.py``), for each client k:
    ``u_k ~ N(0, alpha)``, ``B_k ~ N(0, beta)``, ``w_k ~ N(u_k, 1)^d``, ``b_k ~ N(u_k, 1)``,
    ``v_k ~ N(B_k, 1)^d`` and ``x ~ N(v_k, Sigma)`` with ``Sigma = diag(j^-1.2)``. The second
    argument of ``N`` is a standard deviation, as in their code. alpha controls how much the
    local models differ, beta how much the local inputs differ.

    Adaptation: FedProx has 10 classes, ``W_k`` of shape ``(d, 10)`` and ``y = argmax(softmax(
    W_k^T x + b_k))``. Here ``w_k`` is a vector, ``b_k`` a scalar and ``y = sign(w_k^T x + b_k)``
    in ``{-1, +1}`` (0 maps to +1), so the data fit binary logistic regression.

    ``sizes``: ``"powerlaw"`` draws FedProx's ``50 + LogNormal(4, 2)`` and rescales it to mean
    ``mean_size`` (each client at least 10 rows); ``"equal"`` gives ``mean_size`` rows each; a
    list gives the sizes. Rows are stacked client by client; the partition lists each client's
    row indices.
    """
    check_min(n_clients, "n_clients", 1)
    check_min(d, "d", 1)
    check(alpha >= 0 and beta >= 0, f"alpha and beta must be >= 0, got {alpha}, {beta}")
    rng = np.random.default_rng(seed)
    n_k = _client_sizes(sizes, n_clients, mean_size, rng)
    u = rng.normal(0.0, alpha, n_clients)
    B = rng.normal(0.0, beta, n_clients)
    sigma_sqrt = np.arange(1, d + 1, dtype=np.float64) ** -0.6  # sqrt of diag(j^-1.2)
    Xs, ys = [], []
    for k in range(n_clients):
        w = rng.normal(u[k], 1.0, d)
        b = rng.normal(u[k], 1.0)
        v = rng.normal(B[k], 1.0, d)
        x = v + sigma_sqrt * rng.standard_normal((n_k[k], d))
        Xs.append(x)
        ys.append(np.where(x @ w + b >= 0, 1.0, -1.0))
    bounds = np.concatenate([[0], np.cumsum(n_k)])
    parts = [np.arange(bounds[k], bounds[k + 1], dtype=np.int64) for k in range(n_clients)]
    data = Dataset(
        X=np.vstack(Xs),
        y=np.concatenate(ys),
        name=f"synthetic({alpha:g},{beta:g})",
        task="classification",
    )
    return data, parts


def _haar_orthogonal(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """``n x d`` with orthonormal columns, Haar-distributed (QR with the sign of R fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((n, d)))
    return q * np.sign(np.diag(r))


def heterogeneous_quadratic(
    n_clients: int,
    d: int,
    *,
    n_per_client: int | Sequence[int] = 50,
    mu: float = 0.1,
    L: float = 10.0,
    spread: float = 1.0,
    noise: float = 0.0,
    seed: int,
) -> tuple[Dataset, list[np.ndarray]]:
    """Least-squares data whose client Hessians have spectra in ``[mu, L]`` exactly.

    Client i gets ``A_i = sqrt(n_i) Q_i diag(sqrt(s_i)) R_i^T`` (``Q_i``: ``n_i x d`` with
    orthonormal columns, ``R_i``: random ``d x d`` orthogonal), so ``A_i^T A_i / n_i`` has
    eigenvalues ``s_i``, drawn uniformly in ``[mu, L]`` with ``mu`` and ``L`` always among them.
    Its local optimum is ``theta_i = theta_c + spread * xi_i`` (``theta_c``, ``xi_i`` standard
    normal) and ``y_i = A_i theta_i + noise * N(0, 1)``. With ``noise = 0`` and no ridge term
    (lam = 0), client i's minimiser of ``||A_i theta - y_i||^2 / (2 n_i)`` is exactly
    ``theta_i``. Needs ``n_i >= d``; ``d = 1`` needs ``mu == L``. Task is ``"regression"``.
    """
    check_min(n_clients, "n_clients", 1)
    check_min(d, "d", 1)
    check(0 < mu <= L, f"need 0 < mu <= L, got mu={mu}, L={L}")
    check(d >= 2 or mu == L, f"d=1 cannot attain both mu={mu} and L={L}; use d >= 2 or mu == L")
    check(spread >= 0 and noise >= 0, f"spread and noise must be >= 0, got {spread}, {noise}")
    n_i = np.asarray(n_per_client, dtype=np.int64)
    check(
        n_i.ndim == 0 or n_i.shape == (n_clients,),
        f"n_per_client must be an int or {n_clients} ints, got {n_per_client}",
    )
    n_i = np.broadcast_to(n_i, (n_clients,))
    check(bool(np.all(n_i >= d)), f"every client needs n_i >= d={d} rows, got {n_i.tolist()}")
    rng = np.random.default_rng(seed)
    theta_c = rng.standard_normal(d)
    As, ys = [], []
    for i in range(n_clients):
        s = np.concatenate([[mu, L], rng.uniform(mu, L, d - 2)]) if d >= 2 else np.array([mu])
        Q = _haar_orthogonal(rng, int(n_i[i]), d)
        R = _haar_orthogonal(rng, d, d)
        A = math.sqrt(n_i[i]) * (Q * np.sqrt(s)) @ R.T
        theta_i = theta_c + spread * rng.standard_normal(d)
        As.append(A)
        ys.append(A @ theta_i + noise * rng.standard_normal(int(n_i[i])))
    bounds = np.concatenate([[0], np.cumsum(n_i)])
    parts = [np.arange(bounds[i], bounds[i + 1], dtype=np.int64) for i in range(n_clients)]
    data = Dataset(
        X=np.vstack(As), y=np.concatenate(ys), name="heterogeneous_quadratic", task="regression"
    )
    return data, parts
