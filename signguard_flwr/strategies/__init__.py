"""Flower Message-API strategies (subclasses of ``flwr.serverapp.strategy.FedAvg``).

One class per registered rule (``Mean``, ... ``SignGuardDist``), made by
:func:`~signguard_flwr.strategies.named.strategy_class`; :data:`STRATEGIES` maps rule names to them.
"""

from . import named
from .base import BUFFER_POLICIES, RobustStrategy, RoundDiagnostics
from .named import *  # noqa: F403  (STRATEGIES, strategy_class and one class per rule)

__all__ = ["BUFFER_POLICIES", "RobustStrategy", "RoundDiagnostics", *named.__all__]
