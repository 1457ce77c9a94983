"""Defense-aware attacks: each one's defining property on tiny matrices."""

from __future__ import annotations

import pytest
import torch

from clients.attacks import ATTACKS, AttackParams, apply_attack, match_sign_fractions
from clients.attacks.defense_aware import (
    aggregate_with,
    fang_krum,
    fang_trmean,
    ipm,
    rule_under_test,
    sign_mimic,
    tailored_candidates,
    tailored_gamma,
)
from signguard_flwr.rules import RULES

N, M = 20, 4
BYZ = list(range(N - M, N))


def noisy_honest(d: int = 4000, seed: int = 0, zeros: int = 400) -> torch.Tensor:
    """Rows = a common direction + much larger noise, a block of exact zeros (dead units)."""
    gen = torch.Generator().manual_seed(seed)
    mu = torch.randn(d, generator=gen, dtype=torch.float64)
    rows = mu / mu.norm() + 0.05 * torch.randn(N, d, generator=gen, dtype=torch.float64)
    rows[:, :zeros] = 0.0
    return rows


def test_ipm_is_minus_epsilon_times_the_mean() -> None:
    honest = noisy_honest()
    rows = ipm(honest, BYZ, epsilon=0.5)
    torch.testing.assert_close(rows, (-0.5 * honest.mean(0)).expand(M, -1))
    benign_only = ipm(honest, BYZ, epsilon=0.5, knowledge="benign")
    torch.testing.assert_close(benign_only[0], -0.5 * honest[: N - M].mean(0))


def test_fang_krum_finds_the_largest_halved_lambda_krum_selects() -> None:
    honest = noisy_honest(d=500)
    krum = lambda x: RULES["krum"](x, f=M)  # noqa: E731
    rows, lam = fang_krum(honest, BYZ, krum)
    assert lam > 0
    assert bool(krum(torch.cat([honest[: N - M], rows])).selected[N - M :].any())
    twice = (2 * lam) * rows / lam
    assert not bool(krum(torch.cat([honest[: N - M], twice])).selected[N - M :].any())
    torch.testing.assert_close(rows[0] / lam, -torch.sign(honest.mean(0)))


def test_fang_trmean_puts_every_coordinate_past_the_honest_extreme() -> None:
    honest = noisy_honest(d=300, zeros=0)
    rows = fang_trmean(honest, BYZ)
    mu = honest.mean(0)
    lo, hi = honest.min(0).values, honest.max(0).values
    up = mu > 0
    assert bool((rows[:, up] <= lo[up]).all()) and bool((rows[:, ~up] >= hi[~up]).all())
    assert bool((rows[:, up] >= torch.minimum(2 * lo[up], lo[up] / 2)).all())
    # The median never moves with the honest direction, and moves against it in most coordinates.
    med_before = RULES["median"](honest).vector
    moved = (aggregate_with(honest, BYZ, rows, RULES["median"]).vector - med_before) * torch.sign(mu)
    assert bool((moved <= 0).all()) and float((moved < 0).double().mean()) > 0.5


@pytest.mark.parametrize("positive, zero", [(0.5, 0.1), (0.3, 0.0), (0.7, 0.25)])
def test_match_sign_fractions_is_exact_and_touches_only_small_coordinates(positive, zero) -> None:
    v = torch.randn(1000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = match_sign_fractions(v, positive, zero)
    assert int((out == 0).sum()) == round(zero * 1000)
    assert int((out > 0).sum()) == round(positive * 1000)
    zeroed = out == 0
    if bool(zeroed.any()):  # the smallest go to 0
        assert float(v[zeroed].abs().max()) <= float(v[~zeroed].abs().min())
    flipped = (out != v) & ~zeroed
    assert bool((out.abs()[~zeroed] == v.abs()[~zeroed]).all())  # magnitudes kept
    if bool(flipped.any()):  # one sign flips, its smallest coordinates first
        sign = torch.sign(v[flipped])
        assert bool((sign == sign[0]).all())
        same_sign_kept = (torch.sign(v) == sign[0]) & ~flipped & ~zeroed
        assert float(v[flipped].abs().max()) <= float(v[same_sign_kept].abs().min())


def _match_sign_fractions_by_sort(vector: torch.Tensor, positive: float, zero: float) -> torch.Tensor:
    """The definition, literally: walk the coordinates in stable ascending order of magnitude."""
    out = vector.clone()
    d = out.numel()
    order = out.abs().argsort(stable=True)
    n_zero = min(d, int(round(zero * d)))
    out[order[:n_zero]] = 0.0
    rest = order[n_zero:]
    values = out[rest]
    tiny = values.abs()[values != 0].min() if bool((values != 0).any()) else torch.tensor(1e-12, dtype=out.dtype)
    values = torch.where(values == 0, tiny.to(out.dtype), values)
    pos = values > 0
    surplus = int(pos.sum()) - min(len(rest), int(round(positive * d)))
    flip = torch.nonzero(pos).flatten()[:surplus] if surplus > 0 else torch.nonzero(~pos).flatten()[: -surplus]
    values[flip] = -values[flip]
    out[rest] = values
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_match_sign_fractions_equals_the_stable_sort_definition_bitwise(dtype) -> None:
    # The selection-based version must pick exactly the coordinates the stable sort picks,
    # ties included: committed defense-aware runs were made with the sort.
    gen = torch.Generator().manual_seed(11)
    cases = []
    for d in (1, 7, 64, 1000, 51_710):
        cases.append(torch.randn(d, generator=gen, dtype=dtype))
        cases.append(torch.randint(-3, 4, (d,), generator=gen).to(dtype))  # many ties and exact zeros
        cases.append(torch.randn(d, generator=gen, dtype=dtype) * (torch.rand(d, generator=gen) < 0.3))
    cases.append(torch.zeros(50, dtype=dtype))
    for v in cases:
        for positive, zero in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (0.5, 0.1), (0.3, 0.0), (0.7, 0.25), (0.45, 0.6), (0.2, 0.05)]:
            got, want = match_sign_fractions(v, positive, zero), _match_sign_fractions_by_sort(v, positive, zero)
            assert got.dtype == want.dtype
            assert torch.equal(got, want), (v.numel(), positive, zero)
            assert torch.equal(torch.signbit(got), torch.signbit(want))


def test_sign_mimic_sits_inside_the_honest_features_and_points_against_the_mean() -> None:
    honest = noisy_honest()
    rows = sign_mimic(honest, BYZ)
    norms = honest.norm(dim=1)
    assert float(rows[0].norm()) == pytest.approx(float(norms.median()))
    assert float((rows[0] > 0).double().mean()) == pytest.approx(float((honest > 0).double().mean()), abs=1e-3)
    assert float((rows[0] == 0).double().mean()) == pytest.approx(float((honest == 0).double().mean()), abs=1e-3)
    mu = honest.mean(0)
    assert float(rows[0] @ mu) < 0
    # Plain SignGuard (and -Dist) keep every mimic row, whatever coordinate sample the server
    # draws, and the aggregate loses progress along μ; -Sim's cosine feature catches it.
    for name, kept in (("signguard", 1.0), ("signguard_dist", 1.0), ("signguard_sim", 0.0)):
        for seed in range(5):
            rule = lambda x: RULES[name](x, generator=torch.Generator().manual_seed(seed))  # noqa: E731
            out = aggregate_with(honest, BYZ, rows, rule)
            assert float(out.selected[BYZ].double().mean()) == kept, (name, seed)
            if kept:
                clean = rule(honest)
                assert float(out.vector @ mu) < 0.9 * float(clean.vector @ mu)


@pytest.mark.parametrize("rule_name, mimic", [("signguard", True), ("multi_krum", False)])
def test_tailored_gamma_is_the_largest_gamma_the_rule_keeps(rule_name, mimic) -> None:
    honest = noisy_honest()
    params = {"f": M} if rule_name == "multi_krum" else {}
    rule = rule_under_test(AttackParams(target=rule_name, target_params=params))
    tau = 1e-3
    rows, gamma = tailored_gamma(honest, BYZ, rule, mimic=mimic, tau=tau)
    rows_for = tailored_candidates(honest, BYZ, mimic=mimic)
    torch.testing.assert_close(rows, rows_for(gamma))
    assert gamma > 0 and bool(aggregate_with(honest, BYZ, rows, rule).selected[BYZ].all())
    if rule_name == "multi_krum":  # kept on [0, γ*]: the search's bisection ends at γ*
        assert not bool(aggregate_with(honest, BYZ, rows_for(gamma + 2 * tau), rule).selected[BYZ].all())


def test_strongest_picks_the_most_harmful_strength_of_the_grid() -> None:
    honest = noisy_honest(d=500)
    params = AttackParams(target="median", base="ipm", strengths=(0.1, 1.0, 10.0))
    out = apply_attack("strongest", honest, BYZ, params)
    mu = honest.mean(0)
    harms = {
        s: float((aggregate_with(honest, BYZ, ipm(honest, BYZ, s), RULES["median"]).vector - mu).norm())
        for s in (0.1, 1.0, 10.0)
    }
    assert out.info["strength"] == max(harms, key=harms.get)


def test_defense_aware_attacks_need_a_target() -> None:
    for name in ("fang_krum", "agr_tailored", "signguard_tailored", "strongest"):
        assert ATTACKS[name].colluding
        with pytest.raises(ValueError, match="target"):
            apply_attack(name, noisy_honest(d=50), BYZ, AttackParams())


@pytest.mark.parametrize("bad", [{"base": "noise"}, {"strengths": ["x"]}, {"target_params": 3}, {"epsilon": float("nan")}])
def test_bad_defense_aware_parameters_are_named(bad) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        AttackParams(**bad)


def test_mirror_rows_keep_each_colluders_norm_and_sign_fractions_and_stay_diverse() -> None:
    honest = noisy_honest()
    out = apply_attack("mirror", honest, BYZ, AttackParams(target="signguard", tau=1e-2))
    rows = out.rows
    assert out.info["kappa"] > 0
    for row, own in zip(rows, honest[BYZ]):
        assert float(row.norm()) == pytest.approx(float(own.norm()))
        assert float((row > 0).double().mean()) == pytest.approx(float((own > 0).double().mean()), abs=1e-3)
    cos = torch.nn.functional.cosine_similarity(rows[:, None], rows[None], dim=2)
    assert float(cos[~torch.eye(M, dtype=torch.bool)].max()) < 0.999  # not one vector sent M times
    assert float(rows.mean(0) @ honest.mean(0)) < float(honest[BYZ].mean(0) @ honest.mean(0))
