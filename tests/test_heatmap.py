"""The Table I heatmap (simulations/reporting/heatmap.py): cells, seeds and kept rates."""

from __future__ import annotations

from pathlib import Path

from simulations.reporting.entries import entries_from_results, group_blocks
from simulations.reporting.heatmap import heatmap_cells, heatmap_figure, plot_heatmap, wants_heatmap
from tests.test_report import make_result

DEFENSES = ("mean", "median", "multi_krum", "signguard")
ATTACKS = ("none", "lie", "min_max", "sign_flip")


# Rules that aggregate every row record 100% of both kinds kept, as the engine records them.
AGGREGATE_ALL = ("mean", "median", "nnm_median")


def _block(defenses=DEFENSES, attacks=ATTACKS, seeds=(0,)):
    results = [make_result(defense=d, attack=a, accs=(0.5, 0.9 - 0.01 * i), seed=s,
                           byzantine_rate=1.0 if d in AGGREGATE_ALL else 0.25)
               for i, d in enumerate(defenses) for a in attacks for s in seeds]
    [block] = group_blocks(entries_from_results(results))
    return block


def test_cells_follow_the_papers_order_and_hold_every_seed() -> None:
    rows, cols, cells = heatmap_cells(_block(seeds=(0, 1)))
    assert rows == ["Mean", "Median", "Multi-Krum", "SignGuard"]
    assert cols[0] == "No attack" and set(cols) == {"No attack", "LIE", "Min-Max", "Sign-flip"}
    assert all(len(runs) == 2 for runs in cells.values()) and len(cells) == 16


def test_small_blocks_get_no_heatmap() -> None:
    assert wants_heatmap(_block())
    assert not wants_heatmap(_block(defenses=DEFENSES[:3]))
    assert not wants_heatmap(_block(attacks=ATTACKS[:3]))


def test_figure_annotates_accuracy_spread_and_kept_share(tmp_path: Path) -> None:
    fig = heatmap_figure(_block(seeds=(0, 1)))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "90.0±0.0" in texts  # Mean without attack: no "% kept" (nothing is attacked)
    assert "87.0±0.0\n25% kept" in texts  # SignGuard under an attack: it selects rows
    assert not any("kept" in t for t in texts if t.startswith("89.0"))  # Median aggregates every row
    assert plot_heatmap(_block(), tmp_path / "h.png").stat().st_size > 0


def test_kept_share_follows_recorded_selection_not_rule_names() -> None:
    # A rule the report has no list entry for: NNM + median aggregates every row (no figure),
    # a selecting rule under a new name keeps its figure.
    texts = [t.get_text() for t in heatmap_figure(_block(defenses=("nnm_median", "bulyan", "mean", "dnc"))).axes[0].texts]
    assert not any("kept" in t for t in texts if t.startswith("90.0"))  # nnm_median
    assert sum("25% kept" in t for t in texts) == 2 * (len(ATTACKS) - 1)  # Bulyan and DnC under each attack
