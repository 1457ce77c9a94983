"""Filters of the hardened preset: direction and coherence, from one ``n x n`` cosine matrix.

SignGuard's norm band and sign statistics can be satisfied by an attacker that knows them: an
update of honest norm whose fractions of positive, zero and negative coordinates are set to the
honest ones may point against the honest mean (``clients.attacks`` ``sign_mimic``,
``signguard_tailored``).  Two statistics of the pairwise cosines ``C_ij`` need no reference
vector the attacker could steer:

direction  ``s_i = median_{j≠i} C_ij``.  With an honest majority the median runs over honest
           rows for every client, so a row pointing against the honest ones gets a low ``s_i``
           however the colluders place themselves.  Rows far *below* the others are dropped.
coherence  ``t_i = max_{j≠i} C_ij``, judged on Fisher's z scale (``atanh``).  Honest updates of
           one round are nearly orthogonal late in training (pairwise cosines of a few
           hundredths); colluders that send the same, or nearly the same, crafted vector are far
           *above* that, and on the z scale an exact duplicate is infinitely far even when the
           honest rows are strongly aligned.  Rows far above are dropped,
           which forces colluders to be as diverse as honest clients, and with that diversity
           their common push shrinks to what honest clients push the other way.

"Far" is judged against the honest majority only: the centre is the median and the spread is
taken from the side the attacker does not occupy (``Q75 - Q50`` below the median for the
direction, ``Q50 - Q25`` above it for the coherence), in units of a normal standard deviation,
times ``hardening_k``.  The direction statistic and its quartiles come from the rows no other
filter rejected (norm band, sign clusters, coherence): identical crafted rows share one value
of ``s``, and counted among the majority they could sit on its quartiles, collapse the spread
and push the threshold above honest rows (measured: LIE at z = 3, chosen by the strength
search, made the filter drop 20 of 40 honest rows of a real MNIST round).  The cosines are estimated on the coordinates sampled for the sign
statistics (a random ``sample_fraction`` of them, unknown to the attacker in advance) when that
sample has at least :data:`MIN_COSINE_COORDINATES` coordinates, so for large models the filters
cost one ``n x k`` Gram matrix of columns already gathered, not another pass over the whole
matrix (see docs/benchmarks.md); smaller models use all coordinates.  The spread is never taken below ``1/sqrt(k)``, the spread of the cosine
between independent random directions in ``k`` sampled dimensions: when every honest statistic is
nearly equal (identical norms, isotropic noise) a quartile gap of almost nothing would otherwise
turn ordinary noise into rejections.  Cost: one ``n x k`` Gram matrix plus ``O(n²)`` work.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .features import sample_columns, sampled_gram
from .params import SignGuardParams

__all__ = ["cosine_matrix", "hardening_filters"]

_NORMAL_IQR_HALF = 0.6745  # Q75 - Q50 of a standard normal
_MIN_ROWS = 5  # below this the quartiles say nothing: the filters let every row pass
# Fewer sampled coordinates than this and the cosines come from all coordinates: sampling noise
# (~1/sqrt(k)) would otherwise hide the few hundredths that separate honest rows from crafted
# ones early in training, and for such small models the full Gram matrix is cheap anyway.
MIN_COSINE_COORDINATES = 1 << 16


def cosine_matrix(gram: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``(m, m)`` float64 cosine similarities of the valid rows from their Gram matrix (zero
    rows: cosine 0)."""
    gram = gram[valid][:, valid]
    norms = gram.diagonal().clamp_min(0.0).sqrt()
    scale = torch.where(norms > 0, 1.0 / norms, torch.zeros_like(norms))
    return gram * scale[:, None] * scale[None, :]


def hardening_filters(
    work: torch.Tensor,
    valid: torch.Tensor,
    p: SignGuardParams,
    *,
    gram: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Rows that pass the direction and coherence filters (all rows when both are off).

    ``gram``: the ``n x n`` Gram matrix of the sign-statistics sample when the pipeline has it;
    otherwise (clustering switched off) a sample of the same size is drawn here.
    ``reference``: ``(n,)`` bool, rows the other filters kept (default: every valid row); the
    direction statistic is the median cosine to those of them the coherence filter keeps too.

    Returns the ``(n,)`` bool CPU mask and diagnostics: ``direction`` (``s``), ``coherence``
    (``t``), the thresholds, and how many rows each filter dropped.
    """
    n = len(valid)
    passed = valid.clone()
    info: dict[str, Any] = {"direction": None, "coherence": None, "direction_threshold": None,
                            "coherence_threshold": None, "rejected_by_direction": 0, "rejected_by_coherence": 0}
    index = valid.nonzero().flatten()
    if not (p.direction_filter or p.coherence_filter) or len(index) < _MIN_ROWS:
        return passed, info
    d = work.shape[1]
    size = max(1, min(d, int(p.sample_fraction * d)))  # coordinates of the sign-statistics sample
    if size < MIN_COSINE_COORDINATES:
        size = d
        gram = sampled_gram(work)
    elif gram is None:
        cols, _ = sample_columns(work, p.sample_fraction, "random", p.generator)
        gram = sampled_gram(cols)
    cos = cosine_matrix(gram, valid)
    off = cos.clone()
    off.fill_diagonal_(float("nan"))
    floor = _NORMAL_IQR_HALF / math.sqrt(size)  # a quartile gap of spread 1/sqrt(k)
    k = p.hardening_k / _NORMAL_IQR_HALF
    high = torch.zeros(len(index), dtype=torch.bool)
    if p.coherence_filter:
        t = torch.nan_to_num(off, nan=-2.0).max(dim=1).values
        # Judged on Fisher's z scale (atanh): cosines saturate at 1, so when honest rows are
        # strongly aligned a spread-based threshold on the cosine scale lies at or above 1 and
        # identical colluders pass (measured: converged MNIST under signguard_tailored, 10 of
        # 10 kept); atanh stretches the top so an exact duplicate is infinitely far.
        z = torch.atanh(t.clamp(-1 + 1e-12, 1 - 1e-12))
        q25, q50 = torch.quantile(z, 0.25), torch.quantile(z, 0.5)
        threshold_z = float(q50 + k * max(float(q50 - q25), floor))
        threshold = math.tanh(threshold_z)
        high = z > threshold_z
        passed[index[high]] = False
        full = torch.full((n,), float("nan"), dtype=torch.float64)
        full[index] = t
        info.update(coherence=full, coherence_threshold=threshold, rejected_by_coherence=int(high.sum()))
    if p.direction_filter:
        # The majority's statistic comes from rows no other filter rejected: ten identical crafted
        # rows would otherwise enter every honest row's median and split the honest rows in two
        # (measured: LIE at z = 3 from the strength search made the filter drop 20 of 40 honest rows).
        ref = ~high if reference is None else ~high & reference[index]
        if int(ref.sum()) < _MIN_ROWS:
            ref = torch.ones(len(index), dtype=torch.bool)
        among = off[:, ref]
        s = torch.nanmedian(among, dim=1).values
        q50, q75 = torch.quantile(s[ref], 0.5), torch.quantile(s[ref], 0.75)
        threshold = float(q50 - k * max(float(q75 - q50), floor))
        low = s < threshold
        passed[index[low]] = False
        full = torch.full((n,), float("nan"), dtype=torch.float64)
        full[index] = s
        info.update(direction=full, direction_threshold=threshold, rejected_by_direction=int(low.sum()))
    return passed, info
