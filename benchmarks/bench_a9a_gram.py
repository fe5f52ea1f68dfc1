"""The a9a FedPM K = 1 round and its sparse client Hessians, old and new ``csr_gram`` side by side.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_a9a_gram.py [--runs 5] [--repeat 15]
        [--json FILE]

Issue 14 asks for one FedPM K = 1 round on the a9a FedNL split (``bench_peers.py``'s ``a9a``,
sparse storage: 80 clients x 407 rows, d = 123) at <= 0.5x a matmul of equal dense flops.
This script times, in one process and interleaved (so both see the same machine load):

- ``gram``: :func:`fedtheory.kernels.csr_gram` on the 80 clients, against ``old_csr_gram``
  below, a copy of the kernel before the packed triangle (zero the client's d x d matrix, add
  the products one non-zero at a time into its lower triangle, mirror it: three passes over the
  9.7 MB stack); both results are checked to be equal bit for bit;
- ``gram_sum``: :func:`fedtheory.kernels.csr_gram_sum` (the global matrix) against the old one;
- ``solve``: :func:`fedtheory.kernels.spd_solve_stack` on that stack, one right-hand side each;
- ``mix``: :func:`fedtheory.kernels.mix_and_apply` on it (FedPM's server inputs);
- ``round``: one FedPM K = 1 round (consecutive rounds from theta = 0 of one method state, as
  in ``bench_peers.py``), with the new kernel or with the old one (``kernels.csr_gram``
  replaced for that call) in turn, each right after the matmul of ``bench_peers.py``'s flop
  model (ratio = round / matmul), so that every round starts with the caches the matmul left,
  as in ``bench_peers.py``.

v is the logistic Hessian weight sigma'(a^T theta) / n at a random theta (N(0, 0.1)). Cost:
CPU core-seconds (``time.process_time``), the median over ``--repeat`` calls after one warm-up
(on this shared machine the minimum of a cold round varied by 0.5 ms between runs, more than
the change timed), per run; ``--runs`` runs, and the median over the runs of each figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numba as nb
import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peers import a9a, cpu_seconds, flops, matmul_runner, round_runner  # noqa: E402

from fedtheory import kernels  # noqa: E402

_U = np.uint64


# ---- the kernel before the packed triangle (fedtheory/kernels.py, issue 14) ----------------
@nb.njit(cache=True, nogil=True)
def _old_csr_accumulate(H, data, indices, indptr, c, row_start, v_row, cols, vals):
    d = _U(H.shape[0])
    Hf = H.reshape(H.size)
    r0 = _U(row_start[c])
    for j in range(_U(row_start[c + _U(1)]) - r0):
        w = v_row[j]
        if w == 0.0:
            continue
        lo = _U(indptr[r0 + j])
        nnz = _U(indptr[r0 + j + _U(1)]) - lo
        for a in range(nnz):
            cols[a] = _U(indices[lo + a])
            vals[a] = data[lo + a]
        for a in range(nnz):
            base = cols[a] * d
            wa = w * vals[a]
            for b in range(a + _U(1)):
                Hf[base + cols[b]] += wa * vals[b]


@nb.njit(cache=True, nogil=True)
def old_csr_gram(data, indices, indptr, row_start, clients, v, lam, out):
    d = out.shape[1]
    cols, vals = np.empty(d, dtype=np.uint64), np.empty(d)
    for k in range(clients.shape[0]):
        H = out[k]
        H[:, :] = 0.0
        _old_csr_accumulate(H, data, indices, indptr, _U(clients[k]), row_start, v[k], cols, vals)
        kernels._mirror_lower(H, lam)  # unchanged, still the dense path's


@nb.njit(cache=True, nogil=True)
def old_csr_gram_sum(data, indices, indptr, row_start, clients, v, lam, out):
    d = out.shape[0]
    cols, vals = np.empty(d, dtype=np.uint64), np.empty(d)
    out[:, :] = 0.0
    for k in range(clients.shape[0]):
        _old_csr_accumulate(out, data, indices, indptr, _U(clients[k]), row_start, v[k], cols, vals)
    kernels._mirror_lower(out, lam)


# ---- one run ----------------------------------------------------------------------------------
def one_run(repeat: int, rng: np.random.Generator) -> dict:
    problem = a9a("sparse")
    A, lam = problem.A, problem.lam
    m, n_max, d = A.shape
    z = kernels.csr_margins(
        A.data, A.indices, A.indptr, A.row_start, A.clients, n_max, rng.normal(0, 0.1, (1, d))
    )
    s = 1.0 / (1.0 + np.exp(-z))
    v = np.ascontiguousarray(s * (1.0 - s) / n_max)
    csr = (A.data, A.indices, A.indptr, A.row_start, A.clients, v, lam)
    H_old, H_new = np.empty((m, d, d)), np.empty((m, d, d))
    S_old, S_new = np.empty((d, d)), np.empty((d, d))
    old_csr_gram(*csr, H_old)
    kernels.csr_gram(*csr, H_new)
    old_csr_gram_sum(*csr, S_old)
    kernels.csr_gram_sum(*csr, S_new)
    if not (np.array_equal(H_old, H_new) and np.array_equal(S_old, S_new)):
        raise AssertionError("the new csr_gram / csr_gram_sum differ from the old ones")
    b, x = rng.normal(size=(m, 1, d)), np.empty((m, 1, d))
    w, theta = np.full(m, 1.0 / m), rng.normal(size=(m, d))
    S, Pv = np.empty((d, d)), np.empty((m, d))

    step = round_runner(problem, "fedpm")

    def old_round() -> None:
        with swapped(kernels, "csr_gram", old_csr_gram):
            step()

    _, mm = matmul_runner(flops("fedpm", problem))
    parts = {
        "gram_old": lambda: old_csr_gram(*csr, H_new),
        "gram_new": lambda: kernels.csr_gram(*csr, H_new),
        "gram_sum_old": lambda: old_csr_gram_sum(*csr, S_old),
        "gram_sum_new": lambda: kernels.csr_gram_sum(*csr, S_new),
        "solve": lambda: kernels.spd_solve_stack(H_new, b, x),
        "mix": lambda: kernels.mix_and_apply(H_new, theta, w, S, Pv),
    }
    return timed(parts, {"round_old": old_round, "round_new": step}, mm, repeat)


@contextmanager
def swapped(module: Any, name: str, value: Any) -> Iterator[None]:
    """``module.name`` is ``value`` inside the block (the old implementation of a round's
    kernel, for the side-by-side timing), and what it was again after it."""
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


def timed(parts: dict, rounds: dict, mm: Callable[[], None], repeat: int) -> dict:
    """Median CPU seconds of each part (``repeat`` calls, old and new interleaved, after one
    warm-up) and of each round, every round right after the matmul ``mm`` (its cache state,
    as in ``bench_peers.py``), old and new first in turn; the rounds apart from the parts (a
    round right after them ran ~1.5 ms slower). ratio_old / ratio_new = round / matmul."""
    rounds = {**rounds, "matmul": mm}
    times = {k: [] for k in (*parts, *rounds)}
    for fn in (*parts.values(), *rounds.values()):
        fn()
    for i in range(repeat):
        for k in list(parts)[:: 1 if i % 2 else -1]:
            times[k].append(cpu_seconds(parts[k])[0])
    for i in range(repeat):
        for k in ("round_old", "round_new")[:: 1 if i % 2 else -1]:
            times["matmul"].append(cpu_seconds(mm)[0])
            times[k].append(cpu_seconds(rounds[k])[0])
    out = {k: float(np.median(t)) for k, t in times.items()}
    out["ratio_old"] = out["round_old"] / out["matmul"]
    out["ratio_new"] = out["round_new"] / out["matmul"]
    return out


def _row(label: str, figures: dict) -> str:
    return f"{label:<4}" + "".join(
        f"{v:>13.2f}" if k.startswith("ratio") else f"{v * 1e3:>13.3f}" for k, v in figures.items()
    )


def interleaved_main(one_run: Callable[[int, np.random.Generator], dict], doc: str) -> None:
    """The command line of this benchmark and of ``bench_a9a_fused.py``: ``--runs`` runs of
    ``one_run(repeat, rng)`` with one BLAS thread, a row of figures per run (ms; ratios as
    they are), their medians, and ``--json``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--json", help="write every run's figures to this file")
    args = ap.parse_args()
    print(f"command: {' '.join(sys.argv)}; NumPy {np.__version__}; 1 BLAS thread")
    rng = np.random.default_rng(0)
    runs = []
    with threadpool_limits(limits=1):
        for r in range(args.runs):
            runs.append(one_run(args.repeat, rng))
            if r == 0:
                print("run " + "".join(f"{k:>13}" for k in runs[0]))
            print(_row(str(r + 1), runs[-1]), flush=True)
    med = {k: float(np.median([run[k] for run in runs])) for k in runs[0]}
    print(_row("med", med))
    print("(ms, CPU; median over the repeats, then over the runs; ratio = round / matmul)")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"argv": sys.argv, "runs": runs, "median": med}, indent=1)
        )


if __name__ == "__main__":
    interleaved_main(one_run, __doc__)
