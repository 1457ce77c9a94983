"""The honest ClientApp's settings: read from the run config and the message, validated once.

The fields are the settings of :data:`clients.schema.SETTINGS` that the client reads (side
``client`` or ``both``); their kinds, defaults and ranges come from that table.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from clients.schema import CLIENT_SETTINGS, choices_of, settings_dataclass
from clients.tasks import default_data_dir, get_task

__all__ = ["ClientSettings", "resolve_settings", "resolve_device"]


@settings_dataclass(CLIENT_SETTINGS, frozen=True)
class ClientSettings:
    """Client-side settings; field ``x_y`` is run-config key ``x-y`` (see :data:`clients.schema.SETTINGS`).

    ``task`` (``digits``, ``mnist-mini``, ``mnist``, ``fmnist``, ``cifar10``, ``agnews``),
    ``data_dir`` ("" = :func:`clients.tasks.default_data_dir`), ``download``, ``partition``
    (``iid``, ``shard``, ``dirichlet``) with ``partition_s``, ``dirichlet_alpha`` and
    ``dirichlet_min_size``, ``seed`` (partitions, batch order, dropout, augmentation),
    ``client_mode`` (``fedsgd``: one batch gradient, unit step; ``fedavg``: ``local_epochs``
    of SGD at ``local_lr``), ``batch_size`` and ``device`` (``cpu``, ``cuda``, ``cuda:N`` or
    ``auto``: CUDA when this process sees a GPU; under Ray, a client given no GPU sees none).
    """

    def resolved_data_dir(self) -> Path:
        """``data_dir`` as an absolute path (default folder when empty)."""
        return Path(self.data_dir).expanduser().resolve() if self.data_dir else default_data_dir()

    def partition_params(self) -> dict[str, Any]:
        """Keyword parameters of :func:`clients.tasks.partition` for ``self.partition``."""
        if self.partition == "shard":
            return {"s": self.partition_s}
        if self.partition == "dirichlet":
            return {"alpha": self.dirichlet_alpha, "min_size": self.dirichlet_min_size}
        return {}


def resolve_settings(
    run_config: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None
) -> ClientSettings:
    """Build validated :class:`ClientSettings` from the run config and message overrides.

    Parameters
    ----------
    run_config : mapping
        ``context.run_config``; keys that are not client settings are ignored (the ServerApp's
        own keys live there too).
    overrides : mapping, optional
        The message's ConfigRecord; its client-setting keys win over ``run_config``.

    Returns
    -------
    ClientSettings

    Raises
    ------
    ValueError
        A value of the wrong type or out of range, naming the key.
    """
    values: dict[str, Any] = {}
    for source in (run_config or {}, overrides or {}):
        for s in CLIENT_SETTINGS:
            if s.key in source:
                values[s.attr] = s.coerce(source[s.key], f"Config key {s.key!r}")
    settings = ClientSettings(**values)
    get_task(settings.task)  # raises with the list of tasks
    for s in CLIENT_SETTINGS:
        value = getattr(settings, s.attr)
        known = choices_of(s) if s.choices not in (None, "tasks") else None
        if known is not None and value not in known:
            raise ValueError(f"Config key {s.key!r}: {value!r} is not one of {known}")
        problem = s.violation(value)
        if problem:
            raise ValueError(f"Config key {s.key!r} {problem}, got {value!r}")
    resolve_device(settings.device)
    return settings


def resolve_device(name: str) -> torch.device:
    """The torch device named by the ``device`` setting (``auto``: CUDA when visible, else CPU).

    Raises
    ------
    ValueError
        An unknown device name, or CUDA asked for where this process sees no GPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"Config key 'device': {name!r} is not a torch device (cpu, cuda, cuda:N, auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Config key 'device': {name!r} asked for, but this process sees no CUDA GPU (use 'auto' or 'cpu')")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"Config key 'device': {name!r} is not supported (cpu, cuda, cuda:N, auto)")
    return device
