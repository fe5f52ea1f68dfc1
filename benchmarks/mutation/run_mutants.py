"""Run the standing mutation list (benchmarks/mutation/mutants.toml) and report the kill rate.

Each mutant is one plausible bug: an exact snippet of one file and its replacement. The runner

1. checks the list: unique names, every file present, every original snippet present EXACTLY
   once in its file (in the snapshot that will be mutated) and different from its replacement;
   any problem stops the run (exit 2) before anything is executed;
2. snapshots the repository into a temporary folder, never touching the repository itself:
   ``--source worktree`` (default) copies the working tree (no .venv, no .git, no
   caches except __pycache__, whose Numba kernels are then reused; modification times are
   kept, so the compiled kernels stay valid), ``--source head`` extracts
   ``git archive HEAD`` (committed files only);
3. runs the test selection once on the unmutated snapshot (the baseline); tests that fail there
   are deselected for every mutant (they are listed), so a broken test never counts as a kill;
4. for each mutant: copies the snapshot, applies the replacement, runs
   ``python -m pytest -x -q -p no:cacheprovider <selection>`` in the copy with PYTHONPATH set
   to it (one BLAS thread, under ``nice``); a failing or erroring test run kills the mutant;
   exit status 0 means it survived; a run past ``--timeout`` counts as killed (timeout) and is
   shown as such;
5. prints a table (mutant, verdict, seconds, the first failing test) and the kill rate, and
   writes them as JSON (``--json``).

Usage (from the repository root, with the project's virtual environment active)::

    python benchmarks/mutation/run_mutants.py                    # every mutant, default tests
    python benchmarks/mutation/run_mutants.py --mutant fedprox_sign --mutant drift_pbar_uniform
    python benchmarks/mutation/run_mutants.py --tests tests/test_against_reference_impl.py
    python benchmarks/mutation/run_mutants.py --check            # validate the list only

The default selection is the numerical tests and the claim checks, ordered fastest-killing
first (the reference-implementation tests), so that ``-x`` stops a killed mutant within
seconds; only survivors pay for the whole selection.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MUTANTS = HERE / "mutants.toml"

#: The default selection: numerical tests and claim checks, the fastest killers first.
DEFAULT_TESTS = (
    "tests/test_against_reference_impl.py",  # the spec-only reference: most kills, ~5 s
    "tests/test_rates.py",
    "tests/test_partitions.py",
    "tests/test_oracles.py",
    "tests/test_oracles_stochastic.py",
    "tests/test_linalg.py",
    "tests/test_methods_core.py",
    "tests/test_runner.py",
    "tests/test_runner_schedules_and_costs.py",
    "tests/test_fednl.py",
    "tests/test_fednl_family.py",
    "tests/test_second_round_methods.py",
    "tests/test_sparse_path.py",
    "tests/test_sparse_fused_oracle.py",
    "tests/test_reliability_numerics.py",
    "tests/test_backends.py",
    "tests/test_batch_and_logging.py",
    "tests/test_batch_every_method.py",
    "tests/test_draws.py",
    "tests/test_metrics_batch.py",
    "tests/test_graph.py",
    "tests/test_gpu_blas_layout.py",
    "proofs_checks",  # the claim checks (quick mode), ~2-3 min
)
#: Not copied into the snapshot: anywhere in the tree (names), and at its top level only.
SKIP_ANYWHERE = {
    ".git",
    ".venv",
    ".pytest_cache",
    ".hypothesis",
    ".ruff_cache",
    ".ipynb_checkpoints",
}
SKIP_TOP = {"out", "build", "dist", ".whl", ".ci"}


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    original: str
    replacement: str
    description: str
    from_issue: bool = False


@dataclass
class Result:
    name: str
    verdict: str  # "killed", "survived", "timeout", "error"
    seconds: float
    killer: str = ""  # first failing test (or the error line)
    description: str = ""
    tail: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------- the list
def load_mutants(path: Path = MUTANTS) -> list[Mutant]:
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    out = []
    for i, entry in enumerate(data.get("mutant", [])):
        missing = [
            k for k in ("name", "file", "original", "replacement", "description") if k not in entry
        ]
        if missing:
            raise SystemExit(f"{path}: mutant #{i + 1} lacks {', '.join(missing)}")
        out.append(Mutant(**{k: entry[k] for k in Mutant.__dataclass_fields__ if k in entry}))
    return out


def validate(mutants: list[Mutant], root: Path) -> list[str]:
    """Every problem of the list against the tree at ``root`` (empty: the list is usable)."""
    problems = []
    seen: set[str] = set()
    for m in mutants:
        if m.name in seen:
            problems.append(f"{m.name}: duplicate name")
        seen.add(m.name)
        if not re.fullmatch(r"[A-Za-z0-9_]+", m.name):
            problems.append(f"{m.name}: a name may hold letters, digits and _ only")
        if m.original == m.replacement:
            problems.append(f"{m.name}: the replacement equals the original")
        target = root / m.file
        if not target.is_file():
            problems.append(f"{m.name}: {m.file} does not exist")
            continue
        n = target.read_text(encoding="utf-8").count(m.original)
        if n != 1:
            problems.append(
                f"{m.name}: the original snippet occurs {n} times in {m.file} "
                f"(must be exactly once):\n    {m.original!r}"
            )
    return problems


# ---------------------------------------------------------------------------------- copies
def snapshot(source: str, dest: Path) -> None:
    """The repository as of ``source`` ("worktree" or "head") in ``dest``; read-only on REPO."""
    dest.mkdir(parents=True)
    if source == "head":
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "HEAD"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return

    def skip(folder: str, names: list[str]) -> set[str]:
        top = Path(folder).resolve() == REPO
        return {
            n
            for n in names
            if n in SKIP_ANYWHERE or n.endswith(".egg-info") or (top and n in SKIP_TOP)
        }

    dest.rmdir()
    shutil.copytree(REPO, dest, symlinks=True, ignore=skip)  # copy2: mtimes kept


def apply(m: Mutant, root: Path) -> None:
    target = root / m.file
    text = target.read_text(encoding="utf-8")
    if text.count(m.original) != 1:
        raise RuntimeError(f"{m.name}: snippet not found exactly once in the copy")
    target.write_text(text.replace(m.original, m.replacement, 1), encoding="utf-8")


# ---------------------------------------------------------------------------------- pytest
def test_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = "1"
    env.pop("CI", None)
    env["PYTHONDONTWRITEBYTECODE"] = "0"
    return env


def pytest_cmd(
    tests: list[str], *, stop_first: bool, deselect: list[str], extra: list[str]
) -> list[str]:
    cmd = [
        "nice",
        "-n",
        "10",
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-rfE",
        "--no-header",
    ]
    if stop_first:
        cmd.append("-x")
    for d in deselect:
        cmd += ["--deselect", d]
    return cmd + extra + list(tests)


FAILED = re.compile(r"^(FAILED|ERROR) (\S+)")


def failures(output: str) -> list[str]:
    """Node ids of the failed or erroring tests in pytest's -rfE summary."""
    return [m.group(2) for line in output.splitlines() if (m := FAILED.match(line))]


def run_tests(
    root: Path,
    tests: list[str],
    *,
    stop_first: bool,
    deselect: list[str],
    extra: list[str],
    timeout: float,
) -> tuple[int | None, str, float]:
    """(pytest's exit status or None on timeout, its output, seconds)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        pytest_cmd(tests, stop_first=stop_first, deselect=deselect, extra=extra),
        cwd=root,
        env=test_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the test process group this runner started
        out, _ = proc.communicate()
        rc = None
    return rc, out, time.perf_counter() - started


def check_imports(root: Path) -> None:
    """The copy's own fedtheory must be the one imported there (not /work/main's)."""
    out = subprocess.run(
        [sys.executable, "-c", "import fedtheory; print(fedtheory.__file__)"],
        cwd=root,
        env=test_env(root),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(out).resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"the copy at {root} imports fedtheory from {out}, not from itself")


def judge(m: Mutant, rc: int | None, out: str, seconds: float) -> Result:
    lines = out.strip().splitlines()
    if rc is None:
        return Result(m.name, "timeout", seconds, "(timeout)", m.description, lines[-5:])
    if rc == 0:
        return Result(m.name, "survived", seconds, "", m.description)
    failed = failures(out)
    if rc in (1, 2) or failed:
        killer = (
            failed[0]
            if failed
            else next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else "")
        )
        return Result(m.name, "killed", seconds, killer, m.description)
    return Result(m.name, "error", seconds, f"pytest exit {rc}", m.description, lines[-8:])


def run_mutant(
    m: Mutant,
    snap: Path,
    work: Path,
    tests: list[str],
    deselect: list[str],
    extra: list[str],
    timeout: float,
    keep: bool,
) -> Result:
    root = work / m.name
    shutil.copytree(snap, root, symlinks=True)
    try:
        apply(m, root)
        rc, out, seconds = run_tests(
            root, tests, stop_first=True, deselect=deselect, extra=extra, timeout=timeout
        )
        return judge(m, rc, out, seconds)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------- report
def table(results: list[Result]) -> str:
    w = max([len(r.name) for r in results] + [6])
    lines = [
        f"{'mutant':<{w}}  {'verdict':<8}  {'s':>6}  first failing test / description",
        f"{'-' * w}  {'-' * 8}  {'-' * 6}  {'-' * 40}",
    ]
    for r in results:
        note = r.killer if r.verdict == "killed" else r.description
        lines.append(f"{r.name:<{w}}  {r.verdict:<8}  {r.seconds:6.1f}  {note}")
    return "\n".join(lines)


def kill_rate(results: list[Result]) -> tuple[int, int]:
    killed = sum(r.verdict in ("killed", "timeout") for r in results)
    return killed, len(results)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--mutant",
        action="append",
        default=[],
        help="run only this mutant (repeatable); default: all",
    )
    ap.add_argument("--list", default=str(MUTANTS), help="the mutation list (TOML)")
    ap.add_argument(
        "--tests",
        nargs="+",
        default=list(DEFAULT_TESTS),
        help="test selection (paths or node ids, in the order to run them)",
    )
    ap.add_argument(
        "--drop",
        action="append",
        default=[],
        help="remove this entry from the test selection (repeatable); e.g. "
        "--drop tests/test_against_reference_impl.py measures the suite "
        "without the reference-implementation tests",
    )
    ap.add_argument(
        "--from-issue",
        action="store_true",
        help="run only the mutants marked from_issue (issue 17's named survivors)",
    )
    ap.add_argument(
        "--pytest-arg",
        action="append",
        default=[],
        help="extra argument for pytest (repeatable), e.g. --pytest-arg=-k=fedpm",
    )
    ap.add_argument(
        "--source",
        choices=("worktree", "head"),
        default="worktree",
        help="mutate a copy of the working tree (default) or of git HEAD",
    )
    ap.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    ap.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="seconds per mutant before it counts as killed by timeout",
    )
    ap.add_argument(
        "--no-baseline", action="store_true", help="skip the unmutated run (no test is deselected)"
    )
    ap.add_argument(
        "--deselect",
        action="append",
        default=[],
        help="node id to deselect for every run (repeatable)",
    )
    ap.add_argument("--check", action="store_true", help="validate the list and stop")
    ap.add_argument("--keep", action="store_true", help="keep the mutated copies")
    ap.add_argument("--json", default=None, help="write the results here (JSON)")
    args = ap.parse_args(argv)

    mutants = load_mutants(Path(args.list))
    unknown_drop = sorted(set(args.drop) - set(args.tests))
    if unknown_drop:
        print(f"--drop: not in the selection: {', '.join(unknown_drop)}", file=sys.stderr)
        return 2
    args.tests = [t for t in args.tests if t not in args.drop]
    if args.from_issue:
        mutants = [m for m in mutants if m.from_issue]
    if args.mutant:
        unknown = sorted(set(args.mutant) - {m.name for m in mutants})
        if unknown:
            print(f"unknown mutant(s): {', '.join(unknown)}", file=sys.stderr)
            return 2
        mutants = [m for m in mutants if m.name in args.mutant]

    work = Path(tempfile.mkdtemp(prefix="fedtheory-mutants-"))
    try:
        snap = work / "_snapshot"
        snapshot(args.source, snap)
        problems = validate(mutants, snap)
        if problems:
            print(f"the mutation list is not usable ({len(problems)} problem(s)):", file=sys.stderr)
            for p in problems:
                print(f"  - {p}", file=sys.stderr)
            return 2
        print(f"# {len(mutants)} mutant(s) valid against the {args.source} snapshot")
        if args.check:
            return 0
        check_imports(snap)
        deselect = list(args.deselect)
        baseline_seconds = 0.0
        if not args.no_baseline:
            rc, out, baseline_seconds = run_tests(
                snap,
                args.tests,
                stop_first=False,
                deselect=deselect,
                extra=args.pytest_arg,
                timeout=args.timeout,
            )
            broken = failures(out)
            print(
                f"# baseline: pytest exit {rc} in {baseline_seconds:.0f} s; "
                f"{len(broken)} failing test(s) deselected for the mutants"
            )
            for b in broken:
                print(f"#   deselected (fails unmutated): {b}")
            if rc not in (0, 1) or (rc == 1 and not broken):
                print(out[-3000:], file=sys.stderr)
                print("the baseline run did not complete: fix it before mutating", file=sys.stderr)
                return 2
            deselect += broken
        started = time.perf_counter()
        results: list[Result] = []

        def one(m: Mutant) -> Result:
            r = run_mutant(
                m, snap, work, args.tests, deselect, args.pytest_arg, args.timeout, args.keep
            )
            print(f"# {r.name}: {r.verdict} ({r.seconds:.0f} s) {r.killer}", flush=True)
            return r

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = list(pool.map(one, mutants))
        killed, total = kill_rate(results)
        print()
        print(table(results))
        survivors = [r.name for r in results if r.verdict == "survived"]
        errors = [r.name for r in results if r.verdict == "error"]
        print()
        print(
            f"# kill rate: {killed}/{total} = {100 * killed / max(total, 1):.1f} % "
            f"({time.perf_counter() - started:.0f} s; baseline {baseline_seconds:.0f} s)"
        )
        if survivors:
            print(f"# survived: {', '.join(survivors)}")
        if errors:
            print(f"# errors (neither killed nor survived): {', '.join(errors)}")
            for r in results:
                if r.verdict == "error":
                    print("\n".join(f"#   {r.name}: {ln}" for ln in r.tail))
        if args.json:
            payload = {
                "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
                "source": args.source,
                "tests": args.tests,
                "deselected": deselect,
                "killed": killed,
                "total": total,
                "kill_rate": killed / max(total, 1),
                "results": [asdict(r) for r in results],
            }
            Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
            print(f"# wrote {args.json}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"# copies kept in {work}")


if __name__ == "__main__":
    sys.exit(main())
