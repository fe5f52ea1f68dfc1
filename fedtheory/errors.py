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


def check(condition: bool, message: str) -> None:
    """Raise :class:`FedTheoryError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise FedTheoryError(message)
