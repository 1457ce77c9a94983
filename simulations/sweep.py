"""Sweeps: the product of settings, run one after another, resumable.

A run's result files are named by :meth:`ExperimentConfig.key` (a hash of every setting), so a
sweep that is interrupted and started again finds the finished runs on disk and redoes nothing.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .config import ExperimentConfig
from .experiment import RoundRecord, RunResult, run_experiment

__all__ = ["expand", "run_sweep", "load_results", "result_path"]


def expand(base: ExperimentConfig, **axes: Sequence[Any]) -> list[ExperimentConfig]:
    """Every combination of ``axes`` applied to ``base``, first axis outermost.

    >>> cfgs = expand(ExperimentConfig(), defense=["mean", "median"], attack=["none", "lie"])
    >>> [(c.defense, c.attack) for c in cfgs][:2]
    [('mean', 'none'), ('mean', 'lie')]
    """
    names = list(axes)
    for name in names:
        if not hasattr(base, name):
            raise ValueError(f"unknown sweep axis {name!r}")
    return [base.replace(**dict(zip(names, values))) for values in itertools.product(*(axes[n] for n in names))]


def result_path(results_dir: str | Path, cfg: ExperimentConfig) -> Path:
    return Path(results_dir) / f"{cfg.key()}.json"


def load_results(paths: Iterable[str | Path]) -> list[RunResult]:
    """Load every ``*.json`` result under the given files or folders."""
    out = []
    for path in paths:
        path = Path(path)
        files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
        for file in files:
            try:
                data = json.loads(file.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict) and "rounds" in data and "config" in data:
                out.append(RunResult.from_json(data))
    return out


def run_sweep(
    configs: Sequence[ExperimentConfig],
    results_dir: str | Path,
    *,
    engine: str = "inprocess",
    reuse: bool = True,
    show_progress: bool = True,
    on_result: Callable[[RunResult], None] | None = None,
    ray_address: str | None = None,
) -> list[RunResult]:
    """Run ``configs`` in order, writing each result; skip those already on disk.

    Progress: one bar over runs and a per-round line for the run in progress (tqdm, on stderr).
    """
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    results: list[RunResult] = []
    todo = []
    for cfg in configs:
        path = result_path(results_dir, cfg)
        if reuse and path.is_file():
            results.extend(load_results([path]))
        else:
            todo.append(cfg)
    bar = _progress(len(configs), initial=len(configs) - len(todo), desc="runs", disable=not show_progress)
    for cfg in todo:
        rounds_bar = _progress(cfg.rounds, desc=f"{cfg.task} {cfg.defense} / {cfg.attack}", leave=False, disable=not show_progress)

        def tick(record: RoundRecord, rounds_bar=rounds_bar) -> None:
            rounds_bar.update(1)
            if record.test_acc == record.test_acc:  # not NaN
                rounds_bar.set_postfix(acc=f"{record.test_acc:.3f}", sel=f"{record.selected}/{record.received}")

        start = time.perf_counter()
        result = run_experiment(cfg, engine=engine, progress=tick, ray_address=ray_address)
        rounds_bar.close()
        result.write(results_dir)
        results.append(result)
        bar.update(1)
        summary = result.summary()
        bar.write(
            f"{cfg.task:8s} {cfg.defense:14s} {cfg.attack:12s} best acc {summary['best_acc']:.4f}  "
            f"honest kept {summary['honest_selected_rate']:.2f}  Byzantine kept {summary['byzantine_selected_rate']:.2f}  "
            f"{time.perf_counter() - start:.0f}s"
        )
        if on_result is not None:
            on_result(result)
    bar.close()
    return results


def _progress(total: int, **kwargs: Any):
    from tqdm import tqdm

    return tqdm(total=total, file=sys.stderr, dynamic_ncols=True, **kwargs)
