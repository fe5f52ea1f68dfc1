"""Client partitions: which rows of a data set each client holds.

A partition is a ``list`` of int64 arrays of row indices, one per client, each sorted ascending,
every row in exactly one client and no client empty (:func:`validate_partition`).

Sources:

- ``contiguous``: the split of FedNL (Safaryan et al., "FedNL: Making Newton-type methods
  applicable to federated learning", ICML 2022): a9a's first 32,560 rows in file order, 80
  clients of 407 rows.
- ``sorted_by_label``: the pathological non-IID split of McMahan et al., "Communication-efficient
  learning of deep networks from decentralized data", AISTATS 2017 (sort by label, then shard).
- ``dirichlet``: label skew with per-class proportions ``Dir(alpha * 1_N)``, Hsu, Qi & Brown,
  "Measuring the effects of non-identical data distribution for federated visual
  classification", 2019; the resampling until every client has ``min_size`` rows follows
  Yurochkin et al., ICML 2019 (and Li et al., "Federated learning on non-IID data silos", 2022).
"""

from __future__ import annotations

import numpy as np

from fedtheory.errors import FedTheoryError, check
from fedtheory.validate import check_min, check_options

KINDS = ("iid", "contiguous", "sorted", "dirichlet")


def _check_counts(n: int, n_clients: int) -> None:
    check_min(n_clients, "n_clients", 1)
    check_min(n, "n", 1)
    check(n_clients <= n, f"more clients than samples: n_clients={n_clients} > n={n}")


def _labels(y: np.ndarray | list) -> np.ndarray:
    y = np.asarray(y)
    check(y.ndim == 1, f"y must be 1-D, got shape {y.shape}")
    return y


def _split(order: np.ndarray, n_clients: int) -> list[np.ndarray]:
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, n_clients)]


def iid(n: int, n_clients: int, *, seed: int) -> list[np.ndarray]:
    """Seeded random permutation of ``range(n)``, cut into ``n_clients`` sizes differing by <= 1."""
    _check_counts(n, n_clients)
    return _split(np.random.default_rng(seed).permutation(n), n_clients)


def contiguous(n: int, n_clients: int) -> list[np.ndarray]:
    """Rows in file order cut by ``np.array_split`` (32560 rows, 80 clients -> 80 x 407)."""
    _check_counts(n, n_clients)
    return _split(np.arange(n), n_clients)


def sorted_by_label(y: np.ndarray, n_clients: int) -> list[np.ndarray]:
    """Stable sort of the rows by label, then contiguous: most clients see one or two labels."""
    y = _labels(y)
    _check_counts(y.size, n_clients)
    return _split(np.argsort(y, kind="stable"), n_clients)


def quantile_bins(y: np.ndarray, k: int = 4) -> np.ndarray:
    """Discrete labels ``0..k-1`` from the ``k``-quantiles of a real target (for ``dirichlet``)."""
    y = _labels(y)
    check_min(k, "k", 1)
    check(y.size >= 1, "y must not be empty")
    edges = np.quantile(y, np.arange(1, k) / k)
    return np.searchsorted(edges, y, side="right").astype(np.int64)


def dirichlet(
    y: np.ndarray,
    n_clients: int,
    *,
    alpha: float,
    seed: int,
    min_size: int = 2,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Label-skewed split: each class's rows are shared out with proportions ``Dir(alpha 1_N)``.

    For each class (each distinct value of ``y``) the class's rows are shuffled and cut by a fresh
    Dirichlet draw; the whole draw is repeated until every client has ``min_size`` rows, at most
    ``max_tries`` times. Small ``alpha`` gives clients few classes; large ``alpha`` tends to IID.
    Real targets should be discretised first, e.g. with :func:`quantile_bins`.
    """
    y = _labels(y)
    n = y.size
    _check_counts(n, n_clients)
    check_min(alpha, "alpha", 0, strict=True)
    check_min(min_size, "min_size", 1)
    check_min(max_tries, "max_tries", 1)
    check(
        n >= n_clients * min_size,
        f"n={n} rows cannot give {n_clients} clients min_size={min_size} rows each",
    )
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(y == c) for c in np.unique(y)]
    for _ in range(max_tries):
        chunks: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for rows in classes:
            rows = rng.permutation(rows)
            p = rng.dirichlet(np.full(n_clients, float(alpha)))
            cuts = (np.cumsum(p)[:-1] * rows.size).astype(np.int64)
            for k, part in enumerate(np.split(rows, cuts)):
                chunks[k].append(part)
        parts = [np.sort(np.concatenate(c)).astype(np.int64) for c in chunks]
        if min(part.size for part in parts) >= min_size:
            return parts
    raise FedTheoryError(
        f"dirichlet: no split with every client >= min_size={min_size} rows after "
        f"max_tries={max_tries} draws with alpha={alpha}; raise alpha or lower min_size"
    )


_OPTIONS = {
    "iid": (),
    "contiguous": (),
    "sorted": (),
    "dirichlet": ("alpha", "min_size", "max_tries"),
}


def make_partition(
    kind: str,
    *,
    n: int,
    y: np.ndarray | None,
    n_clients: int,
    seed: int | None = None,
    **options: float | int,
) -> list[np.ndarray]:
    """Dispatch on ``kind`` in ``("iid", "contiguous", "sorted", "dirichlet")``.

    ``iid`` and ``dirichlet`` need ``seed``; ``dirichlet`` takes ``alpha`` (required),
    ``min_size`` and ``max_tries``; ``sorted`` and ``dirichlet`` need ``y`` of length ``n``.
    """
    check(kind in KINDS, f"unknown partition kind {kind!r}; accepted: {', '.join(KINDS)}")
    check_options(options, _OPTIONS[kind], owner=f"partition {kind!r}", listed=True)
    if kind in ("iid", "dirichlet"):
        check(seed is not None, f"partition {kind!r} needs a seed")
    if kind in ("sorted", "dirichlet"):
        check(y is not None, f"partition {kind!r} needs labels y")
    if y is not None:
        check(len(y) == n, f"y has {len(y)} entries but n={n}")
    if kind == "iid":
        return iid(n, n_clients, seed=seed)
    if kind == "contiguous":
        return contiguous(n, n_clients)
    if kind == "sorted":
        return sorted_by_label(y, n_clients)
    check("alpha" in options, "partition 'dirichlet' needs option alpha (> 0)")
    return dirichlet(y, n_clients, seed=seed, **options)


def validate_partition(parts: list[np.ndarray], n: int) -> None:
    """Raise :class:`FedTheoryError` unless ``parts`` covers ``range(n)`` once, no client empty."""
    check(len(parts) >= 1, "a partition needs at least one client, got none")
    for k, part in enumerate(parts):
        part = np.asarray(part)
        check(part.size > 0, f"client {k} is empty; every client needs at least one row")
        check(
            part.ndim == 1 and np.issubdtype(part.dtype, np.integer),
            f"client {k} must be a 1-D integer index array, got {part.dtype} shape {part.shape}",
        )
        bad = part[(part < 0) | (part >= n)]
        if bad.size:
            raise FedTheoryError(f"client {k} has row index {bad[0]}, outside [0, {n})")
    counts = np.bincount(np.concatenate([np.asarray(p) for p in parts]), minlength=n)
    for rows, what in ((counts > 1, "appears more than once"), (counts == 0, "is in no client")):
        if rows.any():
            raise FedTheoryError(f"row {np.argmax(rows)} {what} (n={n})")
