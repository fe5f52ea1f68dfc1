"""The project's type names, so that signatures say what they take instead of ``Any``.

- :data:`Array`: a float64 (or index) array of either backend, ``numpy.ndarray`` or
  ``cupy.ndarray``. The backend travels with the arrays (:mod:`fedtheory._backend`), and CuPy is
  optional, so the alias cannot name CuPy's class; it documents the role, and type checkers
  treat it as ``Any``.
- :data:`ArrayModule`: the array module itself, ``numpy`` or ``cupy`` (``xp``).

The protocols live beside what they describe: :class:`fedtheory.oracles.Oracle` (what a method
calls for f_i, g_i, H_i) and :class:`fedtheory.objectives.Objective` (the batched losses).

Paper names (K, A, H, N, S, ...) are kept as the papers write them; pyproject.toml's ruff
configuration says which naming rules are off for that reason.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, TypeAlias

Array: TypeAlias = Any
"""A NumPy or CuPy array (see the module docstring)."""

ArrayModule: TypeAlias = ModuleType
"""``numpy`` or ``cupy``: the module that owns a problem's arrays."""
