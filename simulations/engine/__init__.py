"""The engine: one experiment on a Flower Grid, and the Grids it runs on.

:mod:`.experiment` is the ServerApp's body (:func:`run_on_grid`: model, defense, evaluation,
one :class:`RoundRecord` per round) and :func:`run_experiment`, which runs it under Flower's
Ray simulation engine or in-process; :mod:`.inprocess` is that in-process Grid
(:class:`InProcessGrid`: the real ClientApp called directly); :mod:`.adversary` is the
omniscient adversary, a Grid wrapper between the clients' replies and the strategy;
:mod:`.logs` quiets Flower's log output for the command line and the sweep workers.  Layering:
the engine imports :mod:`simulations.config`, ``clients`` and ``signguard_flwr`` only, never
the sweeps, reports or CLI above it.
"""

from __future__ import annotations

from .adversary import OmniscientAdversary
from .experiment import (
    ENGINES,
    RoundRecord,
    RunResult,
    build_strategy,
    check_feasible,
    check_run,
    checkpoint_path,
    detection_counts,
    run_experiment,
    run_on_grid,
)
from .inprocess import InProcessGrid, node_ids_for

__all__ = [
    "ENGINES",
    "InProcessGrid",
    "OmniscientAdversary",
    "RoundRecord",
    "RunResult",
    "build_strategy",
    "check_feasible",
    "check_run",
    "checkpoint_path",
    "detection_counts",
    "node_ids_for",
    "run_experiment",
    "run_on_grid",
]
