"""Shared drawing helpers of the claim figures of ``fedtheory check --report``.

Every check module that has a figure defines ``figure(record) -> Figure``, drawn from
``record.details`` (:func:`fedtheory.claims.write_figures` calls it). The first-round checks
(``proofs_checks/c01_*.py`` ... ``c12_*.py``, ``ext_partial_participation.py``) draw theirs
with these helpers, so that every figure has the same furniture:

- a title ``"<id> <PASS|FAIL>: <what the figure shows>"`` (:func:`new_figure`);
- the float floor 1e3 eps max(1, scale) wherever errors are drawn (:func:`float_floor`), kept
  off the axes, and said so, when the data lie far above it;
- the fit window marked on every curve a rate is fitted on (:func:`mark_window`), and for
  Q-order fits the pairs (e_t, e_{t+1}) with the fitted order, the predicted one and the pass
  band (:func:`order_panel`);
- exact zeros (and negative values) drawn at the bottom of a log axis and marked, not dropped
  (:func:`log_values`, :func:`mark_zeros`);
- legends that state the claim's own pass criterion, so they agree with the verdict;
- a check that crashed gets a text figure with its error (:func:`draws_claim`).

:func:`claim_figure`, the fallback for a check module without ``figure``, returns None.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .plot import MARKERS, OKABE_ITO
from .rates import EPS, default_floor

__all__ = [
    "BELOW",
    "FAIL_COLOR",
    "FLOOR_COLOR",
    "MARKERS",
    "OKABE_ITO",
    "PASS_COLOR",
    "SERIES",
    "claim_figure",
    "draws_claim",
    "error_figure",
    "errors_panel",
    "float_floor",
    "grad_floor",
    "legend",
    "log_values",
    "mark_window",
    "mark_zeros",
    "new_figure",
    "order_figure",
    "order_panel",
    "pass_fail_handles",
    "pass_line",
    "relative_floor",
    "rounded",
    "verdict_color",
    "window_handle",
]

PASS_COLOR = OKABE_ITO[2]  # bluish green
FAIL_COLOR = OKABE_ITO[1]  # vermillion
FLOOR_COLOR = "0.35"
#: colours of data series: Okabe-Ito without the pass and fail colours (and yellow), so
#: green and vermillion always mean a verdict
SERIES = (OKABE_ITO[0], OKABE_ITO[4], OKABE_ITO[3], OKABE_ITO[5], OKABE_ITO[6], "#8C6D31")
#: legend keywords: below the axes
BELOW = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.14)}
#: how far (a factor) the data may lie above a floor before the floor is kept off the axes
_FAR = 1e4


def rounded(values: Sequence[float], digits: int = 4) -> list[float]:
    """``values`` to ``digits`` significant digits: compact figure data for a record's
    details (never the numbers a pass criterion reads)."""
    out = []
    for v in values:
        v = float(v)
        out.append(float(f"{v:.{digits}g}") if math.isfinite(v) else v)
    return out


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def verdict_color(ok: bool) -> str:
    return PASS_COLOR if ok else FAIL_COLOR


# --------------------------------------------------------------------------- figure, title


def new_figure(
    rec: Any,
    what: str,
    *,
    ncols: int = 1,
    nrows: int = 1,
    size: tuple[float, float] | None = None,
    panels: int | None = None,
) -> tuple[Figure, list[Axes]]:
    """A constrained-layout figure of ``nrows`` x ``ncols`` axes (flattened, row by row)
    titled ``"<id> <verdict>: <what>"``, the verdict in the pass or fail colour. ``panels``:
    that many axes in rows of ``ncols`` (the unused places of the last row left empty)."""
    if panels is not None:
        nrows = -(-panels // ncols)
    fig = Figure(figsize=size or (5.0 * ncols, 3.9 * nrows), layout="constrained")
    axes = list(np.ravel(fig.subplots(nrows, ncols, squeeze=False)))
    if panels is not None:
        for ax in axes[panels:]:
            ax.remove()
        axes = axes[:panels]
    fig.suptitle(
        f"{rec.id} {rec.verdict}: {what}",
        fontsize=10,
        fontweight="bold",
        color="black" if rec.passed else FAIL_COLOR,
    )
    return fig, axes


def error_figure(
    rec: Any, what: str = "the check raised an error", text: str | None = None
) -> Figure:
    """A text figure: by default that of a check that raised, its error and the last lines of
    its traceback."""
    fig, (ax,) = new_figure(rec, what, size=(7.5, 3.0))
    ax.axis("off")
    if text is None:
        tb = str(rec.details.get("traceback", "")).strip().splitlines()[-8:]
        text = "\n".join([str(rec.details.get("error", "")), "", *tb])
    ax.text(
        0.0,
        1.0,
        text,
        va="top",
        ha="left",
        family="monospace",
        fontsize=7,
        transform=ax.transAxes,
        wrap=True,
    )
    return fig


def draws_claim(draw: Callable[[Any], Figure]) -> Callable[[Any], Figure]:
    """Decorator of a check module's ``figure(record)``: a record of a check that raised
    (details ``error`` and ``traceback``, see :func:`fedtheory.claims.run_claim`) gets
    :func:`error_figure` instead; a figure that cannot be drawn from the record (a failed
    check may lack some of its data) becomes a text figure saying why, with a warning, so the
    report keeps one figure per claim."""

    @functools.wraps(draw)
    def figure(rec: Any) -> Figure:
        if "traceback" in rec.details and "error" in rec.details:
            return error_figure(rec)
        try:
            return draw(rec)
        except Exception as exc:  # noqa: BLE001 - a figure never sinks the report
            why = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"the figure of {rec.id} could not be drawn ({why})", RuntimeWarning, stacklevel=2
            )
            return error_figure(
                rec,
                "the figure could not be drawn from the record",
                f"{why}\n\nmeasured: {rec.measured}\npredicted: {rec.predicted}",
            )

    return figure


def legend(ax: Axes, **kw: Any) -> None:
    """Grid and a small legend (inside the axes unless ``kw`` places it, e.g. ``**BELOW``)."""
    ax.grid(alpha=0.3, which="major")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**{"fontsize": 7, "framealpha": 0.85, **kw})


def pass_fail_handles() -> list[Patch]:
    """Legend patches of the pass and fail colours."""
    return [
        Patch(color=PASS_COLOR, label="meets its criterion"),
        Patch(color=FAIL_COLOR, label="fails its criterion"),
    ]


def relative_floor() -> float:
    """The float floor of a relative quantity: 1e3 eps."""
    return 1e3 * EPS


# --------------------------------------------------------------------------- floors, zeros


def grad_floor(L: float, theta_star_norm: float) -> float:
    """The float floor of ||grad f||: 1e3 eps max(1, L max(1, ||theta*||)) (the gradient is
    rounded to eps times the size of its terms), as :mod:`fedtheory.plot` draws it."""
    return default_floor(L * max(1.0, theta_star_norm))


def float_floor(
    ax: Axes,
    value: float | Sequence[float],
    *,
    of: str = r"$10^3\varepsilon\max(1, \|\theta^\star\|)$",
    axis: str = "y",
    colors: Sequence[str] | None = None,
) -> Line2D:
    """Draw the float floor ``value`` (one per curve group when a sequence, in ``colors``) as
    dotted lines labelled "float floor ...". Call it after the data: if every drawn value lies
    more than 1e4 times above the floor on a log axis, the axes keep the data's view and the
    label says that the floor lies below them."""
    values = [float(v) for v in np.atleast_1d(value)]
    colors = list(colors or [FLOOR_COLOR] * len(values))
    log = (ax.get_yscale() if axis == "y" else ax.get_xscale()) == "log"
    lim = ax.get_ylim() if axis == "y" else ax.get_xlim()
    lo, hi = min(values), max(values)
    span = f"{lo:.1e}" if math.isclose(lo, hi, rel_tol=1e-3) else f"{lo:.1e} to {hi:.1e}"
    off = log and lim[0] > _FAR * hi
    label = f"float floor {of} = {span}" + (" (below the axes)" if off else "")
    first = None
    for k, (v, c) in enumerate(zip(values, colors, strict=True)):
        kw = dict(
            color=c, ls=(0, (1, 1.5)), lw=1.3, zorder=1.5, label=label if k == 0 else "_nolegend_"
        )
        line = ax.axhline(v, **kw) if axis == "y" else ax.axvline(v, **kw)
        first = first or line
    if off:
        (ax.set_ylim if axis == "y" else ax.set_xlim)(*lim)
    return first


def pass_line(
    ax: Axes, value: float, label: str, *, axis: str = "y", color: str = FAIL_COLOR
) -> Line2D:
    """A dashed line at a pass threshold. Call it after the data: on a log axis whose data
    lie more than 1e4 times above the threshold, the axes keep the data's view and the label
    says that the line lies below them."""
    log = (ax.get_yscale() if axis == "y" else ax.get_xscale()) == "log"
    lim = ax.get_ylim() if axis == "y" else ax.get_xlim()
    off = log and lim[0] > _FAR * value
    kw = dict(color=color, ls="--", lw=1.3, label=label + (" (below the axes)" if off else ""))
    line = ax.axhline(value, **kw) if axis == "y" else ax.axvline(value, **kw)
    if off:
        (ax.set_ylim if axis == "y" else ax.set_xlim)(*lim)
    return line


def log_values(values: Sequence[float], bottom: float) -> tuple[np.ndarray, np.ndarray]:
    """``values`` for a log axis, and the mask of those drawn at ``bottom`` (exact zeros and
    negative values: data, not gaps; NaN stays a gap)."""
    a = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    low = np.isfinite(a) & (a <= 0)
    return np.where(low, bottom, a), low


def mark_zeros(
    ax: Axes, x: Sequence[float], y: Sequence[float], mask: np.ndarray, color: str, bottom: float
) -> None:
    """Mark the points of ``mask`` (drawn at ``bottom``) with open down-triangles; the first
    call on ``ax`` adds the legend entry."""
    x, y, mask = np.asarray(x), np.asarray(y), np.asarray(mask, dtype=bool)
    if not mask.any():
        return
    first = not getattr(ax, "_fedtheory_zeros", False)
    ax._fedtheory_zeros = True
    ax.plot(
        x[mask],
        y[mask],
        "v",
        mfc="none",
        color=color,
        ms=7,
        ls="none",
        zorder=4,
        label=f"exact 0 or below (drawn at {bottom:.0e})" if first else "_nolegend_",
    )


# --------------------------------------------------------------------------- fits


def mark_window(
    ax: Axes,
    t: Sequence[float],
    e: Sequence[float],
    window: Sequence[int] | None,
    color: str,
    *,
    label: str | None = None,
) -> None:
    """Mark the fit window (rounds start..stop-1) of one curve with a broad translucent band
    along it."""
    if not window:
        return
    start, stop = int(window[0]), int(window[1])
    t, e = np.asarray(t, dtype=float), np.asarray(e, dtype=float)
    ax.plot(
        t[start:stop],
        e[start:stop],
        "-",
        color=color,
        lw=8,
        alpha=0.22,
        solid_capstyle="round",
        zorder=1,
        label=label or "_nolegend_",
    )


def window_handle() -> Line2D:
    return Line2D([], [], color="grey", lw=8, alpha=0.3, label="fit window (rounds fitted)")


def errors_panel(
    ax: Axes,
    runs: Sequence[dict],
    *,
    labels: Sequence[str],
    colors: Sequence[str] | None = None,
    floors: Sequence[float],
    windows: bool = True,
    bound: bool = False,
) -> None:
    """e_t against t for each run (``run["errors"]``), with the fit window of each run
    (``run["window"]``), the float floors, exact zeros marked, and, if ``bound``, the one-step
    bound (L_H / 2 mu) e_t^2 (``run["bound_constant"]``) as bars one round on."""
    colors = list(colors or [SERIES[i % len(SERIES)] for i in range(len(runs))])
    bottom = min(floors) / 10
    for run, label, c in zip(runs, labels, colors, strict=True):
        e, low = log_values(run["errors"], bottom)
        t = np.arange(len(e))
        ax.semilogy(t, e, "o-", color=c, ms=3.5, lw=1.2, label=label, zorder=3)
        mark_zeros(ax, t, e, low, c, bottom)
        if windows:
            mark_window(ax, t, e, run.get("window"), c)
        if bound and run.get("bound_constant") and run.get("window"):
            C, (start, stop) = run["bound_constant"], run["window"]
            ax.semilogy(
                t[start + 1 : stop],
                C * e[start : stop - 1] ** 2,
                "_",
                color=c,
                ms=10,
                mew=1.6,
                zorder=3,
            )
    if bound:
        ax.plot(
            [],
            [],
            "_",
            color="grey",
            ms=10,
            mew=1.6,
            label=r"bound $(L_H/2\mu)\,e_t^2$ one round on (window)",
        )
    if windows:
        ax.add_artist(ax.legend(handles=[window_handle()], fontsize=7, loc="upper right"))
    float_floor(ax, floors, colors=colors if len(set(floors)) > 1 else None)
    ax.set_xlabel("round $t$")
    ax.set_ylabel(r"$e_t = \|\theta^t - \theta^\star\|$")


def order_panel(
    ax: Axes,
    runs: Sequence[dict],
    *,
    labels: Sequence[str],
    predicted: float,
    predicted_label: str,
    band: Sequence[float],
    floors: Sequence[float],
    colors: Sequence[str] | None = None,
    bound: bool = False,
) -> None:
    """log e_{t+1} against log e_t: every pair of each run (filled: in the fit window, open:
    outside), the OLS line of the window (the fitted order), the predicted order through the
    window's centroid and the band of orders the claim passes (a wedge through the same
    centroid), and the float floors on both axes. ``bound``: the line (L_H/2 mu) e_t^2 of
    each run (``run["bound_constant"]``)."""
    colors = list(colors or [SERIES[i % len(SERIES)] for i in range(len(runs))])
    lo_all, hi_all = math.inf, 0.0
    for run, label, c in zip(runs, labels, colors, strict=True):
        e = np.asarray([np.nan if v is None else v for v in run["errors"]], dtype=float)
        pos = np.isfinite(e[:-1]) & np.isfinite(e[1:]) & (e[:-1] > 0) & (e[1:] > 0)
        x, y = e[:-1], e[1:]
        idx = np.flatnonzero(pos)
        win = run.get("window")
        inside = np.zeros(e.size - 1, dtype=bool)
        if win:
            inside[int(win[0]) : int(win[1]) - 1] = True
        ax.loglog(x[pos & ~inside], y[pos & ~inside], "o", mfc="none", color=c, ms=5)
        ax.loglog(x[pos & inside], y[pos & inside], "o", color=c, ms=5, label=label)
        if idx.size:
            lo_all, hi_all = min(lo_all, x[idx].min(), y[idx].min()), max(hi_all, x[idx].max())
        sel = pos & inside
        if sel.sum() >= 2 and np.ptp(np.log(x[sel])) > 0:
            lx, ly = np.log(x[sel]), np.log(y[sel])
            p, logc = np.polyfit(lx, ly, 1)
            grid = np.linspace(lx.min(), lx.max(), 20)
            ax.loglog(np.exp(grid), np.exp(logc + p * grid), "-", color=c, lw=1.5)
            cx, cy = lx.mean(), ly.mean()
            wide = np.linspace(lx.min() - 2.3, lx.max() + 2.3, 40)  # a decade either side
            ax.loglog(
                np.exp(wide), np.exp(cy + predicted * (wide - cx)), "--", color="black", lw=1.2
            )
            ax.fill_between(
                np.exp(wide),
                np.exp(cy + band[0] * (wide - cx)),
                np.exp(cy + band[1] * (wide - cx)),
                color="grey",
                alpha=0.25,
                lw=0,
            )
        if bound and run.get("bound_constant") and sel.any():
            C = run["bound_constant"]
            xs = np.geomspace(x[sel].min(), x[sel].max(), 20)
            ax.loglog(xs, C * xs**2, ":", color=c, lw=1.2)
    ax.plot([], [], "--", color="black", lw=1.2, label=predicted_label + " (through the window)")
    ax.fill_between(
        [],
        [],
        [],
        color="grey",
        alpha=0.25,
        lw=0,
        label=f"pass band: order in [{band[0]:g}, {band[1]:g}]",
    )
    if bound:
        ax.plot([], [], ":", color="grey", lw=1.2, label=r"bound $(L_H/2\mu)\,e_t^2$")
    ax.plot([], [], "o", mfc="none", color="grey", ls="none", label="pair outside the window")
    ax.plot([], [], "-", color="grey", lw=1.5, label="OLS fit over the window")
    if math.isfinite(lo_all):
        ax.set_xlim(min(lo_all, min(floors)) / 5, hi_all * 5)
        ax.set_ylim(min(lo_all, min(floors)) / 5, hi_all * 5)
    for axis in ("y", "x"):
        line = float_floor(ax, floors, axis=axis, colors=colors if len(set(floors)) > 1 else None)
        if axis == "x":
            line.set_label("_nolegend_")
    ax.set_xlabel(r"$e_t$")
    ax.set_ylabel(r"$e_{t+1}$")


def order_figure(
    rec: Any,
    what: str,
    *,
    predicted: float,
    predicted_label: str,
    band: Sequence[float],
    bound: bool = False,
) -> Figure:
    """The figure of a Q-order claim (C2, C9) from ``details["runs"]`` (each with
    ``errors``, ``theta_star_norm``, ``window``, ``order``, ``order_ci``, ``passed``,
    ``reason``): left the error sequences with their fit windows and float floors, right
    e_{t+1} against e_t with the fitted orders, the predicted order and the pass band."""
    runs = rec.details["runs"]
    fig, (left, right) = new_figure(rec, what, ncols=2, size=(11.5, 6.2))
    floors = [default_floor(r["theta_star_norm"]) for r in runs]
    names = [r["problem"] + (f" option {r['option']}" if "option" in r else "") for r in runs]
    verdicts = []
    for name, r in zip(names, runs, strict=True):
        why = str(r.get("reason") or "")
        verdicts.append(
            f"{name}: {'passes' if r['passed'] else 'fails'}"
            + (f" ({_cut(why, 80)})" if why and not r["passed"] else "")
        )
    errors_panel(left, runs, labels=verdicts, floors=floors, bound=bound)
    legend(left, **BELOW)
    fits = []
    for name, r in zip(names, runs, strict=True):
        p, ci = float(r["order"]), [float(v) for v in r["order_ci"]]
        inside = band[0] <= p <= band[1]
        interval = (
            f"[{ci[0]:.2f}, {ci[1]:.2f}]" if all(map(math.isfinite, ci)) else "(no CI: 2 pairs)"
        )
        fits.append(
            f"{name}: fitted order {p:.2f} {interval}, {'in' if inside else 'not in'} the pass band"
        )
    order_panel(
        right,
        runs,
        labels=fits,
        predicted=predicted,
        predicted_label=predicted_label,
        band=band,
        floors=floors,
        bound=bound,
    )
    legend(right, **BELOW)
    return fig


# --------------------------------------------------------------------------- fallback


def claim_figure(rec: Any) -> Figure | None:
    """The fallback of :func:`fedtheory.claims.write_figures` for a check module that defines
    no ``figure(record)``: None (no figure). Every claim's figure is drawn by its own check
    module, with the helpers above."""
    return None
