"""Reply checking: one client's bad payload must never end the server.

Flower's ``FedAvg._check_and_log_replies`` raises ``InconsistentMessageReplies`` (ending the
ServerApp) as soon as one reply has an unexpected shape.  A Byzantine-robust server instead
checks every reply on its own, rejects the malformed ones with a reason, and aggregates the
rest.  Finite-ness is checked on the update matrix in one pass (see the strategy), not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord

from .arrays import array_numpy
from .updates import UpdateView, parse

__all__ = ["ParsedReply", "parse_train_reply", "find_metric_record"]


@dataclass
class ParsedReply:
    """A train reply that passed the structural checks."""

    node_id: int
    update: UpdateView
    """The reply's update against the global view (values decoded, delta not computed yet)."""
    metrics: MetricRecord | None

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """Every array of the reply, decoded, in the global model's key order."""
        return self.update.record  # type: ignore[return-value]


def _find_array_record(msg: Message, key: str) -> tuple[ArrayRecord | None, str | None]:
    content = msg.content
    if key in content and isinstance(content[key], ArrayRecord):
        return content[key], None
    found = [v for v in content.values() if isinstance(v, ArrayRecord)]
    if len(found) == 1:
        return found[0], None
    if not found:
        return None, "no ArrayRecord in the reply"
    return None, f"{len(found)} ArrayRecords in the reply and none under key {key!r}"


def find_metric_record(msg: Message) -> MetricRecord | None:
    """The reply's only MetricRecord, or None when there is not exactly one."""
    found = [v for v in msg.content.values() if isinstance(v, MetricRecord)]
    return found[0] if len(found) == 1 else None


def parse_train_reply(
    msg: Message,
    glob: UpdateView,
    arrayrecord_key: str = "arrays",
) -> tuple[ParsedReply | None, str | None]:
    """Check a train reply against the arrays sent this round (``glob``, the global view).

    Returns ``(parsed, None)`` or ``(None, reason)``.  Checks: not an error reply; exactly one
    usable ArrayRecord; the same keys as the model sent (none missing, none extra); for each
    array the same shape and dtype.  Stricter than :func:`signguard_flwr.updates.parse` (which
    the attack side uses on honest replies): a server must reject what it cannot trust, and say
    why.
    """
    template = glob.record
    node_id = int(msg.metadata.src_node_id)
    if msg.has_error():
        return None, f"error reply ({msg.error.code}): {msg.error.reason}"
    try:
        record, why = _find_array_record(msg, arrayrecord_key)
        if record is None:
            return None, why
        keys = list(record.keys())
        missing = [k for k in template if k not in record]
        extra = [k for k in keys if k not in template]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing arrays {missing[:5]}{'...' if len(missing) > 5 else ''}")
            if extra:
                parts.append(f"unexpected arrays {extra[:5]}{'...' if len(extra) > 5 else ''}")
            return None, "; ".join(parts)
        arrays: dict[str, np.ndarray] = {}
        for key, ref in template.items():
            value = array_numpy(record[key])
            if value.shape != ref.shape:
                return None, f"array {key!r} has shape {value.shape}, expected {ref.shape}"
            if value.dtype != ref.dtype:
                return None, f"array {key!r} has dtype {value.dtype}, expected {ref.dtype}"
            arrays[key] = value
    except Exception as err:  # a payload that cannot even be decoded is just another bad reply
        return None, f"undecodable ArrayRecord: {type(err).__name__}: {err}"
    update = parse(arrays, glob, read=False)
    assert update is not None  # the checks above are stricter than parse's
    return ParsedReply(node_id=node_id, update=update, metrics=find_metric_record(msg)), None
