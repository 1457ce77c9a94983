"""Running a registered attack on a round's honest updates: the simulation adversary's step."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._checks import check_byzantine, check_matrix
from .common import make_generator
from .params import AttackParams
from .registry import AttackResult, get_attack

__all__ = ["apply_attack"]


def apply_attack(
    name: str,
    honest: torch.Tensor,
    byzantine: Sequence[int],
    params: AttackParams | None = None,
    *,
    seed: int = 0,
    server_round: int = 0,
    stream_ids: Sequence[int] | None = None,
) -> AttackResult:
    """Compute the Byzantine rows of attack ``name`` from the honest vectors of a round.

    Parameters
    ----------
    name : str
        A registered attack that runs on updates (not "time_varying", "label_flip" or
        "lie_local": those need the client's data; the caller resolves time-varying to one
        attack per round).
    honest : Tensor (n, d)
        Honest vectors in the attack domain (see :func:`~clients.attacks.common.to_attack_domain`);
        rows ``byzantine`` are the Byzantine clients' own.
    byzantine : sequence of int
        Row indices of the Byzantine clients.
    params : AttackParams
    seed, server_round, stream_ids
        A seeded attack (random, noise) draws row j from ``make_generator(seed, stream_ids[j],
        server_round)``; pass the partition ids as ``stream_ids`` to reproduce the client
        mod's draws exactly.

    Returns
    -------
    AttackResult with ``rows`` of shape (m, d) and ``info``: a colluding attack's own (``gamma``
    for Min-Max/Min-Sum, ``z`` for LIE/ByzMean), else the parameters the attack ``reports``.
    """
    attack = get_attack(name)
    params = params or AttackParams()
    honest = check_matrix("honest", honest)
    idx = check_byzantine(byzantine, honest.shape[0])
    if not attack.on_updates:
        raise ValueError(f"attack {name!r} cannot be applied to updates; it runs on the client")
    own = honest[idx]
    streams = list(idx) if stream_ids is None else [int(s) for s in stream_ids]
    if len(streams) != len(idx):
        raise ValueError(f"stream_ids must have {len(idx)} entries, got {len(streams)}")
    if attack.colluding:
        return attack.fn(honest, idx, params)
    # One client's attack, row by row, with the generator its client mod would use.
    rows = torch.empty_like(own)
    for j, stream in enumerate(streams):
        generator = make_generator(seed, stream, server_round) if attack.seeded else None
        rows[j] = attack.fn(own[j], params, generator)
    return AttackResult(rows, {key: getattr(params, key) for key in attack.reports})
