"""Notebook sizes: one environment variable sets how much work every notebook does.

The notebooks in ``notebooks/`` run at one of three sizes, chosen for all of them at once by
``FEDTHEORY_SIZE``:

- ``small``: the CI size, seconds per notebook (the test run executes the notebooks at it
  through nbmake);
- ``medium``: the whole set of notebooks in about 10 minutes on 2 cores, one after another,
  with every figure and printout of the full size (fewer seeds, rounds or grid points);
- ``full``: the sizes the figures and the notebooks' prose are written for.

``FEDTHEORY_SMALL=1`` is kept as an alias for ``FEDTHEORY_SIZE=small`` (``conftest.py`` sets
it for the test run); ``FEDTHEORY_SMALL=0`` or an empty value mean nothing. When both are set,
``FEDTHEORY_SIZE`` wins, so ``FEDTHEORY_SIZE=medium python -m pytest notebooks/`` runs the
medium size. Neither set: ``full``. Any other value of either variable is an error that names
it; there is no silent fallback to another size.

In a notebook::

    from fedtheory.notebook_sizes import by_size, notebook_size

    SIZE = notebook_size()
    ROUNDS = by_size(small=10, medium=20, full=60)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar

from .errors import check
from .validate import check_choice

SIZES = ("small", "medium", "full")
SIZE_VAR = "FEDTHEORY_SIZE"
SMALL_VAR = "FEDTHEORY_SMALL"

T = TypeVar("T")


def notebook_size(environ: Mapping[str, str] | None = None) -> str:
    """The notebook size, ``"small"``, ``"medium"`` or ``"full"``, from ``environ``
    (default ``os.environ``); see the module docstring for the rules."""
    env = os.environ if environ is None else environ
    small = env.get(SMALL_VAR, "").strip()
    check(
        small in ("", "0", "1"),
        f"{SMALL_VAR}={env.get(SMALL_VAR)!r} is not understood: {SMALL_VAR} is 1 (the small "
        f"size) or 0; or set {SIZE_VAR} to one of {', '.join(SIZES)}",
    )
    size = env.get(SIZE_VAR, "").strip().lower()
    if size:
        check(
            size in SIZES,
            f"{SIZE_VAR}={env.get(SIZE_VAR)!r} is not a notebook size; use one of "
            f"{', '.join(SIZES)}",
        )
        return size
    return "small" if small == "1" else "full"


def by_size(*, small: T, medium: T, full: T, size: str | None = None) -> T:
    """The value for ``size`` (default: :func:`notebook_size` of the environment)."""
    size = notebook_size() if size is None else size
    check_choice(size, "size", SIZES, joined=True)
    return {"small": small, "medium": medium, "full": full}[size]
