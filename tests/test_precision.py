"""The arb backend (fedtheory.precision): oracles, round maps, radii, precision, refusal, output.

What "agrees with float64" can honestly mean: a float64 value carries its own rounding error,
about eps times the magnitude of the terms that made it (times the condition number after a
solve). So the tests ask (a) that the arb ball of an oracle at a float64 point lies within that
a priori float64 error bound of the float64 value, (b) that arb and float64 runs agree to 1e-12
of the problem's scale on every round above the float floor, and (c) that two arb balls of the
same exact quantity, at two precisions, overlap: a rigorous test of the radii themselves.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import pytest

pytest.importorskip("flint")

import flint  # noqa: E402

from fedtheory.errors import FedTheoryError  # noqa: E402
from fedtheory.methods import make_method  # noqa: E402
from fedtheory.precision import (  # noqa: E402
    COLUMNS,
    ROUND_MAPS,
    PreciseProblem,
    PreciseState,
    precise_q_order,
    python_flint_available,
    q_order_log10,
    read_precise_csv,
    resolved_stop,
    run_precise,
    successive_orders,
    to_precise,
)
from fedtheory.problem import FederatedProblem  # noqa: E402
from fedtheory.rates import default_floor, q_order  # noqa: E402
from fedtheory.runner import run  # noqa: E402

EPS = float(np.finfo(np.float64).eps)
GOLDEN = (1 + math.sqrt(5)) / 2


def small_problem(objective: str = "logistic", seed: int = 0) -> FederatedProblem:
    """4 heterogeneous clients of unequal sizes, d = 6."""
    rng = np.random.default_rng(seed)
    Xs, ys = [], []
    for i, n in enumerate((30, 50, 20, 40)):
        X = rng.normal(0.5 * i, 1.0, (n, 6))
        w = rng.normal(size=6)
        ys.append(
            np.where(X @ w + rng.normal(size=n) >= 0, 1.0, -1.0)
            if objective == "logistic"
            else X @ w + 0.1 * rng.normal(size=n)
        )
        Xs.append(X)
    return FederatedProblem.from_clients(
        Xs, ys, objective=objective, lam=1e-2, name=f"small_{objective}"
    )


@pytest.fixture(scope="module")
def logistic() -> FederatedProblem:
    return small_problem("logistic")


@pytest.fixture(scope="module")
def precise(logistic) -> PreciseProblem:
    return to_precise(logistic, 256)


def _col(x: np.ndarray):
    return flint.arb_mat([[float(v)] for v in x])


def test_python_flint_is_detected_and_its_absence_is_a_clear_error(monkeypatch, logistic):
    assert python_flint_available()
    monkeypatch.setitem(sys.modules, "flint", None)  # import flint now fails
    assert not python_flint_available()
    with pytest.raises(FedTheoryError, match="pip install python-flint"):
        to_precise(logistic, 256)


@pytest.mark.parametrize("objective", ["logistic", "ridge"])
def test_arb_oracles_contain_float64_within_float64_rounding(objective):
    """At a float64 point (exact in arb) each float64 value lies within the arb ball widened
    by the a priori float64 error bound gamma * (sum of |terms|), gamma = (n_i + 10) eps; and
    the arb ball is tight (radius below 2^-240 of the same magnitude), so the check bites."""
    problem = small_problem(objective, seed=1)
    pp = to_precise(problem, 256)
    theta = np.random.default_rng(2).normal(size=problem.d)
    o64 = problem.oracle(theta, value=True, grad=True, hess=True)
    A, y, sw = problem.A, problem.y, problem.sw
    z = A @ theta
    if objective == "logistic":
        s = 1 / (1 + np.exp(y * z))
        d1, d2, loss = s, s * (1 - s), np.logaddexp(0, -y * z)
    else:
        d1, d2, loss = np.abs(z - y), np.ones_like(z), 0.5 * (z - y) ** 2
    absA = np.abs(A)
    with flint.ctx.workprec(256):
        for i in range(problem.N):
            n_i = int(problem.sizes[i])
            gamma = (n_i + 10) * EPS
            mag_f = sw[i] @ loss[i] + problem.lam * theta @ theta
            mag_g = absA[i].T @ (sw[i] * d1[i]) + problem.lam * np.abs(theta)
            mag_H = absA[i].T @ (absA[i] * (sw[i] * d2[i])[:, None]) + problem.lam
            o = pp.client_oracle(i, _col(theta), value=True, grad=True, hess=True)
            pairs = [(o.f, o64.f[i], mag_f)]
            pairs += [(o.g[k, 0], o64.g[i, k], mag_g[k]) for k in range(problem.d)]
            pairs += [
                (o.H[k, j], o64.H[i, k, j], mag_H[k, j])
                for k in range(problem.d)
                for j in range(problem.d)
            ]
            for ball, v64, mag in pairs:
                assert abs(float(ball.mid()) - v64) <= float(ball.rad()) + gamma * mag
                assert float(ball.rad()) <= 2.0**-240 * max(mag, 1e-300)


METHODS = [
    ("newton", {}),
    ("newton", {"eta": 0.5}),
    ("gd", {"eta": 1.0}),
    ("fedpm", {"K": 1}),
    ("fedpm", {"K": 1, "eta": 0.5}),
    ("fedpm", {"K": 3, "eta": 0.7, "delta": 0.05}),
    ("fedpm", {"K": 2, "mixing_preconditioner": "end"}),
    ("fedpm", {"server_memory": True}),
    ("fedpm", {"K": 2, "preconditioner": "foof", "delta": 0.1}),
    ("sopm", {"K": 2}),
    ("sopm", {"preconditioner": "foof", "eta": 0.5}),
    ("fednl", {}),
    ("fednl", {"option": 2, "l_norm": "frobenius"}),
    ("fednl", {"init": "zero"}),
    ("fednl", {"alpha": 0.5}),
    ("giant", {"line_search": False}),
]


@pytest.mark.parametrize(("name", "params"), METHODS)
def test_arb_runs_agree_with_float64_runs_above_the_float_floor(logistic, precise, name, params):
    """|e_t(float64) - e_t(arb)| <= 1e-12 max(1, ||theta*||, e_t) on every round whose float64
    e_t is above the float floor. Relative agreement of e_t alone is impossible near the floor,
    where float64's own error ~ kappa eps max(1, ||theta*||) is comparable to e_t; the e_t term
    covers runs that wander far (SOPM K = 2, eta = 1 here), whose float64 error grows with
    the iterate. subopt and ||grad f|| likewise, on the scales max(1, |f*|, value) and
    max(1, ||grad f(0)||, value)."""
    rounds = 12
    tr = run_precise(precise, name, params, rounds, 256)
    f64 = run(logistic, make_method(name, params), rounds, drift_metrics=False)
    scale = max(1.0, float(np.linalg.norm(logistic.reference.theta_star)))
    above = f64["dist_to_opt"] > default_floor(scale)
    assert above.sum() >= 3
    n = min(len(tr), len(f64))
    assert n == rounds + 1
    scales = {
        "dist_to_opt": scale,
        "subopt": max(1.0, abs(logistic.reference.f_star)),
        "grad_norm": max(1.0, float(f64["grad_norm"][0])),
    }
    for col, unit in scales.items():
        a, b = tr[col][above], f64[col][above]
        rel = np.abs(a - b) / np.maximum(unit, np.abs(b))
        assert rel.max() <= 1e-12, (col, rel.max())


def test_radii_of_two_precisions_enclose_the_same_exact_trajectory(logistic):
    """With carry_radius=True every ball encloses the exact-arithmetic trajectory from theta0,
    at any precision: the 128-bit and 512-bit balls of each row must overlap, and the tight
    512-bit midpoint must lie in the 128-bit ball (radius honesty)."""
    lo = run_precise(logistic, "fedpm", {"K": 2, "eta": 0.8}, 6, 128, carry_radius=True)
    hi = run_precise(logistic, "fedpm", {"K": 2, "eta": 0.8}, 6, 512, carry_radius=True)
    for a, b in zip(lo.rows, hi.rows, strict=True):
        for col in COLUMNS:
            assert a[col].overlaps(b[col]), (a["round"], col)
            assert a[col].contains(b[col].mid()), (a["round"], col)


def test_theta_star_radius_is_a_rigorous_and_tight_bound(logistic):
    """Both references enclose theta*, so their midpoints are within the sum of their radii;
    and each radius is below 2^-prec (the guard bits make theta* sharper than the iterates)."""
    r_lo, r_hi = to_precise(logistic, 128).reference, to_precise(logistic, 512).reference
    with flint.ctx.workprec(1024):
        gap = r_lo.theta_star - r_hi.theta_star
        dist = (gap.transpose() * gap)[0, 0].sqrt()
    assert dist <= r_lo.radius + r_hi.radius
    assert dist > 0  # the two midpoints do differ
    assert r_lo.radius < flint.arb(2) ** -128 and r_hi.radius < flint.arb(2) ** -512


def test_distances_account_for_the_reference_radius(logistic):
    """dist_to_opt encloses the distance to the exact theta*, not to the stored midpoint: with
    a cruder (still valid) reference, theta~ moved by 1e-30 with radius 2e-30, the ball of
    the distance at the good theta~ must still reach down to ~0."""
    from dataclasses import replace

    pp = to_precise(logistic, 256)
    good = pp.reference
    with flint.ctx.workprec(256):
        shift = flint.arb_mat([[flint.arb("1e-30")]] + [[0]] * (logistic.d - 1))
        theta = (good.theta_star + shift).mid()
        o = pp.global_oracle(theta)
        gn2 = (o.g.transpose() * o.g)[0, 0]
        gap = flint.arb(0).union(gn2 / (2 * pp.lam))  # [0, ||g||^2 / (2 lam)]
        crude = replace(
            good,
            theta_star=theta,
            f_tilde=o.f,
            g_tilde=o.g,
            gap=gap,
            f_star=o.f - gap,
            radius=(flint.arb("1e-30") + good.radius).upper() * 2,
        )
        pp.__dict__["reference"] = crude
        dist = pp.metrics(good.theta_star)["dist_to_opt"]
    assert dist.lower() <= good.radius and dist.upper() >= 1e-30


def test_one_round_ball_contains_the_float64_round_within_its_error_bound(logistic, precise):
    """One Newton round from a float64 point: the float64 result lies within the arb ball
    widened by kappa * d * eps * ||theta+|| (a backward-stable solve's forward error)."""
    theta = 0.5 * logistic.reference.theta_star
    method = make_method("newton", {})
    from fedtheory.claims import one_round

    t64 = one_round(logistic, method, theta)
    ref = logistic.reference
    with flint.ctx.workprec(256):
        ball = ROUND_MAPS[method.name](precise, method, PreciseState(_col(theta))).theta
    bound = ref.L / ref.mu * logistic.d * EPS * np.linalg.norm(t64) * 10
    for k in range(logistic.d):
        assert abs(float(ball[k, 0].mid()) - t64[k]) <= float(ball[k, 0].rad()) + bound
        assert float(ball[k, 0].rad()) < 1e-60


def test_fedpm_k1_is_the_newton_step_in_arb(precise, logistic):
    """C1 in ball arithmetic: one FedPM K = 1 round and one Newton round from the same exact
    point give overlapping balls (they enclose the same exact number), of radius < 1e-60."""
    x = _col(0.3 * logistic.reference.theta_star)
    with flint.ctx.workprec(256):
        outs = [
            ROUND_MAPS[m.name](precise, m, PreciseState(x)).theta
            for m in (
                make_method("fedpm", {"K": 1, "eta": 0.7}),
                make_method("newton", {"eta": 0.7}),
            )
        ]
    for a, b in zip(outs[0].entries(), outs[1].entries(), strict=True):
        assert a.overlaps(b) and float(a.rad()) < 1e-60


def test_a_wrong_hessian_loses_the_quadratic_order(logistic, monkeypatch):
    """FedPM K = 1 at 256 bits fits order in [1.98, 2.02]; with the clients' Hessians scaled
    by 1.01 (a deliberately wrong derivative) the method is linear (ratio ~ 0.01) and the
    fitted order falls to about 1. A wrong Hessian in the global oracle as well is caught by
    the row metrics: the Taylor enclosure of f - f* (which uses H) misses the direct one."""
    good = run_precise(logistic, "fedpm", {"K": 1}, 40, 256, stop_at_floor=True)
    fit = precise_q_order(good)
    assert 1.98 <= fit.p <= 2.02 and fit.ci[1] - fit.ci[0] <= 0.04

    def scaled(oracle):
        def wrong(self, *args, **kw):
            o = oracle(self, *args, **kw)
            return o._replace(H=None if o.H is None else o.H * flint.arb("1.01"))

        return wrong

    monkeypatch.setattr(PreciseProblem, "client_oracle", scaled(PreciseProblem.client_oracle))
    bad = run_precise(logistic, "fedpm", {"K": 1}, 60, 256, stop_at_floor=True)
    fit_bad = precise_q_order(bad)
    assert fit_bad.p < 1.2 and fit_bad.ci[1] < 1.5, fit_bad
    monkeypatch.setattr(PreciseProblem, "global_oracle", scaled(PreciseProblem.global_oracle))
    with pytest.raises(FedTheoryError, match="wrong derivative"):
        run_precise(logistic, "newton", {}, 8, 256)


def test_precision_is_honoured_512_bits_resolve_1e_minus_140(logistic):
    """Damped FedPM with 1 - eta = 2^-17 contracts by ~7.6e-6 (5.1 decades) per round, so its
    errors fall in every band of 5 decades: at 512 bits some e_t in [1e-145, 1e-140] is
    resolved (radius <= 1e-3 e_t); at 256 bits nothing below 1e-72 is."""
    eta = 1 - 2.0**-17
    hi = run_precise(logistic, "fedpm", {"K": 1, "eta": eta}, 40, 512, stop_at_floor=True)
    logs, ok = hi.log10(), hi.resolved()
    assert any(-145 <= v <= -140 and r for v, r in zip(logs, ok, strict=True)), logs
    lo = run_precise(logistic, "fedpm", {"K": 1, "eta": eta}, 40, 256, stop_at_floor=True)
    logs, ok = lo.log10(), lo.resolved()
    assert not any(v < -72 and r for v, r in zip(logs, ok, strict=True))
    assert lo.status == "reached_floor"


def test_too_large_problem_is_refused_with_its_estimated_time():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8000, 120))
    y = np.where(rng.normal(size=8000) >= 0, 1.0, -1.0)
    problem = FederatedProblem.from_dataset(
        X, y, np.array_split(np.arange(8000), 8), objective="logistic", lam=1e-3, name="big"
    )
    start = time.perf_counter()
    with pytest.raises(FedTheoryError, match=r"estimated [0-9.]+ s per round") as info:
        to_precise(problem, 256)
    assert "d = 120" in str(info.value) and "max_round_seconds" in str(info.value)
    assert time.perf_counter() - start < 1.0  # refused before converting anything
    with pytest.raises(FedTheoryError, match="estimated"):
        run_precise(problem, "fedpm", {"K": 1}, 3, 256)


def test_csv_is_a_rigorous_decimal_enclosure(precise, tmp_path):
    tr = run_precise(precise, "fednl", {}, 10, 256)
    path = tr.to_csv(tmp_path / "fednl.csv")
    back = read_precise_csv(path, prec=256)
    assert len(back) == len(tr)
    digits = math.ceil(256 * math.log10(2)) + 1
    for row, orig in zip(back, tr.rows, strict=True):
        assert row["round"] == orig["round"]
        for col in COLUMNS:
            assert row[col].contains(orig[col]), (row["round"], col)
    header = path.read_text().splitlines()[0].split(",")
    assert header[:3] == ["round", "dist_to_opt", "dist_radius"] and header[-1] == "seconds"
    mid = path.read_text().splitlines()[3].split(",")[1]
    assert len(mid.split("e")[0].replace(".", "")) >= digits - 8  # trailing zeros trimmed


def test_log_space_order_fit_matches_rates_and_reaches_below_float64():
    """In float range q_order_log10 is rates.q_order; far below 1e-308 it still fits."""
    rng = np.random.default_rng(0)
    x = [-1.0]
    for _ in range(9):
        x.append(2 * x[-1] + 0.3 + 0.01 * rng.normal())  # e_{t+1} = C e_t^2
    x = np.array(x)  # down to about 1e-600
    fit = q_order_log10(x, window=(0, x.size))
    assert abs(fit.p - 2) < 0.01
    inside = x[x > -300]
    a = q_order_log10(inside, window=(0, inside.size))
    b = q_order(10.0**inside, window=(0, inside.size))
    assert a.p == pytest.approx(b.p, rel=1e-12) and a.log_C == pytest.approx(b.log_C, rel=1e-9)


def test_successive_orders_tend_to_the_golden_ratio_for_a_stale_hessian_sequence():
    x = [-1.0, -1.5]
    for _ in range(12):
        x.append(x[-1] + x[-2] - 0.2)  # e_{t+1} = C e_t e_{t-1}
    q = successive_orders(x)
    assert np.isnan(q[0]) and np.isnan(q[-1])
    assert abs(q[-2] - GOLDEN) < 1e-3


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("fedpac", {}, "no arb round map"),
        ("fednl", {"compressor": "topK", "Kc": 3}, "identity"),
        ("fednl", {"option": 2, "l_norm": "spectral"}, "frobenius"),
        ("fednl", {"init": "zero", "alpha": 0.5}, "alpha = 1"),
        ("sopm", {"local_search": True}, "local_search"),
        ("giant", {}, "line_search=False"),
    ],
)
def test_unsupported_methods_and_options_are_refused(precise, name, params, match):
    with pytest.raises(FedTheoryError, match=match):
        run_precise(precise, name, params, 1, 256)


def test_an_option_without_an_arb_map_is_refused_not_ignored(precise, monkeypatch):
    """A float64 option the arb map does not list must keep its default: here FedPM's
    ``preconditioner`` is struck from the list, and "foof" is refused while the default runs."""
    from fedtheory import precision

    options = {**precision.ARB_OPTIONS, "fedpm": ("K", "eta", "delta")}
    monkeypatch.setattr(precision, "ARB_OPTIONS", options)
    with pytest.raises(FedTheoryError, match="preconditioner='foof' has no arb round map"):
        run_precise(precise, "fedpm", {"preconditioner": "foof"}, 1, 256)
    assert len(run_precise(precise, "fedpm", {"K": 2}, 1, 256)) == 2


def test_ridge_fedpm_contracts_by_exactly_one_minus_eta_to_the_k():
    """C6 far below float64: FedPM on ridge contracts by (1 - eta)^K every round."""
    problem = small_problem("ridge", seed=3)
    tr = run_precise(problem, "fedpm", {"K": 2, "eta": 0.5}, 30, 256, stop_at_floor=True)
    logs = tr.log10()[: resolved_stop(tr, rel_radius=1e-12)]
    assert logs[-1] < -15
    np.testing.assert_allclose(np.diff(logs), math.log10(0.25), atol=1e-9)


def test_the_cli_runs_in_precision_and_refuses_options_it_would_ignore(tmp_path, capsys):
    from fedtheory.cli import main

    out = tmp_path / "p.csv"
    argv = [
        "run",
        "breast_cancer_dirichlet",
        "--method",
        "fedpm",
        "--param",
        "K=1",
        "--precision",
        "256",
        "--rounds",
        "12",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "in arb at 256 bits" in text
    # the quadratic collapse below 1e-60 is visible in the printed and written rows
    rows = out.read_text().splitlines()
    assert len(rows) == 14 and out.with_suffix(".json").is_file()
    assert any(float(r.split(",")[1]) < 1e-60 for r in rows[1:])
    for extra in (["--participation", "3"], ["--backend", "cupy"], ["--no-drift"]):
        assert main([*argv[:-2], *extra]) == 2
        assert "it does not take" in capsys.readouterr().err


def test_plots_draw_precise_traces_far_below_float64_with_their_own_floor(logistic):
    """A 512-bit FedPM run plotted with a fitted order: the curve reaches below 1e-100, the
    order is fitted on the points float64 could never resolve, and the floor line is the
    run's precision (1e3 2^-512 scale), not float64's."""
    from fedtheory.plot import error_vs_round

    tr = run_precise(logistic, "fedpm", {"K": 1, "eta": 1.0}, 14, 512, stop_at_floor=True)
    _, ax = error_vs_round({"fedpm 512 bits": tr}, fit="order")
    y = ax.get_lines()[0].get_ydata()
    assert np.nanmin(y) < 1e-100
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    p = float(legend.split("p = ")[1].split()[0])
    assert 1.9 <= p <= 2.1
    floors = [t for t in ax.get_legend().get_texts() if t.get_text().startswith("float floor")]
    assert not floors or float(floors[0].get_text().split()[2]) < 1e-140
