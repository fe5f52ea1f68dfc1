"""Measured convergence rates of an error sequence e_t = ||theta^t - theta*||.

Pure functions on 1-D arrays of errors; each returns a small frozen result that prints the
measured figure with its confidence interval. These are the measurements behind the pass
criteria of ``docs/claims.md``:

- :func:`q_order`: the Q-order p of ``e_{t+1} ~ C e_t^p``, the OLS slope of log e_{t+1} on
  log e_t (p = 2 for Newton-type methods, C2; the golden ratio for stale-Hessian FedNL, C9);
- :func:`linear_rate`: the contraction ratio q of ``e_t ~ q^t e_0``, exp of the OLS slope of
  log e_t on t (q = 1 - eta for damped FedPM, C3; (1 - eta)^K on ridge, C6);
- :func:`superlinearity`: the step ratios e_{t+1}/e_t, which go to 0 exactly when the rate is
  superlinear (C2, C9);
- :func:`loglog_slope`: the slope of log y on log x, for scaling laws (C8's linear speedup);
- :func:`asymptotic_window`: the rounds these fits use: above the float floor and past the
  pre-asymptotic phase (the rule is in its docstring).

Intervals are the usual t-intervals of an OLS slope (independent Gaussian errors about the
line). For the Q-order regression that is exactly the model ``e_{t+1} = C e_t^p exp(noise)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from fedtheory._backend import to_numpy
from fedtheory.errors import FedTheoryError, check
from fedtheory.validate import check_int

EPS = float(np.finfo(np.float64).eps)

__all__ = [
    "OrderFit",
    "RateFit",
    "SlopeFit",
    "SuperlinearTest",
    "asymptotic_window",
    "default_floor",
    "linear_rate",
    "loglog_slope",
    "q_order",
    "superlinearity",
]


# --------------------------------------------------------------------------- results


def _fmt_ci(lo: float, hi: float, spec: str) -> str:
    return f"[{lo:{spec}}, {hi:{spec}}]"


def _fmt_rounds(window: tuple[int, int]) -> str:
    return f"rounds {window[0]}..{window[1] - 1}"


@dataclass(frozen=True)
class OrderFit:
    """Q-order fit ``log e_{t+1} = p log e_t + log_C`` over the rounds ``window``.

    ``window = (start, stop)`` indexes e like a slice (``stop`` excluded); ``n_points`` counts
    the pairs (e_t, e_{t+1}) regressed, ``stop - start - 1``. ``ci`` is the ``level``
    t-interval of p, infinite when ``n_points == 2``; ``residual_std`` is the OLS residual
    standard deviation in log e (nan when ``n_points == 2``: no degree of freedom left).
    """

    p: float
    log_C: float
    ci: tuple[float, float]
    n_points: int
    window: tuple[int, int]
    residual_std: float
    level: float = 0.95

    def __str__(self) -> str:
        return (
            f"order p = {self.p:.2f} {_fmt_ci(*self.ci, '.2f')} ({self.level * 100:g}% CI, "
            f"{self.n_points} pts, {_fmt_rounds(self.window)})"
        )


@dataclass(frozen=True)
class RateFit:
    """Linear-rate fit ``log e_t = log_e0 + t log q`` over the rounds ``window``.

    ``q = exp(slope)``; ``ci`` is the ``level`` t-interval of the slope mapped through exp
    (``(0, inf)`` when ``n_points == 2``). ``log_e0`` is the intercept at round 0 of the whole
    sequence. ``n_points`` counts the e_t in the window. ``ratios`` are the step ratios
    e_{t+1}/e_t inside the window and ``median_ratio`` their median, the summary that stays
    right when the noise compounds from round to round (where the interval does not).
    """

    q: float
    ci: tuple[float, float]
    log_e0: float
    n_points: int
    window: tuple[int, int]
    residual_std: float
    ratios: tuple[float, ...]
    median_ratio: float
    level: float = 0.95

    def __str__(self) -> str:
        return (
            f"ratio q = {self.q:.4g} {_fmt_ci(*self.ci, '.4g')} ({self.level * 100:g}% CI, "
            f"{self.n_points} pts, {_fmt_rounds(self.window)}), "
            f"median step ratio {self.median_ratio:.4g}"
        )


@dataclass(frozen=True)
class SuperlinearTest:
    """Step ratios r_t = e_{t+1}/e_t over the rounds ``window``.

    ``decreasing``: every r_{t+1} <= r_t (1 + 1e-12). ``last_ratio``: the last r_t of the window.
    A superlinear rate has ratios going to 0; :meth:`passed` is the check of CLAIMS C2/C9.
    """

    ratios: tuple[float, ...]
    decreasing: bool
    last_ratio: float
    window: tuple[int, int]

    def passed(self, threshold: float) -> bool:
        """True when the ratios are non-increasing and the last one is below ``threshold``."""
        return self.decreasing and self.last_ratio < threshold

    def __str__(self) -> str:
        r = [f"{x:.2e}" for x in self.ratios]
        shown = ", ".join(r if len(r) <= 8 else [*r[:3], "...", *r[-3:]])
        trend = "decreasing" if self.decreasing else "not decreasing"
        return (
            f"ratios e_(t+1)/e_t [{shown}] ({_fmt_rounds(self.window)}): {trend}, "
            f"last {self.last_ratio:.2e}"
        )


@dataclass(frozen=True)
class SlopeFit:
    """Fit ``log y = slope log x + intercept`` with a ``level`` t-interval on the slope.

    ``predicted`` is the slope the theory predicts, if given; it is printed beside the fit and
    is the default of :meth:`contains`.
    """

    slope: float
    intercept: float
    ci: tuple[float, float]
    n_points: int
    residual_std: float
    predicted: float | None = None
    level: float = 0.95

    def contains(self, predicted: float | None = None, tol: float = 0.0) -> bool:
        """True when ``predicted`` lies in the interval widened by ``tol`` on each side.

        ``predicted`` defaults to the one stored in the fit. The question answered is "does
        the data fail to reject the prediction (up to ``tol``)?"; a criterion on the point
        estimate alone is ``abs(fit.slope - predicted) <= tol``.
        """
        if predicted is None:
            predicted = self.predicted
        if predicted is None:
            raise FedTheoryError("contains() needs a predicted slope: none given, none stored")
        check(tol >= 0, f"tol must be >= 0, got {tol!r}")
        return self.ci[0] - tol <= predicted <= self.ci[1] + tol

    def __str__(self) -> str:
        s = f"slope {self.slope:.2f} {_fmt_ci(*self.ci, '.2f')}"
        if self.predicted is not None:
            s += f", predicted {self.predicted:g}"
        return s + f" ({self.level * 100:g}% CI, {self.n_points} pts)"


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class _Line:
    slope: float
    intercept: float
    half_width: float  # of the slope's t-interval; inf with 2 points
    residual_std: float  # nan with 2 points


def _ols(x: np.ndarray, y: np.ndarray, level: float) -> _Line:
    n = x.size
    dx = x - x.mean()
    sxx = float(dx @ dx)
    slope = float(dx @ (y - y.mean())) / sxx
    intercept = float(y.mean() - slope * x.mean())
    if n == 2:
        return _Line(slope, intercept, math.inf, math.nan)
    resid = y - (intercept + slope * x)
    s = math.sqrt(float(resid @ resid) / (n - 2))
    half = float(stats.t.ppf(0.5 + level / 2, n - 2)) * s / math.sqrt(sxx)
    return _Line(slope, intercept, half, s)


def _as_errors(e: Any, name: str = "e") -> np.ndarray:
    arr = np.asarray(to_numpy(e), dtype=np.float64)
    check(arr.ndim == 1, f"{name} must be a 1-D array, got shape {arr.shape}")
    return arr


def _check_level(level: float) -> None:
    check(0 < level < 1, f"level must be in (0, 1), got {level!r}")


def default_floor(scale: float = 1.0) -> float:
    """The float floor of docs/claims.md: ``1e3 * eps_float64 * max(1, scale)``, scale =
    ||theta*||."""
    check(math.isfinite(scale) and scale >= 0, f"scale must be finite and >= 0, got {scale!r}")
    return 1e3 * EPS * max(1.0, scale)


def asymptotic_window(
    e: Any,
    *,
    floor: float | None = None,
    scale: float = 1.0,
    min_points: int = 3,
    tol: float = 0.1,
) -> slice:
    """The rounds ``slice(start, stop)`` of ``e`` on which a rate is measured.

    End (float floor): ``stop`` is the first round whose e_t is at or below ``floor``, or is
    non-finite or non-positive; that round and everything after it are dropped, even if later
    values rise again. ``floor`` defaults to :func:`default_floor` of ``scale`` (= ||theta*||).

    Start (pre-asymptotic phase): the window starts as the last ``min_points`` rounds before
    ``stop`` and grows backwards one round at a time while the new pair (e_s, e_{s+1})

    1. contracts, e_{s+1} < e_s, and
    2. obeys the Q-order law fitted to the pairs already in the window:
       ``|log e_{s+1} - (p log e_s + log C)| <= tol * sqrt(1 + h_s)``, with h_s the pair's
       leverage (the usual widening of a prediction interval when extrapolating).

    Growth stops at the first pair that fails, so the window is the longest tail of the
    sequence on which every earlier point is predicted by the law of the later ones to within
    a factor exp(tol) (tol = 0.1: 10 %). A linear tail is the case p = 1, so the same rule
    serves :func:`linear_rate`. Asymptotic pairs deviate from the law by O(e_t) for smooth
    problems; a plateau, a damped phase or a transient increase deviates by factors, and
    multiplicative noise of standard deviation sigma needs tol >~ 5 sigma to be kept.

    Raises :class:`FedTheoryError` when ``e`` is not 1-D or fewer than ``min_points`` rounds
    lie above the floor.
    """
    arr = _as_errors(e)
    check_int(min_points, "min_points", 3, note=" (two pairs for the order fit)")
    check(math.isfinite(tol) and tol > 0, f"tol must be finite and > 0, got {tol!r}")
    if floor is None:
        floor = default_floor(scale)
    check(math.isfinite(floor) and floor >= 0, f"floor must be finite and >= 0, got {floor!r}")

    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(arr) & (arr > floor))
    stop = int(np.argmax(bad)) if bad.any() else arr.size
    if stop < min_points:
        where = (
            f"round {stop} has e = {float(arr[stop])!r}" if stop < arr.size else "end of sequence"
        )
        raise FedTheoryError(
            f"need >= {min_points} points above the floor {floor:.3g}, found {stop} "
            f"(rounds 0..{stop - 1}; {where})"
        )

    loge = np.log(arr[:stop])
    x, y = loge[:-1], loge[1:]  # pair i is (log e_i, log e_{i+1})
    start = stop - min_points
    while start > 0:
        s = start - 1
        if not y[s] < x[s]:
            break
        xw, yw = x[start : stop - 1], y[start : stop - 1]
        dx = xw - xw.mean()
        sxx = float(dx @ dx)
        if sxx == 0.0:
            break
        p = float(dx @ (yw - yw.mean())) / sxx
        log_c = float(yw.mean()) - p * float(xw.mean())
        h = 1.0 / xw.size + (x[s] - xw.mean()) ** 2 / sxx
        if abs(y[s] - (p * x[s] + log_c)) > tol * math.sqrt(1.0 + h):
            break
        start = s
    return slice(start, stop)


def _resolve_window(
    arr: np.ndarray, window: slice | tuple[int, int] | None, window_kw: dict[str, Any]
) -> tuple[int, int]:
    if window is None:
        w = asymptotic_window(arr, **window_kw)
        return w.start, w.stop
    if window_kw:
        raise FedTheoryError(
            f"give either window or window options, not both: got window={window!r} "
            f"and {sorted(window_kw)}"
        )
    if isinstance(window, tuple):
        check(len(window) == 2, f"window must be (start, stop), got {window!r}")
        window = slice(*window)
    check(isinstance(window, slice), f"window must be a slice or (start, stop), got {window!r}")
    start, stop, step = window.indices(arr.size)
    check(step == 1, f"window must have step 1, got {window!r}")
    stop = max(start, stop)
    seg = arr[start:stop]
    ok = np.isfinite(seg) & (seg > 0)
    if not ok.all():
        i = start + int(np.argmin(ok))
        raise FedTheoryError(
            f"errors in the window (rounds {start}..{stop - 1}) must be finite and > 0, "
            f"got e[{i}] = {float(arr[i])!r}"
        )
    return start, stop


def _need(found: int, needed: int, what: str, start: int, stop: int) -> None:
    if found < needed:
        raise FedTheoryError(
            f"{what} needs >= {needed} points in the window, found {found} "
            f"(rounds {start}..{stop - 1})"
        )


# --------------------------------------------------------------------------- fits


def q_order(
    e: Any,
    *,
    window: slice | tuple[int, int] | None = None,
    level: float = 0.95,
    **window_kw: Any,
) -> OrderFit:
    """Q-order p and constant C of ``e_{t+1} = C e_t^p`` by OLS of log e_{t+1} on log e_t.

    ``window`` (a slice or ``(start, stop)`` of rounds) is used as given; by default it is
    :func:`asymptotic_window` of ``e`` with ``window_kw`` (floor, scale, min_points, tol).
    The interval is the ``level`` t-interval of the slope, infinite with exactly 2 pairs.
    Refuses a window with fewer than 3 rounds (2 pairs), non-positive or non-finite errors in
    it, or log e_t constant over its pairs (no slope to fit).
    """
    arr = _as_errors(e)
    _check_level(level)
    start, stop = _resolve_window(arr, window, window_kw)
    _need(stop - start, 3, "q_order (2 pairs e_t, e_t+1)", start, stop)
    loge = np.log(arr[start:stop])
    x, y = loge[:-1], loge[1:]
    if np.ptp(x) == 0:
        raise FedTheoryError(
            f"log e_t is constant ({x[0]:.6g}) over rounds {start}..{stop - 2}: "
            "the order is undefined"
        )
    line = _ols(x, y, level)
    return OrderFit(
        p=line.slope,
        log_C=line.intercept,
        ci=(line.slope - line.half_width, line.slope + line.half_width),
        n_points=x.size,
        window=(start, stop),
        residual_std=line.residual_std,
        level=level,
    )


def linear_rate(
    e: Any,
    *,
    window: slice | tuple[int, int] | None = None,
    level: float = 0.95,
    **window_kw: Any,
) -> RateFit:
    """Contraction ratio q of ``e_t = q^t e_0`` by OLS of log e_t on t, and the step ratios.

    Window as in :func:`q_order`. ``q = exp(slope)`` with the slope's ``level`` t-interval
    mapped through exp (``(0, inf)`` with 2 points). The interval assumes independent errors
    about the line (measurement noise); when noise compounds across rounds, read
    ``median_ratio``. Refuses a window with fewer than 2 rounds.
    """
    arr = _as_errors(e)
    _check_level(level)
    start, stop = _resolve_window(arr, window, window_kw)
    _need(stop - start, 2, "linear_rate", start, stop)
    seg = arr[start:stop]
    t = np.arange(start, stop, dtype=np.float64)
    line = _ols(t, np.log(seg), level)
    ratios = seg[1:] / seg[:-1]
    return RateFit(
        q=math.exp(line.slope),
        ci=(math.exp(line.slope - line.half_width), math.exp(line.slope + line.half_width)),
        log_e0=line.intercept,
        n_points=seg.size,
        window=(start, stop),
        residual_std=line.residual_std,
        ratios=tuple(float(r) for r in ratios),
        median_ratio=float(np.median(ratios)),
        level=level,
    )


def superlinearity(
    e: Any,
    *,
    window: slice | tuple[int, int] | None = None,
    **window_kw: Any,
) -> SuperlinearTest:
    """Step ratios r_t = e_{t+1}/e_t over the window, and whether they fall towards 0.

    Window as in :func:`q_order`. ``decreasing`` allows a relative tolerance of 1e-12 between
    consecutive ratios, so a linear sequence (constant ratios) is non-increasing and fails
    only through ``last_ratio``. Refuses a window with fewer than 3 rounds (2 ratios).
    """
    arr = _as_errors(e)
    start, stop = _resolve_window(arr, window, window_kw)
    _need(stop - start, 3, "superlinearity (2 ratios)", start, stop)
    seg = arr[start:stop]
    r = seg[1:] / seg[:-1]
    decreasing = bool(np.all(r[1:] <= r[:-1] * (1 + 1e-12)))
    return SuperlinearTest(
        ratios=tuple(float(v) for v in r),
        decreasing=decreasing,
        last_ratio=float(r[-1]),
        window=(start, stop),
    )


def loglog_slope(
    x: Any,
    y: Any,
    *,
    level: float = 0.95,
    predicted: float | None = None,
) -> SlopeFit:
    """Slope s of ``y = a x^s`` by OLS of log y on log x, with its ``level`` t-interval.

    ``x`` and ``y`` are 1-D, of one length >= 2, finite and > 0; x must take at least two
    values. With 2 points the interval is infinite. ``predicted`` is stored for printing and
    for :meth:`SlopeFit.contains`.
    """
    xa, ya = _as_errors(x, "x"), _as_errors(y, "y")
    _check_level(level)
    check(xa.size == ya.size, f"x and y must have one length, got {xa.size} and {ya.size}")
    check(xa.size >= 2, f"loglog_slope needs >= 2 points, found {xa.size}")
    for name, a in (("x", xa), ("y", ya)):
        ok = np.isfinite(a) & (a > 0)
        if not ok.all():
            i = int(np.argmin(ok))
            raise FedTheoryError(
                f"{name} must be finite and > 0, got {name}[{i}] = {float(a[i])!r}"
            )
    lx = np.log(xa)
    check(np.ptp(lx) > 0, f"x must take at least two values, got all x = {float(xa[0])!r}")
    line = _ols(lx, np.log(ya), level)
    return SlopeFit(
        slope=line.slope,
        intercept=line.intercept,
        ci=(line.slope - line.half_width, line.slope + line.half_width),
        n_points=xa.size,
        residual_std=line.residual_std,
        predicted=None if predicted is None else float(predicted),
        level=level,
    )
