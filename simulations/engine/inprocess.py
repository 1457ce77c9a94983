"""An in-process Flower Grid: the real ClientApp called directly, no Ray, no network.

The Ray simulation engine costs ≈ 0.3 s of messaging per round for 50 clients (see
docs/benchmarks.md), several times the work of a small model's round.  For long sweeps we call
the very same ``ClientApp`` object (handlers, mods, Byzantine wrappers) on every node in this
process, one after another.  Everything the strategy and the adversary see is identical in form
to what the Ray engine delivers; only the transport is gone.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from signguard_flwr.arrays import arrays_record

__all__ = ["InProcessGrid", "node_ids_for"]


def node_ids_for(num_nodes: int, seed: int) -> list[int]:
    """Distinct random 63-bit node ids, as Flower's simulation assigns them (reproducible)."""
    rng = np.random.default_rng(seed + 7919)
    ids: set[int] = set()
    while len(ids) < num_nodes:
        ids.add(int(rng.integers(1, 2**63 - 1)))
    return list(ids)


def _copy_content(content: RecordDict) -> RecordDict:
    """Per-node copy of a shared instruction (Flower delivers each node its own deserialised copy)."""
    out = RecordDict()
    for key, record in content.items():
        if isinstance(record, ArrayRecord):
            out[key] = arrays_record(record.items())  # the same Array objects: their bytes are immutable
        elif isinstance(record, ConfigRecord):
            out[key] = ConfigRecord(dict(record.items()))
        else:
            out[key] = type(record)(dict(record.items()))
    return out


class InProcessGrid(Grid):
    """Runs ``client_app`` for each addressed node in this process.

    Parameters
    ----------
    client_app : ClientApp
        The app every node runs (honest code and Byzantine mods alike).
    num_nodes : int
        Number of virtual SuperNodes; node ``i`` gets ``partition-id = i``.
    run_config : dict, optional
        The run config every node's Context carries.
    node_configs : dict, optional
        Extra node config per partition id (e.g. ``{"byzantine": True}`` as in deployment).
    seed : int
        Seeds the node ids.
    batched_clients : bool, default False
        Before delivering a round's train messages, compute every addressed FedSGD client's step
        in batched ``torch.func`` calls (:func:`clients.batched.prepare_round`); each ClientApp
        call (mods and Byzantine wrappers included) then loads its prepared result instead of
        computing it, when the result is for exactly that call.  Tasks in FedAvg mode or with
        dropout train one by one as without the flag.  Results equal the per-client path up to
        float32 rounding.
    """

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        *,
        run_config: dict[str, Any] | None = None,
        node_configs: dict[int, dict[str, Any]] | None = None,
        seed: int = 0,
        run_id: int = 1,
        batched_clients: bool = False,
    ) -> None:
        self.client_app = client_app
        self.batched_clients = bool(batched_clients)
        self._warned_memory = False
        self.run_id = run_id
        self._node_ids = node_ids_for(num_nodes, seed)
        self._contexts: dict[int, Context] = {}
        for pid, node_id in enumerate(self._node_ids):
            node_config = {"partition-id": pid, "num-partitions": num_nodes, **(node_configs or {}).get(pid, {})}
            self._contexts[node_id] = Context(
                run_id=run_id, node_id=node_id, node_config=node_config, state=RecordDict(), run_config=dict(run_config or {})
            )
        self._run = None
        # The ServerApp side builds instruction messages: it needs a task identity, as in a run.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, 0, 1

    # -- Grid API
    def set_run(self, run: Any) -> None:
        self._run = run

    @property
    def run(self) -> Any:
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # pragma: no cover - not used
        raise NotImplementedError("InProcessGrid delivers messages through send_and_receive only")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # pragma: no cover - not used
        raise NotImplementedError("InProcessGrid delivers messages through send_and_receive only")

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        start = time.monotonic()
        messages = list(messages)
        if not self.batched_clients:
            return self._deliver(messages, start, timeout)
        from clients.batched import clear_prepared

        try:
            self._prepare_batched(messages)
            return self._deliver(messages, start, timeout)
        finally:
            clear_prepared()  # nothing prepared outlives its round

    def _prepare_batched(self, messages: list[Message]) -> None:
        """Batch the FedSGD steps of the train messages' clients (:func:`clients.batched.prepare_round`).

        The jobs are built as the ClientApp's train handler builds its call of ``local_train``
        (same settings, data and round); a message the handler would reject is left out, so its
        client fails in its own call as without batching.
        """
        from clients.batched import clear_prepared, prepare_round

        jobs_by_global: dict[int, tuple[dict[str, Any], list[Any]]] = {}
        for msg in messages:
            found = self._fedsgd_job(msg)
            if found is not None:
                state, job = found
                jobs_by_global.setdefault(id(state), (state, []))[1].append(job)
        if not jobs_by_global:
            return
        # One global model per round in practice; were there several, the largest group is batched.
        state, jobs = max(jobs_by_global.values(), key=lambda item: len(item[1]))
        try:
            prepare_round(state, jobs)
        except torch.OutOfMemoryError:
            # All clients' activations at once did not fit: the clients compute one by one.
            clear_prepared()
            torch.cuda.empty_cache()
            if not self._warned_memory:
                self._warned_memory = True
                warnings.warn("batched clients ran out of GPU memory; training clients one by one", stacklevel=2)

    def _fedsgd_job(self, msg: Message) -> tuple[dict[str, Any], Any] | None:
        """(global state, :class:`clients.batched.FedSGDJob`) of a FedSGD train message, else None."""
        from clients.batched import FedSGDJob
        from clients.byzantine import is_train_message
        from clients.client_app import _state_dict_of, client_data_for
        from clients.settings import resolve_settings

        context = self._contexts.get(msg.metadata.dst_node_id)
        if context is None or not is_train_message(msg) or not msg.has_content():
            return None
        config, record = msg.content.get("config"), msg.content.get("arrays")
        if not isinstance(config, ConfigRecord) or "server-round" not in config or not isinstance(record, ArrayRecord):
            return None
        try:
            settings = resolve_settings(context.run_config, config)
            if settings.client_mode != "fedsgd":
                return None
            pid, num = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
            data = client_data_for(settings, pid, num)
            # The handler's own parser: it caches the parsed arrays by their bytes' identity, so
            # the round's global model is parsed once, here, and the clients reuse it.
            state = _state_dict_of(record)
        except Exception:  # noqa: BLE001 - the client's own call raises it again, into an error reply
            return None
        transform = config.get("label-transform")
        job = FedSGDJob(pid, data, settings, int(config["server-round"]), None if transform is None else str(transform))
        return state, job

    def _deliver(self, messages: list[Message], start: float, timeout: float | None) -> list[Message]:
        replies = []
        for msg in messages:
            node_id = msg.metadata.dst_node_id
            context = self._contexts.get(node_id)
            if context is None:
                continue  # an unknown node never answers
            if timeout is not None and time.monotonic() - start > timeout:
                break
            delivered = Message(
                content=_copy_content(msg.content),
                dst_node_id=node_id,
                message_type=msg.metadata.message_type,
                group_id=msg.metadata.group_id,
            )
            try:
                reply = self.client_app(delivered, context)
            except Exception as err:  # as Flower does: a crashing ClientApp yields an error reply
                reply = Message(error=Error(code=1, reason=f"{type(err).__name__}: {err}"), reply_to=delivered)
            replies.append(reply)
        return replies
