"""SignGuard's clustering step: MeanShift on the feature matrix, then the largest cluster.

``clustering="fast"`` uses the vectorised mean shift of :mod:`signguard_flwr.rules.meanshift`,
``"sklearn"`` scikit-learn's (the official code's, and what the fast one is tested against).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..meanshift import estimate_bandwidth, mean_shift, sklearn_estimate_bandwidth, sklearn_mean_shift
from .params import SignGuardParams

__all__ = ["cluster", "largest_cluster", "largest_cluster_filter"]


def cluster(features: np.ndarray, p: SignGuardParams) -> tuple[float, np.ndarray, str | None]:
    """Bandwidth, labels (``-1`` = orphan) and an optional note on what was done instead."""
    samples = None if p.bandwidth_samples == "all" else int(p.bandwidth_samples)
    quantile = float(p.bandwidth_quantile)
    cluster_all = p.orphans == "nearest"
    if p.clustering == "fast":
        bandwidth = estimate_bandwidth(features, quantile=quantile, n_samples=samples)
    else:
        bandwidth = sklearn_estimate_bandwidth(features, quantile=quantile, n_samples=samples)
    if not bandwidth > 0.0:
        # h = 0 when every row has >= K-1 exact duplicates (e.g. all clients have identical
        # features, or n <= 3).  MeanShift cannot run (the reference crashes); the features
        # cannot tell clients apart, so all rows form one cluster.
        return 0.0, np.zeros(len(features), dtype=np.int64), (
            "bandwidth 0 (duplicate sign features): all clustered rows treated as one cluster"
        )
    try:
        if p.clustering == "fast":
            _, labels = mean_shift(features, bandwidth, cluster_all=cluster_all)
        else:
            _, labels = sklearn_mean_shift(features, bandwidth, cluster_all=cluster_all)
    except (ValueError, FloatingPointError) as exc:
        return bandwidth, np.full(len(features), -1, dtype=np.int64), f"clustering failed ({exc})"
    return bandwidth, labels, None


def largest_cluster(labels: np.ndarray, counting: str) -> int | None:
    """Label of the largest non-orphan cluster (ties: the lowest label = strongest mode)."""
    if counting == "contiguous":
        # The reference counts labels 0 .. n_cluster-1 only, n_cluster = number of distinct
        # non-orphan labels; with non-contiguous labels it can pick an empty cluster.
        n_cluster = len(set(labels.tolist()) - {-1})
        if n_cluster == 0:
            return None
        counts = [int((labels == lab).sum()) for lab in range(n_cluster)]
        return int(np.argmax(counts))
    values, counts = np.unique(labels[labels >= 0], return_counts=True)
    if values.size == 0:
        return None
    return int(values[np.argmax(counts)])


def largest_cluster_filter(
    feats: torch.Tensor, valid: torch.Tensor, p: SignGuardParams, notes: list[str]
) -> tuple[torch.Tensor, dict[str, Any]]:
    """``S2``: the valid rows in the largest cluster of ``feats``, and the clustering's info.

    Only the valid rows are clustered; the others get label -1.  What was done instead of a
    normal clustering (bandwidth 0, a failure) is appended to ``notes``.
    """
    n = feats.shape[0]
    labels = np.full(n, -1, dtype=np.int64)
    bandwidth = math.nan
    if valid.any():
        bandwidth, sub_labels, note = cluster(feats[valid].numpy(), p)
        labels[valid.numpy()] = sub_labels
        if note:
            notes.append(note)
    best = largest_cluster(labels, p.label_counting)
    if best is None:
        passed = torch.zeros(n, dtype=torch.bool)
    else:
        passed = torch.from_numpy(labels == best)
    passed &= valid
    info = {
        "features": feats,
        "labels": torch.from_numpy(labels),
        "bandwidth": bandwidth,
        "n_clusters": int(np.unique(labels[labels >= 0]).size),
        "orphans": int((labels[valid.numpy()] == -1).sum()),
        "largest_label": best,
    }
    return passed, info
