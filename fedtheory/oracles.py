"""Oracle models: how a method sees f_i, g_i and H_i (ALGORITHMS.md "Stochastic oracles").

An oracle is a callable ``oracle(problem, theta, clients, *, value, grad, hess, rng)`` returning
an :class:`~fedtheory.objectives.OracleOut`. Its randomness, if any, is drawn from the run's one
seeded NumPy generator on the host, so NumPy and CuPy runs see identical samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import check
from .objectives import OracleOut


@dataclass(frozen=True)
class Exact:
    """The exact oracle (the default)."""

    name = "exact"

    def __call__(self, problem: Any, theta: Any, clients: Any, *, value: bool, grad: bool,
                 hess: bool, rng: Any) -> OracleOut:
        return problem.oracle(theta, clients, value=value, grad=grad, hess=hess)


ORACLE_MODELS: dict[str, type] = {"exact": Exact}


def make_oracle(spec: Any = "exact", **options: Any) -> Any:
    """An oracle from its name (``"exact"``, ...) and options, or an oracle passed through."""
    if callable(spec):
        return spec
    check(spec in ORACLE_MODELS,
          f"unknown oracle {spec!r}; known oracles: {', '.join(ORACLE_MODELS)}")
    return ORACLE_MODELS[spec](**options)
