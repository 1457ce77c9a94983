"""The named sweeps behind docs/results: sizes, order and settings the evidence relies on."""

from __future__ import annotations

from simulations import paper_sweeps as ps
from simulations.report import ABLATION_KEYS


def test_converged_sweep_runs_the_seeded_claim_cells_first_then_every_table1_cell() -> None:
    configs = ps.build_sweep("converged-mnist")
    keys = [c.key() for c in configs]
    assert len(keys) == len(set(keys)) == 3 * 7 * 5 + (10 * 9 - 7 * 5)
    assert all((c.task, c.rounds, c.eval_every, c.num_clients, c.num_byzantine) == ("mnist", 300, 10, 50, 10) for c in configs)
    seeded = configs[: 3 * 7 * 5]
    assert [c.seed for c in seeded] == [s for s in (0, 1, 2) for _ in range(35)]  # seed by seed
    assert {(c.defense, c.attack) for c in seeded} == {(d, a) for d in ps.SEEDED_DEFENSES for a in ps.SEEDED_ATTACKS}
    rest = configs[3 * 7 * 5 :]
    assert {c.seed for c in rest} == {0}
    cells = {(c.defense, c.attack) for c in configs}
    assert cells == {(d, a) for d in ps.ALL_DEFENSES for a in ps.TABLE1_ATTACKS}
    assert {c.task for c in ps.build_sweep("converged-fmnist")} == {"fmnist"}


def test_paper_budget_sweep_is_the_papers_1440_rounds() -> None:
    configs = ps.build_sweep("paper-budget-mnist")
    assert {c.rounds for c in configs} == {1440}
    assert {(c.defense, c.attack) for c in configs} == {
        (d, a) for d in ("mean", "signguard") for a in ("none", "lie", "min_max")
    } | {("multi_krum", "min_max")}


def test_ablation_adds_the_clustering_only_row_at_r_100() -> None:
    configs = ps.build_sweep("ablation-fmnist")
    assert len(configs) == 19
    [r100] = [c for c in configs if c.attack_params]
    assert r100.attack == "reverse_scaling" and r100.attack_params == {"scale": 100.0}
    assert r100.defense_params == dict(zip(ABLATION_KEYS, (False, True, False)))


def test_bulyan_reference_sweep_matches_table1_settings_but_the_variant() -> None:
    table1 = {(c.attack): c for c in ps.build_sweep("table1-mnist") if c.defense == "bulyan"}
    for cfg in ps.build_sweep("bulyan-reference-mnist"):
        assert cfg.defense_params == {"variant": "reference"}
        assert cfg.replace(defense_params={}).key() == table1[cfg.attack].key()
