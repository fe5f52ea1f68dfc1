"""Device time of the library calls inside one replayed FedPM K = 1 round (issue 15: why a
replayed FedPM round still misses its target).

    python benchmarks/bench_gpu_fedpm_parts.py [--out FILE.json]

For the shapes of the w8a FedNL split (142 clients x 350 rows, d = 300), of a9a_fednl
(80 x 407, d = 123) and 64 x 250, d = 200 (inside the fused kernel's range), on random data
of those shapes (rows 5 % non-zero, stored dense; SPD matrices M M^T / d + I), each part
recorded alone as a CUDA graph and replayed 50 times between two CUDA events (ms per replay):

- ``gram``: the client Hessian products A_i^T (v_i * A_i), one strided batched cuBLAS product;
- ``potrf``: cuSOLVER's batched Cholesky factorisation of the stack (minus ``copy``, the copy
  of the stack that the factorisation works on, also timed);
- ``potrf_loop``: the same factorisations as one non-batched ``cusolverDnDpotrf`` per client,
  recorded into the same graph (the alternative to the batched call);
- ``trsm2``: the two batched triangular solves (cuBLAS ``trsmBatched``, one right-hand side per
  client) of the local Newton step;
- ``potrs``: cuSOLVER's batched ``potrsBatched`` instead of the two solves (its result is
  checked against them: ``potrs_diff``);
- ``apply_mix``: P_i theta_i for every client and the weighted sum of the stack;
- ``fused_T`` (T = 256, 512: the most threads per block): factor and solve in one shared-memory
  kernel launch (:func:`fedtheory.cuda_kernels.chol_solve`, what ``spd_solve`` takes where the
  matrix fits; "nan" where it does not), against ``potrf`` + ``copy`` + ``trsm2``; its result
  is checked against theirs (``fused_diff``, largest relative difference);
- ``server_lib`` / ``server_fused``: the server's one d x d solve, cuSOLVER + cuBLAS (copy,
  potrf, both trsm) against the fused kernel.
"""

from __future__ import annotations

import argparse
import ctypes
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench_round import machine
from fedtheory import gpu_blas

FUSED_THREADS = (256, 512)


def replay_ms(fn: Any, reps: int = 50) -> float:
    import cupy

    stream, pool = cupy.cuda.Stream(non_blocking=True), cupy.cuda.MemoryPool()
    with cupy.cuda.using_allocator(pool.malloc), stream:
        stream.begin_capture()
        keep = fn()  # noqa: F841 (the recorded buffers stay alive while the graph replays)
        graph = stream.end_capture()
    graph.launch(cupy.cuda.Stream.null)
    cupy.cuda.Device().synchronize()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(reps):
        graph.launch(cupy.cuda.Stream.null)
    end.record()
    end.synchronize()
    return cupy.cuda.get_elapsed_time(start, end) / reps


def parts(N: int, n: int, d: int, rng: np.random.Generator) -> dict[str, float]:
    import cupy

    A = cupy.asarray((rng.random((N, n, d)) < 0.05).astype(float))
    v = cupy.asarray(rng.random((N, n)))
    M = rng.normal(size=(N, d, d))
    P = cupy.asarray(M @ M.transpose(0, 2, 1) / d + np.eye(d))
    x = P.copy()
    b = cupy.asarray(rng.normal(size=(N, d)))
    out: dict[str, float] = {"N": N, "n": n, "d": d}
    out["gram"] = replay_ms(lambda: gpu_blas.matmul(A.transpose(0, 2, 1), A * v[:, :, None]))
    out["copy"] = replay_ms(lambda: cupy.copyto(x, P))
    out["potrf"] = replay_ms(lambda: (cupy.copyto(x, P), gpu_blas.potrf_batched(x))) - out["copy"]
    lib, h = gpu_blas._cusolver()
    lwork = ctypes.c_int()
    lib.cusolverDnDpotrf_bufferSize(h, 1, d, ctypes.c_void_p(P.data.ptr), d, ctypes.byref(lwork))
    work = cupy.empty((N, max(lwork.value, 1)))
    info = cupy.zeros(N, dtype=cupy.int32)

    def loop() -> None:
        cupy.copyto(x, P)
        lib2, h2 = gpu_blas._cusolver()
        for i in range(N):
            lib2.cusolverDnDpotrf(
                h2,
                1,
                d,
                ctypes.c_void_p(x[i].data.ptr),
                d,
                ctypes.c_void_p(work[i].data.ptr),
                lwork.value,
                ctypes.c_void_p(info.data.ptr + 4 * i),
            )

    out["potrf_loop"] = replay_ms(loop, 10) - out["copy"]
    cupy.copyto(x, P)
    gpu_blas.potrf_batched(x)
    L = x * cupy.tri(d)
    out["trsm2"] = replay_ms(lambda: gpu_blas.trsm(L, gpu_blas.trsm(L, b, 0), 1))
    ref = gpu_blas.trsm(L, gpu_blas.trsm(L, b, 0), 1)
    sol, status = b.copy(), cupy.zeros(1, dtype=cupy.int32)

    def potrs() -> tuple:
        cupy.copyto(sol, b)
        lib2, h2 = gpu_blas._cusolver()
        pa, pb = gpu_blas._pointers(x), gpu_blas._pointers(sol.reshape(N, d, 1))
        rc = lib2.cusolverDnDpotrsBatched(
            h2,
            1,
            d,
            1,
            ctypes.c_void_p(pa.data.ptr),
            d,
            ctypes.c_void_p(pb.data.ptr),
            d,
            ctypes.c_void_p(status.data.ptr),
            N,
        )
        assert rc == 0, rc
        return pa, pb

    out["potrs"] = replay_ms(potrs)
    out["potrs_diff"] = float(abs(sol - ref).max())
    from fedtheory import cuda_kernels

    fits = cuda_kernels.chol_solve_fits(d)
    default = cuda_kernels.CHOL_THREADS
    for threads in FUSED_THREADS:
        cuda_kernels.CHOL_THREADS = threads
        out[f"fused_{threads}"] = (
            replay_ms(lambda: cuda_kernels.chol_solve(P, b)) if fits else float("nan")
        )
    cuda_kernels.CHOL_THREADS = default
    if fits:
        fx, fstatus = cuda_kernels.chol_solve(P, b)
        assert not cupy.asnumpy(fstatus).any()
        out["fused_diff"] = float(abs(fx - ref).max() / abs(ref).max())
    x1, P1, b1 = x[:1].copy(), P[:1].copy(), b[:1].copy()

    def server_lib() -> Any:
        cupy.copyto(x1, P1)
        gpu_blas.potrf_batched(x1)
        return gpu_blas.trsm(x1[0], gpu_blas.trsm(x1[0], b1[0], 0), 1)

    out["server_lib"] = replay_ms(server_lib)
    out["server_fused"] = replay_ms(lambda: cuda_kernels.chol_solve(P1, b1)) if fits else np.nan
    w = cupy.full(N, 1.0 / N)
    out["apply_mix"] = replay_ms(
        lambda: (gpu_blas.matmul(P, b[..., None]), gpu_blas.matmul(w, P.reshape(N, -1)))
    )
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    res = {
        "machine": machine("cupy"),
        "parts": [parts(*s, rng) for s in ((142, 350, 300), (80, 407, 123), (64, 250, 200))],
    }
    keys = ("gram", "copy", "potrf", "potrf_loop", "trsm2", "potrs", "apply_mix")
    keys += tuple(f"fused_{t}" for t in FUSED_THREADS) + ("server_lib", "server_fused")
    print(f"device ms per replay, {res['machine'].get('gpu')}")
    print(f"{'N x n, d':<14}" + "".join(f"{k:>13}" for k in keys) + "   potrs_diff")
    for p in res["parts"]:
        print(
            f"{p['N']} x {p['n']}, {p['d']:<4}".ljust(14)
            + "".join(f"{p[k]:>13.3f}" for k in keys)
            + f"   {p['potrs_diff']:.1e}"
        )
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
