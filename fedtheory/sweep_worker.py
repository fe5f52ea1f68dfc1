"""What one sweep configuration is, and how a worker runs it and saves its result.

Shared by the executors of :mod:`fedtheory.sweep` (local worker processes) and
:mod:`fedtheory.dask_executor` (a Dask cluster), which both import from here and never from
each other: :func:`compute` runs a configuration and writes nothing, :func:`save_run` writes what
it returned into the sweep folder (atomically), :func:`problem_for` is a process's problem cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ._io import write_atomic
from .errors import FedTheoryError, WriteError, check, out_of_memory
from .methods import make_method
from .oracles import make_oracle
from .results import RUNS_DIR, trace_frame, write_parquet
from .runner.metrics import environment
from .suite import load_problem

ERRORS_DIR = "errors"
_ID = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class Config:
    """One run of a sweep: ``id`` (16 hex digits), ``label`` (for legends), ``spec`` (the
    canonical dict hashed into the id) and the problem's validated TOML spec."""

    id: str
    label: str
    spec: dict[str, Any]
    problem_spec: dict[str, Any] = field(repr=False)


def config_id(spec: dict[str, Any]) -> str:
    """The stable id of a configuration: 16 hex digits of the SHA-256 of its canonical JSON."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def init_worker(parent: int | None = None) -> None:
    """One BLAS thread per worker (``jobs`` workers share the cores instead of fighting; the
    same count as a single-process sweep, so results are the same bits), and, given the pid
    of the sweep's main process, a watchdog that ends this worker within a second once that
    process is gone: a killed sweep leaves no worker computing (and writing) behind it."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    if parent is not None:
        threading.Thread(
            target=_watch, args=(parent,), daemon=True, name="fedtheory-parent-watchdog"
        ).start()


def _watch(parent: int, every: float = 0.5) -> None:
    while True:
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # a pid reused by another user's process: the parent is gone
            os._exit(1)
        time.sleep(every)


@functools.cache
def _environment_json() -> str:
    """This process's environment (Python, platform, NumPy, SciPy, BLAS, git commit) as JSON,
    for every run's rows (the date is the run's own ``started_at``)."""
    return json.dumps(environment(with_date=False), sort_keys=True)


PROBLEMS: dict[tuple[str, str], Any] = {}


def problem_for(config: Config) -> Any:
    """This process's copy of the configuration's problem, built once per spec and backend."""
    key = (
        config.spec["problem_hash"] + config.problem_spec.get("_dir", ""),
        config.spec["backend"],
    )
    if key not in PROBLEMS:
        problem = load_problem(config.problem_spec)
        if config.spec["backend"] != problem.backend:
            problem = problem.to(config.spec["backend"])
        PROBLEMS[key] = problem
    return PROBLEMS[key]


def compute(config: Config) -> tuple[str, Any]:
    """Run one configuration, writing nothing: (start time, its rows with provenance) or
    (start time, the message of the FedTheoryError that stopped it). Executors that run
    elsewhere (:mod:`fedtheory.dask_executor`) call this remotely and :func:`save_run` here."""
    from .runner import run

    c = config.spec
    started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    try:
        problem = problem_for(config)
        method = make_method(c["method"], c["params"])
        oracle = make_oracle(
            c["oracle"]["name"], **{k: v for k, v in c["oracle"].items() if k != "name"}
        )
        trace = run(
            problem,
            method,
            c["rounds"],
            participation=c["participation"],
            seed=c["seed"],
            oracle=oracle,
            drift_metrics=c["drift_metrics"],
        )
    except FedTheoryError as exc:
        return started, str(exc)
    except (MemoryError, ValueError) as exc:  # a configuration too large for this machine
        if not out_of_memory(exc):
            raise
        return started, f"not enough memory ({exc})"
    df = trace_frame(trace, label=config.label)
    df["config_id"] = config.id
    df["problem_hash"] = c["problem_hash"]
    df["drift_metrics"] = c["drift_metrics"]
    df["started_at"] = started
    df["environment"] = _environment_json()
    return started, df


def save_run(out: Path, config: Config, started: str, result: Any) -> tuple[str, str | None]:
    """Write what :func:`compute` returned into the sweep folder ``out``: the rows as
    ``runs/<id>.parquet``, or an error as ``errors/<id>.json``; returns (id, None) or (id,
    error message). A write that fails (a full disk) raises :class:`WriteError` naming the path
    and the OS error, and leaves no file for this run (the atomic writer removes its temporary)."""
    c = config.spec
    dest = run_file(out, config.id)
    try:
        if isinstance(result, str):
            msg = (
                f"{config.label} on {c['problem']}, S = {c['participation'] or 'all'}, "
                f"seed {c['seed']}: {result}"
            )
            errors = out / ERRORS_DIR
            errors.mkdir(exist_ok=True)
            text = json.dumps({"config": c, "error": result, "started_at": started}, indent=2)
            write_atomic(errors / f"{config.id}.json", lambda tmp: Path(tmp).write_text(text))
            return config.id, msg
        write_parquet(result, dest)
        stale = out / ERRORS_DIR / f"{config.id}.json"
        if stale.exists():
            stale.unlink()
    except WriteError:
        raise
    except OSError as exc:  # the errors/ folder, or removing a stale error file
        raise WriteError(f"cannot write {exc.filename or out}: {exc.strerror or exc}") from None
    except FedTheoryError as exc:  # the atomic writer's "cannot write PATH: OS error"
        raise WriteError(str(exc)) from None
    return config.id, None


def run_file(out: Path, cid: str) -> Path:
    # ids are 16 hex digits, so a path built from one never leaves out/runs
    check(_ID.fullmatch(cid) is not None, f"config id must be 16 hex digits, got {cid!r}")
    return out / RUNS_DIR / f"{cid}.parquet"
