"""Sweeps on a Dask cluster: the ``dask`` executor of :func:`fedtheory.sweep.run_sweep`.

    fedtheory sweep SPEC.toml --out DIR --executor dask [--jobs N] [--scheduler tcp://HOST:PORT]

Without a scheduler address the sweep starts a ``LocalCluster`` on this machine (N worker
processes of one thread, listening on 127.0.0.1 only, no dashboard) and stops it at the end;
with one it uses the cluster already running there (SLURM, Kubernetes: ``docs/cluster.md``),
whose size ``--jobs`` does not change. Its workers need the same fedtheory installed and the
problems' data files at the paths this machine sees (a shared file system).

What travels where:

- the sweep's problem specs go to every worker once, through a :class:`ProblemSpecs` worker
  plugin (which the scheduler also gives to workers that join later, e.g. one restarted after a
  crash); a worker builds each problem once and keeps it, in the same per-process cache as the
  local executor (:func:`fedtheory.sweep_worker.problem_for`);
- a task carries one configuration dict and its legend label, and returns the run's rows;
- this process writes each result as it completes (``as_completed``) into the same store as
  local sweeps: ``runs/<id>.parquet`` written atomically with the same columns, or
  ``errors/<id>.json``. A sweep started with one executor therefore resumes with the other.

Failures. A worker that dies mid-task (killed, out of memory) loses nothing: the scheduler
reruns its tasks on another worker, up to ``distributed.scheduler.allowed-failures`` times a
task, after which ``KilledWorker`` stops the sweep. An exception inside a task is retried
:data:`RETRIES` times and then stops the sweep, as it does locally, except a
:class:`~fedtheory.errors.FedTheoryError`, which is the run's result (recorded in ``errors/``,
tried again on the next resume). One future per configuration, its file written once, when its
result arrives: a rerun task never gives a second file.

A cluster that cannot start (a worker process that dies while starting, a nanny timing out) or
a scheduler that cannot be reached is a :class:`~fedtheory.errors.DaskStartError`, one line
naming the cause; :func:`fedtheory.sweep.run_sweep` connects before it writes anything, so
such a failure leaves no output. This module is the only one that imports Dask, an optional
dependency (``pip install 'fedtheory[dask]'``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distributed import Client, LocalCluster, WorkerPlugin, as_completed

from .errors import DaskStartError, FedTheoryError
from .sweep_worker import Config, compute, config_id, init_worker, problem_for, save_run

#: Reruns of a task that raised (a worker dying is counted by the scheduler, not here).
RETRIES = 2

# On a worker: problem hash -> problem spec, filled by ProblemSpecs.setup.
_SPECS: dict[str, dict[str, Any]] = {}
_BUILD = threading.Lock()


class ProblemSpecs(WorkerPlugin):
    """Hands a sweep's problem specs (problem hash -> validated TOML spec) to each worker, and
    limits the worker's BLAS to one thread, as local sweep workers are."""

    def __init__(self, specs: dict[str, dict[str, Any]]) -> None:
        self.specs = specs
        blob = json.dumps(specs, sort_keys=True, default=str).encode()
        # named by content: a second sweep on the same cluster adds its specs, never
        # replaces those a still-running sweep relies on
        self.name = f"fedtheory-problems-{hashlib.sha256(blob).hexdigest()[:16]}"

    def setup(self, worker: Any) -> None:
        init_worker()
        _SPECS.update(self.specs)


def _run_task(spec: dict[str, Any], label: str) -> tuple[str, Any]:
    """On a worker: run the configuration ``spec``; returns
    :func:`fedtheory.sweep_worker.compute`'s (start time, rows or error message)."""
    problem_spec = _SPECS.get(spec["problem_hash"])
    if problem_spec is None:  # not a bad input: the plugin has not reached this worker
        raise RuntimeError(
            f"worker has no problem spec {spec['problem_hash']} "
            f"({spec['problem']}); was the ProblemSpecs plugin registered?"
        )
    config = Config(config_id(spec), label, spec, problem_spec)
    with _BUILD:  # a worker of several threads still builds each problem once
        try:
            problem_for(config)
        except FedTheoryError:
            pass  # a bad problem is this run's result: compute meets it again and says so
    return compute(config)


def execute_dask(
    configs: list[Config],
    out: Path,
    jobs: int = 1,
    scheduler: str | None = None,
    client: Client | None = None,
) -> Iterator[tuple[str, str | None]]:
    """Run ``configs`` on a Dask cluster and write each into the sweep folder ``out`` as it
    completes; yields (config id, None) or (config id, error message), in completion order.

    ``client`` is a connected client (:func:`connect`); without one, ``scheduler`` is the
    address of a running scheduler (``tcp://HOST:PORT``), and ``None`` starts a loopback
    ``LocalCluster`` of ``min(jobs, len(configs))`` worker processes for this call.
    """
    if not configs:
        return
    if client is None:
        with connect(min(jobs, len(configs)), scheduler) as own:
            yield from execute_dask(configs, out, client=own)
        return
    client.register_plugin(ProblemSpecs({c.spec["problem_hash"]: c.problem_spec for c in configs}))
    by_key = {}
    try:
        for c in configs:
            future = client.submit(
                _run_task, c.spec, c.label, key=f"fedtheory-run-{c.id}", retries=RETRIES
            )
            by_key[future.key] = (future, c)
        for future in as_completed([f for f, _ in by_key.values()]):
            started, result = future.result()
            _, config = by_key.pop(future.key)
            future.release()
            yield save_run(out, config, started, result)
    finally:
        # leaving early (an error, a failed write, the caller stopping): the scheduler drops
        # the tasks no one will save
        if by_key:
            client.cancel([f for f, _ in by_key.values()])


@contextmanager
def connect(jobs: int, scheduler: str | None) -> Iterator[Client]:
    """A client of the scheduler at ``scheduler``, or of a new loopback ``LocalCluster`` of
    ``jobs`` worker processes (stopped on leaving). A cluster that cannot start (a worker
    process that dies while starting, a nanny that times out) or a scheduler that cannot be
    reached raises :class:`DaskStartError`, one line saying what failed."""
    if scheduler is None:
        # Dask's own log lines (a worker's traceback when it fails to start) are left out:
        # the error says what failed, in one line; FEDTHEORY_TRACEBACK=1 shows them
        quiet = logging.WARNING if os.environ.get("FEDTHEORY_TRACEBACK") else logging.CRITICAL
        with _starting():
            cluster = LocalCluster(
                n_workers=jobs,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                silence_logs=quiet,
            )
        with cluster:
            with _starting():
                client = Client(cluster)
            with client:
                yield client
        return
    try:
        client = Client(scheduler)
    except Exception as exc:  # refused, timed out, not an address: Dask's types vary
        raise DaskStartError(
            f"cannot reach the Dask scheduler at {scheduler!r} "
            f"({_one_line(exc)}); expected the address of a running one, "
            f"e.g. tcp://HOST:8786"
        ) from None
    with client:
        yield client


class _Deaths(logging.Handler):
    """The nanny's "Worker process N exited with status S" lines, while a cluster starts."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("Worker process "):
            self.lines.append(text[0].lower() + text[1:])


@contextmanager
def _starting() -> Iterator[None]:
    """Turn any failure of the block (starting a cluster) into one :class:`DaskStartError`
    line: the root cause, and the exit status of each worker process that died meanwhile."""
    deaths = _Deaths()
    log = logging.getLogger("distributed.nanny")
    log.addHandler(deaths)
    try:
        yield
    except Exception as exc:
        root: BaseException = exc
        for _ in range(20):  # the innermost cause (a chain is never that long)
            inner = root.__cause__ or root.__context__
            if inner is None:
                break
            root = inner
        died = "; ".join(dict.fromkeys(deaths.lines))
        raise DaskStartError(
            f"dask cluster failed to start: {type(root).__name__}: "
            f"{_one_line(root)}" + (f" ({died})" if died else "")
        ) from None
    finally:
        log.removeHandler(deaths)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
