"""Peak memory of one round with the runner's metrics, in units of the Hessian stack.

    python benchmarks/bench_memory.py [--quick] [--backend numpy|cupy] [--out FILE.json]
        [--N 1000] [--d 500] [--rows 8] [--where]
        [--problem synthetic|w8a|a9a|dense] [--methods fedpm,newton,fednl,...] [--w8a PATH]
        [--fresh]

``--fresh`` measures each case in a fresh process: the oracle keeps one Hessian stack for
reuse between calls (objectives._hessian_stack), so in one process only the first case would
pay for it. ``--problem`` other than ``synthetic`` uses bench_peers.py's problems: the w8a and
a9a FedNL splits (sparse storage, as ``storage="auto"`` picks) and the w8a-shaped dense
synthetic. With
``--methods`` every listed method is measured (``run`` of 1 round, drift off and on; FedNL with
option 2, top-K Kc = 8d, the default spectral l^k); without it only FedPM, with the extra
"round" case below.

Problem: a synthetic logistic problem, N clients of --rows rows, d features (rows a ~ N(0, I_d),
y = sign(a^T w + noise), lam = 1e-3). Its reference solution is computed before measuring.
The unit is the stack of the N client Hessians, N d^2 float64 = N * d * d * 8 bytes.
Target: a peak of at most 2 stacks beyond the problem's data; the verdict allows, besides the
2 stacks, one copy of the problem's data (A, y, sw) for the O(N n d) temporaries of the oracle
(A * v in the Hessian product, margins), which do not grow with d^2.

Measured, each from a clean start (the problem's arrays already allocated and not counted):
  round             one ``make_method("fedpm").round(ctx, state)`` on a full-participation
                    round context (no metrics), for reference;
  run, drift off    ``run(problem, make_method("fedpm"), 1, drift_metrics=False)``;
  run, drift on     ``run(problem, make_method("fedpm"), 1, drift_metrics=True)``.

How peak memory is measured:
  numpy  tracemalloc: NumPy reports every array buffer it allocates to tracemalloc, so the
         traced peak minus the traced memory at the start is the peak of new array memory
         (plus Python objects) during the call. Buffers that LAPACK/BLAS or SciPy's C code
         allocate with plain malloc are not seen (they are per-matrix workspaces, small next to
         a stack). Where the kernel allows it (/proc/self/clear_refs), the rise of the
         process's peak resident set (VmHWM) over its resident set at the start is printed as a
         cross-check.
  cupy   a cupy.cuda.MemoryHook counting the bytes the default memory pool hands out
         (malloc_postprocess: + mem_size, the rounded block size) and takes back
         (free_postprocess: - mem_size), tracking the maximum of (in use - in use at the start).
         This is the peak of live CuPy arrays and workspaces allocated through the pool; memory
         that CUDA libraries allocate themselves (handles) is not counted. The pool's
         total_bytes() after free_all_blocks() at the start is also printed: the bytes the pool
         held at the end, an upper bound that includes cached free blocks.
--where: numpy: also runs each case under a line tracer on fedtheory's code and names the line
during which the peak occurred, with the arrays live when that line started, by the line that
allocated them (file:line), in stacks. cupy: the pool hook also records every block of at least
1/100 stack with the fedtheory line (and the innermost line) that allocated it, and lists those
live at the peak.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tracemalloc
from pathlib import Path

import numpy as np

from bench_round import machine
from fedtheory import make_method, run
from fedtheory.methods import round_context
from fedtheory.problem import FederatedProblem

TARGET_STACKS = 2.0


def synthetic(N: int, rows: int, d: int, seed: int = 0) -> FederatedProblem:
    rng = np.random.default_rng(seed)
    n = N * rows
    X = rng.normal(size=(n, d))
    w = rng.normal(size=d) / np.sqrt(d)
    y = np.where(X @ w + 0.5 * rng.normal(size=n) >= 0, 1.0, -1.0)
    parts = np.split(np.arange(n), N)
    return FederatedProblem.from_dataset(
        X, y, parts, objective="logistic", lam=1e-3, name=f"synthetic_N{N}_n{rows}_d{d}"
    )


METHOD_PARAMS = {"fednl": lambda d: {"option": 2, "compressor": "topK", "Kc": 8 * d, "alpha": 1.0}}


def build(args: argparse.Namespace) -> FederatedProblem:
    """The measured problem (``--problem``)."""
    if args.problem == "synthetic":
        return synthetic(args.N, args.rows, args.d)
    import bench_peers

    if args.problem == "w8a":
        path = Path(args.w8a) if args.w8a else bench_peers.W8A_DEFAULT
        return bench_peers.w8a(path, "auto")
    return bench_peers.a9a("auto") if args.problem == "a9a" else bench_peers.dense_synthetic()


def method_cases(problem: FederatedProblem, methods: list[str]) -> dict:
    """One ``run`` of 1 round per method, drift metrics off and on."""
    out = {}
    for name in methods:
        params = METHOD_PARAMS.get(name, lambda d: {})(problem.d)
        for drift in (False, True):
            out[f"{name}, drift {'on' if drift else 'off'}"] = (
                lambda name=name, params=params, drift=drift: run(
                    problem, make_method(name, params), 1, drift_metrics=drift
                )
            )
    return out


def cases(problem: FederatedProblem, methods: list[str] | None = None) -> dict:
    """The measured calls, each a closure that builds what it needs and runs."""
    if methods:
        return method_cases(problem, methods)

    def one_round() -> None:
        method = make_method("fedpm")
        state, _ = method.start(problem, problem.xp.zeros(problem.d))
        ctx = round_context(problem)
        method.round(ctx, state)

    return {
        "round": one_round,
        "run, drift off": lambda: run(problem, make_method("fedpm"), 1, drift_metrics=False),
        "run, drift on": lambda: run(problem, make_method("fedpm"), 1, drift_metrics=True),
    }


# ---- NumPy: tracemalloc ---------------------------------------------------------------------
def _vm(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _trim() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``), so that the RSS rise of
    the next call is not hidden by pages an earlier call freed but the allocator kept."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_numpy(fn) -> dict:
    _trim()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        rss0 = _vm("VmRSS")
        hwm_ok = _reset_hwm() and rss0 is not None
        fn()
        peak = tracemalloc.get_traced_memory()[1] - start
        hwm = _vm("VmHWM") if hwm_ok else None
    finally:
        tracemalloc.stop()
    return {"peak_bytes": peak, "rss_peak_rise_bytes": None if hwm is None else hwm - rss0}


def where_numpy(fn, stack: float, top: int = 6) -> dict:
    """The fedtheory line during which the traced peak occurred, and what was live before it.

    A tracer on the lines of fedtheory's code reads tracemalloc's peak at every line and
    return event and resets it, so a new maximum belongs to the line executed since the last
    event (calls into NumPy/SciPy are not traced and count towards the fedtheory line calling
    them). The live set is a snapshot taken at the start of that line, by allocation site.
    """
    state = {"peak": 0, "line": None, "live": None, "snap": None, "last": None}

    def check(here: str | None) -> None:
        cur, pk = tracemalloc.get_traced_memory()
        if pk - base > state["peak"]:
            state.update(peak=pk - base, line=state["last"], live=state["snap"])
        state["snap"] = tracemalloc.take_snapshot() if cur - base > stack / 4 else None
        state["last"] = here
        tracemalloc.reset_peak()

    def tracer(frame, event, arg):
        if event in ("line", "return"):
            check(
                f"{_short(frame.f_code.co_filename)}:{frame.f_lineno}"
                if event == "line"
                else state["last"]
            )
        return tracer

    def global_tracer(frame, event, arg):
        return tracer if "fedtheory" in frame.f_code.co_filename else None

    tracemalloc.start(1)
    try:
        base = tracemalloc.get_traced_memory()[0]
        start_snap = tracemalloc.take_snapshot()
        tracemalloc.reset_peak()
        sys.settrace(global_tracer)
        try:
            fn()
        finally:
            sys.settrace(None)
        check(None)
    finally:
        tracemalloc.stop()
    sites = []
    if state["live"] is not None:
        stats = state["live"].compare_to(start_snap, "lineno")
        sites = [
            {
                "site": f"{_short(s.traceback[0].filename)}:{s.traceback[0].lineno}",
                "stacks": s.size_diff / stack,
            }
            for s in stats[:top]
            if s.size_diff > stack / 100
        ]
    return {"peak_stacks": state["peak"] / stack, "line": state["line"], "live_before": sites}


def _short(path: str) -> str:
    parts = path.replace("\\", "/").split("/")
    for anchor in ("fedtheory", "numpy", "scipy"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) :])
    return "/".join(parts[-2:])


# ---- CuPy: a memory-pool hook ---------------------------------------------------------------
def peak_cupy(fn, stack: float | None = None) -> dict:
    """Peak of the bytes CuPy's default pool hands out during ``fn()``; with ``stack`` (the
    --where option) also the live blocks of at least stack / 100 bytes at that peak, each with
    the fedtheory line and the innermost line that allocated it."""
    import traceback

    import cupy

    class PeakHook(cupy.cuda.MemoryHook):
        name = "PeakHook"

        def __init__(self) -> None:
            self.used = 0
            self.peak = 0
            self.live: dict = {}
            self.at_peak: list = []

        def malloc_postprocess(self, **kw) -> None:
            self.used += kw["mem_size"]
            if stack is not None and kw["mem_size"] >= stack / 100:
                self.live[kw["mem_ptr"]] = (kw["mem_size"], _alloc_site())
            if self.used > self.peak:
                self.peak = self.used
                if stack is not None:
                    self.at_peak = list(self.live.values())

        def free_postprocess(self, **kw) -> None:
            self.used -= kw["mem_size"]
            self.live.pop(kw["mem_ptr"], None)

    def _alloc_site() -> str:
        frames = traceback.extract_stack()[:-2]  # drop _alloc_site and the hook
        ours = [f for f in frames if "fedtheory" in f.filename]
        inner = frames[-1] if frames else None
        txt = f"{_short(ours[-1].filename)}:{ours[-1].lineno}" if ours else "?"
        if inner is not None and (not ours or inner is not ours[-1]):
            txt += f" via {_short(inner.filename)}:{inner.lineno}"
        return txt

    pool = cupy.get_default_memory_pool()
    cupy.cuda.Device().synchronize()
    pool.free_all_blocks()
    hook = PeakHook()
    with hook:
        fn()
        cupy.cuda.Device().synchronize()
    out = {"peak_bytes": hook.peak, "pool_total_bytes": pool.total_bytes()}
    if stack is not None:
        by_site: dict = {}
        for size, site in hook.at_peak:
            by_site[site] = by_site.get(site, 0) + size
        out["where"] = {
            "peak_stacks": hook.peak / stack,
            "line": None,
            "live_before": [
                {"site": k, "stacks": v / stack}
                for k, v in sorted(by_site.items(), key=lambda kv: -kv[1])
            ],
        }
    return out


def fresh(case: str) -> dict:
    """The figures of ``case`` measured by a fresh run of this script (``--only CASE``)."""
    import subprocess

    argv = [a for a in sys.argv[1:] if a != "--fresh"] + ["--only", case]
    out = subprocess.run(
        [sys.executable, __file__, *argv], capture_output=True, text=True, check=True
    ).stdout
    line = [x for x in out.splitlines() if x.startswith("#RESULT ")][-1]
    return json.loads(line[len("#RESULT ") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 100, d = 100")
    ap.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    ap.add_argument("--N", type=int, default=None, help="clients (default 1000)")
    ap.add_argument("--d", type=int, default=None, help="dimension (default 500)")
    ap.add_argument("--rows", type=int, default=8, help="rows per client")
    ap.add_argument(
        "--where",
        action="store_true",
        help="name the allocating lines of the arrays live at the peak",
    )
    ap.add_argument("--out", help="write the figures to this JSON file")
    ap.add_argument("--problem", choices=("synthetic", "w8a", "a9a", "dense"), default="synthetic")
    ap.add_argument("--methods", default="", help="comma-separated methods (default: fedpm only)")
    ap.add_argument("--w8a", default=None, help="LIBSVM w8a (.gz), for --problem w8a")
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="measure each case in a fresh process (so that no case inherits the "
        "oracle's reused Hessian stack or any other cache from an earlier one)",
    )
    ap.add_argument("--only", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    for key, full, quick in (("N", 1000, 100), ("d", 500, 100)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)

    info = machine(args.backend)
    command = "python " + shlex.join(sys.argv)
    print(f"# {command}")
    print("# machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    methods = [m for m in args.methods.split(",") if m]
    host = build(args)
    host.reference  # noqa: B018  (cached, copied by .to(); not measured)
    problem = host.to("cupy") if args.backend == "cupy" else host
    args.N, args.d, args.rows = problem.N, problem.d, int(problem.y.shape[1])
    stack = args.N * args.d * args.d * 8
    data = sum(int(a.nbytes) for a in (problem.A, problem.y, problem.sw))
    how = "tracemalloc" if args.backend == "numpy" else "CuPy pool hook"
    print(
        f"# problem {problem.name} ({problem.storage}): "
        f"N = {args.N}, d = {args.d}, {args.rows} rows/client; stack N*d*d*8 = "
        f"{stack / 2**20:.1f} MiB; problem data (A, y, sw) = {data / 2**20:.1f} MiB, not "
        f"counted; peak by {how}"
    )
    print(
        f"# target: excess = peak - {TARGET_STACKS:g} stacks <= {data / 2**20:.1f} MiB (one copy "
        f"of the problem data, for O(N n d) temporaries such as A * v in the Hessian product)"
    )
    extra = "RSS rise" if args.backend == "numpy" else "pool total"
    print(
        f"{'case':<20}{'peak MiB':>10}{'stacks':>8}{'excess MiB':>12}"
        f"{extra + ' MiB':>16}{'stacks':>8}{'target':>8}"
    )
    tiny = synthetic(4, args.rows, min(args.d, 10))
    tiny.reference  # noqa: B018
    tiny = tiny.to("cupy") if args.backend == "cupy" else tiny
    for fn in cases(tiny, methods).values():
        fn()  # warm-up on a tiny problem: imports, kernel compilation, library handles
    rows = []
    for name, fn in cases(problem, methods).items():
        if args.only is not None and name != args.only:
            continue
        if args.fresh:
            m = fresh(name)
        elif args.backend == "numpy":
            m = peak_numpy(fn)
        else:
            m = peak_cupy(fn, stack if args.where else None)
        if args.only is not None:
            print("#RESULT " + json.dumps(m))
            return
        other = m.get("rss_peak_rise_bytes", m.get("pool_total_bytes"))
        over = m["peak_bytes"] - TARGET_STACKS * stack
        row = {
            "case": name,
            "peak_bytes": m["peak_bytes"],
            "peak_stacks": m["peak_bytes"] / stack,
            "over_target_stacks_bytes": over,
            "other_bytes": other,
            "other_kind": extra,
            "target_met": over <= data,
        }
        if args.where:
            row["where"] = where_numpy(fn, stack) if args.backend == "numpy" else m["where"]
        rows.append(row)
        other_txt = (
            f"{'n/a':>16}{'':>8}"
            if other is None
            else f"{other / 2**20:>16.1f}{other / stack:>8.2f}"
        )
        print(
            f"{name:<20}{m['peak_bytes'] / 2**20:>10.1f}{row['peak_stacks']:>8.2f}"
            f"{over / 2**20:>12.1f}{other_txt}"
            f"{'met' if row['target_met'] else 'NOT met':>8}",
            flush=True,
        )
    if args.where:
        for row in rows:
            w = row["where"]
            if args.backend == "numpy":
                print(
                    f"# {row['case']}: peak {w['peak_stacks']:.2f} stacks (traced run) reached "
                    f"while executing {w['line']}; live when that line started:"
                )
            else:
                print(
                    f"# {row['case']}: blocks >= 1/100 stack live at the peak "
                    f"({w['peak_stacks']:.2f} stacks), by allocating line:"
                )
            for s in w["live_before"]:
                print(f"#     {s['stacks']:6.2f} stacks allocated at {s['site']}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(
                {
                    "benchmark": "bench_memory",
                    "command": command,
                    "machine": info,
                    "args": vars(args),
                    "stack_bytes": stack,
                    "data_bytes": data,
                    "rows": rows,
                },
                fh,
                indent=2,
            )
        print(f"# wrote {args.out}")


if __name__ == "__main__":
    main()
