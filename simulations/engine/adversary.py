"""The omniscient simulation adversary: a Grid wrapper that rewrites Byzantine train replies.

Colluding attacks (LIE, ByzMean, Min-Max, Min-Sum) need every client's update of the round, so,
as every benchmark we surveyed does (design notes, ``peers.md`` §3), they are simulated on the server
side, *between* the clients' replies and the strategy.  :class:`OmniscientAdversary` wraps the
real :class:`flwr.serverapp.Grid`; the strategy is handed the wrapper and stays unchanged::

    adversary = OmniscientAdversary(grid, attack="lie", byzantine_partitions=[0, 3, 7], z=0.3)
    strategy.start(grid=adversary, initial_arrays=..., num_rounds=...)
    adversary.history          # per round: attack, Byzantine node/partition ids, γ, z, ...

Per train round, :meth:`OmniscientAdversary.send_and_receive` forwards the messages, then

1. reads each valid reply's update ``Δ_i = reply arrays − arrays sent to that node`` on the
   update keys (:mod:`signguard_flwr.updates`, as the strategy does), as float32;
2. marks as Byzantine the replies whose ``"diag"`` ConfigRecord ``partition-id`` is in the
   Byzantine set (ground truth; the strategy never sees it);
3. runs the attack (:func:`clients.attacks.apply_attack`, looked up in the registry
   :data:`clients.attacks.ATTACKS`) on the honest updates in the attack
   domain (``g = −Δ`` by default) and replaces the Byzantine replies' update arrays with
   ``w_sent − g_attack``; metrics, ``diag`` and buffers stay as the client sent them.

Replies it cannot parse (errors, no arrays, mismatched keys or shapes) pass through untouched.
Client-side attacks configured statically (``sign_flip``, ``label_flip``, ...) are the client
mod's job (:mod:`clients.byzantine`): the adversary only records them.  With
``attack="time_varying"`` the adversary draws each round's attack from
:class:`clients.attacks.TimeVaryingSchedule` and applies every drawn attack centrally, except
the data-dependent ``label_flip`` (and ``lie_local``), which it delegates to the Byzantine
clients through the :data:`clients.byzantine.ADVERSARY_DIRECTIVE_KEY` train-config key (the
ClientApp must run :func:`clients.byzantine.byzantine_mod`).

Only :meth:`send_and_receive` is intercepted (what ``Strategy.start`` uses); ``push_messages`` /
``pull_messages`` go straight to the wrapped grid.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from clients.attacks import (
    AttackParams,
    TimeVaryingSchedule,
    apply_attack,
    from_attack_domain,
    get_attack,
    require_int,
    to_attack_domain,
)
from clients.byzantine import (
    ADVERSARY_DIRECTIVE_KEY,
    byzantine_partitions,
    is_train_message,
    num_byzantine_from_config,
    replace_content,
    reply_with_arrays,
)
from signguard_flwr.updates import UpdateView, global_view, parse, stack

__all__ = ["OmniscientAdversary"]

log = logging.getLogger("flwr")


class _Reply(NamedTuple):
    """A reply the adversary could read: where it is, who sent it, and its update's view."""

    pos: int
    node_id: int
    partition: int | None
    view: UpdateView


class OmniscientAdversary(Grid):
    """Grid wrapper that simulates a colluding, omniscient attacker on the train replies.

    Parameters
    ----------
    grid : Grid
        The real grid (Flower's, or an in-process one); every call is delegated to it.
    attack : str
        A registered attack (:data:`clients.attacks.ATTACKS`).  Colluding attacks (``lie``,
        ``byzmean``, ``min_max``, ``min_sum``) are computed here; ``time_varying`` draws one
        attack per round or epoch; ``none`` and client-side attacks are only recorded.
    byzantine_partitions : iterable of int
        Partition ids of the Byzantine clients (ground truth,
        :func:`clients.byzantine.byzantine_partitions`).
    knowledge : {"omniscient", "benign", "colluders"}
        Which honest updates the attacker's statistics use (:mod:`clients.attacks`).
        Default "omniscient": all n valid replies, Byzantine clients' own honest ones included,
        as the reference code.
    seed : int
        Run seed: the time-varying schedule and the random/noise draws
        (``make_generator(seed, partition-id, round)``, as the client mod).
    params : AttackParams, optional
        Attack hyper-parameters; keyword arguments (``z=0.3``, ``z="max"``,
        ``perturbation="std"``, ``search="ndss"``, ``byzmean_variant=``, ``tv_period=``, ...)
        build one instead.
    arrayrecord_key, configrecord_key : str
        Record names of the model and of the train config ("arrays", "config").
    dtype : torch.dtype
        Dtype of the round's update matrix (float32: 50 x 11M ResNet-18 updates = 2.2 GB).
    device : str or torch.device
        Where the update matrix is built and the attack computed ("cpu" default; on a GPU the
        statistics of LIE/ByzMean/Min-Max over 50 x 11M updates take milliseconds instead of
        seconds).  Rewritten replies are always plain CPU arrays.

    Attributes
    ----------
    history : list of dict
        One entry per train round: ``round``, ``attack`` (the round's attack),
        ``applied_by`` ("adversary", "clients" or "none"), ``byzantine_node_ids``,
        ``byzantine_partition_ids``, ``rewritten_node_ids``, ``node_partitions``
        ({node id: partition id} of every parsed reply), ``num_replies``, ``num_valid``,
        ``num_unparsed``, plus ``gamma`` (Min-Max/Min-Sum), ``z`` (LIE/ByzMean),
        ``knowledge`` and ``error`` when the attack could not run (replies then untouched).
    """

    def __init__(
        self,
        grid: Grid,
        attack: str = "lie",
        byzantine_partitions: Iterable[int] = (),
        *,
        knowledge: str | None = None,
        seed: int = 0,
        params: AttackParams | None = None,
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        **param_kwargs: Any,
    ) -> None:
        self.grid = grid
        self.attack = get_attack(attack).name
        if params is not None and param_kwargs:
            raise ValueError("give either params or keyword parameters, not both")
        params = params if params is not None else AttackParams.build(**param_kwargs)
        self.params = params if knowledge is None else dataclasses.replace(params, knowledge=knowledge)
        self.seed = require_int("seed", seed, 0)
        pids = [int(p) for p in byzantine_partitions]
        if any(p < 0 for p in pids) or len(set(pids)) != len(pids):
            raise ValueError(f"byzantine_partitions must be distinct non-negative ids, got {pids}")
        self.byzantine_partitions = frozenset(pids)
        self.schedule: TimeVaryingSchedule | None = (
            self.params.schedule(self.seed) if self.attack == "time_varying" else None
        )
        self.arrayrecord_key = arrayrecord_key
        self.configrecord_key = configrecord_key
        self.dtype = dtype
        self.device = torch.device(device)
        self.history: list[dict[str, Any]] = []
        self._train_calls = 0

    @classmethod
    def from_config(cls, grid: Grid, config: Mapping[str, Any], **kwargs: Any) -> OmniscientAdversary:
        """Build from a flat run config, reading the keys the client mod reads.

        ``attack`` (default "none"), ``seed`` (0), ``num-clients`` with ``num-byzantine`` or
        ``byzantine-fraction`` and ``byzantine-placement`` (the Byzantine set, as
        :func:`clients.byzantine.is_byzantine_node` computes it on the clients), and the attack
        parameters of :meth:`clients.attacks.AttackParams.from_config` (``attack-params``
        string, ``knowledge``, ``attack-z``, ``tv-period``, ...).  ``kwargs`` go to the
        constructor (e.g. ``byzantine_partitions=`` to override the set, ``dtype=``).
        """
        seed = int(config.get("seed", 0))
        if "byzantine_partitions" not in kwargs:
            n = int(config["num-clients"])
            m = num_byzantine_from_config(config, n)
            kwargs["byzantine_partitions"] = byzantine_partitions(
                n, m, seed, placement=str(config.get("byzantine-placement", "random")))
        return cls(grid, attack=str(config.get("attack", "none")), seed=seed,
                   params=AttackParams.from_config(config), **kwargs)

    # ------------------------------------------------------------------ delegation
    def set_run(self, run: Any) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Any:
        return self.grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def get_nodes(self) -> Iterable[Any]:
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    # ------------------------------------------------------------------ the attack
    def attack_for_round(self, server_round: int) -> str:
        """The attack of ``server_round`` (the schedule's draw under ``time_varying``)."""
        if self.schedule is None:
            return self.attack
        return self.schedule.attack_for_round(max(1, server_round))

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Forward to the wrapped grid; rewrite the Byzantine replies of a train round."""
        sent = list(messages)
        train = [m for m in sent if is_train_message(m) and m.has_content()]
        if not train:
            return self.grid.send_and_receive(sent, timeout=timeout)
        self._train_calls += 1
        server_round = self._round_of(train[0])
        attack = self.attack_for_round(server_round)
        if self.schedule is not None:
            # Data-dependent draws run on the Byzantine clients; tell them every round, so a
            # client mod never draws on its own while an adversary is in charge.
            directive = attack if get_attack(attack).needs_data else "none"
            sent = [self._with_directive(m, directive) if is_train_message(m) and m.has_content() else m
                    for m in sent]
        replies = list(self.grid.send_and_receive(sent, timeout=timeout))
        return self._rewrite(server_round, attack, sent, replies)

    # ------------------------------------------------------------------ helpers
    def _round_of(self, msg: Message) -> int:
        config = msg.content.get(self.configrecord_key)
        if isinstance(config, ConfigRecord) and "server-round" in config:
            return int(config["server-round"])  # type: ignore[arg-type]
        group = msg.metadata.group_id
        return int(group) if group.isdigit() else self._train_calls

    def _with_directive(self, msg: Message, directive: str) -> Message:
        content = RecordDict(dict(msg.content.items()))
        old = msg.content.get(self.configrecord_key)
        config = dict(old.items()) if isinstance(old, ConfigRecord) else {}
        config[ADVERSARY_DIRECTIVE_KEY] = directive
        content[self.configrecord_key] = ConfigRecord(config)
        return replace_content(msg, content)

    def _match(self, sent: Sequence[Message], replies: Sequence[Message]) -> list[Message | None]:
        """The instruction each reply answers: by message id, else by node (if unique)."""
        by_id = {m.metadata.message_id: m for m in sent if m.metadata.message_id}
        by_node: dict[int, list[Message]] = {}
        for m in sent:
            by_node.setdefault(m.metadata.dst_node_id, []).append(m)
        out: list[Message | None] = []
        for reply in replies:
            msg = by_id.get(reply.metadata.reply_to_message_id)
            if msg is None:
                candidates = by_node.get(reply.metadata.src_node_id, [])
                msg = candidates[0] if len(candidates) == 1 else None
            out.append(msg)
        return out

    def _partition_of(self, reply: Message) -> int | None:
        diag = reply.content.get("diag")
        if isinstance(diag, ConfigRecord) and "partition-id" in diag:
            try:
                return int(diag["partition-id"])  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return None
        return None

    def _rewrite(self, server_round: int, attack: str, sent: list[Message],
                 replies: list[Message]) -> list[Message]:
        parsed = self._parse(sent, replies)
        byz = [j for j, p in enumerate(parsed) if p.partition is not None and p.partition in self.byzantine_partitions]
        entry: dict[str, Any] = {
            "round": server_round,
            "attack": attack,
            "applied_by": "none",
            "byzantine_node_ids": sorted(parsed[j].node_id for j in byz),
            "byzantine_partition_ids": sorted(int(parsed[j].partition) for j in byz),  # type: ignore[arg-type]
            "rewritten_node_ids": [],
            "node_partitions": {p.node_id: p.partition for p in parsed},
            "num_replies": len(replies),
            "num_valid": len(parsed),
            "num_unparsed": sum(1 for r in replies if not r.has_error()) - len(parsed),
        }
        self.history.append(entry)
        info = get_attack(attack)
        if info.kind == "none":
            return replies
        if info.client_side and (self.schedule is None or info.needs_data):
            entry["applied_by"] = "clients"
            return replies
        if not byz:
            return replies
        entry["applied_by"] = "adversary"
        if info.colluding:
            entry["knowledge"] = self.params.knowledge
            rows_in: Sequence[int] = range(len(parsed))  # the whole round's matrix
            byz_rows = byz
        else:  # client-side attack drawn by the time-varying schedule: only the Byzantine rows
            rows_in = byz
            byz_rows = list(range(len(byz)))
        honest = stack([parsed[j].view for j in rows_in], device=self.device)
        honest = to_attack_domain(honest, self.params.domain, inplace=True)
        try:
            result = apply_attack(
                attack, honest, byz_rows, self.params, seed=self.seed, server_round=max(0, server_round),
                stream_ids=[int(parsed[j].partition) for j in byz],  # type: ignore[arg-type]
            )
        except ValueError as err:  # e.g. knowledge="colluders" with one Byzantine reply
            log.warning("adversary: %s not applied in round %s: %s", attack, server_round, err)
            entry["applied_by"] = "none"
            entry["error"] = str(err)
            return replies
        entry.update({k: v for k, v in result.info.items() if k in ("gamma", "z", "knowledge")})
        out = list(replies)
        for row, j in zip(result.rows, byz):
            pos, node_id, _, view = parsed[j]
            new_local = view.base + from_attack_domain(row, self.params.domain).to(view.base.device)
            out[pos] = reply_with_arrays(replies[pos], view.rebuild(new_local), self.arrayrecord_key)
            entry["rewritten_node_ids"].append(node_id)
        entry["rewritten_node_ids"].sort()
        return out

    def _parse(self, sent: list[Message], replies: list[Message]) -> list[_Reply]:
        """Every reply whose update can be read against the arrays sent to its node.

        Shapes come from the arrays' metadata: only an attack the adversary computes needs the
        values, so a round without one decodes no reply here (the strategy parses them anyway).
        """
        parsed: list[_Reply] = []
        globs: dict[int, UpdateView] = {}  # a round's messages usually share one ArrayRecord: flatten it once
        for pos, (reply, msg) in enumerate(zip(replies, self._match(sent, replies))):
            if msg is None or reply.has_error() or not reply.has_content():
                continue
            sent_rec = msg.content.get(self.arrayrecord_key)
            if not isinstance(sent_rec, ArrayRecord):
                continue
            if id(sent_rec) not in globs:
                globs[id(sent_rec)] = global_view(sent_rec, dtype=self.dtype)
            view = parse(reply, globs[id(sent_rec)], arrayrecord_key=self.arrayrecord_key, read=False)
            if view is not None:
                parsed.append(_Reply(pos, reply.metadata.src_node_id, self._partition_of(reply), view))
        # One order whatever order the replies came in (node ids and arrival differ from run to
        # run): the attacks' means and spreads over the honest rows are float sums, and summed
        # in another order they differ in the last bits, so a rerun would not repeat a run.
        parsed.sort(key=lambda r: (r.partition is None, r.partition if r.partition is not None else 0, r.node_id))
        return parsed
