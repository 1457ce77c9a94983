"""Figures from hand-made results: shared axes, seed bands, SignGuard selection, main summary."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from simulations.engine import RunResult
from simulations.reporting import paper_numbers as paper
from simulations.reporting import plots, summary_figure
from simulations.reporting.entries import Block, Entry, entries_from_results, group_blocks
from simulations.reporting.figures import accuracy_series
from tests.test_report import PNG_MAGIC, make_result

NAN = float("nan")


def _entries(*runs: RunResult) -> list[Entry]:
    return entries_from_results(runs)


def _block(entries: Sequence[Entry]) -> Block:
    [block] = group_blocks(entries)
    return block


def _with_rates(run: RunResult, honest: Sequence[float], byzantine: Sequence[float]) -> RunResult:
    """``run`` with the given per-round selected rates (one value per round)."""
    for record, h, b in zip(run.rounds, honest, byzantine, strict=True):
        record.honest_selected_rate = h
        record.byzantine_selected_rate = b
    return run


@pytest.fixture
def figures():
    """Close every figure a test leaves open."""
    yield
    plt.close("all")


def _axes(fig) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


def _panel(fig, title: str):
    [ax] = [ax for ax in _axes(fig) if ax.get_title() == title]
    return ax


def _line(ax, label: str):
    [line] = [line for line in ax.get_lines() if line.get_label() == label]
    return line


# Three seeds of Median under LIE (round 2 not evaluated), one seed of everything else.
MEDIAN_LIE = [(0.5, NAN, 0.9), (0.6, NAN, 0.7), (0.7, NAN, 0.8)]


def _accuracy_runs() -> list[RunResult]:
    runs = [make_result(defense="median", attack="lie", accs=accs, seed=s) for s, accs in enumerate(MEDIAN_LIE)]
    runs += [
        make_result(defense="signguard", attack="lie", accs=(0.7, 0.8, 0.95)),
        make_result(defense="median", attack="none", accs=(0.7, 0.8, 0.9)),
        make_result(defense="signguard", attack="none", accs=(0.7, 0.8, 0.9)),
        make_result(defense="mean", attack="min_max", accs=(0.2, 0.15, 0.1)),
    ]
    return runs


def test_accuracy_series_is_the_seed_mean() -> None:
    series = accuracy_series(_entries(*[make_result(defense="median", attack="lie", accs=a, seed=s)
                                              for s, a in enumerate(MEDIAN_LIE)]))
    # Round 0 is the initial model (make_result: 10%); round 2 was never evaluated.
    np.testing.assert_array_equal(series.x, [0, 1, 3])
    np.testing.assert_allclose(series.mean, [10, 60, 80])
    np.testing.assert_allclose(series.std, [0, np.std([50, 60, 70], ddof=1), np.std([90, 70, 80], ddof=1)])
    np.testing.assert_array_equal(series.count, [3, 3, 3])
    assert series.seeds == (0, 1, 2) and series.n_seeds == 3


def test_accuracy_figure_shares_y_and_shades_seed_bands(figures) -> None:
    fig = plots.accuracy_figure(_block(_entries(*_accuracy_runs())))
    axes = _axes(fig)
    assert [ax.get_title() for ax in axes] == ["No attack", "LIE", "Min-Max"]
    # One y range for every panel, covering 10% (Min-Max) to 95% (SignGuard under LIE).
    limits = {ax.get_ylim() for ax in axes}
    assert len(limits) == 1
    lo, hi = limits.pop()
    assert lo <= 10 and hi >= 95 and lo >= -5 and hi <= 105

    lie = _panel(fig, "LIE")
    # The label says how many seeds the defense's cells have (3 under LIE, 1 without attack).
    median = _line(lie, "Median (1–3 seeds)")
    np.testing.assert_array_equal(median.get_xdata(), [0, 1, 3])
    np.testing.assert_allclose(median.get_ydata(), [10, 60, 80])
    # Exactly one band (the 3-seed cell), spanning mean ± std.
    [band] = [c for c in lie.collections if isinstance(c, PolyCollection)]
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.max() == pytest.approx(80 + np.std([90, 70, 80], ddof=1))
    assert ys.min() == pytest.approx(10)
    # The single-seed line keeps its plain label; single-seed panels have no band.
    np.testing.assert_allclose(_line(lie, "SignGuard").get_ydata(), [10, 70, 80, 95])
    assert not [c for c in _panel(fig, "No attack").collections if isinstance(c, PolyCollection)]
    # One legend for the whole figure, each defense once; none inside the panels.
    assert all(ax.get_legend() is None for ax in axes)
    [legend] = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["Mean", "Median (1–3 seeds)", "SignGuard"]


def test_accuracy_lines_distinguishable_for_every_defense(figures) -> None:
    rounds = 60
    accs = tuple(0.5 if r % 2 else NAN for r in range(rounds))
    runs = [make_result(defense=d, attack="lie", accs=accs) for d in paper.DEFENSE_NAMES]
    runs.append(make_result(defense="signguard", attack="lie", accs=accs, defense_params={"lower": 0.2}))
    fig = plots.accuracy_figure(_block(_entries(*runs)))
    lines = _axes(fig)[0].get_lines()
    assert len(lines) == len(paper.DEFENSE_NAMES) + 1
    looks = [(line.get_marker(), line.get_linestyle(), line.get_markerfacecolor()) for line in lines]
    assert len(set(looks)) == len(looks)  # colour aside, marker + dash + fill tell lines apart
    colors = {line.get_label(): line.get_color() for line in lines}
    assert colors["SignGuard"] == colors["SignGuard [lower=0.2]"]  # a variant keeps its defense's colour
    assert len({colors[paper.DEFENSE_NAMES[d]] for d in paper.DEFENSE_NAMES}) == len(paper.DEFENSE_NAMES)
    # Markers thinned out on long curves (31 points here).
    for line in lines:
        offset, step = line.get_markevery()
        assert step > 1 and 0 <= offset < step


def test_selection_figure_plots_the_per_round_rates(figures) -> None:
    honest = [(1.0, 0.9, NAN, 0.8), (0.8, 0.7, NAN, 1.0)]
    byzantine = [(0.5, 0.2, NAN, 0.0), (0.3, 0.0, NAN, 0.0)]
    runs = [
        _with_rates(make_result(defense="signguard", attack="lie", seed=s), honest[s], byzantine[s]) for s in (0, 1)
    ]
    runs.append(_with_rates(make_result(defense="signguard_sim", attack="lie"), honest[0], byzantine[0]))
    runs.append(make_result(defense="signguard", attack="none"))
    runs.append(make_result(defense="mean", attack="lie"))  # not in the SignGuard family: not drawn
    fig = plots.selection_figure(_block(_entries(*runs)))
    assert [ax.get_title() for ax in _axes(fig)] == ["No attack", "LIE"]
    assert len({ax.get_ylim() for ax in _axes(fig)}) == 1
    lie = _panel(fig, "LIE")
    assert len(lie.get_lines()) == 4  # honest + Byzantine for SignGuard and SignGuard-Sim
    kept_honest = _line(lie, "_SignGuard: honest kept")
    kept_byzantine = _line(lie, "_SignGuard: Byzantine kept")
    assert kept_honest.get_linestyle() == "-" and kept_byzantine.get_linestyle() == "--"
    assert kept_honest.get_color() == kept_byzantine.get_color()
    # Round 3's rates are undefined (NaN): no point there.
    np.testing.assert_array_equal(kept_honest.get_xdata(), [1, 2, 4])
    np.testing.assert_allclose(kept_honest.get_ydata(), [0.9, 0.8, 0.9])
    np.testing.assert_allclose(kept_byzantine.get_ydata(), [0.4, 0.1, 0.0])
    sim = _line(lie, "_SignGuard-Sim: Byzantine kept")
    np.testing.assert_allclose(sim.get_ydata(), [0.5, 0.2, 0.0])
    # The legend explains colours (defenses) and dashes (honest / Byzantine) once.
    [legend] = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "SignGuard (1–2 seeds)", "SignGuard-Sim", "honest kept", "Byzantine kept",
    ]


def test_selection_figure_written_only_for_signguard_under_attack(tmp_path: Path) -> None:
    base = [
        make_result(task="digits", defense="signguard", attack="none"),
        make_result(task="digits", defense="mean", attack="lie"),
        make_result(task="digits", defense="signguard", attack="lie", num_byzantine=0),  # nobody to select
    ]
    written = plots.write_plots(_entries(*base), tmp_path / "a")
    assert "accuracy-digits-iid-n50-b10-r4.png" in [p.name for p in written]
    assert not [p.name for p in written if p.name.startswith("selection-")]

    # Any defense named signguard* belongs to the family.
    assert plots.is_signguard_family("signguard_dist") and plots.is_signguard_family("signguard_lite")
    assert not plots.is_signguard_family("mean")
    attacked = base + [make_result(task="digits", defense="signguard_lite", attack="lie")]
    written = plots.write_plots(_entries(*attacked), tmp_path / "b")
    assert [p.name for p in written if p.name.startswith("selection-")] == ["selection-digits-iid-n50-b10-r4.png"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(p.name for p in written)
    for path in written:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_figures_are_deterministic(tmp_path: Path) -> None:
    block = _block(_entries(*_accuracy_runs()))
    first = plots.plot_accuracy_curves(block, tmp_path / "one.png").read_bytes()
    second = plots.plot_accuracy_curves(block, tmp_path / "two.png").read_bytes()
    assert first == second
    assert b"Software" not in first and b"Matplotlib" not in first


def _summary_runs() -> list[RunResult]:
    # Final accuracies: Mean 90 and 92 without attack (2 seeds) -> 91; 59.8 under LIE -> −31.2.
    return [
        make_result(defense="mean", attack="none", accs=(0.5, 0.9), seed=0),
        make_result(defense="mean", attack="none", accs=(0.95, 0.92), seed=1),  # best 0.95, final 0.92
        make_result(defense="mean", attack="lie", accs=(0.7, 0.598)),
        make_result(defense="signguard", attack="sign_flip", accs=(0.5, 0.9)),  # best 0.9, final 0.9
        make_result(defense="signguard", attack="lie", accs=(0.95, 0.93)),  # final, not best, accuracy
        make_result(defense="signguard", attack="none", accs=(0.5, 0.92)),
        make_result(defense="multi_krum", attack="lie", accs=(0.5, 0.3)),  # no no-attack bar to compare with
    ]


def test_summary_bars_best_accuracy_by_default() -> None:
    bars = summary_figure.summary_bars(_entries(*_summary_runs()))
    assert bars.metric == "best"
    assert bars.accuracy[("Mean", "No attack")] == pytest.approx(92.5)  # best 0.9 and 0.95
    assert bars.accuracy[("SignGuard", "LIE")] == pytest.approx(95.0)
    assert bars.change("Mean", "LIE") == pytest.approx(70.0 - 92.5)
    with pytest.raises(ValueError, match="metric"):
        summary_figure.summary_bars(_entries(*_summary_runs()), metric="median")


def test_summary_bars_order_and_changes() -> None:
    bars = summary_figure.summary_bars(_entries(*_summary_runs()), metric="final")
    assert bars.defenses == ["Mean", "Multi-Krum", "SignGuard"]  # the report's order
    assert bars.attacks == ["No attack", "Sign-flip", "LIE"]  # no attack first, then the paper's order
    assert bars.accuracy[("Mean", "No attack")] == pytest.approx(91.0)
    assert bars.seeds[("Mean", "No attack")] == 2
    assert bars.change("Mean", "LIE") == pytest.approx(-31.2)
    assert bars.change("SignGuard", "LIE") == pytest.approx(1.0)
    assert bars.change("Multi-Krum", "LIE") is None
    assert bars.change("Mean", "No attack") is None


def test_plot_main_summary_annotates_drops(tmp_path: Path, figures) -> None:
    entries = _entries(*_summary_runs())
    path = summary_figure.plot_main_summary(entries, tmp_path / "main" / "summary.png")
    assert path == tmp_path / "main" / "summary.png"
    assert path.read_bytes().startswith(PNG_MAGIC)

    fig = summary_figure.main_summary_figure(entries, metric="final")
    [ax] = fig.axes
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == sorted(["\u221231.2", "+1.0", "\u22122.0"])
    assert "MNIST (CNN), IID, n = 50, 10 Byzantine (20%)" in fig.get_suptitle()
    # One no-attack level per defense that has one, and one bar colour per attack.
    [levels] = [c for c in ax.collections if c.get_label() == "no-attack level"]
    assert sorted(seg[0][1] for seg in levels.get_segments()) == pytest.approx([91.0, 92.0])
    containers = {c.get_label(): c for c in ax.containers}
    assert list(containers) == ["No attack", "Sign-flip", "LIE"]
    colors = {label: tuple(c.patches[0].get_facecolor()) for label, c in containers.items()}
    assert len(set(colors.values())) == 3
    assert [round(p.get_height(), 6) for p in containers["LIE"].patches] == [59.8, 30.0, 93.0]
    # Bars sit in the defense's group, no-attack bar leftmost.
    no_attack_x = [p.get_x() for p in containers["No attack"].patches]
    lie_x = [p.get_x() for p in containers["LIE"].patches]
    assert no_attack_x[0] < lie_x[0] < 0.5 and no_attack_x[-1] < lie_x[-1] < 2.5


def test_main_summary_needs_one_setting() -> None:
    mixed = _entries(make_result(defense="mean"), make_result(defense="mean", task="digits"))
    with pytest.raises(ValueError, match="2 settings"):
        summary_figure.summary_bars(mixed)
    with pytest.raises(ValueError, match="no runs"):
        summary_figure.summary_bars([])
    assert "plot_main_summary" in summary_figure.__all__
    assert math.isnan(summary_figure.summary_bars(_entries(make_result(accs=(NAN, NAN)))).accuracy[("Mean", "No attack")])
