"""The runner: the round loop, participation, metrics and batched seeds.

- :mod:`.loop`: :func:`iterate` (the rounds of a method, one :class:`Step` each) and
  :func:`run` (a :class:`~fedtheory.trace.Trace` of tidy rows, built on ``iterate``);
- :mod:`.participation`: who takes part in each round (seeded S of N, or a schedule);
- :mod:`.metrics`: the per-round metrics and the run's provenance;
- :mod:`.batch`: :func:`run_batch`, many seeds as one batched computation.
"""

from .batch import run_batch
from .loop import Step, iterate, run
from .participation import Participation, read_schedule

__all__ = ["run", "run_batch", "iterate", "Step", "Participation", "read_schedule"]
