"""Checks of user-supplied values, and CLI strings turned into values: one place for both.

- Number checks: typed ones refuse a value of the wrong type (a bool, a string, NaN or inf where
  a finite number is expected) and show it with ``repr`` (``check_int``, ``check_count``,
  ``check_seed``, ``check_K``, ``check_eta``, ``check_nonneg``, ``check_unit``,
  ``check_open_unit``, ``check_bool``; ``is_int``, ``is_number``, ``is_real`` are their
  predicates); :func:`check_min` only compares an argument whose type is already known (a
  size, a count) with a bound. Each names the bad value and what would be accepted (``K must
  be an integer in 1..100,000 ..., got 0``), as :class:`~fedtheory.errors.FedTheoryError`.
- Key and choice checks (``check_choice``, ``check_keys``, ``check_table_keys``,
  ``check_options``, ``check_kinds``): a word from a fixed list, the keys of a dict of options
  or of a TOML table (a renamed option is refused with its new spelling), the type of each
  value of a TOML table.
- Coercion (``coerce``, ``coerce_params``, ``number_or``): a CLI string (``--param K=3``)
  parsed to the type of the option's default, or to a number where a word is also accepted.

Each check takes the name (and, where messages differ, the wording) of what it checks, so that
every call site keeps its own message while the test is written once, here. The methods'
hyperparameters are checked here (``methods/*.py`` call these in ``__post_init__``), and so are
the values of problem specs, sweep specs, runs, oracles, partitions and the command line; the
strings of ``--param KEY=VALUE`` are parsed here by :func:`fedtheory.methods.make_method`.

Files are not this module's: output paths (checked before any computation) and atomic writes
are :mod:`fedtheory._io`'s. One module each: this one for values, ``_io`` for files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import numpy as np

from .errors import FedTheoryError, check

#: local steps per round: K Hessian evaluations and solves per client, so K = 1e9 would run for
#: days without a word; larger K is refused (a local solve to convergence needs ~10-100)
MAX_K = 100_000


# ---- numbers -------------------------------------------------------------------------------
def is_int(x: Any) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def is_number(x: Any) -> bool:
    """A real number (Python or NumPy), not a bool."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def is_real(x: Any) -> bool:
    """A finite real number (Python or NumPy), not a bool."""
    return is_number(x) and math.isfinite(x)


def check_int(
    x: Any,
    name: str,
    low: int | None = 1,
    high: int | None = None,
    *,
    span: str | None = None,
    note: str = "",
) -> None:
    """An integer (:func:`is_int`) >= ``low`` and, when given, <= ``high`` (``low`` None: any
    integer). The message: ``{name} must be an integer >= {low}{note}, got {x!r}``, or
    ``... an integer in {low}..{high}{note} ...`` (``span`` replaces ``low..high``)."""
    ok = is_int(x) and (low is None or x >= low) and (high is None or x <= high)
    if high is not None:
        bounds = f" in {span or f'{low}..{high}'}"
    else:
        bounds = "" if low is None else f" >= {low}"
    check(ok, f"{name} must be an integer{bounds}{note}, got {x!r}")


def check_count(x: Any, name: str) -> None:
    """An integer >= 1."""
    check_int(x, name, 1)


def check_seed(seed: Any, name: str = "seed") -> int:
    """A seed: an integer >= 0; returned as a Python int."""
    check_int(seed, name, 0)
    return int(seed)


def check_K(K: Any) -> None:
    check_int(
        K,
        "K",
        1,
        MAX_K,
        span=f"1..{MAX_K:,}",
        note=" (each local step is a Hessian solve per client)",
    )


def check_min(
    x: Any,
    name: str,
    low: float,
    *,
    strict: bool = False,
    note: str = "",
    show: Callable[[Any], str] = str,
) -> None:
    """``x >= low`` (``x > low`` when ``strict``) for an argument whose type is already known
    (no type check): ``{name} must be >= {low}{note}, got {show(x)}``."""
    check(
        x > low if strict else x >= low,
        f"{name} must be {'>' if strict else '>='} {low}{note}, got {show(x)}",
    )


def check_eta(eta: Any, name: str = "eta") -> None:
    """A finite number > 0 (a step size, or any positive constant)."""
    check(is_real(eta) and eta > 0, f"{name} must be a finite number > 0, got {eta!r}")


def check_nonneg(x: Any, name: str) -> None:
    """A finite number >= 0."""
    check(is_real(x) and x >= 0, f"{name} must be a finite number >= 0, got {x!r}")


def check_unit(x: Any, name: str, *, closed: bool) -> None:
    """A number in [0, 1] (``closed``) or [0, 1) (an EMA weight, a momentum)."""
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x
    ok = ok and (x <= 1 if closed else x < 1)
    check(ok, f"{name} must be a number in [0, 1{']' if closed else ')'}, got {x!r}")


def check_open_unit(x: Any, name: str) -> None:
    """A finite number in the open interval (0, 1)."""
    check(is_real(x) and 0 < x < 1, f"{name} must be a number in (0, 1), got {x!r}")


def check_bool(x: Any, name: str, *, toml: bool = False) -> None:
    """True or False (spelled ``true or false`` in the message of a TOML key)."""
    words = "true or false" if toml else "True or False"
    check(isinstance(x, bool), f"{name} must be {words}, got {x!r}")


# ---- keys and choices ----------------------------------------------------------------------
def check_choice(x: Any, name: str, choices: Collection[Any], *, joined: bool = False) -> None:
    """``x`` is one of ``choices``: ``{name} must be one of {choices}, got {x!r}``, the choices
    as their tuple (or list) or, ``joined``, as ``a, b, c``."""
    shown = ", ".join(choices) if joined else choices
    check(x in tuple(choices), f"{name} must be one of {shown}, got {x!r}")


def check_keys(
    keys: Iterable[Any],
    accepted: Iterable[str],
    *,
    owner: str,
    renamed: Mapping[str, str] | None = None,
    what: str = "parameter",
    relation: str = "for",
    at: str = "",
) -> None:
    """Every key is an accepted option of ``owner`` (e.g. ``method fednl``); a key in
    ``renamed`` (old spelling -> new) is refused with its new spelling. The first other key
    is refused as ``{at}unknown {what} {key!r} {relation} {owner}; accepted: a, b``."""
    accepted = list(accepted)
    for key in keys:
        if renamed and key in renamed:
            raise FedTheoryError(
                f"parameter {key!r} of {owner} is now called "
                f"{renamed[key]!r}: pass {renamed[key]}=... instead"
            )
        check(
            key in accepted,
            f"{at}unknown {what} {key!r} {relation} {owner}; "
            f"accepted: {', '.join(accepted) or 'none'}",
        )


def check_table_keys(table: Iterable[Any], accepted: Iterable[str], path: Any, where: str) -> None:
    """The keys of a table (``where``: ``[data]``, ``the top level``) of the TOML file
    ``path``: ``{path}: unknown key 'x' in [data]; accepted: a, b``."""
    check_keys(table, accepted, owner=where, what="key", relation="in", at=f"{path}: ")


def check_options(
    options: Iterable[str], accepted: Collection[str], *, owner: str, listed: bool = False
) -> None:
    """The keyword options of ``owner`` (``oracle 'minibatch'``), every unknown one named at
    once: ``unknown option(s) ['x', 'y'] for {owner}; accepted: a, b`` (``listed``: the
    accepted ones as a list, ``['a', 'b']``)."""
    unknown = sorted(set(options) - set(accepted))
    shown = list(accepted) if listed else ", ".join(accepted)
    check(not unknown, f"unknown option(s) {unknown} for {owner}; accepted: {shown or 'none'}")


def _is_counts(x: Any) -> bool:
    return isinstance(x, list) and bool(x) and all(is_int(v) and v >= 0 for v in x)


#: the kinds of value a TOML key may hold (:func:`check_kinds`): the words a message uses for
#: each, and its test. Numbers are finite, integers >= 0, and true/false is neither.
KINDS: dict[str, Callable[[Any], bool]] = {
    "a string": lambda x: isinstance(x, str),
    "true or false": lambda x: isinstance(x, bool),
    "an integer >= 0": lambda x: is_int(x) and x >= 0,
    "a finite number": is_real,
    "a list of integers >= 0": _is_counts,
}


def check_kinds(table: Mapping[str, Any], kinds: Mapping[str, tuple[str, ...]], where: str) -> None:
    """Each value of ``table`` whose key is in ``kinds`` is of one of its kinds (names of
    :data:`KINDS`): ``{where} {key} must be a string or ..., got {value!r}``."""
    for key, value in table.items():
        allowed = kinds.get(key, ())
        check(
            not allowed or any(KINDS[kind](value) for kind in allowed),
            f"{where} {key} must be {' or '.join(allowed)}, got {value!r}",
        )


# ---- strings to values ---------------------------------------------------------------------
def coerce(
    name: str, text: str, default: Any, *, label: str | None = None, expected: str | None = None
) -> Any:
    """Parse a CLI value ``text`` to the type of the option's default (a bool, int or float;
    any other default leaves the text as it is). A text that does not parse is refused as
    ``{label} must be {expected}, got {text!r}`` (by default ``parameter {name}`` and ``a
    {type}``, e.g. ``a float``)."""
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
        label = f"parameter {name}" if label is None else label
        expected = f"a {type(default).__name__}" if expected is None else expected
        raise FedTheoryError(f"{label} must be {expected}, got {text!r}") from None
    return text


def coerce_params(
    params: Mapping[str, Any] | None,
    defaults: Mapping[str, Any],
    *,
    owner: str,
    renamed: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Options as given (``params``), checked against ``defaults`` (name -> default value) and
    with every string parsed to its default's type (:func:`coerce`)."""
    params = dict(params or {})
    check_keys(params, defaults, owner=owner, renamed=renamed)
    return {
        key: coerce(key, value, defaults[key]) if isinstance(value, str) else value
        for key, value in params.items()
    }


def number_or(value: Any, name: str, words: tuple[str, ...]) -> Any:
    """A CLI string holding a number becomes that number; other values are returned as given."""
    if isinstance(value, str) and value not in words:
        try:
            return float(value)
        except ValueError:
            raise FedTheoryError(
                f"{name} must be a number or one of {words}, got {value!r}"
            ) from None
    return value
