"""A partial-participation sweep over many seeds: one batched run against a seed loop.

    python benchmarks/bench_batched_sweep.py [--quick] [--backend numpy|cupy] [--out FILE.json]
        [--seeds 1000] [--rounds 200] [--cpu-seeds 10] [--N 64] [--d 50] [--rows 64]
        [--method fedpac|scaffold|...] [--oracle exact|minibatch:B|gaussian:SIGMA]
        [--mode both|batched|cpu] [--check-seeds K] [--cpu-json FILE] [--target 200]
        [--profile-S S] [--profile-out FILE]

Problem: an IID synthetic logistic problem, N clients of --rows rows each, d features: every
row a ~ N(0, I_d), every label y = +1 with probability sigmoid(a^T w) for one shared w ~
N(0, 4 I_d / d) (so margins are O(1) and no client's data are separable), lam = --lam
(default 3e-2), weights n_i / n. Method: --method with its defaults (FedPAC, the default: K = 1,
eta = 1, beta = 0.5, rho = 0.9; SCAFFOLD: K = 1, eta = 0.5, eta_g = 1); oracle: --oracle (exact,
or ``minibatch:B`` = B rows per client and call drawn from each run's generator, or
``gaussian:SIGMA``).

Why lam = 3e-2: the equality check below needs a contractive iteration. With lam = 1e-3 and
S = 1 (one 64-row client per round, heavy-ball beta = 0.5) FedPAC is not contractive: its
iterates wander at dist_to_opt ~ 300 (||theta*|| ~ 2), a 1e-13 change of theta^0 grows to a
20 % change of the final dist_to_opt in 200 rounds, and batched CuPy against one-by-one NumPy
differed by 4 %. At lam = 1e-2 the same 1e-13 change still grows to ~3e-9; at lam = 3e-2 it
dies out for every S (the timings do not depend on lam).

For each S in --S (participants per round):
  batched      one ``run_batch(problem, fedpac, rounds, seeds=range(seeds), participation=S,
               log_every=rounds)`` on --backend: total wall seconds (metrics at rounds 0 and
               `rounds` included), after a 4-round warm-up of the same seeds (recorded
               rounds included);
  one-by-one   ``run(problem, fedpac, rounds, seed=s, participation=S, drift_metrics=False,
               log_every=rounds)`` on NumPy for s in range(cpu_seeds): measured total wall
               seconds, and that total extrapolated linearly to all seeds (x seeds/cpu_seeds);
  check        the final dist_to_opt (and status) of every timed one-by-one seed equals the
               batched run of the same seed to 1e-8 relative (asserted once every S is done
               and the table and JSON are written);
  speedup      extrapolated one-by-one seconds / batched seconds.

Modes (issue 15: the batched runs on a GPU machine, the one-by-one runs on another CPU):
  --mode both     as above, in one process (the default);
  --mode cpu      the one-by-one runs only: wall seconds AND CPU core-seconds
                  (time.process_time, every thread of the process; the runs use one BLAS thread)
                  per S, written to --out for a later --cpu-json;
  --mode batched  the batched runs, plus --check-seeds one-by-one NumPy seeds on the same
                  machine for the equality check (timed too, reported as that machine's CPU
                  figure); with --cpu-json FILE (a --mode cpu output of the same method, oracle,
                  problem and rounds) the speedup is FILE's extrapolated core-seconds / batched
                  seconds, else the local one-by-one seeds' wall seconds as in --mode both.
  --profile-S S   after the timings, cProfile one batched run at participation S with
                  rounds / 10 rounds, top functions by cumulative time to --profile-out (where the
                  batched round's host time goes: per-seed draws, metrics, CuPy dispatch).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import shlex
import sys
import time

import numpy as np

from bench_round import machine
from fedtheory import make_method, run
from fedtheory.oracles import make_oracle
from fedtheory.problem import FederatedProblem
from fedtheory.runner import run_batch

CHECK_RTOL = 1e-8
TARGET_SPEEDUP = 200.0  # issue 15 (section c of BENCHMARKS.md used 50, issue 2's)


def parse_oracle(spec: str):
    """``exact``, ``minibatch:B`` or ``gaussian:SIGMA``."""
    name, _, arg = spec.partition(":")
    if name == "minibatch":
        return make_oracle("minibatch", b=int(arg or 1))
    if name == "gaussian":
        return make_oracle("gaussian", sigma=float(arg or 0.01))
    return make_oracle(name)


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
    return FederatedProblem.from_clients(
        Xs, ys, objective="logistic", lam=lam, name=f"iid_logistic_N{N}_d{d}_n{rows}"
    )


def _sync(xp) -> None:
    if xp.__name__ == "cupy":
        xp.cuda.Device().synchronize()


def one_by_one(host: FederatedProblem, method, S: int, seeds: int, args) -> tuple:
    """(traces, wall s, CPU core-s) of ``seeds`` NumPy runs, one after another."""
    run(
        host,
        method,
        2,
        seed=0,
        participation=S,
        oracle=args.oracle_obj,
        drift_metrics=False,
        log_every=2,
    )  # warm-up
    singles = []
    wall, cpu = time.perf_counter(), time.process_time()
    for s in range(seeds):
        singles.append(
            run(
                host,
                method,
                args.rounds,
                seed=s,
                participation=S,
                oracle=args.oracle_obj,
                drift_metrics=False,
                log_every=args.rounds,
            )
        )
    return singles, time.perf_counter() - wall, time.process_time() - cpu


def cpu_S(host: FederatedProblem, method, S: int, args: argparse.Namespace) -> dict:
    n_cpu = min(args.cpu_seeds, args.seeds)
    singles, wall, cpu = one_by_one(host, method, S, n_cpu, args)
    final = np.array([tr.final["dist_to_opt"] for tr in singles])
    return {
        "S": S,
        "cpu_seeds_timed": n_cpu,
        "cpu_measured_s": wall,
        "cpu_core_s": cpu,
        "cpu_extrapolated_s": wall * args.seeds / n_cpu,
        "cpu_core_extrapolated_s": cpu * args.seeds / n_cpu,
        "final_dist_to_opt": final.tolist(),
    }


def bench_S(
    host: FederatedProblem,
    problem: FederatedProblem,
    method,
    S: int,
    args: argparse.Namespace,
    cpu_ref: dict | None,
) -> dict:
    xp = problem.xp
    oracle = args.oracle_obj
    # warm-up: 4 rounds of the same batch (every seed), so that the recorded path (a round on
    # the device buffers, the recording, replays) compiles its kernels too, for the batch's
    # own sizes (CuPy compiles a reduction per block size, which follows the array sizes).
    # With 2 rounds of 2 seeds the first timed S paid for compiling (session 7: S = 1 rose
    # from 0.36 to 0.57 s as kernels were added; session 8: the first 1000-seed batch of 5
    # rounds took 0.29 s, the next one of 205 rounds 0.11 s). On a machine that has run the
    # benchmark once, CuPy's disk cache holds the kernels anyway.
    seeds = range(args.seeds)
    run_batch(problem, method, 4, seeds=seeds, participation=S, oracle=oracle, log_every=2)
    _sync(xp)
    start = time.perf_counter()
    batched = run_batch(
        problem,
        method,
        args.rounds,
        seeds=seeds,
        participation=S,
        oracle=oracle,
        log_every=args.rounds,
    )
    _sync(xp)
    t_batched = time.perf_counter() - start

    n_cpu = min(args.cpu_seeds if args.mode == "both" else args.check_seeds, args.seeds)
    singles, t_cpu, c_cpu = one_by_one(host, method, S, n_cpu, args)

    worst, failures = 0.0, []
    for s, single in enumerate(singles):
        b = batched[s]
        a, c = single.final["dist_to_opt"], b.final["dist_to_opt"]
        err = abs(a - c) / max(abs(a), abs(c), 1e-300)
        worst = max(worst, err)
        if (single.status, single.final["round"]) != (b.status, b.final["round"]):
            failures.append(
                f"S={S} seed {s}: one-by-one {single.status} at round "
                f"{single.final['round']}, batched {b.status} at {b.final['round']}"
            )
        elif not err <= CHECK_RTOL:
            failures.append(
                f"S={S} seed {s}: final dist_to_opt {a!r} one-by-one vs {c!r} "
                f"batched, relative difference {err:.3e} > {CHECK_RTOL:g}"
            )
    final = np.array([tr.final["dist_to_opt"] for tr in batched])
    row = {
        "S": S,
        "batched_s": t_batched,
        "cpu_seeds_timed": n_cpu,
        "cpu_measured_s": t_cpu,
        "cpu_core_s": c_cpu,
        "cpu_extrapolated_s": t_cpu * args.seeds / max(n_cpu, 1),
        "cpu_core_extrapolated_s": c_cpu * args.seeds / max(n_cpu, 1),
        "check_max_rel_diff": worst,
        "check_failures": failures,
        "diverged": int(sum(tr.status == "diverged" for tr in batched)),
        "median_final_dist_to_opt": float(np.median(final)),
    }
    if cpu_ref is not None:  # the one-by-one figure of another machine (--cpu-json)
        ref = cpu_ref[S]
        row["ref_cpu_seeds_timed"] = ref["cpu_seeds_timed"]
        row["ref_cpu_core_extrapolated_s"] = ref["cpu_core_extrapolated_s"]
        row["ref_cpu_wall_extrapolated_s"] = ref["cpu_extrapolated_s"]
        row["baseline_s"] = ref["cpu_core_extrapolated_s"]
        # the reference machine's seeds are seeds 0.. too: the same runs, so the same finals
        for s, a in enumerate(ref["final_dist_to_opt"][: len(batched)]):
            c = batched[s].final["dist_to_opt"]
            err = abs(a - c) / max(abs(a), abs(c), 1e-300)
            row["check_max_rel_diff"] = max(row["check_max_rel_diff"], err)
            if not err <= CHECK_RTOL:
                failures.append(f"S={S} seed {s}: {a!r} on the reference CPU vs {c!r} batched")
    else:
        row["baseline_s"] = row["cpu_extrapolated_s"]
    row["speedup"] = row["baseline_s"] / t_batched
    return row


def profile_batched(problem: FederatedProblem, method, S: int, args) -> str:
    rounds = max(1, args.rounds // 10)
    prof = cProfile.Profile()
    _sync(problem.xp)
    start = time.perf_counter()
    prof.enable()
    run_batch(
        problem,
        method,
        rounds,
        seeds=range(args.seeds),
        participation=S,
        oracle=args.oracle_obj,
        log_every=rounds,
    )
    _sync(problem.xp)
    prof.disable()
    wall = time.perf_counter() - start
    buf = io.StringIO()
    buf.write(
        f"# cProfile of run_batch: {args.seeds} seeds x {rounds} rounds, S = {S}, "
        f"{args.method}, oracle {args.oracle_obj.name}, backend {args.backend}: "
        f"{wall:.3f} s wall under the profiler\n"
    )
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(40)
    buf.write("\n# by own (tottime)\n")
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 seeds, 20 rounds, 3 CPU seeds")
    ap.add_argument(
        "--backend",
        choices=("numpy", "cupy"),
        default="numpy",
        help="backend of the batched runs (the one-by-one runs are NumPy)",
    )
    ap.add_argument("--seeds", type=int, default=None, help="seeds per S (default 1000)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per run (default 200)")
    ap.add_argument(
        "--cpu-seeds", type=int, default=None, help="seeds timed one by one per S (default 10)"
    )
    ap.add_argument(
        "--check-seeds",
        type=int,
        default=2,
        help="--mode batched: one-by-one NumPy seeds per S for the equality check",
    )
    ap.add_argument("--mode", choices=("both", "batched", "cpu"), default="both")
    ap.add_argument(
        "--cpu-json", help="--mode batched: a --mode cpu output to take the one-by-one figure from"
    )
    ap.add_argument("--method", default="fedpac")
    ap.add_argument("--oracle", default="exact", help="exact, minibatch:B or gaussian:SIGMA")
    ap.add_argument("--target", type=float, default=TARGET_SPEEDUP)
    ap.add_argument("--profile-S", type=int, default=None)
    ap.add_argument("--profile-out", default=None)
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
    args.oracle_obj = parse_oracle(args.oracle)

    info = machine(args.backend if args.mode != "cpu" else "numpy")
    command = "python " + shlex.join(sys.argv)
    print(f"# {command}")
    print("# machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    host = iid_logistic(args.N, args.d, args.rows, args.lam)
    host.reference  # noqa: B018  (cached, copied by .to(); not part of any timing)
    method = make_method(args.method, {})
    print(
        f"# {host.name}: N={host.N}, {args.rows} rows/client, d={host.d}, lam={args.lam:g}; "
        f"{args.method} {method.params()}; oracle {args.oracle_obj.name}; "
        f"{args.seeds} seeds x {args.rounds} rounds per S"
    )
    meta = {
        "benchmark": "bench_batched_sweep",
        "command": command,
        "machine": info,
        "args": {k: v for k, v in vars(args).items() if k != "oracle_obj"},
        "method": method.params(),
        "method_name": args.method,
        "oracle": args.oracle_obj.name,
    }

    if args.mode == "cpu":
        print(
            f"# one-by-one: run() per seed on numpy, {min(args.cpu_seeds, args.seeds)} seeds "
            f"measured, extrapolated x {args.seeds}/{min(args.cpu_seeds, args.seeds)}"
        )
        print(f"{'S':>4}{'wall s':>10}{'core-s':>10}{'(seeds)':>8}{'wall s':>11}{'core-s':>11}")
        print(f"{'':>4}{'measured':>10}{'measured':>10}{'':>8}{'extrapol.':>11}{'extrapol.':>11}")
        rows = []
        for S in S_list:
            r = cpu_S(host, method, S, args)
            rows.append(r)
            print(
                f"{S:>4d}{r['cpu_measured_s']:>10.3f}{r['cpu_core_s']:>10.3f}"
                f"{r['cpu_seeds_timed']:>8d}{r['cpu_extrapolated_s']:>11.2f}"
                f"{r['cpu_core_extrapolated_s']:>11.2f}",
                flush=True,
            )
        if args.out:
            with open(args.out, "w") as fh:
                json.dump({**meta, "rows": rows}, fh, indent=2)
            print(f"# wrote {args.out}")
        return

    problem = host.to("cupy") if args.backend == "cupy" else host
    cpu_ref = None
    if args.cpu_json:
        with open(args.cpu_json) as fh:
            ref = json.load(fh)
        for key in ("method_name", "oracle"):
            assert ref[key] == meta[key], (key, ref[key], meta[key])
        for key in ("rounds", "seeds", "N", "d", "rows", "lam"):
            assert ref["args"][key] == meta["args"][key], (key, ref["args"][key])
        cpu_ref = {r["S"]: r for r in ref["rows"]}
        meta["cpu_reference"] = {
            "file": args.cpu_json,
            "machine": ref["machine"],
            "command": ref["command"],
        }
        print(
            f"# one-by-one figure: {args.cpu_json} (core-seconds on "
            f"{ref['machine'].get('platform')}, {ref['machine'].get('cpu_count')} cores, "
            f"extrapolated); {args.check_seeds} seeds per S also run one by one here "
            f"(equality check; wall s in the 'here' column)"
        )
        print(
            f"{'S':>4}{'batched s':>11}{'ref core-s':>12}{'speedup':>9}{'here s':>9}"
            f"{'(seeds)':>8}{'here x':>8}{'check':>10}{'diverged':>9}{'med dist':>10}"
        )
    else:
        print(
            f"# batched: one run_batch per S on {args.backend}; one-by-one: run() per seed "
            f"on numpy, seeds measured, extrapolated x {args.seeds}/seeds"
        )
        print(
            f"{'S':>4}{'batched s':>11}{'1-by-1 s':>11}{'(seeds)':>8}{'1-by-1 s':>12}"
            f"{'speedup':>9}{'check':>10}{'diverged':>9}{'med dist':>10}"
        )
        print(f"{'':>4}{'(all)':>11}{'measured':>11}{'':>8}{'extrapol.':>12}")
    rows = []
    for S in S_list:
        r = bench_S(host, problem, method, S, args, cpu_ref)
        rows.append(r)
        if cpu_ref is not None:
            print(
                f"{S:>4d}{r['batched_s']:>11.3f}{r['baseline_s']:>12.2f}{r['speedup']:>9.1f}"
                f"{r['cpu_extrapolated_s']:>9.2f}{r['cpu_seeds_timed']:>8d}"
                f"{r['cpu_extrapolated_s'] / r['batched_s']:>8.1f}"
                f"{r['check_max_rel_diff']:>10.1e}{r['diverged']:>9d}"
                f"{r['median_final_dist_to_opt']:>10.2e}",
                flush=True,
            )
        else:
            print(
                f"{S:>4d}{r['batched_s']:>11.3f}{r['cpu_measured_s']:>11.3f}"
                f"{r['cpu_seeds_timed']:>8d}{r['cpu_extrapolated_s']:>12.2f}"
                f"{r['speedup']:>9.1f}{r['check_max_rel_diff']:>10.1e}{r['diverged']:>9d}"
                f"{r['median_final_dist_to_opt']:>10.2e}",
                flush=True,
            )
    t_b = sum(r["batched_s"] for r in rows)
    t_c = sum(r["baseline_s"] for r in rows)
    total = {
        "batched_s": t_b,
        "baseline_s": t_c,
        "cpu_measured_s": sum(r["cpu_measured_s"] for r in rows),
        "cpu_extrapolated_s": sum(r["cpu_extrapolated_s"] for r in rows),
        "speedup": t_c / t_b,
        "min_speedup": min(r["speedup"] for r in rows),
        "target_speedup": args.target,
        "target_met": t_c / t_b >= args.target,
    }
    print(
        f"{'all':>4}{t_b:>11.3f}{t_c:>12.2f}{total['speedup']:>9.1f}  (min over S "
        f"{total['min_speedup']:.1f})"
    )
    basis = (
        "the reference CPU's extrapolated one-by-one core-seconds"
        if cpu_ref is not None
        else "extrapolated one-by-one NumPy wall seconds"
    )
    print(
        f"# speedup = {basis} / batched {args.backend} seconds; target >= {args.target:g}x "
        f"overall: {'met' if total['target_met'] else 'NOT met'}; check = max relative "
        f"difference of final dist_to_opt over the one-by-one seeds (asserted <= "
        f"{CHECK_RTOL:g})"
    )
    profile = None
    if args.profile_S is not None:
        profile = profile_batched(problem, method, args.profile_S, args)
        if args.profile_out:
            with open(args.profile_out, "w") as fh:
                fh.write(profile)
            print(f"# wrote {args.profile_out}")
        print("\n".join(profile.splitlines()[:30]))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({**meta, "rows": rows, "total": total}, fh, indent=2)
        print(f"# wrote {args.out}")
    failures = [f for r in rows for f in r["check_failures"]]
    assert not failures, "batched and one-by-one runs differ:\n" + "\n".join(failures)


if __name__ == "__main__":
    main()
