"""Issue #13's defense-aware table and heatmap (simulations/reporting/defense_aware.py)."""

from __future__ import annotations

from pathlib import Path

from simulations.reporting.defense_aware import defense_aware_block, defense_aware_markdown
from simulations.reporting.entries import entries_from_results, group_blocks
from simulations.reporting.plots import write_plots
from simulations.reporting.report import build_report
from tests.test_report import make_result

HARD = {"defense_params": {"preset": "hardened"}}


def _results():
    out = [
        # Mean aggregates every row (100% kept, as the engine records it); two seeds without attack.
        make_result(defense="mean", attack="none", accs=(0.980,), seed=0),
        make_result(defense="mean", attack="none", accs=(0.984,), seed=1),
        make_result(defense="mean", attack="sign_mimic", accs=(0.12,)),
        make_result(defense="signguard", attack="none", accs=(0.975,), honest_rate=0.97, byzantine_rate=0.97, **HARD),
        make_result(defense="signguard", attack="sign_mimic", accs=(0.981,), honest_rate=0.93, byzantine_rate=0.0, **HARD),
        make_result(defense="signguard", attack="ipm", accs=(0.97,), honest_rate=0.95, byzantine_rate=0.0,
                    attack_params={"epsilon": 100.0}, **HARD),
        # Paper attacks and defenses that met no defense-aware attack stay out of the table.
        make_result(defense="signguard", attack="lie", accs=(0.98,), honest_rate=0.97, byzantine_rate=0.0, **HARD),
        make_result(defense="median", attack="none", accs=(0.97,)),
    ]
    return entries_from_results(out)


def test_table_rows_columns_and_cells() -> None:
    text = defense_aware_markdown(_results())
    assert text.startswith("## Defense-aware attacks (issue #13)")
    header = next(line for line in text.splitlines() if line.startswith("| defense"))
    assert header == "| defense | No attack | IPM [epsilon=100.0] | Sign-mimic |"
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| defense")}
    assert set(rows) == {"Mean", "SignGuard [preset='hardened']"}  # Median met no defense-aware attack
    assert "| 98.20±0.28 | – | 12.00† |" in rows["Mean"]  # no kept share: Mean drops nothing
    hardened = rows["SignGuard [preset='hardened']"]
    assert "97.50† (H 97%)" in hardened and "97.00† (M 0%, H 95%)" in hardened and "98.10† (M 0%, H 93%)" in hardened
    assert "LIE" not in header


def test_no_section_without_defense_aware_runs_and_the_report_carries_it() -> None:
    plain = entries_from_results([make_result(defense="mean", attack="lie"), make_result(defense="signguard", attack="none")])
    assert defense_aware_markdown(plain) == ""
    assert all(defense_aware_block(b) is None for b in group_blocks(plain))
    markdown, _ = build_report(_results(), None, plots=False)
    assert "## Defense-aware attacks (issue #13)" in markdown
    assert markdown.index("## Defense-aware attacks") < markdown.index("## The hardened SignGuard preset against its targets")


def test_heatmap_for_four_defenses_and_four_attacks(tmp_path: Path) -> None:
    results = [make_result(defense=d, attack=a, accs=(0.9,), byzantine_rate=0.5)
               for d in ("mean", "multi_krum", "dnc", "bulyan") for a in ("none", "ipm", "fang_krum", "mirror")]
    written = write_plots(entries_from_results(results), tmp_path)
    assert any(p.name.startswith("defense-aware-") and p.stat().st_size > 0 for p in written)
    small = write_plots(_results(), tmp_path / "small")
    assert not any(p.name.startswith("defense-aware-") for p in small)  # two defenses: the table is enough


def test_table1_leaves_the_defense_aware_attacks_to_their_section() -> None:
    from simulations.reporting.tables import table1_markdown

    header = next(line for line in table1_markdown(_results()).splitlines() if line.startswith("| defense"))
    assert header == "| defense | No attack | LIE |"


def test_a_cell_with_fewer_seeds_than_its_neighbours_is_marked() -> None:
    """Three seeds of Mean without attack, two under IPM, one under sign-mimic: ‡ on the two."""
    runs = [make_result(defense="mean", attack="none", accs=(0.98,), seed=s) for s in (0, 1, 2)]
    runs += [make_result(defense="mean", attack="ipm", accs=(0.5,), seed=s) for s in (0, 1)]
    runs += [make_result(defense="mean", attack="sign_mimic", accs=(0.12,))]
    text = defense_aware_markdown(entries_from_results(runs))
    row = next(line for line in text.splitlines() if line.startswith("| Mean"))
    assert row == "| Mean | 98.00±0.00 | 50.00±0.00‡ | 12.00† |"
    assert "‡ 2 seeds (the block's fullest cells have 3)." in text
    # A block whose cells all have the same number of seeds carries no mark.
    full = defense_aware_markdown(entries_from_results(runs[:3] + [make_result(defense="mean", attack="ipm", accs=(0.5,), seed=s) for s in (0, 1, 2)]))
    assert "‡" not in full.split("|---", 1)[1]
