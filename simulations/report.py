"""Markdown tables in the paper's shape, from result files (``<key>.json``).

``signguard-sim report RESULTS... --out DIR`` calls :func:`write_report`; the main job prints
:func:`table1_markdown` and :func:`selected_rates_markdown`; ``signguard-sim report --evidence``
calls :func:`write_evidence_report`, which rebuilds ``docs/results/report`` from the folders of
:data:`EVIDENCE_FOLDERS`.

Results are grouped into **blocks**: runs that share every setting except the defense, the
attack (with their parameters) and the seed.  A block is one table per kind (one dataset,
partition, client count, Byzantine count, round budget, ...).  Runs of several seeds of the same
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
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import paper_numbers as paper
from .config import ExperimentConfig, format_params
from .experiment import RunResult
from .sweep import load_results

__all__ = [
    "Entry",
    "Block",
    "ABLATION_KEYS",
    "SIGNGUARD_FAMILY",
    "load_entries",
    "group_blocks",
    "table1_markdown",
    "last_evaluations",
    "has_converged",
    "convergence_line",
    "CONVERGENCE_POINTS",
    "ONE_SEED_MARK",
    "table2_markdown",
    "selected_rates_markdown",
    "table3_markdown",
    "detection_markdown",
    "build_report",
    "write_report",
    "EVIDENCE_FOLDERS",
    "evidence_folders",
    "write_evidence_report",
    "entries_from_results",
    "partition_text",
    "setting_text",
]

ABLATION_KEYS = ("norm_filter", "cluster_filter", "clip")
"""SignGuard's component switches (Table III): thresholding, clustering, norm clipping."""
SIGNGUARD_FAMILY = ("signguard", "signguard_sim", "signguard_dist")

# Settings that vary inside a block (the table's rows, columns and repetitions) or that do not
# change what is computed (where the data lives, resources, evaluation cadence).
_CELL_KEYS = ("defense", "defense_params", "attack", "attack_params", "seed")
_IGNORED_KEYS = ("data_dir", "download", "num_cpus", "num_gpus", "device", "eval_every")
_DEFAULTS = ExperimentConfig().to_dict()

_EXTRA_ATTACK_ORDER = ("reverse_scaling", "time_varying", "lie_local")

CONVERGENCE_POINTS = 0.5
"""Mean without attack has converged when its last three evaluations lie within this many points."""
ONE_SEED_MARK = "†"
"""Marks a Table I cell of one run (no standard deviation)."""


# ---------------------------------------------------------------------------------------------
# Entries and blocks
# ---------------------------------------------------------------------------------------------


@dataclass
class Entry:
    """One run with the labels the tables use."""

    result: RunResult

    @property
    def config(self) -> dict[str, Any]:
        return self.result.config

    @property
    def task(self) -> str:
        return str(self.config.get("task", "?"))

    @property
    def defense(self) -> str:
        return str(self.config.get("defense", "?"))

    @property
    def attack(self) -> str:
        return str(self.config.get("attack", "?"))

    @property
    def defense_params(self) -> dict[str, Any]:
        return dict(self.config.get("defense_params") or {})

    @property
    def attack_params(self) -> dict[str, Any]:
        return dict(self.config.get("attack_params") or {})

    @property
    def ablation(self) -> tuple[bool, bool, bool] | None:
        """(thresholding, clustering, clip) when this is a SignGuard ablation run, else None."""
        params = self.defense_params
        if self.defense not in SIGNGUARD_FAMILY or not any(k in params for k in ABLATION_KEYS):
            return None
        return tuple(bool(params.get(k, True)) for k in ABLATION_KEYS)  # type: ignore[return-value]

    def defense_label(self, *, drop_ablation: bool = False) -> str:
        params = self.defense_params
        if drop_ablation:
            params = {k: v for k, v in params.items() if k not in ABLATION_KEYS}
        name = paper.DEFENSE_NAMES.get(self.defense, self.defense)
        return f"{name} [{format_params(params)}]" if params else name

    def attack_label(self) -> str:
        name = paper.ATTACK_NAMES.get(self.attack, self.attack)
        params = self.attack_params
        return f"{name} [{format_params(params)}]" if params else name

    @property
    def num_clients(self) -> int:
        return int(self.config.get("num_clients", 0))

    @property
    def num_byzantine(self) -> int:
        return int(self.config.get("num_byzantine", 0))

    @property
    def best_acc(self) -> float:
        return self.result.best_acc

    def block_key(self, *, without: Sequence[str] = ()) -> tuple[tuple[str, str], ...]:
        """The settings shared by the runs of one table (all but the cell keys)."""
        cfg = {k: v for k, v in self.config.items() if k not in _CELL_KEYS and k not in _IGNORED_KEYS}
        partition = cfg.get("partition")
        if partition != "shard":
            cfg.pop("partition_s", None)
        if partition != "dirichlet":
            cfg.pop("dirichlet_alpha", None)
        for key in without:
            cfg.pop(key, None)
        return tuple(sorted((k, repr(v)) for k, v in cfg.items()))


@dataclass
class Block:
    """Runs sharing every setting but defense, attack and seed."""

    key: tuple[tuple[str, str], ...]
    entries: list[Entry]
    title: str = ""
    slug: str = ""

    @property
    def task(self) -> str:
        return self.entries[0].task

    @property
    def config(self) -> dict[str, Any]:
        return self.entries[0].config

    def matches_paper_setting(self) -> bool:
        """IID, n = 50, 10 Byzantine: the setting of the paper's Tables I–III (any dataset)."""
        return all(self.config.get(k) == v for k, v in paper.TABLE1_SETTING.items())

    def matches_table1(self) -> bool:
        return self.matches_paper_setting() and self.task in paper.TABLE1


def load_entries(paths: Iterable[str | Path]) -> list[Entry]:
    """Every result under ``paths`` (files or folders), one per result key."""
    seen: dict[str, RunResult] = {}
    for result in load_results(paths):
        seen[result.key] = result
    return [Entry(r) for r in seen.values()]


def partition_text(cfg: dict[str, Any]) -> str:
    partition = cfg.get("partition", "iid")
    if partition == "iid":
        return "IID"
    if partition == "shard":
        return f"non-IID s = {cfg.get('partition_s')}"
    if partition == "dirichlet":
        return f"Dirichlet α = {cfg.get('dirichlet_alpha')}"
    return str(partition)


def setting_text(cfg: dict[str, Any], *, byzantine: bool = True, partition: bool = True) -> str:
    """``MNIST (CNN), IID, n = 50, 10 Byzantine (20%), 100 rounds``."""
    task = str(cfg.get("task", "?"))
    parts = [paper.DATASET_NAMES.get(task, task)]
    if partition:
        parts.append(partition_text(cfg))
    n, m = int(cfg.get("num_clients", 0)), int(cfg.get("num_byzantine", 0))
    parts.append(f"n = {n}")
    if byzantine:
        parts.append(f"{m} Byzantine ({100 * m / n:.0f}%)" if n else f"{m} Byzantine")
    parts.append(f"{cfg.get('rounds')} rounds")
    return ", ".join(parts)


def _normal(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def group_blocks(entries: Sequence[Entry], *, without: Sequence[str] = ()) -> list[Block]:
    """Blocks of ``entries`` (ordered by dataset, partition, Byzantine count, rounds)."""
    groups: dict[tuple, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.block_key(without=without), []).append(entry)
    blocks = [Block(key, members) for key, members in groups.items()]
    task_order = list(paper.DATASET_NAMES)

    def order(block: Block) -> tuple:
        cfg = block.config
        task = block.task
        return (
            task_order.index(task) if task in task_order else len(task_order),
            task,
            str(cfg.get("partition")),
            float(cfg.get("partition_s") or 0),
            int(cfg.get("num_clients", 0)),
            int(cfg.get("num_byzantine", 0)),
            int(cfg.get("rounds", 0)),
            repr(block.key),
        )

    blocks.sort(key=order)
    # Titles: the main settings, plus whichever other setting tells blocks apart.
    varying = set()
    if len(blocks) > 1:
        all_keys = {k for b in blocks for k, _ in b.key}
        for key in all_keys:
            if len({dict(b.key).get(key) for b in blocks}) > 1:
                varying.add(key)
    shown = {"task", "partition", "partition_s", "dirichlet_alpha", "num_clients", "num_byzantine", "rounds"}
    slugs: set[str] = set()
    for block in blocks:
        cfg = block.config
        non_default = {k for k, v in cfg.items() if k in _DEFAULTS and _normal(v) != _normal(_DEFAULTS[k])}
        extra_keys = (varying | non_default) - shown - set(_CELL_KEYS) - set(_IGNORED_KEYS) - set(without)
        extras = [f"{k} = {cfg.get(k)}" for k in sorted(extra_keys)]
        block.title = setting_text(cfg, byzantine="num_byzantine" not in without, partition="partition_s" not in without)
        if extras:
            block.title += ", " + ", ".join(extras)
        slug = _slug(f"{block.task}-{partition_text(cfg)}-n{cfg.get('num_clients')}"
                     + ("" if "num_byzantine" in without else f"-b{cfg.get('num_byzantine')}")
                     + f"-r{cfg.get('rounds')}")
        if "partition_s" in without:
            slug = _slug(f"{block.task}-noniid-n{cfg.get('num_clients')}-b{cfg.get('num_byzantine')}-r{cfg.get('rounds')}")
        base, i = slug, 2
        while slug in slugs:
            slug, i = f"{base}-{i}", i + 1
        slugs.add(slug)
        block.slug = slug
    return blocks


# ---------------------------------------------------------------------------------------------
# Ordering and formatting
# ---------------------------------------------------------------------------------------------


def _defense_order(entry: Entry) -> tuple:
    order = list(paper.TABLE1_DEFENSES) + ["krum"]
    return (order.index(entry.defense) if entry.defense in order else len(order), entry.defense, entry.defense_label())


def _attack_order(entry: Entry) -> tuple:
    order = list(paper.TABLE1_ATTACKS) + list(_EXTRA_ATTACK_ORDER)
    return (order.index(entry.attack) if entry.attack in order else len(order), entry.attack, entry.attack_label())


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
    entries = [e for e in entries if e.ablation is None]
    if not entries:
        return ""
    out = [f"{heading} Table I — best test accuracy / final test accuracy (%)", ""]
    out.append(
        "Each cell: best test accuracy during training (the paper's metric) / accuracy at the last evaluation "
        "(the final round). Where the paper has the same cell (same dataset, IID, n = 50, 10 Byzantine) its "
        "number stands beside ours as `best / final (paper)`; the paper trains 60 epochs (MNIST, Fashion-MNIST, "
        "AG-News) or 160 (CIFAR-10), our round budget is in each heading. A cell of several seeds shows "
        f"mean±std over them; {ONE_SEED_MARK} marks a cell of one seed. Convergence: whether Mean without attack "
        f"has converged, i.e. its last three evaluations lie within {CONVERGENCE_POINTS:g} points of each other."
    )
    for block in group_blocks(entries):
        with_paper = block.matches_table1()
        cols = _ordered(block.entries, _attack_order, Entry.attack_label)
        rows = _ordered(block.entries, _defense_order, Entry.defense_label)
        cells = _cells(block.entries, Entry.defense_label, Entry.attack_label)
        body = []
        one_seed = False
        for row in rows:
            line = [row]
            for col in cols:
                members = cells.get((row, col), [])
                if not members:
                    line.append("–")
                    continue
                text = _acc_text([100 * e.best_acc for e in members]) + " / " + _acc_text([100 * e.result.final_acc for e in members])
                if len(members) == 1:
                    text += ONE_SEED_MARK
                    one_seed = True
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
    return "\n".join(out) + "\n"


def table2_markdown(entries: Sequence[Entry], *, heading: str = "###") -> str:
    """Table II: average selected rates (honest H, malicious M) of the SignGuard family."""
    entries = [e for e in entries if e.defense in SIGNGUARD_FAMILY and e.ablation is None and e.num_byzantine > 0]
    if not entries:
        return ""
    out = [f"{heading} Table II — average selected rate of honest (H) and malicious (M) updates, SignGuard family", ""]
    out.append(
        "Fraction of the honest / Byzantine updates that entered the aggregate, averaged over rounds. "
        f"Beside ours in parentheses: the paper's Table II, measured on {paper.DATASET_NAMES[paper.TABLE2_DATASET]} — "
        "a different dataset and model unless the heading says CIFAR-10 — in blocks with its setting "
        "(IID, n = 50, 10 Byzantine) only."
    )
    for block in group_blocks(entries):
        with_paper = block.matches_paper_setting()
        attacks = _ordered(block.entries, _attack_order, Entry.attack_label)
        defenses = _ordered(block.entries, _defense_order, Entry.defense_label)
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
                h, _, _ = _mean_std([e.result.summary()["honest_selected_rate"] for e in members])
                m, _, _ = _mean_std([e.result.summary()["byzantine_selected_rate"] for e in members])
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
        "(1.000 / 1.000 for rules that select no rows: Mean, Median, TrMean, GeoMed)."
    )
    for block in group_blocks(entries):
        cols = _ordered(block.entries, _attack_order, Entry.attack_label)
        rows = _ordered(block.entries, _defense_order, Entry.defense_label)
        cells = _cells(block.entries, Entry.defense_label, Entry.attack_label)
        body = []
        for row in rows:
            line = [row]
            for col in cols:
                members = cells.get((row, col), [])
                if not members:
                    line.append("–")
                    continue
                h, _, _ = _mean_std([e.result.summary()["honest_selected_rate"] for e in members])
                m, _, _ = _mean_std([e.result.summary()["byzantine_selected_rate"] for e in members])
                line.append(f"{_fmt(h, 3)} / {_fmt(m, 3)}")
            body.append(line)
        out += ["", f"{heading}# {block.title}", "", _table(["defense", *cols], body)]
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
            attacks = [a for a in _ordered(members, _attack_order, lambda e: e.attack)]
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
    for block in group_blocks(entries):
        cols = _ordered(block.entries, _attack_order, Entry.attack_label)
        rows = _ordered(block.entries, _defense_order, Entry.defense_label)
        cells = _cells(block.entries, Entry.defense_label, Entry.attack_label)
        body = []
        for row in rows:
            line = [row]
            for col in cols:
                members = cells.get((row, col), [])
                if not members:
                    line.append("–")
                    continue
                tp = sum(int(e.result.summary()["tp"]) for e in members)
                fp = sum(int(e.result.summary()["fp"]) for e in members)
                fn = sum(int(e.result.summary()["fn"]) for e in members)
                precision = tp / (tp + fp) if tp + fp else float("nan")
                recall = tp / (tp + fn) if tp + fn else float("nan")
                line.append(f"{_fmt(precision)} / {_fmt(recall)}")
            body.append(line)
        out += ["", f"{heading}# {block.title}", "", _table(["defense", *cols], body)]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# The whole report
# ---------------------------------------------------------------------------------------------


def build_report(
    entries: Sequence[Entry],
    out_dir: str | Path | None = None,
    *,
    plots: bool = True,
    command: str = "signguard-sim report",
    sources: Sequence[str] = (),
) -> tuple[str, list[Path]]:
    """The report's markdown and (with ``out_dir`` and ``plots``) the PNG figures written there.

    The markdown depends only on the results (no date, no absolute path: figures are linked
    relative to ``out_dir``); ``command`` and ``sources`` (folder names) say where it came from.
    """
    entries = list(entries)
    figures: list[Path] = []
    if out_dir is not None and plots and entries:
        from .plots import write_plots

        figures = write_plots(entries, out_dir)
    n_runs = len(entries)
    origin = f"Generated by `{command}`"
    if sources:
        origin += " from " + ", ".join(f"`{s}`" for s in sources)
    parts = [
        "# SignGuard-Flower results",
        "",
        f"{n_runs} run{'s' if n_runs != 1 else ''}. {origin}; the paper's numbers come from `simulations/paper_numbers.py`.",
        "",
    ]
    for section in (
        table1_markdown(entries, heading="##"),
        table2_markdown(entries, heading="##"),
        selected_rates_markdown(entries, heading="##"),
        table3_markdown(entries, heading="##"),
        detection_markdown(entries, heading="##"),
    ):
        if section:
            parts += [section]
    if figures:
        parts += ["## Figures", ""]
        base = Path(out_dir) if out_dir is not None else Path(".")
        for fig in figures:
            rel = fig.relative_to(base) if fig.is_relative_to(base) else fig
            parts += [f"![{fig.stem}]({rel.as_posix()})", ""]
    return "\n".join(parts).rstrip() + "\n", figures


def write_report(paths: Iterable[str | Path], out_dir: str | Path, *, plots: bool = True) -> tuple[Path, str, list[Path]]:
    """Load the results under ``paths``, write ``report.md`` (+ PNGs) into ``out_dir``."""
    entries = load_entries(paths)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, figures = build_report(entries, out_dir, plots=plots)
    path = out_dir / "report.md"
    path.write_text(markdown)
    return path, markdown, figures


EVIDENCE_DIR = Path("docs") / "results"
"""Where the named sweeps' results live, relative to the repository root."""
EVIDENCE_REPORT_DIR = EVIDENCE_DIR / "report"
"""The committed report, relative to the repository root."""
EVIDENCE_FOLDERS = (
    "main",
    "table1-mnist",
    "bulyan-reference-mnist",
    "table1-fmnist",
    "converged-mnist",
    "converged-fmnist",
    "cifar10-small",
    "agnews-small",
    "timevarying-fmnist",
    "fraction-fmnist",
    "noniid-fmnist",
    "ablation-fmnist",
)
"""The folders of ``docs/results`` that ``docs/results/report`` is built from, in this order (a
result present in two folders counts once, as the later folder's copy)."""


def evidence_folders(repo_root: str | Path) -> list[Path]:
    """The :data:`EVIDENCE_FOLDERS` under ``repo_root``/docs/results that hold result files.

    A folder not there yet, or empty (a sweep that has just started), is skipped, so that it
    changes nothing in the report, not even the list of sources.
    """
    base = Path(repo_root) / EVIDENCE_DIR
    return [base / name for name in EVIDENCE_FOLDERS if (base / name).is_dir() and any((base / name).rglob("*.json"))]


def write_evidence_report(
    repo_root: str | Path, out_dir: str | Path | None = None, *, plots: bool = True
) -> tuple[Path, str, list[Path]]:
    """Build the evidence report from :data:`EVIDENCE_FOLDERS` into ``out_dir``.

    ``out_dir`` defaults to ``repo_root``/docs/results/report (``signguard-sim report
    --evidence``).  Folders missing or empty under ``repo_root`` are skipped; ``ValueError`` (and nothing
    written) when none holds a result.  Returns the path of ``report.md``, its markdown and the
    figures written.
    """
    folders = evidence_folders(repo_root)
    entries = load_entries(folders)
    if not entries:
        raise ValueError(f"no result files (<key>.json) in {EVIDENCE_DIR.as_posix()}/{{{','.join(EVIDENCE_FOLDERS)}}}")
    out_dir = Path(out_dir) if out_dir is not None else Path(repo_root) / EVIDENCE_REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = [(EVIDENCE_DIR / f.name).as_posix() for f in folders]
    markdown, figures = build_report(entries, out_dir, plots=plots, command="signguard-sim report --evidence", sources=sources)
    path = out_dir / "report.md"
    path.write_text(markdown)
    return path, markdown, figures


def entries_from_results(results: Iterable[RunResult]) -> list[Entry]:
    """Entries from in-memory results (one per key)."""
    seen = {r.key: r for r in results}
    return [Entry(r) for r in seen.values()]
