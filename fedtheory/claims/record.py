"""A claim's outcome: :class:`ClaimRecord` (measured figure, prediction, verdict, details)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


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
        return (
            f"{self.id} {self.verdict}: measured {self.measured}{ci}; predicted "
            f"{self.predicted} ({self.seconds:.1f} s)"
        )

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
        out = [
            f"### {self.id}: {self.verdict}",
            "",
            self.statement,
            "",
            f"*Source:* {self.source}",
            "",
            "| measured | predicted | interval | seconds |",
            "|---|---|---|---|",
            f"| {_md(self.measured)} | {_md(self.predicted)} | {_md(self.interval) or '-'} "
            f"| {self.seconds:.1f} |",
            "",
        ]
        if self.details:
            out += [
                "<details><summary>details</summary>",
                "",
                "```json",
                json.dumps(jsonable(self.details), indent=2),
                "```",
                "",
                "</details>",
                "",
            ]
        return "\n".join(out)


def record(
    claim_id: str,
    statement: str,
    source: str,
    started: float,
    *,
    measured: str,
    predicted: str,
    interval: str = "",
    passed: bool,
    details: dict[str, Any] | None = None,
) -> ClaimRecord:
    """A :class:`ClaimRecord` whose ``seconds`` run from ``started`` (``time.perf_counter()``)."""
    return ClaimRecord(
        id=claim_id,
        statement=statement,
        source=source,
        measured=measured,
        predicted=predicted,
        interval=interval,
        passed=bool(passed),
        details=jsonable(details or {}),
        seconds=time.perf_counter() - started,
    )


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


def fmt_ci(ci: tuple[float, float], spec: str = ".3g") -> str:
    lo, hi = ci
    return f"[{lo:{spec}}, {hi:{spec}}]"
