"""SignGuard's hyper-parameters: one frozen dataclass, its presets, its checks and its docs.

A parameter left at ``None`` takes its value from the preset (``preset=None``: the project's
defaults, ``preset="reference"``: the official code); an explicit value always wins.
Parameters on which the official code and the project agree (``lower``, ``upper``,
``sample_fraction``, ...) have ordinary defaults instead.  Why each value:
``docs/signguard-parity.md``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from ..base import check_choice, check_float, check_int

__all__ = [
    "PRESETS",
    "PROJECT_DEFAULTS",
    "VARIANTS",
    "SignGuardParams",
    "SignGuardState",
    "make_params",
    "rule_signature",
]

#: The three rules: SignGuard and its variants with a fourth, cross-client feature.
VARIANTS = ("signguard", "signguard_sim", "signguard_dist")
# Parameters of the fourth feature, which plain SignGuard does not have.
_VARIANT_FIELDS = ("warmup_rounds", "reference", "feature_median")

#: Project defaults (``preset=None``), per variant.
PROJECT_DEFAULTS: dict[str, dict[str, Any]] = {
    "signguard": {
        "sampling": "random",
        "scaling": "max",
        "orphans": "nearest",
        "norm_median": "mid",
        "clip_median": "mid",
        "clip_reference": "all",
        "label_counting": "actual",
        "clustering": "fast",
        "bandwidth_samples": "all",
        "nonfinite": "reject",
        "direction_filter": False,
        "coherence_filter": False,
    },
}
PROJECT_DEFAULTS["signguard_sim"] = {
    **PROJECT_DEFAULTS["signguard"],
    "warmup_rounds": 3,
    "reference": "previous",
    "feature_median": "mid",
}
PROJECT_DEFAULTS["signguard_dist"] = {**PROJECT_DEFAULTS["signguard_sim"], "warmup_rounds": 1}

# The official code.  Warm-up: Sim switches at epoch 3 and Dist at epoch 1; one epoch is 24
# server steps on MNIST/FMNIST (1,200 samples per client, batch 50), so the preset uses 72 and
# 24 rounds.  On CIFAR-10 (1,000 samples per client) pass warmup_rounds=60 / 20 explicitly.
_REFERENCE_PLAIN = {
    "sampling": "window",
    "scaling": "max",
    "orphans": "drop",
    "norm_median": "mid",
    "clip_median": "low",
    "clip_reference": "all",
    "label_counting": "contiguous",
    "clustering": "sklearn",
    "bandwidth_samples": 50,
    "nonfinite": "nan_to_zero",
    "direction_filter": False,
    "coherence_filter": False,
}
#: ``preset="reference"``: the official code's behaviour, per variant.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "reference": {
        "signguard": _REFERENCE_PLAIN,
        "signguard_sim": {
            **_REFERENCE_PLAIN,
            "warmup_rounds": 72,
            "reference": "previous",
            "feature_median": "low",
        },
        "signguard_dist": {
            **_REFERENCE_PLAIN,
            "bandwidth_samples": "all",  # Dist passes n_samples = n
            "warmup_rounds": 24,
            "reference": "previous",
            "feature_median": "low",
        },
    },
    # Beyond the paper: the project defaults plus the direction and coherence filters of
    # signguard_flwr.rules.signguard.hardening, against attackers that know SignGuard, and a
    # clipping bound that rows the filters rejected cannot move.
    "hardened": {
        variant: {**PROJECT_DEFAULTS[variant], "direction_filter": True, "coherence_filter": True,
                  "clip_reference": "selected"}
        for variant in ("signguard", "signguard_sim", "signguard_dist")
    },
}

_CHOICES: dict[str, tuple[Any, ...]] = {
    "sampling": ("random", "window"),
    "scaling": ("max", "none"),
    "orphans": ("nearest", "drop"),
    "norm_median": ("mid", "low"),
    "clip_median": ("mid", "low"),
    "clip_reference": ("all", "selected"),
    "label_counting": ("actual", "contiguous"),
    "clustering": ("fast", "sklearn"),
    "nonfinite": ("reject", "nan_to_zero"),
    "empty_fallback": ("norm_band", "skip"),
    "reference": ("previous", "median", "pairwise"),
    "feature_median": ("mid", "low"),
}


@dataclass
class SignGuardState:
    """Cross-round memory of SignGuard-Sim / SignGuard-Dist.

    The strategy owns one object and passes the same one every round as ``state=``; the rule
    updates it only after an aggregation has completed (an invalid input leaves it as it was).

    Attributes
    ----------
    previous : torch.Tensor or None
        The rule's own previous output (the aggregate *before* any server momentum), the
        reference vector of ``reference="previous"``.  Not overwritten by a zero "skip"
        fallback, which carries no direction.
    calls : int
        Number of completed calls so far; the warm-up lasts while ``calls < warmup_rounds``.
    """

    previous: torch.Tensor | None = None
    calls: int = 0

    def reset(self) -> None:
        """Forget the previous aggregate and restart the warm-up."""
        self.previous = None
        self.calls = 0


@dataclass(frozen=True)
class SignGuardParams:
    # The field order is the rules' keyword order and the order of ``info["params"]``.
    variant: str = "signguard"
    warmup_rounds: int | None = None
    reference: str | None = None
    feature_median: str | None = None
    lower: float = 0.1
    upper: float = 3.0
    sample_fraction: float = 0.1
    sampling: str | None = None
    scaling: str | None = None
    orphans: str | None = None
    norm_median: str | None = None
    clip_median: str | None = None
    clip_reference: str | None = None
    label_counting: str | None = None
    clustering: str | None = None
    bandwidth_quantile: float = 0.5
    bandwidth_samples: int | str | None = None
    nonfinite: str | None = None
    empty_fallback: str = "norm_band"
    norm_filter: bool = True
    cluster_filter: bool = True
    clip: bool = True
    direction_filter: bool | None = None
    coherence_filter: bool | None = None
    hardening_k: float = 3.0
    generator: torch.Generator | None = None
    preset: str | None = None

    def __post_init__(self) -> None:
        # Resolved and checked here, once: every instance is complete and valid.
        check_choice("variant", self.variant, VARIANTS)
        if not self.has_variant_feature:
            given = [name for name in _VARIANT_FIELDS if getattr(self, name) is not None]
            if given:
                raise TypeError(f"{given[0]} applies to signguard_sim / signguard_dist, not to signguard")
        if self.preset is not None:
            check_choice("preset", self.preset, tuple(PRESETS))
            base = PRESETS[self.preset][self.variant]
        else:
            base = PROJECT_DEFAULTS[self.variant]
        for key, value in base.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        self._check()

    @property
    def has_variant_feature(self) -> bool:
        """Whether the rule adds the Sim/Dist feature (and so keeps a :class:`SignGuardState`)."""
        return self.variant != "signguard"

    def as_info(self) -> dict[str, Any]:
        """The resolved keyword arguments, as the rule reports them in ``info["params"]``."""
        return {name: getattr(self, name) for name in keyword_names(self.variant) if name != "generator"}

    def _check(self) -> None:
        lower = check_float("lower", self.lower, minimum=0.0)
        upper = check_float("upper", self.upper, minimum=0.0, strict_min=True)
        if not lower < upper:
            raise ValueError(f"lower must be < upper, got lower={lower}, upper={upper}")
        check_float("sample_fraction", self.sample_fraction, minimum=0.0, maximum=1.0, strict_min=True)
        check_float("bandwidth_quantile", self.bandwidth_quantile, minimum=0.0, maximum=1.0)
        samples = self.bandwidth_samples
        if samples != "all":
            if isinstance(samples, str):
                raise ValueError(f"bandwidth_samples must be 'all' or an integer >= 1, got {samples!r}")
            check_int("bandwidth_samples", samples, minimum=1)
        for name, choices in _CHOICES.items():
            if self.has_variant_feature or name not in _VARIANT_FIELDS:
                check_choice(name, getattr(self, name), choices)
        check_float("hardening_k", self.hardening_k, minimum=0.0, strict_min=True)
        for name in ("norm_filter", "cluster_filter", "clip", "direction_filter", "coherence_filter"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {value!r}")
        gen = self.generator
        if gen is not None and not isinstance(gen, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(gen).__name__}")
        if self.has_variant_feature:
            check_int("warmup_rounds", self.warmup_rounds, minimum=0)


def keyword_names(variant: str) -> tuple[str, ...]:
    """The rule's keyword arguments held by :class:`SignGuardParams` (all but ``state``)."""
    return tuple(
        f.name for f in fields(SignGuardParams)
        if f.name != "variant" and (variant != "signguard" or f.name not in _VARIANT_FIELDS)
    )


@lru_cache(maxsize=None)
def rule_signature(variant: str) -> inspect.Signature:
    """The signature of rule ``variant``: ``updates``, ``state`` (Sim/Dist), then the fields."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    defaults = {f.name: f for f in fields(SignGuardParams)}
    params = [inspect.Parameter("updates", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="torch.Tensor")]
    if variant != "signguard":
        params.append(inspect.Parameter("state", keyword, default=None, annotation="SignGuardState | None"))
    params += [
        inspect.Parameter(name, keyword, default=defaults[name].default, annotation=defaults[name].type)
        for name in keyword_names(variant)
    ]
    return inspect.Signature(params, return_annotation="AggregationResult")


def make_params(variant: str, kwargs: dict[str, Any]) -> tuple[SignGuardParams, SignGuardState | None]:
    """Resolve and check the keyword arguments of rule ``variant``: its parameters and state."""
    kwargs = dict(kwargs)
    state = kwargs.pop("state", None)
    params = SignGuardParams(variant=variant, **kwargs)
    if state is not None and not isinstance(state, SignGuardState):
        raise TypeError(f"state must be a SignGuardState or None, got {type(state).__name__}")
    return params, state


# --------------------------------------------------------------------------------------------
# Docs of the keyword arguments, shared by the three rules and SignGuardParams.
# --------------------------------------------------------------------------------------------

UPDATES_DOC = """
    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` float32/float64 client updates (CPU or CUDA); not modified, not copied."""

STATE_DOC = """
    state : SignGuardState, optional
        Cross-round memory owned by the caller (same object every round).  ``None``:
        stateless, every call behaves as during the warm-up."""

VARIANT_FIELDS_DOC = """
    warmup_rounds : int, optional
        Calls (counted by ``state.calls``) that use the pairwise statistic before switching
        to the reference vector.  Project: 3 (Sim) / 1 (Dist).  Reference: 3 / 1 *epochs*
        = 72 / 24 rounds on MNIST (24 steps per epoch); pass 60 / 20 for CIFAR-10.
    reference : {"previous", "median", "pairwise"}, optional
        After the warm-up: ``"previous"`` = the rule's own previous output (reference,
        project); ``"median"`` = coordinate-wise midpoint median of this round's valid rows
        (needs no history; but every row also correlates with it through its own 1/n share,
        which at low signal-to-noise hides sign-flipped rows); ``"pairwise"`` = keep the
        warm-up statistic for ever (honest-majority, no self term, O(n²·d) per round).
    feature_median : {"mid", "low"}, optional
        Median used to scale the extra feature.  Reference: low; project: mid."""

FIELDS_DOC = """
    lower, upper : float
        Norm band ``lower·M1 < r_i < upper·M1`` (strict).  Paper and reference: 0.1, 3.0.
    sample_fraction : float
        Fraction of coordinates for the sign statistics, ``k = max(1, floor(f·d))``.  0.1.
    sampling : {"random", "window"}, optional
        ``"random"``: uniform k-subset without replacement (the paper's text; project
        default).  ``"window"``: one contiguous window ``[s, s+k)`` with
        ``s ~ U{0..d-k-1}`` (the reference code).
    scaling : {"max", "none"}, optional
        ``"max"``: divide each sign column by its maximum over clients + 1e-8 (paper pipeline,
        reference, project default).  ``"none"``: raw fractions.
    orphans : {"nearest", "drop"}, optional
        MeanShift rows farther than the bandwidth from every mode: ``"drop"`` labels them -1
        and never selects them (reference ``cluster_all=False``); ``"nearest"`` assigns them
        to their nearest mode (project default; they still need to pass the norm band).
    norm_median, clip_median : {"mid", "low"}, optional
        Median used for the band (M1) and for clipping (M2): ``"mid"`` = mean of the two
        middle values for even counts, ``"low"`` = lower middle value.  Reference: mid / low;
        project: mid / mid.
    clip_reference : {"all", "selected"}, optional
        Rows whose norms give M2: ``"all"`` = every valid row (paper, reference, project
        default); ``"selected"`` = the rows of ``S`` only (``preset="hardened"``).  Over all
        rows, the f rejected rows still move M2 anywhere between the honest norms' quantiles
        ``(n/2 − f)/(n − f)`` and ``n/2/(n − f)``: huge rejected rows raise the clipping bound of
        every kept row, tiny ones lower it.  Over ``S`` the output depends on the selected
        rows alone.
    label_counting : {"actual", "contiguous"}, optional
        Largest cluster counted over the labels that occur (project) or over
        ``0..n_cluster-1`` as the reference does (may miss the largest cluster).
    clustering : {"fast", "sklearn"}, optional
        ``"fast"``: vectorised mean shift of :mod:`signguard_flwr.rules.meanshift` (identical
        clusters, ~1 ms); ``"sklearn"``: ``estimate_bandwidth`` +
        ``MeanShift(bin_seeding=True)`` (~0.1 s).
    bandwidth_quantile : float
        ``estimate_bandwidth`` quantile; 0.5.
    bandwidth_samples : int or "all", optional
        Rows used to estimate the bandwidth (first rows of a ``RandomState(0)``
        permutation).  Reference: 50 for SignGuard and Sim, ``"all"`` (n) for Dist.
    nonfinite : {"reject", "nan_to_zero"}, optional
        Rows with a NaN/Inf entry: ``"reject"`` excludes them from every statistic and from
        the selection (project); ``"nan_to_zero"`` zeroes NaN entries and keeps +-Inf (the
        reference; an Inf row then fails the norm band).  This copies the matrix, only when
        such a row is present.
    empty_fallback : {"norm_band", "skip"}
        When ``S1 ∩ S2`` is empty (or clustering failed): ``"norm_band"`` aggregates S1 alone,
        and skips if S1 is empty too; ``"skip"`` returns a zero update.  Never NaN.
    norm_filter, cluster_filter, clip : bool
        Ablation switches for thresholding (S1), clustering (S2) and norm clipping (paper
        Table III).  Off means "everyone passes" / "factor 1".
    direction_filter, coherence_filter : bool, optional
        Beyond the paper (:mod:`signguard_flwr.rules.signguard.hardening`): drop rows whose
        median cosine to the others is far below the majority's (pointing against the honest
        rows), and rows whose largest cosine to another row is far above the majority's
        (colluders sending near-identical vectors).  Off in the project defaults and the
        reference; on in ``preset="hardened"``.
    hardening_k : float
        How far is "far" for those filters, in standard deviations of the majority's spread; 3.
    generator : torch.Generator, optional
        Source of the coordinate sample; ``None`` uses torch's global RNG (reference).
    preset : {"reference", "hardened"}, optional
        ``None``: project defaults; ``"reference"``: the official code; ``"hardened"``: the
        project defaults plus the direction and coherence filters, clipped to the median
        norm of the selected rows (``clip_reference="selected"``).  Explicit keyword
        arguments override the preset."""

SignGuardParams.__doc__ = (
    """The keyword arguments of SignGuard, SignGuard-Sim and SignGuard-Dist, resolved and checked.

    Constructing one fills every ``None`` from ``preset`` and validates every value (raising
    ``ValueError``/``TypeError`` naming the argument), so an instance is always complete.
    The rules build one per call; strategies check theirs at construction.

    Parameters
    ----------
    variant : {"signguard", "signguard_sim", "signguard_dist"}
        Which rule; the three ``warmup_rounds`` ... ``feature_median`` apply to Sim and Dist
        only."""
    + VARIANT_FIELDS_DOC
    + FIELDS_DOC
    + "\n"
)
