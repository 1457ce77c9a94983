"""Markdown tables in the paper's shape, one per block of results (:mod:`.entries`).

:mod:`.report` puts them together into ``report.md``; the main job prints
:func:`table1_markdown` and :func:`selected_rates_markdown`.  Runs of several seeds of the same
cell are averaged (accuracy: mean ± standard deviation; detection counts: summed).

Tables:

* **Table I**: best / final test accuracy (%) per defense × attack; the paper's number beside ours
  as ``best / final (paper)`` where the paper has that cell (same dataset, IID, n = 50, 10
  Byzantine); cells of one seed marked †; per block, whether Mean without attack has converged
  (its last three evaluations within 0.5 points).
* **Table II**: average selected rates of honest (H) and malicious (M) updates for the SignGuard
  family, beside the paper's (CIFAR-10 only: the dataset may differ from ours).
* **Selected rates** of every defense (honest / Byzantine).
* **Table III**: SignGuard ablations (``defense_params`` with ``norm_filter``, ``cluster_filter``,
  ``clip``), beside the paper's SignGuard-Sim numbers (CIFAR-10).
* **Detection**: precision / recall of each defense at flagging Byzantine updates, where
  "detected" = left out of the aggregate (rules that keep every update detect nothing).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ..config import format_params
from ..engine import RunResult
from . import paper_numbers as paper
from .entries import DEFENSE_AWARE_ATTACKS, SIGNGUARD_FAMILY, Entry, attack_order, defense_order, group_blocks

__all__ = [
    "table1_markdown",
    "last_evaluations",
    "has_converged",
    "convergence_line",
    "CONVERGENCE_POINTS",
    "ONE_SEED_MARK",
    "FEWER_SEEDS_MARK",
    "seed_mark",
    "table2_markdown",
    "selected_rates_markdown",
    "table3_markdown",
    "detection_markdown",
]

CONVERGENCE_POINTS = 0.5
"""Mean without attack has converged when its last three evaluations lie within this many points."""
ONE_SEED_MARK = "†"
"""Marks a Table I cell of one run (no standard deviation)."""
FEWER_SEEDS_MARK = "‡"
"""Marks a cell of several seeds but fewer than the block's fullest cells (a sweep still filling
in): its mean ± std rests on fewer runs than its neighbours', so its spread is less certain."""


def seed_mark(count: int, most: int) -> str:
    """The mark of a cell of ``count`` runs in a block whose fullest cells have ``most``: one seed,
    fewer seeds, or none."""
    return ONE_SEED_MARK if count == 1 else FEWER_SEEDS_MARK if count < most else ""


def fewer_seeds_footnote(counts: Sequence[int], most: int) -> str:
    """The footnote for cells marked :data:`FEWER_SEEDS_MARK`: their seed counts against ``most``."""
    listed = " or ".join(str(k) for k in sorted(set(counts)))
    return f"{FEWER_SEEDS_MARK} {listed} seeds (the block's fullest cells have {most})."


# ---------------------------------------------------------------------------------------------
# Ordering and formatting
# ---------------------------------------------------------------------------------------------


def _ordered(entries: Sequence[Entry], key, label) -> list[str]:
    out: list[str] = []
    for entry in sorted(entries, key=key):
        if label(entry) not in out:
            out.append(label(entry))
    return out


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan"), 0
    # Sample standard deviation (ddof=1): with 3 seeds the population formula understates the
    # spread, and the evidence rule is to claim no difference smaller than that spread.
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, len(vals)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cells(entries: Sequence[Entry], row_label, col_label) -> dict[tuple[str, str], list[Entry]]:
    cells: dict[tuple[str, str], list[Entry]] = {}
    for entry in entries:
        cells.setdefault((row_label(entry), col_label(entry)), []).append(entry)
    return cells


def _defense_by_attack_tables(
    entries: Sequence[Entry], cell: Callable[[Sequence[Entry]], str], heading: str
) -> list[str]:
    """Lines of one table per block: a row per defense, a column per attack, ``cell(runs)`` in
    each cell that has runs (``–`` in the others)."""
    out: list[str] = []
    for block in group_blocks(entries):
        cols = _ordered(block.entries, attack_order, Entry.attack_label)
        rows = _ordered(block.entries, defense_order, Entry.defense_label)
        cells = _cells(block.entries, Entry.defense_label, Entry.attack_label)
        body = [[row, *(cell(cells[(row, col)]) if cells.get((row, col)) else "–" for col in cols)] for row in rows]
        out += ["", f"{heading}# {block.title}", "", _table(["defense", *cols], body)]
    return out


def _seed_note(entries: Sequence[Entry]) -> str:
    seeds = sorted({int(e.config.get("seed", 0)) for e in entries})
    if len(seeds) < 2:
        return ""
    return f"Seeds {', '.join(map(str, seeds))}: a cell with several runs shows mean±std over its seeds."


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def _mean_none_runs(entries: Sequence[Entry]) -> list[Entry]:
    """The runs of Mean without attack (no rule or attack parameters), by seed."""
    runs = [e for e in entries if e.defense == "mean" and e.attack == "none" and not e.defense_params and not e.attack_params]
    return sorted(runs, key=lambda e: (int(e.config.get("seed", 0)), e.result.key))


def last_evaluations(result: RunResult, k: int = 3) -> list[tuple[int, float]]:
    """The last ``k`` evaluations of a run: ``(round, test accuracy in %)``, rounds with a test accuracy."""
    evals = [(r.round, 100 * r.test_acc) for r in result.rounds if not math.isnan(r.test_acc)]
    return evals[-k:]


def has_converged(result: RunResult, *, k: int = 3, tolerance: float = CONVERGENCE_POINTS) -> bool:
    """Whether the run's last ``k`` evaluations lie within ``tolerance`` points (max − min)."""
    evals = [acc for _, acc in last_evaluations(result, k)]
    return len(evals) == k and max(evals) - min(evals) <= tolerance + 1e-9


def convergence_line(entries: Sequence[Entry]) -> str:
    """Whether Mean without attack has converged in a block, with the values it is judged on.

    ``Mean (no attack) last three evaluations 98.50, 98.60, 98.60 (rounds 280, 290, 300):
    converged (max − min 0.10 ≤ 0.5 points)``; with several seeds, each seed's three values.
    """
    runs = _mean_none_runs(entries)
    if not runs:
        return "Convergence: no Mean (no attack) run in this block."
    tol = f"{CONVERGENCE_POINTS:g}"
    parts, spreads, short = [], [], []
    for e in runs:
        evals = last_evaluations(e.result)
        values = ", ".join(f"{acc:.2f}" for _, acc in evals)
        rounds = ", ".join(str(r) for r, _ in evals)
        prefix = f"seed {e.config.get('seed', 0)}: " if len(runs) > 1 else ""
        parts.append(f"{prefix}{values} (round{'s' if len(evals) != 1 else ''} {rounds})" if evals else f"{prefix}none")
        if len(evals) < 3:
            short.append(e)
        else:
            spreads.append((e, max(a for _, a in evals) - min(a for _, a in evals)))
    text = "Convergence: Mean (no attack) last three evaluations " + ("; ".join(parts) if len(runs) > 1 else parts[0])
    if short:
        which = "" if len(runs) == 1 else " of seed " + ", ".join(str(e.config.get("seed", 0)) for e in short)
        return text + f": not converged (fewer than three evaluations{which})."
    worst_entry, worst = max(spreads, key=lambda s: s[1])
    ok = all(has_converged(e.result) for e, _ in spreads)
    if len(runs) == 1:
        verdict = f"converged (max − min {worst:.2f} ≤ {tol} points)" if ok else f"not converged (max − min {worst:.2f} > {tol} points)"
    elif ok:
        verdict = f"converged (every seed's max − min ≤ {tol} points, at most {worst:.2f})"
    else:
        verdict = f"not converged (seed {worst_entry.config.get('seed', 0)}: max − min {worst:.2f} > {tol} points)"
    return f"{text}: {verdict}."


def _acc_text(values: Sequence[float]) -> str:
    mean, std, k = _mean_std(values)
    return _fmt(mean) + (f"±{std:.2f}" if k > 1 else "")


def table1_markdown(entries: Sequence[Entry], *, heading: str = "###") -> str:
    """Table I: best / final test accuracy (%) per defense × attack, one table per block.

    Each block also says whether Mean without attack has converged (:func:`convergence_line`);
    cells of one run carry :data:`ONE_SEED_MARK`.
    """
    # Attacks that know the rule have their own section (defense_aware.py), with kept rates.
    entries = [e for e in entries if e.ablation is None and e.attack not in DEFENSE_AWARE_ATTACKS]
    if not entries:
        return ""
    out = [f"{heading} Table I — best test accuracy / final test accuracy (%)", ""]
    out.append(
        "Each cell: best test accuracy during training (the paper's metric) / accuracy at the last evaluation "
        "(the final round). Where the paper has the same cell (same dataset, IID, n = 50, 10 Byzantine) its "
        "number stands beside ours as `best / final (paper)`; the paper trains 60 epochs (MNIST, Fashion-MNIST, "
        "AG-News) or 160 (CIFAR-10), our round budget is in each heading. A cell of several seeds shows "
        f"mean±std over them; {ONE_SEED_MARK} marks a cell of one seed, {FEWER_SEEDS_MARK} one of fewer seeds than the "
        "block's fullest cells. Convergence: whether Mean without attack "
        f"has converged, i.e. its last three evaluations lie within {CONVERGENCE_POINTS:g} points of each other. "
        "Attacks that know the rule (IPM, Fang's, AGR-tailored, the SignGuard-aware ones) are in the section "
        "Defense-aware attacks."
    )
    for block in group_blocks(entries):
        with_paper = block.matches_table1()
        cols = _ordered(block.entries, attack_order, Entry.attack_label)
        rows = _ordered(block.entries, defense_order, Entry.defense_label)
        cells = _cells(block.entries, Entry.defense_label, Entry.attack_label)
        body = []
        one_seed = False
        most = max(len(members) for members in cells.values())
        fewer: list[int] = []
        for row in rows:
            line = [row]
            for col in cols:
                members = cells.get((row, col), [])
                if not members:
                    line.append("–")
                    continue
                text = _acc_text([100 * e.best_acc for e in members]) + " / " + _acc_text([100 * e.result.final_acc for e in members])
                mark = seed_mark(len(members), most)
                text += mark
                if mark == ONE_SEED_MARK:
                    one_seed = True
                elif mark == FEWER_SEEDS_MARK:
                    fewer.append(len(members))
                first = members[0]
                ref = (
                    paper.table1(block.task, first.defense, first.attack)
                    if with_paper and not first.defense_params and not first.attack_params
                    else None
                )
                if ref is not None:
                    text += f" ({ref:.2f})"
                line.append(text)
            body.append(line)
        out += ["", f"{heading}# {block.title}", ""]
        note = _seed_note(block.entries)
        if note:
            out += [note, ""]
        out += [convergence_line(block.entries), ""]
        out.append(_table(["defense", *cols], body))
        if one_seed:
            out += ["", f"{ONE_SEED_MARK} one seed."]
        if fewer:
            out += ["", fewer_seeds_footnote(fewer, most)]
    return "\n".join(out) + "\n"


def table2_markdown(entries: Sequence[Entry], *, heading: str = "###") -> str:
    """Table II: average selected rates (honest H, malicious M) of the SignGuard family."""
    entries = [e for e in entries if e.defense in SIGNGUARD_FAMILY and e.ablation is None and e.num_byzantine > 0]
    if not entries:
        return ""
    out = [f"{heading} Table II — average selected rate of honest (H) and malicious (M) updates, SignGuard family", ""]
    out.append(
        "Fraction of the honest / Byzantine updates that entered the aggregate, averaged over the rounds in which "
        "every reply was finite (once a model diverged its replies are dropped before the rule runs). "
        f"Beside ours in parentheses: the paper's Table II, measured on {paper.DATASET_NAMES[paper.TABLE2_DATASET]} — "
        "a different dataset and model unless the heading says CIFAR-10 — in blocks with its setting "
        "(IID, n = 50, 10 Byzantine) only."
    )
    for block in group_blocks(entries):
        with_paper = block.matches_paper_setting()
        attacks = _ordered(block.entries, attack_order, Entry.attack_label)
        defenses = _ordered(block.entries, defense_order, Entry.defense_label)
        cells = _cells(block.entries, Entry.attack_label, Entry.defense_label)
        header = ["attack"]
        for d in defenses:
            header += [f"{d} H", f"{d} M"]
        body = []
        for attack in attacks:
            line = [attack]
            for d in defenses:
                members = cells.get((attack, d), [])
                if not members:
                    line += ["–", "–"]
                    continue
                h, _, _ = _mean_std([e.summary["honest_selected_rate"] for e in members])
                m, _, _ = _mean_std([e.summary["byzantine_selected_rate"] for e in members])
                first = members[0]
                ref = (
                    paper.table2(first.defense, first.attack)
                    if with_paper and not first.defense_params and not first.attack_params
                    else None
                )
                line.append(_fmt(h, 4) + (f" ({ref[0]:.4f})" if ref else ""))
                line.append(_fmt(m, 4) + (f" ({ref[1]:.4f})" if ref else ""))
            body.append(line)
        out += ["", f"{heading}# {block.title}", "", _table(header, body)]
    return "\n".join(out) + "\n"


def selected_rates_markdown(entries: Sequence[Entry], *, heading: str = "###") -> str:
    """Average selected rates ``honest / Byzantine`` of every defense × attack."""
    entries = [e for e in entries if e.ablation is None and e.num_byzantine > 0]
    if not entries:
        return ""
    out = [f"{heading} Selected rates — honest / Byzantine updates kept in the aggregate", ""]
    out.append(
        "Each cell: average fraction of honest updates / of Byzantine updates that entered the aggregate "
        "(1.000 / 1.000 for rules that select no rows: Mean, Median, TrMean, GeoMed), over the rounds in which "
        "every reply was finite: once a model diverged its non-finite replies are dropped before the rule runs "
        "and say nothing about it."
    )

    def rates(members: Sequence[Entry]) -> str:
        h, _, _ = _mean_std([e.summary["honest_selected_rate"] for e in members])
        m, _, _ = _mean_std([e.summary["byzantine_selected_rate"] for e in members])
        return f"{_fmt(h, 3)} / {_fmt(m, 3)}"

    out += _defense_by_attack_tables(entries, rates, heading)
    return "\n".join(out) + "\n"


def table3_markdown(entries: Sequence[Entry], *, heading: str = "###") -> str:
    """Table III: SignGuard ablations (rows: which components are on), best accuracy (%)."""
    ablations = [e for e in entries if e.ablation is not None]
    if not ablations:
        return ""
    # The full defense (all components on, no ablation keys) belongs in the table too.
    keys = {(e.block_key(), e.defense, e.defense_label(drop_ablation=True)) for e in ablations}
    full = [
        e
        for e in entries
        if e.ablation is None
        and e.defense in SIGNGUARD_FAMILY
        and (e.block_key(), e.defense, e.defense_label()) in keys
    ]
    selected = ablations + full
    out = [f"{heading} Table III — ablation of SignGuard's components, best test accuracy (%)", ""]
    out.append(
        "thresholding = norm filter (`norm_filter`), clustering = sign clustering (`cluster_filter`), "
        "norm-clip = clipping to the median norm (`clip`). Beside ours in parentheses: the paper's Table III "
        f"(SignGuard-Sim on {paper.DATASET_NAMES[paper.TABLE3_DATASET]}; the dataset may differ from ours)."
    )
    for block in group_blocks(selected):
        by_defense: dict[tuple[str, str], list[Entry]] = {}
        for e in block.entries:
            by_defense.setdefault((e.defense, e.defense_label(drop_ablation=True)), []).append(e)
        with_paper = block.matches_paper_setting()
        for (defense, label), members in sorted(by_defense.items()):
            # Columns: the attacks some ablation ran under (the full defense may have run under more).
            members = [e for e in members if e.attack in {m.attack for m in members if m.ablation is not None}]
            attacks = [a for a in _ordered(members, attack_order, lambda e: e.attack)]
            cells: dict[tuple[tuple[bool, bool, bool], str], list[Entry]] = {}
            for e in members:
                cells.setdefault((e.ablation or (True, True, True), e.attack), []).append(e)
            combos = sorted({c for c, _ in cells}, key=lambda c: (sum(c), [not x for x in c]))
            body = []
            for combo in combos:
                line = ["✓" if on else "" for on in combo]
                for attack in attacks:
                    cell = cells.get((combo, attack), [])
                    if not cell:
                        line.append("–")
                        continue
                    # Runs of the same cell with other attack parameters (the paper's r = 100 for
                    # the reverse attack on the row without thresholding and clipping) side by side.
                    variants: dict[str, list[Entry]] = {}
                    for e in cell:
                        variants.setdefault(format_params(e.attack_params), []).append(e)
                    parts = []
                    for params, runs in sorted(variants.items()):
                        mean, std, k = _mean_std([100 * e.best_acc for e in runs])
                        tag = f" [{params or 'default'}]" if len(variants) > 1 or params else ""
                        parts.append(_fmt(mean) + (f"±{std:.2f}" if k > 1 else "") + tag)
                    text = " / ".join(parts)
                    ref = paper.table3(*combo, attack) if defense == paper.TABLE3_DEFENSE and with_paper else None
                    if ref is not None:
                        text += f" ({ref:.2f})"
                    line.append(text)
                body.append(line)
            header = ["thresholding", "clustering", "norm-clip", *(paper.ATTACK_NAMES.get(a, a) for a in attacks)]
            out += ["", f"{heading}# {label}: {block.title}", "", _table(header, body)]
    return "\n".join(out) + "\n"


def detection_markdown(entries: Sequence[Entry], *, heading: str = "###") -> str:
    """Precision / recall of flagging Byzantine updates, per defense × attack."""
    entries = [e for e in entries if e.ablation is None and e.num_byzantine > 0]
    if not entries:
        return ""
    out = [f"{heading} Detection — precision / recall of Byzantine updates", ""]
    out.append(
        "Positive = Byzantine. An update counts as detected when it stayed out of the aggregate. Precision = "
        "TP / (TP + FP), recall = TP / (TP + FN), from the counts summed over rounds (and seeds); – where "
        "undefined (nothing flagged). Under \"No attack\" the Byzantine clients behave honestly."
    )

    def precision_recall(members: Sequence[Entry]) -> str:
        tp = sum(int(e.summary["tp"]) for e in members)
        fp = sum(int(e.summary["fp"]) for e in members)
        fn = sum(int(e.summary["fn"]) for e in members)
        precision = tp / (tp + fp) if tp + fp else float("nan")
        recall = tp / (tp + fn) if tp + fn else float("nan")
        return f"{_fmt(precision)} / {_fmt(recall)}"

    out += _defense_by_attack_tables(entries, precision_recall, heading)
    return "\n".join(out) + "\n"

