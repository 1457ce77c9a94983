"""Attack hyper-parameters: one validated bundle, read from node/run config by both sides.

Flower configs hold flat scalars, so the parameters travel as individual keys
(``attack-sigma``) or packed in one string (``attack-params = "z='max',sigma=0.5"``), parsed by
:func:`clients.schema.parse_params` (the one ``key=value`` parser, also for ``defense-params``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from ..schema import parse_bool, parse_params
from ._checks import check_choice, check_float, require_int
from .colluding import BYZMEAN_VARIANTS, PERTURBATIONS, SEARCHES
from .common import DOMAINS, KNOWLEDGE
from .schedule import DEFAULT_TIME_VARYING_ATTACKS, TimeVaryingSchedule, as_attack_tuple

__all__ = ["AttackParams", "parse_attack_params"]


def parse_attack_params(text: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Parse the run-config string ``"z='max',sigma=0.5,tv_attacks=['none','lie']"`` into a dict.

    The ``attack-params`` format of :func:`clients.schema.parse_params`; a mapping is taken as it is (``-``
    in keys becomes ``_``), None or "" is empty.
    """
    return parse_params(text, "attack-params")


@dataclass(frozen=True)
class AttackParams:
    """Hyper-parameters of every attack, validated once (``ValueError`` naming the field).

    Each field can come from a config mapping as its own key (``attack-<field>`` with ``_`` →
    ``-``; ``lie-batches``, ``byzmean-variant``, ``knowledge``, ``tv-attacks``, ``tv-period``,
    ``rounds-per-epoch`` as named below) or inside the ``attack-params`` string
    (``"z='max',sigma=0.5"``, field names).

    Attributes
    ----------
    sigma : float = 0.5
        Random / noise standard deviation (paper: 0.5).
    scale : float = 3.0
        Reverse-scaling factor r (paper: 3.0 = R with clipping on, 100 without).
    z : float or "max" = 0.3
        LIE shift and ByzMean's target shift (paper experiments: 0.3; reference: 1.0 for LIE,
        0.5 for ByzMean); "max" = :func:`lie_z_max` (n, m).
    knowledge : {"omniscient", "benign", "colluders"} = "omniscient"
        What the colluding attacker sees (key ``knowledge`` or ``attack-knowledge``).
    perturbation : {"std", "unit", "sign"} = "std"
        Min-Max / Min-Sum direction.
    search : {"ndss", "reference"} = "ndss"
        γ search of Min-Max / Min-Sum.
    gamma_init, tau : float or None
        γ search start and tolerance; None = the search's own (10, 1e-5 / 2, 0.02).
    min_sum_squared : bool = True
        Min-Sum with squared distances (paper, NDSS) or unsquared (reference).
    byzmean_variant : {"paper", "reference"} = "paper"
    lie_batches : int = 5
        Local LIE: honest passes whose updates estimate μ and σ (``lie-batches``).
    domain : {"gradient", "update"} = "gradient"
        See :func:`to_attack_domain`.
    tv_attacks : tuple of str = DEFAULT_TIME_VARYING_ATTACKS
    tv_period : {"round", "epoch"} = "epoch"
    rounds_per_epoch : int = 1
        Time-varying schedule (:class:`TimeVaryingSchedule`).
    epsilon : float = 0.1
        IPM's ε (Xie et al.: 0.1 hides, 100 reverses).
    target : str = ""
        Defense-aware attacks: the rule under test (a ``signguard_flwr.rules.RULES`` name); the
        simulation adversary sets it to the run's defense when not given.
    target_params : tuple of (name, value) = ()
        Its hyper-parameters (a mapping is accepted and stored as sorted pairs).
    base : {"lie", "ipm"} = "lie"
        The attack whose strength ``strongest`` searches.
    strengths : tuple of float = ()
        Strengths ``strongest`` tries; () = its default grid for ``base``.
    """

    sigma: float = 0.5
    scale: float = 3.0
    z: float | str = 0.3
    knowledge: str = "omniscient"
    perturbation: str = "std"
    search: str = "ndss"
    gamma_init: float | None = None
    tau: float | None = None
    min_sum_squared: bool = True
    byzmean_variant: str = "paper"
    lie_batches: int = 5
    domain: str = "gradient"
    tv_attacks: tuple[str, ...] = ()
    tv_period: str = "epoch"
    rounds_per_epoch: int = 1
    epsilon: float = 0.1
    target: str = ""
    target_params: tuple[tuple[str, Any], ...] = ()
    base: str = "lie"
    strengths: tuple[float, ...] = ()

    #: Config key of each field when given as its own key (else ``attack-<field>``).
    CONFIG_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {
        "knowledge": ("knowledge", "attack-knowledge"),
        "lie_batches": ("lie-batches", "attack-lie-batches"),
        "byzmean_variant": ("byzmean-variant", "attack-byzmean-variant"),
        "tv_attacks": ("tv-attacks",),
        "tv_period": ("tv-period",),
        "rounds_per_epoch": ("rounds-per-epoch",),
    }

    def __post_init__(self) -> None:
        for name in ("sigma", "scale", "gamma_init", "tau", "epsilon"):
            value = getattr(self, name)
            # Configs may carry whole numbers as ints ("attack-scale = 100").
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))
        check_float("sigma", self.sigma, nonneg=True)
        check_float("scale", self.scale, positive=True)
        if isinstance(self.z, str):
            try:
                object.__setattr__(self, "z", float(self.z) if self.z != "max" else "max")
            except ValueError:
                raise ValueError(f"z must be a number or 'max', got {self.z!r}") from None
        if not isinstance(self.z, str):
            check_float("z", self.z)
        check_choice("knowledge", self.knowledge, KNOWLEDGE)
        check_choice("perturbation", self.perturbation, PERTURBATIONS)
        check_choice("search", self.search, SEARCHES)
        if self.gamma_init is not None:
            check_float("gamma_init", self.gamma_init, positive=True)
        if self.tau is not None:
            check_float("tau", self.tau, positive=True)
        object.__setattr__(self, "min_sum_squared", parse_bool("min_sum_squared", self.min_sum_squared))
        check_choice("byzmean_variant", self.byzmean_variant, BYZMEAN_VARIANTS)
        require_int("lie_batches", self.lie_batches, 2)
        check_choice("domain", self.domain, DOMAINS)
        tv = as_attack_tuple(self.tv_attacks) if self.tv_attacks else DEFAULT_TIME_VARYING_ATTACKS
        object.__setattr__(self, "tv_attacks", tv)
        self.schedule(seed=0)  # validates tv_attacks, tv_period, rounds_per_epoch
        check_float("epsilon", self.epsilon)
        if not isinstance(self.target, str):
            raise ValueError(f"target must be a rule name, got {self.target!r}")
        pairs = self.target_params.items() if isinstance(self.target_params, Mapping) else self.target_params
        try:
            object.__setattr__(self, "target_params", tuple(sorted((str(k), v) for k, v in pairs)))
        except (TypeError, ValueError):
            raise ValueError(f"target_params must be a mapping of rule parameters, got {self.target_params!r}") from None
        check_choice("base", self.base, ("lie", "ipm"))
        try:
            strengths = tuple(float(v) for v in (self.strengths if isinstance(self.strengths, (list, tuple)) else [self.strengths]))
        except (TypeError, ValueError):
            raise ValueError(f"strengths must be a list of numbers, got {self.strengths!r}") from None
        object.__setattr__(self, "strengths", strengths)

    @classmethod
    def build(cls, **params: Any) -> AttackParams:
        """Like the constructor, but an unknown keyword is a ``ValueError`` naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown attack parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**params)

    @classmethod
    def from_config(cls, *configs: Mapping[str, Any]) -> AttackParams:
        """Read the parameters from config mappings (node config, run config, ...).

        Earlier mappings win; within one mapping an individual key (``attack-sigma``) wins over
        the same field inside its ``attack-params`` string.  Unknown fields inside
        ``attack-params`` are a ``ValueError`` naming them.
        """
        values: dict[str, Any] = {}
        for cfg in reversed(configs):  # later mappings first, so earlier ones overwrite
            packed = parse_attack_params(cfg.get("attack-params"))
            unknown = sorted(set(packed) - {f.name for f in fields(cls)})
            if unknown:
                raise ValueError(f"unknown attack-params field(s) {unknown}")
            values.update(packed)
            for f in fields(cls):
                for key in cls.CONFIG_KEYS.get(f.name, ("attack-" + f.name.replace("_", "-"),)):
                    if key in cfg:
                        values[f.name] = cfg[key]
                        break
        return cls(**values)

    def schedule(self, seed: int = 0) -> TimeVaryingSchedule:
        """The time-varying schedule these parameters describe, for run seed ``seed``."""
        return TimeVaryingSchedule(self.tv_attacks, self.tv_period, self.rounds_per_epoch, seed)
