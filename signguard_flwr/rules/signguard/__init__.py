r"""SignGuard, SignGuard-Sim and SignGuard-Dist as pure aggregation rules.

Paper: J. Xu, S.-L. Huang, L. Song, T. Lan, "Byzantine-robust Federated Learning through
Collaborative Malicious Gradient Filtering", ICDCS 2022 (arXiv 2109.05872).  Every choice on
which the paper's text and its official code (``JianXu95/SignGuard`` @ e1fcafc) differ is a
named keyword argument; ``preset="reference"`` selects the official code's behaviour and
``docs/signguard-parity.md`` lists every choice side by side.

With ``g_i`` the update of client ``i`` (one row of the ``(n, d)`` matrix) and
``r_i = ||g_i||_2``:

1. **Norm band** ``S1 = {i : L·M1 < r_i < R·M1}`` (strict), ``M1 = median_i r_i``,
   ``L = 0.1``, ``R = 3.0``.
2. **Sign features** on ``k = floor(0.1·d)`` sampled coordinates: the fractions of positive,
   zero and negative entries ``(p_i, z_i, q_i)``, each column divided by its maximum over
   clients (+1e-8).  SignGuard-Sim appends a cosine-similarity feature, SignGuard-Dist a
   distance flag (see :func:`signguard_sim`, :func:`signguard_dist`).
3. **Clustering** ``S2`` = the largest cluster found by flat-kernel MeanShift with the
   bandwidth from ``estimate_bandwidth(quantile=0.5)``.
4. **Selection** ``S = S1 ∩ S2``.
5. **Clipping and mean** ``g = (1/|S|) Σ_{i∈S} g_i · min(1, M2 / r_i)``, ``M2 = median_i r_i``:
   a plain mean, never weighted by example counts.  (``preset="hardened"`` takes ``M2`` over
   ``S`` only, ``clip_reference="selected"``, so that rejected rows cannot move it.)

Modules: :mod:`.params` (the keyword arguments as one frozen dataclass, the presets, the
cross-round state), :mod:`.features` (steps 2 and the Sim/Dist feature), :mod:`.clustering`
(step 3), :mod:`.pipeline` (the steps in order, 1, 4 and 5).
"""

from __future__ import annotations

from typing import Any

import torch

from .. import register
from ..base import AggregationResult, Rule, check_updates
from .params import (
    FIELDS_DOC,
    PRESETS,
    PROJECT_DEFAULTS,
    STATE_DOC,
    UPDATES_DOC,
    VARIANT_FIELDS_DOC,
    SignGuardParams,
    SignGuardState,
    make_params,
    rule_signature,
)
from .pipeline import aggregate

__all__ = [
    "PRESETS",
    "PROJECT_DEFAULTS",
    "SignGuardParams",
    "SignGuardState",
    "signguard",
    "signguard_dist",
    "signguard_sim",
]


def _run(variant: str, updates: torch.Tensor, kwargs: dict[str, Any]) -> AggregationResult:
    # Unknown keywords fail as in an ordinary call, then the data, then the values.
    try:
        rule_signature(variant).bind(updates, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{variant}() {exc}") from None
    updates = check_updates(updates)
    params, state = make_params(variant, kwargs)
    return aggregate(updates, params, state)


# ``**params`` are SignGuardParams' fields (plus ``state`` for Sim/Dist): the real signature is
# set from them at registration, below, and the docstrings are assembled after the functions.
def signguard(updates: torch.Tensor, **params: Any) -> AggregationResult:
    return _run("signguard", updates, params)


def signguard_sim(updates: torch.Tensor, **params: Any) -> AggregationResult:
    return _run("signguard_sim", updates, params)


def signguard_dist(updates: torch.Tensor, **params: Any) -> AggregationResult:
    return _run("signguard_dist", updates, params)


_RETURNS_DOC = """

    Returns
    -------
    AggregationResult
        ``vector`` (d,) same dtype/device as ``updates``; ``selected`` bool (n,) = S (or the
        fallback's selection), on the updates' device; ``info`` with ``features`` (n×k CPU),
        ``labels`` (-1 = orphan or not clustered), ``bandwidth``, ``n_clusters``, ``orphans``,
        ``norms``, ``norm_median``, ``norm_band``, ``passed_norm``, ``passed_cluster``,
        ``clip_norm``, ``clip_factors``, ``rejected_by_norm`` (= n - |S1|),
        ``rejected_by_cluster`` (= |S1 minus S2|), ``nonfinite``, ``window`` or
        ``coordinates``, ``sample_size``, ``fallback`` (None or what was done), ``params``
        (resolved).  With ``cluster_filter=False`` the clustering entries are None.
        Sim and Dist add ``phase`` and their raw score and its median.
"""

signguard.__doc__ = (
    r"""SignGuard (Xu et al., ICDCS 2022): norm band ∩ largest sign-feature cluster, clipped mean.

    ``S1 = {i : L·M1 < ||g_i|| < R·M1}``; features ``(p_i, z_i, q_i)`` = fractions of
    positive / zero / negative entries on ``k = floor(0.1 d)`` sampled coordinates, each column
    divided by its maximum over clients; ``S2`` = largest MeanShift cluster;
    ``S = S1 ∩ S2``; ``g = (1/|S|) Σ_{i∈S} g_i · min(1, M2/||g_i||)``.
    Parameters left at ``None`` come from ``preset``.
"""
    + UPDATES_DOC
    + FIELDS_DOC
    + _RETURNS_DOC
)

signguard_sim.__doc__ = (
    r"""SignGuard-Sim: SignGuard with a 4th feature, the cosine similarity to a reference.

    Warm-up (or ``state=None``): ``s_i = median_j C_ij`` with ``C`` the pairwise cosine
    matrix (zero diagonal), from one Gram matrix ``U Uᵀ``.  Afterwards
    ``s_i = cos(g_i, g_ref)`` with ``g_ref`` the previous output (or this round's
    coordinate-wise median).  Feature ``clamp(s_i, 0, m) / (5m + 1e-8)`` with
    ``m = median(s)`` (a zero column when ``m <= 0``), so it lies in [0, 0.2]; the three sign
    columns are max-scaled as in :func:`signguard`.  Cosines use the raw (unclipped) rows.
    The output becomes ``state.previous``.
"""
    + UPDATES_DOC
    + STATE_DOC
    + VARIANT_FIELDS_DOC
    + FIELDS_DOC
    + _RETURNS_DOC
)

signguard_dist.__doc__ = (
    r"""SignGuard-Dist: SignGuard with a 4th feature, a binary far-from-reference flag.

    Warm-up (or ``state=None``): ``t_i`` = sum of the ``floor(n/2)`` smallest distances
    ``||g_i - g_j||`` of row ``i``, the self-distance 0 included (Krum-like), from one Gram
    matrix.  Afterwards ``t_i = ||g_i - g_ref||`` with ``g_ref`` the previous output (or this
    round's coordinate-wise median).  Feature ``0.2 · 1[t_i >= 1.1 · median(t)]``.  Distances
    use ``r_i² + r_j² - 2<g_i, g_j>`` in the input dtype (float32 cancellation error is about
    1e-7·r², negligible against the 1.1× threshold).  The output becomes ``state.previous``.
"""
    + UPDATES_DOC
    + STATE_DOC
    + VARIANT_FIELDS_DOC
    + FIELDS_DOC
    + _RETURNS_DOC
)


def _register(fn: Any, **meta: Any) -> None:
    variant = fn.__name__
    # The keyword list lives once, in SignGuardParams; the signature shown by help() and read
    # by Rule (its parameter names and defaults) is made from it.
    fn.__signature__ = rule_signature(variant)

    def validate(**params: Any) -> None:
        make_params(variant, params)

    validate.__doc__ = f"Check the parameters of {variant!r} without data (resolves the preset)."
    register(Rule(variant, fn, validate=validate, **meta))


_register(signguard, class_name="SignGuard")
_register(signguard_sim, class_name="SignGuardSim", display_name="SignGuard-Sim", variant_of="signguard",
          make_state=SignGuardState)
_register(signguard_dist, class_name="SignGuardDist", display_name="SignGuard-Dist", variant_of="signguard",
          make_state=SignGuardState)
