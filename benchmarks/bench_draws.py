"""The per-seed draws of a batched sweep: NumPy's calls in a Python loop against one compiled call.

    python benchmarks/bench_draws.py [--seeds 1000] [--rounds 200] [--N 64] [--S 1 8 32 63]
        [--b 1 16] [--rows 64] [--quick]

Participation (what ``run_batch`` draws every round for S < N): for every round, B = --seeds
generators (``default_rng(s)``, s = 0..B-1) each draw round t's S of N participants.

  loop       ``[who.draw(t, g) for g in gens]`` (``Participation.draw``: ``np.sort(g.choice(N,
             size=S, replace=False))``) and their concatenation: the round-draw lines of
             ``run_batch`` before issue 15;
  compiled   ``choice_sorted(gens, N, S).reshape(-1)`` (fedtheory.draws): the lines now.

Minibatch rows (what a ``minibatch`` oracle call draws for a batched round of S participants per
run, b rows per participant among the client's --rows rows):

  loop       ``fedtheory.oracles.draw(RunDraws(gens, runs), sample, B * S)`` with the Minibatch
             oracle's ``sample`` (``g.integers(0, n[:, None], size=(m, b))`` per run);
  compiled   ``integers_rows(gens, runs, n, b)`` (fedtheory.draws; not yet called by the
             Minibatch oracle).

Times are CPU seconds (``time.process_time``) summed over all rounds, after a warm-up
(compilation or loading Numba's cache); the two sides alternate round by round (the same machine
load for both) and each round's results are compared, then dropped (no result piles up in
memory). Both sides start from generators of the same seeds; their draws of every round and
their final generator states are checked equal (the script stops otherwise).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time

import numba
import numpy as np

from fedtheory.draws import choice_sorted, integers_rows
from fedtheory.oracles import RunDraws, draw
from fedtheory.runner.participation import Participation


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            models = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        cpu = models[0]
    except (OSError, IndexError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu}, {cores} usable cores; {platform.platform()}; Python "
        f"{platform.python_version()}, NumPy {np.__version__}, Numba {numba.__version__}"
    )


def gens_of(B: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in range(B)]


def same_states(a, b) -> bool:
    return all(x.bit_generator.state == y.bit_generator.state for x, y in zip(a, b, strict=True))


def participation(B: int, rounds: int, N: int, S: int) -> tuple[float, float]:
    who = Participation(N, S, rounds)
    ga, gb = gens_of(B), gens_of(B)
    t_loop = t_comp = 0.0
    for t in range(1, rounds + 1):
        t0 = time.process_time()
        draws = [who.draw(t, g) for g in ga]
        loop = np.concatenate(draws)
        t1 = time.process_time()
        comp = choice_sorted(gb, N, S).reshape(-1)
        t2 = time.process_time()
        t_loop, t_comp = t_loop + (t1 - t0), t_comp + (t2 - t1)
        if not np.array_equal(loop, comp):
            sys.exit(f"participation N={N} S={S} round {t}: the compiled draws differ")
    if not same_states(ga, gb):
        sys.exit(f"participation N={N} S={S}: the generators' states differ")
    return t_loop, t_comp


def minibatch(B: int, rounds: int, N: int, S: int, b: int, rows: int) -> tuple[float, float]:
    sizes = np.full(N, rows, dtype=np.int64)
    runs = np.repeat(np.arange(B), S)
    pick = np.random.default_rng(2**32)
    ga, gb = gens_of(B), gens_of(B)
    t_loop = t_comp = 0.0
    for t in range(1, rounds + 1):
        # the round's participants of every run (their sizes are the ranges)
        sel = np.concatenate([pick.choice(N, size=S, replace=False) for _ in range(B)])

        def sample(gen: np.random.Generator, at: np.ndarray, sel=sel) -> np.ndarray:
            n = sizes[sel[at]]
            return gen.integers(0, n[:, None], size=(len(n), b))

        t0 = time.process_time()
        loop = draw(RunDraws(ga, runs), sample, len(sel))
        t1 = time.process_time()
        comp = integers_rows(gb, runs, sizes[sel], b)
        t2 = time.process_time()
        t_loop, t_comp = t_loop + (t1 - t0), t_comp + (t2 - t1)
        if not np.array_equal(loop, comp):
            sys.exit(f"minibatch S={S} b={b} round {t}: the compiled draws differ")
    if not same_states(ga, gb):
        sys.exit(f"minibatch S={S} b={b}: the generators' states differ")
    return t_loop, t_comp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--N", type=int, default=64)
    ap.add_argument("--S", type=int, nargs="+", default=[1, 8, 32, 63])
    ap.add_argument("--b", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--rows", type=int, default=64, help="rows per client (minibatch)")
    ap.add_argument("--quick", action="store_true", help="100 seeds x 20 rounds")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.rounds = 100, 20
    B, R, N = args.seeds, args.rounds, args.N
    print("$ python " + " ".join(shlex.quote(a) for a in sys.argv))
    print(f"# machine: {machine()}")
    print(f"# {B} seeds x {R} rounds, N = {N}; CPU seconds (time.process_time) of all rounds")
    if hasattr(os, "getloadavg"):
        print(f"# load average at the start (1, 5, 15 min): {os.getloadavg()}")
    # warm-up: compile or load the cache
    choice_sorted(gens_of(2), N, 1)
    integers_rows(gens_of(2), np.array([0, 1]), np.array([3, 3]), 1)
    head = (
        f"{'draws':<14}{'S':>4}{'b':>4}{'loop s':>10}{'compiled s':>12}{'speed-up':>10}"
        f"{'loop us':>10}{'compiled us':>13}"
    )
    print(head + "   (us: per seed and round)")
    print("-" * len(head))
    per = 1e6 / (B * R)
    for S in args.S:
        t_loop, t_comp = participation(B, R, N, S)
        print(
            f"{'participation':<14}{S:>4}{'-':>4}{t_loop:>10.3f}{t_comp:>12.3f}"
            f"{t_loop / t_comp:>9.1f}x{t_loop * per:>10.2f}{t_comp * per:>13.2f}"
        )
    for S in [s for s in args.S if s in (1, 8)] or args.S[:1]:
        for b in args.b:
            t_loop, t_comp = minibatch(B, R, N, S, b, args.rows)
            print(
                f"{'minibatch':<14}{S:>4}{b:>4}{t_loop:>10.3f}{t_comp:>12.3f}"
                f"{t_loop / t_comp:>9.1f}x{t_loop * per:>10.2f}{t_comp * per:>13.2f}"
            )
    print("# every row: the compiled draws and final generator states equal NumPy's (checked)")
    if hasattr(os, "getloadavg"):
        print(f"# load average at the end (1, 5, 15 min): {os.getloadavg()}")


if __name__ == "__main__":
    main()
