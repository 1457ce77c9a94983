"""The named strategies: each is a :class:`RobustStrategy` bound to one rule.

Every class accepts FedAvg's constructor arguments, the server-optimizer and buffer options of
:class:`~signguard_flwr.strategies.base.RobustStrategy`, and its rule's hyper-parameters (see the
rule's docstring in :mod:`signguard_flwr.rules`).  Hyper-parameters are checked at construction.
"""

from __future__ import annotations

from typing import Any

from .base import RobustStrategy

__all__ = [
    "Mean",
    "TrimmedMean",
    "Median",
    "GeoMed",
    "Krum",
    "MultiKrum",
    "Bulyan",
    "DnC",
    "SignGuard",
    "SignGuardSim",
    "SignGuardDist",
]


class Mean(RobustStrategy):
    """Unweighted mean of the client updates (no defense; the paper's benchmark)."""

    rule_name = "mean"


class TrimmedMean(RobustStrategy):
    """Coordinate-wise trimmed mean dropping ``f`` values per side (Yin et al., 2018)."""

    rule_name = "trimmed_mean"


class Median(RobustStrategy):
    """Coordinate-wise median (Yin et al., 2018); midpoint of the two middles for even n."""

    rule_name = "median"


class GeoMed(RobustStrategy):
    """Geometric median by smoothed Weiszfeld (RFA, Pillutla et al.)."""

    rule_name = "geomed"


class Krum(RobustStrategy):
    """Krum (Blanchard et al., 2017): the update with the smallest neighbour score."""

    rule_name = "krum"


class MultiKrum(RobustStrategy):
    """Multi-Krum (Blanchard et al., 2017): mean of the ``m`` best Krum scores."""

    rule_name = "multi_krum"


class Bulyan(RobustStrategy):
    """Bulyan (El Mhamdi et al., 2018) over recursive Krum; needs n ≥ 4f + 3."""

    rule_name = "bulyan"


class DnC(RobustStrategy):
    """Divide-and-Conquer (Shejwalkar & Houmansadr, NDSS 2021)."""

    rule_name = "dnc"


class SignGuard(RobustStrategy):
    """SignGuard (Xu et al., ICDCS 2022): norm band, sign statistics + mean shift, clipping.

    The number of Byzantine clients is *not* an argument: SignGuard does not need it.
    ``preset="reference"`` reproduces the official code's choices; see docs/signguard-parity.md.
    """

    rule_name = "signguard"


class _StatefulSignGuard(SignGuard):
    def make_rule_state(self) -> Any:
        from ..rules.signguard import SignGuardState

        return SignGuardState()


class SignGuardSim(_StatefulSignGuard):
    """SignGuard-Sim: SignGuard with a cosine-similarity feature against a reference vector."""

    rule_name = "signguard_sim"


class SignGuardDist(_StatefulSignGuard):
    """SignGuard-Dist: SignGuard with a distance feature against a reference vector."""

    rule_name = "signguard_dist"
