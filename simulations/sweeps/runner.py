"""Sweeps: the product of settings, run one after another, resumable.

A run's result files are named by :meth:`ExperimentConfig.key` (a hash of every setting), so a
sweep that is interrupted and started again finds the finished runs on disk and redoes nothing.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ExperimentConfig
from ..engine import RoundRecord, RunResult, checkpoint_path, run_experiment

__all__ = [
    "expand",
    "run_sweep",
    "check_jobs",
    "load_results",
    "result_path",
    "RunEstimate",
    "SweepEstimate",
    "round_seconds",
    "estimate_seconds",
    "format_duration",
]


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


def check_result(path: str | Path, cfg: ExperimentConfig | None = None) -> tuple[RunResult | None, str | None]:
    """Read a result file and check it is whole: ``(result, None)`` or ``(None, what is wrong)``.

    Whole means: valid JSON of the result schema, every round record with every field, rounds
    numbered ``1 .. rounds`` of its own config without a gap, and, given ``cfg``, written for
    exactly that config (same key).  A sweep reuses only whole files.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"unreadable ({type(err).__name__})"
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict) or not isinstance(data.get("rounds"), list):
        return None, "not a result file (no config / rounds)"
    try:
        result = RunResult.from_json(data)
        own = ExperimentConfig.from_dict(data["config"])
    except (TypeError, ValueError, KeyError) as err:
        return None, f"bad schema ({type(err).__name__}: {err})"
    numbers = [r.round for r in result.rounds]
    if numbers != list(range(1, own.rounds + 1)):
        return None, f"holds {len(numbers)} of {own.rounds} rounds"
    if result.key != own.key():
        return None, f"its key {result.key!r} does not match its config"
    if cfg is not None and result.key != cfg.key():
        return None, f"written for {result.key!r}, not {cfg.key()!r}"
    return result, None


def _copy_durably(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    with tmp.open("rb+") as fh:
        os.fsync(fh.fileno())
    tmp.replace(dst)


def adopt_shared_result(results_dir: str | Path, cfg: ExperimentConfig, folders: Sequence[str | Path]) -> tuple[RunResult, Path] | None:
    """Copy ``cfg``'s finished run from another sweep's folder into ``results_dir``.

    Two sweeps often share runs (same settings, same key: e.g. the no-attack runs of
    ``converged-mnist`` and ``defense-aware-mnist``); running them twice wastes hours.  The first
    whole result (:func:`check_result`) found in ``folders`` is copied byte for byte (CSV first,
    then the JSON that marks the run done, each written to a temporary name and renamed) and
    returned with the folder it came from; ``None`` when no folder has one.
    """
    found = find_shared_result(results_dir, cfg, folders)
    if found is None:
        return None
    result, folder = found
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    src, dst = result_path(folder, cfg), result_path(results_dir, cfg)
    if src.with_suffix(".csv").is_file():
        _copy_durably(src.with_suffix(".csv"), dst.with_suffix(".csv"))
    _copy_durably(src, dst)
    checkpoint_path(results_dir, cfg.key()).unlink(missing_ok=True)
    return result, folder


def find_shared_result(results_dir: str | Path, cfg: ExperimentConfig, folders: Sequence[str | Path]) -> tuple[RunResult, Path] | None:
    """The first whole result of ``cfg`` in ``folders`` (other than ``results_dir``) and its folder."""
    for folder in map(Path, folders):
        src = result_path(folder, cfg)
        if folder.resolve() == Path(results_dir).resolve() or not src.is_file():
            continue
        result, _ = check_result(src, cfg)
        if result is not None:
            return result, folder
    return None


def finished_elsewhere(results_dir: str | Path, cfg: ExperimentConfig, folders: Sequence[str | Path]) -> tuple[RunResult, str] | None:
    """A run that finished since the sweep started: written into ``results_dir`` by another
    process, or found in one of ``folders`` (and copied); ``(result, where)`` or ``None``."""
    path = result_path(results_dir, cfg)
    if path.is_file():
        result, _ = check_result(path, cfg)
        if result is not None:
            return result, str(results_dir)
    adopted = adopt_shared_result(results_dir, cfg, folders)
    return None if adopted is None else (adopted[0], str(adopted[1]))


def quarantine(path: str | Path) -> Path:
    """Move a damaged result (and its CSV) into ``damaged/`` beside it; returns the new path."""
    path = Path(path)
    folder = path.parent / "damaged"
    folder.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = folder / f"{path.stem}.{stamp}{path.suffix}"
    path.replace(target)
    csv = path.with_suffix(".csv")
    if csv.is_file():
        csv.replace(folder / f"{csv.stem}.{stamp}.csv")
    return target


def load_results(paths: Iterable[str | Path], *, warn: bool = True) -> list[RunResult]:
    """Load every whole ``*.json`` result under the given files or folders.

    Damaged files (see :func:`check_result`) are skipped with a warning on stderr, never
    silently; files under a ``damaged/`` folder are ignored.
    """
    out = []
    for path in paths:
        path = Path(path)
        files = sorted(p for p in path.rglob("*.json") if "damaged" not in p.relative_to(path).parts[:-1]) if path.is_dir() else [path]
        for file in files:
            result, problem = check_result(file)
            if result is None:
                if warn:
                    sys.stderr.write(f"skipping damaged result {file}: {problem}\n")
                continue
            out.append(result)
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
    batched_clients: bool = False,
    reuse_from: Sequence[str | Path] = (),
) -> list[RunResult]:
    """Run ``configs``, writing each result; skip those already on disk.

    ``reuse_from``: other sweeps' result folders; a run finished there (same key) is copied
    instead of run (:func:`adopt_shared_result`), when the sweep starts and again just before
    the run would start, so two sweeps running side by side never run a shared run twice
    (unless both start it at the same moment).  Ignored with ``reuse=False``.

    ``jobs > 1`` runs that many experiments at once in worker processes (in-process engine
    only: the Ray engine parallelises the clients of one run instead), each with
    ``cpu_count // jobs`` torch threads.  Results are written as runs finish; the returned list
    is in the order of ``configs`` either way.

    Progress: one bar over runs and, with ``jobs == 1``, a per-round line for the run in
    progress (tqdm, on stderr).

    ``batched_clients``: see :func:`simulations.engine.run_experiment` (in-process engine only).

    Each run checkpoints itself every ``eval_every`` rounds into ``<key>.partial.pt`` in
    ``results_dir`` and, run again after being killed, resumes from there with the result an
    uninterrupted run gives (timings aside); the file is deleted once the result is written.
    ``reuse=False`` redoes finished runs only: resuming a partial one changes no figure.
    """
    check_jobs(jobs, engine)
    if batched_clients and engine != "inprocess":
        raise ValueError(f"batched clients need the in-process engine, not {engine!r}")
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    done: dict[int, RunResult] = {}
    todo: list[int] = []
    for i, cfg in enumerate(configs):
        path = result_path(results_dir, cfg)
        if reuse and path.is_file():
            result, problem = check_result(path, cfg)
            if result is not None:
                done[i] = result
                continue
            moved = quarantine(path)
            sys.stderr.write(f"{path.name}: {problem}; moved to {moved} and run again\n")
        if reuse and (adopted := adopt_shared_result(results_dir, cfg, reuse_from)) is not None:
            done[i] = adopted[0]
            continue
        todo.append(i)
    bar = _progress(len(configs), initial=len(configs) - len(todo), desc="runs", disable=not show_progress)

    def already_finished(i: int) -> bool:
        """Take a run that finished elsewhere since the start instead of running it."""
        if not reuse:
            return False
        found = finished_elsewhere(results_dir, configs[i], reuse_from)
        if found is None:
            return False
        done[i] = found[0]
        bar.update(1)
        bar.write(f"{configs[i].key()}: finished meanwhile in {found[1]}, not run again")
        return True

    def finish(i: int, result: RunResult, seconds: float) -> None:
        cfg = configs[i]
        result.write(results_dir)
        checkpoint_path(results_dir, cfg.key()).unlink(missing_ok=True)
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
            _run_parallel(configs, todo, jobs, finish, results_dir, batched_clients=batched_clients, skip=already_finished)
        else:
            for i in todo:
                if already_finished(i):
                    continue
                cfg = configs[i]
                rounds_bar = _progress(cfg.rounds, desc=f"{cfg.task} {cfg.defense} / {cfg.attack}", leave=False, disable=not show_progress)

                def tick(record: RoundRecord, rounds_bar=rounds_bar) -> None:
                    rounds_bar.update(1)
                    if record.test_acc == record.test_acc:  # not NaN
                        rounds_bar.set_postfix(acc=f"{record.test_acc:.3f}", sel=f"{record.selected}/{record.received}")

                start = time.perf_counter()
                result = run_experiment(
                    cfg, engine=engine, progress=tick, ray_address=ray_address, batched_clients=batched_clients,
                    checkpoint=checkpoint_path(results_dir, cfg.key()),
                )
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
    results_dir: Path,
    *,
    batched_clients: bool = False,
    skip: Callable[[int], bool] = lambda i: False,
) -> None:
    jobs = min(jobs, len(todo))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    # "spawn": a fork of a process that already holds torch/OpenMP threads can deadlock.
    context = multiprocessing.get_context("spawn")
    from ..engine.logs import flower_is_quiet

    initargs = (threads, flower_is_quiet())
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=initargs) as pool:
        queue = list(todo)
        pending: dict = {}

        def submit() -> None:
            # Runs are handed out as workers free up (not all at once), so that ``skip`` sees
            # results that appeared while earlier runs were going.
            while queue and len(pending) < jobs:
                i = queue.pop(0)
                if not skip(i):
                    pending[pool.submit(_run_in_worker, configs[i], batched_clients, str(checkpoint_path(results_dir, configs[i].key())))] = i

        try:
            submit()
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = pending.pop(future)
                    data, seconds = future.result()
                    finish(i, RunResult.from_json(data), seconds)
                submit()
        except BaseException:
            # A failed (or interrupted) run stops the sweep as it would without jobs; what
            # finished is already on disk and a restart resumes from there.
            pool.shutdown(wait=True, cancel_futures=True)
            raise


# ---------------------------------------------------------------------------------------------
# Time estimates (``signguard-sim sweep ... --dry-run``)
# ---------------------------------------------------------------------------------------------

#: How measured runs are matched to a planned run, most specific first.
MATCH_LEVELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("task+defense+attack", ("task", "defense", "attack")),
    ("task+defense", ("task", "defense")),
    ("task", ("task",)),
)


@dataclass(frozen=True)
class RunEstimate:
    """The estimated duration of one planned run.

    ``seconds = rounds × per_round``, ``per_round`` the median per-round cost of the
    ``measured`` runs matched at ``match`` (one of :data:`MATCH_LEVELS`'s names); ``None`` /
    ``""`` / 0 when no run of the task was measured on that kind of device, ``missing`` saying so.
    """

    config: ExperimentConfig
    seconds: float | None
    per_round: float | None
    match: str
    measured: int
    missing: str = ""
    scale: float | None = None
    """The drift factor applied to older measurements (see :func:`estimate_seconds`), or None."""

    def text(self) -> str:
        if self.seconds is None:
            return self.missing
        runs = f"{self.measured} run{'s' if self.measured != 1 else ''}"
        scaled = f", ×{self.scale:.2f} drift" if self.scale is not None else ""
        return f"~{format_duration(self.seconds)} ({self.per_round:.2f} s/round, {self.match}, {runs}{scaled})"


@dataclass(frozen=True)
class SweepEstimate:
    """Per-run estimates and the whole sweep's, ``jobs`` runs at once."""

    runs: list[RunEstimate]
    work_seconds: float
    """Sum of the estimated runs' seconds (runs without a measurement are left out)."""
    wall_seconds: float
    """Wall-clock time with ``jobs`` runs at once, in the sweep's order (≈ work / jobs)."""
    jobs: int
    measured_runs: int
    """Distinct measured runs (result keys) that some estimate is taken from."""
    unmeasured: dict[str, int]
    """``no measurement for task X`` (+ device note) -> number of planned runs it applies to."""
    drift: dict[str, float] = field(default_factory=dict)
    """Task -> factor applied to its older measurements (``fresh`` runs against the same cells)."""

    def line(self) -> str:
        """``estimated 3 h 20 min (6 h 40 min of work, 2 jobs at once), from measured round costs of 45 runs``."""
        estimated = [r for r in self.runs if r.seconds is not None]
        if not self.runs:
            return "nothing to run"
        parts = []
        if estimated:
            at_once = f"{self.jobs} jobs at once" if self.jobs > 1 else "one run at a time"
            runs = f"{self.measured_runs} run{'s' if self.measured_runs != 1 else ''}"
            parts.append(
                f"estimated {format_duration(self.wall_seconds)} ({format_duration(self.work_seconds)} of work, "
                f"{at_once}), from measured round costs of {runs}"
            )
        for task, factor in self.drift.items():
            parts.append(f"older {task} measurements ×{factor:.2f} (this sweep's finished runs against the same cells measured before)")
        for missing, n in self.unmeasured.items():
            parts.append(f"{missing} ({n} run{'s' if n != 1 else ''} not in the estimate)")
        return "; ".join(parts)


def _device_kind(cfg: ExperimentConfig | dict[str, Any]) -> str:
    device = str(cfg.get("device", "cpu") if isinstance(cfg, dict) else cfg.device) or "cpu"
    return device.split(":")[0]


def round_seconds(result: RunResult) -> float | None:
    """Mean seconds per round of a finished run (its summary's ``mean_round_seconds``), or None."""
    values = [r.round_seconds for r in result.rounds if not math.isnan(r.round_seconds) and r.round_seconds > 0]
    return sum(values) / len(values) if values else None


def estimate_seconds(
    configs: Sequence[ExperimentConfig],
    measured: Iterable[RunResult],
    *,
    jobs: int = 1,
    fresh: Iterable[RunResult] = (),
) -> SweepEstimate:
    """Estimate how long ``configs`` take from the per-round costs of ``measured`` results.

    Each planned run costs ``rounds × per-round cost``, the cost being the median over the
    measured runs that match it most specifically: same task, defense and attack, else same task
    and defense, else same task (:data:`MATCH_LEVELS`).  Only runs on the same kind of device
    (cpu, cuda, ...) count: a GPU measurement says nothing about a CPU run.  Runs of a task
    without any measurement are listed in ``unmeasured`` and left out of the totals.  The
    wall-clock time schedules the runs in order on ``jobs`` workers, each taking the next run
    when it is free (what ``run_sweep(jobs=...)`` does).

    ``fresh`` are the runs the sweep itself has finished (its results folder): made by the code
    and on the machine that will make the rest, while the other measurements may be older and
    the code faster since (the MNIST CNN's step went from 7.0 to 5.5 ms between sweeps).  At each
    match level fresh matches are used alone when there are any; otherwise the older matches'
    median is multiplied by the task's drift, the median over its fresh runs of (fresh cost /
    the older cost of the same task, defense and attack), reported in ``drift``.
    """
    fresh_keys: set[str] = set()
    costs: dict[str, tuple[dict[str, Any], float]] = {}
    for source, results in ((True, fresh), (False, measured)):
        for result in results:
            cost = round_seconds(result)
            if cost is not None and result.key not in costs:
                costs[result.key] = (result.config, cost)
                if source:
                    fresh_keys.add(result.key)
    # (fresh?, level name, key values + device) -> [(result key, cost)]
    index: dict[tuple, list[tuple[str, float]]] = {}
    devices: dict[str, set[str]] = {}  # task -> device kinds measured
    for key, (cfg, cost) in costs.items():
        devices.setdefault(str(cfg.get("task")), set()).add(_device_kind(cfg))
        for level, fields in MATCH_LEVELS:
            cell = (key in fresh_keys, level, *(str(cfg.get(f)) for f in fields), _device_kind(cfg))
            index.setdefault(cell, []).append((key, cost))

    # (task, device) -> fresh cost / older cost of the same cell (task, defense and attack: at a
    # coarser level the defenses' and attacks' own costs would pass for drift), over the fresh runs.
    level, fields = MATCH_LEVELS[0]
    ratios: dict[tuple[str, str], list[float]] = {}
    for key in fresh_keys:
        cfg, cost = costs[key]
        older = index.get((False, level, *(str(cfg.get(f)) for f in fields), _device_kind(cfg)))
        if older:
            ratios.setdefault((str(cfg.get("task")), _device_kind(cfg)), []).append(cost / statistics.median(c for _, c in older))
    drift = {cell: statistics.median(r) for cell, r in ratios.items()}

    runs: list[RunEstimate] = []
    used: set[str] = set()
    unmeasured: dict[str, int] = {}
    drift_used: dict[str, float] = {}
    for cfg in configs:
        device = _device_kind(cfg)
        found = None
        for level, fields in MATCH_LEVELS:
            values = [str(getattr(cfg, f)) for f in fields]
            new, old = index.get((True, level, *values, device)), index.get((False, level, *values, device))
            if new or old:
                found = (level, new, None) if new else (level, old, drift.get((cfg.task, device)))
                break
        if found is None:
            missing = f"no measurement for task {cfg.task}"
            elsewhere = sorted(devices.get(cfg.task, set()))
            if elsewhere:
                missing += f" on {device}, measured on {', '.join(elsewhere)} only"
            elif device != "cpu":
                missing += f" on {device}"
            runs.append(RunEstimate(cfg, None, None, "", 0, missing))
            unmeasured[missing] = unmeasured.get(missing, 0) + 1
            continue
        level, matches, scale = found
        per_round = statistics.median(cost for _, cost in matches) * (scale if scale is not None else 1.0)
        used.update(key for key, _ in matches)
        if scale is not None:
            drift_used[cfg.task] = scale
        runs.append(RunEstimate(cfg, cfg.rounds * per_round, per_round, level, len(matches), scale=scale))
    durations = [r.seconds for r in runs if r.seconds is not None]
    return SweepEstimate(
        runs=runs,
        work_seconds=float(sum(durations)),
        wall_seconds=_makespan(durations, jobs),
        jobs=jobs,
        measured_runs=len(used),
        unmeasured=unmeasured,
        drift=drift_used,
    )


def _makespan(durations: Sequence[float], jobs: int) -> float:
    """Finish time of ``durations`` run in order on ``jobs`` workers (next run to the first free one)."""
    workers = [0.0] * max(1, min(jobs, len(durations)))
    for seconds in durations:
        heapq.heapreplace(workers, workers[0] + seconds)
    return float(max(workers)) if durations else 0.0


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 20 min`` (rounded to the minute from a minute on)."""
    if seconds < 59.5:
        return f"{max(0, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _init_worker(threads: int, quiet: bool) -> None:
    import torch

    torch.set_num_threads(threads)
    if quiet:  # a spawned process starts with Flower's default logging, not the parent's
        from ..engine.logs import quiet_flower

        quiet_flower()


def _run_in_worker(cfg: ExperimentConfig, batched_clients: bool = False,
                   checkpoint: str | None = None) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    result = run_experiment(cfg, engine="inprocess", batched_clients=batched_clients, checkpoint=checkpoint)
    return result.to_json(), time.perf_counter() - start


def _progress(total: int, **kwargs: Any):
    """A tqdm bar on stderr, only when stderr is a terminal: redirected to a file, a bar is
    kilobytes of carriage returns (the finished-run lines, printed with ``bar.write``, stay)."""
    from tqdm import tqdm

    if not _is_terminal(sys.stderr):
        kwargs["disable"] = True
    return tqdm(total=total, file=sys.stderr, dynamic_ncols=True, **kwargs)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False
