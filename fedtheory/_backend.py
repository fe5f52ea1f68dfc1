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


def require_gpu(what: str) -> None:
    """Refuse ``what`` (e.g. "--backend cupy") in one clear line where CuPy or a CUDA GPU is
    missing, instead of an ImportError or a CUDA error deep inside a run."""
    from .errors import FedTheoryError

    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # ImportError, or CUDA errors of a machine without a GPU
        raise FedTheoryError(
            f'{what} needs CuPy and a CUDA GPU (pip install ".[gpu]"): '
            f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        ) from None


def is_cupy(x: Any) -> bool:
    return type(x).__module__.startswith("cupy")


def matmul(a: Any, b: Any) -> Any:
    """``a @ b`` on either backend. Float64 CuPy arrays go through :mod:`fedtheory.gpu_blas`
    (cuBLAS called directly, so that the product can be recorded in a CUDA graph); everything
    else through the arrays' own ``matmul``."""
    if is_cupy(a) and is_cupy(b) and a.dtype == b.dtype == np.float64:
        from . import gpu_blas

        return gpu_blas.matmul(a, b)
    return xp_of(a, b).matmul(a, b)


def weighted_sum(w: Any, x: Any) -> Any:
    """sum_i w_i x_i over the leading axis of ``x`` (NumPy: ``tensordot``; CuPy: one
    :func:`matmul`)."""
    if is_cupy(x):
        return matmul(w, x.reshape(x.shape[0], -1)).reshape(x.shape[1:])
    return np.tensordot(w, x, axes=1)


#: Bytes of one block of a stack of matrices that a blocked loop (Hessian EMA, drift metrics)
#: computes at once, per backend: small on the host, where the peak-memory target leaves one
#: copy of the data for temporaries (issue 14) and a 2 MiB block still amortises the Python
#: loop; large on a GPU, where every block costs kernel launches.
HOST_BLOCK_BYTES = 2**21
DEVICE_BLOCK_BYTES = 2**26


def block_bytes(x: Any) -> int:
    """The block size of blocked stack loops for the backend of ``x``."""
    return HOST_BLOCK_BYTES if xp_of(x) is np else DEVICE_BLOCK_BYTES
