"""PNG figures of the results (matplotlib, Agg backend), only for the data present.

Written by :func:`write_plots` (``signguard-sim report``):

* ``accuracy-<block>.png``: test accuracy over rounds, one panel per attack (shared y axis), one
  line per defense; a cell run with several seeds is drawn as its mean over the seeds with ± one
  standard deviation shaded.
* ``selection-<block>.png`` (the picture behind Table II): for the SignGuard family, the
  fraction of honest (solid) and of Byzantine (dashed) updates kept in the aggregate per round,
  one panel per attack; written when the block holds a SignGuard-family run under an attack.
* ``fraction-<group>.png`` (paper Fig. 4): accuracy drop vs Byzantine fraction, one panel per
  attack; the drop is measured from Mean without attack (the paper's benchmark) when such a run
  exists, else the best accuracy is plotted.
* ``timevarying-<block>.png`` (Fig. 5): accuracy over rounds under the time-varying attack, with
  Mean without attack as the dashed reference when present.
* ``noniid-<group>.png`` (Fig. 6): best accuracy vs the IID share s of the non-IID partition,
  one panel per attack.

Not written by :func:`write_plots`: the main job's one-glance bar chart
(:mod:`.summary_figure`).  Series, line styles, panels and legends come from :mod:`.figures`.

Each ``plot_*`` function saves a PNG and returns its path; the ``*_figure`` functions build the
same figure and return it open (the caller closes it), for inspection.  Figures carry no
timestamp or software version, so the same results give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .entries import DEFENSE_AWARE_ATTACKS, Block, Entry, group_blocks
from .figures import (
    Series,
    accuracy_limits,
    accuracy_series,
    by_attack,
    by_defense,
    defense_index,
    draw_curve,
    finish,
    legend_rank,
    line_styles,
    markevery_for,
    panel_grid,
    round_axis,
    save,
    seed_labels,
    selection_series,
)
from .defense_aware import defense_aware_block
from .heatmap import plot_heatmap, wants_heatmap

__all__ = [
    "accuracy_figure",
    "fraction_panels",
    "is_signguard_family",
    "plot_accuracy_curves",
    "plot_fraction",
    "plot_noniid",
    "plot_selection",
    "plot_time_varying",
    "selection_entries",
    "selection_figure",
    "write_plots",
]


# ---------------------------------------------------------------------------------------------
# Accuracy over rounds
# ---------------------------------------------------------------------------------------------


def accuracy_figure(block: Block) -> Figure:
    """Test accuracy over rounds: one panel per attack, one line per defense.

    All panels share one y range.  A cell with several seeds is drawn as the mean over its
    seeds with ± one standard deviation shaded; its legend label says how many seeds.

    Parameters
    ----------
    block : Block
        Runs that share every setting but defense, attack and seed.

    Returns
    -------
    matplotlib.figure.Figure
        Open; close it with ``matplotlib.pyplot.close``.
    """
    attacks = by_attack(block.entries)
    styles = line_styles(block.entries)
    fig, axes = panel_grid(len(attacks), sharey=True)
    cells: list[tuple[object, str, str, Series]] = []
    for ax, (_, members) in zip(axes, attacks):
        for label, runs in by_defense(members):
            series = accuracy_series(runs)
            if len(series):
                cells.append((ax, label, runs[0].defense, series))
    labels = seed_labels((label, series.n_seeds) for _, label, _, series in cells)
    for ax, label, defense, series in cells:
        draw_curve(ax, series, labels[label], styles[label], defense_index(defense))
    for ax, (attack, _) in zip(axes, attacks):
        ax.set_title(attack, fontsize=10)
        round_axis(ax)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("test accuracy (%)")
    if axes:
        axes[0].set_ylim(*accuracy_limits([series for *_, series in cells]))
    what = "Test accuracy during training, per attack"
    if any(series.n_seeds >= 2 for *_, series in cells):
        what += " (several seeds: mean, ± 1 std shaded)"
    return finish(fig, axes, what, block.title)


def plot_accuracy_curves(block: Block, path: Path) -> Path:
    """Write :func:`accuracy_figure` of ``block`` to ``path`` (PNG); returns the path."""
    return save(accuracy_figure(block), path)


# ---------------------------------------------------------------------------------------------
# Selection per round, SignGuard family (Table II over time)
# ---------------------------------------------------------------------------------------------


def is_signguard_family(defense: str) -> bool:
    """SignGuard, SignGuard-Sim, SignGuard-Dist and any other ``signguard*`` rule."""
    return defense.startswith("signguard")


def selection_entries(entries: Sequence[Entry]) -> list[Entry]:
    """The runs a selection figure shows: SignGuard family, not ablations, with Byzantine clients."""
    return [e for e in entries if is_signguard_family(e.defense) and e.ablation is None and e.num_byzantine > 0]


def selection_figure(block: Block) -> Figure:
    """Fraction of honest (solid) and Byzantine (dashed) updates kept per round.

    One panel per attack (shared y axis, 0 to 1), two lines per SignGuard-family defense,
    averaged over seeds where a cell has several.  Only :func:`selection_entries` of the block
    are drawn.

    Parameters
    ----------
    block : Block

    Returns
    -------
    matplotlib.figure.Figure
        Open; close it with ``matplotlib.pyplot.close``.
    """
    entries = selection_entries(block.entries)
    attacks = by_attack(entries)
    styles = line_styles(entries)
    fig, axes = panel_grid(max(len(attacks), 1), sharey=True)
    cells = [(ax, label, runs) for ax, (_, members) in zip(axes, attacks) for label, runs in by_defense(members)]
    labels = seed_labels((label, len(runs)) for _, label, runs in cells)
    legend: dict[str, tuple[object, str]] = {}
    for ax, label, runs in cells:
        honest, byzantine = selection_series(runs)
        slot = defense_index(runs[0].defense)
        for series, kind, linestyle in ((honest, "honest kept", "-"), (byzantine, "Byzantine kept", "--")):
            if len(series):
                # "_" keeps the line out of the legend; the legend explains colour and dash once.
                style = {**styles[label], "linestyle": linestyle}
                ax.plot(series.x, series.mean, label=f"_{label}: {kind}", markersize=3.5, linewidth=1.4,
                        markevery=markevery_for(len(series), slot), **style)
        proxy = Line2D([], [], markersize=3.5, linewidth=1.4, **{**styles[label], "linestyle": "-"})
        legend.setdefault(label, (proxy, labels[label]))
    for ax, (attack, _) in zip(axes, attacks):
        ax.set_title(attack, fontsize=10)
        round_axis(ax)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("fraction of updates kept")
    axes[0].set_ylim(-0.03, 1.03)
    handles = [legend[label] for label in sorted(legend, key=legend_rank)]
    handles += [
        (Line2D([], [], color="black", linestyle="-", linewidth=1.4), "honest kept"),
        (Line2D([], [], color="black", linestyle="--", linewidth=1.4), "Byzantine kept"),
    ]
    what = "Updates kept in the aggregate per round, SignGuard family (solid: honest, dashed: Byzantine)"
    return finish(fig, axes, what, block.title, handles=handles)


def plot_selection(block: Block, path: Path) -> Path:
    """Write :func:`selection_figure` of ``block`` to ``path`` (PNG); returns the path."""
    return save(selection_figure(block), path)


# ---------------------------------------------------------------------------------------------
# Paper figures 4-6
# ---------------------------------------------------------------------------------------------


def _baseline(entries: Sequence[Entry]) -> float | None:
    """Best accuracy (%) of Mean without attack (the paper's benchmark), averaged over runs."""
    runs = [e for e in entries if e.defense == "mean" and e.attack == "none" and not e.defense_params]
    vals = [100 * e.best_acc for e in runs if not math.isnan(e.best_acc)]
    return float(np.mean(vals)) if vals else None


def fraction_panels(entries: Sequence[Entry]) -> list[tuple[str, list[tuple[str, list[Entry]]]]]:
    """What Fig. 4 shows: ``[(attack label, [(defense label, runs), ...]), ...]`` in paper order.

    Only attacks run at two or more Byzantine fractions get a panel, and in it only the defenses
    run at two or more (a single point is no curve: a report that merges a Table I sweep at 20%
    with a fraction sweep of a few defenses would otherwise fill the figure with lone markers).
    Without any such attack, every attacked run is shown.
    """

    def fractions(runs: Sequence[Entry]) -> int:
        return len({e.num_byzantine for e in runs})

    attacked = [e for e in entries if e.attack != "none"] or list(entries)
    attacks = by_attack(attacked)
    swept = [(a, runs) for a, runs in attacks if fractions(runs) >= 2]
    panels = []
    for attack, runs in swept or attacks:
        defenses = by_defense(runs)
        if swept:
            defenses = [(d, r) for d, r in defenses if fractions(r) >= 2]
        panels.append((attack, defenses))
    return panels


def plot_fraction(group: Block, path: Path, baseline: float | None) -> Path:
    """Accuracy drop (or best accuracy) vs the Byzantine fraction: one panel per attack (Fig. 4)."""
    panels = fraction_panels(group.entries)
    styles = line_styles(group.entries)
    fig, axes = panel_grid(len(panels))
    for ax, (attack, defenses) in zip(axes, panels):
        for label, runs in defenses:
            points: dict[float, list[float]] = {}
            for e in runs:
                points.setdefault(100 * e.num_byzantine / e.num_clients, []).append(100 * e.best_acc)
            xs = sorted(points)
            ys = [float(np.mean(points[x])) for x in xs]
            if baseline is not None:
                ys = [baseline - y for y in ys]
            ax.plot(xs, ys, label=label, markersize=5, linewidth=1.4, **styles[label])
        ax.set_title(attack, fontsize=10)
        ax.set_xlabel("Byzantine clients (%)")
        ax.set_xticks(sorted({100 * e.num_byzantine / e.num_clients for _, runs in defenses for e in runs}))
        ax.set_ylabel("accuracy drop (points)" if baseline is not None else "best test accuracy (%)")
        ax.grid(alpha=0.3)
    what = (
        f"Accuracy drop vs Byzantine fraction (from Mean without attack, {baseline:.2f}%)"
        if baseline is not None
        else "Best test accuracy vs Byzantine fraction (no no-attack Mean run to measure a drop from)"
    )
    return save(finish(fig, axes, what, group.title), path)


def plot_time_varying(block: Block, path: Path, reference: Sequence[Entry]) -> Path:
    """Accuracy over rounds under the time-varying attack, one line per defense (Fig. 5)."""
    fig, axes = panel_grid(1, width=7.0, height=4.2)
    ax = axes[0]
    runs_tv = [e for e in block.entries if e.attack == "time_varying"]
    styles = line_styles(runs_tv)
    for label, runs in by_defense(runs_tv):
        series = accuracy_series(runs)
        draw_curve(ax, series, seed_labels([(label, series.n_seeds)])[label], styles[label], defense_index(runs[0].defense))
    if reference:
        series = accuracy_series(reference)
        ax.plot(series.x, series.mean, color="black", linestyle="--", linewidth=1.2, label="Mean, no attack")
    ax.set_ylabel("test accuracy (%)")
    round_axis(ax)
    return save(finish(fig, axes, "Test accuracy under the time-varying attack", block.title), path)


def plot_noniid(group: Block, path: Path) -> Path:
    """Best accuracy vs the IID share s of the non-IID partition: one panel per attack (Fig. 6)."""
    attacks = by_attack(group.entries)
    styles = line_styles(group.entries)
    fig, axes = panel_grid(len(attacks))
    for ax, (attack, members) in zip(axes, attacks):
        for label, runs in by_defense(members):
            points: dict[float, list[float]] = {}
            for e in runs:
                points.setdefault(float(e.config.get("partition_s", 0)), []).append(100 * e.best_acc)
            xs = sorted(points)
            ax.plot(xs, [float(np.mean(points[x])) for x in xs], label=label, markersize=5, linewidth=1.4, **styles[label])
        ax.set_title(attack, fontsize=10)
        ax.set_xlabel("IID share s (smaller = more skewed)")
        ax.set_xticks(sorted({float(e.config.get("partition_s", 0)) for e in members}))
        ax.set_ylabel("best test accuracy (%)")
        ax.grid(alpha=0.3)
    what = "Best test accuracy vs non-IID skew (s-fraction IID + 2 label shards per client)"
    return save(finish(fig, axes, what, group.title), path)


# ---------------------------------------------------------------------------------------------
# Every figure of a report
# ---------------------------------------------------------------------------------------------


def write_plots(entries: Sequence[Entry], out_dir: str | Path) -> list[Path]:
    """Every figure the results support, written into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    entries = [e for e in entries if e.ablation is None]
    written: list[Path] = []
    blocks = group_blocks(entries)
    for block in blocks:
        curves = [e for e in block.entries if e.attack != "time_varying"]
        if curves and any(len(accuracy_series([e])) > 1 for e in curves):
            sub = Block(block.key, curves, block.title, block.slug)
            written.append(plot_accuracy_curves(sub, out_dir / f"accuracy-{block.slug}.png"))
        selected = selection_entries(block.entries)
        if any(e.attack != "none" for e in selected):
            sub = Block(block.key, selected, block.title, block.slug)
            written.append(plot_selection(sub, out_dir / f"selection-{block.slug}.png"))
        if any(e.attack == "time_varying" for e in block.entries):
            reference = [e for e in block.entries if e.defense == "mean" and e.attack == "none" and not e.defense_params]
            written.append(plot_time_varying(block, out_dir / f"timevarying-{block.slug}.png", reference))
        table1 = Block(block.key, [e for e in block.entries if e.attack not in DEFENSE_AWARE_ATTACKS], block.title, block.slug)
        if table1.entries and wants_heatmap(table1):
            written.append(plot_heatmap(table1, out_dir / f"heatmap-{block.slug}.png"))
        aware = defense_aware_block(block)
        if aware is not None and wants_heatmap(aware):
            written.append(plot_heatmap(aware, out_dir / f"defense-aware-{block.slug}.png"))
    # Fig. 4: the same settings at two or more Byzantine counts.
    for group in group_blocks(entries, without=("num_byzantine",)):
        if len({e.num_byzantine for e in group.entries if e.attack != "none"}) >= 2:
            written.append(plot_fraction(group, out_dir / f"fraction-{group.slug}.png", _baseline(group.entries)))
    # Fig. 6: non-IID partitions at two or more values of s.
    shard = [e for e in entries if e.config.get("partition") == "shard"]
    for group in group_blocks(shard, without=("partition_s",)):
        if len({e.config.get("partition_s") for e in group.entries}) >= 2:
            written.append(plot_noniid(group, out_dir / f"noniid-{group.slug}.png"))
    return written
