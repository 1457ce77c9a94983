"""Byzantine clients as Flower client mods: the honest ClientApp, wrapped.

A mod sits between the Flower runtime and the honest handler
(``Mod = Callable[[Message, Context, ClientAppCallable], Message]``), so the same honest code
runs on honest and Byzantine nodes and the wrapper works unchanged in simulation and in a
deployment (SuperLink + SuperNodes):

* :class:`ByzantineClient` always attacks (``ClientApp(mods=[ByzantineClient("sign_flip")])``
  on the nodes you want Byzantine);
* :func:`byzantine_mod` decides from the node's context whether it is Byzantine and which attack
  to run: ``node_config["byzantine"]`` in a deployment, else the run's Byzantine set
  :func:`byzantine_partitions` ``(num-partitions, num-byzantine, seed)`` in a simulation;
* :func:`wrap_client_app` puts mods around an existing ClientApp object (the honest
  ``clients.client_app.app``), whose mods are fixed at construction.

Only train messages are touched; evaluate and query messages pass through.  Client-side
(independent) attacks are looked up in the registry :data:`clients.attacks.ATTACKS` and run
here: random, noise, sign_flip, reverse_scaling (on the honest update), label_flip (the honest
handler trains on labels ``C − 1 − y`` because the mod sets the attack's ``instruction``,
``"label-transform": "flip"``, in a copy of the message's config) and lie_local (μ − z·σ over
``lie-batches`` honest updates of the client's own data).
**Colluding attacks** (lie, byzmean, min_max, min_sum) need the other clients' updates, which a
client never sees: the wrapper then behaves honestly and the simulation's omniscient adversary
(:mod:`simulations.engine.adversary`) rewrites the reply.  In a deployment they would need a collusion
channel between the Byzantine nodes, which is out of scope (``docs/threat-model.md``).

The reply keeps the honest reply's metadata, metrics and ``"diag"`` records and its buffers
(BatchNorm statistics): only the float non-buffer arrays (:func:`signguard_flwr.arrays.update_keys`)
change, read and rebuilt through :mod:`signguard_flwr.updates` so keys, shapes and dtypes stay
valid.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod

from clients.attacks import (
    AttackInfo,
    AttackParams,
    from_attack_domain,
    get_attack,
    is_client_side,
    make_generator,
    parse_bool,
    require_int,
    to_attack_domain,
)
from signguard_flwr.updates import UpdateView, global_view, parse

__all__ = [
    "ADVERSARY_DIRECTIVE_KEY",
    "ByzantineClient",
    "byzantine_mod",
    "byzantine_partitions",
    "is_byzantine_node",
    "is_train_message",
    "num_byzantine_from_config",
    "replace_content",
    "reply_with_arrays",
    "wrap_client_app",
]

#: Train-config key through which the simulation adversary tells Byzantine clients which
#: data-dependent attack (``"label_flip"`` or ``"none"``) to run this round (time-varying attack:
#: only the client can flip its labels).  Honest clients ignore it.
ADVERSARY_DIRECTIVE_KEY = "adversary-local-attack"

_ARRAYS, _CONFIG = "arrays", "config"


# --------------------------------------------------------------------------------------------
# Who is Byzantine
# --------------------------------------------------------------------------------------------


def byzantine_partitions(
    num_clients: int, num_byzantine: int, seed: int = 0, *, placement: str = "random"
) -> list[int]:
    """The run's fixed Byzantine partition ids (ground truth), sorted.

    ``placement="random"`` (default): ``num_byzantine`` distinct ids drawn without replacement
    by numpy's ``SeedSequence([seed, 0xB12])`` (the same set on every process of the run, for
    every round).  ``placement="first"``: ``0 … num_byzantine − 1``, the reference code's choice.
    """
    num_clients = require_int("num_clients", num_clients, 1)
    num_byzantine = require_int("num_byzantine", num_byzantine, 0)
    seed = require_int("seed", seed, 0)
    if num_byzantine > num_clients:
        raise ValueError(f"num_byzantine must be <= num_clients = {num_clients}, got {num_byzantine}")
    if placement == "first":
        return list(range(num_byzantine))
    if placement != "random":
        raise ValueError(f"placement must be 'random' or 'first', got {placement!r}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB12]))
    return sorted(int(i) for i in rng.choice(num_clients, size=num_byzantine, replace=False))


def num_byzantine_from_config(config: Mapping[str, Any], num_clients: int) -> int:
    """``num-byzantine``, else ``round(byzantine-fraction · num_clients)``, else 0."""
    if "num-byzantine" in config:
        return require_int("num-byzantine", config["num-byzantine"], 0)
    if "byzantine-fraction" in config:
        fraction = float(config["byzantine-fraction"])
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"byzantine-fraction must be in [0, 1], got {fraction}")
        return int(round(fraction * num_clients))
    return 0


def _sources(context: Context, msg: Message | None) -> list[Mapping[str, Any]]:
    """Where settings come from, first wins: node config, run config, the train message's config.

    ``flwr.simulation.run_simulation`` gives ClientApps an empty run config, so the ServerApp
    forwards the run-config keys in every train ConfigRecord (``simulations.config.CLIENT_KEYS``);
    ``flwr run`` and deployments fill ``context.run_config`` itself.
    """
    sources: list[Mapping[str, Any]] = [context.node_config, context.run_config]
    if msg is not None and msg.has_content():
        config = msg.content.get(_CONFIG)
        if isinstance(config, ConfigRecord):
            sources.append(config)
    return sources


def _first(sources: Sequence[Mapping[str, Any]], key: str, default: Any = None) -> Any:
    return next((s[key] for s in sources if key in s), default)


def is_byzantine_node(context: Context, msg: Message | None = None) -> bool:
    """Whether this node is Byzantine.

    Deployment: ``node_config["byzantine"]`` (bool, or "true"/"false") decides when present.
    Simulation: ``node_config["partition-id"]`` ∈ :func:`byzantine_partitions` ``(n, m, seed)``
    with ``n = node_config["num-partitions"]`` (else ``num-clients``), ``m`` from
    :func:`num_byzantine_from_config` and ``seed``, read from the run config, else from the train
    message's config (see :func:`_sources`); ``byzantine-placement`` ("random"/"first").
    """
    node = context.node_config
    if "byzantine" in node:
        return parse_bool("byzantine", node["byzantine"])
    if "partition-id" not in node:
        return False
    sources = _sources(context, msg)
    n = int(_first(sources, "num-partitions", _first(sources, "num-clients", 0)))
    m = num_byzantine_from_config({k: v for s in reversed(sources) for k, v in s.items()}, n)
    if m == 0:
        return False
    placement = str(_first(sources, "byzantine-placement", "random"))
    pids = byzantine_partitions(n, m, int(_first(sources, "seed", 0)), placement=placement)
    return int(node["partition-id"]) in pids


# --------------------------------------------------------------------------------------------
# Message plumbing
# --------------------------------------------------------------------------------------------


def replace_content(msg: Message, content: RecordDict) -> Message:
    """A new message with ``msg``'s metadata (copied) and ``content``; ``msg`` is untouched.

    Used for a modified copy of an incoming instruction (label flip, local LIE) and for a
    rewritten reply, here and in the simulation adversary: the reply keeps its ids, source,
    destination, TTL and type, so the runtime and the strategy see an ordinary reply.
    """
    return Message(content, metadata=copy.deepcopy(msg.metadata))


def _with_config(msg: Message, **changes: Any) -> Message:
    """Copy of ``msg`` whose ConfigRecord has ``changes`` (other records shared, not copied)."""
    content = RecordDict(dict(msg.content.items()))
    config = dict(msg.content[_CONFIG].items()) if _CONFIG in msg.content else {}
    config.update(changes)
    content[_CONFIG] = ConfigRecord(config)
    return replace_content(msg, content)


def _server_round(msg: Message) -> int:
    config = msg.content.get(_CONFIG)
    if isinstance(config, ConfigRecord) and "server-round" in config:
        return int(config["server-round"])  # type: ignore[arg-type]
    group = msg.metadata.group_id
    return int(group) if group.isdigit() else 0


def is_train_message(msg: Message) -> bool:
    """True for ``"train"`` and ``"train.<action>"`` messages."""
    return msg.metadata.message_type.split(".", 1)[0] == MessageType.TRAIN


def reply_with_arrays(reply: Message, arrays: ArrayRecord, arrayrecord_key: str = _ARRAYS) -> Message:
    """The ``reply`` with its model record replaced by ``arrays`` (other records shared)."""
    content = RecordDict(dict(reply.content.items()))
    content[arrayrecord_key] = arrays
    return replace_content(reply, content)


# --------------------------------------------------------------------------------------------
# The mod
# --------------------------------------------------------------------------------------------


class ByzantineClient:
    """A Flower client mod that makes its node Byzantine with one client-side attack.

    Parameters
    ----------
    attack : str
        Registered attack (:data:`clients.attacks.ATTACKS`).  Client-side: ``random``,
        ``noise``, ``sign_flip``, ``label_flip``, ``reverse_scaling``, ``lie_local``;
        ``none`` and the colluding ones (``lie``, ``byzmean``, ``min_max``, ``min_sum``) leave
        the honest reply as it is (the simulation adversary rewrites colluding ones);
        ``time_varying`` runs the client-side attack drawn for the round (see
        :meth:`attack_for`).
    seed : int
        Run seed; random and noise draws use ``make_generator(seed, partition-id, round)``.
    params : AttackParams, optional
        Attack hyper-parameters; keyword arguments (``sigma=``, ``scale=``, ``z=``,
        ``lie_batches=``, ...) build one instead.

    Examples
    --------
    >>> from flwr.clientapp import ClientApp
    >>> app = ClientApp(mods=[ByzantineClient("sign_flip")])       # doctest: +SKIP
    """

    def __init__(self, attack: str = "sign_flip", *, seed: int = 0,
                 params: AttackParams | None = None, **param_kwargs: Any) -> None:
        info = get_attack(attack)
        self.attack = info.name
        self.seed = require_int("seed", seed, 0)
        if params is not None and param_kwargs:
            raise ValueError("give either params or keyword parameters, not both")
        self.params = params if params is not None else AttackParams.build(**param_kwargs)
        self._schedule = self.params.schedule(self.seed) if info.kind == "meta" else None
        if info.check is not None:
            info.check(self.params)

    def __repr__(self) -> str:
        return f"ByzantineClient(attack={self.attack!r}, seed={self.seed})"

    def attack_for(self, msg: Message) -> str:
        """The attack this client runs for ``msg``.

        An :data:`ADVERSARY_DIRECTIVE_KEY` in the train config wins (the simulation adversary
        runs a time-varying schedule and delegates data-dependent draws to the clients).
        Otherwise the configured attack; for ``time_varying`` the schedule's draw for the round
        when it is client-side, ``"none"`` when it is colluding (no adversary to run it).
        """
        config = msg.content.get(_CONFIG)
        if isinstance(config, ConfigRecord) and ADVERSARY_DIRECTIVE_KEY in config:
            name = str(config[ADVERSARY_DIRECTIVE_KEY])
            if name != "none" and not is_client_side(name):
                raise ValueError(f"{ADVERSARY_DIRECTIVE_KEY} must name a client-side attack, got {name!r}")
            return name
        if self._schedule is not None:
            drawn = self._schedule.attack_for_round(max(1, _server_round(msg)))
            return drawn if is_client_side(drawn) else "none"
        return self.attack

    def __call__(self, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if not is_train_message(msg) or not msg.has_content():
            return call_next(msg, context)
        attack = get_attack(self.attack_for(msg))
        if not attack.client_side:
            return call_next(msg, context)  # none; colluding attacks: the adversary rewrites
        if attack.instruction:
            msg = _with_config(msg, **dict(attack.instruction))
        if attack.fn is None:
            return call_next(msg, context)  # the honest handler runs it (label flip)
        sent = msg.content.get(_ARRAYS)
        # float64 on one client is cheap and keeps w_global + Δ' free of float32 cancellation.
        glob = global_view(sent, dtype=torch.float64) if isinstance(sent, ArrayRecord) else None
        passes = 1 if attack.passes is None else require_int("passes", attack.passes(self.params), 1)
        first: tuple[Message, UpdateView] | None = None
        rows: list[torch.Tensor] = []
        for j in range(passes):
            reply = call_next(msg if passes == 1 else self._pass(msg, j, passes), context)
            view = None if glob is None else parse(reply, glob)
            if view is None:
                return reply  # error or malformed honest reply: nothing to attack
            first = first or (reply, view)
            rows.append(to_attack_domain(view.delta, self.params.domain))
        reply, view = first
        bad = attack.fn(rows[0] if passes == 1 else torch.stack(rows), self.params, self._generator(attack, msg, context))
        # The passes answered copies carrying msg's metadata, so `reply` is a valid reply to msg.
        return reply_with_arrays(reply, view.rebuild(view.base + from_attack_domain(bad, self.params.domain)))

    @staticmethod
    def _pass(msg: Message, j: int, passes: int) -> Message:
        """Pass ``j`` of an attack that needs ``passes`` honest updates of the client's own data.

        The honest client draws its FedSGD batch from the round number, so pass ``j`` of round
        ``r`` is asked for virtual round ``(r − 1)·k + j + 1``: the k passes use k different
        batches of the client's own data, walking its shuffled data k batches per round (as
        the reference's DataLoader iterator would), all from the same global model.  The
        reply sent is the first pass's (metrics, diag, buffers) with the attack's update.
        """
        r = max(1, _server_round(msg))
        return _with_config(msg, **{"server-round": (r - 1) * passes + j + 1})

    def _generator(self, attack: AttackInfo, msg: Message, context: Context) -> torch.Generator | None:
        """``make_generator(seed, partition-id, round)`` for a seeded attack, as the adversary draws it."""
        if not attack.seeded:
            return None
        pid = int(context.node_config.get("partition-id", 0))
        return make_generator(self.seed, pid, max(0, _server_round(msg)))


def _settings(context: Context, msg: Message) -> tuple[str, int, AttackParams]:
    """(attack, seed, params) for this node, from :func:`_sources` (node config first)."""
    sources = _sources(context, msg)
    attack = str(_first(sources, "attack", "none"))
    seed = int(_first(sources, "seed", 0))
    return attack, seed, AttackParams.from_config(*sources)


def byzantine_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower mod: attack if this node is Byzantine (:func:`is_byzantine_node`), else pass.

    Reads (node config wins over run config, which wins over the train message's config):
    ``attack`` (default "none"), ``seed`` (0), the attack parameters of
    :meth:`clients.attacks.AttackParams.from_config` (``attack-sigma``, ``attack-scale``,
    ``attack-z``, ``lie-batches``, ``attack-params`` string, ``tv-*`` keys, ...); identity from
    ``byzantine`` (node config) or ``partition-id``/``num-partitions`` + ``num-byzantine``
    (or ``byzantine-fraction``) + ``seed`` (simulation).
    """
    if not is_train_message(msg) or not is_byzantine_node(context, msg):
        return call_next(msg, context)
    attack, seed, params = _settings(context, msg)
    return ByzantineClient(attack, seed=seed, params=params)(msg, context, call_next)


# --------------------------------------------------------------------------------------------
# Wrapping an existing ClientApp
# --------------------------------------------------------------------------------------------


class _ModdedClientApp(ClientApp):
    """A ClientApp that runs ``mods`` around another ClientApp object's ``__call__``."""

    def __init__(self, inner: ClientApp, mods: Sequence[Mod]) -> None:
        super().__init__()
        self._inner = inner
        call: ClientAppCallable = inner.__call__
        for mod in reversed(list(mods)):  # first mod outermost, as ClientApp(mods=...) does
            call = (lambda m, nxt: (lambda message, context: m(message, context, nxt)))(mod, call)
        self._wrapped = call

    def __call__(self, message: Message, context: Context) -> Message:
        return self._wrapped(message, context)


def wrap_client_app(app: ClientApp, mods: Sequence[Mod] | Mod = (byzantine_mod,)) -> ClientApp:
    """A ClientApp running ``mods`` (default :func:`byzantine_mod`) around ``app``.

    ``ClientApp`` fixes its mods at construction, so the honest app cannot be given more
    afterwards; this wrapper keeps the honest app (with its own mods and lifespan) as it is.
    """
    mod_list: list[Mod] = [mods] if callable(mods) else list(mods)  # type: ignore[list-item]
    return _ModdedClientApp(app, mod_list)
