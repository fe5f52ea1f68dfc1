"""Figures for the claim report: what a theorist looks at next to each measured number.

``claim_figure(record)`` draws, from the figures a check stored in its record's details:
C2 and C9 the error sequences (log scale) with, for C2, the quadratic bound (L_H / 2 mu) e_t^2
one round on; C5 the measured floor ||grad f|| against sqrt(Delta_D) zeta with each instance's
bound; C8 the log-log speedup fits. Other claims get no figure (None).
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from .plot import OKABE_ITO, loglog_fit


def _errors_figure(rec: Any, bound: bool) -> Figure:
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for i, run in enumerate(rec.details["runs"]):
        e = [x for x in run["errors"] if x and x > 0]
        color = OKABE_ITO[i % len(OKABE_ITO)]
        label = run.get("problem", "") + (f" option {run['option']}" if "option" in run else "")
        ax.semilogy(range(len(e)), e, "o-", color=color, ms=3,
                    label=f"{label}: order {run['order']:.2f}")
        if bound and run.get("bound_constant"):
            c = run["bound_constant"]
            ax.semilogy(range(1, len(e)), [c * x * x for x in e[:-1]], "_", color=color, ms=9,
                        mew=1.5)
    if bound:
        ax.plot([], [], "_", color="grey", ms=9, mew=1.5, label=r"bound $(L_H/2\mu)\,e_t^2$")
    ax.set_xlabel("round $t$")
    ax.set_ylabel(r"$e_t = \|\theta^t - \theta^\star\|$")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return fig


def _bound_figure(rec: Any) -> Figure:
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.add_subplot()
    runs = rec.details["runs"]
    for i, name in enumerate(sorted({r["dataset"] for r in runs})):
        sel = [r for r in runs if r["dataset"] == name]
        x = [r["sqrt_DeltaD_zeta"] for r in sel]
        ax.loglog(x, [r["grad_norm"] for r in sel], "o", color=OKABE_ITO[i],
                  label=f"{name}: measured floor")
        ax.loglog(x, [r["bound"] for r in sel], "v", mfc="none", color=OKABE_ITO[i],
                  label=f"{name}: bound")
    ax.set_xlabel(r"$\sqrt{\Delta_D}\,\zeta$ at the SOPM limit")
    ax.set_ylabel(r"$\|\nabla f\|$ at the limit")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _speedup_figure(rec: Any) -> Figure:
    fig = Figure(figsize=(7.6, 6.4), layout="constrained")
    d = rec.details
    for k, (key, column, predicted) in enumerate(
            (("a_fixed_eta", "stationary_sq_grad", -1.0), ("b_tuned_eta", "mean_sq_grad", -0.5))):
        ax = fig.add_subplot(2, 1, k + 1)
        loglog_fit(d["S"], d[key][column], predicted=predicted, ax=ax, label="measured",
                   xlabel="participants per round S",
                   ylabel=r"$\mathbb{E}\|\nabla f\|^2$" + (" (stationary)" if k == 0 else
                                                           " (mean over rounds)"))
        ax.set_title(f"({'ab'[k]}) {'fixed eta' if k == 0 else 'eta = c sqrt(S / (K R))'}",
                     fontsize=9)
    return fig


def claim_figure(rec: Any) -> Figure | None:
    """The figure of one claim record, or None for claims without one (the first-round
    checks' figures; a check module that defines ``figure(record)`` owns its own, see
    :func:`fedtheory.claims.write_figures`)."""
    try:
        if rec.id == "C2":
            return _errors_figure(rec, bound=True)
        if rec.id == "C9":
            return _errors_figure(rec, bound=False)
        if rec.id == "C5":
            return _bound_figure(rec)
        if rec.id == "C8":
            return _speedup_figure(rec)
    except (KeyError, TypeError, ValueError):   # a failed check may lack some of its data
        return None
    return None
