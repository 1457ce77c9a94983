"""Flat-kernel mean shift on a small feature matrix, vectorised over seeds.

SignGuard clusters an ``(n, 3)`` or ``(n, 4)`` matrix of per-client features with
scikit-learn's ``estimate_bandwidth(quantile=0.5, n_samples=...)`` followed by
``MeanShift(bandwidth=h, bin_seeding=True, cluster_all=...)``.  On 50 rows that costs a
fixed ~0.01-0.2 s of Python overhead (one ball-tree query per seed and per iteration), more
than the whole O(n·d) part of the rule at d = 1M.  This module computes the *same* clustering
with a handful of numpy operations on the ``n x n`` distance matrix; the test suite checks
label-for-label equality with scikit-learn on many random feature matrices.

Why both exist: this one is SignGuard's default (``clustering="fast"``) because it is ~100x
faster; scikit-learn's (:func:`sklearn_estimate_bandwidth`, :func:`sklearn_mean_shift`) is what
the official code runs, so it stays as ``clustering="sklearn"`` (the reference preset) and as
the reference the fast one is tested against.

The algorithm (Comaniciu & Meer, "Mean shift: a robust approach toward feature space
analysis", IEEE TPAMI 2002; scikit-learn's variant of it):

1. **Bandwidth.**  Optionally keep the first ``n_samples`` rows of a
   ``RandomState(0)`` permutation.  With ``K = max(1, floor(quantile * m))`` over the ``m``
   kept rows, ``h = (1/m) * sum_i dist(x_i, K-th nearest kept row)``, the row itself counting
   as its first neighbour (distance 0).
2. **Seeds** (bin seeding).  Each row is binned to ``round(x / h)``; one seed per occupied bin
   at ``bin * h``.  If every row has its own bin, the rows themselves are the seeds.
3. **Shift.**  Every seed moves to the mean of the rows within distance ``<= h`` until it
   moves by at most ``1e-3 * h`` or after ``max_iter`` further steps; a seed with no row in
   reach is dropped.  Its *intensity* is the number of rows averaged in its last step.
4. **Prune.**  Modes sorted by (intensity, coordinates) descending; a mode within ``h`` of a
   kept stronger mode is removed.
5. **Label.**  Each row gets its nearest mode; with ``cluster_all=False`` rows farther than
   ``h`` from every mode are orphans (label ``-1``).

Everything runs in float64 on CPU: the inputs are tiny, and exact pairwise differences are
used instead of the Gram-matrix shortcut so that ``<= h`` comparisons are as exact as
scikit-learn's tree queries.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = [
    "estimate_bandwidth",
    "mean_shift",
    "sklearn_estimate_bandwidth",
    "sklearn_mean_shift",
]


def _pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # Direct differences, not |a|^2 + |b|^2 - 2ab: no cancellation, so near-duplicate rows get
    # distance ~0 and the "<= h" tests match scikit-learn's tree queries.
    diff = a[:, None, :] - b[None, :, :]
    return np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))


def estimate_bandwidth(
    features: np.ndarray, *, quantile: float = 0.5, n_samples: int | None = None
) -> float:
    """Mean distance of each row to its K-th nearest row (scikit-learn's estimator).

    ``h = (1/m) * sum_{i<m} ||x_i - x_(K,i)||`` where ``x_(K,i)`` is the K-th nearest of the
    ``m`` kept rows to ``x_i`` counting ``x_i`` itself, and ``K = max(1, floor(quantile*m))``.

    Parameters
    ----------
    features : numpy.ndarray
        ``(n, k)`` feature matrix.
    quantile : float
        Fraction of the kept rows that defines K (0.5 in SignGuard).
    n_samples : int or None
        Keep only the first ``n_samples`` rows of ``RandomState(0).permutation(n)``, exactly as
        ``sklearn.cluster.estimate_bandwidth(..., random_state=0)``; ``None`` keeps all rows.

    Returns
    -------
    float
        The bandwidth; 0.0 when every kept row has at least ``K - 1`` exact duplicates.
    """
    x = np.asarray(features, dtype=np.float64)
    m = x.shape[0]
    if n_samples is not None and n_samples < m:
        # Same subset as scikit-learn's default random_state=0; when n_samples >= m the
        # permutation only reorders rows, which cannot change the mean below.
        x = x[np.random.RandomState(0).permutation(m)[:n_samples]]
        m = x.shape[0]
    k_nn = max(1, int(m * quantile))
    dist = _pairwise_distances(x, x)
    kth = np.partition(dist, k_nn - 1, axis=1)[:, k_nn - 1]
    return float(kth.sum() / m)


def _bin_seeds(x: np.ndarray, bandwidth: float, min_bin_freq: int) -> np.ndarray:
    # "+ 0.0" folds -0.0 into 0.0 so that both land in one bin, as in a tuple-keyed dict.
    bins = np.round(x / bandwidth) + 0.0
    uniq, counts = np.unique(bins, axis=0, return_counts=True)
    uniq = uniq[counts >= min_bin_freq]
    if len(uniq) == len(x):
        # Binning did not merge anything: scikit-learn then seeds at the rows themselves.
        return x.copy()
    return uniq * bandwidth


def mean_shift(
    features: np.ndarray,
    bandwidth: float,
    *,
    cluster_all: bool = False,
    max_iter: int = 300,
    min_bin_freq: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Flat-kernel mean shift with bin seeding, all seeds shifted at once.

    Same result as ``sklearn.cluster.MeanShift(bandwidth, bin_seeding=True,
    cluster_all=cluster_all, max_iter=max_iter, min_bin_freq=min_bin_freq).fit(features)``
    (up to floating-point ties at exactly distance ``h``).

    Parameters
    ----------
    features : numpy.ndarray
        ``(n, k)`` rows to cluster, ``n >= 1``.
    bandwidth : float
        Kernel radius ``h > 0``.
    cluster_all : bool
        ``False``: rows farther than ``h`` from every mode get label ``-1``.
    max_iter : int
        Maximum number of extra shift steps per seed (scikit-learn's ``max_iter``).
    min_bin_freq : int
        Only bins holding at least this many rows become seeds.

    Returns
    -------
    centers : numpy.ndarray
        ``(c, k)`` modes, strongest first.
    labels : numpy.ndarray
        ``(n,)`` int64 index into ``centers``, or ``-1`` for orphans.

    Raises
    ------
    ValueError
        If ``bandwidth <= 0`` or no row is within ``h`` of any seed (as scikit-learn).
    """
    x = np.asarray(features, dtype=np.float64)
    h = float(bandwidth)
    if not h > 0.0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    stop = 1e-3 * h
    means = _bin_seeds(x, h, min_bin_freq)
    intensity = np.zeros(len(means), dtype=np.int64)
    active = np.arange(len(means))
    for step in range(max_iter + 1):
        within = _pairwise_distances(means[active], x) <= h
        count = within.sum(axis=1)
        reach = count > 0
        # A seed with no row in reach is dropped with intensity 0 (it is never a mode).
        intensity[active] = count
        active, within, count = active[reach], within[reach], count[reach]
        if active.size == 0:
            break
        new = (within.astype(np.float64) @ x) / count[:, None]
        moved = np.sqrt(((new - means[active]) ** 2).sum(axis=1))
        means[active] = new
        if step == max_iter:
            break
        active = active[moved > stop]
        if active.size == 0:
            break
    keep = intensity > 0
    if not keep.any():
        raise ValueError(f"no row is within bandwidth={h} of any seed")
    modes, strength = means[keep], intensity[keep]
    # Strongest first; ties broken by coordinates, descending (scikit-learn sorts
    # (intensity, centre) tuples in reverse).
    order = np.lexsort(tuple(modes[:, j] for j in range(modes.shape[1] - 1, -1, -1)) + (strength,))
    modes = modes[order[::-1]]
    near = _pairwise_distances(modes, modes) <= h
    unique = np.ones(len(modes), dtype=bool)
    for i in range(len(modes)):  # sequential: a removed mode cannot remove others
        if unique[i]:
            unique[near[i]] = False
            unique[i] = True
    centers = modes[unique]
    dist = _pairwise_distances(x, centers)
    labels = dist.argmin(axis=1).astype(np.int64)
    if not cluster_all:
        labels[dist[np.arange(len(x)), labels] > h] = -1
    return centers, labels


def sklearn_estimate_bandwidth(
    features: np.ndarray, *, quantile: float = 0.5, n_samples: int | None = None
) -> float:
    """``sklearn.cluster.estimate_bandwidth(features, quantile, n_samples)`` (reference)."""
    from sklearn.cluster import estimate_bandwidth as _sk_estimate

    return float(_sk_estimate(features, quantile=quantile, n_samples=n_samples))


def sklearn_mean_shift(
    features: np.ndarray, bandwidth: float, *, cluster_all: bool = False, max_iter: int = 300
) -> tuple[np.ndarray, np.ndarray]:
    """``sklearn.cluster.MeanShift(bandwidth, bin_seeding=True, cluster_all).fit`` (reference)."""
    from sklearn.cluster import MeanShift

    with warnings.catch_warnings():
        # "Binning data failed ... using data points as seeds" is expected on small n.
        warnings.simplefilter("ignore", UserWarning)
        # np.float64, not float: scikit-learn multiplies its float32 bin grid by the
        # bandwidth, and a NumPy scalar keeps that product in float64 as in the reference.
        model = MeanShift(
            bandwidth=np.float64(bandwidth),
            bin_seeding=True,
            cluster_all=cluster_all,
            max_iter=max_iter,
        ).fit(features)
    return np.asarray(model.cluster_centers_), np.asarray(model.labels_, dtype=np.int64)
