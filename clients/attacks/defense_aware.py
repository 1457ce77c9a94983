"""Attacks that know the defense: IPM, Fang's attacks, AGR-tailored search, SignGuard-aware.

The paper evaluates SignGuard only against attacks that ignore it.  These attackers know the
aggregation rule under test (its name and hyper-parameters, ``AttackParams.target`` /
``target_params``; the simulation adversary fills them with the run's defense) and the round's
honest updates (``knowledge``), and may run the rule themselves on candidate matrices, as
Shejwalkar & Houmansadr's AGR-tailored attacks do.  What they never see: the server's random
coordinate sample of the round and the rule's state carried across rounds (a stateful rule is
simulated without its state, i.e. as in its warm-up).

Attacks (all colluding: every Byzantine client sends rows computed from the same knowledge)
-----------------------------------------------------------------------------------------
``ipm``            Inner product manipulation (Xie, Koyejo & Gupta, UAI 2020): ``−ε·μ``.
``fang_krum``      Fang et al. (USENIX Security 2020) against Krum: ``−λ·sign(μ)`` for the largest λ
                   the rule under test still selects.
``fang_trmean``    Fang et al. against trimmed mean / median: each coordinate just past the honest
                   extreme on the side opposite to the honest direction (factor ``b`` = 2).
``agr_tailored``   AGR-tailored Min-Max (Shejwalkar & Houmansadr, NDSS 2021): ``μ + γ·p`` with the
                   largest γ for which the rule under test still selects every Byzantine row
                   (rules that select no rows: the γ that moves the aggregate farthest from μ).
``strongest``      Generic strength search: runs ``base`` (LIE or IPM) at each strength of a grid and
                   sends the one that moves the aggregate of the rule under test farthest from μ
                   (ByzFL's "optimal" IPM/ALIE idea).
``mirror``         Each Byzantine client sends its own honest update minus ``κ·μ`` with the largest κ the
                   rule under test accepts: rows as diverse as honest ones (defeats coherence tests),
                   mean component reversed.
``sign_mimic``     SignGuard-aware reversal: ``−μ`` with its fractions of positive, zero and negative
                   coordinates set to the honest ones and its norm to the honest median, so it sits
                   inside SignGuard's norm band and sign-statistics cluster.
``signguard_tailored``  SignGuard-aware AGR-tailored search: ``μ + γ·p`` sign-mimicked and scaled to the
                   honest median norm, with the largest γ that the rule under test (a SignGuard
                   variant, features and clustering included) still keeps for every Byzantine row.

Harm is measured as in the NDSS'21 attacks: the distance of the aggregate from the honest mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._checks import check_byzantine, check_matrix
from .colluding import _geometry, gamma_search, lie
from .common import knowledge_index, num_rows
from .registry import AttackResult, register_attack

if TYPE_CHECKING:
    from .params import AttackParams

__all__ = [
    "aggregate_with",
    "fang_krum",
    "fang_trmean",
    "ipm",
    "match_sign_fractions",
    "mirror_candidates",
    "rule_under_test",
    "sign_mimic",
    "strongest_accepted",
    "tailored_candidates",
    "tailored_gamma",
]

#: Strengths tried by ``strongest`` when ``strengths`` is not given.
DEFAULT_STRENGTHS: dict[str, tuple[float, ...]] = {
    "lie": (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0),
    "ipm": (0.1, 0.5, 1.0, 2.0, 4.0, 10.0, 100.0),
}


# --------------------------------------------------------------------------------------------
# What the attacker knows
# --------------------------------------------------------------------------------------------


def _known(honest: torch.Tensor, byzantine: Sequence[int], knowledge: str) -> tuple[list[int], torch.Tensor]:
    honest = check_matrix("honest", honest)
    idx = check_byzantine(byzantine, honest.shape[0])
    index = knowledge_index(honest.shape[0], idx, knowledge)
    if num_rows(honest, index) < 2:
        raise ValueError(f"knowledge={knowledge!r} leaves fewer than 2 rows")
    known = honest if index is None else honest[index]
    return idx, known


def rule_under_test(params: AttackParams) -> Callable[[torch.Tensor], Any]:
    """The aggregation rule the attacker simulates: ``RULES[params.target]`` with its parameters.

    Stateless: a stateful rule (SignGuard-Sim/-Dist) is called without its cross-round state.
    Deterministic: a rule that samples (SignGuard's coordinate sample) gets the same generator
    seed on every call, so the attacker's searches compare like with like; the server's own
    sample differs, which is exactly what the attacker cannot know.
    """
    from signguard_flwr.rules import get_rule

    if not params.target:
        raise ValueError("this attack needs the rule under test: attack parameter target='<rule name>' "
                         "(the simulation adversary sets it to the run's defense)")
    rule = get_rule(params.target)
    kwargs = dict(params.target_params)
    rule.validate(**kwargs)
    seeded = "generator" in rule.param_names and "generator" not in kwargs

    def call(updates: torch.Tensor) -> Any:
        extra = {"generator": torch.Generator().manual_seed(0)} if seeded else {}
        return rule(updates, **kwargs, **extra)

    return call


def aggregate_with(honest: torch.Tensor, byzantine: Sequence[int], rows: torch.Tensor,
                   rule: Callable[[torch.Tensor], Any]) -> Any:
    """Run ``rule`` on the round's matrix with the Byzantine rows replaced by ``rows``."""
    matrix = honest.clone()
    matrix[list(byzantine)] = rows.to(honest.dtype)
    return rule(matrix)


def _deviation(result: Any, mu: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(result.vector.to(torch.float64) - mu.to(torch.float64)))


def _any_kept(result: Any, byzantine: Sequence[int]) -> bool:
    return result.selected is None or bool(result.selected[list(byzantine)].any())


# --------------------------------------------------------------------------------------------
# IPM and Fang et al.
# --------------------------------------------------------------------------------------------


def ipm(honest: torch.Tensor, byzantine: Sequence[int], epsilon: float = 0.1,
        knowledge: str = "omniscient") -> torch.Tensor:
    """Inner product manipulation (Xie et al., UAI 2020): every Byzantine row is ``−ε·μ``.

    Small ε (0.1) hides next to the honest rows and slows training; large ε reverses the mean.
    """
    idx, known = _known(honest, byzantine, knowledge)
    mu = known.mean(dim=0)
    return (-float(epsilon) * mu).unsqueeze(0).expand(len(idx), -1).clone()


def fang_krum(honest: torch.Tensor, byzantine: Sequence[int], rule: Callable[[torch.Tensor], Any], *,
              knowledge: str = "omniscient", tol: float = 1e-5) -> tuple[torch.Tensor, float]:
    """Fang et al.'s full-knowledge attack on Krum, in the gradient domain.

    Every Byzantine row is ``−λ·sign(μ)`` (the model moves against the honest direction in every
    coordinate).  λ starts at the largest honest ℓ∞ distance to μ times ``√d`` — a scale far past
    what any distance-based rule accepts — and is halved until ``rule`` selects a Byzantine row
    (Fang et al. halve λ the same way); below ``tol`` the attack sends ``0``-strength rows.

    Returns ``(rows (m, d), λ)``.
    """
    idx, known = _known(honest, byzantine, knowledge)
    mu = known.mean(dim=0)
    direction = -torch.sign(mu)
    lam = float(torch.linalg.vector_norm(known - mu, dim=1).max()) + float(torch.linalg.vector_norm(mu))
    while lam > tol:
        rows = (lam * direction).unsqueeze(0).expand(len(idx), -1)
        if _any_kept(aggregate_with(honest, idx, rows, rule), idx):
            return rows.clone(), lam
        lam /= 2.0
    return torch.zeros(len(idx), honest.shape[1], dtype=honest.dtype), 0.0


def fang_trmean(honest: torch.Tensor, byzantine: Sequence[int], *, knowledge: str = "omniscient",
                b: float = 2.0) -> torch.Tensor:
    """Fang et al.'s full-knowledge attack on trimmed mean and median, in the gradient domain.

    Where the honest mean ``μ_j`` is positive the Byzantine values go below the honest minimum
    (into ``[b·min, min]`` if ``min < 0``, ``[min/b, min]`` otherwise), where it is negative
    above the honest maximum (symmetrically); the ``m`` rows are spread evenly over that interval
    (Fang et al. draw them uniformly; evenly spaced is the same spread without a random stream).
    """
    idx, known = _known(honest, byzantine, knowledge)
    if b <= 1.0:
        raise ValueError(f"b must be > 1, got {b}")
    mu = known.mean(dim=0)
    lo, hi = known.min(dim=0).values, known.max(dim=0).values
    # Interval beyond the minimum (for μ > 0) and beyond the maximum (for μ <= 0).
    below_far = torch.where(lo < 0, lo * b, lo / b)
    above_far = torch.where(hi > 0, hi * b, hi / b)
    near = torch.where(mu > 0, lo, hi)
    far = torch.where(mu > 0, below_far, above_far)
    m = len(idx)
    steps = torch.linspace(0.0, 1.0, m + 2, dtype=honest.dtype)[1:-1] if m > 0 else torch.empty(0)
    return near.unsqueeze(0) + steps.unsqueeze(1) * (far - near).unsqueeze(0)


# --------------------------------------------------------------------------------------------
# AGR-tailored search and SignGuard-aware attacks
# --------------------------------------------------------------------------------------------


def match_sign_fractions(vector: torch.Tensor, positive: float, zero: float) -> torch.Tensor:
    """``vector`` changed as little as possible so that its sign fractions are the given ones.

    The ``zero·d`` smallest-magnitude coordinates become exactly 0; then the smallest-magnitude
    coordinates of the over-represented sign flip until ``positive·d`` coordinates are positive
    (ties in magnitude go to the lower index, as in a stable sort).
    SignGuard's sign statistics are fractions over a random coordinate sample, so matching them
    over all coordinates matches them on any sample up to sampling noise.
    """
    # One implementation, in numpy, for every device: ~2x less per-call overhead than torch on a
    # 51,710-vector (the mirror attack's search calls this ~200 times a round), and the steps
    # only select, zero and negate coordinates, so a host round trip changes no bit.  The result
    # stays in a tensor torch allocated: torch's vectorised reductions (the norm taken next) can
    # sum in another order on differently aligned memory, and runs must stay bit-exact.
    out = vector.detach().to("cpu", copy=True)
    _match_sign_fractions_numpy(out.numpy(), positive, zero)
    return out.to(vector.device)


def _match_sign_fractions_numpy(out: np.ndarray, positive: float, zero: float) -> None:
    """:func:`match_sign_fractions`'s steps on a numpy vector, in place."""
    d = out.size
    magnitude = np.abs(out)
    n_zero = min(d, int(round(zero * d)))
    rest = ~_first_by_magnitude_numpy(magnitude, n_zero)
    out[~rest] = 0.0
    nonzero = rest & (out != 0)
    tiny = magnitude[nonzero].min() if nonzero.any() else out.dtype.type(1e-12)
    out[rest & (out == 0)] = tiny
    want_pos = min(int(rest.sum()), int(round(positive * d)))
    pos = rest & (out > 0)
    surplus = int(pos.sum()) - want_pos
    flip = (_first_by_magnitude_numpy(magnitude, surplus, pos) if surplus > 0
            else _first_by_magnitude_numpy(magnitude, -surplus, rest & ~pos))
    out[flip] = -out[flip]


def _first_by_magnitude_numpy(magnitude: np.ndarray, k: int, among: np.ndarray | None = None) -> np.ndarray:
    """Mask of the ``k`` smallest ``magnitude`` values (restricted to ``among``), ties to the lower index.

    One selection instead of the sort: torch's stable CPU argsort of the MNIST CNN's 51,710
    magnitudes costs 6.5 ms (60% of a ``mirror`` round, which calls this ~200 times); numpy's
    introselect finds the k-th value in 0.06 ms.  ``k`` must not exceed the number of
    coordinates in ``among``, whose magnitudes are finite.
    """
    mask = np.zeros(magnitude.shape, dtype=bool)
    if k <= 0:
        return mask
    if among is not None:
        magnitude = np.where(among, magnitude, np.inf).astype(magnitude.dtype, copy=False)
    if k >= magnitude.size:
        mask[:] = True
        return mask
    kth = np.partition(magnitude, k - 1)[k - 1]
    below = magnitude < kth
    mask |= below
    mask[np.flatnonzero(magnitude == kth)[: k - int(below.sum())]] = True
    return mask


def _sign_profile(known: torch.Tensor) -> tuple[float, float, float]:
    """Honest median norm and mean fractions of positive and zero coordinates."""
    norms = torch.linalg.vector_norm(known, dim=1)
    positive = float((known > 0).to(torch.float64).mean())
    zero = float((known == 0).to(torch.float64).mean())
    return float(norms.median()), positive, zero


def sign_mimic(honest: torch.Tensor, byzantine: Sequence[int], *, knowledge: str = "omniscient",
               norm_scale: float = 1.0) -> torch.Tensor:
    """SignGuard-aware reversal: ``−μ``, sign fractions set to the honest ones, norm = honest median.

    Inside the norm band (``norm_scale`` times the honest median norm, 1.0 by default), with the
    sign statistics of an honest row, and pointing against the honest mean: SignGuard's plain
    features cannot tell it apart; after clipping to the median norm its ``m`` rows pull the
    average by ``m·median/n`` against ``μ``, more than the honest ``(n−m)/n·‖μ‖`` when honest
    rows are noisy (``‖μ‖`` well below their norms), i.e. the aggregate is reversed.
    """
    idx, known = _known(honest, byzantine, knowledge)
    median_norm, positive, zero = _sign_profile(known)
    row = match_sign_fractions(-known.mean(dim=0), positive, zero)
    row = row * (norm_scale * median_norm / max(float(torch.linalg.vector_norm(row)), 1e-30))
    return row.to(honest.dtype).unsqueeze(0).expand(len(idx), -1).clone()


def tailored_candidates(honest: torch.Tensor, byzantine: Sequence[int], *, knowledge: str = "omniscient",
                        perturbation: str = "unit", mimic: bool = False) -> Callable[[float], torch.Tensor]:
    """``γ ↦`` the Byzantine rows ``μ + γ·p`` (``(m, d)``) that :func:`tailored_gamma` searches over.

    ``mimic=True`` (SignGuard-aware) passes each candidate through :func:`match_sign_fractions`
    and scales it to the honest median norm, so the rule's norm band and sign statistics see an
    honest-looking row.
    """
    idx, known = _known(honest, byzantine, knowledge)
    geo = _geometry(honest, perturbation, knowledge_index(honest.shape[0], idx, knowledge))
    mu, p = geo.mu.to(honest.dtype), geo.p.to(honest.dtype)
    median_norm, positive, zero = _sign_profile(known)

    def rows_for(gamma: float) -> torch.Tensor:
        row = mu + gamma * p
        if mimic:
            row = match_sign_fractions(row, positive, zero)
            row = row * (median_norm / max(float(torch.linalg.vector_norm(row)), 1e-30))
        return row.unsqueeze(0).expand(len(idx), -1)

    return rows_for


def tailored_gamma(honest: torch.Tensor, byzantine: Sequence[int], rule: Callable[[torch.Tensor], Any], *,
                   knowledge: str = "omniscient", perturbation: str = "unit", mimic: bool = False,
                   search: str = "ndss", gamma_init: float | None = None, tau: float | None = None,
                   ) -> tuple[torch.Tensor, float]:
    """AGR-tailored rows ``μ + γ·p`` (:func:`tailored_candidates`) with γ searched against ``rule``.

    For a rule that selects rows, γ is the largest value for which every Byzantine row is
    selected (Shejwalkar & Houmansadr's condition, with the rule itself as the oracle; the
    search is :func:`~clients.attacks.colluding.gamma_search`).  For one that selects none
    (median, trimmed mean, GeoMed, Centered Clipping), γ is the largest value for which a 10%
    larger γ no longer moves the aggregate farther from μ.

    Returns ``(rows (m, d), γ)``.
    """
    idx, known = _known(honest, byzantine, knowledge)
    rows_for = tailored_candidates(honest, idx, knowledge=knowledge, perturbation=perturbation, mimic=mimic)
    gamma = strongest_accepted(honest, idx, rows_for, rule, known.mean(dim=0), search=search,
                               gamma_init=gamma_init, tau=tau)
    return rows_for(gamma).clone(), gamma


def strongest_accepted(honest: torch.Tensor, byzantine: Sequence[int], rows_for: Callable[[float], torch.Tensor],
                       rule: Callable[[torch.Tensor], Any], mu: torch.Tensor, *, search: str = "ndss",
                       gamma_init: float | None = None, tau: float | None = None) -> float:
    """The largest strength γ whose rows ``rows_for(γ)`` the rule still accepts.

    For a rule that selects rows: as many Byzantine rows selected as at ``γ = 0`` — every one
    for identical crafted rows (Shejwalkar & Houmansadr's condition, with the rule itself as the
    oracle), and no fewer than the rule keeps of the unaltered rows for attacks that start from
    the colluders' own honest updates (the search is :func:`~clients.attacks.colluding.gamma_search`).  For one that selects none (median,
    trimmed mean, GeoMed, Centered Clipping): a 10% larger γ no longer moves the aggregate
    farther from μ.
    """
    idx = list(byzantine)
    start = aggregate_with(honest, idx, rows_for(0.0), rule).selected
    if start is not None:
        baseline = int(start[idx].sum())

        def ok(gamma: float) -> bool:
            selected = aggregate_with(honest, idx, rows_for(gamma), rule).selected
            return int(selected[idx].sum()) >= max(baseline, 1)
    else:
        def ok(gamma: float) -> bool:
            here = _deviation(aggregate_with(honest, idx, rows_for(gamma), rule), mu)
            further = _deviation(aggregate_with(honest, idx, rows_for(gamma * 1.1 + 1e-6), rule), mu)
            return further >= here
    return gamma_search(ok, search=search, gamma_init=gamma_init, tau=tau)


def mirror_candidates(honest: torch.Tensor, byzantine: Sequence[int], *,
                      knowledge: str = "omniscient") -> Callable[[float], torch.Tensor]:
    """``κ ↦`` each Byzantine client's own honest update minus ``κ·μ``.

    Against filters that compare a row with the others (norms, sign statistics, pairwise
    cosines, coherence) the rows look like honest ones, each with its own honest noise, so
    colluders are as diverse as honest clients; ``κ = 2`` reflects their mean component
    (``h − 2μ``), larger κ pushes harder against the honest direction.  Each row is then given
    back its own sign fractions (:func:`match_sign_fractions`) and its own norm.
    """
    idx, known = _known(honest, byzantine, knowledge)
    mu = known.mean(dim=0)
    own = honest[idx]
    # Each row keeps its own sign fractions and norm: subtracting κμ alone shifts the fractions
    # (μ has many coordinates of one sign) and SignGuard's sign statistics notice.
    fractions = [(float((row > 0).double().mean()), float((row == 0).double().mean())) for row in own]
    norms = torch.linalg.vector_norm(own, dim=1)

    def rows_for(kappa: float) -> torch.Tensor:
        out = own - kappa * mu
        for i, (positive, zero) in enumerate(fractions):
            row = match_sign_fractions(out[i], positive, zero)
            out[i] = row * (norms[i] / max(float(torch.linalg.vector_norm(row)), 1e-30))
        return out

    return rows_for


# --------------------------------------------------------------------------------------------
# Registered: fn(honest, byzantine, params) -> AttackResult
# --------------------------------------------------------------------------------------------


@register_attack("ipm", kind="colluding", summary="−ε·μ (Xie et al., UAI 2020)", reports=("epsilon",))
def _ipm(honest: torch.Tensor, byzantine: list[int], params: AttackParams) -> AttackResult:
    rows = ipm(honest, byzantine, params.epsilon, params.knowledge)
    return AttackResult(rows, {"knowledge": params.knowledge, "epsilon": params.epsilon})


@register_attack("fang_krum", kind="colluding", summary="−λ·sign(μ), largest λ Krum selects (Fang et al.)")
def _fang_krum(honest: torch.Tensor, byzantine: list[int], params: AttackParams) -> AttackResult:
    rows, lam = fang_krum(honest, byzantine, rule_under_test(params), knowledge=params.knowledge)
    return AttackResult(rows, {"knowledge": params.knowledge, "lambda": lam, "target": params.target})


@register_attack("fang_trmean", kind="colluding", summary="past the honest extreme against μ (Fang et al.)")
def _fang_trmean(honest: torch.Tensor, byzantine: list[int], params: AttackParams) -> AttackResult:
    rows = fang_trmean(honest, byzantine, knowledge=params.knowledge)
    return AttackResult(rows, {"knowledge": params.knowledge})


def _tailored(mimic: bool) -> Callable[..., AttackResult]:
    def attack(honest: torch.Tensor, byzantine: list[int], params: AttackParams) -> AttackResult:
        rows, gamma = tailored_gamma(
            honest, byzantine, rule_under_test(params), knowledge=params.knowledge,
            perturbation=params.perturbation, mimic=mimic, search=params.search,
            gamma_init=params.gamma_init, tau=params.tau,
        )
        return AttackResult(rows, {"knowledge": params.knowledge, "gamma": gamma, "target": params.target,
                                   "perturbation": params.perturbation})

    return attack


register_attack("agr_tailored", kind="colluding",
                summary="μ + γp, largest γ the rule under test accepts (NDSS'21 AGR-tailored)")(_tailored(False))
register_attack("signguard_tailored", kind="colluding",
                summary="sign-mimicked μ + γp at the median norm, largest γ SignGuard keeps")(_tailored(True))


@register_attack("mirror", kind="colluding",
                 summary="own honest update − κμ, largest κ the rule under test accepts (diverse colluders)")
def _mirror(honest: torch.Tensor, byzantine: list[int], params: AttackParams) -> AttackResult:
    idx, known = _known(honest, byzantine, params.knowledge)
    rows_for = mirror_candidates(honest, idx, knowledge=params.knowledge)
    kappa = strongest_accepted(honest, idx, rows_for, rule_under_test(params), known.mean(dim=0),
                               search=params.search, gamma_init=params.gamma_init, tau=params.tau)
    return AttackResult(rows_for(kappa).clone(), {"knowledge": params.knowledge, "kappa": kappa, "target": params.target})


@register_attack("sign_mimic", kind="colluding", summary="−μ with honest sign fractions and median norm")
def _sign_mimic(honest: torch.Tensor, byzantine: list[int], params: AttackParams) -> AttackResult:
    return AttackResult(sign_mimic(honest, byzantine, knowledge=params.knowledge), {"knowledge": params.knowledge})


@register_attack("strongest", kind="colluding",
                 summary="LIE or IPM at the strength that moves the rule under test's aggregate farthest")
def _strongest(honest: torch.Tensor, byzantine: list[int], params: AttackParams) -> AttackResult:
    base = params.base
    strengths = params.strengths or DEFAULT_STRENGTHS[base]
    rule = rule_under_test(params)
    idx, known = _known(honest, byzantine, params.knowledge)
    mu = known.mean(dim=0)
    best: tuple[float, float, torch.Tensor] | None = None
    for strength in strengths:
        if base == "lie":
            rows = lie(known, z=strength).to(honest.dtype).unsqueeze(0).expand(len(idx), -1)
        else:
            rows = ipm(honest, idx, strength, params.knowledge)
        harm = _deviation(aggregate_with(honest, idx, rows, rule), mu)
        if best is None or harm > best[0]:
            best = (harm, strength, rows)
    assert best is not None
    return AttackResult(best[2].clone(), {"knowledge": params.knowledge, "base": base, "strength": best[1],
                                          "deviation": best[0], "target": params.target})
