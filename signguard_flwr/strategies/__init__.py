"""Flower Message-API strategies (subclasses of ``flwr.serverapp.strategy.FedAvg``)."""

from .base import BUFFER_POLICIES, RobustStrategy, RoundDiagnostics
from .named import (
    Bulyan,
    DnC,
    GeoMed,
    Krum,
    Mean,
    Median,
    MultiKrum,
    SignGuard,
    SignGuardDist,
    SignGuardSim,
    TrimmedMean,
)

STRATEGIES: dict[str, type[RobustStrategy]] = {
    cls.rule_name: cls
    for cls in (Mean, TrimmedMean, Median, GeoMed, Krum, MultiKrum, Bulyan, DnC, SignGuard, SignGuardSim, SignGuardDist)
}

__all__ = [
    "BUFFER_POLICIES",
    "STRATEGIES",
    "RobustStrategy",
    "RoundDiagnostics",
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
