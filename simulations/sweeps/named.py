"""The named sweeps behind the README and docs/ results: the paper's experiments at our budget.

Each is a sweep file ``simulations/sweeps/NAME.toml`` (the format of ``signguard-sim sweep
--config``, see :mod:`simulations.sweeps.files`); ``signguard-sim sweep NAME`` runs it
(resumable) into ``docs/results/NAME``.  Budgets are reduced from the paper's (60 epochs =
1,440 FedSGD rounds on MNIST) to what 2 CPU cores finish in hours; each file says its budget.
A new ``.toml`` file in that folder is a new named sweep.
"""

from __future__ import annotations

from importlib import resources

from ..config import ExperimentConfig
from .files import SweepSpec, read_sweep

__all__ = ["SWEEPS", "SWEEP_FOLDER", "build_sweep"]

#: The folder of the sweep files: this package's own (found as package data would be).
SWEEP_FOLDER = resources.files(__package__)
# The order of `signguard-sim sweep --list`: the main job, then the paper's tables and figures;
# files not named here follow, sorted.
_LISTED = (
    "main",
    "table1-mnist",
    "table1-fmnist",
    "converged-mnist",
    "converged-fmnist",
    "paper-budget-mnist",
    "paper-budget-fmnist",
    "bulyan-reference-mnist",
    "fraction-fmnist",
    "noniid-fmnist",
    "ablation-fmnist",
    "timevarying-fmnist",
    "cifar10-small",
    "agnews-small",
    "agnews-cpu",
)


def _load() -> dict[str, SweepSpec]:
    files = {f.name.removesuffix(".toml"): f for f in SWEEP_FOLDER.iterdir() if f.name.endswith(".toml")}
    names = [n for n in _LISTED if n in files] + sorted(set(files) - set(_LISTED))
    return {name: read_sweep(files[name], name=name) for name in names}


#: Name -> sweep; calling one gives its list of :class:`ExperimentConfig`.
SWEEPS: dict[str, SweepSpec] = _load()


def build_sweep(name: str) -> list[ExperimentConfig]:
    """The runs of the named sweep ``name``, in order."""
    try:
        build = SWEEPS[name]
    except KeyError:
        raise ValueError(f"unknown sweep {name!r}; known: {sorted(SWEEPS)}") from None
    return build()
