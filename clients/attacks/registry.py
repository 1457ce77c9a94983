"""The one attack registry: name → the attack's callable and what it needs.

Both sides look attacks up here, never by name in an if/elif chain: the Byzantine client mod
(:class:`clients.byzantine.ByzantineClient`) runs the client-side ones on its own update, the
simulation adversary (:func:`clients.attacks.apply.apply_attack`) the colluding ones on the
round's update matrix, and client-side ones drawn by a time-varying schedule row by row.

Adding an attack is one decorated function in one module (and its test)::

    @register_attack("scaled_sign_flip", kind="client", summary="−2·g")
    def scaled_sign_flip(g, params, generator):
        return -2 * g

The callable's signature follows its ``kind``:

``"client"``
    ``fn(g, params, generator) -> Tensor``: ``g`` is the client's honest update in the attack
    domain, shape ``(d,)``, or its ``passes(params)`` honest updates as rows ``(k, d)`` when
    ``passes`` is given; ``generator`` is ``make_generator(seed, partition-id, round)`` when
    ``seeded``, else None.  ``fn=None``: the honest handler does the attack, told by
    ``instruction`` (config entries set on a copy of the train message).
``"colluding"``
    ``fn(honest, byzantine, params) -> AttackResult``: ``honest`` the round's ``(n, d)`` honest
    updates in the attack domain, ``byzantine`` the Byzantine row indices.
``"none"``
    Honest behaviour: ``fn`` as for ``"client"``.
``"meta"``
    No callable: picks another attack per round (time-varying).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ._checks import check_choice

if TYPE_CHECKING:
    from .params import AttackParams

__all__ = ["ATTACKS", "KINDS", "AttackInfo", "AttackResult", "get_attack", "is_client_side", "is_colluding",
           "register_attack"]

KINDS: tuple[str, ...] = ("none", "client", "colluding", "meta")


@dataclass
class AttackResult:
    """Rows to submit for the Byzantine clients (same order as ``byzantine``) and diagnostics."""

    rows: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AttackInfo:
    """Registry entry: an attack's callable and its metadata.

    Attributes
    ----------
    name : str
    kind : {"none", "client", "colluding", "meta"}
        ``"client"``: one client computes it alone from its own update or data (runs in the
        client mod); ``"colluding"``: needs the round's benign updates (runs in the simulation
        adversary); ``"meta"``: time-varying.
    summary : str
        One line for help texts.
    fn : callable or None
        The attack (signature by ``kind``: :mod:`clients.attacks.registry`).
    needs_data : bool
        Only the client can run it (label flip, local LIE): the adversary cannot apply it to
        an update.
    seeded : bool
        ``fn`` draws random numbers: it gets ``make_generator(seed, partition-id, round)``.
    reports : tuple of str
        :class:`~clients.attacks.params.AttackParams` fields recorded with the result.
    passes : callable or None
        ``passes(params)``: how many honest updates of its own the client computes (local LIE);
        None = one.
    instruction : tuple of (key, value)
        Train-config entries the honest handler is given (label flip: ``label-transform``).
    check : callable or None
        ``check(params)`` raises ``ValueError`` when the parameters do not suit this attack.
    """

    name: str
    kind: str
    summary: str
    fn: Callable[..., Any] | None = None
    needs_data: bool = False
    seeded: bool = False
    reports: tuple[str, ...] = ()
    passes: Callable[[AttackParams], int] | None = None
    instruction: tuple[tuple[str, Any], ...] = ()
    check: Callable[[AttackParams], None] | None = None

    @property
    def client_side(self) -> bool:
        """Computable by one client alone (runs in the client mod)."""
        return self.kind == "client"

    @property
    def colluding(self) -> bool:
        """Needs the round's benign updates (simulated by the adversary)."""
        return self.kind == "colluding"

    @property
    def on_updates(self) -> bool:
        """Whether the adversary can compute it from the round's updates alone."""
        return self.kind != "meta" and not self.needs_data


#: Every registered attack, in registration order.
ATTACKS: dict[str, AttackInfo] = {}


def register_attack(
    name: str,
    *,
    kind: str,
    summary: str,
    needs_data: bool = False,
    seeded: bool = False,
    reports: tuple[str, ...] = (),
    passes: Callable[[AttackParams], int] | None = None,
    instruction: Mapping[str, Any] | None = None,
    check: Callable[[AttackParams], None] | None = None,
) -> Callable[[Callable[..., Any] | None], Callable[..., Any] | None]:
    """Decorator registering ``fn`` as attack ``name`` (see the module doc for the signatures).

    ``register_attack(...)(None)`` registers an attack without a callable (label flip, which
    the honest handler runs; time-varying).  A name registered twice is a ``ValueError``.
    """
    check_choice("kind", kind, KINDS)

    def add(fn: Callable[..., Any] | None) -> Callable[..., Any] | None:
        if name in ATTACKS:
            raise ValueError(f"attack {name!r} is already registered")
        ATTACKS[name] = AttackInfo(
            name=name, kind=kind, summary=summary, fn=fn, needs_data=needs_data, seeded=seeded,
            reports=tuple(reports), passes=passes, instruction=tuple((instruction or {}).items()), check=check,
        )
        return fn

    return add


def get_attack(name: str) -> AttackInfo:
    """Registry lookup; ``ValueError`` naming ``attack`` and the known names otherwise."""
    try:
        return ATTACKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"attack must be one of {sorted(ATTACKS)}, got {name!r}") from None


def is_client_side(name: str) -> bool:
    """True for attacks a Byzantine client computes alone (independent attacks)."""
    return get_attack(name).client_side


def is_colluding(name: str) -> bool:
    """True for attacks that need the round's other updates (simulated by the adversary)."""
    return get_attack(name).colluding
