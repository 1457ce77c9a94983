"""The main job's closing summary: which defenses held under each attack, which fell, by how much.

A defense is judged against **its own** no-attack run (same settings, same seed), on best test
accuracy (the paper's Table I metric), so a rule that trains a little worse without attack is
not counted as "falling" for that:

* **held**: best accuracy at most :data:`HELD_POINTS` below its no-attack best;
* **fell**: at least :data:`FELL_POINTS` below;
* **degraded** in between.

Detection figures come from the same runs: the share of Byzantine updates the rule kept in the
aggregate (0% = every malicious update filtered) and the share of honest updates kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import paper_numbers as paper
from .entries import Entry

__all__ = ["HELD_POINTS", "FELL_POINTS", "Outcome", "outcomes", "verdict_markdown"]

HELD_POINTS = 2.0
FELL_POINTS = 10.0


@dataclass(frozen=True)
class Outcome:
    """One defense under one attack, against its own no-attack run (accuracies in %)."""

    defense: str
    attack: str
    clean_best: float
    best: float
    final: float
    byzantine_kept: float
    honest_kept: float

    @property
    def drop(self) -> float:
        """Points lost against the no-attack run (positive = worse)."""
        return self.clean_best - self.best

    @property
    def status(self) -> str:
        if self.drop <= HELD_POINTS:
            return "held"
        if self.drop >= FELL_POINTS:
            return "fell"
        return "degraded"


def _mean(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def outcomes(entries: Sequence[Entry]) -> list[Outcome]:
    """Every (defense, attack) with a no-attack run of the same defense; seeds averaged.

    Only plain defenses (no ``defense_params``) and plain attacks are judged.
    """
    cells: dict[tuple[str, str], list[Entry]] = {}
    for entry in entries:
        if entry.defense_params or entry.attack_params:
            continue
        cells.setdefault((entry.defense, entry.attack), []).append(entry)
    out = []
    for (defense, attack), runs in cells.items():
        clean = cells.get((defense, "none"))
        if attack == "none" or not clean:
            continue
        summaries = [r.summary for r in runs]
        out.append(
            Outcome(
                defense=defense,
                attack=attack,
                clean_best=100 * _mean([r.best_acc for r in clean]),
                best=100 * _mean([s["best_acc"] for s in summaries]),
                final=100 * _mean([s["final_acc"] for s in summaries]),
                byzantine_kept=100 * _mean([s["byzantine_selected_rate"] for s in summaries]),
                honest_kept=100 * _mean([s["honest_selected_rate"] for s in summaries]),
            )
        )
    defense_rank = {d: i for i, d in enumerate(paper.DEFENSE_NAMES)}
    attack_rank = {a: i for i, a in enumerate(paper.ATTACK_NAMES)}
    out.sort(key=lambda o: (attack_rank.get(o.attack, 99), o.attack, defense_rank.get(o.defense, 99), o.defense))
    return out


def _name(defense: str) -> str:
    return paper.DEFENSE_NAMES.get(defense, defense)


def verdict_markdown(entries: Sequence[Entry]) -> str:
    """A short measured summary: per attack, who held and who fell, with detection figures."""
    found = outcomes(entries)
    if not found:
        return ""
    lines = [
        f"Summary (best accuracy against each defense's own no-attack run; held: ≤ {HELD_POINTS:g} points lost, "
        f"fell: ≥ {FELL_POINTS:g} points lost):",
        "",
    ]
    attacks = list(dict.fromkeys(o.attack for o in found))
    for attack in attacks:
        rows = [o for o in found if o.attack == attack]
        parts = []
        for status in ("fell", "degraded", "held"):
            group = [o for o in rows if o.status == status]
            if group:
                text = ", ".join(f"{_name(o.defense)} {o.clean_best:.1f} → {o.best:.1f} ({o.best - o.clean_best + 0.0:+.1f})" for o in group)
                parts.append(f"{status}: {text}")
        lines.append(f"- **{paper.ATTACK_NAMES.get(attack, attack)}** — " + "; ".join(parts) + ".")
        detected = [o for o in rows if not math.isnan(o.byzantine_kept)]
        if detected:
            kept = ", ".join(
                f"{_name(o.defense)} {o.byzantine_kept:.0f}% of malicious / {o.honest_kept:.0f}% of honest" for o in detected
            )
            lines.append(f"  Updates kept in the aggregate: {kept}.")
    return "\n".join(lines) + "\n"
