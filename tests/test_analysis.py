"""The measurement scripts behind docs/results/analysis run end to end on the offline digits task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations.analysis import bulyan_lie, signflip_features


def test_signflip_features_reports_features_and_keep_rates(tmp_path: Path) -> None:
    out = tmp_path / "sf.json"
    signflip_features.main(["--task", "digits", "--clients", "10", "--byzantine", "2",
                            "--checkpoints", "1,3", "--draws", "2", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["byzantine"] and len(data["byzantine"]) == 2 and set(data["checkpoints"]) == {"1", "3"}
    for point in data["checkpoints"].values():
        full = point["full_vector"]
        assert full["pos_mean"] + full["zero_mean"] + full["neg_mean"] == pytest.approx(1.0)
        assert full["abs_pos_minus_neg_mean"] >= abs(full["pos_minus_neg_mean"]) - 1e-12
        for rule in ("signguard", "signguard_reference", "signguard_sim"):
            assert 0.0 <= point[rule]["byz_kept"] <= 1.0 and 0.0 <= point[rule]["honest_kept"] <= 1.0


def test_bulyan_lie_compares_both_variants(tmp_path: Path) -> None:
    out = tmp_path / "bulyan.json"
    bulyan_lie.main(["--task", "digits", "--clients", "15", "--byzantine", "3", "--checkpoints", "1,2", "--out", str(out)])
    data = json.loads(out.read_text())
    assert set(data["checkpoints"]) == {"1", "2"}
    point = data["checkpoints"]["1"]
    assert {"bulyan_canonical", "bulyan_reference"} <= set(point)
    assert 0 <= point["bulyan_canonical"]["byzantine_in_selection"] <= 3


def test_defense_aware_snapshot_table_has_every_attack_and_rule() -> None:
    import torch

    from simulations.analysis import defense_aware_snapshots as snap

    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(400, generator=gen)
    matrix = -(mu / mu.norm() + 0.05 * torch.randn(12, 400, generator=gen))  # model deltas = −gradients
    rows = snap.evaluate(matrix, m=2)
    assert len(rows) == len(snap.ATTACKS) * len(snap.RULE_SETTINGS)
    none = [r for r in rows if r["attack"] == "none"]
    assert all(r["cosine_to_honest_mean"] > 0.5 for r in none)
    mimic = {r["rule"]: r for r in rows if r["attack"] == "sign_mimic"}
    assert mimic["SignGuard hardened"]["byzantine_kept"] == 0
    table = snap.markdown({7: rows}, m=2, n=12)
    assert "Round 7" in table and "| mirror |" in table


def test_mirror_bound_stays_below_its_bound_and_keeps_the_step_direction() -> None:
    import torch

    from simulations.analysis.defense_aware_snapshots import mirror_bound

    g = torch.Generator().manual_seed(0)
    d, c = 20_000, 0.05  # honest pairwise cosine c: a mean component of norm sqrt(c) in unit rows
    mu = torch.randn(d, generator=g)
    mu = mu / mu.norm() * c**0.5
    honest = mu + torch.randn(50, d, generator=g) / d**0.5 * (1 - c) ** 0.5
    out = mirror_bound(honest, 10)
    assert out["q"] == pytest.approx(c, abs=0.01)
    assert 0 < out["kappa"] <= out["kappa_bound"] < out["reversal_at"] == 5
    assert 0 < out["step_along_mu"] < 1  # slowed, not reversed


def test_defense_aware_snapshots_cover_every_defense_of_the_sweep() -> None:
    import torch

    from simulations.analysis import defense_aware_snapshots as snap

    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(300, generator=gen)
    matrix = -(mu / mu.norm() + 0.05 * torch.randn(12, 300, generator=gen))
    attacks = tuple(a for a in snap.DEFENSE_AWARE_ATTACKS if a[0] in {"none", "fang_krum", "sign_mimic"})
    rows = snap.evaluate(matrix, m=2, attacks=attacks, rules=snap.ALL_DEFENSES)
    assert len(rows) == len(attacks) * len(snap.ALL_DEFENSES)
    cell = {(r["attack"], r["rule"]): r for r in rows}
    # Rules that aggregate every row report no kept counts; selecting rules do.
    assert cell[("none", "Median")]["byzantine_kept"] is None
    assert cell[("none", "Multi-Krum")]["honest_kept"] is not None
    assert all(cell[("none", label)]["cosine_to_honest_mean"] > 0.5 for label, _, _ in snap.ALL_DEFENSES)
    assert cell[("sign_mimic", "SignGuard hardened")]["byzantine_kept"] == 0
    table = snap.defenses_markdown({3: rows}, m=2, n=12)
    assert "**Round 3**" in table and "| NNM+CC |" in table and "| defense | none | fang_krum | sign_mimic |" in table
    # The sweep's defenses, named as the sweep names them.
    sweep = {"mean", "median", "trimmed_mean", "geomed", "multi_krum", "bulyan", "dnc", "centered_clipping",
             "nnm_multi_krum", "nnm_centered_clipping", "signguard", "signguard_sim", "signguard_dist"}
    assert {name for _, name, _ in snap.ALL_DEFENSES} == sweep


def test_sign_flip_directions_separate_aligned_rows_and_not_orthogonal_ones() -> None:
    import torch

    from simulations.analysis.defense_aware_snapshots import sign_flip_directions

    g = torch.Generator().manual_seed(0)
    d = 20_000

    def honest(c: float) -> torch.Tensor:  # unit rows with pairwise cosine c
        mu = torch.randn(d, generator=g)
        mu = mu / mu.norm() * c**0.5
        return -(mu + torch.randn(50, d, generator=g) / d**0.5 * (1 - c) ** 0.5)  # model deltas = −gradients

    aligned = sign_flip_directions(honest(0.3), 10)
    assert aligned["honest_pairwise_cosine"] == pytest.approx(0.3, abs=0.02)
    assert aligned["s_flipped"][2] < aligned["threshold"] < aligned["s_honest"][0]
    assert aligned["flipped_kept"] == 0 and aligned["honest_kept"] == 40
    orthogonal = sign_flip_directions(honest(0.0), 10)
    assert orthogonal["s_flipped"][2] > orthogonal["threshold"]  # indistinguishable: kept
    assert orthogonal["flipped_kept"] > 5
