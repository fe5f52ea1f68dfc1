"""Rate fits recover the known order, ratio and slope of synthetic sequences.

Synthetic superlinear sequences follow e_{t+1} = C e_t^p exp(sigma z_t), z_t ~ N(0, 1), which is
exactly the Q-order regression model log e_{t+1} = p log e_t + log C + noise. They start at a
log-distance d_0 below the fixed point e* = C^(-1/(p-1)), so they contract, and d_0 is chosen so
that d_4 = p^4 d_0 stays above the float floor: at least 5 rounds survive without noise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fedtheory.errors import FedTheoryError
from fedtheory.rates import (
    OrderFit,
    asymptotic_window,
    default_floor,
    linear_rate,
    loglog_slope,
    q_order,
    superlinearity,
)

FLOOR = default_floor()
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Small multiplicative noise: 0 (rounding only) or up to 1 % per step, well inside the default
# window tolerance (0.1 in log e, i.e. 10 sigma), so the window keeps every round.
sigmas = st.one_of(st.just(0.0), st.floats(1e-8, 1e-2))


def superlinear_sequence(
    p: float, C: float, u: float, sigma: float, seed: int, max_len: int = 60
) -> np.ndarray:
    """e_{t+1} = C e_t^p exp(sigma z_t) from d_0 = u * log(e*/floor) / p^4, stopped at the floor."""
    rng = np.random.default_rng(seed)
    log_e_star = -math.log(C) / (p - 1)
    d0 = u * (log_e_star - math.log(FLOOR)) / p**4
    e = [math.exp(log_e_star - d0)]
    while len(e) < max_len:
        nxt = C * e[-1] ** p * math.exp(sigma * rng.standard_normal())
        if not nxt > FLOOR:
            break
        e.append(nxt)
    return np.array(e)


def slope_std(x: np.ndarray, sigma: float) -> float:
    """Standard deviation of an OLS slope on regressors x with noise sigma."""
    dx = x - x.mean()
    return sigma / math.sqrt(float(dx @ dx))


# --------------------------------------------------------------------------- q_order


@SETTINGS
@given(
    p=st.floats(1.1, 3.0, exclude_min=True),
    C=st.floats(0.1, 10.0),
    u=st.floats(0.2, 0.95),
    sigma=sigmas,
    seed=st.integers(0, 2**32 - 1),
)
def test_q_order_recovers_the_order_of_synthetic_sequences(p, C, u, sigma, seed):
    e = superlinear_sequence(p, C, u, sigma, seed)
    assume(e.size >= 5)
    fit = q_order(e)
    start, stop = fit.window
    assert stop == e.size
    if sigma < 1e-3:
        assert start == 0  # noise 100x below tol: nothing is taken for pre-asymptotic
    # The slope error is N(0, sigma^2 / Sxx) given the regressors: allow 5 standard deviations
    # (a miss has probability 6e-7), with 1e-13 standing in for sigma when only rounding acts.
    x = np.log(e[start : stop - 1])
    assert abs(fit.p - p) <= 5 * slope_std(x, max(sigma, 1e-13))
    if sigma > 0:
        wide = q_order(e, level=1 - 1e-6)
        assert wide.ci[0] <= p <= wide.ci[1]


def test_q_order_interval_covers_the_true_order_at_its_level():
    rng = np.random.default_rng(0)
    n, hits = 1000, 0
    for _ in range(n):
        e = superlinear_sequence(2.0, 1.0, 0.5, 0.01, int(rng.integers(2**32)))
        fit = q_order(e)
        hits += fit.ci[0] <= 2.0 <= fit.ci[1]
    assert 0.93 <= hits / n <= 0.97  # binomial sd 0.007 around 0.95


def test_q_order_with_two_pairs_has_an_infinite_interval():
    fit = q_order([1e-1, 1e-2, 1e-4])
    assert fit.n_points == 2
    assert fit.p == pytest.approx(2.0)
    assert fit.ci == (-math.inf, math.inf)
    assert math.isnan(fit.residual_std)


def test_q_order_prints_order_interval_points_and_rounds():
    fit = OrderFit(
        p=1.98, log_C=0.1, ci=(1.93, 2.03), n_points=6, window=(3, 10), residual_std=0.01
    )
    assert str(fit) == "order p = 1.98 [1.93, 2.03] (95% CI, 6 pts, rounds 3..9)"


def test_q_order_uses_an_explicit_window_as_given():
    e = np.array([5.0, 4.9, 4.8, 1e-1, 1e-2, 1e-4, 1e-8])
    fit = q_order(e, window=(3, 7))
    assert fit.window == (3, 7)
    assert fit.p == pytest.approx(2.0)
    assert q_order(e, window=slice(3, None)).window == (3, 7)


# --------------------------------------------------------------------------- window


@SETTINGS
@given(
    p=st.floats(1.1, 3.0, exclude_min=True),
    C=st.floats(0.1, 10.0),
    u=st.floats(0.2, 0.95),
    tail=st.lists(st.sampled_from([1e-17, 0.0, -1.0, math.nan, math.inf, 1e-3]), max_size=5),
    n_floor=st.integers(1, 4),
    floor_value=st.sampled_from([1e-17, 0.0, FLOOR]),
)
def test_window_drops_floor_values_and_everything_after_them(p, C, u, tail, n_floor, floor_value):
    e = superlinear_sequence(p, C, u, 0.0, 0)
    assume(e.size >= 5)
    padded = np.concatenate([e, [floor_value] * n_floor, tail])
    w = asymptotic_window(padded)
    assert (w.start, w.stop) == (0, e.size)
    assert q_order(padded).p == q_order(e).p


@SETTINGS
@given(
    p=st.floats(1.1, 3.0, exclude_min=True),
    C=st.floats(0.1, 10.0),
    u=st.floats(0.2, 0.95),
    sigma=sigmas,
    seed=st.integers(0, 2**32 - 1),
    lift=st.floats(1e2, 1e6),
    n_plateau=st.integers(1, 5),
)
def test_window_drops_a_pre_asymptotic_plateau(p, C, u, sigma, seed, lift, n_plateau):
    e = superlinear_sequence(p, C, u, sigma, seed)
    assume(e.size >= 5)
    # A plateau far above e_0, decreasing by 1 % a round, that the law does not predict.
    plateau = lift * e[0] * 0.99 ** np.arange(n_plateau)
    assume(abs(math.log(e[0]) - (math.log(C) + p * math.log(plateau[-1]))) > 1.0)
    fit = q_order(np.concatenate([plateau, e]))
    assert fit.window == (n_plateau, n_plateau + e.size)
    x = np.log(e[:-1])
    assert abs(fit.p - p) <= 5 * slope_std(x, max(sigma, 1e-13))


def test_window_starts_after_a_damped_phase():
    # Damped Newton-like start (ratio 1/2), then quadratic: e_{t+1} = e_t^2 from 0.1.
    e = [1.0, 0.5, 0.25, 0.125, 0.1, 1e-2, 1e-4, 1e-8]
    w = asymptotic_window(e)
    assert (w.start, w.stop) == (4, 8)
    assert q_order(e).p == pytest.approx(2.0, abs=1e-12)


def test_window_stops_at_a_transient_increase():
    e = [1e-1, 3e-1, 1e-2, 1e-4, 1e-8, 1e-16]
    assert asymptotic_window(e) == slice(2, 5)


def test_window_floor_scales_with_theta_star_norm():
    e = 0.5 ** np.arange(60.0)
    small = asymptotic_window(e).stop
    large = asymptotic_window(e, scale=1e6).stop
    assert e[small - 1] > default_floor() >= e[small]
    assert e[large - 1] > default_floor(1e6) >= e[large]
    assert large < small
    assert asymptotic_window(e, floor=1e-3).stop == 10


def test_window_of_a_clean_linear_sequence_is_everything_above_the_floor():
    e = 0.9 ** np.arange(400.0)
    w = asymptotic_window(e)
    assert w.start == 0
    assert e[w.stop - 1] > FLOOR >= e[w.stop]


# --------------------------------------------------------------------------- linear_rate


@SETTINGS
@given(q=st.floats(0.01, 0.99), e0=st.floats(1e-3, 1e3))
def test_linear_rate_recovers_the_ratio_exactly_without_noise(q, e0):
    e = e0 * q ** np.arange(200.0)
    fit = linear_rate(e)
    assert fit.n_points >= 3
    assert abs(fit.q - q) <= 1e-10
    assert abs(fit.median_ratio - q) <= 1e-10
    assert fit.log_e0 == pytest.approx(math.log(e0), abs=1e-8)


def test_linear_rate_interval_covers_the_ratio_under_measurement_noise():
    rng = np.random.default_rng(1)
    n, hits = 1000, 0
    t = np.arange(30.0)
    for _ in range(n):
        e = 0.7**t * np.exp(0.01 * rng.standard_normal(t.size))
        fit = linear_rate(e)
        hits += fit.ci[0] <= 0.7 <= fit.ci[1]
    assert 0.93 <= hits / n <= 0.97


def test_linear_rate_ignores_a_slow_start():
    e = np.concatenate([[10.0, 9.9, 9.8], 0.5 ** np.arange(40.0)])
    fit = linear_rate(e)
    assert fit.window[0] == 3
    assert fit.q == pytest.approx(0.5, abs=1e-12)
    assert "ratio q = 0.5 [0.5, 0.5] (95% CI, 40 pts, rounds 3..42)" in str(fit)


# --------------------------------------------------------------------------- superlinearity


@SETTINGS
@given(p=st.floats(1.5, 3.0), C=st.floats(0.1, 10.0), u=st.floats(0.2, 0.95))
def test_superlinear_sequences_have_decreasing_ratios(p, C, u):
    e = superlinear_sequence(p, C, u, 0.0, 0)
    assume(e.size >= 5)
    test = superlinearity(e)
    assert test.decreasing
    assert test.last_ratio == test.ratios[-1] < test.ratios[0]


def test_quadratic_sequence_passes_superlinearity():
    e = [1e-1, 1e-2, 1e-4, 1e-8, 1e-16, 1e-32]
    test = superlinearity(e)
    assert test.ratios == pytest.approx((1e-1, 1e-2, 1e-4))
    assert test.passed(1e-3)
    assert not test.passed(1e-5)


@SETTINGS
@given(q=st.floats(1e-2, 0.99), e0=st.floats(1e-3, 1e3))
def test_linear_sequence_fails_superlinearity(q, e0):
    test = superlinearity(e0 * q ** np.arange(100.0))
    assert test.decreasing  # constant ratios are non-increasing ...
    assert test.last_ratio == pytest.approx(q, rel=1e-10)
    assert not test.passed(1e-3)  # ... but they do not go to 0


def test_noisy_linear_sequence_is_not_decreasing():
    rng = np.random.default_rng(2)
    e = 0.5 ** np.arange(30.0) * np.exp(0.01 * rng.standard_normal(30))
    assert not superlinearity(e).decreasing


# --------------------------------------------------------------------------- loglog_slope


@SETTINGS
@given(a=st.floats(1e-3, 1e3), s=st.floats(-3.0, 3.0), n=st.integers(2, 20))
def test_loglog_slope_is_exact_without_noise(a, s, n):
    x = np.geomspace(1.0, 64.0, n)
    fit = loglog_slope(x, a * x**s)
    assert fit.slope == pytest.approx(s, abs=1e-10)
    assert fit.intercept == pytest.approx(math.log(a), abs=1e-9)


@SETTINGS
@given(
    a=st.floats(1e-3, 1e3),
    s=st.floats(-3.0, 3.0),
    sigma=st.floats(1e-6, 0.3),
    seed=st.integers(0, 2**32 - 1),
)
def test_loglog_slope_interval_contains_the_slope_with_noise(a, s, sigma, seed):
    rng = np.random.default_rng(seed)
    x = np.array([1.0, 2, 4, 8, 16, 32, 64])
    y = a * x**s * np.exp(sigma * rng.standard_normal(x.size))
    fit = loglog_slope(x, y, level=1 - 1e-6, predicted=s)  # a miss has probability 1e-6
    assert fit.contains()


def test_loglog_slope_prints_the_prediction_and_widens_by_tol():
    rng = np.random.default_rng(3)
    x = np.array([1.0, 2, 4, 8, 16, 32, 64])
    y = 3 / x * np.exp(0.05 * rng.standard_normal(x.size))
    fit = loglog_slope(x, y, predicted=-1)
    assert str(fit).startswith(
        f"slope {fit.slope:.2f} [{fit.ci[0]:.2f}, {fit.ci[1]:.2f}], predicted -1 (95% CI, 7 pts)"
    )
    assert fit.contains()
    assert not fit.contains(-2.0)
    assert fit.contains(-2.0, tol=fit.ci[0] + 2 + 1e-9)  # the interval's lower end reaches -2
    assert not fit.contains(-2.0, tol=fit.ci[0] + 2 - 1e-3)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", [q_order, linear_rate, superlinearity, asymptotic_window])
def test_too_short_sequences_are_refused_with_counts(fn):
    with pytest.raises(FedTheoryError, match=r"need >= 3 points above the floor .*found 2"):
        fn([1e-1, 1e-2, 1e-17, 1e-3])


@pytest.mark.parametrize("fn", [q_order, superlinearity])
def test_too_short_explicit_windows_are_refused_with_the_window(fn):
    with pytest.raises(
        FedTheoryError,
        match=r"needs >= 3 points in the window, found 2 "
        r"\(rounds 1\.\.2\)",
    ):
        fn([1.0, 1e-1, 1e-2, 1e-4], window=(1, 3))


def test_linear_rate_refuses_a_single_point_window():
    with pytest.raises(FedTheoryError, match=r"found 1 \(rounds 2\.\.2\)"):
        linear_rate([1.0, 0.5, 0.25], window=(2, 3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": (0, 3), "floor": 1e-10}, "either window or window options"),
        ({"window": (0, 3, 1)}, r"window must be \(start, stop\)"),
        ({"window": slice(0, 4, 2)}, "step 1"),
        ({"window": (0, 5)}, r"got e\[4\] = 0\.0"),
        ({"level": 1.0}, r"level must be in \(0, 1\), got 1\.0"),
        ({"min_points": 2}, r"min_points must be an integer >= 3 .*got 2"),
        ({"floor": -1.0}, "floor must be finite and >= 0, got -1.0"),
        ({"scale": math.nan}, "scale must be finite"),
        ({"tol": 0.0}, "tol must be finite and > 0, got 0.0"),
    ],
)
def test_bad_options_are_refused_by_name(kwargs, match):
    with pytest.raises(FedTheoryError, match=match):
        q_order([1e-1, 1e-2, 1e-4, 1e-8, 0.0], **kwargs)


def test_two_dimensional_input_is_refused():
    with pytest.raises(FedTheoryError, match=r"e must be a 1-D array, got shape \(2, 2\)"):
        q_order(np.ones((2, 2)))


def test_constant_errors_have_no_order():
    with pytest.raises(FedTheoryError, match="constant"):
        q_order([1e-3, 1e-3, 1e-3], window=(0, 3))


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        ([1.0, 2.0], [1.0], "one length, got 2 and 1"),
        ([1.0], [1.0], "needs >= 2 points, found 1"),
        ([1.0, -2.0], [1.0, 1.0], r"x must be finite and > 0, got x\[1\] = -2\.0"),
        ([1.0, 2.0], [1.0, math.inf], r"y\[1\] = inf"),
        ([2.0, 2.0], [1.0, 3.0], "at least two values"),
    ],
)
def test_loglog_slope_refuses_bad_points(x, y, match):
    with pytest.raises(FedTheoryError, match=match):
        loglog_slope(x, y)


def test_contains_needs_a_prediction():
    fit = loglog_slope([1.0, 2.0, 4.0], [1.0, 0.5, 0.25])
    with pytest.raises(FedTheoryError, match="needs a predicted slope"):
        fit.contains()
