"""What every attack shares: seeds, the attack domain, and chunked statistics of known rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ._checks import check_byzantine, check_choice, check_matrix, require_int

__all__ = ["DOMAINS", "KNOWLEDGE", "column_chunks", "from_attack_domain", "knowledge_index", "knowledge_rows",
           "make_generator", "mean_std", "num_rows", "row_chunk", "to_attack_domain"]

KNOWLEDGE: tuple[str, ...] = ("omniscient", "benign", "colluders")
DOMAINS: tuple[str, ...] = ("gradient", "update")

# Columns per float64 chunk when a (k, d) matrix is reduced column-wise: k·chunk·8 bytes stays
# near 128 MiB however large d is (ResNet-18 has d = 11M, and 50 x 11M doubles would be 4.4 GB).
_CHUNK_ELEMENTS = 1 << 24


def make_generator(seed: int, *stream: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``(seed, *stream)`` via numpy's ``SeedSequence``.

    The client mod and the adversary both call ``make_generator(seed, partition_id,
    server_round)``, so a random/noise attack is reproducible and identical wherever it is
    computed; distinct streams are statistically independent (no ``seed + i`` collisions).
    """
    entropy = [require_int("seed", seed, 0)] + [require_int("stream", s, 0) for s in stream]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def to_attack_domain(update: torch.Tensor, domain: str = "gradient", *, inplace: bool = False) -> torch.Tensor:
    """Map a model update ``Δ = w_local − w_global`` to the vector the attack formulas act on.

    ``domain="gradient"`` (default): the pseudo-gradient ``g = −Δ``, the paper's domain (the
    reference attacks raw gradients; for a FedSGD client with a unit step ``g`` is the gradient).
    Sign-equivariant attacks (sign-flip, scaling, ByzMean's identity, unit/sign perturbations)
    do not care; σ-based ones (LIE, Min-Max/Min-Sum with ``"std"``) would otherwise shift
    every coordinate the opposite way.  ``domain="update"``: ``Δ`` itself.  ``inplace=True``
    negates ``update`` itself (the adversary's (n, d) matrix, which must not exist twice).
    """
    check_choice("domain", domain, DOMAINS)
    if domain == "update":
        return update
    return update.neg_() if inplace else -update


def from_attack_domain(vector: torch.Tensor, domain: str = "gradient") -> torch.Tensor:
    """Inverse of :func:`to_attack_domain` (the map is an involution)."""
    return to_attack_domain(vector, domain)


def column_chunks(k: int, d: int) -> Iterable[slice]:
    """Column slices of a (k, d) matrix small enough to reduce in float64 (see ``_CHUNK_ELEMENTS``)."""
    step = max(1, _CHUNK_ELEMENTS // max(k, 1))
    for start in range(0, d, step):
        yield slice(start, min(d, start + step))


def row_chunk(rows: torch.Tensor, index: list[int] | None, sl: slice) -> torch.Tensor:
    """Columns ``sl`` of the rows ``index`` (all rows if None) as float64: a k x chunk copy only.

    Selecting rows chunk by chunk instead of ``rows[index]`` up front avoids copying a
    (k, d) block: at d = 11M that is 1.8 GB per 40 rows.
    """
    block = rows[:, sl] if index is None else rows[index, sl]
    return block.double()


def num_rows(rows: torch.Tensor, index: list[int] | None) -> int:
    """How many rows ``index`` selects (all of ``rows`` if None)."""
    return rows.shape[0] if index is None else len(index)


def mean_std(rows: torch.Tensor, index: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row mean ``μ`` and unbiased per-coordinate std ``σ`` of ``rows[index]`` (k >= 2 rows).

    Computed in float64, column chunk by column chunk (memory stays O(k·chunk) for any d),
    returned in ``rows.dtype``.  ``index=None``: all rows.
    """
    rows = check_matrix("rows", rows)
    index = None if index is None else list(index)
    k, d = num_rows(rows, index), rows.shape[1]
    if k < 2:
        raise ValueError(f"rows needs at least 2 row(s), got {k}")
    mu = torch.empty(d, dtype=rows.dtype, device=rows.device)
    sigma = torch.empty_like(mu)
    for sl in column_chunks(k, d):
        s, m = torch.std_mean(row_chunk(rows, index, sl), dim=0, correction=1)
        mu[sl] = m.to(rows.dtype)
        sigma[sl] = s.to(rows.dtype)
    return mu, sigma


def knowledge_index(n: int, byzantine: Sequence[int], knowledge: str = "omniscient") -> list[int] | None:
    """Row indices a colluding attacker with ``knowledge`` sees among n rows; None = all."""
    check_choice("knowledge", knowledge, KNOWLEDGE)
    idx = check_byzantine(byzantine, n)
    if knowledge == "omniscient":
        return None
    if knowledge == "colluders":
        return sorted(idx)
    byz = set(idx)
    return [i for i in range(n) if i not in byz]


def knowledge_rows(
    honest: torch.Tensor, byzantine: Sequence[int], knowledge: str = "omniscient"
) -> torch.Tensor:
    """Rows of ``honest`` that a colluding attacker with ``knowledge`` sees (see the package doc)."""
    honest = check_matrix("honest", honest)
    index = knowledge_index(honest.shape[0], byzantine, knowledge)
    return honest if index is None else honest[index]
