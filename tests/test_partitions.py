"""Partitions: every sample to exactly one client, deterministic, and the promised label skew."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.tasks.partitions import (
    PARTITIONS,
    dirichlet_partition,
    iid_partition,
    partition,
    shard_partition,
)


def balanced_labels(n: int, num_classes: int = 10, seed: int = 0) -> np.ndarray:
    """Labels with (almost) equal class counts in random order, like MNIST."""
    return np.random.default_rng(seed).permutation(np.arange(n) % num_classes)


def assert_exact_cover(parts: list[np.ndarray], n: int, num_clients: int) -> None:
    assert len(parts) == num_clients
    for p in parts:
        assert p.dtype == np.int64 and p.ndim == 1
        assert np.all(np.diff(p) > 0), "indices sorted and unique within a client"
    merged = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    assert len(merged) == n, "no sample dropped or duplicated"
    assert np.array_equal(np.sort(merged), np.arange(n))


def labels_per_client(parts: list[np.ndarray], labels: np.ndarray) -> list[int]:
    return [len(np.unique(labels[p])) for p in parts]


# ---------------------------------------------------------------- exact cover, all schemes


@pytest.mark.parametrize(
    ("n", "num_clients", "seed"),
    [(60, 1, 0), (1000, 7, 1), (1347, 5, 2), (6000, 50, 3), (6001, 64, 4), (10, 13, 5)],
)
def test_iid_exact_cover_and_balanced_sizes(n: int, num_clients: int, seed: int) -> None:
    parts = iid_partition(n, num_clients, seed)
    assert_exact_cover(parts, n, num_clients)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(
    ("n", "num_clients", "s", "seed"),
    [
        (6000, 50, 0.3, 0), (6000, 50, 0.0, 1), (6007, 13, 0.5, 2),
        (1347, 5, 0.8, 3), (999, 64, 0.3, 4), (500, 1, 0.0, 5),
    ],
)
def test_shard_exact_cover(n: int, num_clients: int, s: float, seed: int) -> None:
    parts = shard_partition(balanced_labels(n), num_clients, s, seed)
    assert_exact_cover(parts, n, num_clients)


@pytest.mark.parametrize(
    ("n", "num_clients", "alpha", "seed"), [(6000, 50, 0.5, 0), (1347, 5, 0.1, 1), (3001, 17, 10.0, 2)]
)
def test_dirichlet_exact_cover_and_min_size(n: int, num_clients: int, alpha: float, seed: int) -> None:
    parts = dirichlet_partition(balanced_labels(n), num_clients, alpha, seed, min_size=5)
    assert_exact_cover(parts, n, num_clients)
    assert min(len(p) for p in parts) >= 5


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 400),
    num_clients=st.integers(1, 30),
    seed=st.integers(0, 2**31),
    s=st.floats(0.0, 1.0),
    shards_per_client=st.integers(1, 4),
)
def test_property_exact_cover(n: int, num_clients: int, seed: int, s: float, shards_per_client: int) -> None:
    labels = np.random.default_rng(seed).integers(0, 10, n)
    assert_exact_cover(iid_partition(n, num_clients, seed), n, num_clients)
    assert_exact_cover(shard_partition(labels, num_clients, s, seed, shards_per_client), n, num_clients)
    if n >= num_clients:
        assert_exact_cover(dirichlet_partition(labels, num_clients, 1.0, seed, min_size=0), n, num_clients)


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", sorted(PARTITIONS))
def test_deterministic_from_seed(name: str) -> None:
    labels = balanced_labels(3000)
    params = {"iid": {}, "shard": {"s": 0.3}, "dirichlet": {"alpha": 0.5}}[name]
    a = partition(name, labels, 10, 7, **params)
    b = partition(name, labels, 10, 7, **params)
    c = partition(name, labels, 10, 8, **params)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


# ---------------------------------------------------------------- label skew of the shard scheme


def test_shard_s0_gives_at_most_four_labels_per_client() -> None:
    labels = balanced_labels(60_000)
    parts = shard_partition(labels, 50, 0.0, seed=0)
    counts = labels_per_client(parts, labels)
    assert max(counts) <= 4
    # Shards of 600 samples in label-sorted order mostly lie inside one class (6,000 each).
    assert np.mean(counts) < 3


@pytest.mark.parametrize("num_clients", [7, 20, 64])
def test_shard_s0_skew_for_other_client_counts(num_clients: int) -> None:
    labels = balanced_labels(6_000)
    parts = shard_partition(labels, num_clients, 0.0, seed=1)
    assert_exact_cover(parts, 6_000, num_clients)
    assert max(labels_per_client(parts, labels)) <= 4


def test_shard_more_shards_per_client_more_labels() -> None:
    labels = balanced_labels(60_000)
    parts = shard_partition(labels, 50, 0.0, seed=0, shards_per_client=3)
    assert max(labels_per_client(parts, labels)) <= 6


def test_shard_s1_is_iid() -> None:
    labels = balanced_labels(6_000)
    parts = shard_partition(labels, 10, 1.0, seed=0)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    for p in parts:
        freq = np.bincount(labels[p], minlength=10) / len(p)
        assert np.all(np.abs(freq - 0.1) < 0.04)


def test_shard_paper_sizes_mnist_like() -> None:
    """n = 50, N = 60,000, s = 0.3: 360 IID + 2 shards of 420 = 1,200 per client, as the reference."""
    labels = balanced_labels(60_000)
    parts = shard_partition(labels, 50, 0.3, seed=0)
    assert {len(p) for p in parts} == {1200}


def test_shard_remainders_spread_by_one() -> None:
    labels = balanced_labels(1_003)
    parts = shard_partition(labels, 7, 0.0, seed=0, shards_per_client=1)
    sizes = sorted(len(p) for p in parts)
    assert max(sizes) - min(sizes) <= 1


# ---------------------------------------------------------------- dirichlet skew


def test_dirichlet_smaller_alpha_more_skew() -> None:
    labels = balanced_labels(20_000)
    skewed = labels_per_client(dirichlet_partition(labels, 20, 0.05, seed=0, min_size=1), labels)
    flat = labels_per_client(dirichlet_partition(labels, 20, 100.0, seed=0, min_size=1), labels)
    assert np.mean(skewed) < np.mean(flat)
    assert min(flat) == 10


def test_dirichlet_impossible_min_size_raises() -> None:
    with pytest.raises(ValueError, match="min_size"):
        dirichlet_partition(balanced_labels(100), 20, 0.5, seed=0, min_size=10)


# ---------------------------------------------------------------- dispatcher validation


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("bogus", {}, "Unknown partition"),
        ("iid", {"s": 0.3}, "does not accept"),
        ("shard", {}, "needs parameter 's'"),
        ("shard", {"s": 1.5}, r"\[0, 1\]"),
        ("shard", {"s": 0.5, "alpha": 1.0}, "does not accept"),
        ("shard", {"s": 0.5, "shards_per_client": 0}, "shards_per_client"),
        ("dirichlet", {}, "needs parameter 'alpha'"),
        ("dirichlet", {"alpha": 0.0}, "alpha"),
        ("dirichlet", {"alpha": float("nan")}, "alpha"),
    ],
)
def test_partition_validates(name: str, params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        partition(name, balanced_labels(100), 5, 0, **params)


@pytest.mark.parametrize("num_clients", [0, -1, 2.5, True])
def test_invalid_client_count(num_clients) -> None:
    with pytest.raises(ValueError, match="num_clients"):
        iid_partition(100, num_clients, 0)


def test_labels_must_be_1d_integers() -> None:
    with pytest.raises(ValueError, match="1-D"):
        shard_partition(np.zeros((4, 2), dtype=int), 2, 0.5, 0)
    with pytest.raises(ValueError, match="integers"):
        shard_partition(np.zeros(4), 2, 0.5, 0)


def test_dispatch_matches_direct_calls() -> None:
    labels = balanced_labels(2_000)
    for got, want in [
        (partition("iid", labels, 5, 3), iid_partition(2_000, 5, 3)),
        (partition("shard", labels, 5, 3, s=0.3), shard_partition(labels, 5, 0.3, 3)),
        (partition("dirichlet", labels, 5, 3, alpha=0.5), dirichlet_partition(labels, 5, 0.5, 3)),
    ]:
        assert all(np.array_equal(a, b) for a, b in zip(got, want))
