"""Attack math of the SignGuard threat model: pure functions on torch tensors, no Flower.

This module is the one place where the attacks are computed.  The Byzantine client mod
(:mod:`clients.byzantine`) uses the client-computable ones on a single client's update; the
omniscient simulation adversary (:mod:`simulations.adversary`) uses the colluding ones on the
round's whole update matrix.  Both therefore produce bit-identical vectors for the same inputs.

Notation (SignGuard, Xu et al., ICDCS 2022, §V-B; ``docs/threat-model.md``)
---------------------------------------------------------------------------
``n`` clients submit vectors in a round, ``m`` of them Byzantine.  ``H`` is a matrix whose rows
are honest vectors ``h_i``; ``μ`` its row mean and ``σ`` its per-coordinate **unbiased** standard
deviation (``n − 1`` denominator, as the reference code).  Attacks are written in the paper's
*gradient* domain; :func:`to_attack_domain` turns a model update ``Δ = w_local − w_global`` into
the pseudo-gradient ``g = −Δ`` first (for a FedSGD client with a unit step, exactly the
mini-batch gradient), so that ``μ − z·σ`` means what the paper means.

Knowledge of a colluding attacker (``knowledge=``)
--------------------------------------------------
``"omniscient"`` (default, as the reference code)
    μ, σ and the Min-Max/Min-Sum constraints use **all n honest vectors**: every benign
    client's and the Byzantine clients' own honest ones.
``"benign"``
    only the ``n − m`` benign clients' vectors (Shejwalkar & Houmansadr's, Blades', FLPoison's
    choice).
``"colluders"``
    only the Byzantine clients' own honest vectors (Baruch et al.'s non-omniscient LIE); needs
    ``m >= 2``.
"""

from __future__ import annotations

import ast
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch

__all__ = [
    "ATTACKS",
    "AttackInfo",
    "AttackParams",
    "AttackResult",
    "DEFAULT_TIME_VARYING_ATTACKS",
    "KNOWLEDGE",
    "PERTURBATIONS",
    "TimeVaryingSchedule",
    "apply_attack",
    "byzmean",
    "flip_labels",
    "gamma_search",
    "get_attack",
    "is_client_side",
    "is_colluding",
    "knowledge_index",
    "knowledge_rows",
    "lie",
    "lie_attack",
    "lie_z_max",
    "make_generator",
    "mean_std",
    "min_max",
    "min_sum",
    "noise_attack",
    "parse_attack_params",
    "parse_bool",
    "random_update",
    "require_int",
    "reverse_scaling",
    "sign_flip",
    "from_attack_domain",
    "to_attack_domain",
]

KNOWLEDGE: tuple[str, ...] = ("omniscient", "benign", "colluders")
PERTURBATIONS: tuple[str, ...] = ("std", "unit", "sign")
SEARCHES: tuple[str, ...] = ("ndss", "reference")
DOMAINS: tuple[str, ...] = ("gradient", "update")
BYZMEAN_VARIANTS: tuple[str, ...] = ("paper", "reference")

# Columns per float64 chunk when a (k, d) matrix is reduced column-wise: k·chunk·8 bytes stays
# near 128 MiB however large d is (ResNet-18 has d = 11M, and 50 x 11M doubles would be 4.4 GB).
_CHUNK_ELEMENTS = 1 << 24


# --------------------------------------------------------------------------------------------
# Validation helpers (ValueError naming the argument, as everywhere in the project)
# --------------------------------------------------------------------------------------------


def require_int(name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` as int, else ``ValueError`` naming ``name`` (also below ``minimum``)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_float(name: str, value: Any, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if nonneg and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_matrix(name: str, rows: Any, min_rows: int = 1) -> torch.Tensor:
    if not isinstance(rows, torch.Tensor) or rows.ndim != 2 or not rows.is_floating_point():
        shape = tuple(rows.shape) if isinstance(rows, torch.Tensor) else type(rows).__name__
        raise ValueError(f"{name} must be a float torch.Tensor of shape (rows, d), got {shape}")
    if rows.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} row(s), got {rows.shape[0]}")
    return rows


def _check_byzantine(byzantine: Iterable[int], n: int) -> list[int]:
    idx = [require_int("byzantine", i, 0) for i in byzantine]
    if len(set(idx)) != len(idx):
        raise ValueError(f"byzantine has repeated row indices: {idx}")
    if any(i >= n for i in idx):
        raise ValueError(f"byzantine row indices must be < n = {n}, got {idx}")
    if not idx:
        raise ValueError("byzantine must name at least one row")
    return idx


# --------------------------------------------------------------------------------------------
# Seeds and domain
# --------------------------------------------------------------------------------------------


def make_generator(seed: int, *stream: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``(seed, *stream)`` via numpy's ``SeedSequence``.

    The client mod and the adversary both call ``make_generator(seed, partition_id,
    server_round)``, so a random/noise attack is reproducible and identical wherever it is
    computed; distinct streams are statistically independent (no ``seed + i`` collisions).
    """
    entropy = [require_int("seed", seed, 0)] + [require_int("stream", s, 0) for s in stream]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def to_attack_domain(update: torch.Tensor, domain: str = "gradient") -> torch.Tensor:
    """Map a model update ``Δ = w_local − w_global`` to the vector the attack formulas act on.

    ``domain="gradient"`` (default): the pseudo-gradient ``g = −Δ``, the paper's domain (the
    reference attacks raw gradients; for a FedSGD client with a unit step ``g`` is the gradient).
    Sign-equivariant attacks (sign-flip, scaling, ByzMean's identity, unit/sign perturbations)
    do not care; σ-based ones (LIE, Min-Max/Min-Sum with ``"std"``) would otherwise shift
    every coordinate the opposite way.  ``domain="update"``: ``Δ`` itself.
    """
    _check_choice("domain", domain, DOMAINS)
    return -update if domain == "gradient" else update


def from_attack_domain(vector: torch.Tensor, domain: str = "gradient") -> torch.Tensor:
    """Inverse of :func:`to_attack_domain` (the map is an involution)."""
    return to_attack_domain(vector, domain)


# --------------------------------------------------------------------------------------------
# Client-computable (independent) attacks
# --------------------------------------------------------------------------------------------


def random_update(
    shape: int | Sequence[int],
    sigma: float = 0.5,
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Random (Gaussian) attack: send ``N(0, σ²·I)`` regardless of the data.

    Paper §V-B: σ = 0.5 (the reference draws ``0.5·N(0, I)`` per Byzantine client).
    """
    sigma = _check_float("sigma", sigma, nonneg=True)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    # Always drawn in float32, so a float64 caller (the client mod) and a float32 one (the
    # adversary) get the same numbers from the same seed.
    return (torch.randn(shape, generator=generator, dtype=torch.float32) * sigma).to(dtype)


def noise_attack(
    g: torch.Tensor, sigma: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Noise attack: ``g + N(0, σ²·I)`` with the client's own honest vector ``g`` (σ = 0.5)."""
    sigma = _check_float("sigma", sigma, nonneg=True)
    noise = torch.randn(g.shape, generator=generator, dtype=torch.float32)  # float32: see random_update
    return g + (sigma * noise).to(device=g.device, dtype=g.dtype)


def sign_flip(g: torch.Tensor) -> torch.Tensor:
    """Sign-flip attack: ``−g`` (paper §V-B: no scaling)."""
    return -g


def reverse_scaling(g: torch.Tensor, r: float = 3.0) -> torch.Tensor:
    """Reverse attack with scaling: ``−r·g``, ``r > 0``.

    Paper §VI-C (ablation, Table III): ``r = R = 3.0`` (the norm band's upper bound) when
    thresholding/clipping are on, ``r = 100`` otherwise.  Absent from the reference code.
    """
    r = _check_float("r", r, positive=True)
    return -r * g


def flip_labels(y: Any, num_classes: int) -> Any:
    """Label-flip map ``y → C − 1 − y`` for any number of classes ``C``.

    Works on torch tensors, numpy arrays and Python ints.  The reference hard-codes
    ``9 − y`` (defect D13, wrong for AG-News' C = 4).
    """
    num_classes = require_int("num_classes", num_classes, 1)
    lo, hi = (int(y.min()), int(y.max())) if hasattr(y, "min") else (int(y), int(y))
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"y must lie in [0, {num_classes}), got values in [{lo}, {hi}]")
    return (num_classes - 1) - y


# --------------------------------------------------------------------------------------------
# Statistics shared by the colluding attacks
# --------------------------------------------------------------------------------------------


def _column_chunks(k: int, d: int) -> Iterable[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(k, 1))
    for start in range(0, d, step):
        yield slice(start, min(d, start + step))


def _chunk(rows: torch.Tensor, index: list[int] | None, sl: slice) -> torch.Tensor:
    """Columns ``sl`` of the rows ``index`` (all rows if None) as float64: a k x chunk copy only.

    Selecting rows chunk by chunk instead of ``rows[index]`` up front avoids copying a
    (k, d) block: at d = 11M that is 1.8 GB per 40 rows.
    """
    block = rows[:, sl] if index is None else rows[index, sl]
    return block.double()


def _num_rows(rows: torch.Tensor, index: list[int] | None) -> int:
    return rows.shape[0] if index is None else len(index)


def mean_std(rows: torch.Tensor, index: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row mean ``μ`` and unbiased per-coordinate std ``σ`` of ``rows[index]`` (k >= 2 rows).

    Computed in float64, column chunk by column chunk (memory stays O(k·chunk) for any d),
    returned in ``rows.dtype``.  ``index=None``: all rows.
    """
    rows = _check_matrix("rows", rows)
    index = None if index is None else list(index)
    k, d = _num_rows(rows, index), rows.shape[1]
    if k < 2:
        raise ValueError(f"rows needs at least 2 row(s), got {k}")
    mu = torch.empty(d, dtype=rows.dtype, device=rows.device)
    sigma = torch.empty_like(mu)
    for sl in _column_chunks(k, d):
        s, m = torch.std_mean(_chunk(rows, index, sl), dim=0, correction=1)
        mu[sl] = m.to(rows.dtype)
        sigma[sl] = s.to(rows.dtype)
    return mu, sigma


def knowledge_index(n: int, byzantine: Sequence[int], knowledge: str = "omniscient") -> list[int] | None:
    """Row indices a colluding attacker with ``knowledge`` sees among n rows; None = all."""
    _check_choice("knowledge", knowledge, KNOWLEDGE)
    idx = _check_byzantine(byzantine, n)
    if knowledge == "omniscient":
        return None
    if knowledge == "colluders":
        return sorted(idx)
    byz = set(idx)
    return [i for i in range(n) if i not in byz]


def knowledge_rows(
    honest: torch.Tensor, byzantine: Sequence[int], knowledge: str = "omniscient"
) -> torch.Tensor:
    """Rows of ``honest`` that a colluding attacker with ``knowledge`` sees (see module doc)."""
    honest = _check_matrix("honest", honest)
    index = knowledge_index(honest.shape[0], byzantine, knowledge)
    return honest if index is None else honest[index]


# --------------------------------------------------------------------------------------------
# LIE (Baruch et al., NeurIPS 2019; SignGuard Eq. 2)
# --------------------------------------------------------------------------------------------


def lie_z_max(n: int, m: int) -> float:
    """Largest LIE shift that still hides inside the majority: SignGuard Eq. (2).

    ``z_max = max z such that Φ(z) < (n − ⌊n/2 + 1⌋) / (n − m)``, i.e. ``Φ⁻¹`` of that ratio
    (the supremum of the open set; Baruch et al. with ``s = ⌊n/2 + 1⌋ − m`` supporters needed).
    ``n = 50, m = 10``: ``Φ⁻¹(24/40) ≈ 0.2533``.

    Raises ``ValueError`` when the ratio is not in (0, 1): ``m >= ⌊n/2 + 1⌋`` (the Byzantine
    clients are a majority and z is unbounded) or ``n < 2``.
    """
    n = require_int("n", n, 2)
    m = require_int("m", m, 0)
    if m >= n:
        raise ValueError(f"m must be < n = {n}, got {m}")
    ratio = (n - (n // 2 + 1)) / (n - m)
    if not 0.0 < ratio < 1.0:
        raise ValueError(
            f"m = {m} of n = {n} gives Φ(z) < {ratio:.4g}: z_max is undefined (needs m < ⌊n/2 + 1⌋)"
        )
    return statistics.NormalDist().inv_cdf(ratio)


def lie(benign: torch.Tensor, z: float = 0.3) -> torch.Tensor:
    """LIE vector ``μ − z·σ`` of the rows of ``benign`` (paper Eq. 2; z = 0.3 in the experiments).

    ``benign`` are the rows the attacker knows (see :func:`knowledge_rows`); the reference
    fixes ``z = 1.0`` (defect D9).
    """
    z = _check_float("z", z)
    mu, sigma = mean_std(benign)
    return mu - z * sigma


def _resolve_z(z: float | str, n: int, m: int) -> float:
    if isinstance(z, str):
        if z != "max":
            raise ValueError(f"z must be a number or 'max', got {z!r}")
        return lie_z_max(n, m)
    return _check_float("z", z)


def lie_attack(
    honest: torch.Tensor,
    byzantine: Sequence[int],
    *,
    z: float | str = 0.3,
    knowledge: str = "omniscient",
) -> tuple[torch.Tensor, float]:
    """Colluding LIE: every Byzantine row sends ``μ − z·σ`` of the known rows.

    Parameters
    ----------
    honest : Tensor (n, d)
        Honest vectors of all n clients of the round (Byzantine clients' included).
    byzantine : sequence of int
        Row indices of the m Byzantine clients.
    z : float or "max"
        Shift; ``"max"`` uses :func:`lie_z_max` ``(n, m)``.
    knowledge : {"omniscient", "benign", "colluders"}

    Returns
    -------
    rows : Tensor (m, d), all identical;  z : float actually used.
    """
    idx = _check_byzantine(byzantine, _check_matrix("honest", honest).shape[0])
    z_used = _resolve_z(z, honest.shape[0], len(idx))
    mu, sigma = mean_std(honest, knowledge_index(honest.shape[0], idx, knowledge))
    vector = mu - z_used * sigma
    return vector.unsqueeze(0).expand(len(idx), -1).clone(), z_used


# --------------------------------------------------------------------------------------------
# ByzMean (SignGuard Eq. 8)
# --------------------------------------------------------------------------------------------


def byzmean(
    honest: torch.Tensor,
    byzantine: Sequence[int],
    *,
    g_star: torch.Tensor | None = None,
    z: float | str = 0.3,
    knowledge: str = "omniscient",
    variant: str = "paper",
) -> torch.Tensor:
    """ByzMean attack: make the mean of **all n submitted** vectors equal a target ``g*``.

    SignGuard Eq. (8): ``m1 = ⌊m/2⌋`` Byzantine clients send ``g*``, the other ``m2 = m − m1``
    send ``g' = ((n − m1)·g* − Σ_{j benign} h_j) / m2``; then
    ``(m1·g* + m2·g' + Σ_benign h_j) / n = g*``.  The benign set is the ``n − m`` clients that are
    not Byzantine (their submitted vectors are their honest ones).

    Parameters
    ----------
    honest : Tensor (n, d)
        Honest vectors of all n clients (rows ``byzantine`` are the Byzantine clients' own).
    byzantine : sequence of int
        Row indices of the m Byzantine clients; the first ``m1`` of them send ``g*``.
    g_star : Tensor (d,), optional
        Target; default the LIE vector ``μ − z·σ`` of the known rows (the paper's choice).
    z, knowledge
        As in :func:`lie_attack`.  With ``knowledge="colluders"`` the benign sum is unknown
        and is estimated as ``(n − m)·μ_colluders``.
    variant : {"paper", "reference"}
        ``"reference"`` reproduces the official code's identity
        ``g' = ((n − m − m1)·g* − Σ_{all n} h_i) / m2`` (defect D8: the submitted mean is then
        ≈ 0.8·g* − 0.2·μ at n = 50, m = 10, not g*).  Parity runs: ``variant="reference", z=0.5``.

    Returns
    -------
    Tensor (m, d): row j is Byzantine client ``byzantine[j]``'s vector.
    """
    _check_choice("variant", variant, BYZMEAN_VARIANTS)
    honest = _check_matrix("honest", honest)
    idx = _check_byzantine(byzantine, honest.shape[0])
    n, m, d = honest.shape[0], len(idx), honest.shape[1]
    known = knowledge_index(n, idx, knowledge)
    if g_star is None:
        mu, sigma = mean_std(honest, known)
        g_star = mu - _resolve_z(z, n, m) * sigma
    elif g_star.shape != honest.shape[1:]:
        raise ValueError(f"g_star must have shape ({d},), got {tuple(g_star.shape)}")
    byz_set = set(idx)
    benign = [i for i in range(n) if i not in byz_set]
    # Sums in float64 (chunked, no (n, d) copy): (n − m1)·g* and Σ h_j nearly cancel.
    benign_sum = torch.empty(d, dtype=torch.float64, device=honest.device)
    byz_sum = torch.empty_like(benign_sum)
    for sl in _column_chunks(n, d):
        if knowledge == "colluders":  # benign updates unknown: estimate them by the colluders' mean
            benign_sum[sl] = (n - m) * _chunk(honest, sorted(idx), sl).mean(dim=0)
        else:
            benign_sum[sl] = _chunk(honest, benign, sl).sum(dim=0)
        byz_sum[sl] = _chunk(honest, sorted(idx), sl).sum(dim=0)
    m1 = m // 2
    m2 = m - m1
    g64 = g_star.double()
    if variant == "paper":
        other = ((n - m1) * g64 - benign_sum) / m2
    else:
        other = ((n - m - m1) * g64 - (benign_sum + byz_sum)) / m2
    rows = torch.empty((m, honest.shape[1]), dtype=honest.dtype, device=honest.device)
    rows[:m1] = g_star.to(honest.dtype)
    rows[m1:] = other.to(honest.dtype)
    return rows


# --------------------------------------------------------------------------------------------
# Min-Max / Min-Sum (Shejwalkar & Houmansadr, NDSS 2021; SignGuard Eq. 13-15)
# --------------------------------------------------------------------------------------------


@dataclass
class _Geometry:
    """Everything the γ search needs, from one pass over the known rows.

    With ``X_i = h_i − μ`` and perturbation ``p``:
    ``‖μ + γp − h_i‖² = a_i − 2γ·b_i + γ²·c`` where ``a_i = ‖X_i‖²``, ``b_i = ⟨X_i, p⟩``,
    ``c = ‖p‖²``; pairwise ``‖h_i − h_j‖² = a_i + a_j − 2⟨X_i, X_j⟩``.  So every constraint
    evaluation is O(k) after an O(k²·d) Gram pass, and centring first keeps the Gram
    distances accurate (no ‖x‖² + ‖y‖² − 2x·y cancellation on raw vectors).
    """

    mu: torch.Tensor  # (d,) float64
    p: torch.Tensor  # (d,) float64
    a: torch.Tensor  # (k,) float64
    b: torch.Tensor  # (k,) float64
    c: float
    pair_sq: torch.Tensor  # (k, k) float64


def _geometry(rows: torch.Tensor, perturbation: str, index: list[int] | None = None) -> _Geometry:
    _check_choice("perturbation", perturbation, PERTURBATIONS)
    rows = _check_matrix("rows", rows)
    k, d = _num_rows(rows, index), rows.shape[1]
    mu = torch.empty(d, dtype=torch.float64, device=rows.device)
    p = torch.empty_like(mu)
    gram = torch.zeros((k, k), dtype=torch.float64, device=rows.device)
    b = torch.zeros(k, dtype=torch.float64, device=rows.device)
    for sl in _column_chunks(k, d):
        chunk = _chunk(rows, index, sl)
        m = chunk.mean(dim=0)
        x = chunk - m
        gram += x @ x.T
        mu[sl] = m
        if perturbation == "std":
            p[sl] = -torch.sqrt((x * x).sum(dim=0) / (k - 1))
        elif perturbation == "sign":
            p[sl] = -torch.sign(m)
        else:  # "unit": normalised after the pass, ⟨X_i, −μ⟩ accumulated now
            p[sl] = -m
        b += x @ p[sl]
    if perturbation == "unit":
        norm = torch.linalg.vector_norm(mu)
        if norm > 0:
            p /= norm
            b /= norm
    a = torch.diagonal(gram).clone()
    pair_sq = (a[:, None] + a[None, :] - 2.0 * gram).clamp_min_(0.0)
    pair_sq.fill_diagonal_(0.0)
    return _Geometry(mu=mu, p=p, a=a, b=b, c=float(p @ p), pair_sq=pair_sq)


def _constraint(geo: _Geometry, objective: str) -> tuple[Any, float]:
    """``(ok(γ), threshold)`` for ``objective`` in {"min_max", "min_sum", "min_sum_unsquared"}."""
    if objective == "min_max":
        threshold = float(geo.pair_sq.max())

        def ok(gamma: float) -> bool:
            return float((geo.a - 2 * gamma * geo.b + gamma * gamma * geo.c).max()) <= threshold

    elif objective == "min_sum":
        threshold = float(geo.pair_sq.sum(dim=1).max())

        def ok(gamma: float) -> bool:
            return float((geo.a - 2 * gamma * geo.b + gamma * gamma * geo.c).sum()) <= threshold

    else:
        threshold = float(geo.pair_sq.sqrt().sum(dim=1).max())

        def ok(gamma: float) -> bool:
            sq = (geo.a - 2 * gamma * geo.b + gamma * gamma * geo.c).clamp_min(0.0)
            return float(sq.sqrt().sum()) <= threshold

    return ok, threshold


def gamma_search(
    ok: Any,
    *,
    search: str = "ndss",
    gamma_init: float | None = None,
    tau: float | None = None,
    max_iter: int = 10_000,
) -> float:
    """Largest γ with ``ok(γ)`` (``ok`` must hold on an interval ``[0, γ*]``).

    ``search="ndss"`` (Shejwalkar & Houmansadr 2021): γ = γ₀ (10), step γ₀/2; success →
    remember γ and go up by the step, failure → go down; halve the step; stop when the next
    candidate is within τ (1e-5) of the last success.  This is a bisection of
    [last success, last failure], so on return ``γ + 2τ`` fails, unless γ is at the search's
    ceiling ``2·γ₀`` (γ₀ + γ₀/2 + γ₀/4 + …).

    ``search="reference"`` (official SignGuard code, defect D10): γ = 2, step 1; success →
    γ += step/2, failure → γ −= step/2; ``step = max(step/2, 0.1)`` so moves never drop below
    0.05; stop when within τ = 0.02 of the last success.  Returns 0 (the plain mean) if no γ
    succeeded.  The reference also recomputes the threshold every iteration; the threshold
    does not depend on γ, so computing it once gives the same γ.
    """
    _check_choice("search", search, SEARCHES)
    if gamma_init is None:
        gamma_init = 10.0 if search == "ndss" else 2.0
    if tau is None:
        tau = 1e-5 if search == "ndss" else 0.02
    gamma = _check_float("gamma_init", gamma_init, positive=True)
    tau = _check_float("tau", tau, positive=True)
    succ = 0.0
    step = gamma / 2 if search == "ndss" else 1.0
    for _ in range(max_iter):
        if abs(succ - gamma) <= tau:
            break
        if search == "ndss":
            if ok(gamma):
                succ = gamma
                gamma += step
            else:
                gamma -= step
            step /= 2
        else:
            if ok(gamma):
                succ = gamma
                gamma += step / 2
            else:
                gamma -= step / 2
            step = max(step / 2, 0.1)
    return succ


def _min_max_sum(
    objective: str,
    honest: torch.Tensor,
    byzantine: Sequence[int],
    *,
    knowledge: str,
    perturbation: str,
    search: str,
    gamma_init: float | None,
    tau: float | None,
) -> tuple[torch.Tensor, float]:
    honest = _check_matrix("honest", honest)
    idx = _check_byzantine(byzantine, honest.shape[0])
    known = knowledge_index(honest.shape[0], idx, knowledge)
    k = _num_rows(honest, known)
    if k < 2:
        raise ValueError(f"knowledge={knowledge!r} leaves {k} row(s); need >= 2")
    geo = _geometry(honest, perturbation, known)
    ok, _ = _constraint(geo, objective)
    gamma = gamma_search(ok, search=search, gamma_init=gamma_init, tau=tau)
    vector = (geo.mu + gamma * geo.p).to(honest.dtype)
    return vector.unsqueeze(0).expand(len(idx), -1).clone(), gamma


def min_max(
    honest: torch.Tensor,
    byzantine: Sequence[int],
    *,
    knowledge: str = "omniscient",
    perturbation: str = "std",
    search: str = "ndss",
    gamma_init: float | None = None,
    tau: float | None = None,
) -> tuple[torch.Tensor, float]:
    """Min-Max attack (NDSS'21; SignGuard Eq. 13-14).

    ``g_m = μ + γ·∇ᵖ`` with ``∇ᵖ`` = ``−σ`` ("std", paper default), ``−μ/‖μ‖`` ("unit") or
    ``−sign(μ)`` ("sign"); γ is the largest value with
    ``max_i ‖g_m − h_i‖ ≤ max_{i,j} ‖h_i − h_j‖`` over the known rows (see
    :func:`gamma_search`).  Every Byzantine client sends ``g_m``.

    Returns ``(rows (m, d), γ)``.  Reference parity: ``search="reference"`` (std only there).
    """
    return _min_max_sum("min_max", honest, byzantine, knowledge=knowledge,
                        perturbation=perturbation, search=search, gamma_init=gamma_init, tau=tau)


def min_sum(
    honest: torch.Tensor,
    byzantine: Sequence[int],
    *,
    knowledge: str = "omniscient",
    perturbation: str = "std",
    search: str = "ndss",
    gamma_init: float | None = None,
    tau: float | None = None,
    squared: bool = True,
) -> tuple[torch.Tensor, float]:
    """Min-Sum attack (NDSS'21; SignGuard Eq. 13, 15).

    As :func:`min_max` with the constraint
    ``Σ_i ‖g_m − h_i‖² ≤ max_i Σ_j ‖h_i − h_j‖²`` (squared distances, as NDSS'21 and the
    paper).  ``squared=False`` uses the reference code's unsquared sums (defect D10).

    Returns ``(rows (m, d), γ)``.
    """
    if not isinstance(squared, bool):
        raise ValueError(f"squared must be a bool, got {squared!r}")
    return _min_max_sum("min_sum" if squared else "min_sum_unsquared", honest, byzantine,
                        knowledge=knowledge, perturbation=perturbation, search=search,
                        gamma_init=gamma_init, tau=tau)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttackInfo:
    """Registry entry.

    ``kind``: ``"none"``, ``"client"`` (computable by one client from its own update or
    data: runs in the client mod), ``"colluding"`` (needs the round's other updates: runs in
    the simulation adversary) or ``"meta"`` (time-varying).  ``needs_data``: only the client
    can run it (label flip, local LIE), the adversary cannot apply it to an update.
    """

    name: str
    kind: str
    needs_data: bool
    summary: str


ATTACKS: dict[str, AttackInfo] = {
    info.name: info
    for info in (
        AttackInfo("none", "none", False, "honest behaviour"),
        AttackInfo("random", "client", False, "N(0, σ²I), σ = 0.5"),
        AttackInfo("noise", "client", False, "g + N(0, σ²I), σ = 0.5"),
        AttackInfo("sign_flip", "client", False, "−g"),
        AttackInfo("label_flip", "client", True, "train on labels C − 1 − y"),
        AttackInfo("reverse_scaling", "client", False, "−r·g (r = 3 with clipping, 100 without)"),
        AttackInfo("lie_local", "client", True, "μ − z·σ over the client's own k mini-batch updates"),
        AttackInfo("lie", "colluding", False, "μ − z·σ over the known updates (Eq. 2)"),
        AttackInfo("byzmean", "colluding", False, "mean of all n submitted = g* (Eq. 8)"),
        AttackInfo("min_max", "colluding", False, "μ + γ∇ᵖ, max distance constraint (Eq. 14)"),
        AttackInfo("min_sum", "colluding", False, "μ + γ∇ᵖ, sum of squared distances (Eq. 15)"),
        AttackInfo("time_varying", "meta", False, "a fresh attack (or none) each round/epoch"),
    )
}


def get_attack(name: str) -> AttackInfo:
    """Registry lookup; ``ValueError`` naming ``attack`` and the known names otherwise."""
    try:
        return ATTACKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"attack must be one of {sorted(ATTACKS)}, got {name!r}") from None


def is_client_side(name: str) -> bool:
    """True for attacks a Byzantine client computes alone (independent attacks)."""
    return get_attack(name).kind == "client"


def is_colluding(name: str) -> bool:
    """True for attacks that need the round's other updates (simulated by the adversary)."""
    return get_attack(name).kind == "colluding"


# --------------------------------------------------------------------------------------------
# Parameters (one validated bundle, read from run/node config by both sides)
# --------------------------------------------------------------------------------------------


def parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ValueError(f"{name} must be a boolean, got {value!r}")


def parse_attack_params(text: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Parse the run-config string ``"z='max',sigma=0.5,tv_attacks=['none','lie']"`` into a dict.

    Flower configs hold flat scalars, so an attack's parameters travel as one string
    (``attack-params``, the format of ``simulations.config``): comma-separated ``key=value``
    at bracket depth 0, values through ``ast.literal_eval`` when they parse, raw strings
    otherwise; ``-`` in keys becomes ``_``.
    """
    if text is None or text == "":
        return {}
    if isinstance(text, Mapping):
        return {str(k).replace("-", "_"): v for k, v in text.items()}
    if not isinstance(text, str):
        raise ValueError(f"attack-params must be a string, got {text!r}")
    parts, token, depth = [], "", 0
    for ch in text:
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth == 0:
            parts.append(token)
            token = ""
        else:
            token += ch
    parts.append(token)
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in parts)):
        if "=" not in part:
            raise ValueError(f"attack-params entry {part!r} is not of the form key=value")
        key, value = (s.strip() for s in part.split("=", 1))
        try:
            out[key.replace("-", "_")] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.replace("-", "_")] = value
    return out


def _as_attack_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(a for a in re.split(r"[,|\s]+", value) if a)
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise ValueError(f"tv_attacks must be a list or a comma-separated string, got {value!r}")


@dataclass(frozen=True)
class AttackParams:
    """Hyper-parameters of every attack, validated once (``ValueError`` naming the field).

    Each field can come from a config mapping as its own key (``attack-<field>`` with ``_`` →
    ``-``; ``lie-batches``, ``byzmean-variant``, ``knowledge``, ``tv-attacks``, ``tv-period``,
    ``rounds-per-epoch`` as named below) or inside the ``attack-params`` string
    (``"z='max',sigma=0.5"``, field names).

    Attributes
    ----------
    sigma : float = 0.5
        Random / noise standard deviation (paper: 0.5).
    scale : float = 3.0
        Reverse-scaling factor r (paper: 3.0 = R with clipping on, 100 without).
    z : float or "max" = 0.3
        LIE shift and ByzMean's target shift (paper experiments: 0.3; reference: 1.0 for LIE,
        0.5 for ByzMean); "max" = :func:`lie_z_max` (n, m).
    knowledge : {"omniscient", "benign", "colluders"} = "omniscient"
        What the colluding attacker sees (key ``knowledge`` or ``attack-knowledge``).
    perturbation : {"std", "unit", "sign"} = "std"
        Min-Max / Min-Sum direction.
    search : {"ndss", "reference"} = "ndss"
        γ search of Min-Max / Min-Sum.
    gamma_init, tau : float or None
        γ search start and tolerance; None = the search's own (10, 1e-5 / 2, 0.02).
    min_sum_squared : bool = True
        Min-Sum with squared distances (paper, NDSS) or unsquared (reference).
    byzmean_variant : {"paper", "reference"} = "paper"
    lie_batches : int = 5
        Local LIE: honest passes whose updates estimate μ and σ (``lie-batches``).
    domain : {"gradient", "update"} = "gradient"
        See :func:`to_attack_domain`.
    tv_attacks : tuple of str = DEFAULT_TIME_VARYING_ATTACKS
    tv_period : {"round", "epoch"} = "epoch"
    rounds_per_epoch : int = 1
        Time-varying schedule (:class:`TimeVaryingSchedule`).
    """

    sigma: float = 0.5
    scale: float = 3.0
    z: float | str = 0.3
    knowledge: str = "omniscient"
    perturbation: str = "std"
    search: str = "ndss"
    gamma_init: float | None = None
    tau: float | None = None
    min_sum_squared: bool = True
    byzmean_variant: str = "paper"
    lie_batches: int = 5
    domain: str = "gradient"
    tv_attacks: tuple[str, ...] = ()
    tv_period: str = "epoch"
    rounds_per_epoch: int = 1

    #: Config key of each field when given as its own key (else ``attack-<field>``).
    CONFIG_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {
        "knowledge": ("knowledge", "attack-knowledge"),
        "lie_batches": ("lie-batches", "attack-lie-batches"),
        "byzmean_variant": ("byzmean-variant", "attack-byzmean-variant"),
        "tv_attacks": ("tv-attacks",),
        "tv_period": ("tv-period",),
        "rounds_per_epoch": ("rounds-per-epoch",),
    }

    def __post_init__(self) -> None:
        for name in ("sigma", "scale", "gamma_init", "tau"):
            value = getattr(self, name)
            # Configs may carry whole numbers as ints ("attack-scale = 100").
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))
        _check_float("sigma", self.sigma, nonneg=True)
        _check_float("scale", self.scale, positive=True)
        if isinstance(self.z, str):
            try:
                object.__setattr__(self, "z", float(self.z) if self.z != "max" else "max")
            except ValueError:
                raise ValueError(f"z must be a number or 'max', got {self.z!r}") from None
        if not isinstance(self.z, str):
            _check_float("z", self.z)
        _check_choice("knowledge", self.knowledge, KNOWLEDGE)
        _check_choice("perturbation", self.perturbation, PERTURBATIONS)
        _check_choice("search", self.search, SEARCHES)
        if self.gamma_init is not None:
            _check_float("gamma_init", self.gamma_init, positive=True)
        if self.tau is not None:
            _check_float("tau", self.tau, positive=True)
        object.__setattr__(self, "min_sum_squared", parse_bool("min_sum_squared", self.min_sum_squared))
        _check_choice("byzmean_variant", self.byzmean_variant, BYZMEAN_VARIANTS)
        require_int("lie_batches", self.lie_batches, 2)
        _check_choice("domain", self.domain, DOMAINS)
        tv = _as_attack_tuple(self.tv_attacks) if self.tv_attacks else DEFAULT_TIME_VARYING_ATTACKS
        object.__setattr__(self, "tv_attacks", tv)
        self.schedule(seed=0)  # validates tv_attacks, tv_period, rounds_per_epoch

    @classmethod
    def build(cls, **params: Any) -> AttackParams:
        """Like the constructor, but an unknown keyword is a ``ValueError`` naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown attack parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**params)

    @classmethod
    def from_config(cls, *configs: Mapping[str, Any]) -> AttackParams:
        """Read the parameters from config mappings (node config, run config, ...).

        Earlier mappings win; within one mapping an individual key (``attack-sigma``) wins over
        the same field inside its ``attack-params`` string.  Unknown fields inside
        ``attack-params`` are a ``ValueError`` naming them.
        """
        values: dict[str, Any] = {}
        for cfg in reversed(configs):  # later mappings first, so earlier ones overwrite
            packed = parse_attack_params(cfg.get("attack-params"))
            unknown = sorted(set(packed) - {f.name for f in fields(cls)})
            if unknown:
                raise ValueError(f"unknown attack-params field(s) {unknown}")
            values.update(packed)
            for f in fields(cls):
                for key in cls.CONFIG_KEYS.get(f.name, ("attack-" + f.name.replace("_", "-"),)):
                    if key in cfg:
                        values[f.name] = cfg[key]
                        break
        return cls(**values)

    def schedule(self, seed: int = 0) -> TimeVaryingSchedule:
        """The time-varying schedule these parameters describe, for run seed ``seed``."""
        return TimeVaryingSchedule(self.tv_attacks, self.tv_period, self.rounds_per_epoch, seed)


# --------------------------------------------------------------------------------------------
# Time-varying attack (SignGuard §VI-A; absent from the reference code: design ours)
# --------------------------------------------------------------------------------------------

#: The attacks of the paper's Table I plus "none" (the reference's commented list, with
#: "signflip" spelled as registered).  Reverse-scaling is an ablation attack, not in the list.
DEFAULT_TIME_VARYING_ATTACKS: tuple[str, ...] = (
    "none", "random", "noise", "sign_flip", "label_flip", "lie", "byzmean", "min_max", "min_sum",
)


@dataclass(frozen=True)
class TimeVaryingSchedule:
    """Draw an attack afresh each round (or epoch), uniformly from ``attacks``, from a seed.

    Paper §VI-A: "change the attack method randomly at each epoch (including no attack
    scenario)".  The draw for period index ``e`` depends only on ``(seed, e)`` (numpy
    ``SeedSequence``), so every process that builds the schedule (the adversary, each client
    mod) agrees, whatever the order of calls.

    Parameters
    ----------
    attacks : tuple of str
        Registered attack names (not "time_varying"); default :data:`DEFAULT_TIME_VARYING_ATTACKS`.
    period : {"round", "epoch"}
        Draw per round, or per epoch of ``rounds_per_epoch`` rounds (FedSGD: 24 rounds per
        epoch on MNIST/FMNIST, 20 on CIFAR-10).
    rounds_per_epoch : int >= 1
    seed : int >= 0
    """

    attacks: tuple[str, ...] = DEFAULT_TIME_VARYING_ATTACKS
    period: str = "epoch"
    rounds_per_epoch: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        attacks = _as_attack_tuple(self.attacks)
        if not attacks:
            raise ValueError("attacks must name at least one attack")
        for name in attacks:
            if get_attack(name).kind == "meta":
                raise ValueError(f"attacks must not contain {name!r}")
        object.__setattr__(self, "attacks", attacks)
        _check_choice("period", self.period, ("round", "epoch"))
        require_int("rounds_per_epoch", self.rounds_per_epoch, 1)
        require_int("seed", self.seed, 0)

    def period_index(self, server_round: int) -> int:
        """0-based index of the round's period (rounds are 1-based, as Flower's)."""
        r = require_int("server_round", server_round, 1)
        return r - 1 if self.period == "round" else (r - 1) // self.rounds_per_epoch

    def attack_for_round(self, server_round: int) -> str:
        """The attack of round ``server_round`` (deterministic in ``(seed, period index)``)."""
        seq = np.random.SeedSequence([self.seed, self.period_index(server_round)])
        return self.attacks[int(np.random.default_rng(seq).integers(len(self.attacks)))]


# --------------------------------------------------------------------------------------------
# Dispatcher used by the adversary (and by tests)
# --------------------------------------------------------------------------------------------


@dataclass
class AttackResult:
    """Rows to submit for the Byzantine clients (same order as ``byzantine``) and diagnostics."""

    rows: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


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
        A registered attack other than "time_varying", "label_flip" and "lie_local" (those
        need the client's data; the caller resolves time-varying to one attack per round).
    honest : Tensor (n, d)
        Honest vectors in the attack domain (see :func:`to_attack_domain`); rows
        ``byzantine`` are the Byzantine clients' own.
    byzantine : sequence of int
        Row indices of the Byzantine clients.
    params : AttackParams
    seed, server_round, stream_ids
        Random/noise draw row j from ``make_generator(seed, stream_ids[j], server_round)``;
        pass the partition ids as ``stream_ids`` to reproduce the client mod's draws exactly.

    Returns
    -------
    AttackResult with ``rows`` of shape (m, d) and ``info`` (``gamma`` for Min-Max/Min-Sum,
    ``z`` for LIE/ByzMean).
    """
    info_entry = get_attack(name)
    params = params or AttackParams()
    honest = _check_matrix("honest", honest)
    idx = _check_byzantine(byzantine, honest.shape[0])
    if info_entry.needs_data or info_entry.kind == "meta":
        raise ValueError(f"attack {name!r} cannot be applied to updates; it runs on the client")
    own = honest[idx]
    streams = list(idx) if stream_ids is None else [int(s) for s in stream_ids]
    if len(streams) != len(idx):
        raise ValueError(f"stream_ids must have {len(idx)} entries, got {len(streams)}")
    if name == "none":
        return AttackResult(own.clone())
    if name == "sign_flip":
        return AttackResult(sign_flip(own))
    if name == "reverse_scaling":
        return AttackResult(reverse_scaling(own, params.scale), {"scale": params.scale})
    if name in ("random", "noise"):
        rows = torch.empty_like(own)
        for j, stream in enumerate(streams):
            gen = make_generator(seed, stream, server_round)
            if name == "random":
                rows[j] = random_update(own.shape[1], params.sigma, gen, dtype=own.dtype)
            else:
                rows[j] = noise_attack(own[j], params.sigma, gen)
        return AttackResult(rows, {"sigma": params.sigma})
    common = {"knowledge": params.knowledge}
    if name == "lie":
        rows, z = lie_attack(honest, idx, z=params.z, knowledge=params.knowledge)
        return AttackResult(rows, {**common, "z": z})
    if name == "byzmean":
        z = _resolve_z(params.z, honest.shape[0], len(idx))
        rows = byzmean(honest, idx, z=z, knowledge=params.knowledge, variant=params.byzmean_variant)
        return AttackResult(rows, {**common, "z": z, "variant": params.byzmean_variant})
    search = {"knowledge": params.knowledge, "perturbation": params.perturbation,
              "search": params.search, "gamma_init": params.gamma_init, "tau": params.tau}
    if name == "min_max":
        rows, gamma = min_max(honest, idx, **search)
    else:
        rows, gamma = min_sum(honest, idx, squared=params.min_sum_squared, **search)
    return AttackResult(rows, {**common, "gamma": gamma, "perturbation": params.perturbation,
                               "search": params.search})
