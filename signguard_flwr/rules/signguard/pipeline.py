"""SignGuard's steps in order: screen non-finite rows, norm band ``S1``, sign-feature clusters
``S2`` (and, in the hardened preset, the direction and coherence filters ``S3``), selection
``S = S1 ∩ S2 (∩ S3)``, clipped mean.

The output is computed as one matrix-vector product ``w @ updates`` with
``w_i = 1[i∈S]·min(1, M2/r_i)/|S|``; the ``n x d`` matrix is read about three times (norms,
sampled columns, product) and never copied or moved to numpy.  Only the ``n x 3`` / ``n x 4``
feature matrix goes to the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..base import AggregationResult
from .clustering import largest_cluster_filter
from .features import max_scale, median_value, sign_features, variant_feature
from .hardening import MIN_COSINE_COORDINATES, hardening_filters
from .params import SignGuardParams, SignGuardState

__all__ = ["aggregate"]


@dataclass
class _Rows:
    """The matrix the statistics are computed on, and which of its rows may take part."""

    work: torch.Tensor  # ``updates``, or its NaN-zeroed copy under nonfinite="nan_to_zero"
    norms: torch.Tensor  # (n,) float64 CPU
    valid: torch.Tensor  # (n,) bool CPU: rows allowed into every statistic and the selection
    nonfinite: torch.Tensor  # (n,) bool CPU: rows with a NaN/Inf entry


def aggregate(
    updates: torch.Tensor, p: SignGuardParams, state: SignGuardState | None
) -> AggregationResult:
    """Run SignGuard (variant ``p.variant``) on a checked update matrix; see the rules' docs."""
    notes: list[str] = []
    rows = _screen_nonfinite(updates, p)
    norm_median, band, passed_norm = _norm_band(rows, p)
    passed_cluster, info_cluster, extra_info, gram = _sign_clusters(rows, p, state, notes)
    passed_hardening, info_hardening = hardening_filters(rows.work, rows.valid, p, gram=gram,
                                                         reference=passed_norm & passed_cluster)
    selected = _select(passed_norm, passed_cluster & passed_hardening, p, notes)
    clip_norm, factor = _clip_factors(rows, p, selected)
    vector, selected, skipped = _clipped_mean(rows, selected, factor, notes)

    if state is not None:
        # Only now: an exception above leaves the state untouched.
        state.calls += 1
        if not skipped:
            state.previous = vector.detach().clone()

    info = {
        "variant": p.variant,
        "params": p.as_info(),
        **info_cluster,
        **extra_info,
        "norms": rows.norms,
        "norm_median": norm_median,
        "norm_band": band,
        "passed_norm": passed_norm,
        "passed_cluster": passed_cluster,
        "clip_norm": clip_norm,
        "clip_factors": factor,
        "rejected_by_norm": int((~passed_norm).sum()),
        "rejected_by_cluster": int((passed_norm & ~passed_cluster).sum()),
        **({"passed_hardening": passed_hardening, **info_hardening}
           if p.direction_filter or p.coherence_filter else {}),
        "nonfinite": rows.nonfinite,
        "selected_count": int(selected.sum()),
        "fallback": "; ".join(notes) if notes else None,
    }
    return AggregationResult(vector=vector, selected=selected.to(updates.device), info=info)


def _screen_nonfinite(updates: torch.Tensor, p: SignGuardParams) -> _Rows:
    """Norms, and the rows with NaN/Inf entries: found through their norms, so no extra pass
    over the matrix in the normal case."""
    n = updates.shape[0]
    norms = torch.linalg.vector_norm(updates, dim=1).double().cpu()
    nonfinite = torch.zeros(n, dtype=torch.bool)
    suspect = (~torch.isfinite(norms)).nonzero().flatten()
    if suspect.numel():
        # A float32 norm can overflow on finite entries; only NaN/Inf entries count here.
        rows = updates.index_select(0, suspect.to(updates.device))
        nonfinite[suspect] = ~torch.isfinite(rows).all(dim=1).cpu()
    work = updates
    valid = torch.ones(n, dtype=torch.bool)
    if nonfinite.any():
        if p.nonfinite == "reject":
            valid = ~nonfinite
        else:
            # Reference: NaN entries -> 0, +-Inf kept.  Copies the matrix, but only in this
            # case (the strategies already reject non-finite replies).
            work = torch.nan_to_num(updates, nan=0.0, posinf=math.inf, neginf=-math.inf)
            norms = torch.linalg.vector_norm(work, dim=1).double().cpu()
    return _Rows(work=work, norms=norms, valid=valid, nonfinite=nonfinite)


def _norm_band(rows: _Rows, p: SignGuardParams) -> tuple[float, tuple[float, float], torch.Tensor]:
    """``S1 = {i : lower·M1 < r_i < upper·M1}`` with ``M1`` the median norm of the valid rows."""
    norm_median = median_value(rows.norms[rows.valid], p.norm_median)
    band = (p.lower * norm_median, p.upper * norm_median)
    if p.norm_filter:
        passed = rows.valid & (rows.norms > band[0]) & (rows.norms < band[1])
    else:
        passed = rows.valid.clone()
    return norm_median, band, passed


def _sign_clusters(
    rows: _Rows, p: SignGuardParams, state: SignGuardState | None, notes: list[str]
) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any], torch.Tensor | None]:
    """``S2``: the largest MeanShift cluster of the per-client features, the diagnostics of
    the clustering and of the Sim/Dist feature, and (hardened preset) the Gram matrix of the
    sampled columns."""
    info: dict[str, Any] = {
        "features": None,
        "labels": None,
        "bandwidth": None,
        "n_clusters": None,
        "orphans": None,
        "largest_label": None,
        "window": None,
        "coordinates": None,
        "sample_size": None,
    }
    if not p.cluster_filter:
        return rows.valid.clone(), info, {}, None
    # The hardened filters reuse the sampled columns when the sample is large enough for them.
    hardened = p.direction_filter or p.coherence_filter
    wants_gram = hardened and p.sample_fraction * rows.work.shape[1] >= MIN_COSINE_COORDINATES
    feats, where, gram = sign_features(rows.work, p, gram=wants_gram)
    info.update(where)
    extra_info: dict[str, Any] = {}
    if p.has_variant_feature:
        column, extra_info = variant_feature(rows.work, rows.norms, rows.valid, p, state)
        feats = torch.cat([feats, column[:, None]], dim=1)
    if p.scaling == "max":
        feats = max_scale(feats, rows.valid)
    passed, cluster_info = largest_cluster_filter(feats, rows.valid, p, notes)
    info.update(cluster_info)
    return passed, info, extra_info, gram


def _select(
    passed_norm: torch.Tensor, passed_cluster: torch.Tensor, p: SignGuardParams, notes: list[str]
) -> torch.Tensor:
    """``S = S1 ∩ S2``, with a fallback that never yields NaN."""
    selected = passed_norm & passed_cluster
    if not selected.any():
        if p.empty_fallback == "norm_band" and passed_norm.any():
            selected = passed_norm.clone()
            notes.append(f"S1∩S2 empty: used the norm band S1 only ({int(selected.sum())} rows)")
        else:
            notes.append("no row selected: zero update (round skipped)")
    return selected


def _clip_factors(rows: _Rows, p: SignGuardParams, selected: torch.Tensor) -> tuple[float, torch.Tensor]:
    """``M2`` (median norm of the valid rows, or of the selected ones under
    ``clip_reference="selected"``) and the factors ``min(1, M2 / r_i)``."""
    among = selected if p.clip_reference == "selected" and selected.any() else rows.valid
    clip_norm = median_value(rows.norms[among], p.clip_median)
    factor = torch.ones(len(rows.norms), dtype=torch.float64)
    if p.clip and math.isfinite(clip_norm):
        positive = rows.norms > 0
        factor[positive] = (clip_norm / rows.norms[positive]).clamp(max=1.0)
    return clip_norm, factor


def _clipped_mean(
    rows: _Rows, selected: torch.Tensor, factor: torch.Tensor, notes: list[str]
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(1/|S|) Σ_{i∈S} g_i · factor_i``: the vector, the final selection and whether the round
    is skipped (nothing selected, or an aggregate that overflowed to a zero update)."""
    n = len(selected)
    weights = selected.double() * factor
    count = int(selected.sum())
    if count:
        weights /= count
    vector = _weighted_sum(rows.work, weights, dirty=bool(rows.nonfinite.any()))
    skipped = count == 0
    # |v_j| <= sum_i w_i |g_ij| <= sum_i w_i r_i: when that bound is far below the dtype's
    # maximum the output is finite and the O(d) check can be skipped.
    bound = float((weights * rows.norms).nansum()) if count else 0.0
    safe = math.isfinite(bound) and bound < 0.5 * torch.finfo(rows.work.dtype).max
    if not skipped and not safe and not bool(torch.isfinite(vector).all()):
        # Overflow of finite but huge rows (possible only with norm_filter=False or clip=False).
        notes.append("non-finite aggregate: zero update (round skipped)")
        vector = torch.zeros_like(vector)
        selected = torch.zeros(n, dtype=torch.bool)
        skipped = True
    return vector, selected, skipped


def _weighted_sum(work: torch.Tensor, weights: torch.Tensor, *, dirty: bool) -> torch.Tensor:
    """``sum_i w_i · row_i`` as one matrix-vector product (no masked copy of the rows)."""
    if not dirty:
        w = weights.to(device=work.device, dtype=work.dtype)
        n, d = work.shape
        chunks = torch.get_num_threads() if work.device.type == "cpu" else 1
        if chunks < 2 or d < 2**16 or not work.is_contiguous():
            return w @ work
        # On CPU, MKL runs a (1 x n)·(n x d) product on one thread (as slow as a full
        # multi-threaded pass).  A batched product over column blocks (strided views of the
        # same memory, no copy) spreads it over all threads: ~2x faster on 2 cores.
        m = d // chunks
        out = torch.empty(d, dtype=work.dtype, device=work.device)
        blocks = work[:, : chunks * m].view(n, chunks, m).transpose(0, 1)
        torch.bmm(w.expand(chunks, 1, n), blocks, out=out[: chunks * m].view(chunks, 1, m))
        if chunks * m < d:
            torch.mv(work[:, chunks * m :].t(), w, out=out[chunks * m :])
        return out
    # A NaN/Inf entry in a row of weight 0 would still poison the product (0 · Inf = NaN):
    # only here gather the rows that actually enter the sum.
    keep = (weights != 0).nonzero().flatten()
    if keep.numel() == 0:
        return torch.zeros(work.shape[1], dtype=work.dtype, device=work.device)
    rows = work.index_select(0, keep.to(work.device))
    return weights[keep].to(device=work.device, dtype=work.dtype) @ rows
