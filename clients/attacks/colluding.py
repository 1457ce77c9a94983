"""Colluding attacks: the Byzantine clients share the round's honest updates (SignGuard §V-B).

LIE (Baruch et al., NeurIPS 2019), ByzMean (SignGuard Eq. 8), Min-Max and Min-Sum (Shejwalkar &
Houmansadr, NDSS 2021) with their γ search.  ``honest`` is always the round's ``(n, d)`` matrix
of honest vectors in the attack domain, ``byzantine`` the Byzantine clients' row indices; what
the attacker sees of the other rows is ``knowledge`` (:func:`clients.attacks.common.knowledge_index`).
The simulation adversary runs them (a client never sees the other updates).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ._checks import check_byzantine, check_choice, check_float, check_matrix, require_int
from .common import column_chunks, knowledge_index, mean_std, num_rows, row_chunk
from .registry import AttackResult, register_attack

if TYPE_CHECKING:
    from .params import AttackParams

__all__ = ["BYZMEAN_VARIANTS", "PERTURBATIONS", "SEARCHES", "byzmean", "gamma_search", "lie", "lie_attack",
           "lie_z_max", "min_max", "min_sum"]

PERTURBATIONS: tuple[str, ...] = ("std", "unit", "sign")
SEARCHES: tuple[str, ...] = ("ndss", "reference")
BYZMEAN_VARIANTS: tuple[str, ...] = ("paper", "reference")


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
    z = check_float("z", z)
    mu, sigma = mean_std(benign)
    return mu - z * sigma


def _resolve_z(z: float | str, n: int, m: int) -> float:
    if isinstance(z, str):
        if z != "max":
            raise ValueError(f"z must be a number or 'max', got {z!r}")
        return lie_z_max(n, m)
    return check_float("z", z)


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
    idx = check_byzantine(byzantine, check_matrix("honest", honest).shape[0])
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
    check_choice("variant", variant, BYZMEAN_VARIANTS)
    honest = check_matrix("honest", honest)
    idx = check_byzantine(byzantine, honest.shape[0])
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
    for sl in column_chunks(n, d):
        if knowledge == "colluders":  # benign updates unknown: estimate them by the colluders' mean
            benign_sum[sl] = (n - m) * row_chunk(honest, sorted(idx), sl).mean(dim=0)
        else:
            benign_sum[sl] = row_chunk(honest, benign, sl).sum(dim=0)
        byz_sum[sl] = row_chunk(honest, sorted(idx), sl).sum(dim=0)
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
    check_choice("perturbation", perturbation, PERTURBATIONS)
    rows = check_matrix("rows", rows)
    k, d = num_rows(rows, index), rows.shape[1]
    mu = torch.empty(d, dtype=torch.float64, device=rows.device)
    p = torch.empty_like(mu)
    gram = torch.zeros((k, k), dtype=torch.float64, device=rows.device)
    b = torch.zeros(k, dtype=torch.float64, device=rows.device)
    for sl in column_chunks(k, d):
        chunk = row_chunk(rows, index, sl)
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
    check_choice("search", search, SEARCHES)
    if gamma_init is None:
        gamma_init = 10.0 if search == "ndss" else 2.0
    if tau is None:
        tau = 1e-5 if search == "ndss" else 0.02
    gamma = check_float("gamma_init", gamma_init, positive=True)
    tau = check_float("tau", tau, positive=True)
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
    knowledge: str = "omniscient",
    perturbation: str = "std",
    search: str = "ndss",
    gamma_init: float | None = None,
    tau: float | None = None,
) -> tuple[torch.Tensor, float]:
    honest = check_matrix("honest", honest)
    idx = check_byzantine(byzantine, honest.shape[0])
    known = knowledge_index(honest.shape[0], idx, knowledge)
    k = num_rows(honest, known)
    if k < 2:
        raise ValueError(f"knowledge={knowledge!r} leaves {k} row(s); need >= 2")
    geo = _geometry(honest, perturbation, known)
    ok, _ = _constraint(geo, objective)
    gamma = gamma_search(ok, search=search, gamma_init=gamma_init, tau=tau)
    vector = (geo.mu + gamma * geo.p).to(honest.dtype)
    return vector.unsqueeze(0).expand(len(idx), -1).clone(), gamma


def min_max(honest: torch.Tensor, byzantine: Sequence[int], **search: Any) -> tuple[torch.Tensor, float]:
    """Min-Max attack (NDSS'21; SignGuard Eq. 13-14).

    ``g_m = μ + γ·∇ᵖ`` with ``∇ᵖ`` = ``−σ`` ("std", paper default), ``−μ/‖μ‖`` ("unit") or
    ``−sign(μ)`` ("sign"); γ is the largest value with
    ``max_i ‖g_m − h_i‖ ≤ max_{i,j} ‖h_i − h_j‖`` over the known rows (see
    :func:`gamma_search`).  Every Byzantine client sends ``g_m``.

    Keyword arguments (``search``): ``knowledge`` ("omniscient"), ``perturbation`` ("std"),
    ``search`` ("ndss"), ``gamma_init`` and ``tau`` (None: the search's own).

    Returns ``(rows (m, d), γ)``.  Reference parity: ``search="reference"`` (std only there).
    """
    return _min_max_sum("min_max", honest, byzantine, **search)


def min_sum(
    honest: torch.Tensor, byzantine: Sequence[int], *, squared: bool = True, **search: Any
) -> tuple[torch.Tensor, float]:
    """Min-Sum attack (NDSS'21; SignGuard Eq. 13, 15).

    As :func:`min_max` (same keyword arguments) with the constraint
    ``Σ_i ‖g_m − h_i‖² ≤ max_i Σ_j ‖h_i − h_j‖²`` (squared distances, as NDSS'21 and the
    paper).  ``squared=False`` uses the reference code's unsquared sums (defect D10).

    Returns ``(rows (m, d), γ)``.
    """
    if not isinstance(squared, bool):
        raise ValueError(f"squared must be a bool, got {squared!r}")
    return _min_max_sum("min_sum" if squared else "min_sum_unsquared", honest, byzantine, **search)


# --------------------------------------------------------------------------------------------
# Registered: fn(honest, byzantine, params) -> AttackResult
# --------------------------------------------------------------------------------------------


@register_attack("lie", kind="colluding", summary="μ − z·σ over the known updates (Eq. 2)")
def _lie(honest: torch.Tensor, byzantine: list[int], params: AttackParams) -> AttackResult:
    rows, z = lie_attack(honest, byzantine, z=params.z, knowledge=params.knowledge)
    return AttackResult(rows, {"knowledge": params.knowledge, "z": z})


@register_attack("byzmean", kind="colluding", summary="mean of all n submitted = g* (Eq. 8)")
def _byzmean(honest: torch.Tensor, byzantine: list[int], params: AttackParams) -> AttackResult:
    z = _resolve_z(params.z, honest.shape[0], len(byzantine))
    rows = byzmean(honest, byzantine, z=z, knowledge=params.knowledge, variant=params.byzmean_variant)
    return AttackResult(rows, {"knowledge": params.knowledge, "z": z, "variant": params.byzmean_variant})


def _search_result(rows: torch.Tensor, gamma: float, params: AttackParams) -> AttackResult:
    return AttackResult(rows, {"knowledge": params.knowledge, "gamma": gamma,
                               "perturbation": params.perturbation, "search": params.search})


def _search_options(params: AttackParams) -> dict[str, Any]:
    return {"knowledge": params.knowledge, "perturbation": params.perturbation, "search": params.search,
            "gamma_init": params.gamma_init, "tau": params.tau}


@register_attack("min_max", kind="colluding", summary="μ + γ∇ᵖ, max distance constraint (Eq. 14)")
def _min_max(honest: torch.Tensor, byzantine: list[int], params: AttackParams) -> AttackResult:
    rows, gamma = min_max(honest, byzantine, **_search_options(params))
    return _search_result(rows, gamma, params)


@register_attack("min_sum", kind="colluding", summary="μ + γ∇ᵖ, sum of squared distances (Eq. 15)")
def _min_sum(honest: torch.Tensor, byzantine: list[int], params: AttackParams) -> AttackResult:
    rows, gamma = min_sum(honest, byzantine, squared=params.min_sum_squared, **_search_options(params))
    return _search_result(rows, gamma, params)
