"""One experiment's settings, and their flat form for Flower's run config.

Flower's run config (``[tool.flwr.app.config]``, ``flwr run --run-config``) holds flat scalars
only, so the rule's and the attack's own parameters travel as one string each:
``defense-params = "preset=reference,lower=0.1"``, ``attack-params = "z=max"``.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ExperimentConfig", "parse_params", "format_params", "CLIENT_KEYS"]



def parse_params(text: str | dict | None) -> dict[str, Any]:
    """Parse ``"a=1,b=x,c=[1,2]"`` into a dict (values via ``ast.literal_eval`` when possible)."""
    if text is None or text == "":
        return {}
    if isinstance(text, dict):
        return dict(text)
    out: dict[str, Any] = {}
    depth, token, parts = 0, "", []
    for ch in str(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(token)
            token = ""
        else:
            token += ch
    parts.append(token)
    for part in parts:
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"parameter {part!r} is not of the form key=value")
        key, value = (s.strip() for s in part.split("=", 1))
        key = key.replace("-", "_")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def format_params(params: dict[str, Any]) -> str:
    """Inverse of :func:`parse_params` (sorted keys, so equal dicts give equal strings)."""
    return ",".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in sorted(params.items()))


@dataclass
class ExperimentConfig:
    """Everything that defines one simulated run.

    Defaults follow the paper (§V): 50 clients, 10 Byzantine (20%), FedSGD with batch 50,
    server SGD with lr 0.1, momentum 0.9, weight decay 5e-4.  Attributes mirror the run-config keys (``num_clients`` ↔ ``num-clients``).
    """

    task: str = "digits"
    num_clients: int = 50
    num_byzantine: int = 10
    defense: str = "signguard"
    defense_params: dict[str, Any] = field(default_factory=dict)
    attack: str = "none"
    attack_params: dict[str, Any] = field(default_factory=dict)
    partition: str = "iid"
    partition_s: float = 0.3
    dirichlet_alpha: float = 0.5
    rounds: int = 50
    client_mode: str = "fedsgd"
    batch_size: int = 50
    local_epochs: int = 1
    local_lr: float = 0.1
    server_lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: tuple[int, ...] = ()
    seed: int = 0
    data_dir: str = ""
    download: bool = False
    """Let torchvision download a missing MNIST / Fashion-MNIST / CIFAR-10 into ``data_dir``."""
    eval_every: int = 1
    knowledge: str = "omniscient"
    byzantine_placement: str = "random"
    """Which partitions are Byzantine: ``random`` (drawn from the seed) or ``first`` (0..m-1, as the reference)."""
    declared_f: int | None = None
    """f told to the defenses that take one (default: the true number of Byzantine clients)."""
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    device: str = "cpu"

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
        """Flat run-config form (scalars only)."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if value is None:
                continue
            name = key.replace("_", "-")
            if key.endswith("_params"):
                value = format_params(value)
            elif key == "lr_milestones":
                value = ",".join(str(m) for m in value)
            out[name] = value
        return out

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> ExperimentConfig:
        """Build from a flat run config; unknown keys are an error naming them."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        unknown = []
        for raw_key, value in run_config.items():
            key = raw_key.replace("-", "_")
            if key == "byzantine_fraction":
                continue
            if key not in names:
                unknown.append(raw_key)
                continue
            if key.endswith("_params"):
                value = parse_params(value)
            elif key == "lr_milestones":
                value = tuple(int(v) for v in str(value).split(",") if str(v).strip())
            elif key == "download" and isinstance(value, str):
                if value.strip().lower() not in ("true", "false", "1", "0"):
                    raise ValueError(f"run-config key 'download' must be true or false, got {value!r}")
                value = value.strip().lower() in ("true", "1")
            elif key == "declared_f":  # TOML has no null: "" or a negative value means "not set"
                value = None if value in ("", None) or int(value) < 0 else int(value)
            kwargs[key] = value
        if unknown:
            raise ValueError(f"unknown run-config key(s) {sorted(unknown)}; known: {sorted(n.replace('_', '-') for n in names)}")
        if "byzantine_fraction" in {k.replace("-", "_") for k in run_config} and "num_byzantine" not in kwargs:
            fraction = float(run_config.get("byzantine-fraction", run_config.get("byzantine_fraction")))
            if not 0 <= fraction < 1:
                raise ValueError(f"byzantine-fraction must be in [0, 1), got {fraction}")
            n = int(kwargs.get("num_clients", cls.num_clients))
            kwargs["num_byzantine"] = int(round(fraction * n))
        return cls(**kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        """Inverse of :meth:`to_dict` (a result file's ``config``); unknown keys raise TypeError."""
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
CLIENT_KEYS = (
    "task",
    "num-clients",
    "num-byzantine",
    "byzantine-placement",
    "attack",
    "attack-params",
    "partition",
    "partition-s",
    "dirichlet-alpha",
    "client-mode",
    "batch-size",
    "local-epochs",
    "local-lr",
    "seed",
    "data-dir",
    "download",
    "device",
)
