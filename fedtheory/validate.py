"""Checks of user-supplied values, and CLI strings turned into values: one place for both.

- Number checks (``check_K``, ``check_eta``, ``check_nonneg``, ``check_unit``, ``check_count``,
  ``check_bool``): each names the bad value and what would be accepted (``K must be an integer
  in 1..100,000 ..., got 0``), as :class:`~fedtheory.errors.FedTheoryError`.
- Key and choice checks (``check_choice``, ``check_keys``): a word from a fixed list, or the
  keys of a dict of options; a renamed option is refused with its new spelling.
- Coercion (``coerce``, ``number_or``): a CLI string (``--param K=3``) parsed to the type of
  the option's default, or to a number where a word is also accepted.

The methods' hyperparameters are checked here (``methods/*.py`` call these in
``__post_init__``); the strings of ``--param KEY=VALUE`` are parsed here by
:func:`fedtheory.methods.make_method`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import FedTheoryError, check

#: local steps per round: K Hessian evaluations and solves per client, so K = 1e9 would run for
#: days without a word; larger K is refused (a local solve to convergence needs ~10-100)
MAX_K = 100_000


# ---- numbers -------------------------------------------------------------------------------
def is_number(x: Any) -> bool:
    """A real number (Python or NumPy), not a bool."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def is_real(x: Any) -> bool:
    """A finite real number (Python or NumPy), not a bool."""
    return is_number(x) and math.isfinite(x)


def check_K(K: Any) -> None:
    check(isinstance(K, (int, np.integer)) and not isinstance(K, bool) and 1 <= K <= MAX_K,
          f"K must be an integer in 1..{MAX_K:,} (each local step is a Hessian solve per "
          f"client), got {K!r}")


def check_count(x: Any, name: str) -> None:
    """An integer >= 1."""
    check(isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= 1,
          f"{name} must be an integer >= 1, got {x!r}")


def check_eta(eta: Any, name: str = "eta") -> None:
    """A finite number > 0 (a step size, or any positive constant)."""
    check(is_number(eta) and math.isfinite(eta) and eta > 0,
          f"{name} must be a finite number > 0, got {eta!r}")


def check_nonneg(x: Any, name: str) -> None:
    check(is_number(x) and math.isfinite(x) and x >= 0,
          f"{name} must be a finite number >= 0, got {x!r}")


def check_unit(x: Any, name: str, *, closed: bool) -> None:
    """A number in [0, 1] (``closed``) or [0, 1) (an EMA weight, a momentum)."""
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x
    ok = ok and (x <= 1 if closed else x < 1)
    check(ok, f"{name} must be a number in [0, 1{']' if closed else ')'}, got {x!r}")


def check_open_unit(x: Any, name: str) -> None:
    """A finite number in the open interval (0, 1)."""
    check(is_real(x) and 0 < x < 1, f"{name} must be a number in (0, 1), got {x!r}")


def check_bool(x: Any, name: str) -> None:
    check(isinstance(x, bool), f"{name} must be True or False, got {x!r}")


# ---- keys and choices ----------------------------------------------------------------------
def check_choice(x: Any, name: str, choices: tuple) -> None:
    check(x in choices, f"{name} must be one of {choices}, got {x!r}")


def check_keys(keys: Any, accepted: Any, *, owner: str,
               renamed: Mapping[str, str] | None = None) -> None:
    """Every key is an accepted option of ``owner`` (e.g. ``method fednl``); a key in
    ``renamed`` (old spelling -> new) is refused with its new spelling."""
    accepted = list(accepted)
    for key in keys:
        if renamed and key in renamed:
            raise FedTheoryError(f"parameter {key!r} of {owner} is now called "
                                 f"{renamed[key]!r}: pass {renamed[key]}=... instead")
        check(key in accepted, f"unknown parameter {key!r} for {owner}; "
                               f"accepted: {', '.join(accepted) or 'none'}")


# ---- strings to values ---------------------------------------------------------------------
def coerce(name: str, text: str, default: Any) -> Any:
    """Parse a CLI value ``text`` to the type of the option's default (a bool, int or float;
    any other default leaves the text as it is)."""
    try:
        if isinstance(default, bool):
            low = text.lower()
            if low not in ("true", "false", "1", "0"):
                raise ValueError
            return low in ("true", "1")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise FedTheoryError(f"parameter {name} must be a {type(default).__name__}, "
                             f"got {text!r}") from None
    return text


def coerce_params(params: Mapping[str, Any] | None, defaults: Mapping[str, Any], *,
                  owner: str, renamed: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Options as given (``params``), checked against ``defaults`` (name -> default value) and
    with every string parsed to its default's type (:func:`coerce`)."""
    params = dict(params or {})
    check_keys(params, defaults, owner=owner, renamed=renamed)
    return {key: coerce(key, value, defaults[key]) if isinstance(value, str) else value
            for key, value in params.items()}


def number_or(value: Any, name: str, words: tuple[str, ...]) -> Any:
    """A CLI string holding a number becomes that number; other values are returned as given."""
    if isinstance(value, str) and value not in words:
        try:
            return float(value)
        except ValueError:
            raise FedTheoryError(f"{name} must be a number or one of {words}, "
                                 f"got {value!r}") from None
    return value
