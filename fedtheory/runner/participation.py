"""Who takes part in each round (docs/algorithms.md, "Notation" and "Participation schedules").

``participation`` is None (all N clients every round), an integer S (S of N drawn uniformly
without replacement, each round, from the run's seeded generator; S = N draws nothing), or an
explicit schedule: a list with one entry per round, each a list of client indices (from Python,
or read from a file by :func:`read_schedule`), so that a run can replay another code's draws.
Participants are used in increasing index order (a set, as the seeded draw gives it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FedTheoryError, check
from ..validate import check_int, is_int


class Participation:
    """The participants of every round of one run; :meth:`draw` gives round t's (None: all)."""

    def __init__(self, N: int, participation: Any, rounds: int) -> None:
        self.N = N
        self.schedule: list[np.ndarray | None] | None = None
        if participation is None or is_int(participation):
            S = N if participation is None else participation
            check_int(S, "participation S", 1, N, note=f" (N = {N})")
            self.S: int | None = int(S)
            return
        if isinstance(participation, (str, os.PathLike)):
            participation = read_schedule(participation)
        check(
            isinstance(participation, Sequence) and not isinstance(participation, str),
            f"participation must be None, an integer S or a schedule (a list of client-index "
            f"lists, or a file), got {participation!r}",
        )
        self.S = None
        self.schedule = [_round(N, t, c) for t, c in enumerate(participation, start=1)]
        check(
            rounds <= len(self.schedule),
            f"participation schedule: the run has {rounds} rounds but the schedule only "
            f"{len(self.schedule)}: round {len(self.schedule) + 1} has no entry",
        )

    def draw(self, t: int, rng: np.random.Generator) -> np.ndarray | None:
        """Round t's participants (sorted host indices), or None for all N."""
        if self.schedule is not None:
            return self.schedule[t - 1]
        return None if self.S == self.N else np.sort(rng.choice(self.N, size=self.S, replace=False))

    def size(self, t: int) -> int:
        """How many clients take part in round t."""
        if self.schedule is None:
            return int(self.S)  # type: ignore[arg-type]
        c = self.schedule[t - 1]
        return self.N if c is None else len(c)

    @property
    def full_every_round(self) -> bool:
        if self.schedule is None:
            return self.S == self.N
        return all(c is None for c in self.schedule)

    def describe(self) -> int | str:
        """S, or "schedule" for an explicit schedule (the run's metadata)."""
        return int(self.S) if self.S is not None else "schedule"


def read_schedule(path: str | os.PathLike) -> list[list[int]]:
    """A schedule file: one round per line, client indices (from 0) separated by spaces or
    commas; blank lines and ``#`` comments are skipped."""
    p = Path(path)
    check(p.is_file(), f"participation schedule {str(p)!r} is not a file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FedTheoryError(f"participation schedule {str(p)!r}: cannot read it: {exc}") from None
    out = []
    for line in text.splitlines():
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        tokens = [tok for tok in re.split(r"[,\s]+", body) if tok]
        for tok in tokens:
            check(
                tok.isascii() and tok.isdigit(),
                f"participation schedule {str(p)!r}, round {len(out) + 1}: client index must "
                f"be an integer >= 0, got {tok!r}",
            )
        out.append([int(tok) for tok in tokens])
    check(len(out) >= 1, f"participation schedule {str(p)!r} lists no round")
    return out


def _round(N: int, t: int, clients: Any) -> np.ndarray | None:
    check(
        isinstance(clients, (Sequence, np.ndarray)) and not isinstance(clients, str),
        f"participation schedule, round {t}: expected a list of client indices, got {clients!r}",
    )
    check(len(clients) >= 1, f"participation schedule, round {t} is empty")
    for c in clients:
        check(
            is_int(c) and 0 <= c < N,
            f"participation schedule, round {t}: client index must be in 0..{N - 1}, got {c!r}",
        )
    c = np.sort(np.asarray(clients, dtype=np.int64))
    dup = c[1:][c[1:] == c[:-1]]
    if dup.size:
        raise FedTheoryError(
            f"participation schedule, round {t}: client {int(dup[0])} appears twice"
        )
    return None if c.size == N else c
