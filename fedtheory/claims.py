"""Claims as executable checks: the record, the registry, the ``fedtheory check`` command.

Each claim of ``docs/claims.md`` is one module of the top-level ``proofs_checks/`` folder
(``c01_fedpm_is_newton.py``, ..., ``ext_partial_participation.py``; shipped inside the wheel as
``fedtheory/_checks``). A check module defines ``CLAIM_ID``, ``STATEMENT``, ``SOURCE``, a
function ``check(quick: bool, ...) -> ClaimRecord`` and one pytest test ``test_claim``.
``quick=True`` runs the protocol at CI size; ``quick=False`` the full protocol.

A :class:`ClaimRecord` carries the measured figure next to the predicted one and the verdict of
the pass criterion of docs/claims.md, never a loosened one. The helpers below (one round of a method
at a chosen point, the limit of a method's round map, heterogeneous problems built from a data
set) are shared by the checks so that no check re-implements them.

The command::

    fedtheory check [--claim ID ...] [--quick] [--json FILE] [--report FILE.md]

is :func:`main_check`: one table row per claim, exit code 1 if any claim fails.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ._backend import to_numpy
from ._io import check_destination, write_text_atomic
from ._version import __version__
from .errors import FedTheoryError, check
from .methods.base import Method, make_method, round_context
from .problem import FederatedProblem
from .runner import iterate
from .threads import blas_threads

MethodFactory = Callable[..., Method]
"""Builds the method under test from keyword hyperparameters, e.g. ``factory(K=1, eta=1.0)``.
Every check accepts one (``method_factory=``) so that a deliberately broken method can be
injected (tests/test_claims_mutations.py) without touching globals."""


# ------------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class ClaimRecord:
    """The outcome of one claim's check.

    ``measured`` and ``predicted`` are short human-readable figures (the headline number the
    pass criterion reads, and what the theory says of it); ``interval`` is the confidence
    interval of the measured figure where one exists ("" otherwise); ``details`` holds every
    number behind the verdict (JSON-serialisable); ``seconds`` is the check's wall time.
    """

    id: str
    statement: str
    source: str
    measured: str
    predicted: str
    interval: str
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def summary(self) -> str:
        """One line: id, verdict, measured vs predicted, interval, seconds."""
        ci = f" {self.interval}" if self.interval else ""
        return (f"{self.id} {self.verdict}: measured {self.measured}{ci}; predicted "
                f"{self.predicted} ({self.seconds:.1f} s)")

    def __str__(self) -> str:
        return self.summary()

    def explain(self) -> str:
        """The summary and every detail, for an assertion message."""
        lines = [self.summary(), f"  claim: {self.statement}"]
        lines += [f"  {k}: {_short(v)}" for k, v in self.details.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))

    def to_markdown(self) -> str:
        """A Markdown section: heading with the verdict, the figures, and the details."""
        out = [f"### {self.id}: {self.verdict}", "", self.statement, "",
               f"*Source:* {self.source}", "",
               "| measured | predicted | interval | seconds |", "|---|---|---|---|",
               f"| {_md(self.measured)} | {_md(self.predicted)} | {_md(self.interval) or '-'} "
               f"| {self.seconds:.1f} |", ""]
        if self.details:
            out += ["<details><summary>details</summary>", "", "```json",
                    json.dumps(jsonable(self.details), indent=2), "```", "", "</details>", ""]
        return "\n".join(out)


def record(claim_id: str, statement: str, source: str, started: float, *, measured: str,
           predicted: str, interval: str = "", passed: bool,
           details: dict[str, Any] | None = None) -> ClaimRecord:
    """A :class:`ClaimRecord` whose ``seconds`` run from ``started`` (``time.perf_counter()``)."""
    return ClaimRecord(id=claim_id, statement=statement, source=source, measured=measured,
                       predicted=predicted, interval=interval, passed=bool(passed),
                       details=jsonable(details or {}),
                       seconds=time.perf_counter() - started)


def jsonable(x: Any) -> Any:
    """``x`` with NumPy scalars and arrays, tuples and non-finite floats made JSON-safe
    (non-finite floats become the strings "nan", "inf", "-inf")."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else repr(x)
    if x is None or isinstance(x, str):
        return x
    return str(x)


def _short(v: Any, width: int = 300) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= width else s[: width - 3] + "..."


def _md(s: str) -> str:
    return s.replace("|", "\\|")


# ------------------------------------------------------------------------------- the registry


def checks_dir() -> Path:
    """The folder of the check modules: inside the installed package (``fedtheory/_checks``),
    or the source tree's ``proofs_checks/`` when running from a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_checks", here.parent / "proofs_checks"):
        if candidate.is_dir():
            return candidate
    raise FedTheoryError(f"the claim checks are missing (looked in {here / '_checks'} and "
                         f"{here.parent / 'proofs_checks'}); reinstall fedtheory")


def _load_module(path: Path) -> ModuleType:
    name = f"fedtheory_checks_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _claim_order(claim_id: str) -> tuple[int, int, str]:
    if claim_id[:1] == "C" and claim_id[1:].isdigit():
        return (0, int(claim_id[1:]), claim_id)
    return (1, 0, claim_id)


@cache
def registry() -> dict[str, ModuleType]:
    """Claim id -> check module, in claim order (C1, C2, ..., C12, then the extensions).

    Discovers every ``c*.py`` and ``ext_*.py`` of :func:`checks_dir` that defines
    ``CLAIM_ID`` and ``check``.
    """
    folder = checks_dir()
    found: dict[str, ModuleType] = {}
    for path in sorted([*folder.glob("c*.py"), *folder.glob("ext_*.py")]):
        module = _load_module(path)
        claim_id = getattr(module, "CLAIM_ID", None)
        if claim_id is None or not callable(getattr(module, "check", None)):
            continue
        if claim_id in found:
            raise FedTheoryError(f"claim {claim_id} is defined twice: in {path.name} and "
                                 f"{Path(found[claim_id].__file__).name}")
        found[claim_id] = module
    return dict(sorted(found.items(), key=lambda kv: _claim_order(kv[0])))


def claim_ids() -> list[str]:
    return list(registry())


def load_check(claim_id: str) -> ModuleType:
    """The check module of ``claim_id`` (case-insensitive)."""
    return registry()[resolve_ids([claim_id])[0]]


def resolve_ids(claims: Sequence[str] | None) -> list[str]:
    """Canonical ids of ``claims`` (all of them when None or empty), in the order given.

    Unknown ids raise :class:`FedTheoryError` naming them and the known ids.
    """
    known = claim_ids()
    if not claims:
        return known
    by_upper = {c.upper(): c for c in known}
    unknown = [c for c in claims if c.strip().upper() not in by_upper]
    check(not unknown, f"unknown claim id{'s' if len(unknown) > 1 else ''} "
                       f"{', '.join(map(repr, unknown))}; known claims: {', '.join(known)}")
    out: list[str] = []
    for c in claims:
        cid = by_upper[c.strip().upper()]
        if cid not in out:
            out.append(cid)
    return out


def single_threaded_blas() -> Any:
    """Run the block with one BLAS thread (:func:`fedtheory.threads.blas_threads`).

    The checks multiply many small batched matrices; a multi-threaded OpenBLAS gains nothing
    there and, on a busy machine (CI, several test processes), its spinning threads slow the
    checks down by an order of magnitude. Results do not depend on it beyond rounding order.
    """
    return blas_threads(1)


def assert_claim(check_fn: Callable[..., ClaimRecord]) -> ClaimRecord:
    """The body of every check module's ``test_claim``: run ``check_fn(quick=True)`` with one
    BLAS thread and assert that the claim passes, with the record's details as the message."""
    with single_threaded_blas():
        rec = check_fn(quick=True)
    assert isinstance(rec, ClaimRecord), f"check returned {type(rec).__name__}"
    assert rec.passed, rec.explain()
    return rec


def accepts_problem(module: ModuleType) -> bool:
    """Whether a check can run its protocol on a user's problem (``check(..., on=[...])``)."""
    import inspect

    return "on" in inspect.signature(module.check).parameters


def run_claim(claim_id: str, quick: bool = True,
              problem: FederatedProblem | None = None) -> ClaimRecord:
    """Run one check (with one BLAS thread); a check that raises is recorded as a FAIL with
    its traceback."""
    module = load_check(claim_id)
    if problem is not None:
        ok = [c for c in claim_ids() if accepts_problem(load_check(c))]
        check(accepts_problem(module), f"claim {module.CLAIM_ID} has no protocol for a "
                                       f"problem of your own; claims that have: {', '.join(ok)}")
    started = time.perf_counter()
    try:
        with single_threaded_blas():
            rec = (module.check(quick=quick) if problem is None
                   else module.check(quick=quick, on=[problem]))
    except Exception as exc:  # a crashing check is a failed claim, not a crashed command
        return record(module.CLAIM_ID, module.STATEMENT, module.SOURCE, started,
                      measured="error", predicted="-", passed=False,
                      details={"error": f"{type(exc).__name__}: {exc}",
                               "traceback": traceback.format_exc()})
    check(isinstance(rec, ClaimRecord),
          f"check {claim_id} returned {type(rec).__name__}, not a ClaimRecord")
    return rec


# ------------------------------------------------------------------------------- the command

_COLUMNS = (("claim", 7), ("measured", 44), ("predicted", 36), ("interval", 28),
            ("result", 6), ("seconds", 8))


def table_header() -> str:
    return "  ".join(f"{name:<{w}}" if name != "seconds" else f"{name:>{w}}"
                     for name, w in _COLUMNS)


def _cell(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def table_row(rec: ClaimRecord) -> str:
    """One row of the table; a cell longer than its column is cut (the JSON and the report
    carry the full text)."""
    cells = (rec.id, rec.measured, rec.predicted, rec.interval or "-", rec.verdict)
    out = [f"{_cell(c, w):<{w}}" for c, (_, w) in zip(cells, _COLUMNS, strict=False)]
    return "  ".join([*out, f"{rec.seconds:>8.1f}"])


def render_report(records: Sequence[ClaimRecord], *, quick: bool,
                  figures: dict[str, str] | None = None) -> str:
    """A Markdown report: a summary table, then one section per claim, with the claim's
    figure embedded where ``figures`` maps its id to an image path relative to the report."""
    n_pass = sum(r.passed for r in records)
    mode = "quick (CI sizes)" if quick else "full protocol"
    out = ["# fedtheory claim checks", "",
           f"fedtheory {__version__}, {mode}: {n_pass} of {len(records)} claims pass.", "",
           "| claim | measured | predicted | interval | result | seconds |",
           "|---|---|---|---|---|---|"]
    for r in records:
        out.append(f"| {r.id} | {_md(r.measured)} | {_md(r.predicted)} | "
                   f"{_md(r.interval) or '-'} | {r.verdict} | {r.seconds:.1f} |")
    out.append("")
    for r in records:
        out.append(r.to_markdown())
        if figures and r.id in figures:
            out += ["", f"![{r.id}]({figures[r.id]})", ""]
    return "\n".join(out)


def claim_table(records: Sequence[ClaimRecord]) -> Any:
    """The claim table as a DataFrame: id, statement, measured, predicted, interval, result,
    seconds (what ``fedtheory check`` prints)."""
    import pandas as pd

    return pd.DataFrame([{"claim": r.id, "statement": r.statement, "measured": r.measured,
                          "predicted": r.predicted, "interval": r.interval,
                          "result": r.verdict, "seconds": round(r.seconds, 2)}
                         for r in records])


def claim_table_latex(records: Sequence[ClaimRecord]) -> str:
    """The claim table as a LaTeX ``tabular`` (booktabs), special characters escaped."""
    def esc(text: str) -> str:
        out = str(text)
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"),
                     ("#", r"\#"), ("_", r"\_"), ("{", r"\{"), ("}", r"\}"),
                     ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}")):
            out = out.replace(a, b)
        return out

    lines = [r"\begin{tabular}{lllll}", r"\toprule",
             r"claim & measured & predicted (pass) & interval & result \\", r"\midrule"]
    for r in records:
        lines.append(" & ".join(esc(v) for v in (r.id, r.measured, r.predicted, r.interval,
                                                  r.verdict)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def write_figures(records: Sequence[ClaimRecord], folder: Path) -> dict[str, str]:
    """Draw each record's figure (see :mod:`fedtheory.claims_figures`) as folder/ID.png,
    atomically; returns {id: path relative to folder's parent}."""
    from .claims_figures import claim_figure
    from .plot import save

    out = {}
    ids = set(claim_ids())
    for r in records:
        own = getattr(load_check(r.id), "figure", None) if r.id in ids else None
        try:
            fig = own(r) if own is not None else claim_figure(r)
        except (KeyError, TypeError, ValueError):  # a failed check may lack some of its data
            fig = None
        if fig is None:
            continue
        folder.mkdir(exist_ok=True)
        save(fig, folder / f"{r.id}.png", pdf=True)   # PNG for the report, PDF for papers
        out[r.id] = f"{folder.name}/{r.id}.png"
    return out


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


def main_check(claims: list[str] | None, quick: bool, json_path: str | os.PathLike | None,
               report_path: str | os.PathLike | None, problem: str | None = None,
               csv_path: str | os.PathLike | None = None,
               latex_path: str | os.PathLike | None = None) -> int:
    """``fedtheory check``: run the claims (all when ``claims`` is None or empty), print one
    table row per claim, write the records as JSON (``json_path``) and a Markdown report
    (``report_path``), both atomically. Returns 1 if any claim fails, else 0.

    ``problem`` (a suite name or TOML path) runs the protocols of the chosen claims on that
    problem instead of theirs (only claims whose check accepts ``on=``; others are refused
    before anything runs). ``csv_path`` / ``latex_path`` export the claim table.

    Unknown claim ids and unusable output paths raise :class:`FedTheoryError` before anything
    runs.
    """
    from tqdm.auto import tqdm

    ids = resolve_ids(claims)
    json_out = _output_path(json_path, "--json", ".json")
    report_out = _output_path(report_path, "--report", ".md")
    csv_out = _output_path(csv_path, "--csv", ".csv")
    latex_out = _output_path(latex_path, "--latex", ".tex")
    user_problem = None
    if problem is not None:
        from .suite import load_problem

        bad = [c for c in ids if not accepts_problem(load_check(c))]
        ok = [c for c in claim_ids() if accepts_problem(load_check(c))]
        check(not bad, f"--problem: claim(s) {', '.join(bad)} have no protocol for a problem "
                       f"of your own; claims that have: {', '.join(ok)} (choose with --claim)")
        user_problem = load_problem(problem)
    mode = "quick" if quick else "full"
    print(f"# fedtheory {__version__}: {len(ids)} claim(s), {mode} mode")
    print(table_header())
    records: list[ClaimRecord] = []
    started = time.perf_counter()
    with tqdm(ids, desc="claims", unit="claim", leave=False, file=sys.stderr) as bar, \
            _private_hypothesis_home():
        for cid in bar:
            bar.set_postfix_str(cid)
            rec = run_claim(cid, quick=quick, problem=user_problem)
            records.append(rec)
            tqdm.write(table_row(rec), file=sys.stdout)
    failed = [r.id for r in records if not r.passed]
    total = time.perf_counter() - started
    print(f"# {len(records) - len(failed)} passed, {len(failed)} failed"
          + (f" ({', '.join(failed)})" if failed else "") + f" in {total:.1f} s")
    if json_out is not None:
        payload = {"version": __version__, "mode": mode, "seconds": total,
                   "passed": not failed, "records": [r.to_dict() for r in records]}
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


# ------------------------------------------------------------------------------- helpers


def fedpm_factory(**params: Any) -> Method:
    """The default method under test of most claims: FedPM with ``params``."""
    return make_method("fedpm", params)


def sopm_factory(**params: Any) -> Method:
    """Simple mixing (SOPM) with ``params``: the method under test of C4 and C5."""
    return make_method("sopm", params)


def one_round(problem: FederatedProblem, method: Method, theta: Any, *,
              clients: Sequence[int] | None = None, state: Any = None) -> Any:
    """theta+ of one round of ``method`` from ``theta`` (or from ``state``) with participants
    ``clients`` (None: all), weights renormalised over them as the runner does."""
    xp = problem.xp
    if state is None:
        state = method.init(problem, xp.asarray(theta, dtype=xp.float64))
    sel = None if clients is None else np.sort(np.asarray(clients))
    new_state, _ = method.round(round_context(problem, sel), state)
    return new_state.theta


@dataclass(frozen=True)
class Limit:
    """Where a method's round map stops moving: its last iterate, the rounds it took, the last
    step ||theta^{t+1} - theta^t|| and whether that step met the tolerance."""

    theta: np.ndarray
    rounds: int
    last_step: float
    converged: bool


def limit_point(problem: FederatedProblem, method: Method, *, theta0: Any = None,
                max_rounds: int = 500, tol: float = 1e-13) -> Limit:
    """Iterate ``method`` (full participation, exact oracle) from ``theta0`` (default 0) until
    ||theta^{t+1} - theta^t|| <= tol * max(1, ||theta^{t+1}||), or ``max_rounds``, or a
    non-finite iterate (converged = False).

    The runner's Trace logs distances only; the limit itself is needed here, so this reads
    the iterates of the runner's own loop (:func:`fedtheory.runner.iterate`).
    """
    xp = problem.xp
    step, theta = math.inf, theta0
    for s in iterate(problem, method, rounds=max_rounds, theta0=theta0):
        theta = s.state.theta
        step = float(xp.linalg.norm(theta - s.before.theta))
        if not math.isfinite(step):
            return Limit(to_numpy(theta), s.t, step, False)
        if step <= tol * max(1.0, float(xp.linalg.norm(theta))):
            return Limit(to_numpy(theta), s.t, step, True)
    return Limit(to_numpy(theta), max_rounds, step, False)


def heterogeneous_problem(dataset: str, *, clients: int, alpha: float | None, seed: int = 0,
                          lam: float = 1e-3, rows: int | None = None, min_size: int = 2,
                          weighting: str = "samples", objective: str = "logistic"
                          ) -> FederatedProblem:
    """A logistic problem on ``dataset`` ("a9a", "phishing" or "breast_cancer"; first ``rows``
    rows for the LIBSVM ones) split over ``clients`` with Dirichlet(``alpha``) label skew
    (``alpha=None``: IID), reproducible from ``seed``. Breast cancer is standardised with an
    intercept column."""
    from . import data, partitions

    if dataset == "a9a":
        ds = data.load_a9a(rows=rows)
    elif dataset == "phishing":
        ds = data.load_phishing(rows=rows)
    elif dataset == "breast_cancer":
        ds = data.load_breast_cancer(standardize=True, intercept=True)
    else:
        raise FedTheoryError(f"dataset must be 'a9a', 'phishing' or 'breast_cancer', "
                             f"got {dataset!r}")
    if alpha is None:
        parts = partitions.iid(ds.n, clients, seed=seed)
        split = "iid"
    else:
        parts = partitions.dirichlet(ds.y, clients, alpha=alpha, seed=seed, min_size=min_size)
        split = f"dirichlet{alpha:g}"
    name = f"{dataset}{'' if rows is None else rows}_{split}_N{clients}_s{seed}"
    return FederatedProblem.from_dataset(ds.X, ds.y, parts, objective=objective, lam=lam,
                                         weighting=weighting, name=name)


def scale_of(problem: FederatedProblem) -> float:
    """||theta*||, the scale of the float floor and of relative distances."""
    return float(np.linalg.norm(problem.reference.theta_star))


def fmt_ci(ci: tuple[float, float], spec: str = ".3g") -> str:
    lo, hi = ci
    return f"[{lo:{spec}}, {hi:{spec}}]"


def sopm_limit(problem: FederatedProblem, factory: MethodFactory = sopm_factory, *,
               K: int = 1, etas: Sequence[float] = (1.0, 0.5, 0.25), max_rounds: int = 1000,
               tol: float = 1e-13) -> tuple[Limit, float]:
    """The limit of ``factory(K=K, eta=eta)`` from 0, trying each eta of ``etas`` in turn until
    one converges; returns the limit and the eta that reached it.

    For K = 1 the fixed points of SOPM do not depend on eta (theta = theta - eta r(theta) iff
    r(theta) = sum w_i P_i^{-1} g_i = 0), so a smaller eta is only a safer way to the same
    limit when eta = 1 oscillates.
    """
    lim = None
    for eta in etas:
        lim = limit_point(problem, factory(K=K, eta=eta), max_rounds=max_rounds, tol=tol)
        if lim.converged:
            return lim, eta
    return lim, etas[-1]


def local_newton_residual(problem: FederatedProblem, theta: Any) -> np.ndarray:
    """r(theta) = sum_i w_i H_i(theta)^{-1} g_i(theta): zero exactly at SOPM's K = 1 fixed
    points (delta = 0)."""
    from .linalg import spd_solve

    o = problem.oracle(problem.xp.asarray(theta), grad=True, hess=True)
    return to_numpy(problem.weights @ spd_solve(o.H, o.g))
