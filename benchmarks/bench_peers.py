"""Side by side, in one run: fedtheory, the u-FedNL binary and a matmul of equal dense flops.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_peers.py [--ufednl PATH] [--repeat 7]
        [--problems w8a,a9a,dense] [--ops newton,fedpm,fednl] [--w8a PATH] [--blas-threads 1]
        [--json FILE]

Problems (the FedNL splits: rows in file order, no intercept, lam = 1e-3, logistic):
- ``w8a``: the first 49,700 rows of LIBSVM w8a (``--w8a``, default
  ``../shared/datasets/w8a.txt.gz``; skipped when absent), 142 clients x 350 rows, d = 300;
- ``a9a``: the suite's ``a9a_fednl`` (bundled data), 80 clients x 407 rows, d = 123;
- ``dense``: the w8a-shaped dense synthetic of ``bench_round.py`` (binary features of density
  0.04), stored dense.
w8a and a9a are timed in both storages: ``sparse`` (what ``storage="auto"`` picks for them) and
``dense`` (forced: the padded array and BLAS dsyrk per client).

Operations, full participation, consecutive rounds from theta = 0:
- ``newton``: one exact Newton step (method ``newton``);
- ``fedpm``: one FedPM round with K = 1;
- ``fednl-fro`` / ``fednl-spec``: one FedNL round, option 2, top-K with Kc = 8d, alpha = 1,
  l^k in the Frobenius / spectral norm (``l_norm``; only ``fednl`` when the installed FedNL
  has no ``l_norm`` option: the spectral norm).

Cost: CPU core-seconds (``time.process_time``: every thread of the process) of one operation
with ``--blas-threads`` BLAS threads (threadpoolctl), the minimum over ``--repeat`` operations
after one warm-up (the wall time, also a minimum, is printed beside it). ``matmul``: one
square float64 product C = A B of size m, 2 m^3 = the operation's dense flop model, timed the
same way right after the operation (ratio = op / matmul).
Dense flop models (N clients of n rows, d features; the client Hessians dominate):
    Hessians 2 N n d^2, margins and gradients 4 N n d, every solve d^3 / 3 + 2 d^2;
    newton  + N d^2 (sum of H_i) + one solve;
    fedpm   + N solves + 3 N d^2 (P_i theta_i, the sums) + one solve   (as bench_round.py);
    fednl   + 3 N d^2 (H^k, the differences, top-K) + l^k (Frobenius 2 N d^2, spectral
              4/3 N d^3) + one solve.

u-FedNL (``--ufednl`` PATH of ``bin_fednl_local``; skipped when not given): FedNL option B
(= option 2, Frobenius l^k) with its top-K (K = 8d; not an exact top-K, so only its cost is
compared), alpha = 1, lambda = 1e-3, on the same LIBSVM file (decompressed to a temporary file)
and the same split (it takes floor(n / N) rows per client in file order), with its defaults of
one client worker and no extra server workers. Cost per round = (CPU of a run of R2 rounds - CPU
of a run of R1 rounds) / (R2 - R1) from the children's rusage, so loading and the initial
Hessians cancel; the minimum over 3 pairs of runs. Its binary spin-waits between a client and
the server thread, so its core-seconds exceed its wall time; the table also gives its wall
time per round pinned to one core (``taskset -c 0``), from its own "Average time per round".
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from fedtheory import make_method
from fedtheory.data import load_a9a, read_libsvm
from fedtheory.methods import round_context
from fedtheory.methods.fednl import FedNL
from fedtheory.partitions import contiguous
from fedtheory.problem import FederatedProblem

ROOT = Path(__file__).resolve().parents[1]
W8A_DEFAULT = ROOT.parent / "shared" / "datasets" / "w8a.txt.gz"
R1, R2 = 5, 25  # u-FedNL rounds of the two runs whose difference is timed


# ---- problems ---------------------------------------------------------------------------------
def w8a(path: Path, storage: str) -> FederatedProblem:
    ds = read_libsvm(path, rows=49700, n_features=300)
    return FederatedProblem.from_dataset(
        ds.X,
        ds.y,
        contiguous(49700, 142),
        objective="logistic",
        lam=1e-3,
        name="w8a_fednl",
        storage=storage,
    )


def a9a(storage: str) -> FederatedProblem:
    ds = load_a9a()
    return FederatedProblem.from_dataset(
        ds.X,
        ds.y,
        contiguous(32560, 80),
        objective="logistic",
        lam=1e-3,
        name="a9a_fednl",
        storage=storage,
    )


def dense_synthetic() -> FederatedProblem:
    """bench_round.py's w8a-shaped synthetic, stored dense."""
    rng = np.random.default_rng(0)
    N, n, d = 142, 350, 300
    X = (rng.random((N * n, d)) < 0.04).astype(np.float64)
    w = rng.normal(size=d)
    y = np.where(X @ w + rng.normal(size=N * n) >= 0, 1.0, -1.0)
    return FederatedProblem.from_dataset(
        X,
        y,
        np.split(np.arange(N * n), N),
        objective="logistic",
        lam=1e-3,
        name="w8a_shaped",
        storage="dense",
    )


# ---- flop models ------------------------------------------------------------------------------
def flops(op: str, problem: FederatedProblem) -> float:
    N, n, d = problem.N, problem.A.shape[1], problem.d
    solve = d**3 / 3 + 2 * d**2
    base = 2 * N * n * d**2 + 4 * N * n * d
    if op == "newton":
        return base + N * d**2 + solve
    if op == "fedpm":
        return base + N * solve + 3 * N * d**2 + solve
    l_cost = 4 / 3 * N * d**3 if op.endswith("spec") else 2 * N * d**2
    return base + 3 * N * d**2 + l_cost + solve


# ---- timing -----------------------------------------------------------------------------------
def cpu_seconds(fn) -> tuple[float, float]:
    """(CPU core-seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def round_runner(problem: FederatedProblem, op: str):
    """A function that runs the next round of the operation's method (state carried over)."""
    d = problem.d
    if op == "newton":
        method = make_method("newton")
    elif op == "fedpm":
        method = make_method("fedpm", {"K": 1})
    else:
        params = {"option": 2, "compressor": "topK", "Kc": 8 * d, "alpha": 1.0}
        if op != "fednl":
            params["l_norm"] = "frobenius" if op.endswith("fro") else "spectral"
        method = make_method("fednl", params)
    ctx = round_context(problem)
    state, _ = method.start(problem, problem.xp.zeros(d))

    def step() -> None:
        nonlocal state
        state, _ = method.round(ctx, state)

    return step


def matmul_runner(total_flops: float):
    m = max(1, round((total_flops / 2) ** (1 / 3)))
    rng = np.random.default_rng(2)
    A, B = rng.normal(size=(m, m)), rng.normal(size=(m, m))
    return m, lambda: A @ B


def time_pair(problem: FederatedProblem, op: str, repeat: int) -> dict:
    step = round_runner(problem, op)
    m, mm = matmul_runner(flops(op, problem))
    step()
    mm()
    t_op, t_mm = [], []
    for _ in range(repeat):  # interleaved, so both see the same machine load
        t_op.append(cpu_seconds(step))
        t_mm.append(cpu_seconds(mm))
    return {
        "op_s": min(t[0] for t in t_op),
        "op_wall_s": min(t[1] for t in t_op),
        "matmul_s": min(t[0] for t in t_mm),
        "matmul_wall_s": min(t[1] for t in t_mm),
        "matmul_m": m,
        "gflop": flops(op, problem) / 1e9,
    }


# ---- u-FedNL ----------------------------------------------------------------------------------
def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def ufednl_command(binary: str, data: Path, clients: int, rounds: int, out: Path) -> list[str]:
    return [
        binary,
        "--train",
        "--train_dataset",
        str(data),
        "--clients",
        str(clients),
        "--lambda",
        "0.001",
        "--algorithm",
        "fednl1",
        "--fednl-option-b",
        "--compressor",
        "topk",
        "--k_compressor_as_d_mult",
        "8",
        "--alpha_step_size",
        "1",
        "--rounds",
        str(rounds),
        "--workers",
        "1",
        "--server_grad_workers",
        "0",
        "--server_hessian_workers",
        "0",
        "--out",
        str(out),
    ]


def run_ufednl(cmd: list[str], pin: bool) -> tuple[float, float]:
    """(CPU seconds, its own average wall ms per round) of one run."""
    if pin:
        cmd = ["taskset", "-c", "0", *cmd]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    before = _children_cpu()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    cpu = _children_cpu() - before
    if proc.returncode != 0 or "finished successfully" not in proc.stdout:
        raise RuntimeError(
            f"u-FedNL failed ({proc.returncode}): {' '.join(cmd)}\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    match = re.search(r"Average time per round: ([0-9.eE+-]+) milliseconds", proc.stdout)
    return cpu, float(match.group(1)) if match else float("nan")


def time_ufednl(binary: str, gz: Path, clients: int, tmp: Path) -> dict:
    data = tmp / gz.name.removesuffix(".gz").removesuffix(".txt")
    if not data.exists():
        with gzip.open(gz, "rb") as src, open(data, "wb") as dst:
            shutil.copyfileobj(src, dst)
    out = tmp / "ufednl_result.bin"
    per_round, pinned = [], []
    for _ in range(3):
        c1, _ = run_ufednl(ufednl_command(binary, data, clients, R1, out), pin=False)
        c2, _ = run_ufednl(ufednl_command(binary, data, clients, R2, out), pin=False)
        per_round.append((c2 - c1) / (R2 - R1))
        if shutil.which("taskset"):
            pinned.append(
                run_ufednl(ufednl_command(binary, data, clients, R2, out), pin=True)[1] / 1e3
            )
    return {
        "core_s_per_round": min(per_round),
        "pinned_wall_s_per_round": min(pinned) if pinned else float("nan"),
        "command": " ".join(ufednl_command(binary, data, clients, R2, out)),
    }


# ---- main -------------------------------------------------------------------------------------
def machine() -> dict:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    return {
        "lscpu": sh("lscpu | head -20 | grep -v '^Flags'"),
        "nproc": sh("env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def fednl_ops() -> list[str]:
    has_l_norm = "l_norm" in {f.name for f in dataclasses.fields(FedNL)}
    return ["fednl-fro", "fednl-spec"] if has_l_norm else ["fednl"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ufednl", help="path of u-FedNL's bin_fednl_local (skipped when absent)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--problems", default="w8a,a9a,dense")
    ap.add_argument("--w8a", default=str(W8A_DEFAULT), help="LIBSVM w8a (.gz)")
    ap.add_argument("--ops", default="newton,fedpm,fednl", help="a subset of newton,fedpm,fednl")
    ap.add_argument("--blas-threads", type=int, default=1)
    ap.add_argument("--json", help="write every figure to this file")
    args = ap.parse_args()
    info = machine()
    print(info["lscpu"])
    print(
        f"nproc: {info['nproc']}; {info['platform']}; Python {info['python']}; "
        f"NumPy {info['numpy']}; BLAS threads {args.blas_threads}; repeat {args.repeat}"
    )
    print(f"command: {' '.join(sys.argv)}\n")

    cases = []  # (problem label, storage, builder, LIBSVM .gz for u-FedNL or None)
    names = args.problems.split(",")
    w8a_path = Path(args.w8a)
    if "w8a" in names:
        if w8a_path.is_file():
            cases += [
                ("w8a", s, lambda s=s: w8a(w8a_path, s), w8a_path) for s in ("sparse", "dense")
            ]
        else:
            print(f"# w8a skipped: {w8a_path} not found")
    if "a9a" in names:
        with resources.as_file(resources.files("fedtheory") / "datasets" / "a9a.txt.gz") as p:
            a9a_gz = Path(p)
        cases += [("a9a", s, lambda s=s: a9a(s), a9a_gz) for s in ("sparse", "dense")]
    if "dense" in names:
        cases.append(("w8a-shaped", "dense", dense_synthetic, None))

    results, ufednl = [], {}
    header = (
        f"{'problem':<11}{'storage':<8}{'op':<11}{'GFLOP':>7}{'wall s':>9}{'core-s':>9}"
        f"{'matmul':>9}{'ratio':>7}{'u-FedNL':>9}{'x u-FedNL':>10}"
    )
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(limits=args.blas_threads):
        lines = [header]
        print(header, flush=True)
        for label, storage, build, gz in cases:
            problem = build()
            assert problem.storage == storage, (label, problem.storage)
            if args.ufednl and gz is not None and label not in ufednl:
                ufednl[label] = time_ufednl(args.ufednl, gz, problem.N, Path(tmp))
            wanted = args.ops.split(",")
            ops = [op for op in ("newton", "fedpm") if op in wanted]
            for op in ops + (fednl_ops() if "fednl" in wanted else []):
                r = time_pair(problem, op, args.repeat)
                r.update(
                    problem=label,
                    storage=storage,
                    op=op,
                    N=problem.N,
                    n=int(problem.A.shape[1]),
                    d=problem.d,
                )
                uf = (
                    ufednl.get(label, {}).get("core_s_per_round")
                    if op.startswith("fednl")
                    else None
                )
                r["ufednl_core_s"] = uf
                results.append(r)
                line = (
                    f"{label:<11}{storage:<8}{op:<11}{r['gflop']:>7.2f}"
                    f"{r['op_wall_s']:>9.4f}{r['op_s']:>9.4f}{r['matmul_s']:>9.4f}"
                    f"{r['op_s'] / r['matmul_s']:>7.2f}"
                    + (f"{uf:>9.4f}{r['op_s'] / uf:>10.2f}" if uf else "")
                )
                lines.append(line)
                print(line, flush=True)
        for label, u in ufednl.items():
            print(
                f"\nu-FedNL {label}: {u['core_s_per_round']:.4f} core-s per round "
                f"(rounds {R1} -> {R2}); pinned to 1 core: "
                f"{u['pinned_wall_s_per_round']:.4f} s per round\n  {u['command']}"
            )
    if not args.ufednl:
        print("\n# u-FedNL skipped: no --ufednl binary given")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"machine": info, "argv": sys.argv, "results": results, "ufednl": ufednl}, indent=1
            )
        )


if __name__ == "__main__":
    main()
