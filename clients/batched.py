"""Every client's FedSGD step of a round in one batched call (``torch.func``).

A FedSGD client does little work: one forward/backward of one mini-batch from the global
model, then ``w - 1 * grad``.  Run one client after another, a round of K clients costs K
small kernels' worth of launch overhead and K model loads; with ``torch.func`` the K gradients
are one ``vmap`` over clients of ``grad`` of a ``functional_call``, i.e. about one
forward/backward of all K x B images.

Two layers:

* :func:`fedsgd_steps_batched` — the pure computation: per client, the state_dict after the unit
  step and the loss, the same (up to float rounding) as :func:`clients.training.train_fedsgd` on
  each client's batch;
* :func:`prepare_round` / :func:`take_prepared` — a per-process cache that an engine fills for a
  round's clients before delivering the round's messages (``simulations.engine.InProcessGrid``
  with ``batched_clients=True``), and that :func:`clients.training.local_train` consults, so the
  ClientApp, its mods and the Byzantine wrappers still run for every client: only the
  gradient's arithmetic moved.  An entry is used only for exactly the computation it replaces
  (see :func:`take_prepared`), once, and the engine clears the cache after each round.

Models with random operations (dropout) are refused: ``vmap`` draws randomness either the
same for every client or from one shared generator, so it cannot reproduce the per-client
seeded RNG of :func:`clients.training.client_compute`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from clients.settings import ClientSettings

if TYPE_CHECKING:  # client_app imports training, which imports this module
    from clients.client_app import ClientData

__all__ = [
    "FedSGDJob",
    "batching_refusal",
    "check_batchable",
    "clear_prepared",
    "fedsgd_steps_batched",
    "prepare_round",
    "prepared_count",
    "take_prepared",
]


# --------------------------------------------------------------------------------------------
# The pure computation
# --------------------------------------------------------------------------------------------


def batching_refusal(model: nn.Module) -> str | None:
    """Why ``model`` cannot take the batched FedSGD step, or None when it can.

    Refused: dropout with ``p > 0`` and RReLU (random in train mode: the per-client seeded RNG
    cannot be reproduced under ``vmap``), recurrent layers (cuDNN RNN kernels and packed
    sequences have no ``vmap`` batching rule), and BatchNorm with ``momentum=None`` (its
    cumulative average reads ``num_batches_tracked`` as a Python number, which a batched tensor
    cannot give).  Random operations called functionally in ``forward`` are not visible here;
    :func:`fedsgd_steps_batched` catches them when ``vmap`` meets them.
    """
    for name, module in model.named_modules():
        where = f"{type(model).__name__}.{name}" if name else type(model).__name__
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return (
                f"{where} is {type(module).__name__}(p={module.p}): a random operation, and vmap cannot reproduce "
                "each client's seeded RNG; train these clients one by one"
            )
        if isinstance(module, nn.RReLU):
            return f"{where} is RReLU: random in train mode, and vmap cannot reproduce each client's seeded RNG"
        if isinstance(module, nn.RNNBase):
            return f"{where} is a recurrent layer ({type(module).__name__}): not supported under vmap"
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.momentum is None and module.track_running_stats:
            return f"{where} is BatchNorm with momentum=None (cumulative average): not supported under vmap"
    return None


def check_batchable(model: nn.Module) -> None:
    """Raise ``ValueError`` with :func:`batching_refusal`'s reason when ``model`` is refused."""
    reason = batching_refusal(model)
    if reason is not None:
        raise ValueError(f"batched FedSGD refused: {reason}")


def fedsgd_steps_batched(
    model: nn.Module,
    xs: torch.Tensor,
    ys: torch.Tensor,
    state: Mapping[str, torch.Tensor] | None = None,
) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
    """K clients' FedSGD steps from one global model, as one ``vmap`` over clients.

    Client ``k``'s result is what :func:`clients.training.train_fedsgd` leaves in a model loaded
    with the global state after training on ``(xs[k], ys[k])``: parameters ``p - grad_k`` (the
    cross-entropy gradient in train mode, unit step), buffers as one train-mode forward on client
    k's batch leaves them (BatchNorm normalises with client k's batch statistics and updates its
    own copy of ``running_mean``, ``running_var`` and ``num_batches_tracked``).

    Parameters
    ----------
    model : torch.nn.Module
        Gives the architecture (and the global weights when ``state`` is None).  Not modified:
        its tensors are substituted through ``torch.func.functional_call``; its train/eval flags
        are restored on return.
    xs : torch.Tensor
        ``(K, B, ...)`` inputs, one batch per client (all of one batch size ``B``; clients with
        another batch size go into another call).
    ys : torch.Tensor
        ``(K, B)`` int64 labels.
    state : mapping of str to torch.Tensor, optional
        The global state_dict to step from (default: the model's own tensors).  Moved to the
        model's device.

    Returns
    -------
    (list of dict, torch.Tensor)
        ``K`` state_dicts (keys in ``model.state_dict()`` order; views into stacked ``(K, ...)``
        tensors on the model's device) and the ``(K,)`` batch losses before the step.

    Raises
    ------
    ValueError
        A model with a random operation (dropout, ...) or another layer :func:`batching_refusal`
        refuses; inputs of inconsistent shapes.
    """
    check_batchable(model)
    if xs.dim() < 2 or ys.dim() != 2 or xs.shape[:2] != ys.shape:
        raise ValueError(f"xs must be (K, B, ...) and ys (K, B); got {tuple(xs.shape)} and {tuple(ys.shape)}")
    num_clients = xs.shape[0]
    device = next(model.parameters()).device
    xs, ys = xs.to(device), ys.to(device)
    source = model.state_dict(keep_vars=True) if state is None else state
    named_params = dict(model.named_parameters())
    named_buffers = dict(model.named_buffers())
    trainable = {k: source[k].detach().to(device) for k, p in named_params.items() if p.requires_grad}
    frozen = {k: source[k].detach().to(device) for k, p in named_params.items() if not p.requires_grad}
    # Buffers go in stacked, one private copy per client, as a batched input: BatchNorm's train
    # forward updates running_mean / running_var / num_batches_tracked in place, and under vmap
    # an in-place update of a batched tensor writes that client's slice only, so each client
    # ends with its own updated statistics (checked against the per-client path in the tests).
    # A buffer that is not in a state_dict (non-persistent) comes from the model itself.
    buffers = {
        k: source.get(k, b).detach().to(device).unsqueeze(0).repeat(num_clients, *([1] * b.dim()))
        for k, b in named_buffers.items()
    }

    def client_loss(params: dict[str, torch.Tensor], bufs: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor):
        return F.cross_entropy(functional_call(model, {**params, **frozen, **bufs}, (x,)), y)

    modes = [(m, m.training) for m in model.modules()]
    model.train()  # as train_fedsgd: batch statistics, running-stat updates
    try:
        # in_dims: the parameters are shared (None), the buffers and the data per client (0);
        # randomness="error" turns any random op vmap meets into an error instead of a draw.
        grads, losses = vmap(grad_and_value(client_loss), in_dims=(None, 0, 0, 0), randomness="error")(
            trainable, buffers, xs, ys
        )
    except RuntimeError as err:
        if "random" in str(err):
            raise ValueError(f"batched FedSGD refused: the model calls a random operation ({err})") from None
        raise
    finally:
        for module, mode in modes:
            module.training = mode
    with torch.no_grad():
        # The same float32 arithmetic as train_fedsgd's p.sub_(p.grad).
        stepped = {k: trainable[k] - grads[k] for k in trainable}
    # state_dict keys name parameters and persistent buffers (a tied tensor under every name).
    names = {id(t): k for k, t in named_params.items()}
    names.update({id(t): k for k, t in named_buffers.items()})
    stacked: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        name = names.get(id(tensor), key)
        if name in stepped:
            stacked[key] = stepped[name]
        elif name in buffers:
            stacked[key] = buffers[name]
        else:  # a frozen parameter: unchanged, as train_fedsgd leaves a parameter without grad
            stacked[key] = frozen[name].unsqueeze(0).expand(num_clients, *frozen[name].shape)
    states = [{k: v[i] for k, v in stacked.items()} for i in range(num_clients)]
    return states, losses.detach()


# --------------------------------------------------------------------------------------------
# The per-round cache an engine fills and local_train consults
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FedSGDJob:
    """One client's FedSGD step of a round, as :func:`clients.training.local_train` would run it.

    Attributes
    ----------
    partition_id : int
    data : ClientData
    settings : ClientSettings
    server_round : int
        The round number the client will be called with (its batch depends on it).
    label_transform : str or None
        The message's ``"label-transform"`` as the engine sees it.
    """

    partition_id: int
    data: ClientData
    settings: ClientSettings
    server_round: int
    label_transform: str | None = None


@dataclass(frozen=True, eq=False)
class _Global:
    """The global state a round's entries were computed from, flattened for a cheap exact check."""

    signature: tuple[tuple[str, torch.dtype, tuple[int, ...]], ...]
    flat: dict[torch.dtype, torch.Tensor]


@dataclass(frozen=True, eq=False)
class _Entry:
    base: _Global
    sample_indices: np.ndarray  # the dataset rows the batch was drawn from
    dataset: Any  # the ArrayDataset object itself (identity)
    state: dict[str, torch.Tensor]
    loss: float


# key -> entry; replaced by prepare_round, emptied by clear_prepared, an entry removed when used.
_PREPARED: dict[Hashable, _Entry] = {}


def _transform_key(label_transform: str | None) -> str | None:
    # apply_label_transform treats None, "" and "none" alike; anything else is its own key.
    return None if label_transform in (None, "", "none") else str(label_transform)


def _key(partition_id: int, server_round: int, label_transform: str | None, settings: ClientSettings) -> Hashable:
    # The whole (frozen) settings object: seed, batch size, task, partition, device, ... all
    # take part; the data rows and the global state are checked on use (take_prepared).
    return (int(partition_id), int(server_round), _transform_key(label_transform), settings)


def _flatten(state: Mapping[str, torch.Tensor]) -> _Global:
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in state.values():
        by_dtype.setdefault(tensor.dtype, []).append(tensor.detach().reshape(-1))
    signature = tuple((k, t.dtype, tuple(t.shape)) for k, t in state.items())
    return _Global(signature, {dtype: torch.cat(parts) for dtype, parts in by_dtype.items()})


def _same_global(model: nn.Module, base: _Global) -> bool:
    """Whether ``model`` holds exactly (bitwise) the state ``base`` was computed from.

    One concatenation and one comparison per dtype instead of one per tensor: on a GPU a
    per-tensor ``torch.equal`` would synchronise ~120 times for ResNet-18.
    """
    state = model.state_dict()
    if tuple((k, t.dtype, tuple(t.shape)) for k, t in state.items()) != base.signature:
        return False
    mine = _flatten(state).flat
    for dtype, flat in base.flat.items():
        other = mine.get(dtype)
        if other is None or other.device != flat.device or not torch.equal(other, flat):
            return False
    return True


def clear_prepared() -> None:
    """Drop every prepared result (the engine calls this after each round)."""
    _PREPARED.clear()


def prepared_count() -> int:
    """Number of prepared results not yet used (diagnostics and tests)."""
    return len(_PREPARED)


def prepare_round(
    global_state: Mapping[str, torch.Tensor],
    jobs: Iterable[FedSGDJob],
    *,
    model: nn.Module | None = None,
) -> int:
    """Compute ``jobs``' FedSGD steps from ``global_state`` in batched calls and cache them.

    The cache is replaced: results of earlier calls are dropped first.  Jobs not in FedSGD mode,
    and jobs whose model :func:`batching_refusal` refuses, are skipped (their clients train one
    by one as usual).  Jobs are grouped by (task, device, batch shape): a client with fewer
    samples than the batch size has a smaller batch and cannot share the others' ``vmap``.

    Each job's batch is drawn exactly as :func:`clients.training.local_train` draws it, inside
    the same :func:`clients.training.client_compute` seed, so random augmentation gives the same
    images.

    Parameters
    ----------
    global_state : mapping of str to torch.Tensor
        The global model's state_dict the clients will be loaded with.
    jobs : iterable of FedSGDJob
    model : torch.nn.Module, optional
        Architecture to use for every job (default: the ClientApp's cached model of each job's
        task on its device).  Not modified.

    Returns
    -------
    int
        Number of results cached.
    """
    # Imported here: clients.training (and through it the ClientApp) imports this module.
    from clients import training
    from clients.client_app import _cached_model
    from clients.settings import resolve_device

    clear_prepared()
    groups: dict[tuple[Any, ...], list[tuple[FedSGDJob, np.ndarray, torch.Tensor, torch.Tensor]]] = {}
    models: dict[tuple[str, str], nn.Module] = {}
    for job in jobs:
        settings = job.settings
        if settings.client_mode != "fedsgd":
            continue
        device = resolve_device(settings.device)
        arch = (settings.task, str(device))
        if arch not in models:
            models[arch] = model if model is not None else _cached_model(settings.task, str(device))
        if batching_refusal(models[arch]) is not None:
            continue
        data = job.data
        pos = training.fedsgd_batch_positions(data.num_train, settings.batch_size, job.server_round, settings.seed, job.partition_id)
        rows = data.train_indices[pos]
        # The same RNG state local_train draws the batch in (augmentation uses the global RNG).
        with training.client_compute(training.derive_seed(settings.seed, job.partition_id, job.server_round), device):
            x, y = data.train.get_batch(rows)
        y = training.apply_label_transform(y, job.label_transform, data.task.num_classes)
        group = (*arch, tuple(x.shape), x.dtype, tuple(y.shape))
        groups.setdefault(group, []).append((job, rows, x, y))

    bases: dict[str, _Global] = {}
    for (task, device_name, *_), members in groups.items():
        arch_model = models[(task, device_name)]
        device = next(arch_model.parameters()).device
        if device_name not in bases:
            bases[device_name] = _flatten({k: v.detach().to(device) for k, v in global_state.items()})
        xs = torch.stack([x for _, _, x, _ in members])
        ys = torch.stack([y for _, _, _, y in members])
        try:
            states, losses = fedsgd_steps_batched(arch_model, xs, ys, state=global_state)
        except ValueError:
            continue  # a random op met inside forward: these clients train one by one
        for (job, rows, _, _), state, loss in zip(members, states, losses.tolist(), strict=True):
            key = _key(job.partition_id, job.server_round, job.label_transform, job.settings)
            _PREPARED[key] = _Entry(bases[device_name], rows, job.data.train, state, float(loss))
    return len(_PREPARED)


def take_prepared(
    model: nn.Module,
    data: ClientData,
    settings: ClientSettings,
    *,
    partition_id: int,
    server_round: int,
    label_transform: str | None,
    positions: Sequence[int] | np.ndarray,
) -> float | None:
    """Load a prepared result into ``model`` if one matches this exact FedSGD call.

    Matches only when the entry was prepared for the same ``(partition_id, server_round,
    label transform, settings)`` (all client settings, seed and batch size included), from the
    same dataset object and rows (``data.train_indices[positions]``), and from bitwise the
    state ``model`` holds now.  The entry is removed whether or not it matched, so it is
    used at most once.

    Returns
    -------
    float or None
        The batch loss when the model now holds the prepared result; None when nothing matched
        (``model`` untouched: compute as usual).
    """
    if not _PREPARED:
        return None
    entry = _PREPARED.pop(_key(partition_id, server_round, label_transform, settings), None)
    if entry is None or entry.dataset is not data.train:
        return None
    rows = data.train_indices[positions]
    if not np.array_equal(rows, entry.sample_indices) or not _same_global(model, entry.base):
        return None
    model.load_state_dict(entry.state, strict=True)
    model.train()  # the mode train_fedsgd leaves the model in
    for p in model.parameters():
        p.grad = None
    return entry.loss
