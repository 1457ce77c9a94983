"""In-process stand-ins for Flower's runtime: build replies and run strategies without Ray.

Flower refuses to build instruction messages outside a run ("TaskIdentity.run_id is not set");
:func:`flower_identity` sets the process-wide task identity the way a ServerApp process has it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, Metadata, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

_ids = itertools.count(1)


@contextmanager
def flower_identity(run_id: int = 1, node_id: int = 0, task_id: int = 1) -> Iterator[None]:
    """Give this process a Flower task identity for the duration of the block."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, node_id, task_id
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def reply_metadata(node_id: int, message_type: str = "train") -> Metadata:
    return Metadata(
        run_id=1,
        message_id=f"m{next(_ids)}",
        src_node_id=node_id,
        dst_node_id=0,
        reply_to_message_id="instruction",
        group_id="",
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )


def train_reply(
    node_id: int,
    arrays: dict[str, np.ndarray] | ArrayRecord | None,
    *,
    num_examples: int = 10,
    loss: float = 0.5,
    extra: dict | None = None,
) -> Message:
    """A train reply carrying ``arrays`` and the usual metrics."""
    content = RecordDict()
    if arrays is not None:
        record = arrays if isinstance(arrays, ArrayRecord) else ArrayRecord(
            {k: _array(v) for k, v in arrays.items()}
        )
        content["arrays"] = record
    content["metrics"] = MetricRecord({"num-examples": num_examples, "train-loss": loss})
    for key, value in (extra or {}).items():
        content[key] = value
    return Message(content, metadata=reply_metadata(node_id))


def error_reply(node_id: int, reason: str = "client crashed") -> Message:
    return Message(error=Error(code=1, reason=reason), metadata=reply_metadata(node_id))


def _array(value: np.ndarray):
    from flwr.app import Array

    return Array(np.require(value, requirements="C"))


class FakeGrid(Grid):
    """A Grid whose nodes are Python callables ``handler(message) -> Message | RecordDict``.

    A handler may return a ``RecordDict`` (wrapped into a reply), a full ``Message``, or raise
    (turned into an error reply, as Flower does for a crashing ClientApp).  Handlers returning
    ``None`` model a node that never answers before the timeout.
    """

    def __init__(self, handlers: dict[int, Callable[[Message], Message | RecordDict | None]]) -> None:
        self.handlers = handlers
        self._run = None

    def set_run(self, run) -> None:  # pragma: no cover - not used in-process
        self._run = run

    @property
    def run(self):  # pragma: no cover
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:  # pragma: no cover
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.handlers)

    def push_messages(self, messages):  # pragma: no cover
        raise NotImplementedError

    def pull_messages(self, message_ids):  # pragma: no cover
        raise NotImplementedError

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            try:
                out = self.handlers[node](msg)
            except Exception as err:  # a crashing client becomes an error reply
                replies.append(error_reply(node, f"{type(err).__name__}: {err}"))
                continue
            if out is None:
                continue
            if isinstance(out, Message):
                replies.append(out)
            else:
                replies.append(Message(out, metadata=reply_metadata(node, msg.metadata.message_type)))
        return replies


def config(**values) -> ConfigRecord:
    return ConfigRecord(values)
