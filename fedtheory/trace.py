"""Trace: the tidy per-round rows of one run (docs/algorithms.md "Per-round metrics").

One row per logged round with the columns of :data:`COLUMNS`; ``trace["dist_to_opt"]`` is a
NumPy column, ``to_frame()`` a pandas DataFrame, ``to_csv(path)`` writes atomically (a temporary
file renamed into place, so a crash never leaves a half-written file).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._io import write_atomic

COLUMNS = (
    "round",
    "dist_to_opt",
    "rel_dist",
    "subopt",
    "grad_norm",
    "participants",
    "uplink_floats",
    "downlink_floats",
    "bits",
    "local_grad_evals",
    "local_hess_evals",
    "seconds",
    "metric_seconds",
    "drift",
    "rel_drift",
    "hess_gap",
    "grad_dissimilarity",
    "client_drift",
)

#: wall-time columns: never reproducible, left out when comparing runs (``--no-timing``
#: writes them as NaN, "not measured")
TIMING = ("seconds", "metric_seconds")

STATUSES = ("completed", "reached_target", "diverged", "stalled", "oscillating")


@dataclass
class Trace:
    """Rows of one run plus its status (one of :data:`STATUSES`; see
    :func:`fedtheory.runner.metrics.settled_status` for "stalled" and "oscillating") and
    metadata (problem, method, parameters, seed, participation, reference solution)."""

    rows: list[dict[str, float]] = field(default_factory=list)
    status: str = "completed"
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, column: str) -> np.ndarray:
        if column not in COLUMNS:
            raise KeyError(f"unknown column {column!r}; columns: {', '.join(COLUMNS)}")
        return np.array([r[column] for r in self.rows], dtype=float)

    @property
    def final(self) -> dict[str, float]:
        return self.rows[-1]

    def to_frame(self) -> Any:
        import pandas as pd

        df = pd.DataFrame(self.rows, columns=list(COLUMNS))
        df["round"] = df["round"].astype(int)
        df.attrs.update(self.meta, status=self.status)
        return df

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the rows to ``path`` atomically; returns the path."""
        return write_atomic(path, self.csv_writer())

    def csv_writer(self) -> Callable[[str], None]:
        """A writer of the rows as CSV into a given file (for :mod:`fedtheory._io`)."""

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(COLUMNS)
                for r in self.rows:
                    writer.writerow([_fmt(r[c]) for c in COLUMNS])

        return write

    def _repr_html_(self) -> str:
        """The notebook view: status, metadata and the first and last rows as a table."""
        import html

        head = (
            f"<b>Trace</b>: {html.escape(str(self.meta.get('method', '?')))} on "
            f"{html.escape(str(self.meta.get('problem', '?')))}, {len(self.rows)} rows, "
            f"status <b>{html.escape(self.status)}</b>"
        )
        if not self.rows:
            return head
        df = self.to_frame()[
            ["round", "dist_to_opt", "rel_dist", "subopt", "grad_norm", "uplink_floats", "bits"]
        ]
        body = df if len(df) <= 12 else df.iloc[list(range(6)) + list(range(len(df) - 6, len(df)))]
        return head + body.to_html(index=False, float_format=lambda v: f"{v:.3e}")

    def __repr__(self) -> str:
        last = self.rows[-1]["dist_to_opt"] if self.rows else float("nan")
        return (
            f"Trace({self.meta.get('method', '?')} on {self.meta.get('problem', '?')}, "
            f"{len(self.rows)} rows, status={self.status!r}, final dist_to_opt={last:.3e})"
        )

    def table(
        self,
        columns: tuple[str, ...] = (
            "round",
            "dist_to_opt",
            "rel_dist",
            "subopt",
            "grad_norm",
            "drift",
            "uplink_floats",
        ),
    ) -> str:
        """The rows as a fixed-width text table."""
        head = "".join(f"{c:>14}" for c in columns)
        lines = [head]
        for r in self.rows:
            lines.append(
                "".join(f"{int(r[c]):>14d}" if c == "round" else f"{r[c]:>14.4e}" for c in columns)
            )
        return "\n".join(lines)


def read_csv(path: str | os.PathLike) -> Any:
    """A trace CSV (as written by :meth:`Trace.to_csv`) as a DataFrame, every float parsed
    exactly: ``round`` as int64, every other column as float64. Raises ValueError on a
    malformed file (no header, a duplicated column name, a row of the wrong length, a cell
    that is not a number: an empty cell too, as the writer never leaves one).

    The cells go through ``pandas.read_csv(engine="pyarrow")``: Arrow converts text to double
    with a correctly rounded algorithm (fast_float), so the ``repr`` text the writer puts in
    every cell comes back as the same bits. pandas' default C parser is not exact on every
    version (pandas 2.0.0 reads about a third of random float64 one ulp off); Python's
    ``float`` on each cell, the reader before this one, is exact too but 6.5x slower on a
    200,000-row file (``benchmarks/bench_trace_csv.py``). No fallback: pyarrow is a required
    dependency, and ``tests/test_item10_csv_reader.py`` compares the bits with ``float``'s on
    ~100,000 random doubles (denormals, extremes), at the dependency floors too
    (``.ci/floors``)."""
    import pandas as pd

    with open(path, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh), None)
    if not header:
        raise ValueError("empty file")
    if len(set(header)) != len(header):
        dup = sorted({c for c in header if header.count(c) > 1})
        raise ValueError(f"duplicated column names {', '.join(dup)}")
    types = {c: ("int64" if c == "round" else "float64") for c in header}
    # only the writer's "nan" is missing (Arrow reads it as NaN itself); pandas' other NA
    # strings ("", "NA", "null", ...) are not numbers, so a cell holding one is an error
    return pd.read_csv(
        path, engine="pyarrow", dtype=types, keep_default_na=False, na_values=[], encoding="utf-8"
    )


def _fmt(x: float) -> str:
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if math.isnan(x):
        return "nan"
    return repr(float(x))
