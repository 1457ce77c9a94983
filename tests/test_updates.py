"""signguard_flwr.updates: one view of a client update for the strategy, the clients and the adversary."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, Metadata, RecordDict

from signguard_flwr.updates import global_view, parse, stack


def model(shift: float = 0.0) -> dict[str, np.ndarray]:
    return {
        "conv.weight": np.arange(6, dtype=np.float32).reshape(2, 3) / 4 + shift,
        "bn.running_mean": np.full(2, 0.5 + shift, dtype=np.float32),
        "bn.num_batches_tracked": np.array(3, dtype=np.int64),
        "fc.bias": np.array([1.0, -1.0], dtype=np.float32) - shift,
    }


def as_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.require(v, requirements="C")) for k, v in arrays.items()})


def reply(content: RecordDict | Error) -> Message:
    meta = Metadata(run_id=1, message_id="m", src_node_id=0, dst_node_id=1, reply_to_message_id="",
                    group_id="1", created_at=time.time(), ttl=600.0, message_type="train")
    return Message(content, reply_to=Message(RecordDict(), metadata=meta))


def test_global_view_flattens_the_update_keys_once() -> None:
    glob = global_view(as_record(model()), dtype=torch.float64)
    assert glob.keys == ("conv.weight", "fc.bias") and glob.shapes == ((2, 3), (2,)) and glob.size == 8
    assert glob.delta is None and list(glob.record) == list(model())
    assert torch.equal(glob.base, torch.tensor([0, 0.25, 0.5, 0.75, 1, 1.25, 1, -1], dtype=torch.float64))


def test_parse_then_rebuild_gives_the_reply_back() -> None:
    glob = global_view(as_record(model()), dtype=torch.float64)
    reply_record = as_record(model(0.5))
    view = parse(reply(RecordDict({"arrays": reply_record})), glob)
    assert view is not None and view.base is glob.base
    assert torch.equal(view.delta, torch.tensor([0.5] * 6 + [-0.5] * 2, dtype=torch.float64))
    out = view.rebuild()
    assert list(out) == list(reply_record)
    for key in ("bn.running_mean", "bn.num_batches_tracked"):
        assert out[key] is reply_record[key]  # buffers go back as the very same Array objects
    for key in ("conv.weight", "fc.bias"):
        assert out[key].numpy().dtype == np.float32 and np.array_equal(out[key].numpy(), model(0.5)[key])
    new = view.rebuild(glob.base, replace={"bn.running_mean": np.zeros(2, dtype=np.float32)})
    assert np.array_equal(new["conv.weight"].numpy(), model()["conv.weight"])
    assert np.array_equal(new["bn.running_mean"].numpy(), np.zeros(2)) and new["bn.num_batches_tracked"].shape == ()
    with pytest.raises(ValueError, match="shape"):
        view.rebuild(torch.zeros(3))


def test_parse_rejects_what_it_cannot_read_and_ignores_the_rest() -> None:
    glob = global_view(model())
    missing = {k: v for k, v in model().items() if k != "fc.bias"}
    reshaped = {**model(), "fc.bias": np.zeros((1, 2), dtype=np.float32)}
    assert parse(as_record(missing), glob) is None and parse(as_record(reshaped), glob) is None
    assert parse(reply(Error(code=1, reason="boom")), glob) is None
    assert parse(reply(RecordDict({"arrays": ConfigRecord({"a": 1})})), glob) is None
    extra = as_record({**model(), "head.weight": np.ones(3, dtype=np.float32)})
    lazy = parse(extra, glob, read=False)
    assert lazy is not None and lazy.delta is None  # extra arrays are the strategy's to reject


def test_stack_is_the_views_deltas_and_views_fit_their_dtypes() -> None:
    glob = global_view(model())
    views = [parse(as_record(model(s)), glob, read=False) for s in (0.25, -1.0)]
    matrix = stack(views)
    for row, s in zip(matrix, (0.25, -1.0)):
        assert torch.equal(row, parse(as_record(model(s)), glob).delta)
    other = global_view(model(1.0))
    mixed = stack([views[0], parse(as_record(model(0.25)), other, read=False)])
    assert torch.equal(mixed[1], torch.tensor([-0.75] * 6 + [0.75] * 2))
    half = global_view({"w": np.ones(2, dtype=np.float16)})
    assert half.fits(torch.tensor([1.0, 6e4])) and not half.fits(torch.tensor([1.0, 7e4]))
