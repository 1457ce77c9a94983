"""Experiments and sweeps in TOML files, with the keys of ``[tool.flwr.app.config]``.

An **experiment file** holds one run's settings, flat::

    task = "mnist"
    defense = "signguard"
    attack = "lie"
    attack-params = "z=0.3"      # or an inline table: {z = 0.3}
    rounds = 100

A **sweep file** holds an optional ``description``, the settings every run shares in
``[base]`` and the alternatives in ``[grid]`` (every combination, first key outermost)::

    description = "Mean and SignGuard under LIE, three seeds"
    [base]
    task = "mnist"
    rounds = 100
    [grid]
    seed = [0, 1, 2]
    defense = ["mean", "signguard"]

or in several ``[[grid]]`` blocks, run one after the other (a run listed twice runs once, at
its first place).  ``reuse-from = ["other-sweep"]`` names sweeps whose result folders (beside
this sweep's) hold runs it shares: those are copied, not run again.  Keys not given keep the defaults of :data:`clients.schema.SETTINGS`;
``byzantine-fraction`` may stand for ``num-byzantine``.  Unknown keys and bad values are
errors naming the file and the key.  The named sweeps of ``signguard-sim sweep NAME`` are such
files (``simulations/sweeps/``).
"""

from __future__ import annotations

import difflib
import itertools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from clients.schema import EXPERIMENT_SETTINGS

from ..config import BYZANTINE_FRACTION, ExperimentConfig

__all__ = ["read_experiment", "read_sweep", "SweepSpec", "merge_settings"]

_BY_KEY = {s.key: s for s in EXPERIMENT_SETTINGS}
_BYZANTINE_KEYS = ("num-byzantine", BYZANTINE_FRACTION)
_SWEEP_KEYS = ("description", "base", "grid", "reuse-from")


class _Readable(Protocol):  # a Path, or a package resource (importlib.resources)
    def read_text(self, encoding: str | None = ...) -> str: ...


def _read_toml(path: _Readable) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot be read ({err})") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from None


def _check_settings(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``values`` with every key a setting (``-`` spelling) and every value valid for it."""
    out: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = raw_key.replace("_", "-")
        if key == BYZANTINE_FRACTION:
            try:
                fraction = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{where} key {raw_key!r}: expected a number, got {value!r}") from None
            if isinstance(value, bool) or not 0 <= fraction < 1:
                raise ValueError(f"{where} key {raw_key!r} must be in [0, 1), got {value!r}")
        elif key in _BY_KEY:
            setting = _BY_KEY[key]
            problem = setting.violation(setting.coerce(value, f"{where} key {raw_key!r}"))
            if problem:
                raise ValueError(f"{where} key {raw_key!r} {problem}, got {value!r}")
        else:
            known = sorted([*_BY_KEY, BYZANTINE_FRACTION])
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where} unknown key {raw_key!r}{hint}; known: {', '.join(known)}")
        out[key] = value
    if all(k in out for k in _BYZANTINE_KEYS):
        raise ValueError(f"{where} give num-byzantine or byzantine-fraction, not both")
    return out


def merge_settings(lower: Mapping[str, Any], upper: Mapping[str, Any]) -> dict[str, Any]:
    """``upper`` over ``lower``; ``num-byzantine`` and ``byzantine-fraction`` replace each other."""
    out = dict(lower)
    if any(k in upper for k in _BYZANTINE_KEYS):
        for k in _BYZANTINE_KEYS:
            out.pop(k, None)
    out.update(upper)
    return out


def read_experiment(path: str | Path) -> dict[str, Any]:
    """The settings of an experiment file (run-config keys → values, checked).

    Raises
    ------
    ValueError
        Naming the file: missing, not TOML, a sweep file, an unknown key or a bad value.
    """
    data = _read_toml(Path(path))
    if any(isinstance(data.get(k), (dict, list)) for k in ("base", "grid")):
        raise ValueError(f"{path}: has [base] / [grid], so it is a sweep file: signguard-sim sweep --config {path}")
    return _check_settings(data, f"{path}:")


def build_config(settings: Mapping[str, Any], where: str) -> ExperimentConfig:
    """:meth:`ExperimentConfig.from_run_config` with errors that name ``where``."""
    try:
        return ExperimentConfig.from_run_config(settings, where=where)
    except (TypeError, ValueError) as err:
        text = str(err)
        raise ValueError(text if text.startswith(where) else f"{where}: {text}") from None


@dataclass(frozen=True)
class SweepSpec:
    """A sweep read from a file: shared settings and blocks of alternatives.

    Calling it (or :meth:`configs`) gives the runs, in order.
    """

    name: str
    description: str
    base: dict[str, Any]
    grids: tuple[dict[str, list[Any]], ...]
    source: str
    reuse_from: tuple[str, ...] = ()
    """Sweeps whose result folders, beside this sweep's, hold runs it shares (copied, not rerun)."""

    def configs(self) -> list[ExperimentConfig]:
        """Every combination of each grid block over ``base``, blocks in order, first key outermost;
        a run (same key) listed twice is kept at its first place."""
        out: dict[str, ExperimentConfig] = {}
        for grid in self.grids:
            for values in itertools.product(*grid.values()):
                cfg = build_config(merge_settings(self.base, dict(zip(grid, values))), self.source)
                out.setdefault(cfg.key(), cfg)
        return list(out.values())

    __call__ = configs


def read_sweep(path: str | Path | _Readable, name: str | None = None) -> SweepSpec:
    """Read a sweep file (see the module docstring); ``name`` defaults to the file's stem.

    Raises
    ------
    ValueError
        Naming the file and the key: missing file, bad TOML, an unknown section or key, a grid
        value that is not a non-empty list, a bad value.
    """
    path = Path(path) if isinstance(path, str) else path
    data = _read_toml(path)
    where = str(path)
    unknown = sorted(set(data) - set(_SWEEP_KEYS))
    if unknown and all(k.replace("_", "-") in (*_BY_KEY, BYZANTINE_FRACTION) for k in unknown):
        raise ValueError(f"{where}: settings at the top level make an experiment file (signguard-sim run --config "
                         f"{where}); a sweep file holds them under [base], the alternatives under [grid]")
    if unknown:
        raise ValueError(f"{where}: unknown top-level key(s) {unknown}; a sweep file holds description, reuse-from, [base] and [grid]")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"{where}: description must be a string")
    reuse_from = data.get("reuse-from", [])
    if not isinstance(reuse_from, list) or not all(isinstance(r, str) and r and "/" not in r and r not in (".", "..") for r in reuse_from):
        raise ValueError(f"{where}: reuse-from must be a list of sweep names (result folders beside this sweep's), got {reuse_from!r}")
    base = data.get("base", {})
    if not isinstance(base, dict):
        raise ValueError(f"{where}: base must be a table ([base])")
    base = _check_settings(base, f"{where}: [base]")
    grids = data.get("grid", [{}])
    grids = [grids] if isinstance(grids, dict) else grids
    if not isinstance(grids, list) or not all(isinstance(g, dict) for g in grids):
        raise ValueError(f"{where}: grid must be a table ([grid]) or tables ([[grid]])")
    blocks = []
    for i, grid in enumerate(grids):
        label = f"{where}: [grid]" if len(grids) == 1 else f"{where}: [[grid]] #{i + 1}"
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"{label} key {key!r} must be a non-empty list of values, got {values!r}")
            for value in values:
                _check_settings({key: value}, label)
        if all(k in {g.replace("_", "-") for g in grid} for k in _BYZANTINE_KEYS):
            raise ValueError(f"{label} give num-byzantine or byzantine-fraction, not both")
        blocks.append({k.replace("_", "-"): v for k, v in grid.items()})
    return SweepSpec(name or Path(where).stem, description, base, tuple(blocks), where, tuple(reuse_from))
