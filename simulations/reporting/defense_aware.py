"""Issue #13's table: every defense under the attacks that know the rule, with kept rates.

For every block (one dataset, partition, client and Byzantine count, round budget) that holds
runs of a defense-aware attack (:data:`DEFENSE_AWARE_ATTACKS`), one table: a row per defense
that met such an attack, a column for no attack and for each defense-aware attack (with its
parameters) present.  A cell is the best accuracy (mean ± sample std over seeds, ``†`` for one
seed, ``‡`` for fewer seeds than the block's fullest cells) and, for rules that drop updates, the
share of malicious (M) and honest (H) updates kept.
:func:`defense_aware_block` gives the same runs as a block, for the heatmap
(``defense-aware-<slug>.png``).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from .entries import DEFENSE_AWARE_ATTACKS, Block, Entry, group_blocks
from .heatmap import heatmap_cells, selecting_defenses
from .tables import FEWER_SEEDS_MARK, _acc_text, fewer_seeds_footnote, seed_mark

__all__ = ["DEFENSE_AWARE_ATTACKS", "defense_aware_block", "defense_aware_markdown"]

def defense_aware_block(block: Block) -> Block | None:
    """The runs of ``block`` that the table shows (``None`` when it has no defense-aware run):
    the defenses that met a defense-aware attack, under those attacks and without attack."""
    attacked = {e.defense_label() for e in block.entries if e.attack in DEFENSE_AWARE_ATTACKS}
    if not attacked:
        return None
    runs = [e for e in block.entries if e.defense_label() in attacked and (e.attack in DEFENSE_AWARE_ATTACKS or e.attack == "none")]
    return Block(block.key, runs, block.title, block.slug)


def _cell(runs: Sequence[Entry], selecting: bool, attacked: bool, mark: str) -> str:
    text = _acc_text([100 * e.best_acc for e in runs]) + mark
    if selecting:
        honest = statistics.fmean(e.summary["honest_selected_rate"] for e in runs)
        if attacked:
            malicious = statistics.fmean(e.summary["byzantine_selected_rate"] for e in runs)
            text += f" (M {100 * malicious:.0f}%, H {100 * honest:.0f}%)"
        else:
            text += f" (H {100 * honest:.0f}%)"
    return text


def defense_aware_markdown(entries: Sequence[Entry], *, heading: str = "##") -> str:
    """The section: one table per block with defense-aware runs ('' when there is none)."""
    blocks = [b for b in (defense_aware_block(b) for b in group_blocks(entries)) if b is not None]
    if not blocks:
        return ""
    parts = [
        f"{heading} Defense-aware attacks (issue #13)",
        "",
        ("Every defense under the attacks that know the rule: IPM, Fang et al.'s attacks on Krum and on "
         "trimmed mean, the AGR-tailored search, the strength search and the SignGuard-aware attacks. A cell: "
         "best accuracy (mean ± std over seeds, † one seed, ‡ fewer seeds than the block's fullest cells) and, "
         "for rules that drop updates, the malicious (M) "
         "and honest (H) updates kept; – not run. Reproduce: `signguard-sim sweep defense-aware-mnist` (MNIST) "
         "or `defense-aware-mini` (bundled subset). The one-step mechanism behind it, on real update matrices: "
         "[analysis/defense-aware-snapshots.md](../analysis/defense-aware-snapshots.md)."),
        "",
    ]
    for block in blocks:
        selecting = selecting_defenses(block.entries)
        rows, cols, cells = heatmap_cells(block)  # the heatmap's rows, columns and cells, in the same order
        parts += [f"{heading}# {block.title}", "", "| defense | " + " | ".join(cols) + " |",
                  "|---|" + "---|" * len(cols)]
        most = max(len(runs) for runs in cells.values())
        fewer: list[int] = []
        for row in rows:
            line = []
            for col in cols:
                runs = cells.get((row, col), [])
                if not runs:
                    line.append("–")
                    continue
                mark = seed_mark(len(runs), most)
                if mark == FEWER_SEEDS_MARK:
                    fewer.append(len(runs))
                line.append(_cell(runs, row in selecting, runs[0].attack != "none", mark))
            parts.append(f"| {row} | " + " | ".join(line) + " |")
        parts.append("")
        if fewer:
            parts += [fewer_seeds_footnote(fewer, most), ""]
    return "\n".join(parts)
