"""PNG figures of the results (matplotlib, Agg backend), only for the data present.

* ``accuracy-<block>.png``: test accuracy over rounds, one panel per attack, one line per defense.
* ``fraction-<group>.png`` (paper Fig. 4): accuracy drop vs Byzantine fraction, one panel per
  attack; the drop is measured from Mean without attack (the paper's benchmark) when such a run
  exists, else the best accuracy is plotted.
* ``timevarying-<block>.png`` (Fig. 5): accuracy over rounds under the time-varying attack, with
  Mean without attack as the dashed reference when present.
* ``noniid-<group>.png`` (Fig. 6): best accuracy vs the IID share s of the non-IID partition,
  one panel per attack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from . import paper_numbers as paper  # noqa: E402
from .report import Block, Entry, group_blocks  # noqa: E402

__all__ = ["write_plots", "plot_accuracy_curves", "fraction_panels", "plot_fraction", "plot_time_varying", "plot_noniid"]

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


def _style(label: str, defense: str) -> dict:
    """Same color and marker for a defense in every figure; parameterised variants dashed."""
    i = _DEFENSE_ORDER.index(defense) if defense in _DEFENSE_ORDER else len(_DEFENSE_ORDER)
    style = {"color": _COLORS.get(defense, "#333333"), "marker": _MARKERS[i % len(_MARKERS)], "label": label}
    if label != paper.DEFENSE_NAMES.get(defense, defense):
        style["linestyle"] = "--"
    return style


def _legend_rank(label: str) -> tuple:
    names = [paper.DEFENSE_NAMES[d] for d in _DEFENSE_ORDER]
    base = label.split(" [")[0]
    return (names.index(base) if base in names else len(names), label)


def _attack_key(entry: Entry) -> tuple:
    return (_ATTACK_ORDER.index(entry.attack) if entry.attack in _ATTACK_ORDER else len(_ATTACK_ORDER), entry.attack_label())


def _defense_key(entry: Entry) -> tuple:
    return (_DEFENSE_ORDER.index(entry.defense) if entry.defense in _DEFENSE_ORDER else len(_DEFENSE_ORDER), entry.defense_label())


def _curve(entries: Sequence[Entry]) -> tuple[np.ndarray, np.ndarray]:
    """Mean test accuracy (%) over seeds at the evaluated rounds (round 0 = initial model)."""
    per_round: dict[int, list[float]] = {}
    for entry in entries:
        if not math.isnan(entry.result.initial_acc):
            per_round.setdefault(0, []).append(entry.result.initial_acc)
        for record in entry.result.rounds:
            if not math.isnan(record.test_acc):
                per_round.setdefault(record.round, []).append(record.test_acc)
    rounds = np.array(sorted(per_round))
    return rounds, np.array([100 * np.mean(per_round[r]) for r in rounds])


def _panels(n: int, *, width: float = 4.6, height: float = 3.6):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(width * cols, 7.5), height * rows + 1.2), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _finish(fig, axes, path: Path, what: str, setting: str) -> Path:
    found: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            found.setdefault(label, handle)
    labels = sorted(found, key=_legend_rank)
    fig.suptitle(f"{what}\n{setting}", fontsize=11)
    height = fig.get_size_inches()[1]
    legend_rows = math.ceil(len(labels) / 6) if labels else 0
    if labels:
        fig.legend([found[l] for l in labels], labels, loc="lower center", ncol=min(len(labels), 6), frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, (0.3 * legend_rows + 0.05) / height, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _by(entries: Sequence[Entry], label) -> dict[str, list[Entry]]:
    out: dict[str, list[Entry]] = {}
    for e in entries:
        out.setdefault(label(e), []).append(e)
    return out


def plot_accuracy_curves(block: Block, path: Path) -> Path:
    """Test accuracy over rounds: one panel per attack, one line per defense."""
    attacks = sorted(_by(block.entries, Entry.attack_label).items(), key=lambda kv: _attack_key(kv[1][0]))
    fig, axes = _panels(len(attacks))
    for ax, (attack, members) in zip(axes, attacks):
        for label, runs in sorted(_by(members, Entry.defense_label).items(), key=lambda kv: _defense_key(kv[1][0])):
            x, y = _curve(runs)
            if len(x):
                ax.plot(x, y, markersize=3.5, linewidth=1.4, **_style(label, runs[0].defense))
        ax.set_title(attack, fontsize=10)
        ax.set_xlabel("round")
        ax.set_ylabel("test accuracy (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        ax.grid(alpha=0.3)
    return _finish(fig, axes, path, "Test accuracy during training, per attack", block.title)


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
    by_attack = sorted(_by(attacked, Entry.attack_label).items(), key=lambda kv: _attack_key(kv[1][0]))
    swept = [(a, runs) for a, runs in by_attack if fractions(runs) >= 2]
    panels = []
    for attack, runs in swept or by_attack:
        defenses = sorted(_by(runs, Entry.defense_label).items(), key=lambda kv: _defense_key(kv[1][0]))
        if swept:
            defenses = [(d, r) for d, r in defenses if fractions(r) >= 2]
        panels.append((attack, defenses))
    return panels


def plot_fraction(group: Block, path: Path, baseline: float | None) -> Path:
    """Accuracy drop (or best accuracy) vs the Byzantine fraction: one panel per attack (Fig. 4)."""
    panels = fraction_panels(group.entries)
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
            ax.plot(xs, ys, markersize=5, linewidth=1.4, **_style(label, runs[0].defense))
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
    return _finish(fig, axes, path, what, group.title)


def plot_time_varying(block: Block, path: Path, reference: Sequence[Entry]) -> Path:
    """Accuracy over rounds under the time-varying attack, one line per defense (Fig. 5)."""
    fig, axes = _panels(1, width=7.0, height=4.2)
    ax = axes[0]
    runs_tv = [e for e in block.entries if e.attack == "time_varying"]
    for label, runs in sorted(_by(runs_tv, Entry.defense_label).items(), key=lambda kv: _defense_key(kv[1][0])):
        x, y = _curve(runs)
        ax.plot(x, y, markersize=3.5, linewidth=1.4, **_style(label, runs[0].defense))
    if reference:
        x, y = _curve(reference)
        ax.plot(x, y, color="black", linestyle="--", linewidth=1.2, label="Mean, no attack")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    ax.grid(alpha=0.3)
    return _finish(fig, axes, path, "Test accuracy under the time-varying attack", block.title)


def plot_noniid(group: Block, path: Path) -> Path:
    """Best accuracy vs the IID share s of the non-IID partition: one panel per attack (Fig. 6)."""
    attacks = sorted(_by(group.entries, Entry.attack_label).items(), key=lambda kv: _attack_key(kv[1][0]))
    fig, axes = _panels(len(attacks))
    for ax, (attack, members) in zip(axes, attacks):
        for label, runs in sorted(_by(members, Entry.defense_label).items(), key=lambda kv: _defense_key(kv[1][0])):
            points: dict[float, list[float]] = {}
            for e in runs:
                points.setdefault(float(e.config.get("partition_s", 0)), []).append(100 * e.best_acc)
            xs = sorted(points)
            ax.plot(xs, [float(np.mean(points[x])) for x in xs], markersize=5, linewidth=1.4, **_style(label, runs[0].defense))
        ax.set_title(attack, fontsize=10)
        ax.set_xlabel("IID share s (smaller = more skewed)")
        ax.set_xticks(sorted({float(e.config.get("partition_s", 0)) for e in members}))
        ax.set_ylabel("best test accuracy (%)")
        ax.grid(alpha=0.3)
    return _finish(fig, axes, path, "Best test accuracy vs non-IID skew (s-fraction IID + 2 label shards per client)", group.title)


def write_plots(entries: Sequence[Entry], out_dir: str | Path) -> list[Path]:
    """Every figure the results support, written into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    entries = [e for e in entries if e.ablation is None]
    written: list[Path] = []
    blocks = group_blocks(entries)
    for block in blocks:
        curves = [e for e in block.entries if e.attack != "time_varying"]
        if curves and any(len(_curve([e])[0]) > 1 for e in curves):
            sub = Block(block.key, curves, block.title, block.slug)
            written.append(plot_accuracy_curves(sub, out_dir / f"accuracy-{block.slug}.png"))
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
