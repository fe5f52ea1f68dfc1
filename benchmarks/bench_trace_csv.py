"""Reading a large trace CSV: ``fedtheory.trace.read_csv`` (pandas' pyarrow engine) against the
reader it replaced (Python's ``float`` on every cell through the ``csv`` module), issue 17
item 10.

    OMP_NUM_THREADS=1 python benchmarks/bench_trace_csv.py [--rows 200000] [--repeat 3]
        [--out FILE.txt]

The file is what ``Trace.to_csv`` writes for a run of ``--rows`` logged rounds: the 18 columns
of ``fedtheory.trace.COLUMNS``, ``round`` an integer, every other cell the ``repr`` of a float64
drawn from random bit patterns (every exponent, denormals included; NaN and inf patterns are
kept, so "nan", "inf" and "-inf" cells occur too) -- the hardest input for a decimal parser.
Both readers must give the same bits (checked); the best of ``--repeat`` wall times is printed,
and the speed-up (old / new). Timings are measurements, not assertions: nothing here fails on a
slow machine.
"""

from __future__ import annotations

import argparse
import csv
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow

from fedtheory.trace import COLUMNS, Trace, read_csv


def old_read_csv(path: Path) -> pd.DataFrame:
    """The reader before issue 17: ``float`` on every cell (exact, slow)."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [[float(x) for x in row] for row in reader]
    df = pd.DataFrame(rows, columns=header, dtype=float)
    df["round"] = df["round"].astype(int)
    return df


def make_trace(rows: int, seed: int = 0) -> Trace:
    rng = np.random.default_rng(seed)
    values = np.frombuffer(rng.bytes(8 * rows * (len(COLUMNS) - 1)), dtype=np.float64)
    values = values.reshape(rows, len(COLUMNS) - 1)
    names = COLUMNS[1:]
    return Trace(
        rows=[
            {"round": i, **dict(zip(names, map(float, values[i]), strict=True))}
            for i in range(rows)
        ]
    )


def best_of(fn, path: Path, repeat: int) -> tuple[float, pd.DataFrame]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(path)
        best = min(best, time.perf_counter() - t0)
    return best, out


def same_bits(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    return all(
        np.array_equal(a[c].to_numpy().view(np.int64), b[c].to_numpy().view(np.int64))
        for c in a.columns
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = make_trace(args.rows).to_csv(Path(tmp) / "trace.csv")
        size = path.stat().st_size
        t_old, old = best_of(old_read_csv, path, args.repeat)
        t_new, new = best_of(read_csv, path, args.repeat)
        c_engine = pd.read_csv(path, engine="c")
        c_wrong = sum(
            int(
                np.sum(
                    c_engine[c].to_numpy(dtype=float).view(np.int64)
                    != old[c].to_numpy().view(np.int64)
                )
            )
            for c in COLUMNS[1:]
        )
    exact = same_bits(old, new)
    lines = [
        f"trace CSV: {args.rows} rows x {len(COLUMNS)} columns, {size / 2**20:.1f} MiB "
        f"(random float64 bit patterns, repr text)",
        f"python {platform.python_version()}, pandas {pd.__version__}, "
        f"pyarrow {pyarrow.__version__}, numpy {np.__version__}, {platform.machine()}",
        f"old reader (csv + float per cell): {t_old:.3f} s (best of {args.repeat})",
        f"read_csv (pandas engine=pyarrow):  {t_new:.3f} s (best of {args.repeat})",
        f"speed-up: {t_old / t_new:.1f}x; same bits as the old reader: {exact}",
        f"pandas' default C engine, for comparison: {c_wrong} of "
        f"{args.rows * (len(COLUMNS) - 1)} float cells differ from the exact value",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text)
    if not exact:
        raise SystemExit("read_csv is NOT exact on this file")


if __name__ == "__main__":
    main()
