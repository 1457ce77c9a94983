"""One picture of a whole Table I block: best accuracy per defense and attack, as a heatmap.

Ten defenses × nine attacks (or thirteen × ten for the defense-aware table) are read faster as
colours than as a table: each cell is the best test accuracy (mean over seeds), coloured from
chance (red) to the block's best (green), with the spread over seeds and, for the rules that
select updates, the share of malicious updates they kept.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .entries import Block, Entry, attack_order, defense_order  # noqa: E402
from .figures import save  # noqa: E402

__all__ = ["MIN_SIDE", "heatmap_cells", "heatmap_figure", "plot_heatmap", "wants_heatmap"]

MIN_SIDE = 4
"""A block gets a heatmap when it has at least this many defenses and this many attacks."""


def selecting_defenses(entries: Sequence[Entry]) -> set[str]:
    """Defense labels that dropped at least one update in some run of ``entries``.

    Read from the recorded selection rather than from a list of rule names, so that a new rule
    (or a composition such as ``nnm_*``) is classified by what it did: rules that aggregate every
    update (mean, median, GeoMed, centered clipping, ...) keep 100% of both kinds in every run and
    get no "% kept" figure, which would say nothing about them.
    """
    return {
        e.defense_label()
        for e in entries
        if e.summary["honest_selected_rate"] < 1.0 or e.summary["byzantine_selected_rate"] < 1.0
    }


def _labels(entries: Sequence[Entry], key, label) -> list[str]:
    out: dict[str, tuple] = {}
    for e in entries:
        out.setdefault(label(e), key(e))
    return sorted(out, key=out.__getitem__)


def heatmap_cells(block: Block) -> tuple[list[str], list[str], dict[tuple[str, str], list[Entry]]]:
    """Row labels (defenses), column labels (attacks) and the runs of every filled cell."""
    entries = [e for e in block.entries if e.attack != "time_varying" and e.ablation is None]
    rows = _labels(entries, defense_order, Entry.defense_label)
    cols = _labels(entries, attack_order, Entry.attack_label)
    cells: dict[tuple[str, str], list[Entry]] = {}
    for e in entries:
        cells.setdefault((e.defense_label(), e.attack_label()), []).append(e)
    return rows, cols, cells


def wants_heatmap(block: Block) -> bool:
    rows, cols, _ = heatmap_cells(block)
    return len(rows) >= MIN_SIDE and len(cols) >= MIN_SIDE


def heatmap_figure(block: Block, *, chance: float | None = None) -> Figure:
    """The block's heatmap (``chance``: the colour scale's red end, default 100 / classes)."""
    rows, cols, cells = heatmap_cells(block)
    if chance is None:
        from clients.tasks import get_task

        try:
            chance = 100.0 / get_task(block.task).num_classes
        except (KeyError, ValueError):
            chance = 10.0
    selecting = selecting_defenses([e for runs in cells.values() for e in runs])
    values = np.full((len(rows), len(cols)), np.nan)
    text: dict[tuple[int, int], str] = {}
    for (r, c), runs in cells.items():
        i, j = rows.index(r), cols.index(c)
        accs = [100 * e.best_acc for e in runs]
        values[i, j] = statistics.fmean(accs)
        line = f"{values[i, j]:.1f}"
        if len(accs) > 1:
            line += f"±{statistics.stdev(accs):.1f}"
        if runs[0].attack != "none" and r in selecting:
            kept = statistics.fmean(float(e.summary["byzantine_selected_rate"]) for e in runs)
            line += f"\n{100 * kept:.0f}% kept"
        text[i, j] = line
    top = np.nanmax(values) if np.isfinite(values).any() else 100.0
    fig, ax = plt.subplots(figsize=(max(8.0, 2.0 + 1.05 * len(cols)), 1.4 + 0.55 * len(rows)))
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="#eeeeee")
    ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=chance, vmax=max(top, chance + 1), aspect="auto")
    for (i, j), line in text.items():
        ax.text(j, i, line, ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(cols)), cols, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    seeds = max(len(runs) for runs in cells.values())
    note = f"mean ± std over {seeds} seeds where a cell has several" if seeds > 1 else "one seed per cell"
    ax.set_title(f"Best test accuracy (%): {block.title}\n{note}; '% kept': share of malicious updates aggregated",
                 fontsize=9)
    fig.tight_layout()
    return fig


def plot_heatmap(block: Block, path: Path) -> Path:
    return save(heatmap_figure(block), path)
