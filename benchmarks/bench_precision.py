"""Time one FedPM K = 1 round in arb ball arithmetic (fedtheory.precision) against float64 and
against the number of bits.

    python benchmarks/bench_precision.py [--repeat 5] [--bits 128,256,512,1024,2048]

Problem: FedProx Synthetic(1, 1) made binary, 10 clients x 50 rows ("equal" sizes), d = 20,
lam = 1e-2: the d = 20, 500-row problem of issue 16, whose target is one FedPM K = 1 round at
256 bits in <= 0.5 s on one core. Run it on one core (``taskset -c 0``); python-flint's own
threads are set to 1.

Printed, for each number of bits: the round map alone (10 client Hessians and solves, the
preconditioned mixing), the row metrics of run_precise (dist, f - f* in two enclosures,
||grad f||: about one more Hessian pass), their sum, the cost model's estimate
(:func:`fedtheory.precision.estimate_round_seconds`, what ``to_precise`` refuses on), and the
ratio to one float64 FedPM round of the suite's NumPy implementation on the same problem. Then
the three unit costs of the model at 256 bits (one multiply-add in an arb matrix product, one
Python-level arb multiplication per matrix entry, one row's exp/log1p/quotients), measured
here, to compare with the constants in fedtheory/precision.py. Each figure is the median of
``--repeat`` timings after one warm-up.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import flint
import numpy as np

from fedtheory.claims import one_round
from fedtheory.methods import make_method
from fedtheory.precision import (
    ROUND_MAPS,
    PreciseState,
    estimate_round_seconds,
    run_precise,
    to_precise,
)
from fedtheory.suite import load_problem

SPEC = {
    "name": "fedprox_synthetic_1_1_d20_n500",
    "data": {
        "source": "fedprox_synthetic",
        "alpha": 1.0,
        "beta": 1.0,
        "clients": 10,
        "d": 20,
        "sizes": "equal",
        "mean_size": 50,
        "seed": 0,
    },
    "objective": {"kind": "logistic", "lam": 1e-2},
}


def median_time(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def unit_costs(repeat: int) -> dict[str, float]:
    """Seconds per multiply-add (d x n times n x d arb product), per entry scaling, per row of
    elementwise logistic functions, at 256 bits."""
    rng = np.random.default_rng(0)
    n, d = 500, 20
    with flint.ctx.workprec(256):
        A = flint.arb_mat(rng.standard_normal((n, d)).tolist())
        At = A.transpose()
        rows = [[A[i, j] for j in range(d)] for i in range(n)]
        v = [flint.arb(1) / (i + 3) for i in range(n)]
        t_mac = median_time(lambda: At * A, repeat) / (n * d * d)
        t_entry = median_time(
            lambda: flint.arb_mat([[vj * a for a in r] for vj, r in zip(v, rows, strict=True)]),
            repeat,
        ) / (n * d)

        def row_funcs():
            for x in v:
                u = (-x).exp()
                u.log1p()
                u / (1 + u)
                u / ((1 + u) * (1 + u))

        t_row = median_time(row_funcs, repeat) / n
    return {"mac": t_mac, "entry": t_entry, "row": t_row}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--bits", default="128,256,512,1024,2048")
    args = ap.parse_args()
    flint.ctx.threads = 1
    problem = load_problem(SPEC)
    method = make_method("fedpm", {"K": 1, "eta": 1.0})
    print(f"# {problem!r}; {platform.platform()}; python-flint {flint.__version__}")
    theta = problem.reference.theta_star * 0.5  # a point on the way, away from theta*
    t64 = median_time(lambda: one_round(problem, method, theta), max(20, args.repeat))
    print(f"# float64 FedPM K = 1 round (NumPy): {t64:.3e} s")
    print(
        f"{'bits':>6} {'round s':>10} {'metrics s':>10} {'total s':>10} {'model s':>10} "
        f"{'round / f64':>12} {'target':>8}"
    )
    round_map = ROUND_MAPS[method.name]
    for bits in (int(b) for b in args.bits.split(",")):
        pp = to_precise(problem, bits)
        _ = pp.reference  # theta* once, not timed
        with flint.ctx.workprec(bits):
            x = flint.arb_mat([[float(v)] for v in theta])
            state = PreciseState(x)
            t_round = median_time(lambda pp=pp, s=state: round_map(pp, method, s), args.repeat)
            t_metrics = median_time(lambda pp=pp, x=x: pp.metrics(x), args.repeat)
        model = estimate_round_seconds(problem, bits)
        target = ("<= 0.5" + (" met" if t_round <= 0.5 else " MISSED")) if bits == 256 else ""
        print(
            f"{bits:>6} {t_round:>10.3e} {t_metrics:>10.3e} {t_round + t_metrics:>10.3e} "
            f"{model:>10.3e} {t_round / t64:>12.0f} {target:>8}"
        )
    u = unit_costs(args.repeat)
    print(
        f"# unit costs at 256 bits: multiply-add {u['mac']:.2e} s, entry scaling "
        f"{u['entry']:.2e} s, row functions {u['row']:.2e} s (model: 1.6e-08, 2.7e-07, 1.8e-06)"
    )
    start = time.perf_counter()
    tr = run_precise(problem, "fedpm", {"K": 1}, 12, 256, stop_at_floor=True)
    print(
        f"# run_precise fedpm K=1 at 256 bits, {len(tr) - 1} rounds to the floor (status "
        f"{tr.status}), theta* included: {time.perf_counter() - start:.2f} s"
    )


if __name__ == "__main__":
    main()
