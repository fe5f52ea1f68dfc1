"""Figures: every input kind renders to PNG, legends carry the fits, bounds and bands they claim,
and nothing leaks into pyplot's global state."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from fedtheory import FedTheoryError, Trace, make_method, run
from fedtheory.plot import error_vs_round, loglog_fit, main_plot, metric_vs_round, save
from fedtheory.results import trace_frame
from fedtheory.testing import make_problem

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def problem():
    return make_problem(7, N=6, d=3)


@pytest.fixture(scope="module")
def newton(problem):
    return run(problem, make_method("newton"), 8)


@pytest.fixture(scope="module")
def seeds(problem):
    """4 seeds each of FedPM and SOPM under partial participation (S = 3 of 6)."""
    return [
        run(problem, make_method(m, {"K": 2, "eta": 0.8}), 6, participation=3, seed=s)
        for m in ("fedpm", "sopm")
        for s in range(4)
    ]


def _synthetic(e, method="synthetic"):
    rows = [{"round": t, "dist_to_opt": v} for t, v in enumerate(e)]
    return Trace(rows=rows, meta={"method": method, "params": {}})


def _legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _png(tmp_path, fig, name="fig.png"):
    (path,) = save(fig, tmp_path / name)
    assert path.read_bytes()[:8] == PNG
    return path


def test_single_trace_renders_with_log_axis_units_and_floor(tmp_path, newton):
    fig, ax = error_vs_round(newton)
    _png(tmp_path, fig)
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "round $t$"
    assert "theta" in ax.get_ylabel()
    assert any(t.startswith("float floor") for t in _legend(ax))  # Newton reaches it
    assert ax.get_legend().get_bbox_to_anchor().x0 > ax.get_window_extent().x1  # outside


def test_many_seeds_draw_median_and_a_band_named_in_the_legend(tmp_path, seeds):
    fig, ax = error_vs_round(seeds)
    _png(tmp_path, fig)
    legend = _legend(ax)
    assert legend[:2] == ["fedpm", "sopm"]
    assert "median of 4 runs; band: min–max" in legend
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 2
    median = np.median(np.array([t["dist_to_opt"] for t in seeds[:4]]), axis=0)
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), median)
    _, ax = error_vs_round(seeds, band="quantile")
    assert "median of 4 runs; band: 10–90% quantiles" in _legend(ax)


def test_dataframe_inputs_render(tmp_path, seeds):
    tidy = pd.concat([trace_frame(t) for t in seeds], ignore_index=True)
    fig, ax = error_vs_round(tidy, by="method")
    _png(tmp_path, fig, "tidy.png")
    assert _legend(ax)[:2] == ["fedpm", "sopm"]
    bare = tidy[["round", "dist_to_opt", "method"]]  # no run ids: repeated rounds are runs
    fig, ax = error_vs_round(bare, by="method")
    _png(tmp_path, fig, "bare.png")
    assert "median of 4 runs; band: min–max" in _legend(ax)
    fig, _ = error_vs_round(seeds[0].to_frame())  # one trace's frame, meta in attrs
    _png(tmp_path, fig, "one.png")


def test_order_fit_of_a_quadratic_sequence_is_in_the_legend():
    e = [0.5]
    for _ in range(5):
        e.append(e[-1] ** 2)
    _, ax = error_vs_round(_synthetic(e), fit="order")
    (label,) = [t for t in _legend(ax) if t.startswith("synthetic")]
    assert "p = 2.00 [2.00, 2.00]" in label
    assert ax.get_legend().get_title().get_text().startswith("order")


def test_linear_fit_is_in_the_legend():
    _, ax = error_vs_round(_synthetic(0.5 ** np.arange(12)), fit="linear")
    assert any("q = 0.5 [0.5, 0.5]" in t for t in _legend(ax))


def test_fit_of_a_stalled_curve_says_so_instead_of_a_number():
    _, ax = error_vs_round(_synthetic([1.0, 0.5, 0.6, 0.55, 0.7, 0.65]), fit="order")
    assert any("no fit: not contracting" in t for t in _legend(ax))


def test_quadratic_bound_is_drawn_from_each_measured_error():
    e = np.array([0.5, 0.2, 0.03, 1e-3, 1e-6])
    _, ax = error_vs_round(_synthetic(e), bound=("quadratic", 2.0), floor=False)
    assert any(t.startswith("bound") and "2" in t for t in _legend(ax))
    (bars,) = [ln for ln in ax.get_lines() if ln.get_marker() == "_" and len(ln.get_xdata())]
    np.testing.assert_allclose(bars.get_xdata(), np.arange(1, 5))
    np.testing.assert_allclose(bars.get_ydata(), 2.0 * e[:-1] ** 2)


def test_quadratic_bound_constant_defaults_to_LH_over_2mu(newton):
    _, ax = error_vs_round(newton, bound="quadratic")
    C = newton.meta["L_H"] / (2 * newton.meta["mu"])
    assert any(t.startswith("bound") and f"{C:.3g}" in t for t in _legend(ax))


def test_metric_against_communication_and_nan_metrics(tmp_path, newton, seeds):
    fig, ax = metric_vs_round(seeds, "dist_to_opt", x="uplink_floats")
    _png(tmp_path, fig)
    assert "uplink" in ax.get_xlabel()
    _, ax = metric_vs_round([newton, seeds[0]], "drift")
    assert "newton: no drift (NaN)" in _legend(ax)
    with pytest.raises(FedTheoryError, match="drift"):
        metric_vs_round(newton, "drift")
    with pytest.raises(FedTheoryError, match="'nope'"):
        metric_vs_round(newton, "nope")


def test_loglog_fit_annotates_slope_ci_and_prediction(tmp_path):
    x = np.array([1, 2, 4, 8, 16, 32] * 2, dtype=float)
    y = 3.0 / x * np.exp(0.05 * np.random.default_rng(0).standard_normal(x.size))
    fig, ax = loglog_fit(x, y, predicted=-1.0, xlabel="S", ylabel="error")
    _png(tmp_path, fig)
    legend = _legend(ax)
    assert any(t.startswith("fit: slope -1.0") and "95% CI" in t for t in legend)
    assert "predicted slope -1 (inside the CI)" in legend
    assert ax.get_xscale() == ax.get_yscale() == "log"


def test_save_writes_png_and_pdf_atomically_and_refuses_other_formats(tmp_path, newton):
    fig, _ = error_vs_round(newton)
    paths = save(fig, tmp_path / "err", pdf=True)
    assert [p.name for p in paths] == ["err.png", "err.pdf"]
    assert paths[1].read_bytes()[:4] == b"%PDF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["err.pdf", "err.png"]  # no temp
    with pytest.raises(FedTheoryError, match="svg"):
        save(fig, tmp_path / "err.svg")


def test_no_figure_reaches_pyplot(newton, seeds):
    before = plt.get_fignums()
    error_vs_round(seeds, fit="linear")
    metric_vs_round(newton, "grad_norm")
    loglog_fit([1, 2, 4], [1.0, 0.5, 0.26])
    assert plt.get_fignums() == before


def test_main_plot_reads_a_trace_csv_with_its_metadata(tmp_path, newton, capsys):
    csv = newton.to_csv(tmp_path / "newton.csv")
    csv.with_suffix(".json").write_text(json.dumps(newton.meta, default=float))
    assert main_plot(str(csv), "dist_to_opt", "method", str(tmp_path / "out.png")) == 0
    assert (tmp_path / "out.png").read_bytes()[:8] == PNG
    assert "wrote" in capsys.readouterr().out
    assert main_plot(str(csv), "grad_norm", "label", str(tmp_path / "g.pdf")) == 0
    with pytest.raises(FedTheoryError, match="does not exist"):
        main_plot(str(tmp_path / "missing.csv"), "dist_to_opt", "method", "x.png")


def _star(e, column="dist_to_opt", **meta):
    rows = [{"round": t, column: v} for t, v in enumerate(e)]
    return Trace(
        rows=rows,
        meta={
            "method": "newton",
            "params": {},
            "theta_star_norm": 2.0,
            "f_star": 0.5,
            "L": 3.0,
            **meta,
        },
    )


@pytest.mark.parametrize("last", [0.0, 1e-17])
def test_an_exact_zero_at_the_float_floor_is_drawn_marked_and_floored(tmp_path, last):
    """Newton can land on theta* exactly (dist_to_opt == 0.0, seen with NumPy 2.4): the floor
    line is still drawn, the zero is plotted at the floor with its own marker, not dropped."""
    e = [1.0, 1e-2, 1e-5, 1e-11, last]
    fig, ax = error_vs_round(_star(e))
    _png(tmp_path, fig)
    legend = _legend(ax)
    assert any(t.startswith("float floor") for t in legend)
    floor = 1e3 * np.finfo(float).eps * 2.0
    y = ax.get_lines()[0].get_ydata()
    assert np.isfinite(y).all()  # no gap where the zero is
    assert y[-1] == pytest.approx(floor)  # a zero or a value under the floor
    if last == 0.0:
        assert any(t.startswith("exactly 0 or negative (1 points)") for t in legend)
    else:
        assert any(t.startswith("at or below the floor (0, negative or") for t in legend)


def test_negative_subopt_at_the_floor_is_data_with_its_own_floor(tmp_path):
    sub = [0.7, 1e-3, 1e-8, -5.6e-17, 0.0]
    fig, ax = metric_vs_round(_star(sub, "subopt"), column="subopt", logy=True)
    _png(tmp_path, fig)
    y = ax.get_lines()[0].get_ydata()
    assert np.isfinite(y).all() and (y > 0).all()
    assert "exactly 0 or negative (2 points), drawn at" in " ".join(_legend(ax))
    _, ax = metric_vs_round(_star(sub, "subopt"), column="subopt")  # automatic axis
    assert ax.get_yscale() == "log"
    fig, ax = error_vs_round(_star(sub, "subopt"), column="subopt")
    fl = [t for t in _legend(ax) if t.startswith("float floor")]
    assert fl and "|f*|" in fl[0]


# ---- fits and bounds that check their meaning; bands; styles; tables; the CLI -------------


def _with_meta(e, method="fedpm", **meta):
    rows = [{"round": t, "dist_to_opt": v} for t, v in enumerate(e)]
    return Trace(
        rows=rows,
        meta={
            "method": method,
            "params": {"eta": 0.5},
            "mu": 0.5,
            "L_H": 1.0,
            "theta_star_norm": 1.0,
            **meta,
        },
    )


def test_no_rate_is_printed_for_a_curve_that_stalls_at_its_own_floor():
    stall = [1.0, 0.5, 0.33, 0.312, 0.3101, 0.31001, 0.310001, 0.3100001]
    _, ax = error_vs_round({"sopm": _synthetic(stall)}, fit="order")
    assert any("no rate: stalls at 0.31" in t for t in _legend(ax))
    quad = [1.0, 0.3, 0.03, 3e-4, 3e-8, 3e-16]
    _, ax = error_vs_round({"fedpm": _synthetic(quad)}, fit="order")
    assert any("p = " in t for t in _legend(ax))


def test_the_damped_newton_bound_uses_each_curves_eta_and_draws_the_sequence_from_e0():
    e = [1.0, 0.5, 0.25, 0.125]
    _, ax = error_vs_round({"fedpm": _with_meta(e)}, bound="damped_newton")
    lines = ax.get_lines()
    bars = [ln for ln in lines if ln.get_marker() == "_" and len(ln.get_xdata())]
    c = 1.0 / (2 * 0.5)
    np.testing.assert_allclose(bars[0].get_ydata(), [0.5 * x + 0.5 * c * x * x for x in e[:-1]])
    seq = [ln for ln in lines if ln.get_linestyle() == "--" and len(ln.get_xdata()) == 4]
    s = [1.0]
    for _ in range(3):
        s.append(0.5 * s[-1] + 0.5 * c * s[-1] ** 2)
    np.testing.assert_allclose(seq[0].get_ydata(), s)
    assert "guaranteed sequence from $e_0$" in _legend(ax)


def test_a_bound_per_method_and_no_distance_bound_on_subopt():
    data = {"fedpm": _with_meta([1.0, 0.1, 1e-3]), "sopm": _with_meta([1.0, 0.5, 0.4], "sopm")}
    _, ax = error_vs_round(data, bound={"fedpm": ("quadratic", 2.0)}, bound_style="bars")
    bars = [ln for ln in ax.get_lines() if ln.get_marker() == "_" and len(ln.get_xdata())]
    assert len(bars) == 1
    np.testing.assert_allclose(bars[0].get_ydata(), [2.0, 0.02])
    with pytest.raises(FedTheoryError, match="cannot be drawn on 'subopt'"):
        error_vs_round(_star([1.0, 0.1], "subopt"), column="subopt", bound="quadratic")


def test_bootstrap_band_is_the_means_interval_and_reproducible():
    traces = [_synthetic([1.0, v], "m") for v in (0.1, 0.2, 0.3, 0.4)]
    _, ax = error_vs_round(traces, band="bootstrap")
    assert "mean of 4 runs; band: 95% bootstrap CI of the mean" in _legend(ax)
    assert ax.get_lines()[0].get_ydata()[1] == pytest.approx(0.25)
    v = ax.collections[0].get_paths()[0].vertices
    band = v[v[:, 0] == 1, 1]  # the band at round 1
    assert 0.1 <= band.min() < 0.25 < band.max() <= 0.4
    _, ax2 = error_vs_round(traces, band="bootstrap")
    np.testing.assert_array_equal(
        ax2.collections[0].get_paths()[0].vertices, ax.collections[0].get_paths()[0].vertices
    )


def test_seeds_that_split_into_modes_are_warned_about():
    traces = [_synthetic([1.0, v], "m") for v in (1e-9, 2e-9, 0.3, 0.4)]
    with pytest.warns(RuntimeWarning, match="split into modes: 2 end near"):
        error_vs_round(traces)


def test_a_method_keeps_its_colour_in_every_figure():
    from fedtheory.plot import curve_styles

    a = curve_styles(["fedpm", "sopm"])
    b = curve_styles(["sopm", "newton", "fedpm"])
    assert a[0]["color"] == b[2]["color"] and a[1]["color"] == b[0]["color"]
    many = curve_styles([f"m{i}" for i in range(20)] + ["fedpm K=1", "fedpm K=2"])
    keys = {(s["color"], s["marker"], s["ls"]) for s in many}
    assert len(keys) == len(many)  # more than 8 distinguishable styles
    assert many[-1]["color"] == many[-2]["color"] and many[-1]["ls"] != many[-2]["ls"]


def test_rounds_and_bits_to_eps_table():
    from fedtheory.plot import reach_table

    def tr(e, bits):
        rows = [
            {"round": t, "rel_dist": v, "bits": b, "uplink_floats": b / 32}
            for t, (v, b) in enumerate(zip(e, bits, strict=True))
        ]
        return Trace(rows=rows, meta={"method": "fedpm", "params": {}})

    table = reach_table(
        {
            "fedpm": [tr([1, 1e-3, 1e-9], [0, 64, 128]), tr([1, 1e-9, 1e-12], [0, 64, 128])],
            "sopm": tr([1, 0.5, 0.4], [0, 64, 128]),
        },
        1e-8,
    )
    fed = table[table["label"] == "fedpm"].iloc[0]
    assert fed["round_to_eps"] == 1.5 and fed["bits_to_eps"] == 96 and fed["reached"] == "2/2"
    sopm = table[table["label"] == "sopm"].iloc[0]
    assert np.isnan(sopm["round_to_eps"]) and sopm["reached"] == "0/1"


def test_communication_axes_are_logarithmic_by_default(seeds):
    _, ax = metric_vs_round(seeds, "dist_to_opt", x="uplink_floats")
    assert ax.get_xscale() == "log"
    _, ax = metric_vs_round(seeds, "dist_to_opt")
    assert ax.get_xscale() == "linear"


def test_facets_and_paper_style(tmp_path, seeds):
    from fedtheory.plot import facets, paper

    with paper():
        fig, axes = facets(seeds, "label")
    assert len(axes) == 2 and [a.get_title() for a in axes] == ["label = fedpm", "label = sopm"]
    assert fig.get_figwidth() < 6
    _png(tmp_path, fig)


def test_plot_cli_takes_several_files_and_the_api_options(tmp_path, newton, capsys):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    newton.to_csv(a)
    newton.to_csv(b)
    for f in (a, b):
        f.with_suffix(".json").write_text(json.dumps({**newton.meta, "status": newton.status}))
    from fedtheory.cli import main

    out = tmp_path / "f.pdf"
    assert (
        main(
            [
                "plot",
                str(a),
                str(b),
                "--fit",
                "order",
                "--bound",
                "quadratic",
                "--band",
                "bootstrap",
                "--title",
                "T",
                "--style",
                "paper",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.read_bytes()[:4] == b"%PDF"
    assert (
        main(
            [
                "plot",
                str(a),
                "--metric",
                "drift",
                "--fit",
                "order",
                "--out",
                str(tmp_path / "x.png"),
            ]
        )
        == 2
    )
    assert "--fit and --bound apply to the error columns" in capsys.readouterr().err


# ---- styles across methods, parameter sweeps, the floor, bounds off the axes ----------------


def _method_trace(method, e=(1.0, 0.1, 1e-3), **params):
    rows = [{"round": t, "dist_to_opt": v} for t, v in enumerate(e)]
    return Trace(rows=rows, meta={"method": method, "params": params})


def _curve_lines(ax, n):
    return [(ln.get_color(), ln.get_marker(), ln.get_linestyle()) for ln in ax.get_lines()[:n]]


def test_two_methods_in_one_figure_never_look_the_same():
    """Every registered method has a colour of its own (old: SOPM and FedAvg vermilion, FedPM
    and GD blue, FedNL-CR and DANE yellow, GIANT and FedNL-LS black), the same in every
    figure; a variant keeps its method's colour and changes marker and line style."""
    from fedtheory.methods import METHODS
    from fedtheory.plot import curve_styles

    styles = curve_styles(list(METHODS))
    colours = [s["color"] for s in styles]
    assert len(set(colours)) == len(METHODS)
    assert len({(s["color"], s["marker"], s["ls"]) for s in styles}) == len(METHODS)
    assert len({(s["marker"], s["ls"]) for s in styles}) == len(METHODS)  # greyscale too
    again = curve_styles(list(reversed(METHODS)))
    assert [s["color"] for s in again] == colours[::-1]
    # a figure like notebook 06's: distinct methods distinct colours, FOOF on FedPM's colour
    data = {
        "Newton": _method_trace("newton"),
        "FedPM": _method_trace("fedpm", K=1),
        "GIANT": _method_trace("giant"),
        "FedNL-LS": _method_trace("fednl_ls"),
        "FedNL-CR": _method_trace("fednl_cr"),
        "DANE": _method_trace("dane"),
        "FedPM + FOOF": _method_trace("fedpm", K=1, preconditioner="foof"),
        "GD": _method_trace("gd", eta=0.1),
        "SOPM": _method_trace("sopm"),
        "FedAvg": _method_trace("fedavg", eta=0.1),
    }
    _, ax = error_vs_round(data, floor=False)
    drawn = dict(zip(data, _curve_lines(ax, len(data)), strict=True))
    assert len(set(drawn.values())) == len(data)
    methods = {k: v for k, v in drawn.items() if k != "FedPM + FOOF"}
    assert len({c for c, _, _ in methods.values()}) == len(methods)
    assert drawn["FedPM + FOOF"][0] == drawn["FedPM"][0]
    assert drawn["FedPM + FOOF"][1:] != drawn["FedPM"][1:]


def test_curves_of_one_method_differing_in_one_parameter_follow_a_colormap():
    """Damped FedPM at three eta (given out of order): three colours of viridis in the order
    of eta, the method's marker on each, and the legend names the parameter (old: one colour,
    only the markers differed)."""
    import matplotlib

    etas = (0.5, 0.25, 0.75)
    data = {f"FedPM eta={eta}": _method_trace("fedpm", K=1, eta=eta) for eta in etas}
    _, ax = error_vs_round(data, floor=False)
    lines = _curve_lines(ax, 3)
    viridis = matplotlib.colormaps["viridis"]
    shade = {0.25: 0.0, 0.5: 0.4, 0.75: 0.8}
    for eta, (colour, marker, _) in zip(etas, lines, strict=True):
        assert colour == matplotlib.colors.to_hex(viridis(shade[eta]))
        assert marker == lines[0][1]
    assert "colour = eta\n(viridis, dark = smallest)" in _legend(ax)
    # a sweep of S (participation) and of the data split are shaded too
    s_sweep = [
        Trace(
            rows=[{"round": t, "dist_to_opt": v} for t, v in enumerate((1, 0.1))],
            meta={"method": "fedpm", "params": {}, "participation": S},
        )
        for S in (2, 5, 10)
    ]
    _, ax = error_vs_round(s_sweep, floor=False)
    assert len({c for c, _, _ in _curve_lines(ax, 3)}) == 3
    assert any("colour = S (participants per round)" in t for t in _legend(ax))
    split = [
        Trace(
            rows=[{"round": t, "dist_to_opt": v} for t, v in enumerate((1, 0.1))],
            meta={"method": "sopm", "params": {}, "problem": f"phishing {a}"},
        )
        for a in ("iid", "alpha=10", "alpha=0.1")
    ]
    _, ax = error_vs_round(split, floor=False)
    assert len({c for c, _, _ in _curve_lines(ax, 3)}) == 3
    assert "colour = problem (alpha)\n(viridis, dark = first in the legend)" in _legend(ax)


def test_no_curve_is_drawn_below_its_floor():
    """Zeros, negatives and positive values under the float floor are all drawn on the floor
    and marked alike (old: 0 at the floor, 1e-16 drawn below it); the data stay as they are."""
    e = [1.0, 1e-4, 1e-9, 0.0, 1e-16, -1e-17, 3e-16, 0.0]
    tr = _star(e)
    _, ax = error_vs_round(tr)
    floor = 1e3 * np.finfo(float).eps * 2.0
    (fl,) = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    assert fl.get_ydata()[0] == pytest.approx(floor)
    y = np.asarray(ax.get_lines()[0].get_ydata(), dtype=float)
    assert (y >= floor * (1 - 1e-12)).all()
    np.testing.assert_allclose(y[:3], e[:3])
    np.testing.assert_allclose(y[3:], floor)
    (marks,) = [ln for ln in ax.get_lines() if ln.get_marker() == "v"]
    np.testing.assert_array_equal(marks.get_xdata(), [3, 4, 5, 6, 7])
    assert any("below it; 5 points), drawn at" in t for t in _legend(ax))
    assert list(tr["dist_to_opt"]) == e  # the data are not changed


def test_no_legend_entry_for_a_bound_line_outside_the_axes():
    """C e_0^2 with C = 2490 from e_0 = 4 leaves the axes at round 1 and never returns (old:
    the legend listed "guaranteed sequence from $e_0$" for a line that was not there)."""
    e = [4.0, 1.0, 0.3, 0.03, 1e-4, 1e-9]
    _, ax = error_vs_round({"fedpm": _with_meta(e)}, bound=("quadratic", 2490.0), floor=False)
    lo, hi = ax.get_ylim()

    def shown(ln):
        y = np.asarray(ln.get_ydata(), dtype=float)[1:]
        return bool(((y >= lo) & (y <= hi)).any())

    seq = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--" and len(ln.get_xdata())]
    entries = [t for t in _legend(ax) if t.startswith("guaranteed sequence")]
    assert entries
    for t in entries:
        assert "above the axes" in t or any(shown(ln) for ln in seq)
    assert not any(t == "guaranteed sequence from $e_0$" for t in entries)
    handles = ax.get_legend().legend_handles
    for h, t in zip(handles, _legend(ax), strict=True):  # the note carries no line
        if t.startswith("guaranteed sequence"):
            assert h.get_linestyle() in ("None", "none", "")
    # a bound that stays on the axes keeps its plain entry and its line
    _, ax = error_vs_round({"fedpm": _with_meta(e)}, bound=("linear", 0.5), floor=False)
    assert "guaranteed sequence from $e_0$" in _legend(ax)
