"""Client partitions: coverage, determinism, skew, and the FedNL split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtheory.errors import FedTheoryError
from fedtheory.partitions import (
    contiguous,
    dirichlet,
    iid,
    make_partition,
    quantile_bins,
    sorted_by_label,
    validate_partition,
)


def _assert_well_formed(parts, n, n_clients):
    assert len(parts) == n_clients
    validate_partition(parts, n)
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)


def _mean_label_entropy(y, parts):
    out = []
    for part in parts:
        q = np.bincount(y[part]) / part.size
        q = q[q > 0]
        out.append(-(q * np.log(q)).sum())
    return float(np.mean(out))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 400),
    frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
    n_classes=st.integers(1, 6),
)
def test_iid_contiguous_sorted_cover_every_sample_once(n, frac, seed, n_classes):
    n_clients = 1 + int(frac * (n - 1))
    y = np.random.default_rng(seed).integers(0, n_classes, n)
    for parts in (
        iid(n, n_clients, seed=seed),
        contiguous(n, n_clients),
        sorted_by_label(y, n_clients),
    ):
        _assert_well_formed(parts, n, n_clients)
        sizes = [p.size for p in parts]
        assert max(sizes) - min(sizes) <= 1


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 400),
    n_clients=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    alpha=st.floats(0.05, 50.0),
    n_classes=st.integers(1, 6),
    min_size=st.integers(1, 3),
)
def test_dirichlet_covers_every_sample_once_or_says_why_not(
    n, n_clients, seed, alpha, n_classes, min_size
):
    y = np.random.default_rng(seed).integers(0, n_classes, n)
    if n_clients * min_size > n:
        with pytest.raises(FedTheoryError, match="min_size|more clients than samples"):
            dirichlet(y, n_clients, alpha=alpha, seed=seed, min_size=min_size)
        return
    try:
        parts = dirichlet(y, n_clients, alpha=alpha, seed=seed, min_size=min_size, max_tries=30)
    except FedTheoryError as exc:  # small alpha: a client may stay too small in every try
        assert f"alpha={alpha}" in str(exc) and f"min_size={min_size}" in str(exc)
        return
    _assert_well_formed(parts, n, n_clients)
    assert min(p.size for p in parts) >= min_size


def test_same_seed_same_partition_different_seed_different():
    y = np.random.default_rng(0).integers(0, 5, 1000)
    for make in (
        lambda s: iid(1000, 10, seed=s),
        lambda s: dirichlet(y, 10, alpha=0.5, seed=s),
    ):
        a, b, c = make(7), make(7), make(8)
        assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
        assert not all(np.array_equal(p, q) for p, q in zip(a, c, strict=True))


def test_contiguous_is_the_fednl_split_80_by_407_in_file_order():
    parts = contiguous(32560, 80)
    assert [p.size for p in parts] == [407] * 80
    assert np.array_equal(np.concatenate(parts), np.arange(32560))
    assert parts[1][0] == 407


def test_sorted_by_label_orders_labels_and_is_stable():
    y = np.random.default_rng(1).integers(0, 3, 300)
    parts = sorted_by_label(y, 7)
    for left, right in zip(parts[:-1], parts[1:], strict=True):
        assert y[left].max() <= y[right].min()
    chunks = np.array_split(np.argsort(y, kind="stable"), 7)
    assert all(np.array_equal(p, np.sort(c)) for p, c in zip(parts, chunks, strict=True))


def test_small_alpha_dirichlet_is_more_label_skewed_than_large_alpha():
    y = np.random.default_rng(0).integers(0, 10, 3000)
    skewed = [_mean_label_entropy(y, dirichlet(y, 10, alpha=0.1, seed=s)) for s in range(5)]
    mixed = [_mean_label_entropy(y, dirichlet(y, 10, alpha=100.0, seed=s)) for s in range(5)]
    assert max(skewed) < min(mixed)
    assert min(mixed) > 0.95 * np.log(10)  # close to IID


def test_dirichlet_gives_up_naming_alpha_and_min_size():
    y = np.zeros(100, dtype=int)  # one class, tiny alpha: almost all rows go to one client
    with pytest.raises(FedTheoryError, match=r"min_size=20.*alpha=0\.01"):
        dirichlet(y, 5, alpha=0.01, seed=0, min_size=20, max_tries=5)


def test_quantile_bins_are_balanced_and_monotone():
    y = np.random.default_rng(0).normal(size=1000)
    b = quantile_bins(y, k=4)
    assert b.dtype == np.int64
    assert np.array_equal(np.bincount(b), [250] * 4)
    order = np.argsort(y)
    assert np.all(np.diff(b[order]) >= 0)


def test_make_partition_dispatches_to_the_named_split():
    y = np.random.default_rng(0).integers(0, 3, 200)
    cases = {
        "iid": (dict(seed=3), iid(200, 5, seed=3)),
        "contiguous": ({}, contiguous(200, 5)),
        "sorted": ({}, sorted_by_label(y, 5)),
        "dirichlet": (dict(seed=3, alpha=0.5), dirichlet(y, 5, alpha=0.5, seed=3)),
    }
    for kind, (kwargs, expected) in cases.items():
        got = make_partition(kind, n=200, y=y, n_clients=5, **kwargs)
        assert all(np.array_equal(p, q) for p, q in zip(got, expected, strict=True))


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(kind="random"), "accepted: iid, contiguous, sorted, dirichlet"),
        (dict(kind="iid", seed=0, alpha=1.0), r"unknown option.*alpha.*accepted"),
        (dict(kind="dirichlet", seed=0, beta=1.0), r"accepted: \['alpha', 'min_size'"),
        (dict(kind="iid"), "needs a seed"),
        (dict(kind="dirichlet", seed=0), "needs option alpha"),
    ],
)
def test_make_partition_rejects_unknown_kinds_and_options(kwargs, pattern):
    with pytest.raises(FedTheoryError, match=pattern):
        make_partition(n=10, y=np.zeros(10), n_clients=2, **kwargs)


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda: iid(10, 0, seed=0), "n_clients must be >= 1, got 0"),
        (lambda: contiguous(5, 6), "more clients than samples: n_clients=6 > n=5"),
        (lambda: sorted_by_label(np.zeros(3), 4), "n_clients=4 > n=3"),
        (lambda: dirichlet(np.zeros(10), 2, alpha=0.0, seed=0), "alpha must be > 0, got 0.0"),
        (lambda: dirichlet(np.zeros(10), 2, alpha=-1, seed=0), "alpha must be > 0, got -1"),
    ],
)
def test_bad_sizes_and_alpha_are_refused_with_their_values(call, pattern):
    with pytest.raises(FedTheoryError, match=pattern):
        call()


@pytest.mark.parametrize(
    "parts, pattern",
    [
        ([np.array([0, 1]), np.array([2])], "row 3 is in no client"),
        ([np.array([0, 1]), np.array([1, 2, 3])], "row 1 appears more than once"),
        ([np.array([0, 1]), np.array([2, 3, 4])], "row index 4, outside"),
        ([np.array([0, 1, 2, 3]), np.array([], dtype=np.int64)], "client 1 is empty"),
        ([np.array([0, 1]), np.array([2.0, 3.0])], "integer index array"),
    ],
)
def test_validate_partition_catches_broken_partitions(parts, pattern):
    with pytest.raises(FedTheoryError, match=pattern):
        validate_partition(parts, 4)
