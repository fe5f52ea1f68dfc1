"""Time and memory of the LIBSVM reader before and after the switch to scikit-learn (issue 17
item 7, issue 11 item 14).

``old_read_libsvm`` below is the PRE-SWITCH PARSER, KEPT HERE ONLY FOR COMPARISON: the hand-written
reader of ``fedtheory/data.py`` as of commit a5c3cb5, copied verbatim (helpers renamed with an
``_old`` prefix). The package no longer uses it; ``fedtheory.data.read_libsvm`` now parses with
scikit-learn's ``load_svmlight_file`` and keeps the strict checks on top.

Each reader runs in its own subprocess (a fresh interpreter), so that its peak resident memory
is its own: the parent reads the child's wall time, CPU time (user + system) and peak RSS from
``os.wait4`` (the child's ``ru_maxrss``), and the child reports the time of the read call alone
and a SHA-256 digest of what it read (X's data/indices/indptr with their dtypes, the shape, y),
so the table also says whether the two readers returned bit-identical arrays. An "import only"
child (the same imports, no read) gives the baseline. Timings are measurements, not asserted
anywhere.

Usage (from the repository root, with the project's virtual environment active)::

    python benchmarks/bench_reader.py /work/shared/datasets/w8a.txt.gz --n-features 300
    python benchmarks/bench_reader.py /tmp/synth.svm --repeat 1
    python benchmarks/bench_reader.py --make-synthetic /tmp/synth.svm --mb 200
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from fedtheory.data import TASKS, Dataset
from fedtheory.errors import FedTheoryError, check

# =============================================================================================
# The pre-switch parser, kept for comparison (fedtheory/data.py at commit a5c3cb5)
# =============================================================================================

_OLD_CLASS_LABELS = {"-1": -1.0, "+1": 1.0, "1": 1.0, "0": 0.0}
#: The largest feature index: LIBSVM's own reader stores indices as C ints.
_OLD_MAX_INDEX = 2**31 - 1


def _old_open_bytes(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if path.suffix == ".gz" or magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def old_read_libsvm(
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
        with _old_open_bytes(path) as fh:
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
                labels.append(_old_parse_label(parts[0], task, path, lineno))
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
    idx = _old_to_array(idx_tok, np.int64, "feature index", line_of, path)
    val = _old_to_array(val_tok, np.float64, "feature value", line_of, path)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    d = _old_check_indices(idx, val, indptr, counts, line_of, path, n_features, zero_based)

    y = np.asarray(labels, dtype=np.float64)
    if task == "classification":
        y[y == 0.0] = -1.0
    cols = idx if zero_based else idx - 1
    X = sp.csr_matrix((val, cols, indptr), shape=(len(labels), d), dtype=np.float64)
    if intercept:
        X = _old_with_intercept(X)
    name = path.name.split(".")[0] or path.name
    return Dataset(X=X, y=y, name=name, task=task)


def _old_check_indices(
    idx: np.ndarray,
    val: np.ndarray,
    indptr: np.ndarray,
    counts: list[int],
    line_of: np.ndarray,
    path: Path,
    n_features: int | None,
    zero_based: bool,
) -> int:
    """Refuse bad indices and values (naming the line); the number of columns d."""
    first = 0 if zero_based else 1
    if not zero_based:
        _old_fail_at(
            idx == 0,
            line_of,
            path,
            lambda k: (
                "feature index 0: LIBSVM indices start at 1; this file looks 0-based, as "
                "scikit-learn's dump_svmlight_file writes by default, so set zero_based = true "
                "(read_libsvm(..., zero_based=True), or zero_based = true in a spec's [data] "
                "table)"
            ),
        )
    _old_fail_at(idx < first, line_of, path, lambda k: f"feature index {idx[k]} must be >= {first}")
    _old_fail_at(
        idx > _OLD_MAX_INDEX,
        line_of,
        path,
        lambda k: f"feature index {idx[k]} exceeds {_OLD_MAX_INDEX}, the largest LIBSVM index",
    )
    _old_fail_at(
        ~np.isfinite(val), line_of, path, lambda k: f"feature value {val[k]} is not finite"
    )
    starts = np.zeros(idx.size, dtype=bool)
    starts[indptr[:-1][np.asarray(counts) > 0]] = True
    decreasing = np.concatenate([[False], np.diff(idx) <= 0]) & ~starts
    _old_fail_at(
        decreasing,
        line_of,
        path,
        lambda k: f"feature indices must be strictly increasing, got {idx[k - 1]} then {idx[k]}",
    )
    d = int(idx.max(initial=first - 1)) + 1 - first if n_features is None else n_features
    _old_fail_at(
        idx + 1 - first > d,
        line_of,
        path,
        lambda k: (
            f"feature index {idx[k]} exceeds n_features={n_features}"
            + (" (0-based: indices up to n_features - 1)" if zero_based else "")
        ),
    )
    return d


def _old_parse_label(tok: str, task: str, path: Path, lineno: int) -> float:
    if task == "classification":
        label = _OLD_CLASS_LABELS.get(tok)
        if label is None:
            label = _old_c_float(tok)
            if label not in (-1.0, 0.0, 1.0):
                raise FedTheoryError(
                    f"{path}, line {lineno}: class label {tok!r} is not accepted; "
                    "labels must be -1/+1 or 0/1 (for real-valued targets read the file with "
                    'task="regression", in a spec\'s [data] table task = "regression")'
                )
        return label
    label = _old_c_float(tok)
    if not math.isfinite(label):
        raise FedTheoryError(
            f"{path}, line {lineno}: regression target {tok!r} is not a finite number"
        )
    return label


def _old_c_float(tok: str) -> float:
    """``float(tok)`` for tokens C's strtod also reads, NaN for the rest."""
    try:
        return float(_old_c_number(tok))
    except ValueError:
        return math.nan


def _old_c_number(tok: str) -> str:
    """``tok`` unchanged, or ValueError if it is not ASCII or holds a ``_`` (Python's int()
    and float() read ``1_0`` and non-ASCII digits; C and LIBSVM do not)."""
    if not tok.isascii() or "_" in tok:
        raise ValueError(tok)
    return tok


def _old_to_array(
    tokens: list[str], dtype, what: str, line_of: np.ndarray, path: Path
) -> np.ndarray:
    """Convert all tokens at once; on failure find the first bad one to report its line."""
    try:
        _old_c_number("".join(tokens))
        return np.array(tokens, dtype=dtype)
    except (ValueError, OverflowError):
        for k, tok in enumerate(tokens):
            try:
                np.array(_old_c_number(tok), dtype=dtype)
            except (ValueError, OverflowError):
                kind = "64-bit integer" if dtype is np.int64 else "number"
                raise FedTheoryError(
                    f"{path}, line {line_of[k]}: {what} {tok!r} is not a valid {kind}"
                ) from None
        raise


def _old_fail_at(bad: np.ndarray, line_of: np.ndarray, path: Path, message) -> None:
    if bad.any():
        k = int(np.argmax(bad))
        raise FedTheoryError(f"{path}, line {line_of[k]}: {message(k)}")


def _old_with_intercept(X):
    ones = np.ones((X.shape[0], 1))
    if sp.issparse(X):
        return sp.hstack([X, sp.csr_matrix(ones)], format="csr")
    return np.hstack([X, ones])


# =============================================================================================
# The measurement


def _digest(ds) -> dict:
    X = ds.X
    h = hashlib.sha256()
    for a in (X.data, X.indices, X.indptr, ds.y):
        h.update(str(a.dtype).encode() + b"|")
        h.update(np.ascontiguousarray(a).tobytes())
    return {
        "shape": list(X.shape),
        "nnz": int(X.nnz),
        "sha256": h.hexdigest()[:16],
        "dtypes": [str(X.data.dtype), str(X.indices.dtype), str(X.indptr.dtype), str(ds.y.dtype)],
    }


def _child(reader: str, path: str, kwargs: dict) -> None:
    """Runs in the subprocess: read once, print the call's times and a digest as JSON."""
    import fedtheory.data

    if reader in ("new", "import+sklearn"):
        import sklearn.datasets  # noqa: F401 - read_libsvm imports it on its first call
    fn = {"old": old_read_libsvm, "new": fedtheory.data.read_libsvm}.get(reader)
    out = {}
    if fn is not None:
        before = _reset_peak_rss()
        w0, c0 = time.perf_counter(), time.process_time()
        ds = fn(path, **kwargs)
        out = {
            "call_wall": time.perf_counter() - w0,
            "call_cpu": time.process_time() - c0,
            **_digest(ds),
        }
        if before is not None:
            out["call_rss_mb"] = (_status_kb("VmHWM") - before) / 1024.0
    print(json.dumps(out))


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _reset_peak_rss() -> int | None:
    """Linux: reset this process's peak RSS (VmHWM) to its current RSS and return that (kB),
    so that the peak after the call is the call's own; None where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kb("VmRSS")
    except (OSError, KeyError):
        return None


def _run_child(reader: str, path: str, kwargs: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", reader, path, "--kwargs", json.dumps(kwargs)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{reader} reader failed on {path} (exit {proc.returncode})")
    return {
        **json.loads(out),
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024.0,
    }


def _table(path: str, kwargs: dict, repeat: int) -> None:
    size = os.path.getsize(path)
    print(f"file: {path} ({size / 1e6:.1f} MB on disk), read_libsvm(path, **{kwargs})")
    print(
        f"{'child':<15} {'process wall s':>14} {'process CPU s':>13} {'read call s':>11} "
        f"{'read CPU s':>10} {'peak RSS MB':>11} {'over imports':>12} {'read call':>9}   result"
    )
    digests, base = {}, {}
    for reader in ("import", "import+sklearn", "old", "new"):
        runs = [_run_child(reader, path, kwargs) for _ in range(repeat)]
        best = min(runs, key=lambda r: r["wall"])
        rss = max(r["rss_mb"] for r in runs)
        base[reader] = rss
        call = (
            f"{best['call_wall']:>11.2f} {best['call_cpu']:>10.2f}"
            if "shape" in best
            else f"{'-':>11} {'-':>10}"
        )
        over = {"old": "import", "new": "import+sklearn"}.get(reader)
        over = f"{rss - base[over]:>+12.0f}" if over else f"{'-':>12}"
        result = f"{best['shape']} nnz={best['nnz']} {best['sha256']}" if "shape" in best else ""
        label = {"import": "imports (old)", "import+sklearn": "imports (new)"}.get(reader, reader)
        in_call = max((r.get("call_rss_mb", math.nan) for r in runs), default=math.nan)
        in_call = f"{in_call:>+9.0f}" if "shape" in best else f"{'-':>9}"
        print(
            f"{label:<15} {best['wall']:>14.2f} {best['cpu']:>13.2f} {call} {rss:>11.0f} "
            f"{over} {in_call}   {result}"
        )
        digests[reader] = best.get("sha256")
    same = digests["old"] == digests["new"]
    print(
        "bit-identical X (data, indices, indptr, dtypes, shape) and y: " + ("yes" if same else "NO")
    )
    print(
        f"(best of {repeat} by wall time; peak RSS: the largest of the {repeat}; 'read "
        "call': the read call alone, timed inside the child; 'imports (old)': a child that "
        "imports fedtheory.data and reads nothing, the baseline of 'old'; 'imports (new)': "
        "the same plus sklearn.datasets, which read_libsvm imports on its first call, the "
        "baseline of 'new'; 'read call' under peak RSS: the peak during the read call over the "
        "RSS just before it, Linux VmHWM reset through /proc/self/clear_refs)"
    )


def make_synthetic(
    path: Path, mb: float, d: int = 300, density: float = 0.04, seed: int = 0
) -> None:
    """A binary LIBSVM file of about ``mb`` MB: ``d`` features, each present with probability
    ``density``, values N(0, 1) printed with 6 significant digits, labels -1/+1."""
    rng = np.random.default_rng(seed)
    written, block = 0, 20_000
    with open(path, "w", encoding="ascii") as fh:
        while written < mb * 1e6:
            mask = rng.random((block, d)) < density
            vals = rng.standard_normal((block, d))
            labels = np.where(rng.random(block) < 0.5, "-1", "+1")
            lines = []
            for r in range(block):
                cols = np.flatnonzero(mask[r])
                lines.append(
                    " ".join(
                        [
                            labels[r],
                            *(f"{c + 1}:{v:.6g}" for c, v in zip(cols, vals[r, cols], strict=True)),
                        ]
                    )
                )
            text = "\n".join(lines) + "\n"
            fh.write(text)
            written += len(text)
    print(f"wrote {path}: {written / 1e6:.1f} MB")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", nargs="?")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--n-features", type=int)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--make-synthetic", metavar="PATH")
    ap.add_argument("--mb", type=float, default=200.0)
    ap.add_argument("--child", metavar="READER", help=argparse.SUPPRESS)
    ap.add_argument("--kwargs", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child, args.path, json.loads(args.kwargs))
        return
    if args.make_synthetic:
        make_synthetic(Path(args.make_synthetic), args.mb)
        return
    if args.path is None:
        ap.error("give a LIBSVM file (or --make-synthetic PATH)")
    kwargs = {
        k: v for k, v in (("rows", args.rows), ("n_features", args.n_features)) if v is not None
    }
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"scipy {sp.__name__ and __import__('scipy').__version__}, "
        f"scikit-learn {__import__('sklearn').__version__}"
    )
    _table(args.path, kwargs, args.repeat)


if __name__ == "__main__":
    main()
