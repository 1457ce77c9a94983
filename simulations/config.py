"""One experiment's settings, and their flat form for Flower's run config.

The fields, their defaults and their parsing come from the table :data:`clients.schema.SETTINGS`
(shared with the ClientApp, the CLI and pyproject.toml's ``[tool.flwr.app.config]``).  Flower's
run config holds flat scalars only, so the rule's and the attack's own parameters travel as one
string each: ``defense-params = "preset=reference,lower=0.1"``, ``attack-params = "z=max"``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from clients.schema import EXPERIMENT_SETTINGS, format_params, parse_params, settings_dataclass

__all__ = ["ExperimentConfig", "parse_params", "format_params", "CLIENT_KEYS", "BYZANTINE_FRACTION"]

#: A run-config key that is no field: sets ``num-byzantine = round(fraction · num-clients)``.
BYZANTINE_FRACTION = "byzantine-fraction"
_BY_KEY = {s.key: s for s in EXPERIMENT_SETTINGS}


@settings_dataclass(EXPERIMENT_SETTINGS)
class ExperimentConfig:
    """Everything that defines one simulated run: one field per experiment setting of
    :data:`clients.schema.SETTINGS` (attribute ``num_clients`` ↔ run-config key ``num-clients``).

    Defaults follow the paper (§V) and the main job: 50 clients, 10 Byzantine (20%), FedSGD
    with batch 50, server SGD with lr 0.1, momentum 0.9, weight decay 5e-4, 150 rounds,
    evaluated every 5.
    """

    def __post_init__(self) -> None:
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
        if self.num_clients < 1:
            raise ValueError(f"num_clients must be >= 1, got {self.num_clients}")
        if not 0 <= self.num_byzantine < self.num_clients:
            raise ValueError(
                f"num_byzantine must be in [0, num_clients), got {self.num_byzantine} of {self.num_clients}"
            )
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")

    # ------------------------------------------------------------------ identity
    @property
    def f(self) -> int:
        """The f given to defenses that need one."""
        return self.num_byzantine if self.declared_f is None else self.declared_f

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["lr_milestones"] = list(self.lr_milestones)
        return data

    def key(self) -> str:
        """A short stable hash of every setting: names result files, detects finished runs."""
        payload = {k: v for k, v in self.to_dict().items() if k not in ("data_dir", "download", "num_cpus", "num_gpus", "device")}
        digest = hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:10]
        return f"{self.task}-{self.defense}-{self.attack}-b{self.num_byzantine}-{self.partition}-s{self.seed}-{digest}"

    # ------------------------------------------------------------------ run config
    def to_run_config(self) -> dict[str, Any]:
        """Flat run-config form (scalars only; an unset ``declared-f`` is left out)."""
        values = [(s, getattr(self, s.attr)) for s in EXPERIMENT_SETTINGS]
        return {s.key: s.to_run_config(v) for s, v in values if v is not None}

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any], *, where: str = "run-config") -> ExperimentConfig:
        """Build from a flat run config (or an experiment file's keys; ``_`` or ``-`` in keys).

        Values are converted to each setting's kind (``"3"`` → 3, ``1`` → 1.0 for a float,
        ``"z=0.3"`` → ``{"z": 0.3}``) and range-checked; ``byzantine-fraction`` sets
        ``num-byzantine`` when that is not given.  ``where`` names the source in errors
        (``"run-config"``, or a file's path).

        Raises
        ------
        ValueError
            An unknown key (naming it and the known ones), or a bad value naming its key.
        """
        prefix = f"{where} key" if where == "run-config" else f"{where}: key"
        kwargs: dict[str, Any] = {}
        unknown = []
        fraction = None
        for raw_key, value in run_config.items():
            key = str(raw_key).replace("_", "-")
            if key == BYZANTINE_FRACTION:
                fraction = value
                continue
            setting = _BY_KEY.get(key)
            if setting is None:
                unknown.append(raw_key)
                continue
            kwargs[setting.attr] = setting.coerce(value, f"{prefix} {raw_key!r}")
            problem = setting.violation(kwargs[setting.attr])
            if problem:
                raise ValueError(f"{prefix} {raw_key!r} {problem}, got {value!r}")
        if unknown:
            what = "unknown run-config key(s)" if where == "run-config" else f"{where}: unknown key(s)"
            raise ValueError(f"{what} {sorted(unknown)}; known: {sorted(_BY_KEY)}")
        if fraction is not None and "num_byzantine" not in kwargs:
            try:
                fraction = float(fraction)
            except (TypeError, ValueError):
                raise ValueError(f"{prefix} 'byzantine-fraction': expected a number, got {fraction!r}") from None
            if not 0 <= fraction < 1:
                raise ValueError(f"byzantine-fraction must be in [0, 1), got {fraction}")
            kwargs["num_byzantine"] = int(round(fraction * kwargs.get("num_clients", _BY_KEY["num-clients"].default)))
        return cls(**kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        """Inverse of :meth:`to_dict` (a result file's ``config``); unknown keys raise TypeError.

        Values are taken as they are (no conversion): the key of a committed result must not move.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise TypeError(f"unknown config field(s) {unknown}")
        return cls(**data)

    def replace(self, **changes: Any) -> ExperimentConfig:
        return dataclasses.replace(self, **changes)

    def client_config(self) -> dict[str, Any]:
        """The run-config keys clients need (forwarded in every message's ConfigRecord)."""
        flat = self.to_run_config()
        return {k: flat[k] for k in CLIENT_KEYS if k in flat}


# Keys of the run config that the ClientApp (and the Byzantine wrapper) need; the ServerApp
# forwards them in every train/evaluate ConfigRecord so clients see them under any engine.
CLIENT_KEYS: tuple[str, ...] = tuple(s.key for s in EXPERIMENT_SETTINGS if s.side != "server")
