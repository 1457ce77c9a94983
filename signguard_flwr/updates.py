"""One view of a model update: the update keys' arrays as one flat vector, and the way back.

Every place that turns a train reply into numbers uses this module: the strategies (the round's
``(n, d)`` update matrix), the Byzantine client mod (one client's update) and the simulation
adversary (the round's honest updates).  A view is read once, from the arrays sent this round
(:func:`global_view`, the global model flattened once per round and place) and a reply
(:func:`parse`); :meth:`UpdateView.rebuild` cuts a flat vector back into an ``ArrayRecord``
with the same keys, key order, shapes and dtypes.

The coordinates are the *update keys* of :mod:`signguard_flwr.arrays`: the float arrays that
are not buffers, in record order.  Buffers (BatchNorm statistics, counters) never enter a
vector; :meth:`~UpdateView.rebuild` carries them over from the record the view was read from.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message

from .arrays import BufferPredicate, array_numpy, default_is_buffer, numpy_array, record_numpy, record_to_vector, update_keys

__all__ = ["UpdateView", "global_view", "parse", "stack"]

#: What a view is read from: Flower's record, or arrays already decoded to numpy.
Arrays = Mapping[str, "Array | np.ndarray"]


def _numpy(value: Array | np.ndarray) -> np.ndarray:
    return value if isinstance(value, np.ndarray) else array_numpy(value)


def _torch_dtype_as_numpy(dtype: torch.dtype) -> np.dtype:
    return torch.empty(0, dtype=dtype).numpy().dtype


@dataclass(frozen=True, eq=False)
class UpdateView:
    """A model's update coordinates as flat torch vectors, with the layout to rebuild it.

    Attributes
    ----------
    keys : tuple of str
        The update keys (float, non-buffer arrays), in record order.
    shapes, dtypes : tuple
        Shape and numpy dtype of each key's array in :attr:`record` (a reply's own dtypes).
    base : Tensor (d,)
        The global model sent this round on :attr:`keys`, flattened once (shared by every view
        parsed against the same global view).
    delta : Tensor (d,) or None
        ``w_local − w_global`` in ``base``'s dtype; None for the global model itself and for a
        reply parsed with ``read=False`` (structure checked, values not decoded yet).
    record : mapping
        The arrays the view was read from: :meth:`rebuild` keeps its key order and its other
        arrays (buffers) as they are.
    """

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]
    base: torch.Tensor
    delta: torch.Tensor | None = None
    record: Arrays = field(default_factory=dict, repr=False)

    @property
    def size(self) -> int:
        """d, the number of update coordinates."""
        return int(self.base.shape[0])

    def fits(self, vector: torch.Tensor) -> bool:
        """Whether every slice of ``vector`` stays finite when cast to its array's dtype.

        A float32 vector can hold 7e4, a float16 model cannot: checking in the strategy's dtype
        alone would let a step overflow the model it is written into.
        """
        offset = 0
        for shape, dtype in zip(self.shapes, self.dtypes):
            size = math.prod(shape)
            if np.issubdtype(dtype, np.floating) and float(np.finfo(dtype).max) < torch.finfo(vector.dtype).max:
                narrow = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
                if not bool(torch.isfinite(vector[offset : offset + size].to(narrow)).all()):
                    return False
            offset += size
        return True

    def rebuild(self, vector: torch.Tensor | None = None, *, replace: Mapping[str, np.ndarray] | None = None) -> ArrayRecord:
        """An ``ArrayRecord`` in :attr:`record`'s key order with the update keys cut from ``vector``.

        Parameters
        ----------
        vector : Tensor (d,), optional
            The new values of the update keys (default ``base + delta``), cast to each array's
            dtype.
        replace : mapping of str to ndarray, optional
            New values for other arrays (the strategy's aggregated buffers).  Every other array
            is :attr:`record`'s: an ``Array`` of a reply goes back as the very same object, so a
            client's buffers reach the strategy byte for byte (0-d ones included).
        """
        if vector is None:
            if self.delta is None:
                raise ValueError("rebuild needs a vector: this view holds no delta")
            vector = self.base + self.delta
        flat = vector.detach().to("cpu").numpy()
        if flat.shape != (self.size,):
            raise ValueError(f"vector has shape {flat.shape}, the keys need ({self.size},)")
        pieces: dict[str, np.ndarray] = {}
        offset = 0
        for key, shape, dtype in zip(self.keys, self.shapes, self.dtypes):
            size = math.prod(shape)
            pieces[key] = flat[offset : offset + size].reshape(shape).astype(dtype, copy=False)
            offset += size
        replace = replace or {}
        out = ArrayRecord()
        for key, value in self.record.items():
            value = pieces[key] if key in pieces else replace.get(key, value)
            # np.require keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d).
            out[key] = value if isinstance(value, Array) else numpy_array(np.require(value, requirements="C"))
        return out


def global_view(
    arrays: ArrayRecord | Mapping[str, np.ndarray],
    *,
    is_buffer: BufferPredicate = default_is_buffer,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> UpdateView:
    """The view of the global model sent this round: flattened here, once (``delta`` is None).

    ``arrays`` is decoded to numpy once; the view's :attr:`~UpdateView.record` holds the decoded
    arrays (what a strategy rebuilds the next global model around).
    """
    decoded = record_numpy(arrays) if isinstance(arrays, ArrayRecord) else dict(arrays)
    keys = tuple(update_keys(decoded, is_buffer))
    return UpdateView(
        keys=keys,
        shapes=tuple(tuple(decoded[k].shape) for k in keys),
        dtypes=tuple(decoded[k].dtype for k in keys),
        base=record_to_vector(decoded, keys, dtype=dtype, device=device),
        record=decoded,
    )


def parse(
    reply: Message | Arrays | None,
    glob: UpdateView,
    *,
    arrayrecord_key: str = "arrays",
    read: bool = True,
) -> UpdateView | None:
    """A reply's update against the global view ``glob``, or None when it is not usable.

    Usable: not an error reply, with a record (under ``arrayrecord_key`` for a Message) that
    has every update key of ``glob`` with the same shape.  Other keys and the dtypes are not
    checked here (the strategy validates replies strictly, with reasons: :mod:`.replies`); the
    view takes the reply's own dtypes, so :meth:`~UpdateView.rebuild` gives back what the
    client sent.  Shapes come from the arrays' metadata, so ``read=False`` decodes nothing
    (``delta`` stays None until :func:`stack` or a ``read=True`` parse needs the values).
    """
    if isinstance(reply, Message):
        if reply.has_error() or not reply.has_content():
            return None
        reply = reply.content.get(arrayrecord_key)
        if not isinstance(reply, ArrayRecord):
            return None
    if not isinstance(reply, Mapping):
        return None
    dtypes = []
    for key, shape in zip(glob.keys, glob.shapes):
        value = reply.get(key)
        if value is None or tuple(value.shape) != shape:
            return None
        dtypes.append(np.dtype(value.dtype))
    view = UpdateView(glob.keys, glob.shapes, tuple(dtypes), glob.base, None, reply)
    if not read:
        return view
    local = record_to_vector({k: _numpy(reply[k]) for k in glob.keys}, glob.keys,
                             dtype=glob.base.dtype, device=glob.base.device)
    return dataclasses.replace(view, delta=local - glob.base)


def stack(views: Sequence[UpdateView], *, device: torch.device | str | None = None) -> torch.Tensor:
    """The ``(n, d)`` matrix of the views' updates ``w_local − w_global``, in ``base``'s dtype.

    The rows are assembled in one host buffer that torch then owns without a copy
    (``torch.from_numpy`` shares memory): numpy's single-threaded copy per array is much cheaper
    than hundreds of small torch ``copy_`` calls, which pay OpenMP dispatch each.  The matrix
    then moves to ``device`` (default: ``base``'s) once, and the global model is subtracted
    there.  Views parsed against different global views subtract their own ``base``.
    """
    if not views:
        raise ValueError("stack needs at least one view")
    first = views[0]
    target = first.base.device if device is None else torch.device(device)
    sizes = [math.prod(s) for s in first.shapes]
    host = np.empty((len(views), sum(sizes)), dtype=_torch_dtype_as_numpy(first.base.dtype))
    for row, view in enumerate(views):
        offset = 0
        for key, size in zip(view.keys, sizes):
            host[row, offset : offset + size] = _numpy(view.record[key]).reshape(-1)
            offset += size
    matrix = torch.from_numpy(host)
    if matrix.device != target:
        matrix = matrix.to(target)
    bases: dict[int, torch.Tensor] = {}  # each global model moved to the target once
    for view in views:
        if id(view.base) not in bases:
            bases[id(view.base)] = view.base.to(target)
    if len(bases) == 1:
        matrix.sub_(next(iter(bases.values())))
    else:
        for row, view in enumerate(views):
            matrix[row].sub_(bases[id(view.base)])
    return matrix
