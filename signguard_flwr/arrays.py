"""Conversions between Flower ``ArrayRecord`` objects and flat torch vectors.

A model travels as an ``ArrayRecord`` of its full ``state_dict``: trainable parameters and
buffers (BatchNorm running statistics, ``num_batches_tracked``).  Robust statistics only make
sense on the trainable parameters, so this module fixes one convention used everywhere (the
strategies, the Byzantine client wrappers and the simulation adversary):

* the *update keys* are the floating-point arrays that are not buffers, in record order;
* a buffer is a non-float array or a float array whose name ends in one of
  :data:`BUFFER_SUFFIXES` (PyTorch's BatchNorm buffers), unless the caller passes its own
  predicate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

__all__ = [
    "BUFFER_SUFFIXES",
    "default_is_buffer",
    "update_keys",
    "buffer_keys",
    "record_to_vector",
    "vector_to_record",
    "record_numpy",
]

BUFFER_SUFFIXES: tuple[str, ...] = ("running_mean", "running_var", "num_batches_tracked")

BufferPredicate = Callable[[str, np.ndarray], bool]


def default_is_buffer(name: str, value: np.ndarray) -> bool:
    """PyTorch convention: BatchNorm statistics and any non-float array are buffers."""
    return (not np.issubdtype(value.dtype, np.floating)) or name.endswith(BUFFER_SUFFIXES)


def make_buffer_predicate(spec: BufferPredicate | Iterable[str] | None) -> BufferPredicate:
    """Turn ``None`` (default rule), a predicate, or an iterable of key names into a predicate."""
    if spec is None:
        return default_is_buffer
    if callable(spec):
        return spec
    names = frozenset(spec)
    return lambda name, value: name in names or not np.issubdtype(value.dtype, np.floating)


def record_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """Numpy views of every array of ``record`` (keys in record order)."""
    return {key: arr.numpy() for key, arr in record.items()}


def update_keys(arrays: dict[str, np.ndarray], is_buffer: BufferPredicate = default_is_buffer) -> list[str]:
    """Keys of the float, non-buffer arrays in record order: the coordinates of an update."""
    return [k for k, v in arrays.items() if not is_buffer(k, v)]


def buffer_keys(arrays: dict[str, np.ndarray], is_buffer: BufferPredicate = default_is_buffer) -> list[str]:
    """Keys of the buffer arrays in record order."""
    return [k for k, v in arrays.items() if is_buffer(k, v)]


def record_to_vector(
    arrays: dict[str, np.ndarray],
    keys: Sequence[str],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Concatenate ``arrays[k]`` for ``k`` in ``keys`` into one flat tensor.

    One allocation of size d (numpy's concatenate, which torch then shares without a copy);
    the input arrays are only read.
    """
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    if not keys:
        return torch.empty(0, dtype=dtype, device=device)
    flat = np.concatenate([np.asarray(arrays[k]).reshape(-1) for k in keys]).astype(np_dtype, copy=False)
    out = torch.from_numpy(flat)
    return out if device is None else out.to(device)


def vector_to_record(
    vector: torch.Tensor,
    template: dict[str, np.ndarray],
    keys: Sequence[str],
    *,
    extra: dict[str, np.ndarray] | None = None,
) -> ArrayRecord:
    """Cut ``vector`` back into the shapes/dtypes of ``template[keys]``.

    Arrays of ``template`` not in ``keys`` are taken from ``extra`` when given there, else
    copied from ``template``; the record keeps ``template``'s key order.
    """
    flat = vector.detach().to("cpu").numpy()
    pieces: dict[str, np.ndarray] = {}
    offset = 0
    for key in keys:
        ref = template[key]
        size = int(ref.size)
        pieces[key] = flat[offset : offset + size].reshape(ref.shape).astype(ref.dtype, copy=False)
        offset += size
    if offset != flat.size:
        raise ValueError(f"vector has {flat.size} entries, the keys need {offset}")
    extra = extra or {}
    record = ArrayRecord()
    for key, ref in template.items():
        value = pieces[key] if key in pieces else extra.get(key, ref)
        record[key] = Array(np.require(value, requirements="C"))  # keeps 0-d arrays 0-d
    return record
