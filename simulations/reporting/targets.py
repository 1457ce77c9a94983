"""Issue #13's targets for the hardened SignGuard preset, checked against the results.

For every block (one dataset, partition, client and Byzantine count, round budget) that holds
runs of ``signguard`` with ``preset="hardened"``, one table says per target what was measured,
over how many seeds, and whether it is met:

* under every attack, best accuracy within :data:`ATTACK_POINTS` of the preset's own no-attack
  best accuracy (mean over seeds; a gap within the seeds' spread is not called a failure);
* without attack, best accuracy within :data:`MEAN_POINTS` of Mean's;
* at least :data:`HONEST_KEPT` of the honest updates kept on average (over every run);
* sign-flip: at most :data:`SIGN_FLIP_KEPT` of the malicious updates kept;
* LIE, ByzMean, Min-Max and Min-Sum: none of the malicious updates kept (the paper's result).

The aggregation-time target (at most 1.5x plain SignGuard at n = 50, d = 1M) is a benchmark,
not a result of a run: docs/benchmarks.md.  A target without the runs it needs says so.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from .entries import Block, Entry, attack_order, group_blocks
from .paper_numbers import ATTACK_NAMES

__all__ = ["ATTACK_POINTS", "HONEST_KEPT", "MEAN_POINTS", "SIGN_FLIP_KEPT", "ZERO_KEPT_ATTACKS",
           "hardened_targets", "hardened_targets_markdown", "is_hardened"]

ATTACK_POINTS = 2.0
MEAN_POINTS = 0.5
HONEST_KEPT = 0.90
SIGN_FLIP_KEPT = 0.05
ZERO_KEPT_ATTACKS = ("lie", "byzmean", "min_max", "min_sum")


#: Targets missed for a reason we measured: the first words of the target -> why, with the page
#: (relative to docs/results/report/) that shows it.
MISSED_BECAUSE = {
    "sign-flip": ("while honest updates are nearly orthogonal (early rounds) a flipped update's direction statistic "
                  "lies just below the honest range, not far below it, so no per-row threshold drops it without "
                  "dropping honest updates; measured per round in "
                  "[analysis/defense-aware-snapshots.md](../analysis/defense-aware-snapshots.md"
                  "#sign-flip-against-the-hardened-preset-why-flipped-rows-pass-early-in-training)"),
}


def is_hardened(entry: Entry) -> bool:
    """A run of SignGuard's hardened preset (no other SignGuard parameter changed)."""
    return entry.defense == "signguard" and entry.defense_params == {"preset": "hardened"}


def _stats(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else float("nan"))


def _acc(values: Sequence[float]) -> str:
    mean, std = _stats([100 * v for v in values])
    return f"{mean:.2f}" + (f"±{std:.2f}" if not math.isnan(std) else "") + f" ({_seeds(len(values))})"


def _seeds(count: int) -> str:
    return f"{count} seed{'s' if count != 1 else ''}"


def _gap(points: float) -> str:
    return f"{abs(points):.2f} points {'below' if points >= 0 else 'above'}"


def _summary(entry: Entry, key: str) -> float:
    return float(entry.summary[key])


def hardened_targets(block: Block) -> list[tuple[str, str, str]]:
    """``(target, measured, met)`` rows for one block; ``met`` is yes, no, within spread or missing."""
    # Rows in the report's column order, whatever order the results were loaded in.
    hardened = sorted((e for e in block.entries if is_hardened(e)), key=lambda e: (attack_order(e), e.config.get("seed", 0)))
    by_attack: dict[str, list[Entry]] = {}
    for entry in hardened:
        by_attack.setdefault(entry.attack_label(), []).append(entry)
    plain_none = [e for e in hardened if e.attack == "none" and not e.attack_params]
    rows: list[tuple[str, str, str]] = []

    if plain_none:
        base_values = [e.best_acc for e in plain_none]
        base, base_std = _stats(base_values)
        for label, runs in by_attack.items():
            if runs[0].attack == "none" and not runs[0].attack_params:
                continue
            values = [e.best_acc for e in runs]
            mean, std = _stats(values)
            drop = 100 * (base - mean)
            spread = 100 * max(x for x in (base_std, std, 0.0) if not math.isnan(x))
            met = "yes" if drop <= ATTACK_POINTS else ("within spread" if drop <= ATTACK_POINTS + spread else "no")
            rows.append((f"{label}: within {ATTACK_POINTS:g} points of no attack ({_acc(base_values)})",
                         f"{_acc(values)}, {_gap(drop)}", met))
    else:
        rows.append(("every attack within 2 points of no attack", "no run without attack", "missing"))

    mean_none = [e for e in block.entries if e.defense == "mean" and not e.defense_params
                 and e.attack == "none" and not e.attack_params]
    if plain_none and mean_none:
        mean_acc, mean_std = _stats([e.best_acc for e in mean_none])
        gap = 100 * (mean_acc - base)
        spread = 100 * max(x for x in (base_std, mean_std, 0.0) if not math.isnan(x))
        rows.append((f"no attack within {MEAN_POINTS:g} points of Mean ({_acc([e.best_acc for e in mean_none])})",
                     f"{_acc([e.best_acc for e in plain_none])}, {_gap(gap)} Mean",
                     "yes" if gap <= MEAN_POINTS else ("within spread" if gap <= MEAN_POINTS + spread else "no")))
    else:
        rows.append((f"no attack within {MEAN_POINTS:g} points of Mean", "needs both no-attack runs", "missing"))

    if hardened:
        honest = statistics.fmean(_summary(e, "honest_selected_rate") for e in hardened)
        rows.append((f"at least {HONEST_KEPT:.0%} of honest updates kept on average ({len(hardened)} runs)",
                     f"{honest:.1%}", "yes" if honest >= HONEST_KEPT else "no"))

    flips = by_attack.get(next((lbl for lbl, r in by_attack.items() if r[0].attack == "sign_flip" and not r[0].attack_params), ""), [])
    if flips:
        kept = statistics.fmean(_summary(e, "byzantine_selected_rate") for e in flips)
        rows.append((f"sign-flip: at most {SIGN_FLIP_KEPT:.0%} of malicious updates kept",
                     f"{kept:.1%} ({_seeds(len(flips))})", "yes" if kept <= SIGN_FLIP_KEPT else "no"))
    else:
        rows.append((f"sign-flip: at most {SIGN_FLIP_KEPT:.0%} of malicious updates kept", "no sign-flip run", "missing"))

    for attack in ZERO_KEPT_ATTACKS:
        runs = [e for e in hardened if e.attack == attack and not e.attack_params]
        label = runs[0].attack_label() if runs else ATTACK_NAMES.get(attack, attack)
        if runs:
            kept = max(_summary(e, "byzantine_selected_rate") for e in runs)
            rows.append((f"{label}: no malicious update kept", f"{kept:.2%} (largest of {_seeds(len(runs))})",
                         "yes" if kept == 0 else "no"))
        else:
            rows.append((f"{label}: no malicious update kept", "no run", "missing"))
    return rows


def hardened_targets_markdown(entries: Sequence[Entry], *, heading: str = "##") -> str:
    """The targets' tables of every block with hardened-preset runs ('' when there is none)."""
    blocks = [b for b in group_blocks(entries) if any(is_hardened(e) for e in b.entries)]
    if not blocks:
        return ""
    parts = [f"{heading} The hardened SignGuard preset against its targets (issue #13)", "",
             ("Best accuracy is the mean over seeds (± sample std); a drop larger than the target but within the "
              "seeds' spread is marked *within spread*, not met. Aggregation cost: docs/benchmarks.md."), ""]
    for block in blocks:
        parts += [f"{heading}# {block.title}", "", "| target | measured | met |", "|---|---|---|"]
        rows = hardened_targets(block)
        parts += [f"| {t} | {m} | {ok} |" for t, m, ok in rows]
        parts.append("")
        for target, _, ok in rows:
            why = next((text for start, text in MISSED_BECAUSE.items() if target.startswith(start)), None)
            if ok == "no" and why:
                parts += [f"Why *{target}* is missed: {why}.", ""]
    return "\n".join(parts)
