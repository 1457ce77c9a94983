"""What the figures of :mod:`.plots` and :mod:`.summary_figure` share: per-round series
averaged over seeds, one look (colour, marker, dash) per defense, panels, legend and saving.

Figures carry no timestamp or software version, so the same results give the same bytes.
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
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..engine import RoundRecord  # noqa: E402
from . import paper_numbers as paper  # noqa: E402
from .entries import Entry  # noqa: E402

__all__ = [
    "Series",
    "accuracy_series",
    "selection_series",
    "defense_index",
    "line_styles",
    "markevery_for",
    "legend_rank",
    "by_attack",
    "by_defense",
    "panel_grid",
    "finish",
    "save",
    "seed_labels",
    "draw_curve",
    "round_axis",
    "accuracy_limits",
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
    "centered_clipping": "#393b79",
    # Nearest-neighbour mixing + a rule: a lighter shade of that rule's colour.
    "nnm_multi_krum": "#ffbb78",
    "nnm_trimmed_mean": "#c5b0d5",
    "nnm_median": "#98df8a",
    "nnm_geomed": "#c49c94",
    "nnm_centered_clipping": "#6b6ecf",
}
# One marker per registered defense (17 today), so marker + line style tell every pair apart.
_MARKERS = "osD^vP*Xhp<>d8H12"
# Cycled by the defense's position: with 4 styles the SignGuard family (positions 8-10) comes out
# solid, dashed and dash-dotted, and no two neighbours in the legend share a style.
_LINESTYLES: tuple = ("-", "--", "-.", ":")
_MARKERS_PER_LINE = 10
_DPI = 110


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
        rate is undefined, NaN in the records, and rounds of a diverged model, whose
        non-finite replies never reached the rule (:attr:`RoundRecord.judged`), are left out).
    """
    honest = _series(entries, lambda r: r.honest_selected_rate if r.judged else math.nan)
    byzantine = _series(entries, lambda r: r.byzantine_selected_rate if r.judged else math.nan)
    return honest, byzantine


# ---------------------------------------------------------------------------------------------
# Styles, panels, legends
# ---------------------------------------------------------------------------------------------


def defense_index(defense: str) -> int:
    return _DEFENSE_ORDER.index(defense) if defense in _DEFENSE_ORDER else len(_DEFENSE_ORDER)


def line_styles(entries: Sequence[Entry]) -> dict[str, dict]:
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
        i = defense_index(defense)
        style = {
            "color": _COLORS.get(defense, "#333333"),
            "marker": _MARKERS[i % len(_MARKERS)],
            "linestyle": _LINESTYLES[(i + variant) % len(_LINESTYLES)],
        }
        if variant:
            style["markerfacecolor"] = "white"
        styles[label] = style
    return styles


def markevery_for(n: int, slot: int) -> tuple[int, int]:
    """``markevery`` for a line of ``n`` points: every point up to 2 × :data:`_MARKERS_PER_LINE`
    points, else every ``n // _MARKERS_PER_LINE``-th, starting at an offset set by ``slot``.

    The first marker's offset spreads neighbouring slots over the step (golden-ratio
    sequence), so that lines lying on top of each other still show every marker.
    """
    step = max(1, n // _MARKERS_PER_LINE)
    return (int((slot * 0.618034) % 1 * step), step)


def legend_rank(label: str) -> tuple:
    names = [paper.DEFENSE_NAMES[d] for d in _DEFENSE_ORDER]
    base = re.split(r" \[| \(|: ", label)[0]
    return (names.index(base) if base in names else len(names), label)


def _attack_key(entry: Entry) -> tuple:
    return (_ATTACK_ORDER.index(entry.attack) if entry.attack in _ATTACK_ORDER else len(_ATTACK_ORDER), entry.attack_label())


def _defense_key(entry: Entry) -> tuple:
    return (defense_index(entry.defense), entry.defense_label())


def _by(entries: Sequence[Entry], label) -> dict[str, list[Entry]]:
    out: dict[str, list[Entry]] = {}
    for e in entries:
        out.setdefault(label(e), []).append(e)
    return out


def by_attack(entries: Sequence[Entry]) -> list[tuple[str, list[Entry]]]:
    return sorted(_by(entries, Entry.attack_label).items(), key=lambda kv: _attack_key(kv[1][0]))


def by_defense(entries: Sequence[Entry]) -> list[tuple[str, list[Entry]]]:
    return sorted(_by(entries, Entry.defense_label).items(), key=lambda kv: _defense_key(kv[1][0]))


def panel_grid(n: int, *, width: float = 4.6, height: float = 3.6, sharey: bool = False):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(max(width * cols, 7.5), height * rows + 1.2), squeeze=False, sharey=sharey
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def finish(
    fig: Figure,
    axes,
    what: str,
    setting: str,
    *,
    rank: Callable[[str], object] = legend_rank,
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


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG without timestamp or software version, and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=_DPI, metadata={"Software": None})
    finally:
        plt.close(fig)
    return path


def seed_labels(cells) -> dict[str, str]:
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


def draw_curve(ax, series: Series, label: str, style: dict, slot: int) -> None:
    """The mean line; with two or more seeds also the ± one standard deviation band."""
    ax.plot(series.x, series.mean, label=label, markersize=3.5, linewidth=1.4, markevery=markevery_for(len(series), slot), **style)
    if series.n_seeds >= 2:
        ax.fill_between(series.x, series.mean - series.std, series.mean + series.std, color=style["color"], alpha=0.2, linewidth=0, label="_band")


def round_axis(ax) -> None:
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    ax.grid(alpha=0.3)


def accuracy_limits(series: Sequence[Series]) -> tuple[float, float]:
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

