"""Seconds per FedPM K = 1 round against the number of clients N and against the dimension d.

    python benchmarks/bench_scaling.py [--quick] [--backend numpy|cupy] [--out FILE.json]
        [--plot FILE.png] [--repeat 10] [--budget 2.0]

One round is ``make_method("fedpm", {"K": 1}).round(ctx, state)`` on a full-participation
round context, as in bench_round.py. Problems are synthetic logistic problems: rows a ~ N(0, I_d),
labels y = sign(a^T w + noise), lam = 1e-3, rows split contiguously (np.array_split: client
sizes differ by at most one row; the oracle computes on the padded n_max rows).

  (i)  N in {10, 30, 100, 300, 1000, 3000, 10000} at n = 20000 rows in all, d = 20
       (n / N rows per client);
  (ii) d in {10, 20, 50, 100, 200, 400} at N = 100 clients of 50 rows.
--quick: (i) N in {10, 100, 1000} at n = 2000, (ii) d in {10, 20, 50}, fewer repeats.

Each figure is the median of up to --repeat timings after two warm-ups; a point stops
repeating (after at least 3 timings) once it has spent --budget seconds. GFLOP is the flop
model of bench_round.py (round_flops: client Hessians 2 N n d^2, gradients, N Cholesky
factorisations and solves, mixing, server solve), counted on the padded rows.
If time per round follows the flop count (GFLOP/s roughly constant once the work is large
enough to amortise fixed per-call costs) and seconds per client fall as N grows at fixed n,
no per-client Python overhead shows: nothing in the round loops over clients in Python.
The plot's dashed line is the flop model at the best rate of its series: the time each point
would take if it ran as fast as the best one; points far above it are latency- or
overhead-bound.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time

import numpy as np

from bench_round import machine, round_flops
from fedtheory import make_method
from fedtheory.methods import round_context
from fedtheory.problem import FederatedProblem


def synthetic(N: int, n: int, d: int, seed: int = 0) -> FederatedProblem:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    w = rng.normal(size=d) / np.sqrt(d)
    y = np.where(X @ w + 0.5 * rng.normal(size=n) >= 0, 1.0, -1.0)
    parts = np.array_split(np.arange(n), N)
    return FederatedProblem.from_dataset(
        X, y, parts, objective="logistic", lam=1e-3, name=f"synthetic_N{N}_n{n}_d{d}"
    )


def _sync(xp) -> None:
    if xp.__name__ == "cupy":
        xp.cuda.Device().synchronize()


def time_round(problem: FederatedProblem, repeat: int, budget: float) -> tuple[float, int]:
    """Median seconds of one FedPM K = 1 round, and the number of timings taken."""
    xp = problem.xp
    method = make_method("fedpm", {"K": 1, "eta": 1.0})
    theta = xp.asarray(np.random.default_rng(1).normal(size=problem.d) * 0.1)
    state, _ = method.start(problem, theta)
    ctx = round_context(problem)
    for _ in range(2):
        method.round(ctx, state)
    _sync(xp)
    times: list[float] = []
    while len(times) < repeat and (len(times) < 3 or sum(times) < budget):
        start = time.perf_counter()
        method.round(ctx, state)
        _sync(xp)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), len(times)


def measure(series: str, N: int, n: int, d: int, args: argparse.Namespace) -> dict:
    problem = synthetic(N, n, d)
    if args.backend == "cupy":
        problem = problem.to("cupy")
    t, reps = time_round(problem, args.repeat, args.budget)
    flops = round_flops(problem)
    row = {
        "series": series,
        "N": N,
        "n": problem.n,
        "n_max": int(problem.A.shape[1]),
        "d": d,
        "gflop": flops / 1e9,
        "s_per_round": t,
        "s_per_round_per_client": t / N,
        "gflop_per_s": flops / t / 1e9,
        "timings": reps,
    }
    print(
        f"{series:<4}{N:>7d}{row['n_max']:>7d}{d:>5d}{row['gflop']:>10.4f}{t:>12.3e}"
        f"{t / N:>13.3e}{row['gflop_per_s']:>9.2f}{reps:>5d}",
        flush=True,
    )
    return row


def plot(rows: list[dict], path: str, info: dict, sizes: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    panels = (
        (
            "N",
            "N",
            f"(i) n = {sizes['n_total']} rows in all, d = {sizes['d_fixed']}",
            "number of clients N",
        ),
        ("d", "d", f"(ii) N = {sizes['N_fixed']} clients x {sizes['rows']} rows", "dimension d"),
    )
    for ax, (series, key, title, xlabel) in zip(axes, panels, strict=True):
        pts = [r for r in rows if r["series"] == series]
        x = np.array([r[key] for r in pts], dtype=float)
        t = np.array([r["s_per_round"] for r in pts])
        gf = np.array([r["gflop"] for r in pts])
        rate = float(np.max(gf / t))  # GFLOP/s, the series' best
        ax.loglog(x, t, "o-", label="measured s / round")
        ax.loglog(
            x, gf / rate, "k--", lw=1, label=f"flop model at the best rate, {rate:.2g} GFLOP/s"
        )
        if series == "N":
            ax.loglog(x, t / x, "s:", label="measured s / round / client")
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    where = info.get("gpu") or f"{info['cpu_count']} CPU cores"
    fig.suptitle(f"FedPM K = 1, one round ({info['backend']}, {where})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    ap.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    ap.add_argument("--repeat", type=int, default=None, help="max timings per point (10)")
    ap.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds per point after which repeating stops (2.0)",
    )
    ap.add_argument("--out", help="write the figures to this JSON file")
    ap.add_argument("--plot", help="write a log-log plot of both series to this PNG file")
    args = ap.parse_args()
    for key, full, quick in (("repeat", 10, 3), ("budget", 2.0, 0.5)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if args.quick:
        sizes = {
            "N_list": [10, 100, 1000],
            "n_total": 2000,
            "d_fixed": 20,
            "d_list": [10, 20, 50],
            "N_fixed": 100,
            "rows": 50,
        }
    else:
        sizes = {
            "N_list": [10, 30, 100, 300, 1000, 3000, 10000],
            "n_total": 20000,
            "d_fixed": 20,
            "d_list": [10, 20, 50, 100, 200, 400],
            "N_fixed": 100,
            "rows": 50,
        }

    info = machine(args.backend)
    command = "python " + shlex.join(sys.argv)
    print(f"# {command}")
    print("# machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(
        f"# FedPM K = 1, full participation; median of <= {args.repeat} timings "
        f"(>= 3, until {args.budget:g} s spent) after 2 warm-ups; GFLOP from the flop model"
    )
    print(
        f"{'ser':<4}{'N':>7}{'n_max':>7}{'d':>5}{'GFLOP':>10}{'s/round':>12}"
        f"{'s/rnd/client':>13}{'GFLOP/s':>9}{'reps':>5}"
    )
    rows = []
    for N in sizes["N_list"]:
        rows.append(measure("N", N, sizes["n_total"], sizes["d_fixed"], args))
    for d in sizes["d_list"]:
        rows.append(measure("d", sizes["N_fixed"], sizes["N_fixed"] * sizes["rows"], d, args))
    print(
        "# series N: fixed total rows n, rows per client n/N; series d: fixed N and rows per "
        "client. s/rnd/client = s/round / N."
    )
    if args.plot:
        plot(rows, args.plot, info, sizes)
        print(f"# wrote {args.plot}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(
                {
                    "benchmark": "bench_scaling",
                    "command": command,
                    "machine": info,
                    "args": vars(args),
                    "sizes": sizes,
                    "rows": rows,
                },
                fh,
                indent=2,
            )
        print(f"# wrote {args.out}")


if __name__ == "__main__":
    main()
