"""``fedtheory check``: run the chosen claims, print the table, write JSON, report and tables."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .._io import check_destination, write_text_atomic
from .._version import __version__
from ..errors import check
from ..problem import FederatedProblem
from ..runner.metrics import environment
from .checks import accepts_problem, claim_ids, load_check, resolve_ids, runs_on_gpu
from .protocol import claim_backend, on_backend, single_threaded_blas
from .record import ClaimRecord, record
from .report import (
    claim_table,
    claim_table_latex,
    render_report,
    table_header,
    table_row,
    write_figures,
)


def run_claim(
    claim_id: str,
    quick: bool = True,
    problem: FederatedProblem | None = None,
    backend: str = "numpy",
) -> ClaimRecord:
    """Run one check (with one BLAS thread) with its problems on ``backend``; a check that
    raises is recorded as a FAIL with its traceback."""
    module = load_check(claim_id)
    if problem is not None:
        ok = [c for c in claim_ids() if accepts_problem(load_check(c))]
        check(
            accepts_problem(module),
            f"claim {module.CLAIM_ID} has no protocol for a "
            f"problem of your own; claims that have: {', '.join(ok)}",
        )
    if backend != "numpy":
        check(
            runs_on_gpu(module),
            f"claim {module.CLAIM_ID} has no GPU protocol: {getattr(module, 'GPU_WHY', '')}",
        )
    started = time.perf_counter()
    try:
        with single_threaded_blas(), claim_backend(backend):
            rec = (
                module.check(quick=quick)
                if problem is None
                else module.check(quick=quick, on=[on_backend(problem)])
            )
    except Exception as exc:  # a crashing check is a failed claim, not a crashed command
        return record(
            module.CLAIM_ID,
            module.STATEMENT,
            module.SOURCE,
            started,
            measured="error",
            predicted="-",
            passed=False,
            details={"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()},
        )
    check(
        isinstance(rec, ClaimRecord),
        f"check {claim_id} returned {type(rec).__name__}, not a ClaimRecord",
    )
    return rec


def _output_path(path: str | os.PathLike | None, option: str, suffix: str) -> Path | None:
    return check_destination(path, option, (suffix,))


@contextmanager
def _private_hypothesis_home() -> Iterator[None]:
    """Hypothesis (C1's protocol) keeps caches in ``./.hypothesis``; a user's ``fedtheory
    check`` must leave nothing in their folder, so its home is a temporary one."""
    from hypothesis import configuration

    old = getattr(configuration, "__hypothesis_home_directory", None)
    with tempfile.TemporaryDirectory(prefix="fedtheory-hypothesis-") as home:
        configuration.set_hypothesis_home_dir(home)
        try:
            yield
        finally:
            configuration.set_hypothesis_home_dir(old)


def main_check(
    claims: list[str] | None,
    quick: bool,
    json_path: str | os.PathLike | None,
    report_path: str | os.PathLike | None,
    problem: str | None = None,
    csv_path: str | os.PathLike | None = None,
    latex_path: str | os.PathLike | None = None,
    backend: str = "numpy",
) -> int:
    """``fedtheory check``: run the claims (all when ``claims`` is None or empty), print one
    table row per claim, write the records as JSON (``json_path``) and a Markdown report
    (``report_path``), both atomically. Returns 1 if any claim fails, else 0.

    ``problem`` (a suite name or TOML path) runs the protocols of the chosen claims on that
    problem instead of theirs (only claims whose check accepts ``on=``; others are refused
    before anything runs). ``csv_path`` / ``latex_path`` export the claim table. ``backend``
    "cupy" runs the checks' problems (and so their methods' rounds) on the GPU; it is refused
    in one line where CuPy or a GPU is missing, and for claims without a GPU protocol.

    Unknown claim ids and unusable output paths raise :class:`FedTheoryError` before anything
    runs.
    """
    from tqdm.auto import tqdm

    ids = resolve_ids(claims)
    json_out = _output_path(json_path, "--json", ".json")
    report_out = _output_path(report_path, "--report", ".md")
    csv_out = _output_path(csv_path, "--csv", ".csv")
    latex_out = _output_path(latex_path, "--latex", ".tex")
    check(backend in ("numpy", "cupy"), f"--backend must be numpy or cupy, got {backend!r}")
    if backend == "cupy":
        from .._backend import require_gpu

        require_gpu("--backend cupy")
        bad = [c for c in ids if not runs_on_gpu(load_check(c))]
        ok = [c for c in claim_ids() if runs_on_gpu(load_check(c))]
        check(
            not bad,
            f"--backend cupy: claim(s) {', '.join(bad)} have no GPU protocol; "
            f"claims that have: {', '.join(ok)} (choose with --claim)",
        )
    user_problem = None
    if problem is not None:
        from ..suite import load_problem

        bad = [c for c in ids if not accepts_problem(load_check(c))]
        ok = [c for c in claim_ids() if accepts_problem(load_check(c))]
        check(
            not bad,
            f"--problem: claim(s) {', '.join(bad)} have no protocol for a problem "
            f"of your own; claims that have: {', '.join(ok)} (choose with --claim)",
        )
        user_problem = load_problem(problem)
    mode = "quick" if quick else "full"
    print(f"# fedtheory {__version__}: {len(ids)} claim(s), {mode} mode, backend {backend}")
    print(table_header())
    records: list[ClaimRecord] = []
    started = time.perf_counter()
    with (
        tqdm(ids, desc="claims", unit="claim", leave=False, file=sys.stderr) as bar,
        _private_hypothesis_home(),
    ):
        for cid in bar:
            bar.set_postfix_str(cid)
            rec = run_claim(cid, quick=quick, problem=user_problem, backend=backend)
            records.append(rec)
            tqdm.write(table_row(rec), file=sys.stdout)
    failed = [r.id for r in records if not r.passed]
    total = time.perf_counter() - started
    print(
        f"# {len(records) - len(failed)} passed, {len(failed)} failed"
        + (f" ({', '.join(failed)})" if failed else "")
        + f" in {total:.1f} s"
    )
    if json_out is not None:
        payload = {
            "version": __version__,
            "mode": mode,
            "backend": backend,
            "seconds": total,
            "passed": not failed,
            "threads": 1,
            "environment": environment(),
            "records": [r.to_dict() for r in records],
        }
        write_text_atomic(json_out, json.dumps(payload, indent=2) + "\n")
        print(f"# wrote {json_out}")
    if csv_out is not None:
        write_text_atomic(csv_out, claim_table(records).to_csv(index=False))
        print(f"# wrote {csv_out}")
    if latex_out is not None:
        write_text_atomic(latex_out, claim_table_latex(records))
        print(f"# wrote {latex_out}")
    if report_out is not None:
        figures = write_figures(records, report_out.parent / f"{report_out.stem}_figures")
        write_text_atomic(report_out, render_report(records, quick=quick, figures=figures))
        print(f"# wrote {report_out}")
    return 1 if failed else 0
