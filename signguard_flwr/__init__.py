"""signguard-flwr: Byzantine-robust aggregation strategies for Flower.

>>> from signguard_flwr import SignGuard
>>> strategy = SignGuard(fraction_evaluate=0.0)          # doctest: +SKIP
>>> result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=10)  # doctest: +SKIP

The rules themselves are pure functions over an ``(n, d)`` update matrix:
``signguard_flwr.rules.RULES["signguard"](updates)``.
"""

from .optim import ServerOptimizer
from .rules import RULES, AggregationResult
from .strategies import (
    STRATEGIES,
    Bulyan,
    DnC,
    GeoMed,
    Krum,
    Mean,
    Median,
    MultiKrum,
    RobustStrategy,
    RoundDiagnostics,
    SignGuard,
    SignGuardDist,
    SignGuardSim,
    TrimmedMean,
)

__version__ = "0.1.0"

__all__ = [
    "RULES",
    "STRATEGIES",
    "AggregationResult",
    "ServerOptimizer",
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
