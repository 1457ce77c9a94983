"""The honest ClientApp: FedSGD (one mini-batch gradient, unit step) or FedAvg (local SGD).

Message protocol (the ServerApp and the strategies rely on it):

* **train** request: ``"arrays"`` ArrayRecord of the global model's full ``state_dict``
  (parameters and buffers), ``"config"`` ConfigRecord with ``"server-round"`` (int) and
  optional overrides of the client settings (:data:`clients.schema.CLIENT_SETTINGS`); optional
  ``"label-transform": "flip"`` (data-poisoning hook, see :func:`apply_label_transform`).
* **train** reply: ``"arrays"`` (the local model's full ``state_dict`` after training: same keys,
  shapes and dtypes), ``"metrics"`` MetricRecord ``{"num-examples", "train-loss"}``,
  ``"diag"`` ConfigRecord ``{"partition-id"}`` (diagnostics for the simulation adversary only).
* **evaluate** request: same ``"arrays"`` + ``"config"``; reply ``"metrics"``
  ``{"num-examples", "eval-loss", "eval-acc"}`` on the client's share of the test set.

Settings (:mod:`clients.settings`) come from ``context.run_config``, overridden key by key by
the message's ConfigRecord; the partition id and count from ``context.node_config``.  All heavy
lifting is in plain functions that tests and the Byzantine wrappers call without Flower: the
client's data here (:func:`load_client_data`), training and evaluation in :mod:`clients.training`
(:func:`~clients.training.local_train`, :func:`~clients.training.evaluate`, ...; re-exported here).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from torch import nn

from clients.batched import clear_prepared
from clients.settings import ClientSettings, resolve_device, resolve_settings
from clients.tasks import ArrayDataset, Task, default_data_dir, get_task, partition
from clients.tasks.datasets import DATA_DIR_ENV
from clients.tasks.partitions import iid_partition
from clients.training import (
    LABEL_TRANSFORMS,
    apply_label_transform,
    client_compute,
    derive_seed,
    evaluate,
    fedavg_epoch_positions,
    fedsgd_batch_positions,
    iter_batches,
    local_train,
    train_fedsgd,
    train_sgd,
)
from signguard_flwr.arrays import array_numpy, state_record

__all__ = [
    "EVAL_BATCH_SIZE",
    "LABEL_TRANSFORMS",
    "ClientData",
    "ClientSettings",
    "app",
    "apply_label_transform",
    "clear_caches",
    "client_data_for",
    "derive_seed",
    "evaluate",
    "fedavg_epoch_positions",
    "fedsgd_batch_positions",
    "iter_batches",
    "load_client_data",
    "local_train",
    "resolve_device",
    "resolve_settings",
    "state_dict_on_cpu",
    "train_fedsgd",
    "train_sgd",
]

#: Batch size of client-side evaluation (no gradients, so larger than the training batch).
EVAL_BATCH_SIZE = 500


# --------------------------------------------------------------------------------------------
# Client data (cached per process)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ClientData:
    """One client's view of a task's data.

    Attributes
    ----------
    task : Task
    train, test : ArrayDataset
        The whole splits (shared by all clients of the process; never modified).
    train_indices : numpy.ndarray
        This client's training samples (sorted positions in ``train``).
    test_indices : numpy.ndarray
        This client's share of the test set (an IID split of the test set into
        ``num_partitions`` parts, so the shares' example-weighted mean is the full test set).
    """

    task: Task
    train: ArrayDataset
    test: ArrayDataset
    train_indices: np.ndarray = field(repr=False)
    test_indices: np.ndarray = field(repr=False)

    @property
    def num_train(self) -> int:
        """Number of this client's training samples."""
        return len(self.train_indices)


# Datasets are the expensive part (CIFAR-10 ≈ 150 MB as uint8); a Ray actor serves many virtual
# clients, so keep the last few loaded tasks and the partitions computed from them.
@functools.lru_cache(maxsize=2)
def _cached_splits(task_name: str, data_dir: str, download: bool) -> tuple[ArrayDataset, ArrayDataset]:
    return get_task(task_name).load(data_dir, download=download)


@functools.lru_cache(maxsize=32)
def _cached_partitions(
    task_name: str,
    data_dir: str,
    download: bool,
    partition_name: str,
    params: tuple[tuple[str, Any], ...],
    num_partitions: int,
    seed: int,
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    train, test = _cached_splits(task_name, data_dir, download)
    train_parts = partition(partition_name, train.targets, num_partitions, seed, **dict(params))
    test_parts = iid_partition(len(test), num_partitions, seed)
    for part in (*train_parts, *test_parts):
        part.setflags(write=False)
    return tuple(train_parts), tuple(test_parts)


def clear_caches() -> None:
    """Drop the per-process dataset, partition and model caches (and batched FedSGD results)."""
    clear_prepared()
    _last_state[:] = [None, None]
    _cached_splits.cache_clear()
    _cached_partitions.cache_clear()
    _cached_model.cache_clear()
    _client_data_for.cache_clear()


def load_client_data(
    task: str | Task,
    data_dir: str | Path | None,
    partition_name: str,
    partition_params: Mapping[str, Any] | None,
    partition_id: int,
    num_partitions: int,
    seed: int,
    *,
    download: bool = False,
) -> ClientData:
    """The data of client ``partition_id`` of ``num_partitions`` (cached per process).

    Parameters
    ----------
    task : str or Task
        Task name or object.
    data_dir : str, Path or None
        Dataset folder (None or "" = default folder).
    partition_name : str
        ``iid``, ``shard`` or ``dirichlet``.
    partition_params : mapping or None
        Parameters of the partition (e.g. ``{"s": 0.3}``, ``{"alpha": 0.5}``).
    partition_id, num_partitions : int
        This client's index and the number of clients.
    seed : int
        Partition seed.
    download : bool, default False

    Returns
    -------
    ClientData
    """
    task_obj = get_task(task) if isinstance(task, str) else task
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} is outside [0, num-partitions={num_partitions})")
    # Tasks with bundled data ignore the folder: one cache entry whatever data-dir says.
    folder = str(Path(data_dir).expanduser().resolve()) if data_dir else str(default_data_dir())
    folder = folder if task_obj.needs_data_dir else ""
    params = tuple(sorted((partition_params or {}).items()))
    train, test = _cached_splits(task_obj.name, folder, bool(download))
    train_parts, test_parts = _cached_partitions(
        task_obj.name, folder, bool(download), partition_name, params, num_partitions, seed
    )
    return ClientData(task_obj, train, test, train_parts[partition_id], test_parts[partition_id])


def client_data_for(settings: ClientSettings, partition_id: int, num_partitions: int) -> ClientData:
    """:func:`load_client_data` with everything taken from ``settings``."""
    return _client_data_for(settings, partition_id, num_partitions, os.environ.get(DATA_DIR_ENV, ""))


# Resolving the data folder stats the file system (~0.5 ms of a ~10 ms MNIST client call,
# profiled); a node asks for the same view every round.  The environment variable that can
# move the default folder is part of the key.
@functools.lru_cache(maxsize=4096)
def _client_data_for(settings: ClientSettings, partition_id: int, num_partitions: int, _data_env: str) -> ClientData:
    return load_client_data(
        settings.task,
        settings.resolved_data_dir(),
        settings.partition,
        settings.partition_params(),
        partition_id,
        num_partitions,
        settings.seed,
        download=settings.download,
    )


@functools.lru_cache(maxsize=2)
def _cached_model(task_name: str, device: str = "cpu") -> nn.Module:
    # Rebuilding ResNet-18 every round costs more than the round's FedSGD step on small
    # batches; every use overwrites all parameters and buffers with a strict load_state_dict.
    return get_task(task_name).build_model().to(device)


# --------------------------------------------------------------------------------------------
# Flower handlers
# --------------------------------------------------------------------------------------------


def _message_config(msg: Message) -> ConfigRecord:
    try:
        return msg.content["config"]  # type: ignore[return-value]
    except KeyError:
        raise ValueError("Message lacks the ConfigRecord 'config' (needs at least 'server-round')") from None


def _node_partition(context: Context) -> tuple[int, int]:
    try:
        pid, num = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    except KeyError:
        raise ValueError(
            "node_config lacks 'partition-id' / 'num-partitions' (simulation sets them; in a deployment "
            "start the SuperNode with --node-config \"partition-id=<i> num-partitions=<n>\")"
        ) from None
    if not 0 <= pid < num:
        raise ValueError(f"partition-id {pid} is outside [0, num-partitions={num})")
    return pid, num


def state_dict_on_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` on the CPU, moved from a GPU in one copy per dtype.

    Flower's ``ArrayRecord`` moves each tensor to the CPU on its own: for ResNet-18 that is 122
    synchronising copies, measured at 87 ms of a 173 ms client call on an H200 (the training
    step took 12 ms).  One concatenated copy per dtype, split into views on the CPU, is the
    same data.
    """
    state = model.state_dict()
    if all(t.device.type == "cpu" for t in state.values()):
        return state
    return _gather_to_cpu(state)


def _gather_to_cpu(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    by_dtype: dict[torch.dtype, list[str]] = {}
    for key, tensor in state.items():
        by_dtype.setdefault(tensor.dtype, []).append(key)
    for dtype, keys in by_dtype.items():
        flat = torch.cat([state[k].detach().reshape(-1) for k in keys]).cpu()
        for key, part in zip(keys, torch.split(flat, [state[k].numel() for k in keys]), strict=True):
            out[key] = part.view(state[key].shape)
    return {key: out[key] for key in state}  # the state_dict's order


# The last global model parsed from an ArrayRecord, keyed by its arrays' serialised bytes.
# Under the in-process engine every client of a round receives copies of the same Array objects,
# sharing one immutable ``bytes`` buffer each, so parsing them once a round instead of once a
# client saves ~15% of a client call (numpy's header parsing); under Ray or a deployment each
# message is deserialised anew and the cache simply misses.
_last_state: list[Any] = [None, None]


def _array_key(record: ArrayRecord) -> tuple[tuple[Any, ...], ...]:
    return tuple((k, a.data, a.dtype, tuple(a.shape), a.stype) for k, a in record.items())


def _state_dict_of(record: ArrayRecord) -> dict[str, torch.Tensor]:
    key = _array_key(record)
    held, state = _last_state
    if held is not None and len(held) == len(key) and all(
        a[0] == b[0] and a[1] is b[1] and a[2:] == b[2:] for a, b in zip(held, key)
    ):
        return state
    state = {k: torch.from_numpy(array_numpy(a)) for k, a in record.items()}
    _last_state[:] = [key, state]  # holding the buffers keeps their identities from being reused
    return state


def _load_model(msg: Message, task_name: str, device: str = "cpu") -> nn.Module:
    try:
        record = msg.content["arrays"]
    except KeyError:
        raise ValueError("Message lacks the ArrayRecord 'arrays' (the global model's state_dict)") from None
    if not isinstance(record, ArrayRecord):
        raise ValueError(f"Message's 'arrays' is a {type(record).__name__}, not an ArrayRecord")
    model = _cached_model(task_name, str(resolve_device(device)))
    # strict=True: a missing, extra or mis-shaped tensor raises instead of training a mix.
    # load_state_dict copies into the model's own tensors: the cached state is never written.
    model.load_state_dict(_state_dict_of(record), strict=True)
    return model


app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train on the client's data from the received global model and reply with the new one."""
    config = _message_config(msg)
    if "server-round" not in config:
        raise ValueError("Train config lacks 'server-round'")
    server_round = int(config["server-round"])  # type: ignore[arg-type]
    settings = resolve_settings(context.run_config, config)
    partition_id, num_partitions = _node_partition(context)
    data = client_data_for(settings, partition_id, num_partitions)
    model = _load_model(msg, settings.task, settings.device)
    label_transform = config.get("label-transform")
    metrics = local_train(
        model,
        data,
        settings,
        partition_id=partition_id,
        server_round=server_round,
        label_transform=None if label_transform is None else str(label_transform),
    )
    content = RecordDict(
        {
            "arrays": state_record(state_dict_on_cpu(model)),
            "metrics": MetricRecord(metrics),
            "diag": ConfigRecord({"partition-id": partition_id}),
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_handler(msg: Message, context: Context) -> Message:
    """Evaluate the received model on the client's share of the test set."""
    config = _message_config(msg)
    settings = resolve_settings(context.run_config, config)
    partition_id, num_partitions = _node_partition(context)
    data = client_data_for(settings, partition_id, num_partitions)
    model = _load_model(msg, settings.task, settings.device)
    device = next(model.parameters()).device
    with client_compute(derive_seed(settings.seed, partition_id), device):
        batches = ((x.to(device), y.to(device)) for x, y in iter_batches(data.test, data.test_indices, EVAL_BATCH_SIZE))
        loss, acc, n = evaluate(model, batches)
    content = RecordDict({"metrics": MetricRecord({"num-examples": n, "eval-loss": loss, "eval-acc": acc})})
    return Message(content=content, reply_to=msg)
