"""A FedPAC partial-participation sweep over many seeds: one batched run against a seed loop.

    python benchmarks/bench_batched_sweep.py [--quick] [--backend numpy|cupy] [--out FILE.json]
        [--seeds 1000] [--rounds 200] [--cpu-seeds 10] [--N 64] [--d 50] [--rows 64]

Problem: an IID synthetic logistic problem, N clients of --rows rows each, d features: every
row a ~ N(0, I_d), every label y = +1 with probability sigmoid(a^T w) for one shared w ~
N(0, 4 I_d / d) (so margins are O(1) and no client's data are separable), lam = --lam
(default 3e-2), weights n_i / n. Method: FedPAC with its defaults (K = 1, eta = 1, beta = 0.5,
rho = 0.9).

Why lam = 3e-2: the equality check below needs a contractive iteration. With lam = 1e-3 and
S = 1 (one 64-row client per round, heavy-ball beta = 0.5) FedPAC is not contractive: its
iterates wander at dist_to_opt ~ 300 (||theta*|| ~ 2), a 1e-13 change of theta^0 grows to a
20 % change of the final dist_to_opt in 200 rounds, and batched CuPy against one-by-one NumPy
differed by 4 %. At lam = 1e-2 the same 1e-13 change still grows to ~3e-9; at lam = 3e-2 it
dies out for every S (the timings do not depend on lam).

For each S in --S (participants per round):
  batched      one ``run_batch(problem, fedpac, rounds, seeds=range(seeds), participation=S,
               log_every=rounds)`` on --backend: total wall seconds (metrics at rounds 0 and
               `rounds` included), after a 2-seed, 2-round warm-up;
  one-by-one   ``run(problem, fedpac, rounds, seed=s, participation=S, drift_metrics=False,
               log_every=rounds)`` on NumPy for s in range(cpu_seeds): measured total wall
               seconds, and that total extrapolated linearly to all seeds (x seeds/cpu_seeds);
  check        the final dist_to_opt (and status) of every timed one-by-one seed equals the
               batched run of the same seed to 1e-8 relative (asserted once every S is done
               and the table and JSON are written);
  speedup      extrapolated one-by-one seconds / batched seconds.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time

import numpy as np

from bench_round import machine
from fedtheory import make_method, run
from fedtheory.problem import FederatedProblem
from fedtheory.runner import run_batch

CHECK_RTOL = 1e-8
TARGET_SPEEDUP = 50.0


def iid_logistic(N: int, d: int, rows: int, lam: float, seed: int = 0) -> FederatedProblem:
    """N clients of ``rows`` i.i.d. rows of one logistic model (see the module docstring)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d) * (2.0 / np.sqrt(d))
    Xs, ys = [], []
    for _ in range(N):
        X = rng.normal(size=(rows, d))
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        Xs.append(X)
        ys.append(np.where(rng.random(rows) < p, 1.0, -1.0))
    return FederatedProblem.from_clients(Xs, ys, objective="logistic", lam=lam,
                                         name=f"iid_logistic_N{N}_d{d}_n{rows}")


def _sync(xp) -> None:
    if xp.__name__ == "cupy":
        xp.cuda.Device().synchronize()


def bench_S(host: FederatedProblem, problem: FederatedProblem, method, S: int,
            args: argparse.Namespace) -> dict:
    xp = problem.xp
    run_batch(problem, method, 2, seeds=[0, 1], participation=S, log_every=2)   # warm-up
    _sync(xp)
    start = time.perf_counter()
    batched = run_batch(problem, method, args.rounds, seeds=range(args.seeds), participation=S,
                        log_every=args.rounds)
    _sync(xp)
    t_batched = time.perf_counter() - start

    run(host, method, 2, seed=0, participation=S, drift_metrics=False, log_every=2)  # warm-up
    n_cpu = min(args.cpu_seeds, args.seeds)
    singles = []
    start = time.perf_counter()
    for s in range(n_cpu):
        singles.append(run(host, method, args.rounds, seed=s, participation=S,
                           drift_metrics=False, log_every=args.rounds))
    t_cpu = time.perf_counter() - start

    worst, failures = 0.0, []
    for s, single in enumerate(singles):
        b = batched[s]
        a, c = single.final["dist_to_opt"], b.final["dist_to_opt"]
        err = abs(a - c) / max(abs(a), abs(c), 1e-300)
        worst = max(worst, err)
        if (single.status, single.final["round"]) != (b.status, b.final["round"]):
            failures.append(f"S={S} seed {s}: one-by-one {single.status} at round "
                            f"{single.final['round']}, batched {b.status} at {b.final['round']}")
        elif not err <= CHECK_RTOL:
            failures.append(f"S={S} seed {s}: final dist_to_opt {a!r} one-by-one vs {c!r} "
                            f"batched, relative difference {err:.3e} > {CHECK_RTOL:g}")
    final = np.array([tr.final["dist_to_opt"] for tr in batched])
    t_cpu_all = t_cpu * args.seeds / n_cpu
    return {"S": S, "batched_s": t_batched, "cpu_seeds_timed": n_cpu,
            "cpu_measured_s": t_cpu, "cpu_extrapolated_s": t_cpu_all,
            "speedup": t_cpu_all / t_batched, "check_max_rel_diff": worst,
            "check_failures": failures,
            "diverged": int(sum(tr.status == "diverged" for tr in batched)),
            "median_final_dist_to_opt": float(np.median(final))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 seeds, 20 rounds, 3 CPU seeds")
    ap.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                    help="backend of the batched runs (the one-by-one runs are NumPy)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per S (default 1000)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per run (default 200)")
    ap.add_argument("--cpu-seeds", type=int, default=None,
                    help="seeds timed one by one per S (default 10)")
    ap.add_argument("--S", default="1,2,4,8,16,32,64", help="participants per round")
    ap.add_argument("--N", type=int, default=64)
    ap.add_argument("--d", type=int, default=50)
    ap.add_argument("--rows", type=int, default=64, help="rows per client")
    ap.add_argument("--lam", type=float, default=3e-2)
    ap.add_argument("--out", help="write the figures to this JSON file")
    args = ap.parse_args()
    for key, full, quick in (("seeds", 1000, 20), ("rounds", 200, 20), ("cpu_seeds", 10, 3)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    S_list = [int(s) for s in args.S.split(",")]

    info = machine(args.backend)
    command = "python " + shlex.join(sys.argv)
    print(f"# {command}")
    print("# machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    host = iid_logistic(args.N, args.d, args.rows, args.lam)
    host.reference  # noqa: B018  (cached, copied by .to(); not part of any timing)
    problem = host.to("cupy") if args.backend == "cupy" else host
    method = make_method("fedpac", {})
    print(f"# {host.name}: N={host.N}, {args.rows} rows/client, d={host.d}, lam={args.lam:g}; "
          f"fedpac {method.params()}; {args.seeds} seeds x {args.rounds} rounds per S")
    print(f"# batched: one run_batch per S on {args.backend}; one-by-one: run() per seed on "
          f"numpy, {min(args.cpu_seeds, args.seeds)} seeds measured, extrapolated x "
          f"{args.seeds}/{min(args.cpu_seeds, args.seeds)}")
    print(f"{'S':>4}{'batched s':>11}{'1-by-1 s':>11}{'(seeds)':>8}{'1-by-1 s':>12}"
          f"{'speedup':>9}{'check':>10}{'diverged':>9}{'med dist':>10}")
    print(f"{'':>4}{'(all)':>11}{'measured':>11}{'':>8}{'extrapol.':>12}")
    rows = []
    for S in S_list:
        r = bench_S(host, problem, method, S, args)
        rows.append(r)
        print(f"{S:>4d}{r['batched_s']:>11.3f}{r['cpu_measured_s']:>11.3f}"
              f"{r['cpu_seeds_timed']:>8d}{r['cpu_extrapolated_s']:>12.2f}{r['speedup']:>9.1f}"
              f"{r['check_max_rel_diff']:>10.1e}{r['diverged']:>9d}"
              f"{r['median_final_dist_to_opt']:>10.2e}", flush=True)
    t_b = sum(r["batched_s"] for r in rows)
    t_c = sum(r["cpu_extrapolated_s"] for r in rows)
    total = {"batched_s": t_b, "cpu_measured_s": sum(r["cpu_measured_s"] for r in rows),
             "cpu_extrapolated_s": t_c, "speedup": t_c / t_b,
             "target_speedup": TARGET_SPEEDUP, "target_met": t_c / t_b >= TARGET_SPEEDUP}
    print(f"{'all':>4}{t_b:>11.3f}{total['cpu_measured_s']:>11.3f}{'':>8}{t_c:>12.2f}"
          f"{total['speedup']:>9.1f}")
    print(f"# speedup = extrapolated one-by-one NumPy seconds / batched {args.backend} seconds; "
          f"target >= {TARGET_SPEEDUP:g}x overall: {'met' if total['target_met'] else 'NOT met'}"
          f"; check = max relative difference of final dist_to_opt over the timed seeds "
          f"(asserted <= {CHECK_RTOL:g})")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"benchmark": "bench_batched_sweep", "command": command, "machine": info,
                       "args": vars(args), "method": method.params(), "rows": rows,
                       "total": total}, fh, indent=2)
        print(f"# wrote {args.out}")
    failures = [f for r in rows for f in r["check_failures"]]
    assert not failures, "batched and one-by-one runs differ:\n" + "\n".join(failures)


if __name__ == "__main__":
    main()
