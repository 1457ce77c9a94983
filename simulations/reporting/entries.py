"""The data model of the reports: runs as :class:`Entry`, grouped into :class:`Block` s.

Both the markdown tables (:mod:`.tables`) and the figures (:mod:`.plots`) read results through
this module.  Results are grouped into **blocks**: runs that share every setting except the
defense, the attack (with their parameters) and the seed.  A block is one table (or figure) per
kind (one dataset, partition, client count, Byzantine count, round budget, ...).
:func:`defense_order` and :func:`attack_order` are the order of rows and columns (the paper's,
then the others).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ExperimentConfig, format_params
from ..engine import RunResult
from ..sweeps.runner import load_results
from . import paper_numbers as paper

__all__ = [
    "DEFENSE_AWARE_ATTACKS",
    "Entry",
    "Block",
    "ABLATION_KEYS",
    "SIGNGUARD_FAMILY",
    "load_entries",
    "entries_from_results",
    "group_blocks",
    "partition_text",
    "setting_text",
    "defense_order",
    "attack_order",
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

DEFENSE_AWARE_ATTACKS = (
    "ipm",
    "fang_krum",
    "fang_trmean",
    "agr_tailored",
    "strongest",
    "sign_mimic",
    "signguard_tailored",
    "mirror",
)
"""The attacks of issue #13, which know the rule under test: inner product manipulation, Fang et
al.'s attacks on Krum and on trimmed mean / median, the AGR-tailored search, the strength search
(``strongest``) and the SignGuard-aware attacks (:mod:`clients.attacks.defense_aware`).  Their
runs have their own report section (:mod:`.defense_aware`), not Table I's columns."""


@dataclass
class Entry:
    """One run with the labels the tables use."""

    result: RunResult

    @functools.cached_property
    def summary(self) -> dict[str, Any]:
        """The run's :meth:`RunResult.summary`, computed once (the report reads it many times per run)."""
        return self.result.summary()

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


def entries_from_results(results: Iterable[RunResult]) -> list[Entry]:
    """Entries from in-memory results (one per key)."""
    seen = {r.key: r for r in results}
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


def defense_order(entry: Entry) -> tuple:
    """Sort key of rows: the paper's defenses in its order, then Krum, then the others by name."""
    order = list(paper.TABLE1_DEFENSES) + ["krum"]
    return (order.index(entry.defense) if entry.defense in order else len(order), entry.defense, entry.defense_label())


def attack_order(entry: Entry) -> tuple:
    """Sort key of columns: the paper's attacks in its order, then ours, then the others by name."""
    order = list(paper.TABLE1_ATTACKS) + list(_EXTRA_ATTACK_ORDER)
    return (order.index(entry.attack) if entry.attack in order else len(order), entry.attack, entry.attack_label())
