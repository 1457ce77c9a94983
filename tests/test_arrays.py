"""signguard_flwr.arrays (array_numpy: Flower's Array.numpy() without re-parsing known .npy
headers; numpy_array / state_record: Flower's serialisation without numpy.save; same bytes)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

import torch

from signguard_flwr.arrays import array_numpy, arrays_record, numpy_array, record_numpy, state_record

CASES = [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.array(3.5),
    np.zeros((0, 5)),
    np.array([True, False]),
    np.arange(6, dtype=">i4"),
    np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    np.float16([1, 2]),
    np.int64([1 << 40]),
    np.arange(5, dtype=np.uint8),
]


@pytest.mark.parametrize("value", CASES, ids=lambda a: f"{a.dtype}-{a.shape}")
def test_same_array_as_flower(value: np.ndarray) -> None:
    arr = Array(value)
    ours, flowers = array_numpy(arr), arr.numpy()
    assert ours.dtype == flowers.dtype and ours.shape == flowers.shape
    assert np.array_equal(ours, flowers)
    assert ours.flags.writeable and ours.flags.c_contiguous == flowers.flags.c_contiguous
    ours[...] = 0  # its own memory: the message's bytes are untouched
    assert np.array_equal(arr.numpy(), value)


def test_damaged_payloads_fail_as_flower_fails() -> None:
    good = Array(np.arange(4, dtype=np.float32))
    short = Array(dtype=good.dtype, shape=good.shape, stype=good.stype, data=good.data[:-3])
    with pytest.raises(Exception) as ours:
        array_numpy(short)
    with pytest.raises(Exception) as flowers:
        short.numpy()
    assert type(ours.value) is type(flowers.value)
    other = Array(dtype=good.dtype, shape=good.shape, stype="torch.raw", data=good.data)
    with pytest.raises(TypeError):
        array_numpy(other)


def test_record_numpy_keeps_key_order() -> None:

    record = ArrayRecord({"b": Array(np.ones(2)), "a": Array(np.zeros(3))})
    out = record_numpy(record)
    assert list(out) == ["b", "a"] and np.array_equal(out["a"], np.zeros(3))


def _same_array(ours: Array, flowers: Array) -> None:
    assert (ours.dtype, tuple(ours.shape), ours.stype) == (flowers.dtype, tuple(flowers.shape), flowers.stype)
    assert ours.data == flowers.data


@pytest.mark.parametrize("value", [*CASES, np.arange(6.0).reshape(2, 3)[:, ::2]], ids=lambda a: f"{a.dtype}-{a.shape}-{a.flags.c_contiguous}")
def test_numpy_array_writes_flowers_bytes(value: np.ndarray) -> None:
    first, second = numpy_array(value), numpy_array(value.copy(order="K"))  # second: the cached header
    _same_array(first, Array(value))
    _same_array(second, Array(value.copy(order="K")))
    changed = value.copy(order="K")
    if changed.size and changed.dtype != bool:
        changed[...] = changed + 1  # same header, other data: the data is not cached
        _same_array(numpy_array(changed), Array(changed))


def test_state_record_matches_array_record_of_a_state_dict() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Linear(4, 3))
    state = model.state_dict()
    ours, flowers = state_record(state), ArrayRecord(state)
    assert list(ours) == list(flowers)
    for key in flowers:
        _same_array(ours[key], flowers[key])


def test_arrays_record_shares_the_arrays() -> None:
    source = ArrayRecord({"b": Array(np.ones(2)), "a": Array(np.zeros(3))})
    out = arrays_record(source.items())
    assert list(out) == ["b", "a"] and all(out[k] is source[k] for k in source)
