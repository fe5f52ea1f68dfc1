"""BLAS thread pinning: one place that decides how many threads NumPy's BLAS may use.

Measured on the 2-core development machine (README "Threads"): a round is ~300 small BLAS
calls, and with two BLAS threads each call waits for the second thread; ``fedtheory demo`` took
210 s wall with OpenBLAS's default threads and 26 s with one. One thread is therefore the
default of :func:`fedtheory.run`, the CLI, sweeps and claim checks; a result is then also the
same bits whatever the machine's core count (the thread count changes BLAS's summation order).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

from .validate import check_int

#: the default thread count wherever results are computed (see the module docstring)
DEFAULT_THREADS = 1


def check_threads(threads: object) -> int | None:
    """``threads`` as accepted everywhere: an integer >= 1, or None (leave BLAS as it is)."""
    if threads is None:
        return None
    check_int(threads, "threads", 1, note=" or None")
    return int(threads)


@contextlib.contextmanager
def blas_threads(threads: int | None = DEFAULT_THREADS) -> Iterator[None]:
    """Limit NumPy/SciPy's BLAS to ``threads`` threads inside the block (None: no limit)."""
    threads = check_threads(threads)
    if threads is None:
        yield
        return
    with _controller().limit(limits=threads, user_api="blas"):
        yield


@functools.cache
def _controller() -> Any:
    """One threadpoolctl controller for the process: finding the loaded thread pools scans
    every shared library of the process (0.8 ms here, 9 ms on the GPU machine with CuPy
    loaded), once instead of at every run. NumPy's and SciPy's BLAS (the ones limited) are
    loaded before the scan."""
    import scipy.linalg  # noqa: F401  (loads SciPy's BLAS where it bundles its own)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()
