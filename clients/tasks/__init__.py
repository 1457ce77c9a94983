"""Learning tasks of the SignGuard experiments: dataset + model + class count, by name.

>>> from clients.tasks import get_task
>>> task = get_task("digits")
>>> model = task.build_model()
>>> train, test = task.load()          # (ArrayDataset, ArrayDataset), labels in `.targets`

Tasks: ``digits`` (scikit-learn 8x8, offline default), ``mnist``, ``fmnist`` (paper CNN),
``cifar10`` (CIFAR ResNet-18), ``agnews`` (TextRNN).  See ``docs/tasks.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from torch import nn

from .datasets import (
    AGNEWS_VOCAB_SIZE,
    ArrayDataset,
    DatasetError,
    DatasetFormatError,
    DatasetNotFoundError,
    default_data_dir,
    load_agnews,
    load_cifar10,
    load_digits_dataset,
    load_fmnist,
    load_mnist,
    load_mnist_mini,
)
from .models import DigitsMLP, MnistCNN, TextRNN, cifar_resnet18, count_parameters
from .partitions import PARTITIONS, dirichlet_partition, iid_partition, partition, shard_partition

__all__ = [
    "Task",
    "TASKS",
    "get_task",
    "ArrayDataset",
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetFormatError",
    "default_data_dir",
    "count_parameters",
    "PARTITIONS",
    "partition",
    "iid_partition",
    "shard_partition",
    "dirichlet_partition",
]


@dataclass(frozen=True)
class Task:
    """A learning task: how to get its data and how to build its model.

    Parameters
    ----------
    name : str
        Registry key.
    num_classes : int
        Number of labels (label-flip maps y to ``num_classes - 1 - y``).
    model_fn : callable
        ``() -> nn.Module``; must not depend on the data, so the server can build the initial
        model without loading any dataset.
    loader : callable
        ``(data_dir, download) -> (train, test)``.
    needs_data_dir : bool
        False for tasks whose data ship with a Python package (digits).
    """

    name: str
    num_classes: int
    model_fn: Callable[[], nn.Module]
    loader: Callable[[Path, bool], tuple[ArrayDataset, ArrayDataset]]
    needs_data_dir: bool = True

    def build_model(self) -> nn.Module:
        """A freshly initialised model (deterministic given ``torch.manual_seed``)."""
        return self.model_fn()

    def load(self, data_dir: str | Path | None = None, download: bool = False) -> tuple[ArrayDataset, ArrayDataset]:
        """Load ``(train, test)`` into memory.

        Parameters
        ----------
        data_dir : str, Path or None
            Folder holding the data; None = :func:`default_data_dir`.
        download : bool, default False
            Let torchvision download MNIST / Fashion-MNIST / CIFAR-10 when absent.

        Returns
        -------
        (ArrayDataset, ArrayDataset)

        Raises
        ------
        DatasetNotFoundError, DatasetFormatError
        """
        path = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        return self.loader(path, download)


def _load_digits(_data_dir: Path, _download: bool) -> tuple[ArrayDataset, ArrayDataset]:
    # Bundled with scikit-learn: the data directory and download flag do not apply.
    return load_digits_dataset()


def _load_mnist_mini(data_dir: Path, _download: bool) -> tuple[ArrayDataset, ArrayDataset]:
    # Bundled with the repository; where the code runs without it (an app installed from a FAB,
    # which carries code and text only) the same file is read from the data directory.
    from . import datasets

    bundled = datasets.MNIST_MINI_PATH
    copy = Path(data_dir) / bundled.name
    return load_mnist_mini(bundled if bundled.is_file() or not copy.is_file() else copy)


TASKS: dict[str, Task] = {
    "digits": Task(
        name="digits",
        num_classes=10,
        model_fn=DigitsMLP,
        loader=_load_digits,
        needs_data_dir=False,
    ),
    "mnist-mini": Task(name="mnist-mini", num_classes=10, model_fn=MnistCNN, loader=_load_mnist_mini),
    "mnist": Task(name="mnist", num_classes=10, model_fn=MnistCNN, loader=load_mnist),
    "fmnist": Task(name="fmnist", num_classes=10, model_fn=MnistCNN, loader=load_fmnist),
    "cifar10": Task(name="cifar10", num_classes=10, model_fn=cifar_resnet18, loader=load_cifar10),
    "agnews": Task(
        name="agnews",
        num_classes=4,
        model_fn=partial(TextRNN, AGNEWS_VOCAB_SIZE, embed_dim=64, hidden_size=64, num_layers=2, num_classes=4),
        loader=load_agnews,
    ),
}


def get_task(name: str) -> Task:
    """The registered task ``name``; ValueError listing the choices otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown task {name!r}; choose one of {sorted(TASKS)}") from None
