"""Sweeps: many runs from one TOML file, run in parallel, each saved the moment it finishes.

A sweep spec::

    name = "fedpm_vs_sopm"            # optional, for the progress bar
    problems = ["het_quadratic"]      # suite names, or .toml paths (relative to this file)
    rounds = 20
    seeds = {count = 10, start = 0}   # or a list: seeds = [0, 1, 2]; default [0]
    participation = ["all", 5]        # optional: clients per round, "all" = full participation
    drift_metrics = true              # optional (default true)
    backend = "numpy"                 # optional: "numpy" or "cupy"

    [[methods]]
    name = "fedpm"
    params = {K = [1, 2, 4], eta = 1.0}   # a list is a grid: one configuration per value
    oracle = "exact"                      # optional: a name, or {name = "minibatch", b = [8, 64]}

Every key is checked: an unknown one is an error naming the key and the file. The spec expands
into configurations, problem x method x parameter grid x oracle grid x participation x seed,
each with a stable id: the first 16 hex digits of the SHA-256 of its canonical JSON (sorted
keys; the method's full parameter set, defaults included, so ``{K = 1}`` and ``{K = 1, eta =
1.0}`` are one configuration; the problem by name and content hash, not by path).

:func:`run_sweep` writes ``out_dir/sweep.toml`` (a copy of the spec; a different earlier spec
there is kept as ``sweep.<hash>.toml``) and one Parquet file per finished run,
``out_dir/runs/<id>.parquet``, written atomically (temporary file, then ``os.replace``), its
rows carrying the provenance columns of :mod:`fedtheory.results` plus ``config_id``,
``problem_hash``, ``drift_metrics`` and ``started_at`` (UTC, ISO 8601). Running a sweep again
into the same folder skips every configuration whose file exists, so an interrupted sweep
resumes and a grown sweep (more seeds, another grid value) runs only what is new. A run that
fails with a :class:`FedTheoryError` (e.g. S > N, a singular preconditioner) or runs out of
memory is recorded in ``out_dir/errors/<id>.json`` and tried again next time; any other
exception stops the sweep.

Runs go to ``jobs`` worker processes ("forkserver" where the platform has it, else "spawn";
each worker limits BLAS to one thread). A task carries the problem's spec, never the problem:
each worker builds a problem once and caches it (:func:`fedtheory.suite.load_problem`).
``jobs=1`` runs in this process. ``executor="dask"`` runs them on a Dask cluster instead
(:mod:`fedtheory.dask_executor`; Dask is the optional extra ``fedtheory[dask]``, and a sweep
asking for it without Dask is refused in one line), into the same files.

A write that fails mid-sweep (a full disk) stops the sweep with one line: the path, the OS
error, and "N of M runs finished and saved; re-run the same command to resume". Every saved
file is whole (written atomically), so the re-run skips exactly those.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._backend import require_gpu
from ._io import write_atomic
from .errors import FedTheoryError, WriteError, check
from .methods import METHODS, make_method
from .oracles import ORACLE_MODELS, make_oracle
from .results import RUNS_DIR, label_facets, make_labels
from .suite import read_spec, resolve, spec_hash
from .sweep_worker import (
    ERRORS_DIR,
    Config,
    compute,
    config_id,
    init_worker,
    run_file,
    save_run,
)
from .validate import check_bool, check_choice, check_count, check_int, check_table_keys, is_int

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_TOP_KEYS = (
    "name",
    "description",
    "problems",
    "rounds",
    "seeds",
    "participation",
    "drift_metrics",
    "backend",
    "methods",
)
_METHOD_KEYS = ("name", "params", "oracle")
_SEED_KEYS = ("count", "start")
BACKENDS = ("numpy", "cupy")
EXECUTORS = ("local", "dask")


@dataclass
class SweepSummary:
    """What :func:`run_sweep` did: configurations in the spec, run now, skipped because their
    file existed, and failed (id -> error message)."""

    out_dir: Path
    total: int
    ran: int
    skipped: int
    failed: dict[str, str]

    def __str__(self) -> str:
        s = (
            f"{self.total} configurations: {self.ran} run, {self.skipped} already done, "
            f"{len(self.failed)} failed; results in {self.out_dir}"
        )
        return s + "".join(f"\n  {cid}: {msg}" for cid, msg in self.failed.items())


# --------------------------------------------------------------------------- the spec


def read_sweep(path: str | os.PathLike, backend: str | None = None) -> dict[str, Any]:
    """Parse and validate a sweep spec; returns it with ``seeds`` and ``participation`` as
    lists and defaults filled. Errors name the file and the bad key or value. ``backend``
    (``fedtheory sweep --backend``), when given, replaces the spec's ``backend`` key."""
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise FedTheoryError(f"{path}: malformed TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FedTheoryError(f"{path}: cannot read the sweep spec ({exc})") from None
    check_table_keys(spec, _TOP_KEYS, path, "the top level")
    for key in ("problems", "rounds", "methods"):
        check(key in spec, f"{path}: missing key {key!r} at the top level")

    problems = spec["problems"]
    check(
        isinstance(problems, list) and problems and all(isinstance(p, str) for p in problems),
        f"{path}: problems must be a non-empty list of suite names or .toml paths, "
        f"got {problems!r}",
    )
    rounds = spec["rounds"]
    check_count(rounds, f"{path}: rounds")
    spec["seeds"] = _seeds(spec.get("seeds", [0]), path)
    spec["participation"] = _participation(spec.get("participation", ["all"]), path)
    spec.setdefault("drift_metrics", True)
    check_bool(spec["drift_metrics"], f"{path}: drift_metrics", toml=True)
    spec.setdefault("backend", "numpy")
    where = f"{path}: backend" if backend is None else "--backend"
    if backend is not None:
        spec["backend"] = backend
    check_choice(spec["backend"], where, BACKENDS, joined=True)
    if spec["backend"] == "cupy":
        try:
            require_gpu('backend = "cupy"' if backend is None else "--backend cupy")
        except FedTheoryError as exc:
            raise FedTheoryError(f"{path}: {exc}") from None
    spec.setdefault("name", path.stem)

    methods = spec["methods"]
    check(
        isinstance(methods, list) and methods and all(isinstance(m, dict) for m in methods),
        f"{path}: methods must be one or more [[methods]] tables, got {methods!r}",
    )
    for i, entry in enumerate(methods, 1):
        where = f"[[methods]] #{i}"
        check_table_keys(entry, _METHOD_KEYS, path, where)
        check_choice(entry.get("name"), f"{path}: {where}: name", sorted(METHODS), joined=True)
        params = entry.setdefault("params", {})
        check(isinstance(params, dict), f"{path}: {where}: params must be a table, got {params!r}")
        _grid_values(params, path, f"{where} params")
        oracle = entry.setdefault("oracle", "exact")
        if isinstance(oracle, str):
            oracle = entry["oracle"] = {"name": oracle}
        check(
            isinstance(oracle, dict),
            f"{path}: {where}: oracle must be a name or a table with a name, got {oracle!r}",
        )
        check_choice(
            oracle.get("name"), f"{path}: {where}: oracle name", ORACLE_MODELS, joined=True
        )
        _grid_values({k: v for k, v in oracle.items() if k != "name"}, path, f"{where} oracle")
    spec["_dir"], spec["_path"] = str(path.resolve().parent), str(path)
    return spec


def _seeds(seeds: Any, path: Path) -> list[int]:
    if isinstance(seeds, dict):
        check_table_keys(seeds, _SEED_KEYS, path, "seeds")
        count, start = seeds.get("count"), seeds.get("start", 0)
        check_count(count, f"{path}: seeds count")
        check_int(start, f"{path}: seeds start", 0)
        return list(range(start, start + count))
    check(
        isinstance(seeds, list) and seeds and all(is_int(s) and s >= 0 for s in seeds),
        f"{path}: seeds must be a list of integers >= 0 or {{count = .., start = ..}}, "
        f"got {seeds!r}",
    )
    return list(dict.fromkeys(seeds))


def _participation(values: Any, path: Path) -> list[int | None]:
    if not isinstance(values, list):
        values = [values]
    out: list[int | None] = []
    for v in values:
        check(
            v == "all" or (is_int(v) and v >= 1),
            f'{path}: participation must be "all" or integers >= 1, got {v!r}',
        )
        out.append(None if v == "all" else v)
    check(bool(out), f"{path}: participation must not be empty")
    return list(dict.fromkeys(out))


def _grid_values(table: dict, path: Path, where: str) -> None:
    for key, value in table.items():
        if isinstance(value, list):
            check(
                len(value) >= 1,
                f"{path}: {where}: {key} is an empty list (a grid needs at least one value)",
            )
        check(
            not isinstance(value, dict),
            f"{path}: {where}: {key} must be a value or a list of values, got a table {value!r}",
        )


def _grid(table: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of a table whose list values are grids (in key order)."""
    keys = list(table)
    axes = [v if isinstance(v, list) else [v] for v in table.values()]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*axes)]


def expand(spec: dict[str, Any]) -> list[Config]:
    """The configurations of a spec read by :func:`read_sweep`, duplicates removed, in the
    order problem, method entry, parameter grid, oracle grid, participation, seed. Method
    parameters are checked here (by building each method once), before anything runs."""
    base = Path(spec["_dir"])
    configs: dict[str, tuple[dict, dict]] = {}
    for name in spec["problems"]:
        local = base / name
        try:
            pspec = read_spec(
                resolve(local if name.endswith(".toml") and local.is_file() else name)
            )
        except FedTheoryError as exc:
            raise FedTheoryError(f"{spec['_path']}: problems: {exc}") from None
        for i, entry in enumerate(spec["methods"], 1):
            where = f"{spec['_path']}: [[methods]] #{i} ({entry['name']})"
            oracle_name = entry["oracle"]["name"]
            oracle_opts = {k: v for k, v in entry["oracle"].items() if k != "name"}
            for params in _grid(entry["params"]):
                try:
                    full = make_method(entry["name"], params).params()
                except (FedTheoryError, TypeError) as exc:
                    raise FedTheoryError(f"{where} params {params}: {exc}") from None
                for opts in _grid(oracle_opts):
                    try:
                        make_oracle(oracle_name, **opts)
                    except (FedTheoryError, TypeError) as exc:
                        raise FedTheoryError(f"{where} oracle {opts}: {exc}") from None
                    for S, seed in itertools.product(spec["participation"], spec["seeds"]):
                        c = {
                            "problem": pspec["name"],
                            "problem_hash": spec_hash(pspec),
                            "method": entry["name"],
                            "params": full,
                            "oracle": {"name": oracle_name, **opts},
                            "participation": S,
                            "seed": seed,
                            "rounds": spec["rounds"],
                            "drift_metrics": spec["drift_metrics"],
                            "backend": spec["backend"],
                        }
                        configs.setdefault(config_id(c), (c, pspec))
    labels = make_labels(
        (
            c["method"],
            label_facets(c["params"], c["participation"], _oracle_name(c["oracle"]), c["problem"]),
        )
        for c, _ in configs.values()
    )
    return [
        Config(cid, label, c, p)
        for (cid, (c, p)), label in zip(configs.items(), labels, strict=True)
    ]


def _oracle_name(oracle: dict[str, Any]) -> str:
    opts = ", ".join(f"{k}={v}" for k, v in oracle.items() if k != "name")
    return f"{oracle['name']}({opts})" if opts else oracle["name"]


# --------------------------------------------------------------------------- running


def run_sweep(
    spec_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    jobs: int = 1,
    progress: bool = True,
    executor: str = "local",
    scheduler: str | None = None,
    backend: str | None = None,
) -> SweepSummary:
    """Run every configuration of the sweep spec at ``spec_path`` whose result is not yet in
    ``out_dir`` (see the module docstring for the layout); returns what was done.

    ``executor`` is ``"local"`` (worker processes here) or ``"dask"``
    (:mod:`fedtheory.dask_executor`: a local Dask cluster of ``jobs`` workers, or the running
    cluster at the ``scheduler`` address); both write the same files, so either resumes.
    ``backend`` replaces the spec's ``backend`` key (it is part of every configuration id, so
    runs on another backend are new runs beside the old ones)."""
    check_count(jobs, "jobs")
    check_choice(executor, "executor", EXECUTORS, joined=True)
    check(
        scheduler is None or executor == "dask",
        f"a scheduler address ({scheduler!r}) needs the dask executor, got {executor!r}",
    )
    dask = _dask_executor() if executor == "dask" else None
    spec_path = Path(spec_path)
    spec = read_sweep(spec_path, backend)
    configs = expand(spec)
    out = Path(out_dir)
    with contextlib.ExitStack() as stack:
        execute = None
        if dask is not None:
            connect, execute_dask = dask
            pending = sum(not run_file(out, c.id).exists() for c in configs)
            if pending:  # connect before writing anything: a failed start leaves no output
                client = stack.enter_context(connect(min(jobs, pending), scheduler))
                execute = functools.partial(execute_dask, client=client)
        try:
            (out / RUNS_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FedTheoryError(
                f"cannot create the sweep folder {str(out)!r} ({exc.strerror})"
            ) from None
        stack.enter_context(_exclusive(out))
        _clean_temporaries(out)
        _save_spec(spec_path, out)
        return _run_todo(spec, configs, out, jobs, progress, execute)


def _dask_executor() -> tuple[Any, Any]:
    """:mod:`fedtheory.dask_executor`'s ``connect`` and ``execute_dask``, or a one-line
    refusal when Dask (an optional dependency) is not installed."""
    try:
        from .dask_executor import connect, execute_dask
    except ImportError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in ("dask", "distributed"):
            raise
        raise FedTheoryError(
            f"--executor dask needs Dask, which is not installed (no module "
            f"{exc.name!r}): pip install 'fedtheory[dask]'"
        ) from None
    return connect, execute_dask


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold an flock on the folder ``out`` itself for the sweep (no file is created; the
    kernel releases it even on SIGKILL): a second sweep on the same folder is refused
    instead of redoing the same work."""
    import fcntl

    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FedTheoryError(
                f"another sweep is running on {str(out)!r}; wait for it, or "
                f"use another --out folder"
            ) from None
        yield
    finally:
        os.close(fd)


def _clean_temporaries(out: Path) -> None:
    """Remove the temporaries a killed sweep left (``runs/.*.tmp``, ``errors/.*.tmp``, and
    beside sweep.toml): under the lock no other sweep is writing them."""
    for folder in (out, out / RUNS_DIR, out / ERRORS_DIR):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def _run_todo(
    spec: dict[str, Any],
    configs: list[Config],
    out: Path,
    jobs: int,
    progress: bool,
    execute: Any = None,
) -> SweepSummary:
    """Run what ``out`` lacks, locally or through ``execute`` (a Dask client's
    ``execute_dask``). A write that fails (a full disk) stops the sweep with one line: the
    path, the OS error, and how many runs are saved (a re-run resumes from there)."""
    todo = [c for c in configs if not run_file(out, c.id).exists()]
    summary = SweepSummary(out, len(configs), 0, len(configs) - len(todo), {})
    bar = _bar(len(todo), spec["name"], summary.skipped) if progress and todo else None
    results = (
        execute(todo, out) if execute is not None else _execute([(c, str(out)) for c in todo], jobs)
    )
    try:
        for cid, error in results:
            if error is None:
                summary.ran += 1
            else:
                summary.failed[cid] = error
            if bar is not None:
                bar.update(1)
                if summary.failed:
                    bar.set_postfix(failed=len(summary.failed))
    except WriteError as exc:  # the executor has stopped: every file on disk is whole
        saved = sum(run_file(out, c.id).exists() for c in configs)
        raise WriteError(
            f"{exc}; {saved} of {len(configs)} runs finished and saved; re-run "
            f"the same command to resume"
        ) from None
    finally:
        results.close()  # now, while a Dask client is still open: stop what is still running
        if bar is not None:  # end the bar's line, so that an error starts a line of its own
            bar.close()
    return summary


def _execute(tasks: list[tuple[Config, str]], jobs: int):
    """Yield (config id, error message or None) as runs finish."""
    if jobs == 1 or len(tasks) <= 1:
        for task in tasks:
            yield _run_one(task)
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    with ProcessPoolExecutor(
        max_workers=min(jobs, len(tasks)),
        mp_context=ctx,
        initializer=init_worker,
        initargs=(os.getpid(),),
    ) as pool:
        pending = {pool.submit(_run_one, task) for task in tasks}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def _run_one(task: tuple[Config, str]) -> tuple[str, str | None]:
    """Run one configuration and write its file; returns (id, None) or (id, error message)."""
    config, out_dir = task
    return save_run(Path(out_dir), config, *compute(config))


def _save_spec(spec_path: Path, out: Path) -> None:
    text = spec_path.read_bytes()
    dest = out / "sweep.toml"
    if dest.exists():
        old = dest.read_bytes()
        if old == text:
            return
        keep = out / f"sweep.{hashlib.sha256(old).hexdigest()[:12]}.toml"
        if not keep.exists():
            os.replace(dest, keep)
    write_atomic(dest, lambda tmp: Path(tmp).write_bytes(text))


def _bar(total: int, name: str, skipped: int) -> Any:
    from tqdm.auto import tqdm

    desc = f"sweep {name}" + (f" ({skipped} done before)" if skipped else "")
    return tqdm(total=total, desc=desc, unit="run")


# --------------------------------------------------------------------------- CLI


def main_sweep(
    spec: str,
    out: str,
    jobs: int,
    executor: str = "local",
    scheduler: str | None = None,
    backend: str | None = None,
) -> int:
    """``fedtheory sweep SPEC --out DIR --jobs J [--executor dask [--scheduler ADDR]]``: run
    (or resume) a sweep, print a summary. Returns 0 when every configuration has its file, 1
    when some failed (listed)."""
    start = time.perf_counter()
    summary = run_sweep(
        spec, out, jobs=jobs, progress=True, executor=executor, scheduler=scheduler, backend=backend
    )
    print(f"{summary} ({time.perf_counter() - start:.1f} s)")
    return 1 if summary.failed else 0
