"""Dataset loaders: offline local layouts first, torchvision downloads on request.

Every loader returns ``(train, test)`` :class:`ArrayDataset` objects holding the whole split in
memory as tensors, so per-round client work only indexes tensors (no file I/O, no PIL).

Accepted layouts inside a data directory ``D`` (the first one found wins):

========  ==========================================================================
task      layouts
========  ==========================================================================
mnist     ``D/mnist.npz``; IDX files (plain or ``.gz``) in ``D``, ``D/mnist`` or
          ``D/MNIST/raw`` (torchvision's layout); ``download=True`` uses
          ``torchvision.datasets.MNIST(D)``
fmnist    ``D/fmnist.npz``, ``D/fashion-mnist.npz``, ``D/fashion_mnist.npz``; IDX files in
          ``D``, ``D/fmnist``, ``D/fashion-mnist``, ``D/FashionMNIST/raw``, then Debian's
          ``dataset-fashion-mnist`` package folder; ``download=True`` uses
          ``torchvision.datasets.FashionMNIST(D)``
cifar10   ``D/cifar10.npz``, ``D/cifar-10.npz``; ``D/cifar-10-batches-py`` through
          ``torchvision.datasets.CIFAR10(D)`` (also with ``download=True``)
agnews    ``D/ag_news_train.csv`` + ``D/ag_news_test.csv``, ``D/train.csv`` +
          ``D/test.csv``, or the same two names in ``D/ag_news_csv`` / ``D/ag_news``
========  ==========================================================================

A missing dataset raises :class:`DatasetNotFoundError`, a present but unreadable one
:class:`DatasetFormatError`; both name the directory searched and the layouts accepted.

Modules: this one (the layouts above, the loaders and their constants); :mod:`.arrays`
(:class:`ArrayDataset`); :mod:`.readers` (file formats and the error classes); :mod:`.text`
(AG-News tokenizer and vocabulary).  The names of the first two are re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2

from .arrays import ArrayDataset, image_transform
from .readers import (
    IDX_FILES,
    SPLIT_KEYS,
    DatasetError,
    DatasetFormatError,
    DatasetNotFoundError,
    as_uint8,
    check_split,
    find_idx_set,
    read_agnews_csv,
    read_idx,
    read_npz,
    torchvision_arrays,
)

__all__ = [
    "DATA_DIR_ENV",
    "DEBIAN_FMNIST_DIR",
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetFormatError",
    "ArrayDataset",
    "default_data_dir",
    "read_idx",
    "load_digits_dataset",
    "load_mnist",
    "load_fmnist",
    "load_mnist_mini",
    "MNIST_MINI_PATH",
    "load_cifar10",
    "load_agnews",
    "MNIST_MEAN",
    "MNIST_STD",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "AGNEWS_MAX_LEN",
    "AGNEWS_VOCAB_SIZE",
    "AGNEWS_MIN_FREQ",
]

#: Environment variable that overrides the default data directory.
DATA_DIR_ENV = "SIGNGUARD_DATA_DIR"
#: The bundled MNIST subset of the ``mnist-mini`` task (built by ``clients/tasks/make_mnist_mini.py``).
MNIST_MINI_PATH = Path(__file__).resolve().parent / "data" / "mnist_mini.npz"
#: Where Debian's ``dataset-fashion-mnist`` package installs the gzipped IDX files.
DEBIAN_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# The paper normalises Fashion-MNIST with the MNIST statistics (reference §4); kept as is.
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)

#: AG-News text encoding sizes (see docs/tasks.md): fixed so the model can be built without data.
AGNEWS_MAX_LEN = 64
AGNEWS_VOCAB_SIZE = 10_000
AGNEWS_MIN_FREQ = 2


def default_data_dir() -> Path:
    """Directory the loaders search when none is given.

    Order: ``$SIGNGUARD_DATA_DIR``; the ``shared/data`` folder next to the repository
    (``<repo>/../shared/data``) when it exists; else ``~/.cache/signguard-flwr/data``.

    Returns
    -------
    pathlib.Path
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    shared = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    if shared.is_dir():
        return shared.resolve()
    return Path.home() / ".cache" / "signguard-flwr" / "data"


# --------------------------------------------------------------------------------------------
# Layout search and error reporting
# --------------------------------------------------------------------------------------------

_IDX_NAMES = ", ".join(f"{stem}[.gz]" for stem in IDX_FILES.values())


def _layout_text(layouts: Sequence[str]) -> str:
    return "Accepted layouts:\n" + "\n".join(f"  - {layout}" for layout in layouts)


def _not_found(dataset: str, data_dir: Path, layouts: Sequence[str], hint: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{dataset} not found in data directory '{data_dir}'. {_layout_text(layouts)}\n"
        f"Point the run-config key 'data-dir' (or ${DATA_DIR_ENV}) at the folder holding the data{hint}."
    )


@contextmanager
def _explained(dataset: str, data_dir: Path, layouts: Sequence[str]) -> Iterator[None]:
    """Re-raise a format error with the searched directory and the accepted layouts."""
    try:
        yield
    except DatasetFormatError as exc:
        raise DatasetFormatError(
            f"{dataset}: malformed data: {exc}\nSearched data directory '{data_dir}'. {_layout_text(layouts)}"
        ) from exc


def _load_gray28(
    dataset: str,
    data_dir: Path,
    npz_names: Sequence[str],
    idx_dirs: Sequence[Path],
    torchvision_cls: Callable[..., Any],
    download: bool,
) -> tuple[ArrayDataset, ArrayDataset]:
    """Shared loader of MNIST and Fashion-MNIST (same file formats and shapes)."""
    layouts = [f"{data_dir / n} (arrays {', '.join(SPLIT_KEYS)})" for n in npz_names]
    layouts.append(f"IDX files {_IDX_NAMES} in one of: " + ", ".join(str(d) for d in idx_dirs))
    with _explained(dataset, data_dir, layouts):
        npz = next((data_dir / n for n in npz_names if (data_dir / n).is_file()), None)
        idx = None if npz else next(
            (found for d in idx_dirs if d.is_dir() and (found := find_idx_set(d)) is not None), None
        )
        if npz is not None:
            arrays, where = read_npz(npz), str(npz)
        elif idx is not None:
            arrays = {key: read_idx(path) for key, path in zip(SPLIT_KEYS, idx.values())}
            where = str(idx["train_images"].parent)
        elif download:
            arrays, where = torchvision_arrays(torchvision_cls, data_dir, download=True), str(data_dir)
        else:
            raise _not_found(dataset, data_dir, layouts, ", or set download=True (run-config 'download')")
        return _gray28_splits(arrays, where)


def _gray28_splits(arrays: dict[str, np.ndarray], where: str) -> tuple[ArrayDataset, ArrayDataset]:
    """Checked ``(train, test)`` of 28x28 gray images with the MNIST normalisation."""
    splits = []
    for split in ("train", "test"):
        x, y = np.asarray(arrays[f"x_{split}"]), np.asarray(arrays[f"y_{split}"])
        if x.ndim == 4 and x.shape[1] == 1:  # (N, 1, 28, 28)
            x = x[:, 0]
        elif x.ndim == 4 and x.shape[-1] == 1:  # (N, 28, 28, 1)
            x = x[..., 0]
        check_split(x, y, (28, 28), 10, f"{where} [{split}]")
        x = as_uint8(x, f"{where} [{split}]")
        splits.append(
            ArrayDataset(
                torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1),
                y,
                transform=image_transform(MNIST_MEAN, MNIST_STD),
            )
        )
    return splits[0], splits[1]


# --------------------------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------------------------


def load_digits_dataset(split_seed: int = 0, test_fraction: float = 0.25) -> tuple[ArrayDataset, ArrayDataset]:
    """scikit-learn's 8x8 digits (1,797 images, bundled with scikit-learn: no files needed).

    Parameters
    ----------
    split_seed : int, default 0
        Seed of the stratified train/test split (fixed so the test set is the same in every run).
    test_fraction : float, default 0.25
        Share of the images held out (450 of 1,797).

    Returns
    -------
    (ArrayDataset, ArrayDataset)
        Float32 images ``(N, 1, 8, 8)`` scaled to [0, 1] (pixel values are 0-16), int labels.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[:, None]
    idx_train, idx_test = train_test_split(
        np.arange(len(images)), test_size=test_fraction, random_state=split_seed, stratify=bunch.target
    )
    idx_train, idx_test = np.sort(idx_train), np.sort(idx_test)
    return (
        ArrayDataset(torch.from_numpy(images[idx_train]), bunch.target[idx_train]),
        ArrayDataset(torch.from_numpy(images[idx_test]), bunch.target[idx_test]),
    )


def load_mnist(data_dir: str | Path, download: bool = False) -> tuple[ArrayDataset, ArrayDataset]:
    """MNIST (60,000 + 10,000 images 28x28) from ``data_dir``.

    Parameters
    ----------
    data_dir : str or Path
        Folder searched for the layouts listed in the module docstring.
    download : bool, default False
        Fetch with ``torchvision.datasets.MNIST`` into ``data_dir`` when no layout is found.

    Returns
    -------
    (ArrayDataset, ArrayDataset)
        uint8 ``(N, 1, 28, 28)`` images; transform ToTensor-scaling + Normalize(0.1307, 0.3081).

    Raises
    ------
    DatasetNotFoundError, DatasetFormatError
    """
    from torchvision.datasets import MNIST

    d = Path(data_dir).expanduser()
    return _load_gray28("MNIST", d, ["mnist.npz"], [d, d / "mnist", d / "MNIST" / "raw"], MNIST, download)


def load_mnist_mini(path: str | Path = MNIST_MINI_PATH) -> tuple[ArrayDataset, ArrayDataset]:
    """The bundled MNIST subset: 10,000 training and 2,000 test images (1,000 / 200 per digit).

    Ships with the repository (no data directory, no download), so the main job runs offline on
    a fresh clone.  Same image format and normalisation as :func:`load_mnist`.

    Returns
    -------
    (ArrayDataset, ArrayDataset)

    Raises
    ------
    DatasetNotFoundError, DatasetFormatError
    """
    path = Path(path)
    layouts = [f"{path} (arrays {', '.join(SPLIT_KEYS)})"]
    with _explained("MNIST-mini", path.parent, layouts):
        if not path.is_file():
            raise _not_found("MNIST-mini", path.parent, layouts, "; rebuild it with python -m clients.tasks.make_mnist_mini")
        return _gray28_splits(read_npz(path), str(path))


def load_fmnist(data_dir: str | Path, download: bool = False) -> tuple[ArrayDataset, ArrayDataset]:
    """Fashion-MNIST (60,000 + 10,000 images 28x28) from ``data_dir``.

    Falls back to the folder of Debian's ``dataset-fashion-mnist`` package
    (:data:`DEBIAN_FMNIST_DIR`) when ``data_dir`` holds no Fashion-MNIST layout.

    Parameters
    ----------
    data_dir : str or Path
        Folder searched for the layouts listed in the module docstring.
    download : bool, default False
        Fetch with ``torchvision.datasets.FashionMNIST`` when no layout is found.

    Returns
    -------
    (ArrayDataset, ArrayDataset)
        uint8 ``(N, 1, 28, 28)`` images; normalised with the MNIST statistics as in the paper.

    Raises
    ------
    DatasetNotFoundError, DatasetFormatError
    """
    from torchvision.datasets import FashionMNIST

    d = Path(data_dir).expanduser()
    return _load_gray28(
        "Fashion-MNIST",
        d,
        ["fmnist.npz", "fashion-mnist.npz", "fashion_mnist.npz"],
        [d, d / "fmnist", d / "fashion-mnist", d / "FashionMNIST" / "raw", DEBIAN_FMNIST_DIR],
        FashionMNIST,
        download,
    )


def load_cifar10(data_dir: str | Path, download: bool = False) -> tuple[ArrayDataset, ArrayDataset]:
    """CIFAR-10 (50,000 + 10,000 RGB images 32x32) from ``data_dir``.

    Parameters
    ----------
    data_dir : str or Path
        Folder with ``cifar10.npz`` / ``cifar-10.npz`` (uint8, HWC or CHW) or torchvision's
        ``cifar-10-batches-py``.
    download : bool, default False
        Fetch with ``torchvision.datasets.CIFAR10`` when no layout is found.

    Returns
    -------
    (ArrayDataset, ArrayDataset)
        uint8 ``(N, 3, 32, 32)`` images.  Train: RandomCrop(32, padding 4) +
        RandomHorizontalFlip per sample; both: scaling + Normalize(CIFAR-10 mean/std).

    Raises
    ------
    DatasetNotFoundError, DatasetFormatError
    """
    from torchvision.datasets import CIFAR10

    d = Path(data_dir).expanduser()
    npz_names = ["cifar10.npz", "cifar-10.npz"]
    layouts = [f"{d / n} (arrays {', '.join(SPLIT_KEYS)}; uint8 HWC or CHW)" for n in npz_names]
    layouts.append(f"{d / 'cifar-10-batches-py'} (torchvision's CIFAR10 layout)")
    with _explained("CIFAR-10", d, layouts):
        npz = next((d / n for n in npz_names if (d / n).is_file()), None)
        if npz is not None:
            arrays, where = read_npz(npz), str(npz)
        elif (d / "cifar-10-batches-py").is_dir() or download:
            arrays, where = torchvision_arrays(CIFAR10, d, download=download), str(d / "cifar-10-batches-py")
        else:
            raise _not_found("CIFAR-10", d, layouts, ", or set download=True (run-config 'download')")
        augment = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])
        splits = []
        for split in ("train", "test"):
            x, y = np.asarray(arrays[f"x_{split}"]), np.asarray(arrays[f"y_{split}"])
            if x.ndim == 4 and x.shape[-1] == 3 and x.shape[1] != 3:
                x = x.transpose(0, 3, 1, 2)  # HWC -> CHW
            check_split(x, y, (3, 32, 32), 10, f"{where} [{split}]")
            x = as_uint8(x, f"{where} [{split}]")
            splits.append(
                ArrayDataset(
                    torch.from_numpy(np.ascontiguousarray(x)),
                    y,
                    transform=image_transform(CIFAR10_MEAN, CIFAR10_STD),
                    augment=augment if split == "train" else None,
                )
            )
    return splits[0], splits[1]


def load_agnews(
    data_dir: str | Path,
    download: bool = False,
    *,
    max_len: int = AGNEWS_MAX_LEN,
    vocab_size: int = AGNEWS_VOCAB_SIZE,
    min_freq: int = AGNEWS_MIN_FREQ,
) -> tuple[ArrayDataset, ArrayDataset]:
    """AG-News from CSV files, encoded with a vocabulary built from the training text only.

    Parameters
    ----------
    data_dir : str or Path
        Folder with ``ag_news_train.csv`` + ``ag_news_test.csv`` or ``train.csv`` +
        ``test.csv`` (also inside ``ag_news_csv/`` or ``ag_news/``).  No header; columns
        class (1-4), title, description; fields may be quoted.
    download : bool, default False
        Not supported for AG-News (no torchvision class); only changes the error message.
    max_len, vocab_size, min_freq : int
        Encoding sizes; ``vocab_size`` includes ``<pad>`` and ``<unk>`` and must not exceed
        the model's embedding table.

    Returns
    -------
    (ArrayDataset, ArrayDataset)
        int64 token ids ``(N, max_len)`` (0 = padding), labels 0-3 (class - 1).  Both carry
        the :class:`~clients.tasks.text.Vocabulary` as attribute ``vocab``.

    Raises
    ------
    DatasetNotFoundError, DatasetFormatError
    """
    from .text import Vocabulary, encode_texts, tokenize

    d = Path(data_dir).expanduser()
    pairs = [
        (folder / f"{prefix}train.csv", folder / f"{prefix}test.csv")
        for folder in (d, d / "ag_news_csv", d / "ag_news")
        for prefix in ("ag_news_", "")
    ]
    layouts = [f"{tr} + {te.name} (no header; class 1-4, title, description)" for tr, te in pairs]
    with _explained("AG-News", d, layouts):
        found = next(((tr, te) for tr, te in pairs if tr.is_file() and te.is_file()), None)
        if found is None:
            half = next((path for pair in pairs for path in pair if path.is_file()), None)
            if half is not None:
                raise DatasetFormatError(f"found {half} but not its train/test counterpart")
            hint = " (no automatic download exists for AG-News)" if download else ""
            raise _not_found("AG-News", d, layouts, hint)
        (train_texts, y_train), (test_texts, y_test) = (read_agnews_csv(path) for path in found)
    train_tokens = [tokenize(t) for t in train_texts]
    vocab = Vocabulary.build(train_tokens, min_freq=min_freq, max_size=vocab_size)
    datasets = []
    for tokens, y in ((train_tokens, y_train), ([tokenize(t) for t in test_texts], y_test)):
        ds = ArrayDataset(encode_texts(tokens, vocab, max_len), y)
        ds.vocab = vocab  # type: ignore[attr-defined]
        datasets.append(ds)
    return datasets[0], datasets[1]
