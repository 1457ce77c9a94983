"""What a loopback deployment is made of: paths, the environment, node specs, ports, flwr's version.

Shared by :mod:`.core` (which starts the processes) and :mod:`.runs` (``flwr run``); nothing
here starts a process except :func:`flwr_version`, which asks an interpreter for its flwr.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "REPO_ROOT",
    "DEFAULT_STATE_DIR",
    "CONNECTION_NAME",
    "HOST",
    "BASE_ENV",
    "DeploymentError",
    "NodeSpec",
    "node_specs",
    "toml_value",
    "format_node_config",
    "free_port",
    "port_open",
    "flwr_version",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = REPO_ROOT / ".deploy"
CONNECTION_NAME = "signguard-deploy"
HOST = "127.0.0.1"

# Offline and quiet, for every process we start (the SuperLink and SuperNodes pass their
# environment on to the SuperExec and app processes they spawn).
BASE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PYTHONUNBUFFERED": "1",
    "NO_COLOR": "1",
}


class DeploymentError(RuntimeError):
    """A deployment step failed (the message names the step and points at its log)."""


@dataclass
class NodeSpec:
    """One SuperNode: its partition and extra node config (``byzantine``, ``attack``, ``fault``...)."""

    partition_id: int
    byzantine: bool = False
    attack: str = "none"
    extra: dict[str, Any] = field(default_factory=dict)

    def node_config(self, num_partitions: int) -> dict[str, Any]:
        config: dict[str, Any] = {
            "partition-id": self.partition_id,
            "num-partitions": num_partitions,
            "byzantine": self.byzantine,
        }
        if self.byzantine:
            config["attack"] = self.attack
        config.update(self.extra)
        return config


def node_specs(
    nodes: int | Sequence[NodeSpec],
    byzantine: int,
    attack: str,
    node_extra: Mapping[int, Mapping[str, Any]] | None,
) -> list[NodeSpec]:
    """The SuperNodes to start, checked, with ``node_extra`` merged into each one's extra config.

    Parameters
    ----------
    nodes : int or sequence of NodeSpec
        A count (partitions ``0..n-1``, the first ``byzantine`` of them Byzantine, running the
        client-side ``attack``) or explicit specs (taken as they are).
    byzantine : int
    attack : str
    node_extra : mapping, optional
        More node config per partition id (e.g. ``{2: {"fault": "nan"}}``).

    Returns
    -------
    list of NodeSpec

    Raises
    ------
    DeploymentError
        No node, a Byzantine count outside ``[0, n)``, or an attack a deployment cannot run.
    """
    from clients.attacks import get_attack, is_client_side

    if isinstance(nodes, int):
        if nodes < 1:
            raise DeploymentError("need at least one SuperNode")
        if not 0 <= byzantine < nodes:
            raise DeploymentError(f"--byzantine must be in [0, {nodes}), got {byzantine}")
        get_attack(attack)
        if byzantine and not is_client_side(attack):
            raise DeploymentError(
                f"attack {attack!r} is not a client-side attack: colluding attacks (lie, byzmean, "
                "min_max, min_sum) need a collusion channel between the Byzantine nodes, which a "
                "deployment does not have (see docs/deployment.md); time_varying is simulation-only")
        specs = [NodeSpec(i, byzantine=i < byzantine, attack=attack) for i in range(nodes)]
    else:
        specs = list(nodes)
    for spec in specs:
        spec.extra = {**spec.extra, **dict((node_extra or {}).get(spec.partition_id, {}))}
    return specs


def toml_value(value: Any) -> str:
    """``value`` as a TOML literal: booleans and numbers as such, anything else a quoted string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string


def format_node_config(config: Mapping[str, Any]) -> str:
    """``--node-config`` text: ``key=value`` pairs, strings quoted (flwr parses each as TOML)."""
    return " ".join(f"{k}={toml_value(v)}" for k, v in config.items())


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nothing listens on now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = HOST) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def flwr_version(bin_dir: Path) -> tuple[int, int, int]:
    """The flwr version installed beside ``bin_dir/python``."""
    out = subprocess.run(
        [str(bin_dir / "python"), "-c", "import flwr; print(flwr.__version__)"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.strip()
    parts = [int(p) for p in re.findall(r"\d+", out)[:3]]
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]
