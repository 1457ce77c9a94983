"""Fault injection for deployment tests: a ClientApp whose nodes misbehave on request.

``app`` is the project's ClientApp (``clients.app.app``: the honest client wrapped by the
Byzantine mod) with one more mod outside it, :func:`fault_mod`, driven by the SuperNode's node
config (``flower-supernode --node-config "... fault=\\"nan\\""``):

========== ==================================================================================
``fault``  what the node's train reply becomes
========== ==================================================================================
``none``   untouched (the default)
``nan``    the honest reply with every float array filled with NaN
``shape``  the honest reply with its first float array cut to half its length (wrong shape)
``garbage`` one ArrayRecord ``{"junk": 7 random float32}``: every model array missing
``crash``  the ClientApp raises: Flower sends the server an error reply
``sleep``  the node sleeps ``fault-sleep`` seconds (default 3600) before answering: it never
           answers within a round timeout
========== ==================================================================================

Only train messages are touched.  It is not part of the library and not a threat model: it
checks that the server rejects malformed replies, logs them and stays alive, and that rounds end
on timeout.  Deploy it with ``python -m simulations.deploy run --clientapp
simulations.deploy.faults:app`` (the app is staged with this ClientApp component).

Every call also logs, once per process, where ``clients``, ``simulations`` and
``signguard_flwr`` were imported from (the FAB's install directory under the SuperNode's
``FLWR_HOME`` in a deployment).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from clients.app import honest_app
from clients.byzantine import byzantine_mod, is_train_message, replace_content, wrap_client_app

__all__ = ["FAULTS", "app", "fault_mod"]

FAULTS = ("none", "nan", "shape", "garbage", "crash", "sleep")

log = logging.getLogger("flwr")
_logged_origins = False


def _origins() -> str:
    names = ("clients", "simulations", "signguard_flwr")
    return ", ".join(f"{n}={Path(sys.modules[n].__file__).parent}" for n in names if n in sys.modules)


def _float_keys(record: ArrayRecord) -> list[str]:
    return [k for k, v in record.items() if np.issubdtype(np.dtype(v.numpy().dtype), np.floating)]


def _rewrite(reply: Message, fault: str) -> Message:
    if reply.has_error() or not reply.has_content() or "arrays" not in reply.content:
        return reply
    record = reply.content["arrays"]
    assert isinstance(record, ArrayRecord)
    content = RecordDict(dict(reply.content.items()))
    if fault == "garbage":
        junk = np.random.default_rng().standard_normal(7).astype(np.float32)
        content["arrays"] = ArrayRecord({"junk": Array(junk)})
    else:
        out = ArrayRecord()
        keys = _float_keys(record)
        for key, value in record.items():
            array = value.numpy()
            if fault == "nan" and key in keys:
                array = np.full_like(array, np.nan)
            elif fault == "shape" and keys and key == keys[0]:
                flat = array.reshape(-1)
                array = flat[: max(1, flat.size // 2)].copy()
            out[key] = Array(np.ascontiguousarray(array))
        content["arrays"] = out
    return replace_content(reply, content)


def fault_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower mod: make this node's train replies faulty as ``node_config["fault"]`` says."""
    global _logged_origins
    if not _logged_origins:
        _logged_origins = True
        log.info("signguard-flwr faults: app code from %s", _origins())
    fault = str(context.node_config.get("fault", "none"))
    if fault not in FAULTS:
        raise ValueError(f"node config 'fault' must be one of {FAULTS}, got {fault!r}")
    if fault == "none" or not is_train_message(msg):
        return call_next(msg, context)
    if fault == "crash":
        raise RuntimeError("fault injection: this ClientApp crashes on train messages")
    if fault == "sleep":
        seconds = float(context.node_config.get("fault-sleep", 3600.0))
        log.info("signguard-flwr faults: sleeping %.0f s before answering", seconds)
        time.sleep(seconds)
        return call_next(msg, context)
    reply = call_next(msg, context)
    log.info("signguard-flwr faults: sending a %r reply", fault)
    return _rewrite(reply, fault)


app = wrap_client_app(honest_app, [fault_mod, byzantine_mod])
