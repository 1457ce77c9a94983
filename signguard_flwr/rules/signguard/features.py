"""SignGuard's per-client features: sign statistics on sampled coordinates, and the fourth
feature of SignGuard-Sim (cosine similarity) and SignGuard-Dist (far-from-reference flag).

Only the ``n x k`` sampled columns and ``n x n`` or ``n``-sized statistics are formed; the
features end up as a small float64 CPU matrix for the clustering.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .params import SignGuardParams, SignGuardState

__all__ = ["median_value", "sample_columns", "sampled_gram", "sign_fractions", "sign_features", "variant_feature",
           "max_scale"]

# Fixed constants of the method (paper and official code agree; not worth a parameter).
SCALE_EPS = 1e-8  # added to each column maximum in max scaling
_SIM_RANGE = 5.0  # Sim feature = clamp(s, 0, m) / (5 m + 1e-8), i.e. in [0, 0.2]
_DIST_FLAG = 0.2  # Dist feature = 0.2 · 1[t >= 1.1 · median(t)]
_DIST_FACTOR = 1.1


def median_value(values: torch.Tensor, kind: str) -> float:
    """``mid``: numpy's median (mean of the two middle values); ``low``: torch's lower median."""
    if values.numel() == 0:
        return math.nan
    ordered = torch.sort(values).values
    m = ordered.numel()
    if kind == "low" or m % 2 == 1:
        return float(ordered[(m - 1) // 2])
    return float((ordered[m // 2 - 1] + ordered[m // 2]) / 2)


# --------------------------------------------------------------------------------------------
# Sign statistics (all variants).
# --------------------------------------------------------------------------------------------


def sample_columns(
    updates: torch.Tensor, fraction: float, sampling: str, generator: torch.Generator | None
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Return the ``(n, k)`` sampled columns (a contiguous copy) and what was sampled."""
    d = updates.shape[1]
    k = min(d, max(1, int(fraction * d)))
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if sampling == "window":
        # The reference draws the start uniformly in [0, d - k - 1] (torch.randint's exclusive
        # upper bound d - k); the last possible window is never drawn.
        start = int(torch.randint(0, max(d - k, 1), (1,), generator=generator, device=gen_device))
        cols = updates[:, start : start + k].contiguous()
        return cols, {"window": (start, start + k), "coordinates": None, "sample_size": k}
    if k == d:
        return updates, {"window": None, "coordinates": None, "sample_size": k}
    # Uniform k-subset without replacement.  torch.randperm(d) + torch.sort cost ~10 ms and
    # ~180 ms at d = 1M on CPU; numpy's Generator.choice + np.sort take ~1 ms.  The numpy
    # stream is seeded from ``generator`` so runs stay reproducible.  Sorted indices make the
    # column gather a forward sweep over each row (~10x faster than unsorted).
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=gen_device))
    idx = np.sort(np.random.default_rng(seed).choice(d, size=k, replace=False))
    index = torch.from_numpy(idx).to(updates.device)
    # torch.gather with a broadcast (stride-0) index is ~1.5x faster than index_select here.
    cols = torch.gather(updates, 1, index.expand(updates.shape[0], k))
    return cols, {"window": None, "coordinates": torch.from_numpy(idx), "sample_size": k}


def sign_fractions(cols: torch.Tensor, *, owned: bool) -> torch.Tensor:
    """``(n, 3)`` float64 CPU fractions of positive, zero and negative entries per row.

    One ``sign`` pass: ``sum(sign) = #pos - #neg`` and ``sum(|sign|) = #pos + #neg``.  This
    is ~30x faster on CPU than summing boolean masks.  Partial sums of +-1 are exact in
    float32 below 2**24 terms; above that the sums run in float64.
    """
    k = cols.shape[1]
    acc = torch.float64 if k >= 2**24 else None
    # In place when ``cols`` is our own copy (saves a fresh n x k buffer and its page faults);
    # never on a view of the caller's matrix (k = d, or a window that needed no copy).
    sgn = torch.sign(cols, out=cols) if owned else torch.sign(cols)
    diff = sgn.sum(dim=1, dtype=acc).double().cpu()
    nonzero = sgn.abs_().sum(dim=1, dtype=acc).double().cpu()
    pos = (nonzero + diff) / (2 * k)
    neg = (nonzero - diff) / (2 * k)
    zero = (k - nonzero) / k
    return torch.stack([pos, zero, neg], dim=1)


def sign_features(
    work: torch.Tensor, p: SignGuardParams, *, gram: bool = False
) -> tuple[torch.Tensor, dict[str, Any], torch.Tensor | None]:
    """The ``(n, 3)`` sign fractions on the sampled coordinates, what was sampled, and (with
    ``gram=True``, for the hardened filters) the ``n x n`` Gram matrix of the sampled columns,
    taken before the sign pass overwrites them."""
    cols, where = sample_columns(work, p.sample_fraction, p.sampling, p.generator)
    owned = cols.untyped_storage().data_ptr() != work.untyped_storage().data_ptr()
    products = sampled_gram(cols) if gram else None
    return sign_fractions(cols, owned=owned), where, products


def sampled_gram(cols: torch.Tensor) -> torch.Tensor:
    """``cols @ cols.T`` as float64 on the CPU.

    Products in the input's precision: no difference of large terms is formed (the cosines
    need only inner products and norms), so float32 is accurate to ~1e-6 here, and 10-30x
    faster than accumulating in float64.
    """
    return (cols @ cols.T).double().cpu()


def max_scale(feats: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Divide the three sign columns by their maximum over the valid rows (+1e-8).

    The Sim/Dist column, if any, is left alone: it has its own fixed range.
    """
    top = feats[valid, :3].amax(dim=0) if valid.any() else torch.zeros(3).double()
    feats[:, :3] = feats[:, :3] / (top + SCALE_EPS)
    return feats


# --------------------------------------------------------------------------------------------
# The fourth feature of Sim / Dist (vectorised: one Gram matrix or one matrix-vector product).
# --------------------------------------------------------------------------------------------


def variant_feature(
    work: torch.Tensor,
    norms: torch.Tensor,
    valid: torch.Tensor,
    p: SignGuardParams,
    state: SignGuardState | None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The ``(n,)`` Sim or Dist feature column and its diagnostics (``phase``, raw scores)."""
    if p.variant == "signguard_sim":
        s, phase = _similarity(work, norms, valid, p, state)
        col, m = _sim_feature(s, valid, p.feature_median)
        return col, {"phase": phase, "similarity": s, "similarity_median": m}
    t, phase = _distance(work, norms, valid, p, state)
    col, m = _dist_feature(t, valid, p.feature_median)
    return col, {"phase": phase, "distance": t, "distance_median": m}


def _reference_vector(
    work: torch.Tensor, valid: torch.Tensor, p: SignGuardParams, state: SignGuardState
) -> torch.Tensor:
    if p.reference == "previous":
        prev = state.previous
        return prev.to(device=work.device, dtype=work.dtype)
    rows = work if bool(valid.all()) else work[valid.to(work.device)]
    m = rows.shape[0]
    # Coordinate-wise midpoint median of the current round: two k-th order statistics.
    lo = rows.kthvalue((m + 1) // 2, dim=0).values
    if m % 2 == 1:
        return lo
    hi = rows.kthvalue(m // 2 + 1, dim=0).values
    return (lo + hi) / 2


def _phase(p: SignGuardParams, state: SignGuardState | None, d: int) -> str:
    if state is None or state.calls < p.warmup_rounds:
        return "warmup"
    if p.reference == "pairwise":
        return "pairwise"
    if p.reference == "previous":
        if state.previous is None:
            return "warmup"
        if state.previous.numel() != d:
            raise ValueError(
                f"state.previous has {state.previous.numel()} coordinates but updates have "
                f"d={d}; call state.reset() when the model changes"
            )
    return p.reference


def _similarity(
    work: torch.Tensor, norms: torch.Tensor, valid: torch.Tensor, p: SignGuardParams, state: Any
) -> tuple[torch.Tensor, str]:
    """Raw cosine score s_i (CPU float64) and the phase that produced it."""
    phase = _phase(p, state, work.shape[1])
    r = norms.to(work.device, work.dtype)
    if phase in ("warmup", "pairwise"):
        # s_i = median_j C_ij over the pairwise cosine matrix with a zero diagonal (the
        # reference's self term enters the median as 0).  One Gram matrix, O(n^2 d).
        gram = (work @ work.T).double().cpu()
        denom = torch.outer(r, r).double().cpu()
        cos = torch.where(denom > 0, gram / denom, torch.zeros_like(gram))
        cos = torch.nan_to_num(cos, nan=0.0, posinf=0.0, neginf=0.0)
        cos.fill_diagonal_(0.0)
        kind = p.feature_median
        s = torch.tensor([median_value(row[valid], kind) for row in cos], dtype=torch.float64)
        return s, phase
    ref = _reference_vector(work, valid, p, state)
    dots = (work @ ref).double().cpu()
    denom = r.double().cpu() * float(torch.linalg.vector_norm(ref.double()))
    s = torch.where(denom > 0, dots / denom, torch.zeros_like(dots))
    return torch.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0), phase


def _distance(
    work: torch.Tensor, norms: torch.Tensor, valid: torch.Tensor, p: SignGuardParams, state: Any
) -> tuple[torch.Tensor, str]:
    """Raw distance score t_i (CPU float64) and the phase that produced it."""
    phase = _phase(p, state, work.shape[1])
    sq = norms.double().cpu() ** 2
    if phase in ("warmup", "pairwise"):
        # D_ij = ||g_i - g_j|| from the Gram matrix; t_i = sum of the floor(n/2) smallest D_ij
        # of row i, the self-distance 0 included (a Krum-like score).  O(n^2 d) once.
        gram = (work @ work.T).double().cpu()
        dist = (sq[:, None] + sq[None, :] - 2 * gram).clamp_min(0).sqrt()
        dist = torch.nan_to_num(dist, nan=math.inf, posinf=math.inf)
        dist.fill_diagonal_(0.0)
        sub = dist[valid][:, valid]
        half = sub.shape[0] // 2
        t = torch.full((len(valid),), math.inf, dtype=torch.float64)
        t[valid] = torch.sort(sub, dim=1).values[:, :half].sum(dim=1)
        return t, phase
    ref = _reference_vector(work, valid, p, state)
    dots = (work @ ref).double().cpu()
    ref_sq = float(torch.linalg.vector_norm(ref.double())) ** 2
    t = (sq + ref_sq - 2 * dots).clamp_min(0).sqrt()
    return torch.nan_to_num(t, nan=math.inf, posinf=math.inf), phase


def _sim_feature(s: torch.Tensor, valid: torch.Tensor, kind: str) -> tuple[torch.Tensor, float]:
    m = median_value(s[valid], kind)
    if not m > 0:
        # clamp(s, 0, m) with m <= 0 is a constant column: no information for the clustering.
        return torch.zeros_like(s), m
    return s.clamp(0.0, m) / (_SIM_RANGE * m + SCALE_EPS), m


def _dist_feature(t: torch.Tensor, valid: torch.Tensor, kind: str) -> tuple[torch.Tensor, float]:
    m = median_value(t[valid], kind)
    return _DIST_FLAG * (t >= _DIST_FACTOR * m).double(), m
