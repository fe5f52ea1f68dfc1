"""FedNL on the GPU with the fused top-K kernel against the old array path (issue 15, item 1).

    python benchmarks/bench_gpu_fednl.py [--w8a PATH] [--rounds 1000] [--old-rounds 50]
        [--repeat 20] [--out FILE.json] [--sweep 512x4x2,1024x4x1] [--no-runs] [--learn-once]

Problem: the w8a FedNL split (bench_peers.py's ``w8a(path, "dense")``: the first 49,700 rows
of LIBSVM w8a, 142 clients x 350 rows, d = 300, lam = 1e-3, logistic), data dense on the GPU.
``--w8a`` defaults to ``../shared/datasets/w8a.txt.gz`` beside the repository, else
``out/w8a.txt.gz`` inside it (git-ignored; a device machine gets the repository alone, so
carry that file there). Method: FedNL option 2, top-K Kc = 8d, alpha = 1, l^k in the Frobenius
norm, full participation, from theta = 0.

For each path, ``fused`` (fedtheory.cuda_kernels.topk_learn, one launch per round: what
``HessianLearner.learn`` runs on CuPy) and ``array`` (the old blocked array code,
``HessianLearner._learn_top_k``, substituted for the kernel here):
- ``learn_ms``: the learning step alone (method.learn on a round's stack, every client),
  median of ``--repeat`` calls between CUDA events, each on a fresh copy of the stack;
- ``round_ms``: one FedNL round (method.round, consecutive rounds), median of ``--repeat``,
  wall time with a device synchronisation after each;
- ``run_s``: ``run(problem, method, R, drift_metrics=False, log_every=R)`` end to end (the
  metrics of rounds 0 and R included), after a 2-round warm-up run; R = ``--rounds`` for the
  fused path and ``--old-rounds`` for the array path, whose time is also scaled to R rounds
  (``run_s_scaled``, said so);
- ``kernels_per_round``: device kernels per round and their summed time, from CUPTI through
  torch.profiler (skipped when PyTorch is missing).
Before timing, both paths learn from the same stack and must give bit-identical Hessians and
norms equal to 1e-13 (``identical``). Prints a table; ``--out`` writes the figures as JSON.
``--sweep``: learn_ms of the kernel for other launch shapes THREADSxUNROLLxMIN_BLOCKS (each
checked the same way); ``--no-runs``: only the check and the sweep; ``--learn-once``: three
rounds and one more learning step, nothing timed (for Nsight Compute: profile launch 4).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_peers import w8a

from bench_round import machine
from fedtheory import cuda_kernels, make_method, run
from fedtheory.methods import fednl as fednl_module
from fedtheory.methods import round_context

ROOT = Path(__file__).resolve().parents[1]
W8A_PATHS = (ROOT.parent / "shared" / "datasets" / "w8a.txt.gz", ROOT / "out" / "w8a.txt.gz")


def array_path(method: Any) -> Any:
    """The old CuPy path of ``learn`` (blocks of clients through ``_learn_top_k``) with the
    kernel's signature, to stand in for ``cuda_kernels.topk_learn``."""

    def topk_learn(H: Any, T: Any, rows: Any, K: int, alpha: float, kind: int, norms: Any) -> None:
        m, d = T.shape[0], T.shape[-1]
        norm, after = (None, False) if kind == 0 else ("frobenius", kind == 2)
        per = max(1, min(fednl_module.BLOCK_BYTES, H.nbytes // fednl_module.BLOCK_FRACTION))
        block = max(1, per // (d * d * H.itemsize))
        for lo in range(0, m, block):
            hi = min(m, lo + block)
            at = slice(lo, hi) if rows is None else rows[lo:hi]
            out = method._learn_top_k(H, T[lo:hi], at, norm, after)
            if norm is not None:
                norms[lo:hi] = out

    return topk_learn


def learn_ms(method: Any, H0: Any, T: Any, repeat: int) -> float:
    """Median time (ms, CUDA events) of method.learn on a fresh copy of H0, every client."""
    import cupy

    H = cupy.empty_like(H0)
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    ts = []
    for i in range(repeat + 2):
        H[...] = H0
        start.record()
        method.learn(H, T, None, norm="frobenius")
        end.record()
        end.synchronize()
        if i >= 2:
            ts.append(cupy.cuda.get_elapsed_time(start, end))
    return float(np.median(ts))


def kernel_profile(fn: Any, n: int, sync: Any) -> dict:
    """Device kernels per call of ``fn`` and their time, from CUPTI through torch.profiler."""
    try:
        import torch
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile
    except ImportError as e:
        return {"skipped": f"{type(e).__name__}: {e}"}
    try:
        torch.zeros(1, device="cuda")
        fn()
        sync()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(n):
                fn()
            sync()
        kern: dict[str, list[float]] = {}
        for e in prof.events():
            if e.device_type == DeviceType.CUDA and not e.name.lower().startswith(
                ("memcpy", "memset")
            ):
                c = kern.setdefault(e.name, [0, 0.0])
                c[0] += 1
                c[1] += e.time_range.elapsed_us()
        top = sorted(kern.items(), key=lambda kv: -kv[1][1])[:8]
        return {
            "calls": n,
            "kernels_per_call": sum(c for c, _ in kern.values()) / n,
            "kernel_ms_per_call": sum(us for _, us in kern.values()) / n / 1e3,
            "top_kernels": [(k[:80], c / n, us / n / 1e3) for k, (c, us) in top],
        }
    except Exception as e:  # noqa: BLE001 - a profiler failure must not lose the timings
        return {"error": f"{type(e).__name__}: {e}"}


def sweep(method: Any, H0: Any, T: Any, want: tuple, args: Any) -> list[dict]:
    """learn_ms of the kernel for each launch shape THREADSxUNROLLxMIN_BLOCKS of
    ``args.sweep``, each checked against the array path's Hessians (bit for bit) and norms."""
    import cupy

    saved = (cuda_kernels.THREADS, cuda_kernels.UNROLL, cuda_kernels.MIN_BLOCKS)
    out = []
    try:
        for shape in args.sweep.split(","):
            nt, un, mb = (int(x) for x in shape.split("x"))
            cuda_kernels.THREADS, cuda_kernels.UNROLL, cuda_kernels.MIN_BLOCKS = nt, un, mb
            H = H0.copy()
            n = method.learn(H, T, None, norm="frobenius")
            same = bool(
                np.array_equal(cupy.asnumpy(H), want[0])
                and np.allclose(cupy.asnumpy(n), want[1], rtol=1e-13, atol=0)
            )
            ms = learn_ms(method, H0, T, args.repeat)
            out.append(
                {"threads": nt, "unroll": un, "min_blocks": mb, "learn_ms": ms, "identical": same}
            )
            print(f"  launch shape {shape:>10}: learn {ms:.3f} ms, identical {same}")
    finally:
        cuda_kernels.THREADS, cuda_kernels.UNROLL, cuda_kernels.MIN_BLOCKS = saved
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--w8a", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--old-rounds", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--sweep", default="", help="launch shapes to time, e.g. 512x4x2,1024x4x1")
    ap.add_argument("--learn-once", action="store_true", help="3 rounds and one learn (ncu)")
    ap.add_argument("--no-runs", action="store_true", help="only the check and the sweep")
    args = ap.parse_args(argv)
    import cupy

    path = args.w8a or next((p for p in W8A_PATHS if p.exists()), W8A_PATHS[-1])

    def sync() -> None:
        cupy.cuda.Device().synchronize()

    t = time.perf_counter()
    host = w8a(path, "dense")
    host.reference  # noqa: B018 - cached, not timed
    gpu = host.to("cupy")
    sync()
    print(f"w8a split loaded, reference solved, on the GPU: {time.perf_counter() - t:.1f} s")
    params = {"option": 2, "compressor": "topK", "Kc": 8 * gpu.d, "alpha": 1.0}
    method = make_method("fednl", {**params, "l_norm": "frobenius"})
    res: dict = {
        "machine": machine("cupy"),
        "problem": {"name": "w8a_fednl", "N": gpu.N, "d": gpu.d, "data": str(path)},
        "method": method.params(),
        "repeat": args.repeat,
        "paths": {},
    }

    # The stack of a few rounds in, the clients' Hessians there: both paths on equal inputs.
    ctx = round_context(gpu)
    state = method.start(gpu, cupy.zeros(gpu.d))[0]
    for _ in range(3):
        state, _ = method.round(ctx, state)
    T = gpu.oracle(state.theta, grad=False, hess=True).H
    H0 = state.H_local.copy()
    fused = cuda_kernels.topk_learn
    if args.learn_once:  # one more launch of the kernel, on the state of round 3 (for ncu)
        method.learn(H0.copy(), T, None, norm="frobenius")
        sync()
        return res
    outs = {}
    for name, kernel in (("fused", fused), ("array", array_path(method))):
        cuda_kernels.topk_learn = kernel
        try:
            H = H0.copy()
            norms = method.learn(H, T, None, norm="frobenius")
            outs[name] = (cupy.asnumpy(H), cupy.asnumpy(norms))
        finally:
            cuda_kernels.topk_learn = fused
    identical = bool(
        np.array_equal(outs["fused"][0], outs["array"][0])
        and np.allclose(outs["fused"][1], outs["array"][1], rtol=1e-13, atol=0)
    )
    res["identical"] = identical
    print(f"fused and array paths learn the same Hessians (bit for bit): {identical}")
    if args.sweep:
        res["sweep"] = sweep(method, H0, T, outs["array"], args)

    if args.no_runs:
        if args.out:
            args.out.write_text(json.dumps(res, indent=1, default=str))
        return res
    for name, kernel in (("fused", fused), ("array", array_path(method))):
        cuda_kernels.topk_learn = kernel
        try:
            r: dict = {"learn_ms": learn_ms(method, H0, T, args.repeat)}

            box = {"s": method.start(gpu, cupy.zeros(gpu.d))[0]}

            def one_round(box: dict = box) -> None:
                box["s"], _ = method.round(ctx, box["s"])

            for _ in range(3):
                one_round()
            sync()
            ts = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                one_round()
                sync()
                ts.append(time.perf_counter() - t)
            r["round_ms"] = 1e3 * float(np.median(ts))
            r["round_ms_min"] = 1e3 * float(np.min(ts))
            r["profile"] = kernel_profile(one_round, 5, sync)

            rounds = args.rounds if name == "fused" else min(args.rounds, args.old_rounds)
            run(gpu, method, 2, drift_metrics=False, log_every=2)  # warm-up
            sync()
            t = time.perf_counter()
            tr = run(gpu, method, rounds, drift_metrics=False, log_every=rounds)
            sync()
            wall = time.perf_counter() - t
            r.update(
                run_rounds=rounds,
                run_s=wall,
                run_s_scaled=wall * args.rounds / rounds,
                scaled=rounds != args.rounds,
                status=tr.status,
                final={k: tr.final[k] for k in ("round", "rel_dist", "dist_to_opt")},
            )
        finally:
            cuda_kernels.topk_learn = fused
        res["paths"][name] = r
        print(f"  {name}: {json.dumps({k: v for k, v in r.items() if k != 'profile'})}")

    R = args.rounds
    print(
        f"\nFedNL option 2, top-K Kc = {8 * gpu.d}, alpha = 1, Frobenius l^k, w8a split "
        f"({gpu.N} clients, d = {gpu.d}), {res['machine'].get('gpu')}"
    )
    print(
        f"{'path':<7}{'learn ms':>10}{'round ms':>10}{'min':>8}{'kernels':>9}{'kern ms':>9}"
        f"{f'{R} rounds s':>15}"
    )
    for name, r in res["paths"].items():
        p = r["profile"]
        run_s = f"{r['run_s_scaled']:.2f}" + (f" ({r['run_rounds']} run)" if r["scaled"] else "")
        print(
            f"{name:<7}{r['learn_ms']:>10.3f}{r['round_ms']:>10.3f}{r['round_ms_min']:>8.3f}"
            f"{p.get('kernels_per_call', float('nan')):>9.1f}"
            f"{p.get('kernel_ms_per_call', float('nan')):>9.3f}{run_s:>15}"
        )
    for name, r in res["paths"].items():
        for k, c, ms in r["profile"].get("top_kernels", [])[:5]:
            print(f"  {name}: {c:6.1f} x {ms:8.4f} ms  {k}")
    res["target_s"] = 1.5
    res["target_met"] = res["paths"]["fused"]["run_s_scaled"] <= 1.5
    print(
        f"{R} rounds fused: {res['paths']['fused']['run_s_scaled']:.2f} s, target <= 1.5 s: "
        f"{'met' if res['target_met'] else 'NOT met'}"
    )
    if args.out:
        args.out.write_text(json.dumps(res, indent=1, default=str))
    return res


if __name__ == "__main__":
    main()
