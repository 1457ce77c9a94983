"""Tests for SignGuard, SignGuard-Sim, SignGuard-Dist and the vectorised mean shift.

Known answers on matrices small enough to check by hand, the reference preset's choices,
edge cases that crash or emit NaN in the official code, invariances, equality of the fast
mean shift with scikit-learn, and detection on synthetic gradients (reference note §1.12).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signguard_flwr.rules import RULES
from signguard_flwr.rules.meanshift import (
    estimate_bandwidth,
    mean_shift,
    sklearn_estimate_bandwidth,
    sklearn_mean_shift,
)
from signguard_flwr.rules.signguard import SignGuardParams, SignGuardState
from signguard_flwr.rules.signguard.clustering import largest_cluster

SG, SIM, DIST = RULES["signguard"], RULES["signguard_sim"], RULES["signguard_dist"]
N, F, D = 50, 10, 20_000


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unit_rows(norms, d=6, dtype=torch.float64):
    """Rows ``norm_i * e_0``: identical sign patterns, chosen norms."""
    u = torch.zeros(len(norms), d, dtype=dtype)
    u[:, 0] = torch.tensor(norms, dtype=dtype)
    return u


def pattern(pos: int, zero: int, neg: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.cat([torch.ones(pos), torch.zeros(zero), -torch.ones(neg)]).double()


def honest(seed: int, n: int = N, d: int = D):
    """Honest gradients mu + N(0, I) with ~10% exact zeros (reference note §1.12)."""
    g = gen(seed)
    mu = 0.1 * torch.randn(d, generator=g)
    h = mu + torch.randn(n, d, generator=g)
    h[torch.rand(n, d, generator=g) < 0.1] = 0.0
    return mu, h


def attacked(seed: int, attack: str):
    """First F rows Byzantine."""
    mu, h = honest(seed)
    g = gen(seed + 1000)
    m, s = h.mean(0), h.std(0)
    byz = {
        "lie_0.3": (m - 0.3 * s).expand(F, D),
        "lie_1": (m - 1.0 * s).expand(F, D),
        "random": 0.5 * torch.randn(F, D, generator=g),
        "noise": h[:F] + 0.5 * torch.randn(F, D, generator=g),
        "large_norm": 10.0 * h[:F],
        "sign_flip": -h[:F],
    }[attack]
    return mu, torch.cat([byz, h[F:]])


# ---------------------------------------------------------------------------------------------
# Known answers
# ---------------------------------------------------------------------------------------------


def test_norm_band_is_strict_at_both_ends():
    # median (mid, odd n) = 10: band (1, 30) open; rows of norm exactly 1 and 30 are out.
    u = unit_rows([1.0, 1.5, 10.0, 10.0, 10.0, 29.0, 30.0])
    res = SG(u, cluster_filter=False, clip=False)
    assert res.info["norm_median"] == 10.0
    assert res.info["norm_band"] == (1.0, 30.0)
    assert res.info["passed_norm"].tolist() == [False, True, True, True, True, True, False]
    assert res.info["rejected_by_norm"] == 2
    assert res.selected.tolist() == res.info["passed_norm"].tolist()
    assert torch.allclose(res.vector, u[1:6].mean(0))


def test_norm_band_bounds_are_parameters():
    u = unit_rows([1.0, 1.5, 10.0, 10.0, 10.0, 29.0, 30.0])
    res = SG(u, lower=0.2, upper=2.0, cluster_filter=False, clip=False)
    assert res.info["norm_band"] == (2.0, 20.0)
    assert res.selected.tolist() == [False, False, True, True, True, False, False]


def test_sign_fractions_known_answer_and_max_scaling():
    u = torch.stack([pattern(5, 3, 2), pattern(2, 0, 8), pattern(4, 4, 2)])
    raw = SG(u, sample_fraction=1.0, scaling="none", generator=gen()).info["features"]
    expected = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.0, 0.8], [0.4, 0.4, 0.2]]).double()
    assert torch.allclose(raw, expected, atol=1e-15)
    scaled = SG(u, sample_fraction=1.0, scaling="max", generator=gen()).info["features"]
    assert torch.allclose(scaled, expected / (expected.max(0).values + 1e-8), atol=1e-15)
    assert torch.equal(u[0], pattern(5, 3, 2))  # all columns sampled: the input is not touched


def test_input_matrix_is_never_modified():
    torch.manual_seed(2)
    for u in (torch.randn(1, 300), torch.randn(6, 300), torch.randn(6, 300).T.contiguous().T):
        before = u.clone()
        for sampling in ("random", "window"):
            for fraction in (0.1, 1.0):
                SG(u, sampling=sampling, sample_fraction=fraction, generator=gen())
                SIM(u, sampling=sampling, sample_fraction=fraction, generator=gen())
        assert torch.equal(u, before)


def test_exact_zero_and_negative_zero_count_as_zero():
    u = torch.tensor([[1.0, -0.0, 0.0, -2.0], [3.0, 1.0, -1.0, 0.0]])
    feats = SG(u, sample_fraction=1.0, scaling="none", generator=gen()).info["features"]
    assert feats[0].tolist() == [0.25, 0.5, 0.25]
    assert feats[1].tolist() == [0.5, 0.25, 0.25]


def test_clipping_to_median_norm_and_plain_mean():
    u = unit_rows([1.0, 2.0, 3.0, 4.0])  # mid median 2.5, low median 2
    mid = SG(u, cluster_filter=False)
    assert mid.info["clip_norm"] == 2.5
    assert torch.allclose(mid.vector[0], torch.tensor((1 + 2 + 2.5 + 2.5) / 4, dtype=torch.float64))
    expected = torch.tensor([1.0, 1.0, 2.5 / 3, 2.5 / 4], dtype=torch.float64)
    assert torch.allclose(mid.info["clip_factors"], expected, rtol=1e-15)
    low = SG(u, cluster_filter=False, clip_median="low")
    assert low.info["clip_norm"] == 2.0
    assert torch.isclose(low.vector[0], torch.tensor(1.75, dtype=torch.float64))
    unclipped = SG(u, cluster_filter=False, clip=False)
    assert torch.isclose(unclipped.vector[0], torch.tensor(2.5, dtype=torch.float64))


def test_output_is_unweighted_mean_of_clipped_selected_rows_on_random_data():
    _, u = attacked(3, "large_norm")
    res = SG(u, generator=gen(3))
    norms = u.norm(dim=1)
    m2 = res.info["clip_norm"]
    clipped = u * torch.clamp(m2 / norms, max=1.0)[:, None]
    assert torch.allclose(res.vector, clipped[res.selected].mean(0), atol=1e-5)
    assert res.vector.dtype == u.dtype and res.vector.shape == (D,)
    assert res.selected.dtype == torch.bool and res.selected.shape == (N,)


# ---------------------------------------------------------------------------------------------
# Reference preset
# ---------------------------------------------------------------------------------------------


def test_reference_preset_medians_and_explicit_override():
    u = unit_rows([1.0, 2.0, 3.0, 4.0])
    ref = SG(u, preset="reference", cluster_filter=False)
    assert ref.info["norm_median"] == 2.5  # numpy midpoint for the band
    assert ref.info["clip_norm"] == 2.0  # torch lower median for clipping
    override = SG(u, preset="reference", cluster_filter=False, clip_median="mid")
    assert override.info["clip_norm"] == 2.5
    params = SG(u, preset="reference").info["params"]
    assert params["sampling"] == "window" and params["orphans"] == "drop"
    assert params["scaling"] == "max" and params["bandwidth_samples"] == 50
    assert params["clustering"] == "sklearn" and params["nonfinite"] == "nan_to_zero"
    assert DIST(u, preset="reference").info["params"]["bandwidth_samples"] == "all"
    assert SIM(u, preset="reference").info["params"]["warmup_rounds"] == 72
    assert DIST(u, preset="reference").info["params"]["warmup_rounds"] == 24


def test_reference_window_is_contiguous_and_features_match_it():
    torch.manual_seed(0)
    u = torch.randn(8, 200, dtype=torch.float64)
    u[u.abs() < 0.3] = 0.0
    res = SG(u, preset="reference", clustering="fast", scaling="none", generator=gen(5))
    start, stop = res.info["window"]
    assert stop - start == 20 and res.info["coordinates"] is None
    w = u[:, start:stop]
    fractions = [(w > 0).double().mean(1), (w == 0).double().mean(1), (w < 0).double().mean(1)]
    expected = torch.stack(fractions, dim=1)
    assert torch.allclose(res.info["features"], expected)


def test_reference_window_start_is_uniform_on_0_to_d_minus_k_minus_1():
    u = torch.randn(3, 20)  # k = 2: starts 0..17
    g = gen(1)
    starts = {SG(u, sampling="window", generator=g).info["window"][0] for _ in range(400)}
    assert starts == set(range(18))


def test_random_sampling_is_sorted_unique_and_seeded():
    u = torch.randn(4, 1000)
    a = SG(u, generator=gen(7)).info
    b = SG(u, generator=gen(7)).info
    c = SG(u, generator=gen(8)).info
    idx = a["coordinates"]
    assert idx.numel() == a["sample_size"] == 100
    assert torch.equal(idx, torch.unique(idx))  # sorted, no repeats
    assert torch.equal(idx, b["coordinates"]) and not torch.equal(idx, c["coordinates"])
    assert a["window"] is None
    assert SG(torch.randn(3, 59), generator=gen()).info["sample_size"] == 5  # floor(0.1 d)
    assert SG(torch.randn(3, 59), sampling="window", generator=gen()).info["sample_size"] == 5


# ---------------------------------------------------------------------------------------------
# Clustering: orphans, largest cluster, fast == scikit-learn
# ---------------------------------------------------------------------------------------------


def test_orphans_dropped_or_assigned_to_nearest():
    _, u = honest(4)
    drop = SG(u, orphans="drop", generator=gen(4))
    labels = drop.info["labels"]
    assert drop.info["orphans"] == int((labels == -1).sum()) > 0
    assert not (drop.selected & (labels == -1)).any()
    near = SG(u, orphans="nearest", generator=gen(4))
    assert near.info["orphans"] == 0 and bool((near.info["labels"] >= 0).all())
    assert int(near.selected.sum()) > int(drop.selected.sum())


def test_largest_cluster_counts_actual_labels():
    labels = np.array([0, 0, 2, 2, 2, -1])
    assert largest_cluster(labels, "actual") == 2
    assert largest_cluster(labels, "contiguous") == 0  # the reference's miss
    assert largest_cluster(np.array([1, 1, 0, 0]), "actual") == 0  # tie -> strongest mode
    assert largest_cluster(np.array([-1, -1]), "actual") is None
    assert largest_cluster(np.array([-1, -1]), "contiguous") is None


def _feature_matrices(count: int):
    rng = np.random.default_rng(12345)
    for i in range(count):
        n, k = int(rng.integers(4, 45)), int(rng.integers(2, 5))
        kind = i % 3
        if kind == 0:
            x = rng.random((n, k))
        elif kind == 1:
            centres = rng.random((3, k))
            x = centres[rng.integers(0, 3, n)] + 0.05 * rng.standard_normal((n, k))
        else:
            x = np.round(rng.random((n, k)) * 20) / 20  # many exact ties
        yield x


def test_fast_mean_shift_equals_scikit_learn():
    checked = 0
    for i, x in enumerate(_feature_matrices(30)):
        for n_samples in (None, 20):
            h_fast = estimate_bandwidth(x, quantile=0.5, n_samples=n_samples)
            h_sk = sklearn_estimate_bandwidth(x, quantile=0.5, n_samples=n_samples)
            assert h_fast == pytest.approx(h_sk, rel=1e-12, abs=0)
        if h_sk <= 0:
            continue
        cluster_all = bool(i % 2)
        c_fast, l_fast = mean_shift(x, h_sk, cluster_all=cluster_all)
        c_sk, l_sk = sklearn_mean_shift(x, h_sk, cluster_all=cluster_all)
        assert np.array_equal(l_fast, l_sk)
        assert np.allclose(c_fast, c_sk)
        checked += 1
    assert checked >= 25


def test_fast_and_sklearn_backends_select_the_same_rows():
    for attack in ("lie_0.3", "sign_flip"):
        _, u = attacked(5, attack)
        for orphans in ("drop", "nearest"):
            fast = SG(u, clustering="fast", orphans=orphans, generator=gen(5))
            ref = SG(u, clustering="sklearn", orphans=orphans, generator=gen(5))
            assert torch.equal(fast.info["labels"], ref.info["labels"])
            assert torch.equal(fast.selected, ref.selected)


def test_mean_shift_known_answers_with_points_exactly_at_the_bandwidth():
    # Kernel and orphan tests are inclusive (distance <= h), as in scikit-learn's tree queries.
    x = np.array([[0.0], [1.0], [5.0], [6.0]])
    centers, labels = mean_shift(x, 1.0)
    assert centers.ravel().tolist() == [5.5, 0.5]  # equal intensity: larger coordinate first
    assert labels.tolist() == [1, 1, 0, 0]
    x = np.array([[0.0], [1.0], [2.0]])
    for cluster_all in (False, True):
        centers, labels = mean_shift(x, 1.0, cluster_all=cluster_all)
        assert centers.ravel().tolist() == [1.0] and labels.tolist() == [0, 0, 0]
    far = np.array([[0.0], [1.0], [2.0], [3.5]])  # 3.5 is its own mode
    assert mean_shift(far, 1.0)[1].tolist() == [0, 0, 0, 1]
    # A weaker mode exactly h away from a stronger one is pruned (3.0 vs 1.5 here).
    pruned = np.array([[3.5], [2.0], [1.0], [3.5]])
    centers, labels = mean_shift(pruned, 1.5)
    assert centers.ravel().tolist() == [3.0] and labels.tolist() == [0, 0, -1, 0]
    # Every row in its own bin: the rows themselves are the seeds, not the bin centres.
    own_bins = np.array([[2.0], [0.5], [3.5]])
    centers, labels = mean_shift(own_bins, 1.5)
    assert centers.ravel().tolist() == [2.0] and labels.tolist() == [0, 0, 0]
    cases = [
        (np.array([[0.0], [1.0], [5.0], [6.0]]), 1.0),
        (np.array([[0.0], [1.0], [2.0]]), 1.0),
        (far, 1.0),
        (pruned, 1.5),
        (own_bins, 1.5),
    ]
    for x, h in cases:
        c_sk, l_sk = sklearn_mean_shift(x, h)
        c_fast, l_fast = mean_shift(x, h)
        assert np.array_equal(l_fast, l_sk) and np.allclose(c_fast, c_sk)


def test_mean_shift_rejects_zero_bandwidth():
    with pytest.raises(ValueError, match="bandwidth"):
        mean_shift(np.zeros((3, 2)), 0.0)


# ---------------------------------------------------------------------------------------------
# Edge cases the official code crashes on or turns into NaN
# ---------------------------------------------------------------------------------------------


def test_identical_updates_zero_bandwidth_keeps_everyone():
    u = torch.randn(1, 500).expand(12, 500).clone()
    for variant in (SG, SIM, DIST):
        res = variant(u, generator=gen())
        assert res.info["bandwidth"] == 0.0
        assert "bandwidth 0" in res.info["fallback"]
        assert bool(res.selected.all())
        assert torch.allclose(res.vector, u[0])
    ref = SG(u, preset="reference", generator=gen())  # sklearn would raise on h = 0
    assert bool(ref.selected.all()) and torch.isfinite(ref.vector).all()


def _two_groups(norms_a, norms_b):
    """Group A (4 rows, mostly +) and group B (3 rows, mostly -), rows scaled to given norms."""
    a = [pattern(50, 0, 50), pattern(51, 0, 49), pattern(52, 0, 48), pattern(53, 0, 47)]
    b = [pattern(10, 0, 90), pattern(11, 0, 89), pattern(12, 0, 88)]
    rows = [r / r.norm() * s for r, s in zip(a + b, list(norms_a) + list(norms_b))]
    return torch.stack(rows)


def test_empty_intersection_falls_back_to_norm_band():
    # A is the largest cluster, but its norms (0.001, 1000) lie outside the band around the
    # median 1: S1 ∩ S2 = ∅.
    u = _two_groups([1e-3, 1e-3, 1e3, 1e3], [1.0, 1.0, 1.0])
    res = SG(u, sample_fraction=1.0, generator=gen())
    assert res.info["passed_cluster"].tolist() == [True] * 4 + [False] * 3
    assert res.selected.tolist() == [False] * 4 + [True] * 3
    assert "norm band" in res.info["fallback"]
    assert torch.allclose(res.vector, u[4:].mean(0))
    skip = SG(u, sample_fraction=1.0, generator=gen(), empty_fallback="skip")
    assert not skip.selected.any() and bool((skip.vector == 0).all())
    assert "zero update" in skip.info["fallback"]


def test_all_rejected_gives_zero_update_not_nan():
    # More than half zero rows: median norm 0, the band is empty (the reference emits NaN).
    u = torch.zeros(5, 40)
    u[0] = 1.0
    u[1] = -2.0
    for preset in (None, "reference"):
        res = SG(u, preset=preset, generator=gen())
        assert res.info["norm_median"] == 0.0
        assert not res.selected.any()
        assert torch.isfinite(res.vector).all() and bool((res.vector == 0).all())
        assert "zero update" in res.info["fallback"]


def test_zero_norm_row_is_rejected_without_nan():
    u = unit_rows([0.0, 1.0, 1.0, 1.0, 1.0])
    res = SG(u, generator=gen())
    assert res.selected.tolist() == [False, True, True, True, True]
    assert torch.isfinite(res.info["clip_factors"]).all()
    res = SG(u, norm_filter=False, generator=gen())  # even when it is selected
    assert torch.isfinite(res.vector).all()


def test_nonfinite_rows_rejected_by_default_and_nan_zeroed_in_reference():
    _, u = honest(6, n=20, d=2000)
    u[0, :5] = float("nan")
    u[1, 7] = float("inf")
    res = SG(u, generator=gen())
    assert res.info["nonfinite"][:2].tolist() == [True, True]
    assert not res.selected[:2].any() and torch.isfinite(res.vector).all()
    # Rejected rows take no part in the statistics: not clustered, not in the medians.
    assert res.info["labels"][:2].tolist() == [-1, -1]
    finite_median = float(np.median(u[2:].norm(dim=1).numpy()))
    assert res.info["norm_median"] == pytest.approx(finite_median, rel=1e-6)
    ref = SG(u, preset="reference", generator=gen())
    # NaN -> 0: row 0 keeps a finite norm and is judged like any row; the Inf row fails S1.
    assert math.isfinite(float(ref.info["norms"][0])) and not ref.info["passed_norm"][1]
    assert torch.isfinite(ref.vector).all()
    assert torch.isnan(u[0, :5]).all()  # the caller's matrix is not modified


def test_overflowing_aggregate_is_replaced_by_a_zero_update():
    # Finite float32 entries at the top of the range: norms overflow to inf (the rows are not
    # "non-finite"), and with every filter off float32(1/10) > 1/10 makes the sum overflow.
    u = torch.full((10, 4), torch.finfo(torch.float32).max)
    res = SG(u, norm_filter=False, cluster_filter=False, clip=False)
    assert torch.isfinite(res.vector).all()
    raw = torch.full((10,), 0.1, dtype=torch.float64).float() @ u
    if not torch.isfinite(raw).all():  # overflows with MKL's summation order
        assert bool((res.vector == 0).all()) and not res.selected.any()
        assert "non-finite aggregate" in res.info["fallback"]


def test_float64_input_and_single_client():
    u = torch.randn(1, 30, dtype=torch.float64)
    res = SG(u, generator=gen())
    assert res.vector.dtype == torch.float64
    assert bool(res.selected.all()) and torch.allclose(res.vector, u[0])


def test_permutation_invariance_of_selection():
    _, u = attacked(7, "lie_0.3")
    perm = torch.randperm(N, generator=gen(99))
    for kwargs in ({}, {"preset": "reference", "clustering": "fast", "bandwidth_samples": "all"}):
        a = SG(u, generator=gen(7), **kwargs)
        b = SG(u[perm], generator=gen(7), **kwargs)
        assert torch.equal(a.selected[perm], b.selected)
        assert torch.allclose(a.vector, b.vector, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Detection on synthetic gradients (n = 50, f = 10)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ["lie_0.3", "lie_1", "random", "noise", "large_norm"])
@pytest.mark.parametrize("preset", [None, "reference"])
def test_detects_attacks_on_synthetic_gradients(attack, preset):
    _, u = attacked(11, attack)
    res = SG(u, preset=preset, clustering="fast", generator=gen(11))
    assert int(res.selected[:F].sum()) <= 1
    assert int(res.selected[F:].sum()) >= 0.7 * (N - F)
    assert res.info["fallback"] is None


def test_no_attack_keeps_nearly_everyone_with_nearest_orphans():
    _, u = honest(12)
    assert int(SG(u, generator=gen(12)).selected.sum()) >= 45


def test_sim_with_good_reference_catches_sign_flip_better_than_plain():
    mu, u = attacked(13, "sign_flip")
    plain = SG(u, generator=gen(13))
    state = SignGuardState(previous=mu.clone(), calls=5)
    sim = SIM(u, state=state, warmup_rounds=1, generator=gen(13))
    assert sim.info["phase"] == "previous"
    assert int(plain.selected[:F].sum()) >= 5  # invisible to the sign features
    assert int(sim.selected[:F].sum()) <= 1
    assert int(sim.selected[F:].sum()) >= 0.7 * (N - F)
    # The warm-up statistic (median pairwise cosine, no self term) needs no reference.
    assert int(SIM(u, generator=gen(13)).selected[:F].sum()) <= 1


# ---------------------------------------------------------------------------------------------
# Sim / Dist: vectorised statistics and state
# ---------------------------------------------------------------------------------------------


def _loop_similarity_and_distance(u):
    n = u.shape[0]
    cos = torch.zeros(n, n, dtype=torch.float64)
    dist = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            if i != j:
                cos[i, j] = torch.dot(u[i], u[j]) / (u[i].norm() * u[j].norm())
            dist[i, j] = (u[i] - u[j]).norm()
    s = cos.median(dim=1).values  # lower median, zero diagonal included
    t = dist.sort(dim=1).values[:, : n // 2].sum(1)
    return s, t


def test_warmup_statistics_equal_per_pair_loops():
    torch.manual_seed(1)
    u = torch.randn(9, 300, dtype=torch.float64) + 0.3
    s, t = _loop_similarity_and_distance(u)
    sim = SIM(u, feature_median="low", generator=gen())
    dist = DIST(u, feature_median="low", generator=gen())
    assert sim.info["phase"] == dist.info["phase"] == "warmup"
    assert torch.allclose(sim.info["similarity"], s, atol=1e-10)
    assert torch.allclose(dist.info["distance"], t, atol=1e-8)
    m = float(s.sort().values[4])
    assert torch.allclose(sim.info["features"][:, 3], s.clamp(0, m) / (5 * m + 1e-8))
    m = float(t.sort().values[4])
    assert torch.equal(dist.info["features"][:, 3], 0.2 * (t >= 1.1 * m).double())


@pytest.mark.parametrize("rule", [SIM, DIST])
def test_state_evolves_across_calls(rule):
    _, u = honest(14, n=20, d=3000)
    state = SignGuardState()
    first = rule(u, state=state, warmup_rounds=1, generator=gen(1))
    assert first.info["phase"] == "warmup" and state.calls == 1
    assert torch.equal(state.previous, first.vector)
    second = rule(u * 0.5, state=state, warmup_rounds=1, generator=gen(2))
    assert second.info["phase"] == "previous" and state.calls == 2
    assert torch.equal(state.previous, second.vector)
    kept = second.vector.clone()
    second.vector.add_(1.0)  # the caller owns its result; the state keeps its own copy
    assert torch.equal(state.previous, kept)
    with pytest.raises(ValueError, match="lower"):
        rule(u, state=state, lower=-1.0)
    assert state.calls == 2  # no update on failure
    skipped = rule(torch.zeros(4, 3000), state=state, warmup_rounds=1)
    assert "zero update" in skipped.info["fallback"] and state.calls == 3
    assert torch.equal(state.previous, kept)  # a zero "skip" update keeps the old direction
    median = rule(u, state=state, warmup_rounds=1, reference="median", generator=gen(3))
    assert median.info["phase"] == "median"
    state.reset()
    assert state.previous is None and state.calls == 0


def test_stateless_sim_stays_in_warmup_and_wrong_size_state_is_reported():
    _, u = honest(15, n=12, d=500)
    assert SIM(u, state=None, warmup_rounds=0).info["phase"] == "warmup"
    state = SignGuardState(previous=torch.zeros(7), calls=3)
    with pytest.raises(ValueError, match="state.previous"):
        SIM(u, state=state, warmup_rounds=0)
    assert state.calls == 3


# ---------------------------------------------------------------------------------------------
# Ablation switches
# ---------------------------------------------------------------------------------------------


def test_ablation_switches():
    _, u = attacked(16, "large_norm")
    no_norm = SG(u, norm_filter=False, generator=gen(16))
    assert bool(no_norm.info["passed_norm"].all()) and no_norm.info["rejected_by_norm"] == 0
    no_cluster = SG(u, cluster_filter=False, generator=gen(16))
    assert no_cluster.info["features"] is None and bool(no_cluster.info["passed_cluster"].all())
    assert torch.equal(no_cluster.selected, no_cluster.info["passed_norm"])
    no_clip = SG(u, clip=False, generator=gen(16))
    assert torch.allclose(no_clip.vector, u[no_clip.selected].mean(0), atol=1e-5)
    only_clip = SG(u, norm_filter=False, cluster_filter=False, generator=gen(16))
    assert bool(only_clip.selected.all())
    assert float(only_clip.vector.norm()) <= only_clip.info["clip_norm"] * (1 + 1e-5)


# ---------------------------------------------------------------------------------------------
# Robustness to arbitrary inputs
# ---------------------------------------------------------------------------------------------


@st.composite
def update_matrices(draw):
    n = draw(st.integers(1, 9))
    d = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**31 - 1))
    g = gen(seed)
    scale = draw(st.sampled_from([1e-6, 1.0, 1e4]))
    u = torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    u[torch.rand(n, d, generator=g) < draw(st.sampled_from([0.0, 0.3, 0.9]))] = 0.0
    for _ in range(draw(st.integers(0, 3))):  # zero rows and duplicated rows
        i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        if draw(st.booleans()):
            u[i] = 0.0
        else:
            u[i] = u[j]
    if draw(st.integers(0, 9)) == 0:
        u[draw(st.integers(0, n - 1)), draw(st.integers(0, d - 1))] = draw(
            st.sampled_from([float("nan"), float("inf"), -float("inf")])
        )
    return u.to(draw(st.sampled_from([torch.float32, torch.float64])))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    u=update_matrices(),
    variant=st.sampled_from(["signguard", "signguard_sim", "signguard_dist"]),
    preset=st.sampled_from([None, "reference"]),
    clustering=st.sampled_from(["fast", "fast", "fast", "sklearn"]),
    orphans=st.sampled_from(["drop", "nearest"]),
    sampling=st.sampled_from(["random", "window"]),
    fallback=st.sampled_from(["norm_band", "skip"]),
    calls=st.integers(0, 2),
)
def test_random_inputs_never_give_nonfinite_output(
    u, variant, preset, clustering, orphans, sampling, fallback, calls
):
    kwargs = dict(preset=preset, clustering=clustering, orphans=orphans, sampling=sampling)
    kwargs["empty_fallback"] = fallback
    if variant != "signguard":
        kwargs.update(state=SignGuardState(calls=calls), warmup_rounds=1)
    res = RULES[variant](u, generator=gen(0), **kwargs)
    assert res.vector.shape == (u.shape[1],) and res.vector.dtype == u.dtype
    assert torch.isfinite(res.vector).all()
    assert res.selected.dtype == torch.bool and res.selected.shape == (u.shape[0],)
    if not res.selected.any():
        assert res.info["fallback"] is not None and bool((res.vector == 0).all())


# ---------------------------------------------------------------------------------------------
# Parameter validation (also without data, as strategies do at construction)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "params", "error", "name"),
    [
        (SG, {"lower": -0.1}, ValueError, "lower"),
        (SG, {"lower": 3.0, "upper": 3.0}, ValueError, "lower"),
        (SG, {"upper": "3"}, TypeError, "upper"),
        (SG, {"sample_fraction": 0.0}, ValueError, "sample_fraction"),
        (SG, {"sample_fraction": 1.5}, ValueError, "sample_fraction"),
        (SG, {"sampling": "blocks"}, ValueError, "sampling"),
        (SG, {"scaling": "zscore"}, ValueError, "scaling"),
        (SG, {"orphans": "keep"}, ValueError, "orphans"),
        (SG, {"norm_median": "high"}, ValueError, "norm_median"),
        (SG, {"clip_median": "mean"}, ValueError, "clip_median"),
        (SG, {"label_counting": "all"}, ValueError, "label_counting"),
        (SG, {"clustering": "dbscan"}, ValueError, "clustering"),
        (SG, {"bandwidth_quantile": 2.0}, ValueError, "bandwidth_quantile"),
        (SG, {"bandwidth_samples": 0}, ValueError, "bandwidth_samples"),
        (SG, {"bandwidth_samples": "some"}, ValueError, "bandwidth_samples"),
        (SG, {"nonfinite": "ignore"}, ValueError, "nonfinite"),
        (SG, {"empty_fallback": "nan"}, ValueError, "empty_fallback"),
        (SG, {"norm_filter": 1}, TypeError, "norm_filter"),
        (SG, {"cluster_filter": "yes"}, TypeError, "cluster_filter"),
        (SG, {"clip": None}, TypeError, "clip"),
        (SG, {"generator": 3}, TypeError, "generator"),
        (SG, {"preset": "paper"}, ValueError, "preset"),
        (SG, {"state": SignGuardState()}, TypeError, "state"),  # plain SignGuard is stateless
        (SIM, {"warmup_rounds": -1}, ValueError, "warmup_rounds"),
        (SIM, {"warmup_rounds": 1.5}, TypeError, "warmup_rounds"),
        (SIM, {"reference": "mean"}, ValueError, "reference"),
        (DIST, {"feature_median": "x"}, ValueError, "feature_median"),
        (DIST, {"state": object()}, TypeError, "state"),
    ],
)
def test_validate_rejects_bad_parameters_by_name(rule, params, error, name):
    with pytest.raises(error, match=name):
        rule.validate(**params)
    with pytest.raises(error, match=name):
        rule(torch.randn(4, 10), **params)


def test_params_dataclass_resolves_the_preset_once_and_is_frozen():
    p = SignGuardParams(variant="signguard_sim", preset="reference", clip_median="mid")
    assert p.sampling == "window" and p.warmup_rounds == 72 and p.clip_median == "mid"
    assert SignGuardParams().sampling == "random" and SignGuardParams().warmup_rounds is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.lower = 0.2
    with pytest.raises(TypeError, match="warmup_rounds"):
        SignGuardParams(warmup_rounds=3)  # plain SignGuard has no fourth feature
    with pytest.raises(ValueError, match="variant"):
        SignGuardParams(variant="signguard_cos")
    # One keyword list: the three rules' signatures are made from the dataclass's fields.
    names = {f.name for f in dataclasses.fields(SignGuardParams)} - {"variant"}
    assert set(SIM.param_names) == set(DIST.param_names) == names | {"state"}
    assert set(SG.param_names) == names - {"warmup_rounds", "reference", "feature_median"}


def test_validate_accepts_defaults_and_presets():
    for rule in (SG, SIM, DIST):
        rule.validate()
        rule.validate(preset="reference")
        rule.validate(preset="reference", sampling="random", clustering="fast", bandwidth_samples=7)
    SIM.validate(state=SignGuardState(), warmup_rounds=0, reference="pairwise", generator=gen())


# ---------------------------------------------------------------------------------------------
# CUDA: the same selection and aggregate as on the CPU
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("rule", [SG, SIM, DIST])
@pytest.mark.parametrize("preset", [None, "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(rule, preset, dtype):
    _, u = attacked(31, "lie_1")
    u = u.to(dtype)
    cpu = rule(u, preset=preset, generator=gen(31))
    gpu = rule(u.cuda(), preset=preset, generator=gen(31))
    assert gpu.vector.device.type == "cuda" and gpu.vector.dtype == dtype
    assert gpu.selected.device.type == "cuda"
    assert torch.equal(gpu.selected.cpu(), cpu.selected)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert torch.allclose(gpu.vector.cpu(), cpu.vector, rtol=tol, atol=tol)
    assert int(cpu.selected[:F].sum()) == 0  # and the attack is caught on both
