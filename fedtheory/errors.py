"""Errors the suite raises on bad input.

Every error a user can trigger is a :class:`FedTheoryError` whose message names the bad value
and what would be accepted (``K must be >= 1, got 0``). The CLI turns it into one line on
stderr and exit code 2.
"""

from __future__ import annotations


class FedTheoryError(ValueError):
    """Bad input or an unusable configuration; the message is meant for the user."""


class FactorizationError(FedTheoryError):
    """A matrix that must be symmetric positive definite is not: its Cholesky factorisation
    failed."""


class WriteError(FedTheoryError):
    """A result file could not be written (a full disk, a folder made read-only mid-run): the
    message names the path and the OS error. A sweep stops on it and says how many runs are
    saved; running the same command again resumes."""


class DaskStartError(FedTheoryError):
    """A Dask cluster could not be started or reached (a worker process that died while
    starting, a nanny that timed out, no scheduler at the address): the message says which."""


class ConditioningWarning(UserWarning):
    """The global Hessian at theta* is so ill-conditioned (kappa = L / mu above
    :data:`fedtheory.problem.KAPPA_WARN`) that relative errors below about kappa * eps
    (eps = 2.2e-16, float64) are rounding, not convergence. The message gives the estimate."""


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation this machine cannot make: a MemoryError, or NumPy's
    ValueError for an array larger than the address space (``array is too big``)."""
    text = str(exc)
    return isinstance(exc, MemoryError) or (
        isinstance(exc, ValueError)
        and (text.startswith("array is too big") or "Maximum allowed dimension" in text)
    )


def check(condition: bool, message: str) -> None:
    """Raise :class:`FedTheoryError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise FedTheoryError(message)
