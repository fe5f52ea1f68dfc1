"""The ``fedtheory`` command line.

    fedtheory demo [--rounds R]                    FedPM, SOPM and Newton on the embedded default
    fedtheory problems                             the problem suite
    fedtheory run PROBLEM --method NAME [--param KEY=VALUE ...] [--rounds R]
                  [--participation S] [--seed N] [--out FILE.csv]

Bad input (a FedTheoryError) is one line on stderr and exit code 2; no output file is written.
So is a problem too large for this machine's memory, and any other exception (a bug: the
environment variable FEDTHEORY_TRACEBACK=1 shows its traceback instead). A warning (e.g. a
ConditioningWarning for an ill-conditioned problem) is one line on stderr,
``fedtheory: warning: ...``, and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from ._backend import require_gpu
from ._io import check_destination, write_together
from ._version import __version__
from .errors import ConditioningWarning, FedTheoryError, check, out_of_memory
from .methods import METHODS, make_method
from .oracles import make_oracle
from .problem import FederatedProblem
from .runner import run
from .runner.metrics import environment
from .suite import DEFAULT_PROBLEM, list_problems, load_problem
from .threads import DEFAULT_THREADS
from .trace import TIMING
from .validate import check_int, check_min, coerce


def _params(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        check(bool(sep) and bool(key), f"--param takes KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def _oracle_params(pairs: Sequence[str]) -> dict[str, float]:
    """--oracle-param KEY=VALUE: b (the minibatch size) an integer, any other a float."""
    return {
        key: coerce(
            key, value, 1 if key == "b" else 1.0, label=f"--oracle-param {key}", expected="a number"
        )
        for key, value in _params(pairs).items()
    }


def _check_out(path: str | None) -> Path | None:
    out = check_destination(path, "--out", (".csv",))
    if out is not None:
        check_destination(out.with_suffix(".json"), "--out (its .json metadata)", (".json",))
    return out


def _participation(text: str | None) -> int | str | None:
    """--participation: an integer S, or the path of a schedule file (one round per line)."""
    if text is None:
        return None
    if text.strip().lstrip("-").isdigit():
        return int(text)
    check(
        Path(text).is_file(),
        f"--participation must be an integer S or a schedule file, got {text!r} (no such file)",
    )
    return text


def _backend(problem: FederatedProblem, backend: str) -> FederatedProblem:
    """The problem on ``backend``; refused in one line where CuPy or a GPU is missing."""
    if backend == "numpy":
        return problem
    require_gpu("--backend cupy")
    return problem.to("cupy")


def _theta0(text: str | None, problem: FederatedProblem) -> np.ndarray | None:
    """--theta0: "zeros" (the default start), "star" or "star+R" (theta* moved by R along a
    fixed unit direction, to explore local theorems), or a text file of d numbers."""
    if text is None or text == "zeros":
        return None
    star = np.asarray(problem.reference.theta_star, dtype=float)
    if text == "star" or text.startswith("star+"):
        r = 0.0
        if text != "star":
            try:
                r = float(text[5:])
            except ValueError:
                raise FedTheoryError(f"--theta0 star+R needs a number R, got {text!r}") from None
            check(np.isfinite(r) and r >= 0, f"--theta0 star+R needs R >= 0, got {text!r}")
        u = np.ones_like(star) / np.sqrt(star.size)
        return star + r * u
    path = Path(text)
    check(path.is_file(), f"--theta0 must be zeros, star, star+R or a file, got {text!r}")
    try:
        x = np.loadtxt(path, dtype=float, ndmin=1)
    except (OSError, ValueError) as exc:
        raise FedTheoryError(f"--theta0 {text!r}: cannot read it: {exc}") from None
    x = np.asarray(x, dtype=float).ravel()
    check(x.shape == (problem.d,), f"--theta0 {text!r}: expected {problem.d} numbers, got {x.size}")
    check(bool(np.isfinite(x).all()), f"--theta0 {text!r} contains NaN or inf")
    return x


#: ``fedtheory run --graph`` -> ``run(..., graph=...)``
GRAPH_CHOICES = {"auto": None, "on": True, "off": False}


def cmd_run(args: argparse.Namespace) -> int:
    out = _check_out(args.out)
    if args.precision is not None:
        return _run_precise(args, out)
    check_int(args.seed, "--seed", 0)
    check_int(args.threads, "--threads", 1)
    method = make_method(args.method, _params(args.param))
    participation = _participation(args.participation)
    oracle = make_oracle(args.oracle, **_oracle_params(args.oracle_param))
    check_min(args.diverge_factor, "--diverge-factor", 0, strict=True)
    host = load_problem(args.problem)
    theta0 = _theta0(args.theta0, host)
    problem = _backend(host, args.backend)
    trace = run(
        problem,
        method,
        args.rounds,
        participation=participation,
        seed=args.seed,
        oracle=oracle,
        log_every=args.log_every,
        progress=args.progress,
        drift_metrics=not args.no_drift,
        threads=args.threads,
        theta0=theta0,
        diverge_factor=args.diverge_factor,
        graph=GRAPH_CHOICES[args.graph],
    )
    print(f"# {problem!r}")
    params = ", ".join(f"{k}={v}" for k, v in method.params().items())
    print(
        f"# method {method.name}({params}), S = {trace.meta['participation']}, "
        f"oracle {trace.meta['oracle']}, seed {args.seed}, status {trace.status}"
        + (f", CUDA graph: {trace.meta['graph']}" if trace.meta.get("graph") else "")
    )
    print(trace.table())
    if out is not None:
        if args.no_timing:  # wall time is never reproducible: record it as not measured
            for row in trace.rows:
                row.update(dict.fromkeys(TIMING, float("nan")))
        meta = out.with_suffix(".json")
        info = {
            **trace.meta,
            "timing": not args.no_timing,
            "environment": environment(with_date=not args.no_timing),
        }
        text = json.dumps(info, indent=2, default=float)
        # one unit: the metadata and the rows appear together or not at all
        write_together([(meta, lambda tmp: Path(tmp).write_text(text)), (out, trace.csv_writer())])
        print(f"# wrote {out} and {meta}")
    return 0


def _run_precise(args: argparse.Namespace, out: Path | None) -> int:
    """--precision BITS: the run in arb ball arithmetic (:mod:`fedtheory.precision`); the
    options it does not support are refused, never ignored."""
    check_int(args.precision, "--precision", 53, note=" (bits)")
    unsupported = [
        opt
        for opt, used in (
            ("--participation", args.participation is not None),
            ("--oracle", args.oracle != "exact"),
            ("--oracle-param", bool(args.oracle_param)),
            ("--backend cupy", args.backend != "numpy"),
            ("--graph", args.graph != "auto"),
            ("--log-every", args.log_every != 1),
            ("--no-drift", args.no_drift),
            ("--theta0", args.theta0 != "zeros"),
            ("--progress", args.progress),
        )
        if used
    ]
    check(
        not unsupported,
        f"--precision runs full participation, the exact oracle, from 0, "
        f"on the CPU; it does not take {', '.join(unsupported)}",
    )
    from .precision import main_run_precise

    check_int(args.seed, "--seed", 0)
    return main_run_precise(
        load_problem(args.problem),
        args.method,
        _params(args.param),
        args.rounds,
        args.precision,
        seed=args.seed,
        out=out,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    problem = load_problem(DEFAULT_PROBLEM)
    ref = problem.reference
    print(f"# {problem!r}")
    print(
        f"# theta*: ||theta*|| = {np.linalg.norm(ref.theta_star):.4g}, mu = {ref.mu:.3g}, "
        f"L = {ref.L:.3g}, L_H <= {ref.L_H:.3g}"
    )
    runs = {
        "FedPM(K=1)": make_method("fedpm", {"K": 1, "eta": 1.0}),
        "SOPM(K=1)": make_method("sopm", {"K": 1, "eta": 1.0}),
        "Newton": make_method("newton", {"eta": 1.0}),
    }
    check_int(args.threads, "--threads", 1)
    traces = {name: run(problem, m, args.rounds, threads=args.threads) for name, m in runs.items()}
    print("# ||theta^t - theta*|| per round")
    print(f"{'round':>6}" + "".join(f"{name:>16}" for name in traces))
    for t in range(args.rounds + 1):
        print(f"{t:>6d}" + "".join(f"{tr['dist_to_opt'][t]:>16.4e}" for tr in traces.values()))
    print(
        "# FedPM with one local step is the Newton step (quadratic collapse); simple mixing "
        "(SOPM) stalls at its drift floor."
    )
    return 0


def cmd_problems(args: argparse.Namespace) -> int:
    for name, description in list_problems():
        print(f"{name:<28} {description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedtheory", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"fedtheory {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser(
        "run",
        help="run one method on one problem and print its per-round table",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    r.add_argument("problem", help="a suite name (see `fedtheory problems`) or a .toml path")
    r.add_argument("--method", required=True, help=f"one of: {', '.join(sorted(METHODS))}")
    r.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method hyperparameter, e.g. --param K=1 --param eta=1",
    )
    r.add_argument("--rounds", type=int, default=20)
    r.add_argument(
        "--participation",
        default=None,
        metavar="S|FILE",
        help="clients per round, drawn uniformly without replacement (default: "
        "all), or a schedule file: one round per line, client indices from 0",
    )
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--oracle", default="exact", help="exact (default), minibatch or gaussian")
    r.add_argument(
        "--oracle-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="oracle option: b=8 (minibatch rows), sigma=0.1 (gaussian)",
    )
    r.add_argument(
        "--out",
        default=None,
        metavar="FILE.csv",
        help="write the per-round rows (and FILE.json with the run's metadata)",
    )
    r.add_argument(
        "--backend",
        choices=("numpy", "cupy"),
        default="numpy",
        help="array backend (cupy: on the GPU, needs the gpu extra)",
    )
    r.add_argument(
        "--graph",
        choices=tuple(GRAPH_CHOICES),
        default="auto",
        help="on the GPU, record round 2 as a CUDA graph and replay it (same bits): auto "
        "where the run allows it, on (refused with the reason otherwise), off",
    )
    r.add_argument(
        "--log-every",
        type=int,
        default=1,
        metavar="K",
        help="compute and print metrics every K rounds (and the last)",
    )
    r.add_argument(
        "--no-timing",
        action="store_true",
        help="write the seconds column as nan (not measured), so that two runs "
        "with the same seed give byte-identical --out files",
    )
    r.add_argument("--progress", action="store_true", help="show a progress bar")
    r.add_argument(
        "--theta0",
        default="zeros",
        metavar="START",
        help="start point: zeros, star, star+R (theta* + R along (1,..,1)/sqrt d) "
        "or a text file of d numbers (spaces or lines)",
    )
    r.add_argument(
        "--diverge-factor",
        type=float,
        default=1e8,
        metavar="F",
        help="status diverged once ||theta - theta*|| > F max(1, ||theta*||, ||theta0 - theta*||)",
    )
    r.add_argument(
        "--precision",
        type=int,
        default=None,
        metavar="BITS",
        help="run in arbitrary precision (arb balls, rigorous radii) at BITS bits: "
        "newton, fedpm, sopm, fednl (identity), gd, giant; small problems only",
    )
    r.add_argument(
        "--no-drift", action="store_true", help="skip the drift metrics (their columns are NaN)"
    )
    r.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        metavar="T",
        help="BLAS threads (one is measured fastest on small and mid-sized rounds)",
    )
    r.set_defaults(func=cmd_run)

    d = sub.add_parser(
        "demo",
        help=f"FedPM, SOPM and Newton on {DEFAULT_PROBLEM}",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d.add_argument("--rounds", type=int, default=12, help="rounds per method")
    d.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="BLAS threads")
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser(
        "check",
        help="run the claim checks of docs/claims.md: measured vs "
        "predicted, pass/fail (exit 1 if any claim fails)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    c.add_argument(
        "--claim",
        action="append",
        default=None,
        metavar="ID",
        help="a claim id (C1 .. C18, EXT-PP); repeat for several; default: all",
    )
    c.add_argument("--quick", action="store_true", help="the small CI-sized protocols")
    c.add_argument("--json", default=None, metavar="FILE", help="write every record as JSON")
    c.add_argument(
        "--report",
        default=None,
        metavar="FILE.md",
        help="write a Markdown report (figures as PNG and PDF beside it)",
    )
    c.add_argument("--csv", default=None, metavar="FILE.csv", help="write the claim table as CSV")
    c.add_argument(
        "--latex",
        default=None,
        metavar="FILE.tex",
        help="write the claim table as a LaTeX tabular (booktabs)",
    )
    c.add_argument(
        "--problem",
        default=None,
        metavar="PROBLEM",
        help="run the chosen claims' protocols on this problem (a suite name or a "
        "TOML file) instead of theirs; e.g. --problem my.toml --claim C2",
    )
    c.add_argument(
        "--backend",
        choices=("numpy", "cupy"),
        default="numpy",
        help="where the checks' problems and rounds run (cupy: on the GPU, needs the "
        "gpu extra; claims without a GPU protocol are refused)",
    )
    c.set_defaults(
        func=lambda a: _lazy("claims", "main_check")(
            a.claim,
            a.quick,
            a.json,
            a.report,
            problem=a.problem,
            csv_path=a.csv,
            latex_path=a.latex,
            backend=a.backend,
        )
    )

    pr = sub.add_parser("problems", help="list the problem suite")
    pr.set_defaults(func=cmd_problems)

    sw = sub.add_parser(
        "sweep",
        help="run (or resume) a sweep: problems x methods x params x "
        "participation x seeds, one result file per run",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sw.add_argument("spec", help="the sweep's TOML file (see examples/sweep_small.toml)")
    sw.add_argument("--out", required=True, metavar="DIR", help="the results folder")
    sw.add_argument("--jobs", type=int, default=1, help="parallel worker processes")
    sw.add_argument(
        "--executor",
        choices=("local", "dask"),
        default="local",
        help="local: worker processes here (default); dask: a Dask cluster, "
        "local with --jobs workers unless --scheduler is given",
    )
    sw.add_argument(
        "--scheduler",
        default=None,
        metavar="tcp://HOST:PORT",
        help="with --executor dask: the address of a running Dask scheduler",
    )
    sw.add_argument(
        "--backend",
        choices=("numpy", "cupy"),
        default=None,
        help="array backend of every run, replacing the spec's backend key "
        "(default: the spec's, else numpy; cupy needs the gpu extra)",
    )
    sw.set_defaults(
        func=lambda a: _lazy("sweep", "main_sweep")(
            a.spec, a.out, a.jobs, executor=a.executor, scheduler=a.scheduler, backend=a.backend
        )
    )

    pl = sub.add_parser(
        "plot",
        help="plot a metric per round from sweep folders, results.parquet files or trace CSVs",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    pl.add_argument("results", nargs="+", help="sweep folders, .parquet files or trace CSVs")
    pl.add_argument("--metric", default="dist_to_opt", help="a per-round column")
    pl.add_argument("--by", default="label", help="group curves by this column")
    pl.add_argument("--x", default="round", help="x axis column (e.g. bits, uplink_floats)")
    pl.add_argument("--out", required=True, metavar="FIG.png", help=".png or .pdf")
    pl.add_argument(
        "--fit",
        choices=("order", "linear"),
        default=None,
        help="fit the Q-order or the linear ratio of each curve",
    )
    pl.add_argument(
        "--bound",
        choices=("quadratic", "damped_newton"),
        default=None,
        help="draw a theory bound on ||theta - theta*|| (constants from the runs)",
    )
    pl.add_argument(
        "--floor",
        default=None,
        metavar="none|VALUE",
        help="the float-floor line: none, or a value (default: 1e3 eps scale)",
    )
    pl.add_argument(
        "--band",
        choices=("minmax", "quantile", "bootstrap"),
        default="minmax",
        help="band over seeds: min-max, 10-90%% quantiles, or the mean's 95%% bootstrap CI",
    )
    pl.add_argument("--logx", action="store_true", default=None, help="log x axis")
    pl.add_argument("--title", default=None)
    pl.add_argument(
        "--facet",
        default=None,
        metavar="COLUMN",
        help="one panel per value of COLUMN (e.g. participation)",
    )
    pl.add_argument(
        "--style", choices=("paper",), default=None, help="paper: serif, one column wide"
    )
    pl.set_defaults(
        func=lambda a: _lazy("plot", "main_plot")(
            a.results,
            a.metric,
            a.by,
            a.out,
            x=a.x,
            fit=a.fit,
            bound=a.bound,
            floor=a.floor,
            band=a.band,
            logx=a.logx,
            title=a.title,
            facet=a.facet,
            style=a.style,
        )
    )
    return p


def _lazy(module: str, name: str):
    """Import a subcommand's module only when it runs (keeps `fedtheory run` light)."""
    import importlib

    return getattr(importlib.import_module(f"fedtheory.{module}"), name)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            warnings.simplefilter("default", ConditioningWarning)
            return args.func(args)
    except FedTheoryError as exc:
        print(f"fedtheory: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedtheory: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # no library traceback: one line (FEDTHEORY_TRACEBACK=1 shows it)
        if os.environ.get("FEDTHEORY_TRACEBACK"):
            raise
        print(f"fedtheory: error: {_unexpected(exc)}", file=sys.stderr)
        return 2


def _unexpected(exc: Exception) -> str:
    """One line for an exception that is not a FedTheoryError: an allocation too large for this
    machine (NumPy raises MemoryError, or ValueError beyond the address space), or a bug."""
    text = " ".join(str(exc).split()) or "no message"
    if out_of_memory(exc):
        return f"not enough memory ({text}); use a smaller problem, batch or grid"
    return (
        f"internal error {type(exc).__name__}: {text} (a bug: please report it; "
        f"FEDTHEORY_TRACEBACK=1 shows the traceback)"
    )


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    text = " ".join(str(message).split())
    print(f"fedtheory: warning: {category.__name__}: {text}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
