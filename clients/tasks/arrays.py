"""The in-memory dataset every loader returns, and the image transform it applies per batch.

A whole split lives in memory as one tensor, so per-round client work only indexes tensors
(no file I/O, no PIL); :meth:`ArrayDataset.get_batch` runs the deterministic transform once on a
stacked batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

__all__ = ["ArrayDataset", "image_transform"]


class ArrayDataset(Dataset):
    """A whole dataset split held in memory.

    Parameters
    ----------
    data : torch.Tensor
        ``(N, ...)`` samples: uint8 images ``(N, C, H, W)``, float images, or int64 token ids.
        uint8 stays uint8 in memory (4x smaller) and is converted at batch time.
    targets : array-like of int
        ``(N,)`` class indices in ``[0, num_classes)``.
    transform : callable, optional
        Deterministic transform that works on one sample *and* on a stacked batch
        (dtype conversion, normalisation).
    augment : callable, optional
        Random per-sample transform applied before ``transform`` (training augmentation).

    Attributes
    ----------
    targets : numpy.ndarray
        ``(N,)`` int64 labels, read-only; partitioners use it without touching the samples.
    """

    def __init__(
        self,
        data: torch.Tensor,
        targets: Any,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        targets_np = np.ascontiguousarray(np.asarray(targets, dtype=np.int64).reshape(-1))
        if len(data) != len(targets_np):
            raise ValueError(f"data has {len(data)} samples but targets has {len(targets_np)}")
        targets_np.setflags(write=False)
        self.data = data
        self.targets = targets_np
        self._targets_t = torch.from_numpy(targets_np.copy())
        self.transform = transform
        self.augment = augment

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.data[index]
        if self.augment is not None:
            x = self.augment(x)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.targets[index])

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack the samples at ``indices`` into one batch.

        Augmentation is drawn per sample (torch's global RNG); the deterministic transform
        runs once on the stacked batch, which is much faster than per sample.

        Parameters
        ----------
        indices : sequence of int
            Positions in this dataset.

        Returns
        -------
        (torch.Tensor, torch.Tensor)
            Inputs and int64 labels.
        """
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        x = self.data[idx]
        if self.augment is not None:
            x = torch.stack([self.augment(sample) for sample in x])
        if self.transform is not None:
            x = self.transform(x)
        return x, self._targets_t[idx]


def image_transform(mean: tuple[float, ...], std: tuple[float, ...]) -> v2.Compose:
    """uint8 pixels to float in [0, 1], then per-channel ``Normalize(mean, std)``."""
    # ToDtype(scale=True) is ToTensor's 0-255 -> 0-1 scaling, done on tensors (single or batch).
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
