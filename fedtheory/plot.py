"""Figures of traces and sweeps: error against round or communication, any metric, log-log fits.

Plots only read traces (STYLE.md): ``data`` is a :class:`~fedtheory.trace.Trace`, a list of
Traces, a dict ``{legend label: Trace or list of Traces}``, or a tidy DataFrame such as
:func:`fedtheory.results.load` returns. Runs are grouped into curves by the column(s) ``by``
(default ``"label"``: the method plus the parameters that differ between runs, e.g. ``fedpm
K=2``). A curve of several runs (seeds) is drawn as the median per round with a band, min-max
over the runs (``band="minmax"``, default) or their 10-90 % quantiles (``band="quantile"``);
the legend says which.

Every function draws on ``ax`` if given, else on a new figure of its own (a
:class:`matplotlib.figure.Figure`, never through pyplot, so nothing accumulates in pyplot's
global list; in Jupyter, end the cell with ``fig`` to display it), and returns ``(fig, ax)``.
Colours are the Okabe-Ito palette (distinguishable with every common colour-vision
deficiency), each curve also has its own marker and line style, and the legend sits to the
right of the axes. :func:`save` writes PNG (dpi 150) or PDF atomically.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.colors
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from . import rates
from ._io import check_destination, write_atomic
from .errors import FedTheoryError, check
from .results import label_facets, load, make_labels, trace_frame
from .trace import Trace

#: Okabe & Ito (2008), yellow last: it is faint on white.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")

AXIS_LABELS = {
    "round": "round $t$",
    "dist_to_opt": r"$\|\theta^t - \theta^\star\|$",
    "rel_dist": r"$\|\theta^t - \theta^\star\| \;/\; \max(1, \|\theta^\star\|)$",
    "subopt": r"$f(\theta^t) - f^\star$",
    "grad_norm": r"$\|\nabla f(\theta^t)\|$",
    "participants": "participants per round $S$",
    "uplink_floats": "uplink floats per client (cumulative)",
    "downlink_floats": "downlink floats per client (cumulative)",
    "bits": "uplink bits per client (cumulative, 32-bit floats)",
    "local_grad_evals": "local gradient evaluations per client (cumulative)",
    "local_hess_evals": "local Hessian evaluations per client (cumulative)",
    "seconds": "wall time of the round maps (s, cumulative)",
    "drift": r"drift $\sum_i \tilde w_i \|P_i - \bar P\|_F^2$",
    "rel_drift": r"relative drift $\sum_i \tilde w_i \|P_i - \bar P\|_F^2 \,/\, \|\bar P\|_F^2$",
    "hess_gap": r"Hessian gap $\sum_i \tilde w_i \|P_i - H(\theta^{t-1})\|_F^2$",
    "grad_dissimilarity": r"$\sum_i \tilde w_i \|g_i - g\|^2$ at $\theta^{t-1}$",
    "client_drift": r"client drift $\sum_i \tilde w_i \|\theta_i^K - \theta^t\|^2$",
}
ERROR_COLUMNS = ("dist_to_opt", "rel_dist", "subopt", "grad_norm")  # columns with a float floor
#: what each column's floor line is: 1e3 eps max(1, scale), the fit cut-off of the rate fits,
#: where rounding of the computed values, not convergence, sets the error.
_FLOOR_NAMES = {
    "dist_to_opt": "1e3 eps max(1, ||theta*||)",
    "rel_dist": "1e3 eps",
    "subopt": "1e3 eps max(1, |f*|)",
    "grad_norm": "1e3 eps max(1, L ||theta*||)",
}
BANDS = ("minmax", "quantile", "bootstrap")
FITS = ("order", "linear")
BOUNDS = ("quadratic", "linear", "damped_newton")
BOUND_STYLES = ("both", "bars", "sequence")
#: x columns that count communication: a log axis by default
COMM_COLUMNS = ("uplink_floats", "downlink_floats", "bits")
#: every method keeps its colour (and marker) in every figure: its place in this order
METHOD_ORDER = (
    "fedpm",
    "sopm",
    "newton",
    "fednl",
    "fedpac",
    "fedsophia",
    "giant",
    "dane",
    "gd",
    "fedavg",
    "fedprox",
    "scaffold",
    "newton_star",
    "fednl_pp",
    "fednl_ls",
    "fednl_cr",
)
#: the fixed style of every registered method (fedtheory.methods.METHODS), the same in every
#: figure: a colour of its own (Okabe-Ito's seven without yellow, then Paul Tol's muted and a
#: few darker tones, so no two methods share one), a marker of its own and a line style, so
#: (colour, marker, line style) is unique even in greyscale. Variants of one method (FedPM +
#: FOOF, FedNL's compressors, ...) keep its colour and change line style and marker.
METHOD_STYLES: dict[str, dict[str, str]] = {
    "fedpm": dict(color="#0072B2", marker="o", ls="-"),  # blue
    "sopm": dict(color="#D55E00", marker="s", ls="-"),  # vermilion
    "newton": dict(color="#000000", marker="^", ls="-"),  # black
    "fednl": dict(color="#CC79A7", marker="D", ls="-"),  # reddish purple
    "fedpac": dict(color="#009E73", marker="v", ls="-"),  # bluish green
    "fedsophia": dict(color="#E69F00", marker="P", ls="-"),  # orange
    "giant": dict(color="#56B4E9", marker="X", ls="--"),  # sky blue
    "dane": dict(color="#882255", marker="*", ls="--"),  # wine
    "gd": dict(color="#332288", marker="<", ls="--"),  # indigo
    "fedavg": dict(color="#999933", marker=">", ls="--"),  # olive
    "fedprox": dict(color="#117733", marker="p", ls="-."),  # green
    "scaffold": dict(color="#44AA99", marker="h", ls="-."),  # teal
    "newton_star": dict(color="#777777", marker="d", ls="--"),  # grey (dotted: the floor)
    "fednl_pp": dict(color="#8C564B", marker="H", ls="-."),  # brown
    "fednl_ls": dict(color="#AA4499", marker="8", ls="--"),  # purple
    "fednl_cr": dict(color="#A6761D", marker="x", ls=":"),  # mustard
}
#: colours of methods that are not registered, in order of appearance
EXTRA_COLORS = tuple(dict.fromkeys(v["color"] for v in METHOD_STYLES.values()))
#: markers of the variants of one method, after its own
VARIANT_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "p", "h", "d", "H", "8")
#: sequential colormaps for curves of one method that differ in one ordered parameter (the
#: first method with such a sweep in a figure gets viridis, the next plasma, ...)
SEQUENTIAL_CMAPS = ("viridis", "plasma", "cividis")
#: a stall: the last STALL_ROUNDS step ratios e_{t+1}/e_t all lie within STALL_RATIO of 1
STALL_ROUNDS, STALL_RATIO = 3, 0.02
_FIGSIZE = {"size": (8.0, 4.5)}
_MAX_MARKERS = 25  # beyond this, markers are spaced evenly along the curve


# --------------------------------------------------------------------------- public


def error_vs_round(
    data: Any,
    *,
    column: str = "dist_to_opt",
    by: str | Sequence[str] = "label",
    x: str = "round",
    ax: Axes | None = None,
    fit: str | None = None,
    bound: Any = None,
    floor: float | bool | None = None,
    logy: bool = True,
    band: str = "minmax",
    title: str | None = None,
    logx: bool | None = None,
    bound_style: str = "both",
) -> tuple[Figure, Axes]:
    """The error ``column`` (default ||theta^t - theta*||) of every curve against ``x``.

    fit: ``"order"`` fits the Q-order p of e_{t+1} = C e_t^p, ``"linear"`` the ratio q of
        e_t = q^t e_0, to each curve (its median over runs) with :mod:`fedtheory.rates` on its
        asymptotic window, and prints the estimate with its 95 % CI and the rounds used in the
        legend (``p = 1.99 [1.95, 2.03], t = 2..5``). A curve that stalls (its last
        STALL_ROUNDS step ratios within 2 % of 1, above the float floor) or does not contract
        on the window gets no rate: the legend says so.
    bound: a theory bound on e_{t+1} = ||theta^{t+1} - theta*|| from e_t: ``("quadratic", C)``
        for e_{t+1} <= C e_t^2, ``"quadratic"`` alone for C = L_H / (2 mu) from the runs'
        reference constants, ``("linear", q)`` for e_{t+1} <= q e_t, ``"damped_newton"`` (or
        ``("damped_newton", eta, C)``) for the damped-Newton bound e_{t+1} <= (1 - eta) e_t +
        eta C e_t^2 with the curve's own ``eta`` and C = L_H / (2 mu), or a callable e_t ->
        bound. A dict ``{curve label or method: bound}`` gives each curve its own. Built-in
        bounds are about ||theta - theta*|| and are refused on any other column.
    bound_style: ``"bars"`` (the bound from each measured e_t, a bar at round t+1: points below
        it obey it), ``"sequence"`` (the theorem's guaranteed sequence from e_0, dashed) or
        ``"both"`` (default).
    logx: a log x axis (default: for the communication columns uplink_floats,
        downlink_floats, bits).
    floor: a dotted horizontal line at the float floor: a number, ``False`` for none, or None
        for 1e3 eps max(1, ||theta*||) (1e3 eps for ``rel_dist``) when the runs' ||theta*||
        is known and the errors come within a factor 1e3 of it.
    """
    check(
        bound_style in BOUND_STYLES,
        f"bound_style must be one of {BOUND_STYLES}, got {bound_style!r}",
    )
    return _draw(
        data,
        column,
        by=by,
        x=x,
        ax=ax,
        fit=fit,
        bound=bound,
        floor=None if floor is True else floor,
        logy=logy,
        band=band,
        title=title,
        logx=logx,
        bound_style=bound_style,
    )


def metric_vs_round(
    data: Any,
    column: str,
    *,
    by: str | Sequence[str] = "label",
    x: str = "round",
    ax: Axes | None = None,
    logy: bool | None = None,
    band: str = "minmax",
    title: str | None = None,
    logx: bool | None = None,
) -> tuple[Figure, Axes]:
    """Any trace column (``drift``, ``grad_norm``, ``uplink_floats``, ...) of every curve
    against ``x`` (``"round"``, or e.g. ``"uplink_floats"`` to plot against communication).
    ``logy=None`` picks a log axis when the values are positive and span more than two
    decades. Columns that are NaN for a method (drift for Newton) leave that curve out and
    say so in the legend."""
    return _draw(
        data,
        column,
        by=by,
        x=x,
        ax=ax,
        fit=None,
        bound=None,
        floor=False,
        logy=logy,
        band=band,
        title=title,
        logx=logx,
        bound_style="both",
    )


def loglog_fit(
    x: Any,
    y: Any,
    *,
    predicted: float | None = None,
    ax: Axes | None = None,
    label: str = "measured",
    xlabel: str = "x",
    ylabel: str = "y",
    level: float = 0.95,
) -> tuple[Figure, Axes]:
    """Points (x, y) on log-log axes with the OLS line of log y on log x, the band of lines
    whose slopes span the ``level`` CI (pivoting at the centroid, through which every OLS
    line passes), and, if given, the ``predicted`` slope through the same centroid. The
    legend reads ``slope 0.98 [0.93, 1.03] (95% CI)`` and whether the prediction lies in the
    interval (see :func:`fedtheory.rates.loglog_slope`)."""
    fit = rates.loglog_slope(x, y, predicted=predicted, level=level)
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    fig, ax = _axes(ax, figsize=(7.5, 4.5))
    lx, ly = np.log(xs), np.log(ys)
    cx, cy = lx.mean(), ly.mean()
    grid = np.linspace(lx.min(), lx.max(), 100)
    ci = f"[{fit.ci[0]:.2f}, {fit.ci[1]:.2f}]" if math.isfinite(fit.ci[0]) else "[no CI: 2 pts]"
    ax.plot(xs, ys, "o", color=OKABE_ITO[0], ms=6, label=label, zorder=3)
    ax.plot(
        np.exp(grid),
        np.exp(fit.intercept + fit.slope * grid),
        "-",
        color=OKABE_ITO[1],
        lw=2,
        label=f"fit: slope {fit.slope:.2f} {ci} ({level:.0%} CI)",
    )
    if math.isfinite(fit.ci[0]):
        lines = np.exp(cy + np.outer(fit.ci, grid - cx))
        ax.fill_between(
            np.exp(grid),
            lines.min(axis=0),
            lines.max(axis=0),
            color=OKABE_ITO[1],
            alpha=0.2,
            lw=0,
            label=f"slopes in the {level:.0%} CI",
        )
    if predicted is not None:
        verdict = "inside" if fit.contains() else "outside"
        ax.plot(
            np.exp(grid),
            np.exp(cy + predicted * (grid - cx)),
            "--",
            color="black",
            lw=1.5,
            label=f"predicted slope {predicted:g} ({verdict} the CI)",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _finish(ax)
    return fig, ax


def reach_table(
    data: Any,
    eps: float,
    *,
    column: str = "rel_dist",
    by: str | Sequence[str] = "label",
    x: Sequence[str] = ("round", "bits", "uplink_floats"),
) -> pd.DataFrame:
    """ "Rounds to eps" and "bits to eps": per curve, the first value of each ``x`` column at
    which ``column`` <= ``eps``, the median over the curve's runs that reach it, and how many
    runs reach it (``reached`` = "k/n"; NaN where none does)."""
    check(
        isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0,
        f"eps must be a number > 0, got {eps!r}",
    )
    df = tidy(data)
    by = [by] if isinstance(by, str) else list(by)
    for c in (column, *by, *x):
        check(c in df.columns, f"no column {c!r}; columns: {', '.join(df.columns)}")
    out = []
    for key, g in df.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        firsts = g[g[column] <= eps].sort_values("round").groupby("run")[list(x)].first()
        n = g["run"].nunique()
        row = dict(zip(by, key, strict=True))
        row.update(
            {f"{c}_to_eps": float(firsts[c].median()) if len(firsts) else math.nan for c in x}
        )
        row["reached"] = f"{len(firsts)}/{n}"
        out.append(row)
    return pd.DataFrame(out)


def facets(
    data: Any,
    facet: str,
    *,
    plot: Callable[..., tuple[Figure, Axes]] | None = None,
    ncols: int = 3,
    **kw: Any,
) -> tuple[Figure, list[Axes]]:
    """One panel per value of the column ``facet`` (e.g. ``"participation"``), each drawn by
    ``plot`` (default :func:`error_vs_round`) with the keywords ``kw``; the y axes are shared,
    and each method keeps its colour across panels."""
    df = tidy(data)
    check(facet in df.columns, f"no column {facet!r} to facet by; columns: {', '.join(df.columns)}")
    values = sorted(df[facet].dropna().unique(), key=lambda v: _natural(str(v)))
    check(len(values) >= 1, f"column {facet!r} has no value to facet by")
    plot = plot or error_vs_round
    ncols = min(ncols, len(values))
    nrows = math.ceil(len(values) / ncols)
    w, h = _FIGSIZE["size"]
    fig = Figure(figsize=(w * ncols * 0.75, h * nrows * 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel().tolist()
    for ax, value in zip(axes, values, strict=False):
        plot(df[df[facet] == value], ax=ax, title=f"{facet} = {value}", **kw)
    for ax in axes[len(values) :]:
        ax.set_visible(False)
    return fig, axes[: len(values)]


def save(fig: Figure, path: str | os.PathLike, *, pdf: bool = False, dpi: int = 150) -> list[Path]:
    """Write ``fig`` to ``path`` atomically (temporary file, then rename): PNG at ``dpi`` for a
    ``.png`` path (or no suffix, which becomes ``.png``), PDF for a ``.pdf`` path; ``pdf=True``
    also writes the PDF beside a PNG. Returns the paths written."""
    path = Path(path)
    if path.suffix == "":
        path = path.with_suffix(".png")
    check(
        path.suffix in (".png", ".pdf"), f"figure path must end in .png or .pdf, got {str(path)!r}"
    )
    check(path.parent.is_dir(), f"folder {str(path.parent)!r} does not exist")
    paths = [path] + ([path.with_suffix(".pdf")] if pdf and path.suffix == ".png" else [])
    for p in paths:
        fmt = p.suffix[1:]
        write_atomic(
            p, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        )
    return paths


# --------------------------------------------------------------------------- data


def tidy(data: Any) -> pd.DataFrame:
    """``data`` (a Trace, a list of Traces, a dict label -> Trace(s), or a DataFrame) as one
    DataFrame with a ``label`` column and a ``run`` column that tells runs apart. A
    :class:`fedtheory.precision.PreciseTrace` counts as a Trace: its midpoints are drawn where
    they are resolved (radius <= 1e-3 x value) and above float64's smallest normal number
    (2.2e-308); unresolved points are dropped, as the float floor drops them in float64."""
    if _is_precise(data):
        data = [data]
    if isinstance(data, (list, tuple)):
        data = [_from_precise(t) if _is_precise(t) else t for t in data]
    elif isinstance(data, Mapping):
        data = {
            k: (
                [_from_precise(t) if _is_precise(t) else t for t in v]
                if isinstance(v, (list, tuple))
                else (_from_precise(v) if _is_precise(v) else v)
            )
            for k, v in data.items()
        }
    if isinstance(data, Trace):
        data = [data]
    if isinstance(data, pd.DataFrame):
        return _tidy_frame(data)
    if isinstance(data, Mapping):
        pairs = [
            (str(k), t)
            for k, v in data.items()
            for t in (v if isinstance(v, (list, tuple)) else [v])
        ]
    elif isinstance(data, (list, tuple)):
        traces = list(data)
        check(
            all(isinstance(t, Trace) for t in traces),
            "a list to plot must hold Traces only, got "
            + ", ".join(sorted({type(t).__name__ for t in traces})),
        )
        labels = make_labels(
            (
                t.meta.get("method", "run"),
                label_facets(
                    t.meta.get("params") or {},
                    t.meta.get("participation"),
                    t.meta.get("oracle"),
                    t.meta.get("problem"),
                ),
            )
            for t in traces
        )
        pairs = list(zip(labels, traces, strict=True))
    else:
        raise FedTheoryError(
            f"cannot plot a {type(data).__name__}: pass a Trace, a list or "
            f"dict of Traces, or a DataFrame"
        )
    check(bool(pairs), "nothing to plot: no traces given")
    for label, t in pairs:
        check(
            isinstance(t, Trace), f"the value for {label!r} must be a Trace, got {type(t).__name__}"
        )
    frames = [trace_frame(t, label).assign(run=i) for i, (label, t) in enumerate(pairs)]
    return pd.concat(frames, ignore_index=True)


def _is_precise(t: Any) -> bool:
    return hasattr(t, "balls") and hasattr(t, "resolved") and hasattr(t, "rows")


def _from_precise(t: Any) -> Trace:
    """A PreciseTrace as a Trace of its resolved midpoints (NaN elsewhere)."""
    cols = [c for c in ("dist_to_opt", "rel_dist", "subopt", "grad_norm")]
    values = {}
    for c in cols:
        v = np.asarray(t[c], dtype=float)
        ok = np.asarray(t.resolved(c)) & (np.abs(v) >= np.finfo(float).tiny)
        values[c] = np.where(ok, v, np.nan)
    rows = [
        {"round": int(r["round"]), **{c: float(values[c][i]) for c in cols}}
        for i, r in enumerate(t.rows)
    ]
    return Trace(rows=rows, status=t.status, meta={**t.meta, "precision_bits": t.meta.get("prec")})


def _eps(df: pd.DataFrame) -> float:
    """The unit roundoff of the runs: 2^-bits for arbitrary-precision runs, else float64's."""
    bits = _meta_max(df, "precision_bits")
    return 2.0**-bits if bits else float(np.finfo(float).eps)


def _tidy_frame(df: pd.DataFrame) -> pd.DataFrame:
    check(len(df) > 0, "nothing to plot: the DataFrame is empty")
    df = df.copy()
    for key in ("method", "problem", "theta_star_norm", "mu", "L_H", "N", "d"):
        if key not in df.columns and key in df.attrs:
            df[key] = df.attrs[key]
    if "label" not in df.columns:
        if "method" in df.columns and "params" in df.columns:
            cols = [
                c
                for c in ("method", "params", "participation", "oracle", "problem")
                if c in df.columns
            ]
            groups = df.groupby(cols, dropna=False, sort=False)
            names = make_labels(
                (
                    r["method"],
                    label_facets(
                        json.loads(r["params"]),
                        r.get("participation"),
                        r.get("oracle"),
                        r.get("problem"),
                    ),
                )
                for r in groups.head(1)[cols].to_dict("records")
            )
            df["label"] = np.asarray(names, dtype=object)[groups.ngroup().to_numpy()]
        else:
            df["label"] = df["method"] if "method" in df.columns else "run"
    if "run" not in df.columns:
        if "config_id" in df.columns:
            df["run"] = df["config_id"]
        else:
            ids = [
                c
                for c in ("problem", "label", "params", "participation", "oracle", "seed")
                if c in df.columns
            ]
            df["run"] = df.groupby(ids, dropna=False, sort=False).ngroup()
            # rows that still repeat a round within one run are different runs, in order
            df["run"] = (
                df["run"].astype(str) + ":" + df.groupby(["run", "round"]).cumcount().astype(str)
            )
    return df


# --------------------------------------------------------------------------- drawing


def _draw(
    data: Any,
    column: str,
    *,
    by: str | Sequence[str],
    x: str,
    ax: Axes | None,
    fit: str | None,
    bound: Any,
    floor: float | bool | None,
    logy: bool | None,
    band: str,
    title: str | None,
    logx: bool | None,
    bound_style: str,
) -> tuple[Figure, Axes]:
    df = tidy(data)
    by = [by] if isinstance(by, str) else list(by)
    _check_draw(df, column, x, by, band, fit, bound)
    curves, groups = _curves(df, column, x, by, band, sort=isinstance(data, pd.DataFrame))
    values = np.concatenate([c[1]["med"].to_numpy() for c in curves])
    finite = values[np.isfinite(values)]
    check(
        finite.size > 0,
        f"column {column!r} has no finite value in any run (methods "
        f"without local preconditioners report NaN drift metrics)",
    )
    if logy is None:  # log when the positive values span decades and the rest is rounding
        pos = finite[finite > 0]
        logy = bool(
            pos.size
            and pos.max() > 100 * pos.min()
            and np.abs(finite[finite <= 0]).max(initial=0.0) <= 1e-3 * pos.max()
        )
    fl = _floor_value(floor, column, df, finite)
    positive = finite[finite > 0]
    # where values at or below the floor (exact zeros, negative subopt, and positive values
    # under the float floor) are drawn on a log axis: at the floor when there is one, else a
    # decade below the smallest positive value
    bottom = (fl if fl is not None else float(positive.min()) / 10) if positive.size else 1.0
    fig, ax = _axes(ax)
    if logy:
        ax.set_yscale("log")
    if logx if logx is not None else x in COMM_COLUMNS:
        ax.set_xscale("log")
    handles, missing, n_runs, n_low, n_small = [], [], set(), 0, 0
    styles, notes = _styles_and_notes([name for name, _ in curves], groups)
    for (name, agg), style in zip(curves, styles, strict=True):
        if not np.isfinite(agg["med"]).any():
            missing.append(name)
            continue
        label = name + _fit_text(agg, fit, column, floor, df)
        handles.append(_draw_curve(ax, agg, style, label, logy, bottom))
        if logy:
            med = np.asarray(agg["med"], dtype=float)
            n_low += int((med <= bottom).sum())
            n_small += int(((med > 0) & (med <= bottom)).sum())
        if agg["n"].max() > 1:
            n_runs.add(int(agg["n"].max()))
    handles += [Line2D([], [], ls="none", label=note) for note in notes]
    handles += _furniture(ax, band, n_runs, fl, floor, column, (n_low, n_small), bottom)
    if bound is not None:
        handles += _draw_bounds(ax, bound, curves, groups, styles, logy, bound_style, df)
    for name in missing:
        handles.append(Line2D([], [], ls="none", label=f"{name}: no {column} (NaN)"))
    ax.set_xlabel(AXIS_LABELS.get(x, x))
    ax.set_ylabel(AXIS_LABELS.get(column, column))
    if x == "round":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(_title(df) if title is None else title, fontsize="medium")
    legend_title = {
        "order": r"order $p$: $e_{t+1} = C e_t^{\,p}$ (95% CI)",
        "linear": r"ratio $q$: $e_t = q^t e_0$ (95% CI)",
    }.get(fit)
    _finish(ax, handles, legend_title)
    return fig, ax


def _check_draw(
    df: pd.DataFrame, column: str, x: str, by: list[str], band: str, fit: str | None, bound: Any
) -> None:
    for c in (column, x, *by):
        check(c in df.columns, f"no column {c!r} to plot; columns: {', '.join(df.columns)}")
    check(
        pd.api.types.is_numeric_dtype(df[column]),
        f"column {column!r} is not numeric (dtype {df[column].dtype})",
    )
    check(band in BANDS, f"band must be one of {BANDS}, got {band!r}")
    check(fit is None or fit in FITS, f"fit must be one of {FITS} or None, got {fit!r}")
    check(
        bound is None or callable(bound) or column == "dist_to_opt",
        f"the built-in bounds are bounds on ||theta - theta*|| (dist_to_opt); they cannot be "
        f"drawn on {column!r} (pass a callable for a bound on {column!r})",
    )


def _curves(
    df: pd.DataFrame, column: str, x: str, by: list[str], band: str, sort: bool
) -> tuple[list, dict]:
    """(name, per-round aggregate) per curve, and each curve's rows; ``sort`` orders the
    curves naturally ("K=2" before "K=10") when the input gave no order."""
    curves, groups = [], {}
    for key, g in df.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        name = ", ".join([str(key[0]), *(f"{b}={v}" for b, v in zip(by[1:], key[1:], strict=True))])
        curves.append((name, _aggregate(g, column, x, band)))
        groups[name] = g
        _warn_modes(name, g, column)
    if sort:
        curves.sort(key=lambda c: _natural(c[0]))
    return curves, groups


def _draw_curve(
    ax: Axes, agg: pd.DataFrame, style: dict, label: str, logy: bool, bottom: float
) -> Line2D:
    """One curve: its centre line, its values at or below ``bottom`` (the floor: exact zeros,
    negatives and positive values under it) drawn at ``bottom`` and marked there on a log axis,
    and its band over runs."""
    med = _clip(agg["med"], bottom) if logy else agg["med"]
    every = None if len(agg) <= _MAX_MARKERS else 1.0 / _MAX_MARKERS
    (line,) = ax.plot(agg["x"], med, lw=1.8, ms=5, markevery=every, label=label, **style)
    if logy:
        nonpos = np.asarray(agg["med"], dtype=float) <= bottom
        if nonpos.any():  # zeros, negatives and values under the floor: marked on the floor
            ax.plot(
                np.asarray(agg["x"])[nonpos],
                np.full(int(nonpos.sum()), bottom),
                ls="none",
                marker="v",
                ms=8,
                mfc="none",
                mew=1.5,
                color=style["color"],
                zorder=5,
            )
    if agg["n"].max() > 1:
        lo, hi = (_clip(agg[c], bottom) if logy else agg[c] for c in ("lo", "hi"))
        ax.fill_between(agg["x"], lo, hi, color=style["color"], alpha=0.18, lw=0)
    return line


def _furniture(
    ax: Axes,
    band: str,
    n_runs: set,
    fl: float | None,
    floor: Any,
    column: str,
    n_low: tuple[int, int],
    bottom: float,
) -> list:
    """The legend entries of the band, the float floor (drawn here) and the values marked on
    it; ``n_low``: (points at or below ``bottom``, those of them > 0)."""
    handles: list = []
    if n_runs:
        n = "/".join(str(v) for v in sorted(n_runs))
        what = {
            "minmax": "min–max",
            "quantile": "10–90% quantiles",
            "bootstrap": "95% bootstrap CI of the mean",
        }[band]
        centre = "mean" if band == "bootstrap" else "median"
        handles.append(Patch(color="0.5", alpha=0.3, label=f"{centre} of {n} runs; band: {what}"))
    if fl is not None:
        what = "given" if floor is not None else _FLOOR_NAMES[column]
        handles.append(
            ax.axhline(fl, color="0.35", ls=":", lw=1.3, label=f"float floor {fl:.1e} ({what})")
        )
    n, n_small = n_low
    if n:
        what = (
            f"exactly 0 or negative ({n} points)"
            if not n_small
            else f"at or below the floor (0, negative or\nbelow it; {n} points)"
        )
        handles.append(
            Line2D(
                [],
                [],
                ls="none",
                marker="v",
                ms=8,
                mfc="none",
                mew=1.5,
                color="0.3",
                label=f"{what}, drawn at {bottom:.1e}",
            )
        )
    return handles


def _natural(text: str) -> list[tuple[int, Any]]:
    return [
        (1, float(part)) if i % 2 else (0, part)
        for i, part in enumerate(re.split(r"(\d+(?:\.\d+)?)", text))
    ]


def _aggregate(g: pd.DataFrame, column: str, x: str, band: str) -> pd.DataFrame:
    """Per round: median over runs with a band (min-max or 10-90 %), or the mean with its 95 %
    percentile-bootstrap interval (``band="bootstrap"``, 2000 resamples, seeded: the same
    figure every time); run count, median x."""
    table = g.groupby(["round", "run"])[column].first().unstack("run")
    vals = table.to_numpy(dtype=float)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rounds of NaN metrics
        if band == "bootstrap":
            med = np.nanmean(vals, axis=1)
            idx = np.random.default_rng(0).integers(0, vals.shape[1], size=(2000, vals.shape[1]))
            means = np.nanmean(vals[:, idx], axis=2)  # (rounds, resamples)
            lo, hi = np.nanquantile(means, 0.025, axis=1), np.nanquantile(means, 0.975, axis=1)
        else:
            med = np.nanmedian(vals, axis=1)
            q = (0.0, 1.0) if band == "minmax" else (0.1, 0.9)
            lo, hi = np.nanquantile(vals, q[0], axis=1), np.nanquantile(vals, q[1], axis=1)
    xs = (
        table.index.to_numpy(dtype=float)
        if x == "round"
        else g.groupby("round")[x].median().reindex(table.index).to_numpy(dtype=float)
    )
    return pd.DataFrame(
        {"x": xs, "med": med, "lo": lo, "hi": hi, "n": np.isfinite(vals).sum(axis=1)},
        index=table.index,
    )


def _clip(s: pd.Series | np.ndarray, bottom: float) -> np.ndarray:
    """Values for a log axis: those <= ``bottom`` (exact zeros, negative subopt, positive values
    under the float floor) are drawn at ``bottom`` (and marked by the caller), never dropped
    and never below it; NaN stays a gap."""
    a = np.asarray(s, dtype=float)
    return np.where(a > bottom, a, np.where(np.isnan(a), np.nan, bottom))


def _meta_max(df: pd.DataFrame, column: str) -> float | None:
    if column not in df.columns:
        return None
    v = pd.to_numeric(df[column], errors="coerce").abs().dropna()
    return float(v.max()) if len(v) else None


def _scale(df: pd.DataFrame, column: str) -> float | None:
    """The scale of ``column``'s float floor 1e3 eps max(1, scale), or None when unknown:
    ||theta*|| for dist_to_opt, 1 for rel_dist, |f*| for subopt (f is summed to about eps |f*|),
    L ||theta*|| for grad_norm (the gradient's rounding, eps times its terms' size)."""
    if column == "rel_dist":
        return 1.0
    if column == "subopt":
        return _meta_max(df, "f_star")
    star = _meta_max(df, "theta_star_norm")
    if column == "grad_norm":
        L = _meta_max(df, "L")
        return None if star is None or L is None else L * max(1.0, star)
    return star


def _stalls(e: np.ndarray, kw: dict[str, Any]) -> bool:
    """The curve's last STALL_ROUNDS step ratios all lie within STALL_RATIO of 1, above the
    float floor: it stopped at a floor of its own (SOPM's drift floor), so no rate applies."""
    e = e[np.isfinite(e)]
    if e.size < STALL_ROUNDS + 1 or e[-1] <= 0:
        return False
    floor = kw.get("floor", rates.default_floor(1.0))
    with np.errstate(all="ignore"):
        ratios = e[-STALL_ROUNDS:] / e[-STALL_ROUNDS - 1 : -1]
    return bool(e[-1] > 1e3 * floor and (np.abs(ratios - 1) <= STALL_RATIO).all())


def _fit_text(agg: pd.DataFrame, fit: str | None, column: str, floor: Any, df: pd.DataFrame) -> str:
    if fit is None:
        return ""
    e = agg["med"].to_numpy()
    kw: dict[str, Any] = {}
    if isinstance(floor, (int, float)) and not isinstance(floor, bool):
        kw["floor"] = float(floor)
    elif (scale := _scale(df, column)) is not None:
        kw["floor"] = 1e3 * _eps(df) * max(1.0, scale)
    try:
        f = rates.q_order(e, **kw) if fit == "order" else rates.linear_rate(e, **kw)
    except FedTheoryError:
        return f"\n{fit} fit: too few rounds above the floor"
    seg = e[f.window[0] : f.window[1]]
    if not (np.diff(seg) < 0).all():
        return "\nno fit: not contracting"
    if _stalls(e, kw):
        return f"\nno rate: stalls at {e[np.isfinite(e)][-1]:.2g}"
    lo, hi = f.ci
    if fit == "order":
        est = f"p = {f.p:.2f} " + (f"[{lo:.2f}, {hi:.2f}]" if math.isfinite(hi) else "[no CI]")
    else:
        est = f"q = {f.q:.3g} " + (f"[{lo:.3g}, {hi:.3g}]" if math.isfinite(hi) else "[no CI]")
    rounds = agg.index.to_numpy()
    return f"\n{est}, t = {rounds[f.window[0]]}..{rounds[f.window[1] - 1]}"


def _bound_fn(spec: Any, g: pd.DataFrame) -> tuple[Callable | None, str]:
    """One curve's bound e_t -> bound on e_{t+1}, and its legend text."""

    def const(c: str) -> float:
        return pd.to_numeric(g[c], errors="coerce").max() if c in g.columns else math.nan

    if callable(spec):
        return (lambda e: np.asarray(spec(e), dtype=float)), "theory bound on $e_{t+1}$"
    if spec in ("quadratic", "damped_newton"):
        mu, lh = const("mu"), const("L_H")
        check(
            math.isfinite(mu) and math.isfinite(lh) and mu > 0,
            f"bound={spec!r} needs the runs' mu and L_H; pass ({spec!r}, ...) explicitly",
        )
        if spec == "quadratic":
            spec = ("quadratic", lh / (2 * mu))
        else:
            eta = const("param_eta") if "param_eta" in g.columns else _param(g, "eta")
            check(
                math.isfinite(eta) and eta > 0,
                "bound='damped_newton' needs the curve's eta; pass ('damped_newton', eta, C)",
            )
            spec = ("damped_newton", eta, lh / (2 * mu))
    ok = (
        isinstance(spec, tuple)
        and len(spec) in (2, 3)
        and spec[0] in BOUNDS
        and len(spec) == (3 if spec[0] == "damped_newton" else 2)
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in spec[1:])
    )
    check(
        ok,
        f'bound must be ("quadratic", C), ("linear", q), ("damped_newton", eta, C), '
        f'"quadratic", "damped_newton", a callable, or a dict of them, got {spec!r}',
    )
    kind = spec[0]
    if kind == "quadratic":
        c = float(spec[1])
        return (lambda e: c * e**2), rf"$C e_t^2$, $C$ = {c:.3g}"
    if kind == "linear":
        q = float(spec[1])
        return (lambda e: q * e), rf"$q\, e_t$, $q$ = {q:.3g}"
    eta, c = float(spec[1]), float(spec[2])
    return (
        (lambda e: (1 - eta) * e + eta * c * e**2),
        rf"$(1-\eta) e_t + \eta C e_t^2$, $\eta$ = {eta:.3g}, $C$ = {c:.3g}",
    )


def _param(g: pd.DataFrame, name: str) -> float:
    """A method parameter of a curve's runs, from its ``params`` JSON column."""
    if "params" not in g.columns:
        return math.nan
    values = {json.loads(p).get(name) for p in g["params"].dropna().unique()}
    return float(values.pop()) if len(values) == 1 and None not in values else math.nan


def _draw_bounds(
    ax: Axes,
    bound: Any,
    curves: list,
    groups: dict,
    styles: list,
    logy: bool,
    bound_style: str,
    df: pd.DataFrame,
) -> list:
    """Each curve's bound: bars from each measured e_t and/or the guaranteed sequence from
    e_0; returns the legend handles. The y range stays that of the curves: a sequence that
    lies above it at every round t >= 1 (a bound vacuous from e_0, C e_0 > 1) is not drawn
    and the legend says so instead of listing an invisible line; one that enters the axes
    late says from which round."""
    lim, texts = ax.get_ylim(), set()
    lo, hi = min(lim), max(lim)
    bars_seen, seq_seen, late, hidden, n = False, False, 0.0, [], 0
    for i, (name, agg) in enumerate(curves):
        spec = bound
        if isinstance(bound, Mapping):
            method = str(name).split(",")[0].split(" ")[0]
            spec = bound.get(name, bound.get(method))
            if spec is None:
                continue
        n += 1
        fn, text = _bound_fn(spec, groups[name])
        e, xs = agg["med"].to_numpy(), agg["x"].to_numpy()
        color = styles[i]["color"]
        if bound_style in ("both", "bars"):
            with np.errstate(all="ignore"):
                pred = fn(e[:-1])
            ok = np.isfinite(pred) & (pred > 0) if logy else np.isfinite(pred)
            ax.plot(
                xs[1:][ok],
                pred[ok],
                ls="none",
                marker="_",
                ms=12,
                mew=2,
                color=color,
                alpha=0.9,
                zorder=4,
            )
            bars_seen |= bool(((pred[ok] >= lo) & (pred[ok] <= hi)).any())
        if bound_style in ("both", "sequence") and np.isfinite(e[0]):
            seq = [float(e[0])]
            with np.errstate(all="ignore"):
                for _ in range(len(e) - 1):
                    seq.append(float(fn(np.asarray(seq[-1]))))
            seq_a = np.asarray(seq)
            ok = np.isfinite(seq_a) & (seq_a > 0) if logy else np.isfinite(seq_a)
            inside = np.flatnonzero(ok[1:] & (seq_a[1:] >= lo) & (seq_a[1:] <= hi)) + 1
            if inside.size == 0 and len(seq) > 1:  # above (or off) the axes after e_0
                hidden.append((name, seq_a[1]))
            else:
                ax.plot(xs[ok], seq_a[ok], ls=(0, (4, 2)), lw=1.0, color=color, alpha=0.8, zorder=2)
                seq_seen = True
                if inside.size and inside[0] > 1 and (seq_a[1 : inside[0]] > hi).all():
                    late = max(late, float(xs[inside[0]]))
        texts.add(text)
    ax.set_ylim(lim)
    return _bound_handles(bound_style, texts, bars_seen, seq_seen, late, hidden, n)


def _bound_handles(
    bound_style: str, texts: set, bars_seen: bool, seq_seen: bool, late: float, hidden: list, n: int
) -> list:
    """The legend entries of the bounds: a line only for what shows inside the axes."""
    handles = []
    text = "; ".join(sorted(texts)) if len(texts) <= 2 else "per curve"
    if bound_style in ("both", "bars"):
        handles.append(
            Line2D(
                [],
                [],
                ls="none",
                marker="_",
                ms=12,
                mew=2,
                color="0.3",
                label=f"bound from each $e_t$: {text}",
            )
            if bars_seen
            else Line2D(
                [],
                [],
                ls="none",
                label=f"bound from each $e_t$ ({text}):\nabove the axes at every round, not drawn",
            )
        )
    if bound_style in ("both", "sequence"):
        if seq_seen:
            until = f" (above the axes until round {late:g})" if late else ""
            handles.append(
                Line2D(
                    [],
                    [],
                    ls=(0, (4, 2)),
                    lw=1.0,
                    color="0.3",
                    label=f"guaranteed sequence from $e_0${until}",
                )
            )
        for name, first in hidden:
            who = f" of {name}" if n > 1 else ""
            handles.append(
                Line2D(
                    [],
                    [],
                    ls="none",
                    label=(
                        f"guaranteed sequence from $e_0${who}:\nabove the axes from "
                        f"t = 1 on ({first:.2g} at t = 1), not drawn"
                    ),
                )
            )
    return handles


def curve_styles(
    names: Sequence[str], groups: Mapping[str, pd.DataFrame] | None = None
) -> list[dict[str, Any]]:
    """A style (``color``, ``marker``, ``ls``) per curve, the same for a method in every figure.

    Every registered method has its fixed style of METHOD_STYLES in every figure (a reader
    learns FedPM's colour once); methods that are not registered get the colours that no
    method of the figure uses, in order of appearance. Several curves of one method:

    * when they differ in exactly one ordered (numeric) parameter, e.g. eta, S, or only in
      their problem (a data sweep, ordered as given), they keep the method's marker and line
      style and take their colour from a sequential colormap (SEQUENTIAL_CMAPS) in the order
      of that parameter, dark for the smallest; a note names the parameter;
    * otherwise (variants: FedPM + FOOF, FedNL's compressors, ...) they keep the method's
      colour and change line style and marker.

    No two curves of one call share (colour, marker, line style).
    """
    return _styles_and_notes(names, groups)[0]


def _styles_and_notes(
    names: Sequence[str], groups: Mapping[str, pd.DataFrame] | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """:func:`curve_styles`, and the legend notes that name the parameter of each sweep."""
    methods = [_curve_method(name, None if groups is None else groups.get(name)) for name in names]
    known = {m for m in methods if m in METHOD_STYLES}
    free = [c for c in EXTRA_COLORS if c not in {METHOD_STYLES[m]["color"] for m in known}]
    free += [c for c in EXTRA_COLORS if c not in free]
    unknown = list(dict.fromkeys(m for m in methods if m not in METHOD_STYLES))
    base: dict[str, dict[str, str]] = {}
    for m in dict.fromkeys(methods):
        if m in METHOD_STYLES:
            base[m] = dict(METHOD_STYLES[m])
        else:
            k = unknown.index(m)
            base[m] = dict(
                color=free[k % len(free)],
                marker=VARIANT_MARKERS[k % len(VARIANT_MARKERS)],
                ls=LINESTYLES[(k // len(free)) % len(LINESTYLES)],
            )
    out: list[dict[str, Any]] = [dict(base[m]) for m in methods]
    notes: list[str] = []
    n_methods, n_sweeps = len(base), 0
    for m in base:
        idx = [i for i, mm in enumerate(methods) if mm == m]
        if len(idx) < 2:
            continue
        sweep = None if groups is None else _sweep([groups.get(names[i]) for i in idx])
        if sweep is not None:
            what, rank, how = sweep
            cmap_name = SEQUENTIAL_CMAPS[n_sweeps % len(SEQUENTIAL_CMAPS)]
            n_sweeps += 1
            cmap = matplotlib.colormaps[cmap_name]
            shades = np.linspace(0.0, 0.8, len(idx))
            for i, r in zip(idx, rank, strict=True):
                out[i]["color"] = matplotlib.colors.to_hex(cmap(shades[r]))
            who = f"{m}: " if n_methods > 1 else ""
            notes.append(f"{who}colour = {what}\n({cmap_name}, dark = {how})")
            continue
        b = base[m]
        others = [mk for mk in VARIANT_MARKERS if mk != b["marker"]]
        for j, i in enumerate(idx[1:], start=1):
            out[i]["ls"] = LINESTYLES[(LINESTYLES.index(b["ls"]) + j) % len(LINESTYLES)]
            out[i]["marker"] = others[(j - 1) % len(others)]
    used: set[tuple[str, str, str]] = set()
    for st in out:  # the last resort: never two curves with one style
        k = 0
        while (st["color"], st["marker"], st["ls"]) in used:
            st["marker"] = VARIANT_MARKERS[k % len(VARIANT_MARKERS)]
            st["ls"] = LINESTYLES[(k // len(VARIANT_MARKERS)) % len(LINESTYLES)]
            k += 1
        used.add((st["color"], st["marker"], st["ls"]))
    return out, notes


def _curve_method(name: str, g: pd.DataFrame | None) -> str:
    if g is not None and "method" in g.columns and g["method"].notna().any():
        return str(g["method"].dropna().iloc[0])
    return str(name).split(",")[0].split(" ")[0]


#: what tells two curves of one method apart besides their parameters, and its legend name
_FACET_NAMES = {
    "participation": "S (participants per round)",
    "oracle": "oracle",
    "problem": "problem",
}


def _facets(g: pd.DataFrame | None) -> dict[str, Any]:
    """A curve's parameters, S, oracle and problem (one value each; a tuple when its runs
    differ)."""
    out: dict[str, Any] = {}
    if g is None:
        return out
    if "params" in g.columns:
        ps = [json.loads(p) for p in g["params"].dropna().unique()]
        for k in dict.fromkeys(k for p in ps for k in p):
            vals = list(
                dict.fromkeys(json.dumps(p.get(k), sort_keys=True, default=str) for p in ps)
            )
            out[k] = json.loads(vals[0]) if len(vals) == 1 else tuple(vals)
    for c in _FACET_NAMES:
        if c in g.columns:
            vals = g[c].dropna().unique().tolist()
            out[c] = vals[0] if len(vals) == 1 else tuple(sorted(map(str, vals)))
    return out


def _is_number(v: Any) -> bool:
    return (
        isinstance(v, (int, float, np.integer, np.floating))
        and not isinstance(v, (bool, np.bool_))
        and math.isfinite(float(v))
    )


def _sweep(gs: list[pd.DataFrame | None]) -> tuple[str, list[int], str] | None:
    """(the parameter, each curve's rank, which is darkest) when the curves of one method
    differ in exactly one numeric parameter (ranked by value) or only in their problem
    (ranked as given); else None."""
    if any(g is None for g in gs):
        return None
    fs = [_facets(g) for g in gs]
    keys = list(dict.fromkeys(k for f in fs for k in f))

    def text(v: Any) -> str:
        return json.dumps(v, sort_keys=True, default=str)

    varying = [k for k in keys if len({text(f.get(k)) for f in fs}) > 1]
    if len(varying) != 1:
        return None
    key = varying[0]
    vals = [f.get(key) for f in fs]
    if len({text(v) for v in vals}) != len(vals):
        return None
    if all(_is_number(v) for v in vals):
        order = sorted(range(len(vals)), key=lambda i: float(vals[i]))
        rank = [order.index(i) for i in range(len(vals))]
        return _FACET_NAMES.get(key, key), rank, "smallest"
    if key == "problem" and all(isinstance(v, str) for v in vals):
        return f"problem{_swept_name(vals)}", list(range(len(vals))), "first in the legend"
    return None


def _swept_name(names: list[str]) -> str:
    """`` (alpha)`` when the problem names carry one ``alpha=...`` part (all but one of them,
    e.g. "phishing iid" among "phishing alpha=0.5", ...), else ``""``."""
    keys = [k[0] for n in names if len(k := re.findall(r"(\w+)\s*=", n)) == 1]
    return f" ({keys[0]})" if keys and len(set(keys)) == 1 and len(keys) >= len(names) - 1 else ""


def _warn_modes(name: str, g: pd.DataFrame, column: str) -> None:
    """Warn when a curve's runs end in two groups more than two decades apart: the median
    (or mean) and its band then describe neither."""
    if "run" not in g.columns or g["run"].nunique() < 3:
        return
    last = g.sort_values("round").groupby("run")[column].last().to_numpy(dtype=float)
    last = last[np.isfinite(last) & (last > 0)]
    if last.size < 3:
        return
    logs = np.sort(np.log10(last))
    gaps = np.diff(logs)
    k = int(np.argmax(gaps))
    if gaps[k] > 2:
        warnings.warn(
            f"the runs of {name!r} split into modes: {k + 1} end near "
            f"{10 ** np.median(logs[: k + 1]):.2g} and {logs.size - k - 1} near "
            f"{10 ** np.median(logs[k + 1 :]):.2g} ({column}); the centre line and "
            f"band describe neither: plot the runs separately (by='seed')",
            RuntimeWarning,
            stacklevel=4,
        )


def _floor_value(floor: Any, column: str, df: pd.DataFrame, finite: np.ndarray) -> float | None:
    if floor is False:
        return None
    if floor is not None:
        check(
            isinstance(floor, (int, float)) and math.isfinite(floor) and floor > 0,
            f"floor must be a number > 0, False or None, got {floor!r}",
        )
        return float(floor)
    scale = _scale(df, column)
    if column not in ERROR_COLUMNS or scale is None:
        return None
    fl = 1e3 * _eps(df) * max(1.0, scale)
    # shown only where the values come near it (exact zeros and negatives included), so it
    # never squeezes a curve that stalls high
    return fl if finite.size and finite.min() < 1e3 * fl else None


def _title(df: pd.DataFrame) -> str:
    if "problem" not in df.columns or df["problem"].nunique(dropna=True) != 1:
        return ""
    title = str(df["problem"].dropna().iloc[0])
    if {"N", "d"} <= set(df.columns) and df["N"].notna().any():
        title += f"  (N = {int(df['N'].dropna().iloc[0])}, d = {int(df['d'].dropna().iloc[0])})"
    return title


def _axes(ax: Axes | None, figsize: tuple[float, float] | None = None) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize or _FIGSIZE["size"], layout="constrained")
    return fig, fig.add_subplot()


@contextmanager
def paper(width: float = 3.4, height: float = 2.4) -> Iterator[None]:
    """Figures for a paper inside the block: serif fonts at 8 pt, one column wide (3.4 in by
    default), thinner lines and smaller markers. ``with paper(): fig, ax = error_vs_round(t)``."""
    import matplotlib

    old = _FIGSIZE["size"]
    _FIGSIZE["size"] = (width, height)
    try:
        with matplotlib.rc_context(
            {
                "font.family": "serif",
                "font.size": 8,
                "axes.titlesize": 8,
                "legend.fontsize": 6,
                "lines.linewidth": 1.0,
                "lines.markersize": 3,
                "mathtext.fontset": "dejavuserif",
            }
        ):
            yield
    finally:
        _FIGSIZE["size"] = old


def _finish(ax: Axes, handles: list | None = None, title: str | None = None) -> None:
    ax.grid(True, which="major", alpha=0.3)
    for axis, scale, (lo, hi) in (
        (ax.yaxis, ax.get_yscale(), ax.get_ylim()),
        (ax.xaxis, ax.get_xscale(), ax.get_xlim()),
    ):
        if scale == "log" and lo > 0 and hi / lo < 300:
            # few decades: plain numbers (0.2, 3, 50) read better than 2 x 10^-1
            keep = {1, 2, 3, 4, 5, 6, 7, 8, 9} if hi / lo < 10 else {1, 2, 5}
            fmt = FuncFormatter(
                lambda v, _, keep=keep: (
                    f"{v:g}"
                    if v > 0 and round(v / 10 ** math.floor(math.log10(v) + 1e-9)) in keep
                    else ""
                )
            )
            axis.set_major_formatter(fmt)
            axis.set_minor_formatter(fmt)
    kw = dict(
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        frameon=False,
        fontsize="small",
        title=title,
        title_fontsize="small",
    )
    if ax.figure.get_figwidth() < 5:  # a paper column: the legend goes below the axes
        kw.update(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2)
    if handles is not None:
        ax.legend(handles=handles, **kw)
    else:
        ax.legend(**kw)


# --------------------------------------------------------------------------- CLI


def main_plot(
    results: str | Sequence[str],
    metric: str,
    by: str,
    out: str,
    x: str = "round",
    *,
    fit: str | None = None,
    bound: str | None = None,
    floor: str | None = None,
    band: str = "minmax",
    logx: bool | None = None,
    title: str | None = None,
    facet: str | None = None,
    style: str | None = None,
) -> int:
    """``fedtheory plot RESULTS... --metric M --by COL --out FIG.png``: one figure of
    ``metric`` from sweep folders, results.parquet files or trace CSVs (several are drawn
    together), written to ``out`` (.png, or .pdf). Error metrics get a log axis and the float
    floor; ``fit``, ``bound``, ``floor`` ("none" or a number), ``band``, ``logx``, ``title``,
    ``facet`` (a column: one panel per value) and ``style="paper"`` are those of the Python
    API."""
    check_destination(out, "--out", (".png", ".pdf"))  # before anything is read or drawn
    paths = [results] if isinstance(results, (str, os.PathLike)) else list(results)
    check(len(paths) >= 1, "plot needs at least one results path")
    check(style in (None, "paper"), f"--style must be 'paper', got {style!r}")
    frames = []
    for i, p in enumerate(paths):
        df = _tidy_frame(load(p))
        frames.append(df.assign(run=[f"{i}:{r}" for r in df["run"]]) if len(paths) > 1 else df)
    df = pd.concat(frames, ignore_index=True)
    fl: float | bool | None = None
    if floor is not None:
        try:
            fl = False if floor == "none" else float(floor)
        except ValueError:
            raise FedTheoryError(f"--floor must be 'none' or a number, got {floor!r}") from None
    error = metric in ERROR_COLUMNS
    check(
        error or (fit is None and bound is None),
        f"--fit and --bound apply to the error columns {ERROR_COLUMNS}, not {metric!r}",
    )
    kw: dict[str, Any] = dict(by=by, x=x, band=band, logx=logx)
    if error:
        kw.update(column=metric, fit=fit, bound=bound, floor=fl)
    with paper() if style == "paper" else contextlib.nullcontext():
        if facet is not None:
            draw = error_vs_round if error else (lambda d, **k: metric_vs_round(d, metric, **k))
            fig, _ = facets(df, facet, plot=draw, **kw)
        else:
            fig, _ = (
                error_vs_round(df, title=title, **kw)
                if error
                else metric_vs_round(df, metric, title=title, **kw)
            )
        if facet is not None and title:
            fig.suptitle(title)
    for path in save(fig, out):
        print(f"wrote {path}")
    return 0
