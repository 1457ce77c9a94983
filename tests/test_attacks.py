"""Attack math (clients/attacks/): formulas on matrices small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

import clients.attacks as A
from clients.attacks import common
from clients.attacks import (
    ATTACKS,
    DEFAULT_TIME_VARYING_ATTACKS,
    AttackParams,
    TimeVaryingSchedule,
    apply_attack,
    byzmean,
    flip_labels,
    gamma_search,
    is_client_side,
    is_colluding,
    knowledge_rows,
    lie,
    lie_attack,
    lie_z_max,
    make_generator,
    mean_std,
    min_max,
    min_sum,
    noise_attack,
    random_update,
    reverse_scaling,
    sign_flip,
)

TAU = 1e-5
GAMMA0 = 10.0


def honest_matrix(n: int = 8, d: int = 20, seed: int = 0, shift: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=torch.float64) + shift


# ------------------------------------------------------------------------------------------ LIE


def test_lie_z_max_paper_value():
    # Paper Eq. 2, n = 50, m = 10: Φ(z) < 24/40 = 0.6.
    assert lie_z_max(50, 10) == pytest.approx(0.2533471, abs=1e-6)


@pytest.mark.parametrize("n,m", [(50, 10), (50, 20), (20, 4), (100, 30), (11, 2), (7, 0)])
def test_lie_z_max_matches_scipy(n, m):
    expected = norm.ppf((n - math.floor(n / 2 + 1)) / (n - m))
    assert lie_z_max(n, m) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("n,m,arg", [(10, 6, "m"), (10, 10, "m"), (1, 0, "n"), (50, -1, "m")])
def test_lie_z_max_rejects_undefined(n, m, arg):
    with pytest.raises(ValueError, match=arg):
        lie_z_max(n, m)


def test_lie_by_hand():
    h = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]])
    # μ = (3, 5); unbiased σ = (2, sqrt(26/2)); a biased σ would give (1.633, 2.944).
    expected = torch.tensor([3.0 - 0.5 * 2.0, 5.0 - 0.5 * math.sqrt(13.0)])
    assert torch.allclose(lie(h, 0.5), expected)


def test_mean_std_chunked_equals_direct(monkeypatch):
    h = honest_matrix(5, 103, seed=3)
    monkeypatch.setattr(common, "_CHUNK_ELEMENTS", 5 * 7)  # 7 columns per chunk: 15 chunks
    mu, sigma = mean_std(h)
    s, m = torch.std_mean(h, dim=0)
    assert torch.allclose(mu, m) and torch.allclose(sigma, s)


def test_knowledge_rows_select_the_right_rows():
    h = honest_matrix(6, 4)
    byz = [1, 4]
    assert torch.equal(knowledge_rows(h, byz, "omniscient"), h)
    assert torch.equal(knowledge_rows(h, byz, "colluders"), h[[1, 4]])
    assert torch.equal(knowledge_rows(h, byz, "benign"), h[[0, 2, 3, 5]])
    with pytest.raises(ValueError, match="knowledge"):
        knowledge_rows(h, byz, "psychic")


@pytest.mark.parametrize("knowledge,rows", [("omniscient", [0, 1, 2, 3, 4, 5]),
                                            ("colluders", [1, 4]), ("benign", [0, 2, 3, 5])])
def test_lie_attack_uses_knowledge_rows(knowledge, rows):
    h = honest_matrix(6, 4)
    out, z = lie_attack(h, [1, 4], z=0.3, knowledge=knowledge)
    assert out.shape == (2, 4) and z == 0.3
    assert torch.allclose(out[0], lie(h[rows], 0.3)) and torch.equal(out[0], out[1])


def test_lie_attack_z_max():
    h = honest_matrix(10, 3)
    _, z = lie_attack(h, [0, 1, 2], z="max")
    assert z == pytest.approx(lie_z_max(10, 3))


# ------------------------------------------------------------------------------------ ByzMean


@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("knowledge", ["omniscient", "benign"])
def test_byzmean_mean_of_all_submitted_is_target(m, knowledge):
    h = honest_matrix(10, 6, seed=m)
    byz = list(range(2, 2 + m))
    rows = byzmean(h, byz, z=0.3, knowledge=knowledge)
    benign = h[[i for i in range(10) if i not in byz]]
    submitted = torch.cat([rows, benign])
    g_star = lie(knowledge_rows(h, byz, knowledge), 0.3)
    assert submitted.shape[0] == 10
    assert torch.allclose(submitted.mean(dim=0), g_star, atol=1e-10)
    assert torch.allclose(rows[: m // 2], g_star.expand(m // 2, -1))


def test_byzmean_custom_target():
    h = honest_matrix(8, 5)
    target = torch.arange(5, dtype=torch.float64)
    rows = byzmean(h, [0, 5, 7], g_star=target)
    assert torch.allclose(torch.cat([rows, h[[1, 2, 3, 4, 6]]]).mean(dim=0), target)


def test_byzmean_reference_variant_reproduces_the_code_identity():
    n, byz = 10, [0, 1, 2, 3]
    h = honest_matrix(n, 5)
    g_star = lie(h, 0.5)
    rows = byzmean(h, byz, z=0.5, variant="reference")
    m1, m2 = 2, 2
    expected_other = ((n - 4 - m1) * g_star - h.sum(dim=0)) / m2
    assert torch.allclose(rows[2:], expected_other.expand(2, -1))
    submitted_mean = torch.cat([rows, h[4:]]).mean(dim=0)
    # Defect D8: the mean is ((n − f)·g* − Σ_byz h)/n, not g*.
    assert torch.allclose(submitted_mean, ((n - 4) * g_star - h[byz].sum(dim=0)) / n)
    assert not torch.allclose(submitted_mean, g_star)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 12), data=st.data())
def test_byzmean_identity_property(n, data):
    m = data.draw(st.integers(1, n - 1))
    seed = data.draw(st.integers(0, 1000))
    h = honest_matrix(n, 3, seed=seed)
    byz = sorted(data.draw(st.permutations(range(n)))[:m])
    rows = byzmean(h, byz, knowledge="benign" if n - m >= 2 else "omniscient")
    benign = h[[i for i in range(n) if i not in byz]]
    g_star = lie(knowledge_rows(h, byz, "benign" if n - m >= 2 else "omniscient"), 0.3)
    assert torch.allclose(torch.cat([rows, benign]).mean(dim=0), g_star, atol=1e-9)


# ----------------------------------------------------------------------------- Min-Max / Min-Sum


def perturbation(h: torch.Tensor, kind: str) -> torch.Tensor:
    mu = h.mean(dim=0)
    return {"std": -h.std(dim=0), "unit": -mu / mu.norm(), "sign": -torch.sign(mu)}[kind]


def max_constraint(h, g):
    return torch.cdist(g[None], h).max() <= torch.cdist(h, h).max() + 1e-12


def sum_constraint(h, g):
    return (torch.cdist(g[None], h) ** 2).sum() <= (torch.cdist(h, h) ** 2).sum(dim=1).max() + 1e-12


def sum_unsquared_constraint(h, g):
    return torch.cdist(g[None], h).sum() <= torch.cdist(h, h).sum(dim=1).max() + 1e-12


@pytest.mark.parametrize("kind", ["std", "unit", "sign"])
@pytest.mark.parametrize("attack,check", [
    (min_max, max_constraint),
    (min_sum, sum_constraint),
    (lambda h, b, **kw: min_sum(h, b, squared=False, **kw), sum_unsquared_constraint),
])
def test_min_max_sum_gamma_is_feasible_and_maximal(kind, attack, check):
    h = honest_matrix(8, 20, seed=1)
    rows, gamma = attack(h, [0, 1, 2], perturbation=kind)
    p = perturbation(h, kind)
    g = h.mean(dim=0) + gamma * p
    assert rows.shape == (3, 20) and torch.equal(rows[0], rows[2])
    assert torch.allclose(rows[0], g)
    assert 0 < gamma < 2 * GAMMA0 - 2 * TAU  # not at the ceiling: maximality is informative
    assert check(h, g)
    assert not check(h, h.mean(dim=0) + (gamma + 2 * TAU) * p)


def test_min_max_ceiling():
    # Identical rows: distances and the std perturbation are all 0, so every γ passes and the
    # NDSS search stops just below its ceiling 2·γ₀.
    h = torch.ones(4, 3, dtype=torch.float64)
    _, gamma = min_max(h, [0])
    assert 2 * GAMMA0 - 2 * TAU <= gamma < 2 * GAMMA0


def test_min_max_knowledge_uses_only_those_rows():
    h = honest_matrix(8, 10, seed=2)
    rows, gamma = min_max(h, [0, 1, 2], knowledge="benign")
    ref_rows, ref_gamma = min_max(h[3:], [0])
    assert gamma == pytest.approx(ref_gamma) and torch.allclose(rows[0], ref_rows[0])
    with pytest.raises(ValueError, match="knowledge"):
        min_max(h, [0], knowledge="colluders")  # one row: no σ, no distances


def test_geometry_chunked_equals_unchunked(monkeypatch):
    h = honest_matrix(6, 50, seed=4)
    expected = [min_max(h, [0], perturbation=k)[1] for k in ("std", "unit", "sign")]
    monkeypatch.setattr(common, "_CHUNK_ELEMENTS", 6 * 8)
    chunked = [min_max(h, [0], perturbation=k)[1] for k in ("std", "unit", "sign")]
    assert chunked == pytest.approx(expected, abs=1e-12)


def test_gamma_search_ndss_known_answers():
    assert 3.3 - 2 * TAU <= gamma_search(lambda g: g <= 3.3) <= 3.3
    assert gamma_search(lambda g: False) == 0.0
    assert 2 * GAMMA0 - 2 * TAU <= gamma_search(lambda g: True) < 2 * GAMMA0


def test_gamma_search_reference_trace():
    # By hand: 2 ✗ → 1.5 ✗ → 1.25 ✓ → 1.375 ✗ → 1.3125 ✓ (step floor 0.1 from here: moves of
    # 0.05) → 1.3625 ✓ → 1.4125 ✗ → back to 1.3625 = last success: stop.
    tried = []

    def ok(g):
        tried.append(round(g, 6))
        return g <= 1.37

    assert gamma_search(ok, search="reference") == pytest.approx(1.3625)
    assert tried == [2.0, 1.5, 1.25, 1.375, 1.3125, 1.3625, 1.4125]
    assert gamma_search(lambda g: False, search="reference") == 0.0  # "returns μ"


def test_min_max_validation():
    h = honest_matrix(5, 4)
    with pytest.raises(ValueError, match="search"):
        min_max(h, [0], search="grid")
    with pytest.raises(ValueError, match="perturbation"):
        min_max(h, [0], perturbation="up")
    with pytest.raises(ValueError, match="tau"):
        min_max(h, [0], tau=0.0)


# --------------------------------------------------------------------- independent attacks


def test_sign_flip_and_reverse_scaling():
    g = torch.tensor([1.0, -2.0, 0.5])
    assert torch.equal(sign_flip(g), -g)
    assert torch.equal(reverse_scaling(g, 3.0), torch.tensor([-3.0, 6.0, -1.5]))
    assert torch.equal(reverse_scaling(g, 100), -100 * g)
    with pytest.raises(ValueError, match="r must be > 0"):
        reverse_scaling(g, 0.0)


def test_random_update_statistics_and_determinism():
    a = random_update(200_000, 0.5, make_generator(3, 1, 2))
    b = random_update((200_000,), 0.5, make_generator(3, 1, 2))
    c = random_update(200_000, 0.5, make_generator(3, 1, 3))
    assert a.shape == (200_000,) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.std()) == pytest.approx(0.5, rel=0.01)
    assert abs(float(a.mean())) < 0.005
    assert torch.equal(random_update(10, 0.5, make_generator(3), dtype=torch.float64),
                       random_update(10, 0.5, make_generator(3)).double())
    with pytest.raises(ValueError, match="sigma"):
        random_update(3, -1.0)


def test_noise_attack_statistics_and_determinism():
    g = torch.linspace(-1, 1, 100_000)
    a = noise_attack(g, 0.5, make_generator(0, 4, 1))
    assert torch.equal(a, noise_attack(g, 0.5, make_generator(0, 4, 1)))
    assert not torch.equal(a, noise_attack(g, 0.5, make_generator(0, 5, 1)))
    assert float((a - g).std()) == pytest.approx(0.5, rel=0.02)
    assert abs(float((a - g).mean())) < 0.01


def test_make_generator_validates():
    with pytest.raises(ValueError, match="seed"):
        make_generator(-1)


@pytest.mark.parametrize("num_classes", [10, 4])
def test_flip_labels(num_classes):
    y = torch.arange(num_classes)
    assert torch.equal(flip_labels(y, num_classes), torch.arange(num_classes - 1, -1, -1))
    assert np.array_equal(flip_labels(np.array([0, 1]), num_classes), [num_classes - 1, num_classes - 2])
    assert flip_labels(0, num_classes) == num_classes - 1
    with pytest.raises(ValueError, match="y must lie"):
        flip_labels(torch.tensor([num_classes]), num_classes)


# ------------------------------------------------------------------------------- time-varying


def test_time_varying_schedule_is_deterministic_and_includes_none():
    a = TimeVaryingSchedule(period="round", seed=5)
    b = TimeVaryingSchedule(period="round", seed=5)
    draws = [a.attack_for_round(r) for r in range(1, 301)]
    # Order of calls does not matter: the draw depends on (seed, period index) only.
    assert draws == [b.attack_for_round(r) for r in reversed(range(1, 301))][::-1]
    assert "none" in DEFAULT_TIME_VARYING_ATTACKS and "none" in draws
    assert set(draws) == set(DEFAULT_TIME_VARYING_ATTACKS)
    other = [TimeVaryingSchedule(period="round", seed=6).attack_for_round(r) for r in range(1, 301)]
    assert draws != other


def test_time_varying_epoch_period():
    s = TimeVaryingSchedule(period="epoch", rounds_per_epoch=4, seed=1)
    draws = [s.attack_for_round(r) for r in range(1, 4 * 50 + 1)]
    for e in range(50):
        assert len(set(draws[4 * e: 4 * e + 4])) == 1
    assert len(set(draws)) > 1
    assert s.period_index(4) == 0 and s.period_index(5) == 1


@pytest.mark.parametrize("kwargs,arg", [
    ({"attacks": ("time_varying",)}, "attacks"), ({"attacks": ("nope",)}, "attack"),
    ({"attacks": ()}, "attacks"), ({"period": "week"}, "period"),
    ({"rounds_per_epoch": 0}, "rounds_per_epoch"), ({"seed": -2}, "seed"),
])
def test_time_varying_validation(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        TimeVaryingSchedule(**kwargs)


# ------------------------------------------------------------------- registry and parameters


def test_registry_kinds():
    required = {"none", "random", "noise", "sign_flip", "label_flip", "lie", "byzmean", "min_max",
                "min_sum", "reverse_scaling", "time_varying", "lie_local"}
    assert required <= set(ATTACKS)
    client = {n for n in ATTACKS if is_client_side(n)}
    colluding = {n for n in ATTACKS if is_colluding(n)}
    assert client == {"random", "noise", "sign_flip", "label_flip", "reverse_scaling", "lie_local"}
    assert colluding == {"lie", "byzmean", "min_max", "min_sum", "ipm", "fang_krum", "fang_trmean",
                         "agr_tailored", "signguard_tailored", "sign_mimic", "strongest", "mirror"}
    with pytest.raises(ValueError, match="attack must be one of"):
        is_client_side("fall_of_empires")


def test_register_attack_rejects_a_taken_name_and_an_unknown_kind():
    with pytest.raises(ValueError, match="already registered"):
        A.register_attack("lie", kind="colluding", summary="again")(lambda honest, byzantine, params: None)
    with pytest.raises(ValueError, match="kind"):
        A.register_attack("toy", kind="sideways", summary="?")
    assert "toy" not in ATTACKS


def test_a_registered_attack_is_applied_and_validated_by_name():
    A.register_attack("toy_zero", kind="client", summary="0")(lambda g, params, generator: torch.zeros_like(g))
    try:
        h = honest_matrix(4, 3).float()
        assert torch.equal(apply_attack("toy_zero", h, [1, 3]).rows, torch.zeros(2, 3))
        assert AttackParams(tv_attacks=("toy_zero", "lie")).tv_attacks == ("toy_zero", "lie")
    finally:
        del ATTACKS["toy_zero"]


def test_attack_params_from_config_priority_and_parsing():
    node = {"attack-sigma": 1.5, "lie-batches": 3}
    run = {"attack-params": "sigma=0.7,z='max',tv_attacks=['none','lie'],tv-period='round'",
           "knowledge": "benign", "attack-scale": 100, "attack-min-sum-squared": "false"}
    p = AttackParams.from_config(node, run)
    assert p.sigma == 1.5 and p.lie_batches == 3 and p.z == "max" and p.scale == 100.0
    assert p.knowledge == "benign" and p.tv_attacks == ("none", "lie") and p.tv_period == "round"
    assert p.min_sum_squared is False
    assert AttackParams.from_config({"attack-params": "z=0.5"}, {"attack-z": 1.0}).z == 0.5
    assert AttackParams.from_config({"attack-z": "1.25"}).z == 1.25


@pytest.mark.parametrize("kwargs,arg", [
    ({"sigma": -0.1}, "sigma"), ({"scale": 0}, "scale"), ({"z": "big"}, "z"),
    ({"knowledge": "all"}, "knowledge"), ({"perturbation": "up"}, "perturbation"),
    ({"search": "grid"}, "search"), ({"byzmean_variant": "x"}, "byzmean_variant"),
    ({"lie_batches": 1}, "lie_batches"), ({"domain": "weights"}, "domain"),
    ({"tv_attacks": ("lie", "nope")}, "attack"), ({"colour": 1}, "colour"),
])
def test_attack_params_validation(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        AttackParams.build(**kwargs)


def test_attack_params_rejects_unknown_packed_field():
    with pytest.raises(ValueError, match="frobnicate"):
        AttackParams.from_config({"attack-params": "frobnicate=1"})


# ------------------------------------------------------------------------------- dispatcher


def test_apply_attack_dispatch():
    h = honest_matrix(6, 5).float()
    byz = [2, 5]
    assert torch.equal(apply_attack("sign_flip", h, byz).rows, -h[byz])
    assert torch.equal(apply_attack("none", h, byz).rows, h[byz])
    assert torch.allclose(apply_attack("reverse_scaling", h, byz, AttackParams(scale=100)).rows, -100 * h[byz])
    res = apply_attack("random", h, byz, seed=7, server_round=3, stream_ids=[12, 40])
    assert torch.equal(res.rows[1], random_update(5, 0.5, make_generator(7, 40, 3)))
    res = apply_attack("noise", h, byz, seed=7, server_round=3, stream_ids=[12, 40])
    assert torch.equal(res.rows[0], noise_attack(h[2], 0.5, make_generator(7, 12, 3)))
    lie_res = apply_attack("lie", h, byz, AttackParams(z="max"))
    assert lie_res.info["z"] == pytest.approx(lie_z_max(6, 2))
    mm = apply_attack("min_max", h, byz)
    assert mm.info["gamma"] == pytest.approx(min_max(h, byz)[1])
    ms = apply_attack("min_sum", h, byz, AttackParams(min_sum_squared=False))
    assert ms.info["gamma"] == pytest.approx(min_sum(h, byz, squared=False)[1])
    bm = apply_attack("byzmean", h, byz)
    assert torch.allclose(bm.rows, byzmean(h, byz))
    for name in ("label_flip", "lie_local", "time_varying"):
        with pytest.raises(ValueError, match="client|cannot"):
            apply_attack(name, h, byz)
    with pytest.raises(ValueError, match="byzantine"):
        apply_attack("lie", h, [6])


def test_attack_domain_is_negation():
    d = torch.tensor([1.0, -2.0])
    assert torch.equal(A.to_attack_domain(d), -d)
    assert torch.equal(A.to_attack_domain(d, "update"), d)
    assert torch.equal(A.from_attack_domain(A.to_attack_domain(d)), d)
