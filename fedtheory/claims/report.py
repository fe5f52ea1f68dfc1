"""What ``fedtheory check`` prints and writes: the table rows, the Markdown report, the claim
table as CSV and LaTeX, and each claim's figure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from .checks import claim_ids, load_check
from .record import ClaimRecord, _md

_COLUMNS = (
    ("claim", 7),
    ("measured", 44),
    ("predicted", 36),
    ("interval", 28),
    ("result", 6),
    ("seconds", 8),
)


def table_header() -> str:
    return "  ".join(
        f"{name:<{w}}" if name != "seconds" else f"{name:>{w}}" for name, w in _COLUMNS
    )


def _cell(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def table_row(rec: ClaimRecord) -> str:
    """One row of the table; a cell longer than its column is cut (the JSON and the report
    carry the full text)."""
    cells = (rec.id, rec.measured, rec.predicted, rec.interval or "-", rec.verdict)
    out = [f"{_cell(c, w):<{w}}" for c, (_, w) in zip(cells, _COLUMNS, strict=False)]
    return "  ".join([*out, f"{rec.seconds:>8.1f}"])


def render_report(
    records: Sequence[ClaimRecord], *, quick: bool, figures: dict[str, str] | None = None
) -> str:
    """A Markdown report: a summary table, then one section per claim, with the claim's
    figure embedded where ``figures`` maps its id to an image path relative to the report."""
    n_pass = sum(r.passed for r in records)
    mode = "quick (CI sizes)" if quick else "full protocol"
    out = [
        "# fedtheory claim checks",
        "",
        f"fedtheory {__version__}, {mode}: {n_pass} of {len(records)} claims pass.",
        "",
        "| claim | measured | predicted | interval | result | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        out.append(
            f"| {r.id} | {_md(r.measured)} | {_md(r.predicted)} | "
            f"{_md(r.interval) or '-'} | {r.verdict} | {r.seconds:.1f} |"
        )
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

    return pd.DataFrame(
        [
            {
                "claim": r.id,
                "statement": r.statement,
                "measured": r.measured,
                "predicted": r.predicted,
                "interval": r.interval,
                "result": r.verdict,
                "seconds": round(r.seconds, 2),
            }
            for r in records
        ]
    )


def claim_table_latex(records: Sequence[ClaimRecord]) -> str:
    """The claim table as a LaTeX ``tabular`` (booktabs), special characters escaped."""

    def esc(text: str) -> str:
        out = str(text)
        for a, b in (
            ("\\", r"\textbackslash{}"),
            ("&", r"\&"),
            ("%", r"\%"),
            ("$", r"\$"),
            ("#", r"\#"),
            ("_", r"\_"),
            ("{", r"\{"),
            ("}", r"\}"),
            ("~", r"\textasciitilde{}"),
            ("^", r"\textasciicircum{}"),
        ):
            out = out.replace(a, b)
        return out

    lines = [
        r"\begin{tabular}{lllll}",
        r"\toprule",
        r"claim & measured & predicted (pass) & interval & result \\",
        r"\midrule",
    ]
    for r in records:
        lines.append(
            " & ".join(esc(v) for v in (r.id, r.measured, r.predicted, r.interval, r.verdict))
            + r" \\"
        )
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def write_figures(records: Sequence[ClaimRecord], folder: Path) -> dict[str, str]:
    """Draw each record's figure (see :mod:`fedtheory.claims_figures`) as folder/ID.png,
    atomically; returns {id: path relative to folder's parent}."""
    from ..claims_figures import claim_figure
    from ..plot import save

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
        save(fig, folder / f"{r.id}.png", pdf=True)  # PNG for the report, PDF for papers
        out[r.id] = f"{folder.name}/{r.id}.png"
    return out
