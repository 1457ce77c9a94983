"""signguard-flwr: Byzantine-robust aggregation strategies for Flower.

>>> from signguard_flwr import SignGuard
>>> strategy = SignGuard(fraction_evaluate=0.0)          # doctest: +SKIP
>>> result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=10)  # doctest: +SKIP

The rules themselves are pure functions over an ``(n, d)`` update matrix:
``signguard_flwr.rules.RULES["signguard"](updates)``.  Every strategy class (``Mean``,
``TrimmedMean``, ... ``SignGuardDist``) is exported here, one per registered rule.
"""

from . import strategies
from .optim import ServerOptimizer
from .rules import RULES, AggregationResult
from .strategies import *  # noqa: F403  (STRATEGIES, RobustStrategy, ... and one class per rule)

__version__ = "0.1.0"

__all__ = ["RULES", "AggregationResult", "ServerOptimizer", *strategies.__all__]
