"""The main job's one-glance figure: best (or final) test accuracy per defense and attack.

:func:`plot_main_summary` (``signguard-sim main``) draws grouped bars, one group per defense and
one bar per attack, each attacked bar annotated with its change from the defense's own
no-attack bar.  Not part of a report's figures (:func:`.plots.write_plots`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .entries import Entry, attack_order, defense_order, setting_text  # noqa: E402
from .figures import finish, save  # noqa: E402

__all__ = ["SummaryBars", "summary_bars", "main_summary_figure", "plot_main_summary"]

_ATTACK_COLORS = {
    "none": "#b0b0b0",
    "random": "#8c564b",
    "noise": "#e377c2",
    "label_flip": "#bcbd22",
    "byzmean": "#17becf",
    "sign_flip": "#1f77b4",
    "lie": "#d62728",
    "min_max": "#ff7f0e",
    "min_sum": "#9467bd",
    "reverse_scaling": "#2ca02c",
    "time_varying": "#7f7f7f",
    "lie_local": "#f7b6d2",
}
_MINUS = "\u2212"




@dataclass(frozen=True)
class SummaryBars:
    """What :func:`main_summary_figure` draws.

    Attributes
    ----------
    defenses : list of str
        Defense labels in the report's order (the bar groups).
    attacks : list of str
        Attack labels in the report's order, no attack first (the bars of a group).
    attack_names : dict
        Attack label -> attack name (``"lie"``), for the colours.
    accuracy : dict
        ``(defense, attack)`` -> best (or final) test accuracy (%), mean over the cell's seeds.
    seeds : dict
        ``(defense, attack)`` -> number of runs behind the bar.
    baseline : str or None
        Label of the no-attack bars, when there are any.
    """

    defenses: list[str]
    attacks: list[str]
    attack_names: dict[str, str]
    accuracy: dict[tuple[str, str], float]
    seeds: dict[tuple[str, str], int]
    baseline: str | None
    metric: str = "best"

    def no_attack(self, defense: str) -> float | None:
        """The defense's own no-attack accuracy (%), if it was run without attack."""
        if self.baseline is None:
            return None
        value = self.accuracy.get((defense, self.baseline))
        return None if value is None or math.isnan(value) else value

    def change(self, defense: str, attack: str) -> float | None:
        """Points gained (negative: lost) under ``attack`` relative to the defense's no-attack bar."""
        ref = self.no_attack(defense)
        value = self.accuracy.get((defense, attack))
        if ref is None or value is None or math.isnan(value) or attack == self.baseline:
            return None
        return value - ref


def _change_text(change: float) -> str:
    """``−31.2`` (typographic minus) or ``+0.4``."""
    return f"{change:+.1f}".replace("-", _MINUS)


def summary_bars(entries: Sequence[Entry], metric: str = "best") -> SummaryBars:
    """Accuracy (%) per defense × attack, mean over seeds, for :func:`plot_main_summary`.

    Parameters
    ----------
    entries : sequence of Entry
        Runs of one setting (one block); ablation runs are left out.
    metric : {"best", "final"}
        Best test accuracy over the run (the paper's Table I metric, and what the main job's
        summary judges by) or the last evaluation.

    Raises
    ------
    ValueError
        When there is no run, or the runs span several settings (blocks).
    """
    if metric not in ("best", "final"):
        raise ValueError(f"metric must be 'best' or 'final', got {metric!r}")
    entries = [e for e in entries if e.ablation is None]
    if not entries:
        raise ValueError("no runs to summarise")
    blocks = {e.block_key() for e in entries}
    if len(blocks) > 1:
        raise ValueError(f"the runs span {len(blocks)} settings; summarise one block's runs at a time")
    defenses: list[str] = []
    for e in sorted(entries, key=defense_order):
        if e.defense_label() not in defenses:
            defenses.append(e.defense_label())
    ordered = sorted(entries, key=lambda e: (e.attack != "none" or bool(e.attack_params), attack_order(e)))
    attacks: list[str] = []
    names: dict[str, str] = {}
    for e in ordered:
        if e.attack_label() not in attacks:
            attacks.append(e.attack_label())
            names[e.attack_label()] = e.attack
    baseline = next((e.attack_label() for e in entries if e.attack == "none" and not e.attack_params), None)
    accuracy: dict[tuple[str, str], float] = {}
    seeds: dict[tuple[str, str], int] = {}
    for e in entries:
        seeds[(e.defense_label(), e.attack_label())] = seeds.get((e.defense_label(), e.attack_label()), 0) + 1
    for key in seeds:
        vals = [100 * getattr(e.result, f"{metric}_acc") for e in entries if (e.defense_label(), e.attack_label()) == key]
        vals = [v for v in vals if not math.isnan(v)]
        accuracy[key] = float(np.mean(vals)) if vals else float("nan")
    return SummaryBars(defenses, attacks, names, accuracy, seeds, baseline, metric)


def _attack_color(name: str, i: int) -> str:
    if name in _ATTACK_COLORS:
        return _ATTACK_COLORS[name]
    return plt.get_cmap("tab10")(i % 10)


def main_summary_figure(entries: Sequence[Entry], metric: str = "best") -> Figure:
    """Grouped bars of best (or final) test accuracy: x = defense, one bar per attack (no attack first).

    Each attacked bar is annotated with its change in points from the defense's own no-attack
    bar (``−31.2``), and a black line across each group marks that no-attack level.  Cells with
    several seeds show their mean.

    Parameters
    ----------
    entries : sequence of Entry
        Runs of one setting (see :func:`summary_bars`).

    Returns
    -------
    matplotlib.figure.Figure
        Open; close it with ``matplotlib.pyplot.close``.
    """
    bars = summary_bars(entries, metric)
    entries = [e for e in entries if e.ablation is None]
    n_def, n_att = len(bars.defenses), len(bars.attacks)
    group = 0.8
    width = group / n_att
    fig_width = min(24.0, max(7.5, 0.42 * n_def * n_att + 2.0))
    vertical = n_att > 3
    fig, ax = plt.subplots(figsize=(fig_width, 5.4 if fig_width <= 12 else 7.0))
    top = 100.0
    for j, attack in enumerate(bars.attacks):
        present = [(i, d) for i, d in enumerate(bars.defenses) if not math.isnan(bars.accuracy.get((d, attack), math.nan))]
        xs = [i - group / 2 + (j + 0.5) * width for i, _ in present]
        heights = [bars.accuracy[(d, attack)] for _, d in present]
        ax.bar(xs, heights, width=width * 0.92, color=_attack_color(bars.attack_names[attack], j), label=attack, zorder=2)
        for x, y, (_, defense) in zip(xs, heights, present):
            change = bars.change(defense, attack)
            if change is None:
                continue
            # Above the bar, or above the no-attack line where the bar reaches close to it.
            ref = y - change
            text_y = (max(y, ref) if ref - y < (12 if vertical else 4) else y) + 1.0
            ax.text(x, text_y, _change_text(change), ha="center", va="bottom", fontsize=8,
                    rotation=90 if vertical else 0, color="#b00000" if change <= -1 else "#333333", zorder=4)
            top = max(top, text_y + (9 if vertical else 4))
    levels = [(i, bars.no_attack(d)) for i, d in enumerate(bars.defenses) if bars.no_attack(d) is not None]
    if levels:
        ax.hlines([y for _, y in levels], [i - group / 2 for i, _ in levels], [i + group / 2 for i, _ in levels],
                  colors="black", linestyles="--", linewidth=1.1, label="no-attack level", zorder=3)
    ax.set_xticks(range(n_def))
    ax.set_xticklabels(bars.defenses, rotation=30 if n_def > 6 else 0, ha="right" if n_def > 6 else "center")
    ax.set_xlim(-0.6, n_def - 0.4)
    ax.set_ylim(0, top + 2)
    ax.set_ylabel(f"{metric} test accuracy (%)")
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.set_axisbelow(True)
    seeds = sorted({int(e.config.get("seed", 0)) for e in entries})
    what = f"{metric.capitalize()} test accuracy (%) per defense and attack\nover each attacked bar: change (points) from the defense's no-attack bar"
    if len(seeds) > 1:
        what += f"\nmean over seeds {', '.join(map(str, seeds))} where a cell has several"
    order = bars.attacks + ["no-attack level"]
    return finish(fig, [ax], what, setting_text(entries[0].config), rank=lambda l: order.index(l) if l in order else len(order))


def plot_main_summary(entries: Sequence[Entry], path: str | Path, metric: str = "best") -> Path:
    """Write :func:`main_summary_figure` of ``entries`` to ``path`` (PNG); returns the path.

    The main job's one-glance picture: which defenses keep their no-attack accuracy under the
    attacks.  Not part of :func:`write_plots`.
    """
    return save(main_summary_figure(entries, metric), Path(path))

