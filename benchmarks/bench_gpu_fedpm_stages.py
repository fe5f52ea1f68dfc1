"""Device time of each stage of one FedPM K = 1 round on the real splits (issue 15: where the
replayed round's time goes).

    python benchmarks/bench_gpu_fedpm_stages.py [--w8a PATH] [--out FILE.json]

Problems as bench_gpu_graph.py (a9a_fednl; the w8a FedNL split when its file is found), data
dense on the GPU, at theta = 0 with every client. Each stage is recorded alone as a CUDA graph
and replayed 50 times between two CUDA events (bench_gpu_fedpm_parts.replay_ms), ms per
replay:

- ``margins``: A_i theta for every client (one batched product);
- ``oracle``: the clients' gradients and Hessians (``ctx.eval(theta, grad, hess)``: margins,
  the logistic terms, A_i^T u_i and the Gram products);
- ``local_solve``: the local Newton directions P_i^{-1} g_i (``spd_solve`` on the stack);
- ``mix``: sum_i w_i P_i, P_i theta_i and their mix (``ctx.mix_apply``, ``ctx.mix``);
- ``server_solve``: the server's d x d solve;
- ``round``: the whole round (``method.round``), which the stages should add up to.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench_gpu_fedpm_parts import replay_ms
from bench_gpu_graph import W8A_PATHS
from bench_peers import a9a, w8a

from bench_round import machine
from fedtheory import make_method
from fedtheory.linalg import DeferredChecks, spd_solve
from fedtheory.methods import round_context
from fedtheory.objectives import margins


def stages(problem: Any) -> dict[str, Any]:
    import cupy

    theta = cupy.zeros(problem.d)
    ctx = round_context(problem)
    method = make_method("fedpm", {"K": 1})
    state, _ = method.start(problem, theta)
    _, g, H = ctx.eval(theta, value=False, grad=True, hess=True)
    x = spd_solve(H, g)
    P_bar, v = ctx.mix_apply(H, x)
    rhs = ctx.mix(v)
    method.round(ctx, state)  # compiles every kernel before the recordings
    checks = DeferredChecks()

    def checked(fn: Any) -> Any:
        def inner() -> Any:
            with checks.active():
                return fn()

        return inner

    out: dict[str, Any] = {"problem": problem.name, "N": problem.N, "d": problem.d}
    out["margins"] = replay_ms(lambda: margins(ctx.problem.A, theta))
    out["oracle"] = replay_ms(lambda: ctx.eval(theta, value=False, grad=True, hess=True))
    out["local_solve"] = replay_ms(checked(lambda: spd_solve(H, g)))
    out["mix"] = replay_ms(lambda: (ctx.mix_apply(H, x), ctx.mix(v)))
    out["server_solve"] = replay_ms(checked(lambda: spd_solve(P_bar, rhs)))
    out["round"] = replay_ms(checked(lambda: method.round(ctx, state)))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--w8a", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    path = args.w8a or next((p for p in W8A_PATHS if p.exists()), None)
    problems = [a9a("dense").to("cupy")]
    if path is not None:
        problems.append(w8a(path, "dense").to("cupy"))
    res = {"machine": machine("cupy"), "stages": [stages(p) for p in problems]}
    keys = ("margins", "oracle", "local_solve", "mix", "server_solve", "round")
    print(f"device ms per replay, FedPM K = 1, {res['machine'].get('gpu')}")
    print(f"{'problem':<11}" + "".join(f"{k:>13}" for k in keys))
    for s in res["stages"]:
        print(f"{s['problem']:<11}" + "".join(f"{s[k]:>13.3f}" for k in keys))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
