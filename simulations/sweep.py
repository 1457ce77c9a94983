"""Sweeps: the product of settings, run one after another, resumable.

A run's result files are named by :meth:`ExperimentConfig.key` (a hash of every setting), so a
sweep that is interrupted and started again finds the finished runs on disk and redoes nothing.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from .config import ExperimentConfig
from .experiment import RoundRecord, RunResult, run_experiment

__all__ = ["expand", "run_sweep", "check_jobs", "load_results", "result_path"]


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
    jobs: int = 1,
) -> list[RunResult]:
    """Run ``configs``, writing each result; skip those already on disk.

    ``jobs > 1`` runs that many experiments at once in worker processes (in-process engine
    only: the Ray engine parallelises the clients of one run instead), each with
    ``cpu_count // jobs`` torch threads.  Results are written as runs finish; the returned list
    is in the order of ``configs`` either way.

    Progress: one bar over runs and, with ``jobs == 1``, a per-round line for the run in
    progress (tqdm, on stderr).
    """
    check_jobs(jobs, engine)
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    done: dict[int, RunResult] = {}
    todo: list[int] = []
    for i, cfg in enumerate(configs):
        path = result_path(results_dir, cfg)
        if reuse and path.is_file():
            done[i] = load_results([path])[0]
        else:
            todo.append(i)
    bar = _progress(len(configs), initial=len(configs) - len(todo), desc="runs", disable=not show_progress)

    def finish(i: int, result: RunResult, seconds: float) -> None:
        cfg = configs[i]
        result.write(results_dir)
        done[i] = result
        bar.update(1)
        summary = result.summary()
        bar.write(
            f"{cfg.task:8s} {cfg.defense:14s} {cfg.attack:12s} best acc {summary['best_acc']:.4f}  "
            f"honest kept {summary['honest_selected_rate']:.2f}  Byzantine kept {summary['byzantine_selected_rate']:.2f}  "
            f"{seconds:.0f}s"
        )
        if on_result is not None:
            on_result(result)

    try:
        if jobs > 1 and len(todo) > 1:
            _run_parallel(configs, todo, jobs, finish)
        else:
            for i in todo:
                cfg = configs[i]
                rounds_bar = _progress(cfg.rounds, desc=f"{cfg.task} {cfg.defense} / {cfg.attack}", leave=False, disable=not show_progress)

                def tick(record: RoundRecord, rounds_bar=rounds_bar) -> None:
                    rounds_bar.update(1)
                    if record.test_acc == record.test_acc:  # not NaN
                        rounds_bar.set_postfix(acc=f"{record.test_acc:.3f}", sel=f"{record.selected}/{record.received}")

                start = time.perf_counter()
                result = run_experiment(cfg, engine=engine, progress=tick, ray_address=ray_address)
                rounds_bar.close()
                finish(i, result, time.perf_counter() - start)
    finally:
        bar.close()
    return [done[i] for i in sorted(done)]


def check_jobs(jobs: int, engine: str) -> None:
    """Raise ``ValueError`` unless ``jobs`` experiments at once can run under ``engine``."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    if jobs > 1 and engine != "inprocess":
        raise ValueError(
            f"jobs > 1 needs the in-process engine: the {engine!r} engine already spreads one "
            "run's clients over its workers"
        )


def _run_parallel(
    configs: Sequence[ExperimentConfig],
    todo: Sequence[int],
    jobs: int,
    finish: Callable[[int, RunResult, float], None],
) -> None:
    jobs = min(jobs, len(todo))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    # "spawn": a fork of a process that already holds torch/OpenMP threads can deadlock.
    context = multiprocessing.get_context("spawn")
    from .logs import flower_is_quiet

    initargs = (threads, flower_is_quiet())
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=initargs) as pool:
        pending = {pool.submit(_run_in_worker, configs[i]): i for i in todo}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = pending.pop(future)
                    data, seconds = future.result()
                    finish(i, RunResult.from_json(data), seconds)
        except BaseException:
            # A failed (or interrupted) run stops the sweep as it would without jobs; what
            # finished is already on disk and a restart resumes from there.
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _init_worker(threads: int, quiet: bool) -> None:
    import torch

    torch.set_num_threads(threads)
    if quiet:  # a spawned process starts with Flower's default logging, not the parent's
        from .logs import quiet_flower

        quiet_flower()


def _run_in_worker(cfg: ExperimentConfig) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    result = run_experiment(cfg, engine="inprocess")
    return result.to_json(), time.perf_counter() - start


def _progress(total: int, **kwargs: Any):
    from tqdm import tqdm

    return tqdm(total=total, file=sys.stderr, dynamic_ncols=True, **kwargs)
