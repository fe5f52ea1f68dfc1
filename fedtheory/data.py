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
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from fedtheory.errors import FedTheoryError, check

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
        check(self.task in TASKS, f"task must be one of {TASKS}, got {self.task!r}")
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

_CLASS_LABELS = {"-1": -1.0, "+1": 1.0, "1": 1.0, "0": 0.0}
#: The largest feature index: LIBSVM's own reader stores indices as C ints.
MAX_INDEX = 2**31 - 1


def _open_bytes(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if path.suffix == ".gz" or magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_libsvm(  # noqa: C901 - one refusal branch per malformed-line case
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
    :class:`FedTheoryError` naming the file and the 1-based line.
    """
    path = Path(path)
    check(task in TASKS, f"task must be one of {TASKS}, got {task!r}")
    check(rows is None or rows >= 1, f"rows must be >= 1 or None, got {rows}")
    check(
        n_features is None or n_features >= 0,
        f"n_features must be >= 0 or None, got {n_features}",
    )
    check(path.is_file(), f"{path}: no such file")

    labels: list[float] = []
    counts: list[int] = []
    linenos: list[int] = []
    idx_tok: list[str] = []
    val_tok: list[str] = []
    first_line = {}  # first line holding class label -1 or 0, to report mixed label sets
    try:
        with _open_bytes(path) as fh:
            for lineno, raw in enumerate(fh, start=1):
                if rows is not None and len(labels) == rows:
                    break
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise FedTheoryError(
                        f"{path}, line {lineno}: not valid UTF-8 text (byte {exc.start + 1}); "
                        "a LIBSVM file must be plain text"
                    ) from None
                if lineno == 1:
                    line = line.removeprefix("\ufeff")
                parts = line.split("#", 1)[0].split()
                if not parts:
                    continue
                labels.append(_parse_label(parts[0], task, path, lineno))
                if task == "classification" and labels[-1] <= 0:
                    first_line.setdefault(labels[-1], lineno)
                for tok in parts[1:]:
                    i, colon, v = tok.partition(":")
                    if not colon or not i or not v:
                        raise FedTheoryError(
                            f"{path}, line {lineno}: feature {tok!r} is not of the form idx:val"
                        )
                    idx_tok.append(i)
                    val_tok.append(v)
                counts.append(len(parts) - 1)
                linenos.append(lineno)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise FedTheoryError(f"{path}: cannot be read as plain or gzip text ({exc})") from None

    check(labels, f"{path}: no data rows (the file is empty or only comments)")
    check(
        rows is None or len(labels) == rows,
        f"{path}: rows={rows} asked for but the file has only {len(labels)} data rows",
    )
    if len(first_line) == 2:
        line = max(first_line.values())
        raise FedTheoryError(
            f"{path}, line {line}: labels -1 and 0 both occur (lines {first_line[-1.0]} and "
            f"{first_line[0.0]}); accepted label sets are {{-1, +1}} and {{0, 1}}"
        )

    line_of = np.repeat(np.asarray(linenos), counts)  # line number of each feature token
    idx = _to_array(idx_tok, np.int64, "feature index", line_of, path)
    val = _to_array(val_tok, np.float64, "feature value", line_of, path)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    d = _check_indices(idx, val, indptr, counts, line_of, path, n_features, zero_based)

    y = np.asarray(labels, dtype=np.float64)
    if task == "classification":
        y[y == 0.0] = -1.0
    cols = idx if zero_based else idx - 1
    X = sp.csr_matrix((val, cols, indptr), shape=(len(labels), d), dtype=np.float64)
    if intercept:
        X = _with_intercept(X)
    name = path.name.split(".")[0] or path.name
    return Dataset(X=X, y=y, name=name, task=task)


def _check_indices(idx: np.ndarray, val: np.ndarray, indptr: np.ndarray, counts: list[int],
                   line_of: np.ndarray, path: Path, n_features: int | None,
                   zero_based: bool) -> int:
    """Refuse bad indices and values (naming the line); the number of columns d."""
    first = 0 if zero_based else 1
    if not zero_based:
        _fail_at(idx == 0, line_of, path, lambda k: (
            "feature index 0: LIBSVM indices start at 1; this file looks 0-based, as "
            "scikit-learn's dump_svmlight_file writes by default, so set zero_based = true "
            "(read_libsvm(..., zero_based=True), or zero_based = true in a spec's [data] table)"))
    _fail_at(idx < first, line_of, path, lambda k: f"feature index {idx[k]} must be >= {first}")
    _fail_at(idx > MAX_INDEX, line_of, path,
             lambda k: f"feature index {idx[k]} exceeds {MAX_INDEX}, the largest LIBSVM index")
    _fail_at(~np.isfinite(val), line_of, path, lambda k: f"feature value {val[k]} is not finite")
    starts = np.zeros(idx.size, dtype=bool)
    starts[indptr[:-1][np.asarray(counts) > 0]] = True
    decreasing = np.concatenate([[False], np.diff(idx) <= 0]) & ~starts
    _fail_at(
        decreasing,
        line_of,
        path,
        lambda k: f"feature indices must be strictly increasing, got {idx[k - 1]} then {idx[k]}",
    )
    d = int(idx.max(initial=first - 1)) + 1 - first if n_features is None else n_features
    _fail_at(
        idx + 1 - first > d,
        line_of,
        path,
        lambda k: f"feature index {idx[k]} exceeds n_features={n_features}"
        + (" (0-based: indices up to n_features - 1)" if zero_based else ""),
    )
    return d


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


def _to_array(tokens: list[str], dtype, what: str, line_of: np.ndarray, path: Path) -> np.ndarray:
    """Convert all tokens at once; on failure find the first bad one to report its line."""
    try:
        _c_number("".join(tokens))
        return np.array(tokens, dtype=dtype)
    except (ValueError, OverflowError):
        for k, tok in enumerate(tokens):
            try:
                np.array(_c_number(tok), dtype=dtype)
            except (ValueError, OverflowError):
                kind = "64-bit integer" if dtype is np.int64 else "number"
                raise FedTheoryError(
                    f"{path}, line {line_of[k]}: {what} {tok!r} is not a valid {kind}"
                ) from None
        raise


def _fail_at(bad: np.ndarray, line_of: np.ndarray, path: Path, message) -> None:
    if bad.any():
        k = int(np.argmax(bad))
        raise FedTheoryError(f"{path}, line {line_of[k]}: {message(k)}")


def _with_intercept(X):
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


def _client_sizes(sizes, n_clients: int, mean_size: int, rng: np.random.Generator) -> np.ndarray:
    if isinstance(sizes, str):
        check(
            sizes in ("powerlaw", "equal"),
            f"sizes must be 'powerlaw', 'equal' or a list of ints, got {sizes!r}",
        )
        check(mean_size >= 1, f"mean_size must be >= 1, got {mean_size}")
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
    check(n_clients >= 1, f"n_clients must be >= 1, got {n_clients}")
    check(d >= 1, f"d must be >= 1, got {d}")
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
    check(n_clients >= 1, f"n_clients must be >= 1, got {n_clients}")
    check(d >= 1, f"d must be >= 1, got {d}")
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
