"""Results as one tidy table: the per-round rows of many runs, each row with its provenance.

A run becomes rows through :func:`trace_frame`: the columns of :data:`fedtheory.trace.COLUMNS`
plus, on every row, where the run came from (:data:`PROVENANCE`): package version, problem,
method, its parameters as a JSON string (and one ``param_<name>`` column per parameter), a
legend ``label``, participation S, seed, backend, oracle, status and the problem's reference
constants (N, d, mu, L, L_H, f_star, theta_star_norm) that plots use for floors and bounds, and
``precision_bits`` for runs of the arbitrary-precision backend (None for float64 runs).

:func:`load` reads any of the three places runs live: a sweep folder (``runs/*.parquet``, see
:mod:`fedtheory.sweep`), a consolidated ``results.parquet``, or the CSV of ``fedtheory run
--out`` (with its ``.json`` metadata beside it). :func:`consolidate` writes a sweep folder's
runs into one ``results.parquet``. Parquet goes through pyarrow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ._io import write_atomic
from .errors import FedTheoryError, check
from .trace import COLUMNS, Trace
from .trace import read_csv as read_trace_csv

#: Provenance columns every row carries (sweeps add ``config_id``, ``problem_hash``,
#: ``started_at`` and ``drift_metrics``).
PROVENANCE = (
    "version",
    "problem",
    "method",
    "params",
    "label",
    "participation",
    "seed",
    "backend",
    "oracle",
    "status",
    "rounds",
    "N",
    "d",
    "mu",
    "L",
    "L_H",
    "f_star",
    "theta_star_norm",
    "precision_bits",
    "threads",
)

RESULTS_FILE = "results.parquet"
RUNS_DIR = "runs"

#: The provenance columns read from a single run's metadata (``params`` and ``label`` are
#: added from the run itself).
_META_KEYS = tuple(k for k in PROVENANCE if k not in ("params", "label"))


def params_json(params: Mapping[str, Any]) -> str:
    """The canonical JSON text of a parameter dict (sorted keys, no spaces)."""
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":"), default=str)


def make_labels(runs: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Legend labels of runs given as (method, facets): the method name plus the facets
    (parameters, and whatever else :func:`label_facets` adds) whose values differ among the
    runs of that method, e.g. ``"fedpm K=2 S=5"``; the bare name when they all agree."""
    runs = [(m, dict(p)) for m, p in runs]
    varying: dict[str, list[str]] = {}
    for method in {m for m, _ in runs}:
        mine = [p for m, p in runs if m == method]
        keys = list(dict.fromkeys(k for p in mine for k in p))
        varying[method] = [k for k in keys if len({params_json({k: p.get(k)}) for p in mine}) > 1]
    return [" ".join([m, *(f"{k}={_short(p.get(k))}" for k in varying[m])]) for m, p in runs]


def label_facets(
    params: Mapping[str, Any], participation: Any = None, oracle: Any = None, problem: Any = None
) -> dict[str, Any]:
    """What tells two runs of one method apart, seed excepted: their parameters, S, oracle
    and problem (``None`` participation reads "all")."""
    return {
        **params,
        "S": "all" if participation is None else participation,
        "oracle": oracle,
        "problem": problem,
    }


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def trace_frame(trace: Trace, label: str | None = None) -> pd.DataFrame:
    """The rows of one run with the :data:`PROVENANCE` columns taken from ``trace.meta``
    (missing metadata gives missing values, never an error). ``label`` defaults to the
    method's name."""
    df = trace.to_frame()
    df.attrs = {}
    meta = {**trace.meta, "status": trace.status}
    return _with_meta(df, meta, label)


def _with_meta(df: pd.DataFrame, meta: Mapping[str, Any], label: str | None) -> pd.DataFrame:
    params = meta.get("params") or {}
    cols: dict[str, Any] = {k: meta.get(k) for k in _META_KEYS}
    cols["params"] = params_json(params)
    cols["label"] = label if label is not None else meta.get("method", "run")
    for key, value in params.items():
        cols[f"param_{key}"] = value
    extra = pd.DataFrame({k: [v] * len(df) for k, v in cols.items()}, index=df.index)
    return pd.concat([df, extra], axis=1)


# --------------------------------------------------------------------------- reading


def load(path: str | os.PathLike) -> pd.DataFrame:
    """All rows of the runs at ``path`` as one tidy DataFrame.

    ``path`` is a sweep folder (its ``runs/*.parquet``, in file-name order, each run's rows
    by round; or its ``results.parquet`` when ``runs/`` is absent), a ``.parquet`` file, or a
    trace ``.csv`` written by ``fedtheory run --out`` (its ``.json`` metadata, if beside it,
    fills the provenance columns). Raises :class:`FedTheoryError` when nothing is there.
    """
    path = Path(path)
    check(path.exists(), f"results path {str(path)!r} does not exist")
    if path.is_dir():
        files = sorted((path / RUNS_DIR).glob("*.parquet"))
        if files:
            df = pd.concat([_read_parquet(f) for f in files], ignore_index=True)
            params = sorted(c for c in df.columns if c.startswith("param_"))
            for c in params:  # a parameter some methods lack: missing is None, as in Parquet
                if df[c].dtype == object:
                    df[c] = df[c].astype(object).where(df[c].notna(), None)
            return df[[c for c in df.columns if c not in params] + params]
        if (path / RESULTS_FILE).is_file():
            return _read_parquet(path / RESULTS_FILE)
        raise FedTheoryError(
            f"{path}: no runs found (expected {RUNS_DIR}/*.parquet or "
            f"{RESULTS_FILE}; is this a sweep folder?)"
        )
    if path.suffix == ".parquet":
        return _read_parquet(path)
    if path.suffix == ".csv":
        return _read_trace_csv(path)
    raise FedTheoryError(
        f"cannot read results from {str(path)!r}: expected a sweep folder, "
        f"a .parquet file or a trace .csv"
    )


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path, engine="pyarrow")
    except ImportError:
        raise FedTheoryError("reading Parquet needs pyarrow: pip install pyarrow") from None
    except Exception as exc:  # pyarrow raises its own error types on a damaged file
        raise FedTheoryError(f"{path}: not a readable Parquet file ({exc})") from None


def _read_trace_csv(path: Path) -> pd.DataFrame:
    try:
        df = read_trace_csv(path)
    except (OSError, ValueError) as exc:
        raise FedTheoryError(f"{path}: not a readable CSV file ({exc})") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    check(not missing, f"{path}: not a fedtheory trace CSV (missing columns {', '.join(missing)})")
    meta_path = path.with_suffix(".json")
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FedTheoryError(f"{meta_path}: unreadable run metadata ({exc})") from None
    meta.setdefault("method", path.stem)
    return _with_meta(df, meta, None)


# --------------------------------------------------------------------------- writing


def write_parquet(df: pd.DataFrame, path: Path) -> Path:
    """Write ``df`` to ``path`` as Parquet (pyarrow), atomically."""
    df = df.copy()
    df.attrs = {}
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise FedTheoryError("writing Parquet needs pyarrow: pip install pyarrow") from None
    return write_atomic(path, lambda tmp: df.to_parquet(tmp, engine="pyarrow", index=False))


def consolidate(out_dir: str | os.PathLike) -> Path:
    """Write every run of the sweep folder ``out_dir`` into ``out_dir/results.parquet``
    (atomically) and return its path."""
    out_dir = Path(out_dir)
    check(out_dir.is_dir(), f"sweep folder {str(out_dir)!r} does not exist")
    check(
        any((out_dir / RUNS_DIR).glob("*.parquet")),
        f"{out_dir}: no runs to consolidate (no {RUNS_DIR}/*.parquet)",
    )
    return write_parquet(load(out_dir), out_dir / RESULTS_FILE)
