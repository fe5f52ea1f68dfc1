"""The array backend travels with the arrays.

``xp_of(x)`` returns the module (``numpy`` or ``cupy``) that owns ``x``, found from the array's
type, so NumPy code never imports CuPy and no global switch exists. ``to_numpy`` brings any
array to the host (used only for logged metrics and for writing results).
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np


def xp_of(*arrays: Any) -> ModuleType:
    """The array module of the given arrays: ``cupy`` if any is a CuPy array, else ``numpy``."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            return sys.modules["cupy"]
    return np


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy (or view) of ``x`` on the host."""
    if type(x).__module__.startswith("cupy"):
        return x.get()
    return np.asarray(x)


def is_cupy(x: Any) -> bool:
    return type(x).__module__.startswith("cupy")
