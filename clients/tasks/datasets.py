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
"""

from __future__ import annotations

import csv
import gzip
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

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

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# IDX type byte -> numpy dtype (big-endian, as the format specifies).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DatasetError(Exception):
    """Base class of the loader errors (catch this to handle both kinds)."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """No accepted layout of the dataset exists in the searched directory."""


class DatasetFormatError(DatasetError, ValueError):
    """A dataset file exists but is incomplete, corrupt or has unexpected shapes."""


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
# In-memory dataset
# --------------------------------------------------------------------------------------------


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


def _image_transform(mean: tuple[float, ...], std: tuple[float, ...]) -> v2.Compose:
    # ToDtype(scale=True) is ToTensor's 0-255 -> 0-1 scaling, done on tensors (single or batch).
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


# --------------------------------------------------------------------------------------------
# Readers for the raw file formats
# --------------------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetFormatError(f"Cannot read {path}: {exc}") from exc


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), plain or gzip-compressed.

    Header: two zero bytes, a type byte (0x08 = uint8, ...), the number of dimensions, then
    one big-endian uint32 per dimension; the data follow in C order.  MNIST images have
    magic 2051 (uint8, 3 dims), labels 2049 (uint8, 1 dim).

    Parameters
    ----------
    path : str or Path
        ``*-ubyte`` or ``*-ubyte.gz`` file.

    Returns
    -------
    numpy.ndarray
        Array with the file's shape and (native-endian) dtype.

    Raises
    ------
    DatasetFormatError
        Bad magic number, truncated file or unreadable gzip stream.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetFormatError(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFormatError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetFormatError(
            f"{path}: IDX header announces shape {shape} ({expected} bytes) "
            f"but the file holds {len(raw) - header} data bytes"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx_set(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (plain preferred over .gz); None if none exist.

    A partial set is an error rather than "not found": the user clearly meant this folder.
    """
    found: dict[str, Path] = {}
    for key, stem in _IDX_FILES.items():
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
    if not found:
        return None
    if len(found) < len(_IDX_FILES):
        missing = [f"{_IDX_FILES[k]}[.gz]" for k in _IDX_FILES if k not in found]
        raise DatasetFormatError(f"Incomplete IDX dataset in {folder}: missing {', '.join(missing)}")
    return found


def _check_split(
    x: np.ndarray, y: np.ndarray, image_shape: tuple[int, ...], num_classes: int, where: str
) -> None:
    if x.ndim != 1 + len(image_shape) or tuple(x.shape[1:]) != image_shape:
        expected = ", ".join(map(str, image_shape))
        raise DatasetFormatError(f"{where}: images have shape {x.shape}, expected (N, {expected})")
    if y.ndim != 1 or len(y) != len(x):
        raise DatasetFormatError(f"{where}: {len(x)} images but labels of shape {y.shape}")
    if len(y) == 0:
        raise DatasetFormatError(f"{where}: empty split")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes:
        raise DatasetFormatError(f"{where}: labels must be integers in [0, {num_classes})")


def _as_uint8(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer) and x.size and x.min() >= 0 and x.max() <= 255:
        return x.astype(np.uint8)
    raise DatasetFormatError(f"{where}: images must be uint8 pixel values 0-255, got dtype {x.dtype}")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise DatasetFormatError(
                    f"{path}: missing arrays {missing}; expected {', '.join(keys)} (found {npz.files})"
                )
            return {k: npz[k] for k in keys}
    except DatasetFormatError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, pickle refusal...
        raise DatasetFormatError(f"Cannot read {path} as a .npz archive: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Layout search and error reporting
# --------------------------------------------------------------------------------------------

_SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
_IDX_NAMES = ", ".join(f"{stem}[.gz]" for stem in _IDX_FILES.values())


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


def _torchvision_arrays(cls: Callable[..., Any], root: Path, download: bool) -> dict[str, np.ndarray]:
    """Load both splits through a torchvision dataset class and return numpy arrays."""
    out: dict[str, np.ndarray] = {}
    for split, train in (("train", True), ("test", False)):
        try:
            ds = cls(root=str(root), train=train, download=download)
        except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted."
            raise DatasetFormatError(f"torchvision {cls.__name__} could not load '{root}': {exc}") from exc
        out[f"x_{split}"] = np.asarray(ds.data)
        out[f"y_{split}"] = np.asarray(ds.targets)
    return out


def _load_gray28(
    dataset: str,
    data_dir: Path,
    npz_names: Sequence[str],
    idx_dirs: Sequence[Path],
    torchvision_cls: Callable[..., Any],
    download: bool,
) -> tuple[ArrayDataset, ArrayDataset]:
    """Shared loader of MNIST and Fashion-MNIST (same file formats and shapes)."""
    layouts = [f"{data_dir / n} (arrays {', '.join(_SPLIT_KEYS)})" for n in npz_names]
    layouts.append(f"IDX files {_IDX_NAMES} in one of: " + ", ".join(str(d) for d in idx_dirs))
    with _explained(dataset, data_dir, layouts):
        npz = next((data_dir / n for n in npz_names if (data_dir / n).is_file()), None)
        idx = None if npz else next(
            (found for d in idx_dirs if d.is_dir() and (found := _find_idx_set(d)) is not None), None
        )
        if npz is not None:
            arrays, where = _read_npz(npz), str(npz)
        elif idx is not None:
            arrays = {key: read_idx(path) for key, path in zip(_SPLIT_KEYS, idx.values())}
            where = str(idx["train_images"].parent)
        elif download:
            arrays, where = _torchvision_arrays(torchvision_cls, data_dir, download=True), str(data_dir)
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
        _check_split(x, y, (28, 28), 10, f"{where} [{split}]")
        x = _as_uint8(x, f"{where} [{split}]")
        splits.append(
            ArrayDataset(
                torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1),
                y,
                transform=_image_transform(MNIST_MEAN, MNIST_STD),
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
    layouts = [f"{path} (arrays {', '.join(_SPLIT_KEYS)})"]
    with _explained("MNIST-mini", path.parent, layouts):
        if not path.is_file():
            raise _not_found("MNIST-mini", path.parent, layouts, "; rebuild it with python -m clients.tasks.make_mnist_mini")
        return _gray28_splits(_read_npz(path), str(path))


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
    layouts = [f"{d / n} (arrays {', '.join(_SPLIT_KEYS)}; uint8 HWC or CHW)" for n in npz_names]
    layouts.append(f"{d / 'cifar-10-batches-py'} (torchvision's CIFAR10 layout)")
    with _explained("CIFAR-10", d, layouts):
        npz = next((d / n for n in npz_names if (d / n).is_file()), None)
        if npz is not None:
            arrays, where = _read_npz(npz), str(npz)
        elif (d / "cifar-10-batches-py").is_dir() or download:
            arrays, where = _torchvision_arrays(CIFAR10, d, download=download), str(d / "cifar-10-batches-py")
        else:
            raise _not_found("CIFAR-10", d, layouts, ", or set download=True (run-config 'download')")
        augment = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])
        splits = []
        for split in ("train", "test"):
            x, y = np.asarray(arrays[f"x_{split}"]), np.asarray(arrays[f"y_{split}"])
            if x.ndim == 4 and x.shape[-1] == 3 and x.shape[1] != 3:
                x = x.transpose(0, 3, 1, 2)  # HWC -> CHW
            _check_split(x, y, (3, 32, 32), 10, f"{where} [{split}]")
            x = _as_uint8(x, f"{where} [{split}]")
            splits.append(
                ArrayDataset(
                    torch.from_numpy(np.ascontiguousarray(x)),
                    y,
                    transform=_image_transform(CIFAR10_MEAN, CIFAR10_STD),
                    augment=augment if split == "train" else None,
                )
            )
    return splits[0], splits[1]


def _read_agnews_csv(path: Path) -> tuple[list[str], np.ndarray]:
    texts: list[str] = []
    labels: list[int] = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for line_no, row in enumerate(csv.reader(fh), start=1):
                if len(row) != 3:
                    raise DatasetFormatError(
                        f"{path}, row {line_no}: expected 3 fields (class 1-4, title, description), got {len(row)}"
                    )
                label = int(row[0]) if row[0].strip().isdigit() else -1
                if not 1 <= label <= 4:
                    raise DatasetFormatError(f"{path}, row {line_no}: class must be 1-4, got {row[0]!r}")
                labels.append(label - 1)
                texts.append(f"{row[1]} {row[2]}")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetFormatError(f"Cannot read {path} as AG-News CSV: {exc}") from exc
    if not texts:
        raise DatasetFormatError(f"{path}: no rows")
    return texts, np.asarray(labels, dtype=np.int64)


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
        (train_texts, y_train), (test_texts, y_test) = (_read_agnews_csv(path) for path in found)
    train_tokens = [tokenize(t) for t in train_texts]
    vocab = Vocabulary.build(train_tokens, min_freq=min_freq, max_size=vocab_size)
    datasets = []
    for tokens, y in ((train_tokens, y_train), ([tokenize(t) for t in test_texts], y_test)):
        ds = ArrayDataset(encode_texts(tokens, vocab, max_len), y)
        ds.vocab = vocab  # type: ignore[attr-defined]
        datasets.append(ds)
    return datasets[0], datasets[1]
