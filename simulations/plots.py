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

Not written by :func:`write_plots`: :func:`plot_main_summary`, the main job's one-glance bar
chart of final accuracy per defense and attack.

Each ``plot_*`` function saves a PNG and returns its path; the ``*_figure`` functions build the
same figure and return it open (the caller closes it), for inspection.  Figures carry no
timestamp or software version, so the same results give the same bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from . import paper_numbers as paper  # noqa: E402
from .experiment import RoundRecord  # noqa: E402
from .report import Block, Entry, _attack_order, _defense_order, group_blocks, setting_text  # noqa: E402

__all__ = [
    "write_plots",
    "Series",
    "accuracy_series",
    "selection_series",
    "is_signguard_family",
    "selection_entries",
    "accuracy_figure",
    "plot_accuracy_curves",
    "selection_figure",
    "plot_selection",
    "SummaryBars",
    "summary_bars",
    "main_summary_figure",
    "plot_main_summary",
    "fraction_panels",
    "plot_fraction",
    "plot_time_varying",
    "plot_noniid",
]

_DEFENSE_ORDER = list(paper.DEFENSE_NAMES)
_ATTACK_ORDER = list(paper.ATTACK_NAMES)
_COLORS = {
    "mean": "#7f7f7f",
    "trimmed_mean": "#9467bd",
    "median": "#2ca02c",
    "geomed": "#8c564b",
    "krum": "#bcbd22",
    "multi_krum": "#ff7f0e",
    "bulyan": "#e377c2",
    "dnc": "#17becf",
    "signguard": "#d62728",
    "signguard_sim": "#1f77b4",
    "signguard_dist": "#6a0dad",
}
_MARKERS = "osD^vP*Xhp<>"
# Cycled by the defense's position: with 4 styles the SignGuard family (positions 8-10) comes out
# solid, dashed and dash-dotted, and no two neighbours in the legend share a style.
_LINESTYLES: tuple = ("-", "--", "-.", ":")
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
_MARKERS_PER_LINE = 10
_DPI = 110
_MINUS = "\u2212"


# ---------------------------------------------------------------------------------------------
# Series: per-round values averaged over the seeds of one cell
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """A per-round quantity of one cell, averaged over its seeds.

    Attributes
    ----------
    x : numpy.ndarray
        Rounds at which at least one seed has a value (ascending).
    mean : numpy.ndarray
        Mean over the seeds that have a value at each round.
    std : numpy.ndarray
        Sample standard deviation over those seeds (``ddof=1``, as the report's ``mean±std``); 0 where
        only one seed has a value.
    count : numpy.ndarray
        Number of seeds with a value at each round.
    seeds : tuple of int
        The seeds of the runs, sorted.
    """

    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray
    seeds: tuple[int, ...] = ()

    @property
    def n_seeds(self) -> int:
        """Number of runs (seeds) behind the series."""
        return len(self.seeds)

    def __len__(self) -> int:
        return len(self.x)


def _series(
    entries: Sequence[Entry],
    value: Callable[[RoundRecord], float],
    initial: Callable[[Entry], float] | None = None,
) -> Series:
    """Mean and std over ``entries`` of ``value(record)`` per round; NaN values are skipped.

    Parameters
    ----------
    entries : sequence of Entry
        The runs of one cell (same settings, different seeds).
    value : callable
        Maps a round record to the plotted value (NaN where undefined).
    initial : callable, optional
        Maps a run to its value at round 0 (before training), if any.
    """
    per_round: dict[int, list[float]] = {}
    for entry in entries:
        if initial is not None:
            v = initial(entry)
            if not math.isnan(v):
                per_round.setdefault(0, []).append(v)
        for record in entry.result.rounds:
            v = value(record)
            if not math.isnan(v):
                per_round.setdefault(record.round, []).append(v)
    rounds = sorted(per_round)
    return Series(
        x=np.array(rounds, dtype=float),
        mean=np.array([np.mean(per_round[r]) for r in rounds], dtype=float),
        std=np.array([np.std(per_round[r], ddof=1) if len(per_round[r]) > 1 else 0.0 for r in rounds], dtype=float),
        count=np.array([len(per_round[r]) for r in rounds], dtype=int),
        seeds=tuple(sorted(int(e.config.get("seed", 0)) for e in entries)),
    )


def accuracy_series(entries: Sequence[Entry]) -> Series:
    """Test accuracy (%) per evaluated round, mean ± std over the seeds of one cell.

    Round 0 is the initial model where its accuracy was measured; rounds that were not
    evaluated (NaN accuracy) are left out.

    Parameters
    ----------
    entries : sequence of Entry
        The runs of one cell (same defense, attack and settings; the seeds differ).

    Returns
    -------
    Series
    """
    return _series(entries, lambda r: 100 * r.test_acc, lambda e: 100 * e.result.initial_acc)


def selection_series(entries: Sequence[Entry]) -> tuple[Series, Series]:
    """Fractions of honest and of Byzantine updates kept per round, averaged over seeds.

    Parameters
    ----------
    entries : sequence of Entry
        The runs of one cell.

    Returns
    -------
    (Series, Series)
        ``honest_selected_rate`` and ``byzantine_selected_rate`` per round (rounds where a
        rate is undefined, NaN in the records, are left out of that series).
    """
    honest = _series(entries, lambda r: r.honest_selected_rate)
    byzantine = _series(entries, lambda r: r.byzantine_selected_rate)
    return honest, byzantine


# ---------------------------------------------------------------------------------------------
# Styles, panels, legends
# ---------------------------------------------------------------------------------------------


def _defense_index(defense: str) -> int:
    return _DEFENSE_ORDER.index(defense) if defense in _DEFENSE_ORDER else len(_DEFENSE_ORDER)


def _styles(entries: Sequence[Entry]) -> dict[str, dict]:
    """Line style per defense label for one figure.

    Every defense keeps its colour and marker in every figure, and its line style is cycled by
    its position in the paper's order.  A parameterised variant (``"SignGuard [lower=0.2]"``)
    has its defense's colour, hollow markers and the next line style in the cycle.
    """
    labels: dict[str, str] = {}
    for e in entries:
        labels.setdefault(e.defense_label(), e.defense)
    styles: dict[str, dict] = {}
    for label, defense in labels.items():
        base = paper.DEFENSE_NAMES.get(defense, defense)
        variants = sorted(l for l, d in labels.items() if d == defense and l != base)
        variant = 0 if label == base else 1 + variants.index(label)
        i = _defense_index(defense)
        style = {
            "color": _COLORS.get(defense, "#333333"),
            "marker": _MARKERS[i % len(_MARKERS)],
            "linestyle": _LINESTYLES[(i + variant) % len(_LINESTYLES)],
        }
        if variant:
            style["markerfacecolor"] = "white"
        styles[label] = style
    return styles


def _markevery(n: int, slot: int) -> tuple[int, int]:
    """``markevery`` for a line of ``n`` points: every point up to 2 × :data:`_MARKERS_PER_LINE`
    points, else every ``n // _MARKERS_PER_LINE``-th, starting at an offset set by ``slot``.

    The first marker's offset spreads neighbouring slots over the step (golden-ratio
    sequence), so that lines lying on top of each other still show every marker.
    """
    step = max(1, n // _MARKERS_PER_LINE)
    return (int((slot * 0.618034) % 1 * step), step)


def _legend_rank(label: str) -> tuple:
    names = [paper.DEFENSE_NAMES[d] for d in _DEFENSE_ORDER]
    base = re.split(r" \[| \(|: ", label)[0]
    return (names.index(base) if base in names else len(names), label)


def _attack_key(entry: Entry) -> tuple:
    return (_ATTACK_ORDER.index(entry.attack) if entry.attack in _ATTACK_ORDER else len(_ATTACK_ORDER), entry.attack_label())


def _defense_key(entry: Entry) -> tuple:
    return (_defense_index(entry.defense), entry.defense_label())


def _by(entries: Sequence[Entry], label) -> dict[str, list[Entry]]:
    out: dict[str, list[Entry]] = {}
    for e in entries:
        out.setdefault(label(e), []).append(e)
    return out


def _by_attack(entries: Sequence[Entry]) -> list[tuple[str, list[Entry]]]:
    return sorted(_by(entries, Entry.attack_label).items(), key=lambda kv: _attack_key(kv[1][0]))


def _by_defense(entries: Sequence[Entry]) -> list[tuple[str, list[Entry]]]:
    return sorted(_by(entries, Entry.defense_label).items(), key=lambda kv: _defense_key(kv[1][0]))


def _panels(n: int, *, width: float = 4.6, height: float = 3.6, sharey: bool = False):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(max(width * cols, 7.5), height * rows + 1.2), squeeze=False, sharey=sharey
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _finish(
    fig: Figure,
    axes,
    what: str,
    setting: str,
    *,
    rank: Callable[[str], object] = _legend_rank,
    handles: Sequence[tuple[object, str]] | None = None,
) -> Figure:
    """Title, one legend below the panels and the layout.

    The legend holds ``handles`` (``(artist, label)`` pairs, in order) when given, else every
    labelled artist of ``axes`` once, ordered by ``rank``.
    """
    if handles is None:
        found: dict[str, object] = {}
        for ax in axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                found.setdefault(label, handle)
        handles = [(found[label], label) for label in sorted(found, key=rank)]
    fig.suptitle(f"{what}\n{setting}", fontsize=11)
    width, height = fig.get_size_inches()
    legend_rows = 0
    if handles:
        # As many columns (at most 6) as the longest label leaves room for.
        entry = 0.6 + 0.075 * max(len(label) for _, label in handles)
        ncol = max(1, min(len(handles), 6, int(0.95 * width / entry)))
        legend_rows = math.ceil(len(handles) / ncol)
        fig.legend([h for h, _ in handles], [label for _, label in handles], loc="lower center", ncol=ncol,
                   frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, (0.3 * legend_rows + 0.05) / height, 1, 1))
    return fig


def _save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG without timestamp or software version, and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=_DPI, metadata={"Software": None})
    finally:
        plt.close(fig)
    return path


def _seed_labels(cells) -> dict[str, str]:
    """Legend label per line label, given ``(label, seeds)`` of every cell drawn in one figure.

    A label whose cells all have one seed stays as it is; otherwise it says how many seeds its
    cells have (``"Mean (3 seeds)"``, ``"Mean (1–3 seeds)"``), once for the whole figure.
    """
    counts: dict[str, set[int]] = {}
    for label, n in cells:
        counts.setdefault(label, set()).add(n)
    out = {}
    for label, ns in counts.items():
        lo, hi = min(ns), max(ns)
        out[label] = label if hi <= 1 else f"{label} ({hi} seeds)" if lo == hi else f"{label} ({lo}–{hi} seeds)"
    return out


def _draw_curve(ax, series: Series, label: str, style: dict, slot: int) -> None:
    """The mean line; with two or more seeds also the ± one standard deviation band."""
    ax.plot(series.x, series.mean, label=label, markersize=3.5, linewidth=1.4, markevery=_markevery(len(series), slot), **style)
    if series.n_seeds >= 2:
        ax.fill_between(series.x, series.mean - series.std, series.mean + series.std, color=style["color"], alpha=0.2, linewidth=0, label="_band")


def _round_axis(ax) -> None:
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    ax.grid(alpha=0.3)


def _accuracy_limits(series: Sequence[Series]) -> tuple[float, float]:
    """One y range (%) for every panel: the data's range rounded out to tens, within 0–100."""
    lows = [float(np.min(s.mean - s.std)) for s in series if len(s)]
    highs = [float(np.max(s.mean + s.std)) for s in series if len(s)]
    if not lows:
        return 0.0, 100.0
    lo = max(0.0, 10 * math.floor(min(lows) / 10))
    hi = min(100.0, 10 * math.ceil(max(highs) / 10))
    if hi - lo < 10:
        lo, hi = max(0.0, hi - 10), max(hi, 10.0)
    pad = 0.02 * (hi - lo)
    return lo - pad, hi + pad


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
    attacks = _by_attack(block.entries)
    styles = _styles(block.entries)
    fig, axes = _panels(len(attacks), sharey=True)
    cells: list[tuple[object, str, str, Series]] = []
    for ax, (_, members) in zip(axes, attacks):
        for label, runs in _by_defense(members):
            series = accuracy_series(runs)
            if len(series):
                cells.append((ax, label, runs[0].defense, series))
    labels = _seed_labels((label, series.n_seeds) for _, label, _, series in cells)
    for ax, label, defense, series in cells:
        _draw_curve(ax, series, labels[label], styles[label], _defense_index(defense))
    for ax, (attack, _) in zip(axes, attacks):
        ax.set_title(attack, fontsize=10)
        _round_axis(ax)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("test accuracy (%)")
    if axes:
        axes[0].set_ylim(*_accuracy_limits([series for *_, series in cells]))
    what = "Test accuracy during training, per attack"
    if any(series.n_seeds >= 2 for *_, series in cells):
        what += " (several seeds: mean, ± 1 std shaded)"
    return _finish(fig, axes, what, block.title)


def plot_accuracy_curves(block: Block, path: Path) -> Path:
    """Write :func:`accuracy_figure` of ``block`` to ``path`` (PNG); returns the path."""
    return _save(accuracy_figure(block), path)


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
    attacks = _by_attack(entries)
    styles = _styles(entries)
    fig, axes = _panels(max(len(attacks), 1), sharey=True)
    cells = [(ax, label, runs) for ax, (_, members) in zip(axes, attacks) for label, runs in _by_defense(members)]
    labels = _seed_labels((label, len(runs)) for _, label, runs in cells)
    legend: dict[str, tuple[object, str]] = {}
    for ax, label, runs in cells:
        honest, byzantine = selection_series(runs)
        slot = _defense_index(runs[0].defense)
        for series, kind, linestyle in ((honest, "honest kept", "-"), (byzantine, "Byzantine kept", "--")):
            if len(series):
                # "_" keeps the line out of the legend; the legend explains colour and dash once.
                style = {**styles[label], "linestyle": linestyle}
                ax.plot(series.x, series.mean, label=f"_{label}: {kind}", markersize=3.5, linewidth=1.4,
                        markevery=_markevery(len(series), slot), **style)
        proxy = Line2D([], [], markersize=3.5, linewidth=1.4, **{**styles[label], "linestyle": "-"})
        legend.setdefault(label, (proxy, labels[label]))
    for ax, (attack, _) in zip(axes, attacks):
        ax.set_title(attack, fontsize=10)
        _round_axis(ax)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("fraction of updates kept")
    axes[0].set_ylim(-0.03, 1.03)
    handles = [legend[label] for label in sorted(legend, key=_legend_rank)]
    handles += [
        (Line2D([], [], color="black", linestyle="-", linewidth=1.4), "honest kept"),
        (Line2D([], [], color="black", linestyle="--", linewidth=1.4), "Byzantine kept"),
    ]
    what = "Updates kept in the aggregate per round, SignGuard family (solid: honest, dashed: Byzantine)"
    return _finish(fig, axes, what, block.title, handles=handles)


def plot_selection(block: Block, path: Path) -> Path:
    """Write :func:`selection_figure` of ``block`` to ``path`` (PNG); returns the path."""
    return _save(selection_figure(block), path)


# ---------------------------------------------------------------------------------------------
# The main job's summary: best accuracy per defense and attack
# ---------------------------------------------------------------------------------------------


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
    for e in sorted(entries, key=_defense_order):
        if e.defense_label() not in defenses:
            defenses.append(e.defense_label())
    ordered = sorted(entries, key=lambda e: (e.attack != "none" or bool(e.attack_params), _attack_order(e)))
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
    return _finish(fig, [ax], what, setting_text(entries[0].config), rank=lambda l: order.index(l) if l in order else len(order))


def plot_main_summary(entries: Sequence[Entry], path: str | Path, metric: str = "best") -> Path:
    """Write :func:`main_summary_figure` of ``entries`` to ``path`` (PNG); returns the path.

    The main job's one-glance picture: which defenses keep their no-attack accuracy under the
    attacks.  Not part of :func:`write_plots`.
    """
    return _save(main_summary_figure(entries, metric), Path(path))


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
    by_attack = _by_attack(attacked)
    swept = [(a, runs) for a, runs in by_attack if fractions(runs) >= 2]
    panels = []
    for attack, runs in swept or by_attack:
        defenses = _by_defense(runs)
        if swept:
            defenses = [(d, r) for d, r in defenses if fractions(r) >= 2]
        panels.append((attack, defenses))
    return panels


def plot_fraction(group: Block, path: Path, baseline: float | None) -> Path:
    """Accuracy drop (or best accuracy) vs the Byzantine fraction: one panel per attack (Fig. 4)."""
    panels = fraction_panels(group.entries)
    styles = _styles(group.entries)
    fig, axes = _panels(len(panels))
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
    return _save(_finish(fig, axes, what, group.title), path)


def plot_time_varying(block: Block, path: Path, reference: Sequence[Entry]) -> Path:
    """Accuracy over rounds under the time-varying attack, one line per defense (Fig. 5)."""
    fig, axes = _panels(1, width=7.0, height=4.2)
    ax = axes[0]
    runs_tv = [e for e in block.entries if e.attack == "time_varying"]
    styles = _styles(runs_tv)
    for label, runs in _by_defense(runs_tv):
        series = accuracy_series(runs)
        _draw_curve(ax, series, _seed_labels([(label, series.n_seeds)])[label], styles[label], _defense_index(runs[0].defense))
    if reference:
        series = accuracy_series(reference)
        ax.plot(series.x, series.mean, color="black", linestyle="--", linewidth=1.2, label="Mean, no attack")
    ax.set_ylabel("test accuracy (%)")
    _round_axis(ax)
    return _save(_finish(fig, axes, "Test accuracy under the time-varying attack", block.title), path)


def plot_noniid(group: Block, path: Path) -> Path:
    """Best accuracy vs the IID share s of the non-IID partition: one panel per attack (Fig. 6)."""
    attacks = _by_attack(group.entries)
    styles = _styles(group.entries)
    fig, axes = _panels(len(attacks))
    for ax, (attack, members) in zip(axes, attacks):
        for label, runs in _by_defense(members):
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
    return _save(_finish(fig, axes, what, group.title), path)


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
