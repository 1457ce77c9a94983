"""Client-side training and evaluation as plain functions (no Flower types).

The honest ClientApp (:mod:`clients.client_app`) calls :func:`local_train` and :func:`evaluate`
from its handlers; tests, benchmarks and the analysis scripts call them directly.  Batch choice
is a pure function of ``(seed, partition id, round)`` (:func:`fedsgd_batch_positions`,
:func:`fedavg_epoch_positions`), and :func:`client_compute` seeds a private torch RNG per call, so
a client's update does not depend on which process served it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clients.batched import take_prepared
from clients.settings import ClientSettings
from clients.tasks import ArrayDataset

if TYPE_CHECKING:  # client_app imports this module at run time
    from clients.client_app import ClientData

__all__ = [
    "LABEL_TRANSFORMS",
    "apply_label_transform",
    "client_compute",
    "derive_seed",
    "evaluate",
    "fedavg_epoch_positions",
    "fedsgd_batch_positions",
    "iter_batches",
    "local_train",
    "train_fedsgd",
    "train_sgd",
]

#: Accepted values of the message key ``"label-transform"``.
LABEL_TRANSFORMS = ("none", "flip")


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from non-negative integers (numpy SeedSequence)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def fedsgd_batch_positions(
    n_local: int, batch_size: int, server_round: int, seed: int, partition_id: int
) -> np.ndarray:
    """Positions (into the client's index array) of the batch used in ``server_round``.

    The client walks through its own shuffled data one batch per round, like the reference's
    per-client DataLoader iterator, but the position is recomputed from the round number so
    it does not depend on which process served the client before:
    ``step = server_round - 1``; ``epoch, k = divmod(step, batches_per_epoch)``; the batch is
    slice ``k`` of the permutation seeded by ``(seed, partition_id, epoch)``.
    ``batches_per_epoch = max(1, n_local // batch_size)``: the incomplete last batch of an
    epoch is skipped (a different remainder each epoch); a client with fewer than
    ``batch_size`` samples uses all of them every round.

    Parameters
    ----------
    n_local : int
        Number of the client's training samples.
    batch_size : int
    server_round : int
        1-based round number.
    seed, partition_id : int

    Returns
    -------
    numpy.ndarray
        ``min(batch_size, n_local)`` positions.
    """
    if n_local < 1:
        raise ValueError(f"client {partition_id} has no training data")
    if server_round < 1:
        raise ValueError(f"server-round must be >= 1, got {server_round}")
    per_epoch = max(1, n_local // batch_size)
    epoch, k = divmod(server_round - 1, per_epoch)
    perm = np.random.default_rng([seed, partition_id, epoch]).permutation(n_local)
    return perm[k * batch_size : (k + 1) * batch_size]


def fedavg_epoch_positions(
    n_local: int, batch_size: int, epochs: int, server_round: int, seed: int, partition_id: int
) -> Iterator[np.ndarray]:
    """Batches of positions for ``epochs`` local epochs (reshuffled each epoch, last batch kept)."""
    if n_local < 1:
        raise ValueError(f"client {partition_id} has no training data")
    for epoch in range(epochs):
        perm = np.random.default_rng([seed, partition_id, server_round, epoch, 1]).permutation(n_local)
        for start in range(0, n_local, batch_size):
            yield perm[start : start + batch_size]


def apply_label_transform(y: torch.Tensor, transform: str | None, num_classes: int) -> torch.Tensor:
    """The data-poisoning hook: ``"flip"`` maps each label y to ``num_classes - 1 - y``.

    The label-flip Byzantine wrapper sets ``"label-transform": "flip"`` in the train
    message's ConfigRecord; honest code paths see ``None`` and get ``y`` back unchanged.

    Parameters
    ----------
    y : torch.Tensor
        int64 labels.
    transform : str or None
        ``None``, ``""``, ``"none"`` or ``"flip"``.
    num_classes : int

    Returns
    -------
    torch.Tensor

    Raises
    ------
    ValueError
        Any other transform name (never train silently on the wrong data).
    """
    if transform is None or transform == "" or transform == "none":
        return y
    if transform == "flip":
        return (num_classes - 1) - y
    raise ValueError(f"Unknown label-transform {transform!r}; accepted: {list(LABEL_TRANSFORMS)}")


def iter_batches(
    dataset: ArrayDataset,
    indices: np.ndarray,
    batch_size: int,
    positions: Iterable[np.ndarray] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``dataset`` batches of the samples ``indices``.

    Parameters
    ----------
    dataset : ArrayDataset
    indices : numpy.ndarray
        The client's sample indices in ``dataset``.
    batch_size : int
        Used when ``positions`` is None: consecutive batches in ``indices`` order.
    positions : iterable of numpy.ndarray, optional
        Explicit batches of positions into ``indices``.
    """
    if positions is None:
        positions = (np.arange(s, min(s + batch_size, len(indices))) for s in range(0, len(indices), batch_size))
    for pos in positions:
        yield dataset.get_batch(indices[pos])


def _zero_grads(model: nn.Module) -> None:
    for p in model.parameters():
        p.grad = None


def train_fedsgd(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """One FedSGD client step: cross-entropy gradient on ``batch``, then ``w <- w - 1 * grad``.

    The model is in train mode (dropout active, BatchNorm uses and updates batch statistics),
    as in the reference.  The unit step makes ``returned - global == -grad`` up to float32
    rounding, so the server recovers the gradient from an ordinary model reply.  No momentum
    or weight decay (the server optimizer applies those).

    Parameters
    ----------
    model : torch.nn.Module
        Loaded with the global weights; modified in place.
    batch : (torch.Tensor, torch.Tensor)
        Inputs and int64 labels.

    Returns
    -------
    float
        The batch loss before the step.
    """
    x, y = batch
    model.train()
    # One walk over the module tree instead of three (``parameters()`` recurses every call).
    params = list(model.parameters())
    for p in params:
        p.grad = None
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.sub_(p.grad)
                p.grad = None
    return float(loss.detach())


def train_sgd(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], lr: float) -> tuple[float, int]:
    """Plain SGD (no momentum, no weight decay) over ``batches`` in train mode.

    Parameters
    ----------
    model : torch.nn.Module
        Modified in place.
    batches : iterable of (torch.Tensor, torch.Tensor)
    lr : float

    Returns
    -------
    (float, int)
        Sample-weighted mean training loss and number of samples processed.
    """
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    total, count = 0.0, 0
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(y)
        count += len(y)
    _zero_grads(model)
    return (total / count if count else 0.0), count


def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float, int]:
    """Mean cross-entropy and top-1 accuracy in eval mode.

    Parameters
    ----------
    model : torch.nn.Module
    batches : iterable of (torch.Tensor, torch.Tensor)
        E.g. :func:`iter_batches` or a ``torch.utils.data.DataLoader``.

    Returns
    -------
    (float, float, int)
        Loss, accuracy and number of examples (0.0, 0.0, 0 for no batches).
    """
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for x, y in batches:
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
            count += len(y)
    if count == 0:
        return 0.0, 0.0, 0
    return loss_sum / count, correct / count, count


@contextlib.contextmanager
def client_compute(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """One torch thread (Ray actors share the cores) and a private, seeded torch RNG.

    Dropout and augmentation draw from torch's global generator (and the GPU's, for dropout on
    CUDA); forking it keeps runs reproducible per (seed, client, round) without disturbing the
    caller's RNG state.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    gpus = [device.index if device.index is not None else torch.cuda.current_device()] if device is not None and device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=gpus, device_type="cuda"):
            # The same seeds torch.manual_seed would set, on the generators in use only:
            # torch.manual_seed also queues a lazy seed for every accelerator backend (CUDA,
            # XPU, MTIA), each formatting a stack trace, which cost ~8% of a CPU client call.
            torch.random.default_generator.manual_seed(seed)
            for index in gpus:
                torch.cuda.default_generators[index].manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)


def local_train(
    model: nn.Module,
    data: ClientData,
    settings: ClientSettings,
    *,
    partition_id: int,
    server_round: int,
    label_transform: str | None = None,
) -> dict[str, int | float]:
    """Run the client's round of training on ``model`` (in place) as ``settings.client_mode`` says.

    Parameters
    ----------
    model : torch.nn.Module
        Loaded with the global weights.
    data : ClientData
    settings : ClientSettings
    partition_id, server_round : int
    label_transform : str or None
        See :func:`apply_label_transform`.

    Returns
    -------
    dict
        ``{"num-examples": int, "train-loss": float}``.

    Notes
    -----
    In FedSGD mode a result prepared for exactly this call by :func:`clients.batched.prepare_round`
    (same client, round, label transform, settings, batch rows and global state) is loaded
    instead of computing the step again; see :func:`clients.batched.take_prepared`.
    """
    num_classes = data.task.num_classes
    apply_label_transform(torch.zeros(0, dtype=torch.int64), label_transform, num_classes)  # validate early
    device = next(model.parameters()).device  # batches go where the model is
    with client_compute(derive_seed(settings.seed, partition_id, server_round), device):
        if settings.client_mode == "fedsgd":
            pos = fedsgd_batch_positions(data.num_train, settings.batch_size, server_round, settings.seed, partition_id)
            # An engine may have computed this very step already, batched with the round's other
            # clients (clients.batched); used only for exactly this call and this global state.
            loss = take_prepared(
                model, data, settings, partition_id=partition_id, server_round=server_round,
                label_transform=label_transform, positions=pos,
            )
            if loss is not None:
                return {"num-examples": len(pos), "train-loss": loss}
            x, y = data.train.get_batch(data.train_indices[pos])
            y = apply_label_transform(y, label_transform, num_classes)
            loss = train_fedsgd(model, (x.to(device), y.to(device)))
            return {"num-examples": len(pos), "train-loss": loss}
        positions = fedavg_epoch_positions(
            data.num_train, settings.batch_size, settings.local_epochs, server_round, settings.seed, partition_id
        )
        batches = (
            (x.to(device), apply_label_transform(y, label_transform, num_classes).to(device))
            for x, y in iter_batches(data.train, data.train_indices, settings.batch_size, positions)
        )
        loss, _ = train_sgd(model, batches, settings.local_lr)
        return {"num-examples": data.num_train, "train-loss": loss}

