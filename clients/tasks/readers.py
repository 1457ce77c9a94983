"""Readers of the raw dataset files (IDX, ``.npz``, AG-News CSV, torchvision folders) and their errors.

Each reader returns numpy arrays (or texts and labels) and raises :class:`DatasetFormatError`
for a file that exists but cannot be used; :mod:`clients.tasks.datasets` picks the layout, turns
the arrays into :class:`~clients.tasks.arrays.ArrayDataset` objects and adds the searched
directory and the accepted layouts to the message.
"""

from __future__ import annotations

import csv
import gzip
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetFormatError",
    "IDX_FILES",
    "SPLIT_KEYS",
    "read_idx",
    "find_idx_set",
    "check_split",
    "as_uint8",
    "read_npz",
    "torchvision_arrays",
    "read_agnews_csv",
]

#: The arrays of a dataset file, in the order :func:`find_idx_set` returns the IDX files.
SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
#: The file names (without ``.gz``) of MNIST's IDX set, by role.
IDX_FILES = {
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


def find_idx_set(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (plain preferred over .gz); None if none exist.

    A partial set is an error rather than "not found": the user clearly meant this folder.
    """
    found: dict[str, Path] = {}
    for key, stem in IDX_FILES.items():
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
    if not found:
        return None
    if len(found) < len(IDX_FILES):
        missing = [f"{IDX_FILES[k]}[.gz]" for k in IDX_FILES if k not in found]
        raise DatasetFormatError(f"Incomplete IDX dataset in {folder}: missing {', '.join(missing)}")
    return found


def check_split(
    x: np.ndarray, y: np.ndarray, image_shape: tuple[int, ...], num_classes: int, where: str
) -> None:
    """Check one split's shapes and labels.

    Parameters
    ----------
    x : numpy.ndarray
        ``(N, *image_shape)`` images.
    y : numpy.ndarray
        ``(N,)`` integer labels.
    image_shape : tuple of int
    num_classes : int
        Labels must lie in ``[0, num_classes)``.
    where : str
        Names the file and split in the error message.

    Raises
    ------
    DatasetFormatError
        Wrong shapes, an empty split, or labels out of range.
    """
    if x.ndim != 1 + len(image_shape) or tuple(x.shape[1:]) != image_shape:
        expected = ", ".join(map(str, image_shape))
        raise DatasetFormatError(f"{where}: images have shape {x.shape}, expected (N, {expected})")
    if y.ndim != 1 or len(y) != len(x):
        raise DatasetFormatError(f"{where}: {len(x)} images but labels of shape {y.shape}")
    if len(y) == 0:
        raise DatasetFormatError(f"{where}: empty split")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes:
        raise DatasetFormatError(f"{where}: labels must be integers in [0, {num_classes})")


def as_uint8(x: np.ndarray, where: str) -> np.ndarray:
    """``x`` as uint8 pixels; integer arrays within 0-255 are converted, anything else refused.

    Raises
    ------
    DatasetFormatError
        Float images or values outside 0-255 (``where`` names the file and split).
    """
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer) and x.size and x.min() >= 0 and x.max() <= 255:
        return x.astype(np.uint8)
    raise DatasetFormatError(f"{where}: images must be uint8 pixel values 0-255, got dtype {x.dtype}")


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays :data:`SPLIT_KEYS` of a ``.npz`` archive (pickled objects refused).

    Raises
    ------
    DatasetFormatError
        An unreadable archive or a missing array.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in SPLIT_KEYS if k not in npz.files]
            if missing:
                raise DatasetFormatError(
                    f"{path}: missing arrays {missing}; expected {', '.join(SPLIT_KEYS)} (found {npz.files})"
                )
            return {k: npz[k] for k in SPLIT_KEYS}
    except DatasetFormatError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, pickle refusal...
        raise DatasetFormatError(f"Cannot read {path} as a .npz archive: {exc}") from exc


def torchvision_arrays(cls: Callable[..., Any], root: Path, download: bool) -> dict[str, np.ndarray]:
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


def read_agnews_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """Texts (title and description joined) and 0-based labels of one AG-News CSV file.

    Raises
    ------
    DatasetFormatError
        A row without three fields, a class outside 1-4, an unreadable or empty file.
    """
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

