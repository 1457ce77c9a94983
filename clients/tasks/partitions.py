"""Partitions of a training set among clients (pure numpy, deterministic from a seed).

Every function returns a list of ``num_clients`` sorted int64 index arrays that are pairwise
disjoint and together cover ``0 .. n_samples-1`` exactly once.  Sorting makes the output a
canonical function of the assignment; clients shuffle their own data when they train.

* :func:`iid_partition` — uniform random split, sizes differ by at most one.
* :func:`shard_partition` — the paper's non-IID scheme: an ``s`` fraction spread IID, the rest
  sorted by label and cut into ``shards_per_client * num_clients`` shards, a few per client.
* :func:`dirichlet_partition` — per-class proportions drawn from Dir(alpha).
* :func:`partition` — dispatch by name with validated parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["PARTITIONS", "iid_partition", "shard_partition", "dirichlet_partition", "partition"]


def _check_clients(num_clients: int, n_samples: int) -> None:
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
        raise ValueError(f"num_clients must be a positive integer, got {num_clients!r}")
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")


def _labels_array(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _finish(parts: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def iid_partition(n_samples: int, num_clients: int, seed: int) -> list[np.ndarray]:
    """Uniform random split of ``range(n_samples)`` into ``num_clients`` parts.

    Remainder rule: with ``n_samples = q * num_clients + r``, the first ``r`` clients get
    ``q + 1`` samples and the others ``q`` (no sample is dropped; the reference drops none
    either at 60,000 / 50).

    Parameters
    ----------
    n_samples : int
        Size of the training set.
    num_clients : int
        Number of parts.
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    list of numpy.ndarray
        Sorted int64 indices per client.
    """
    _check_clients(num_clients, n_samples)
    perm = np.random.default_rng(seed).permutation(n_samples)
    return _finish(np.array_split(perm, num_clients))


def shard_partition(
    labels: Sequence[int] | np.ndarray,
    num_clients: int,
    s: float,
    seed: int,
    shards_per_client: int = 2,
) -> list[np.ndarray]:
    """The SignGuard paper's non-IID partition: ``s`` IID, the rest in label-sorted shards.

    1. A random ``floor(s * N)`` samples form the IID pool, split evenly (sizes differ by at
       most one, as in :func:`iid_partition`).  The reference takes the *first* ``s * N``
       samples in dataset order instead; a random pool gives the same distribution on
       shuffled datasets and stays IID on datasets stored sorted by class.
    2. The remaining samples are sorted by label (ties in random order) and cut into
       ``K = shards_per_client * num_clients`` contiguous shards whose sizes differ by at most
       one (the first ``M mod K`` shards hold one extra sample), so no sample is dropped for
       any ``num_clients``.  The reference hard-codes 100 shards (valid for 50 clients only).
    3. The shards are dealt to clients by a random permutation, ``shards_per_client`` each.

    With ``s = 0`` each client holds ``shards_per_client`` label-sorted shards, i.e. at most
    about ``2 * shards_per_client`` distinct labels; with ``s = 1`` the split is IID.

    Parameters
    ----------
    labels : array-like of int
        ``(N,)`` training labels.
    num_clients : int
    s : float
        IID fraction in ``[0, 1]`` (paper: 0.3 MNIST/FMNIST, 0.8 CIFAR-10).
    seed : int
    shards_per_client : int, default 2

    Returns
    -------
    list of numpy.ndarray
        Sorted int64 indices per client.
    """
    y = _labels_array(labels)
    n = len(y)
    _check_clients(num_clients, n)
    if isinstance(s, bool) or not 0.0 <= float(s) <= 1.0:
        raise ValueError(f"s (partition-s) must be in [0, 1], got {s!r}")
    if isinstance(shards_per_client, bool) or int(shards_per_client) != shards_per_client or shards_per_client < 1:
        raise ValueError(f"shards_per_client must be a positive integer, got {shards_per_client!r}")
    shards_per_client = int(shards_per_client)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_iid = int(np.floor(float(s) * n))
    iid_pool, rest = perm[:n_iid], perm[n_iid:]
    iid_parts = np.array_split(iid_pool, num_clients)
    # `rest` is in random order, so a stable sort by label leaves ties randomly ordered.
    rest = rest[np.argsort(y[rest], kind="stable")]
    shards = np.array_split(rest, shards_per_client * num_clients)
    order = rng.permutation(len(shards))
    parts = []
    for client in range(num_clients):
        own = order[client * shards_per_client : (client + 1) * shards_per_client]
        parts.append(np.concatenate([iid_parts[client], *(shards[k] for k in own)]))
    return _finish(parts)


def dirichlet_partition(
    labels: Sequence[int] | np.ndarray,
    num_clients: int,
    alpha: float,
    seed: int,
    min_size: int = 10,
    max_attempts: int = 1000,
) -> list[np.ndarray]:
    """Label-skewed split with per-class client proportions drawn from Dir(alpha).

    For every class the class's samples (in random order) are cut at the cumulative
    proportions ``p ~ Dir(alpha * 1_n)``.  Draws are repeated until every client holds at least
    ``min_size`` samples.  Smaller ``alpha`` = more skew; ``alpha -> inf`` approaches IID.

    Parameters
    ----------
    labels : array-like of int
        ``(N,)`` training labels.
    num_clients : int
    alpha : float
        Concentration, > 0.
    seed : int
    min_size : int, default 10
        Minimum samples per client; must satisfy ``min_size * num_clients <= N``.
    max_attempts : int, default 1000
        Redraws before giving up with a ValueError.

    Returns
    -------
    list of numpy.ndarray
        Sorted int64 indices per client.
    """
    y = _labels_array(labels)
    n = len(y)
    _check_clients(num_clients, n)
    if isinstance(alpha, bool) or not float(alpha) > 0 or not np.isfinite(float(alpha)):
        raise ValueError(f"alpha (dirichlet-alpha) must be a positive finite number, got {alpha!r}")
    if isinstance(min_size, bool) or int(min_size) != min_size or min_size < 0:
        raise ValueError(f"min_size must be a non-negative integer, got {min_size!r}")
    if min_size * num_clients > n:
        raise ValueError(f"min_size={min_size} x num_clients={num_clients} exceeds the {n} samples")
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    for _ in range(max_attempts):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            props = rng.dirichlet(np.full(num_clients, float(alpha)))
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(np.int64)
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].append(chunk)
        merged = [np.concatenate(p) if p else np.empty(0, dtype=np.int64) for p in parts]
        if min(len(p) for p in merged) >= min_size:
            return _finish(merged)
    raise ValueError(
        f"dirichlet_partition: no draw gave every client >= {min_size} samples in {max_attempts} "
        f"attempts (alpha={alpha}, num_clients={num_clients}, N={n}); raise alpha or lower min_size"
    )


#: Partition names and the keyword parameters each accepts (beyond labels, num_clients, seed).
PARTITIONS: dict[str, frozenset[str]] = {
    "iid": frozenset(),
    "shard": frozenset({"s", "shards_per_client"}),
    "dirichlet": frozenset({"alpha", "min_size", "max_attempts"}),
}


def partition(
    name: str, labels: Sequence[int] | np.ndarray, num_clients: int, seed: int, **params: Any
) -> list[np.ndarray]:
    """Partition by name: ``"iid"``, ``"shard"`` (needs ``s``) or ``"dirichlet"`` (needs ``alpha``).

    Parameters
    ----------
    name : str
        One of :data:`PARTITIONS`.
    labels : array-like of int
        ``(N,)`` training labels (only the length is used for ``"iid"``).
    num_clients : int
    seed : int
    **params
        Parameters of the chosen function; unknown or missing ones raise ValueError.

    Returns
    -------
    list of numpy.ndarray
    """
    if name not in PARTITIONS:
        raise ValueError(f"Unknown partition {name!r}; choose one of {sorted(PARTITIONS)}")
    unknown = set(params) - PARTITIONS[name]
    if unknown:
        raise ValueError(
            f"Partition {name!r} does not accept {sorted(unknown)}; accepted: {sorted(PARTITIONS[name]) or 'none'}"
        )
    if name == "iid":
        return iid_partition(len(_labels_array(labels)), num_clients, seed)
    if name == "shard":
        if "s" not in params:
            raise ValueError("Partition 'shard' needs parameter 's' (IID fraction in [0, 1])")
        return shard_partition(labels, num_clients, seed=seed, **params)
    if "alpha" not in params:
        raise ValueError("Partition 'dirichlet' needs parameter 'alpha' (> 0)")
    return dirichlet_partition(labels, num_clients, seed=seed, **params)
