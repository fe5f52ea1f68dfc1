"""Rounds replayed as a CUDA graph against rounds dispatched from Python (issue 15, item 1).

    python benchmarks/bench_gpu_graph.py [--w8a PATH] [--rounds 1000] [--fedpm-rounds 1000]
        [--spectral-rounds 20] [--out FILE.json]

Problems (data dense on the GPU): the w8a FedNL split (bench_peers.py's ``w8a``: 142 clients x
350 rows, d = 300) and the suite's a9a_fednl split (80 clients x 407 rows, d = 123), both
logistic with lam = 1e-3. Methods, full participation, from theta = 0:

- ``fednl``: option 2, top-K Kc = 8d, alpha = 1, l^k in the Frobenius norm (w8a only; issue
  15's "1000 FedNL rounds on the w8a split");
- ``fednl-spectral``: the same with the spectral l^k (w8a only; ``--spectral-rounds``, fewer:
  its batched ``eigvalsh`` cannot be recorded, so both columns run unrecorded and say why);
- ``fedpm``: K = 1 (both problems; issue 15's "one FedPM K = 1 round").

For each (problem, method) and each ``graph`` in (False, None), after a 3-round warm-up run
with the same setting (None: replayed where the run can be recorded, ``run``'s default):
``run(problem, method, R, drift_metrics=False, log_every=R, graph=...)``
end to end (the metrics at rounds 0 and R, method.start and the recording included), wall
seconds with a device synchronisation at the end; ``per_round_ms`` = run_s / R. ``replay_ms``:
the replayed round alone, 200 launches of the recorded graph between two CUDA events (device
time per round once the host no longer dispatches kernels). ``identical``: the two runs' final
dist_to_opt, rel_dist and grad_norm are equal bit for bit. ``graph``: what the run's metadata
says (``"replayed"`` or why not). Prints a table; ``--out`` writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench_peers import a9a, w8a

from bench_round import machine
from fedtheory import make_method, run
from fedtheory.methods import round_context
from fedtheory.runner import graph as replay_graph

ROOT = Path(__file__).resolve().parents[1]
W8A_PATHS = (ROOT.parent / "shared" / "datasets" / "w8a.txt.gz", ROOT / "out" / "w8a.txt.gz")


def methods(d: int, problem: str) -> dict[str, Any]:
    out = {"fedpm": make_method("fedpm", {"K": 1})}
    if problem == "w8a_fednl":
        common = {"option": 2, "compressor": "topK", "Kc": 8 * d, "alpha": "one"}
        out["fednl"] = make_method("fednl", {**common, "l_norm": "frobenius"})
        out["fednl-spectral"] = make_method("fednl", {**common, "l_norm": "spectral"})
    return out


def replay_ms(problem: Any, method: Any, launches: int = 200) -> float:
    """Device ms per replayed round: ``launches`` launches of one recorded round between two
    CUDA events."""
    import cupy

    state, _ = method.start(problem, cupy.zeros(problem.d))
    ctx = round_context(problem)
    state, _ = method.round(ctx, state)  # compiles, as round 1 of a run
    rec = replay_graph.Replay(method, ctx, replay_graph.own_state(state))
    rec.run(True)
    rec.check()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(launches):
        rec.graph.launch(cupy.cuda.Stream.null)
    end.record()
    end.synchronize()
    return cupy.cuda.get_elapsed_time(start, end) / launches


def timed_run(problem: Any, method: Any, rounds: int, graph: bool | None) -> tuple[float, Any]:
    import cupy

    run(problem, method, 3, drift_metrics=False, log_every=3, graph=graph)  # warm-up
    cupy.cuda.Device().synchronize()
    t = time.perf_counter()
    tr = run(problem, method, rounds, drift_metrics=False, log_every=rounds, graph=graph)
    cupy.cuda.Device().synchronize()
    return time.perf_counter() - t, tr


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--w8a", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=1000, help="FedNL rounds per run")
    ap.add_argument("--fedpm-rounds", type=int, default=1000, help="FedPM rounds per run")
    ap.add_argument("--spectral-rounds", type=int, default=20, help="FedNL rounds, spectral l^k")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    path = args.w8a or next((p for p in W8A_PATHS if p.exists()), None)
    problems = {"a9a_fednl": a9a("dense").to("cupy")}
    if path is not None:
        problems["w8a_fednl"] = w8a(path, "dense").to("cupy")
    res: dict[str, Any] = {"machine": machine("cupy"), "results": []}
    for pname, problem in problems.items():
        for mname, method in methods(problem.d, pname).items():
            R = {"fedpm": args.fedpm_rounds, "fednl-spectral": args.spectral_rounds}.get(
                mname, args.rounds
            )
            r: dict[str, Any] = {"problem": pname, "method": mname, "rounds": R}
            finals = {}
            for graph in (False, None):
                wall, tr = timed_run(problem, method, R, graph)
                key = "plain" if graph is False else "graph"
                r[f"{key}_run_s"] = wall
                r[f"{key}_per_round_ms"] = 1e3 * wall / R
                r[f"{key}_meta"] = tr.meta["graph"]
                finals[key] = {k: tr.final[k] for k in ("dist_to_opt", "rel_dist", "grad_norm")}
            r["identical"] = finals["plain"] == finals["graph"]
            r["final"] = finals["graph"]
            replayed = r["graph_meta"] == "replayed"
            r["replay_ms"] = replay_ms(problem, method) if replayed else None
            res["results"].append(r)
            print(json.dumps(r), flush=True)
    print(f"\nrounds replayed as a CUDA graph, {res['machine'].get('gpu')}")
    print(
        f"{'problem':<11}{'method':<16}{'R':>6}{'plain s':>9}{'graph s':>9}{'plain ms':>10}"
        f"{'graph ms':>10}{'replay ms':>11}  identical  graph"
    )
    for r in res["results"]:
        print(
            f"{r['problem']:<11}{r['method']:<16}{r['rounds']:>6}{r['plain_run_s']:>9.3f}"
            f"{r['graph_run_s']:>9.3f}{r['plain_per_round_ms']:>10.3f}"
            f"{r['graph_per_round_ms']:>10.3f}{r['replay_ms'] or float('nan'):>11.3f}"
            f"  {r['identical']!s:9}"
            f"  {r['graph_meta']}"
        )
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
