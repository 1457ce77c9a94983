"""Run one experiment on any Flower Grid and collect what the reports need.

``run_on_grid`` is the body of the ServerApp: it builds the task's initial model, the defense
(a strategy from :mod:`signguard_flwr`), the omniscient adversary between the clients' replies
and the strategy (which also records the ground truth: who is Byzantine), a centralised
evaluation on the test set, and turns every round into a :class:`RoundRecord` with detection
counts.  ``run_experiment`` runs it under the Ray simulation engine or in-process.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from signguard_flwr import STRATEGIES, RoundDiagnostics
from signguard_flwr.rules import InsufficientClientsError, get_rule

from ..config import ExperimentConfig
from .adversary import OmniscientAdversary

__all__ = ["ENGINES", "RoundRecord", "RunResult", "check_feasible", "check_run", "checkpoint_path", "detection_counts", "run_experiment", "run_on_grid"]

ENGINES = ("inprocess", "ray")
SIMULATION_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1", "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass
class RoundRecord:
    """One round as the reports see it (test metrics are NaN on rounds not evaluated)."""

    round: int
    test_acc: float
    test_loss: float
    received: int
    valid: int
    selected: int
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float
    recall: float
    honest_selected_rate: float
    byzantine_selected_rate: float
    agg_seconds: float
    round_seconds: float
    attack: str
    outcome: str

    @property
    def judged(self) -> bool:
        """Whether this round's selection says something about the rule: every reply was valid.

        Once the global model has diverged every honest reply is non-finite; the strategy drops
        such replies before the rule runs, so they would count as "not selected" although the rule
        never saw them (Mean "keeping" 13% of the honest updates). No attack of the simulation
        sends non-finite rows, so a round with an invalid reply is a round of a diverged model.
        """
        return self.valid == self.received


@dataclass
class RunResult:
    """Everything one run produced; written as ``<key>.json`` and ``<key>.csv``."""

    config: dict[str, Any]
    key: str
    engine: str
    byzantine_partitions: list[int]
    rounds: list[RoundRecord] = field(default_factory=list)
    wall_seconds: float = 0.0
    initial_acc: float = float("nan")
    #: How the engine ran (e.g. ``{"batched_clients": True}``): not a setting of the run, so not
    #: in ``config`` nor its key; written to the JSON only when not empty.
    engine_options: dict[str, Any] = field(default_factory=dict)

    @property
    def best_acc(self) -> float:
        accs = [r.test_acc for r in self.rounds if not math.isnan(r.test_acc)]
        return max(accs) if accs else float("nan")

    @property
    def final_acc(self) -> float:
        accs = [r.test_acc for r in self.rounds if not math.isnan(r.test_acc)]
        return accs[-1] if accs else float("nan")

    def summary(self) -> dict[str, Any]:
        """Run-level aggregates: accuracies and mean selection/detection rates.

        Selection rates and detection counts are over the judged rounds only (every reply valid,
        :attr:`RoundRecord.judged`): after a model diverged, its non-finite replies are dropped
        before the rule and say nothing about what the rule selects. ``judged_rounds`` says how
        many rounds that is.
        """

        def mean(values: list[float]) -> float:
            values = [v for v in values if not math.isnan(v)]
            return float(np.mean(values)) if values else float("nan")

        judged = [r for r in self.rounds if r.judged]
        tp = sum(r.tp for r in judged)
        fp = sum(r.fp for r in judged)
        fn = sum(r.fn for r in judged)
        tn = sum(r.tn for r in judged)
        return {
            "best_acc": self.best_acc,
            "final_acc": self.final_acc,
            "initial_acc": self.initial_acc,
            "honest_selected_rate": mean([r.honest_selected_rate for r in judged]),
            "byzantine_selected_rate": mean([r.byzantine_selected_rate for r in judged]),
            "judged_rounds": len(judged),
            **confusion(tp, fp, fn, tn),
            "mean_agg_seconds": mean([r.agg_seconds for r in self.rounds]),
            "mean_round_seconds": mean([r.round_seconds for r in self.rounds]),
            "wall_seconds": self.wall_seconds,
        }

    def to_json(self) -> dict[str, Any]:
        data = {
            "key": self.key,
            "engine": self.engine,
            "config": self.config,
            "byzantine_partitions": self.byzantine_partitions,
            "summary": self.summary(),
            "rounds": [asdict(r) for r in self.rounds],
        }
        if self.engine_options:
            data["engine_options"] = dict(self.engine_options)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        result = cls(
            config=data["config"],
            key=data["key"],
            engine=data.get("engine", "?"),
            byzantine_partitions=list(data.get("byzantine_partitions", [])),
            rounds=[RoundRecord(**r) for r in data["rounds"]],
            wall_seconds=float(data.get("summary", {}).get("wall_seconds", 0.0)),
            initial_acc=float(data.get("summary", {}).get("initial_acc", float("nan"))),
            engine_options=dict(data.get("engine_options", {})),
        )
        return result

    def write(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``<key>.json`` (config, summary, rounds) and ``<key>.csv`` (one row per round).

        Files are written to a temporary name and renamed, so an interrupted sweep never leaves
        a half-written result that a resumed sweep would mistake for a finished run.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        json_path = directory / f"{self.key}.json"
        csv_path = directory / f"{self.key}.csv"
        # Each file reaches the disk (fsync) before its rename, so a crash or power loss leaves
        # either the old state or a whole file; the JSON, which marks the run done, goes last.
        tmp = csv_path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(RoundRecord.__dataclass_fields__))
            writer.writeheader()
            for record in self.rounds:
                writer.writerow(asdict(record))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(csv_path)
        tmp = json_path.with_suffix(".json.tmp")
        with tmp.open("w") as fh:
            fh.write(json.dumps(self.to_json(), indent=1, default=_json_default))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(json_path)
        return json_path, csv_path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def confusion(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """The four counts with precision and recall ("positive" = Byzantine; NaN when undefined)."""
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
    }


def detection_counts(diag: RoundDiagnostics, byzantine_nodes: set[int]) -> dict[str, float]:
    """Detection of one round against the ground truth; "positive" = Byzantine.

    A reply counts as detected when it did not enter the aggregate (rejected as malformed or
    filtered by the rule); for rules that select no rows (median, trimmed mean, GeoMed) every
    valid reply counts as selected.
    """
    received = set(diag.received)
    selected = set(diag.selected)
    byz = received & byzantine_nodes
    honest = received - byzantine_nodes
    tp = len(byz - selected)
    fn = len(byz & selected)
    fp = len(honest - selected)
    tn = len(honest & selected)
    return {
        **confusion(tp, fp, fn, tn),
        "honest_selected_rate": tn / len(honest) if honest else float("nan"),
        "byzantine_selected_rate": fn / len(byz) if byz else float("nan"),
    }


def make_evaluator(cfg: ExperimentConfig, task: Any, device: torch.device) -> Callable[[int, ArrayRecord], MetricRecord | None]:
    """Centralised test-set evaluation of the global model every ``cfg.eval_every`` rounds."""
    _, test = task.load(cfg.data_dir or None)
    model = task.build_model().to(device)
    batches = []
    for start in range(0, len(test), 1000):
        idx = np.arange(start, min(start + 1000, len(test)))
        batches.append(test.get_batch(idx))

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round != 0 and server_round % cfg.eval_every and server_round != cfg.rounds:
            return None
        model.load_state_dict(arrays.to_torch_state_dict(), strict=True)
        model.eval()
        loss_sum, correct, count = 0.0, 0, 0
        with torch.no_grad():
            for x, y in batches:
                x, y = x.to(device), y.to(device)
                out = model(x)
                loss_sum += float(torch.nn.functional.cross_entropy(out, y, reduction="sum"))
                correct += int((out.argmax(1) == y).sum())
                count += len(y)
        return MetricRecord({"test-acc": correct / count, "test-loss": loss_sum / count})

    return evaluate


def _defense(cfg: ExperimentConfig) -> tuple[type, dict[str, Any]]:
    """The strategy class of ``cfg``'s defense and its keyword arguments (the declared f goes to
    rules taking one)."""
    try:
        cls = STRATEGIES[cfg.defense]
    except KeyError:
        raise ValueError(f"unknown defense {cfg.defense!r}; known: {sorted(STRATEGIES)}") from None
    params = dict(cfg.defense_params)
    if "f" in get_rule(cls.rule_name).param_names:
        params.setdefault("f", cfg.f)
    return cls, params


def rule_under_test(cfg: ExperimentConfig) -> tuple[str, dict[str, Any]]:
    """The rule of ``cfg``'s defense and the parameters its strategy passes it (declared f included)."""
    cls, params = _defense(cfg)
    names = get_rule(cls.rule_name).param_names
    return cls.rule_name, {k: v for k, v in params.items() if k in names}


def build_strategy(cfg: ExperimentConfig, on_round: Callable[[RoundDiagnostics], None] | None = None):
    """The defense of ``cfg`` as a Flower strategy (the declared f goes to rules taking one)."""
    cls, params = _defense(cfg)
    return cls(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_available_nodes=cfg.num_clients,
        min_train_nodes=cfg.num_clients,
        server_lr=cfg.server_lr,
        server_momentum=cfg.momentum,
        server_weight_decay=cfg.weight_decay,
        lr_milestones=cfg.lr_milestones,
        device=cfg.device,
        seed=cfg.seed,
        on_round=on_round,
        **params,
    )


def check_feasible(cfg: ExperimentConfig) -> None:
    """Raise ``ValueError`` for a set-up that would only run as "global model kept".

    An attack with no Byzantine client, and a rule that cannot run with ``num_clients`` rows
    and its ``f`` (Krum and Multi-Krum need n >= 2f + 3, Bulyan n >= 4f + 3, ...): asked of the
    rule itself on a dummy matrix, so every rule's own requirement is checked.
    """
    if cfg.attack != "none" and cfg.num_byzantine == 0:
        raise ValueError(
            f"attack {cfg.attack!r} with 0 Byzantine clients would run as no attack: "
            "set num-byzantine (or byzantine-fraction) above 0, or attack 'none'"
        )
    strategy = build_strategy(cfg)
    dummy = torch.randn(cfg.num_clients, 8, generator=torch.Generator().manual_seed(0))
    params = dict(strategy.rule_params)
    if "generator" in strategy.rule.param_names:
        params["generator"] = torch.Generator().manual_seed(0)
    try:
        strategy.rule(dummy, **params)
    except InsufficientClientsError as err:
        raise ValueError(
            f"defense {cfg.defense!r} cannot aggregate {cfg.num_clients} clients with f = {cfg.f}: {err}"
        ) from None


def check_run(cfg: ExperimentConfig, name: Callable[[str], str] = lambda key: f"Config key {key!r}") -> None:
    """Everything a run would reject only later, as ``ValueError`` naming the setting: the
    clients' settings, the attack's and the defense's parameters, feasibility.

    ``name`` turns a run-config key into how the caller calls it (the CLI: ``--attack-params``).
    """
    from clients.attacks import AttackParams
    from clients.client_app import resolve_settings

    resolve_settings(cfg.client_config())
    try:
        AttackParams.from_config({**cfg.client_config(), "knowledge": cfg.knowledge})
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name('attack-params')} for {cfg.attack!r}: {err}") from None
    try:
        build_strategy(cfg)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name('defense-params')} for {cfg.defense!r}: {err}") from None
    if cfg.eval_every < 1:
        raise ValueError(f"{name('eval-every')} must be >= 1, got {cfg.eval_every}")
    if cfg.declared_f is not None and cfg.declared_f < 0:
        raise ValueError(f"{name('declared-f')} must be >= 0, got {cfg.declared_f}")
    check_feasible(cfg)


def run_on_grid(
    grid: Grid,
    cfg: ExperimentConfig,
    *,
    engine: str = "?",
    progress: Callable[[RoundRecord], None] | None = None,
    timeout: float = 3600.0,
    min_nodes: int | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
) -> RunResult:
    """Run ``cfg`` on ``grid`` (any Flower Grid) and return the collected result.

    ``timeout``: seconds each round waits for replies (``Strategy.start(timeout=...)``).
    ``min_nodes``: nodes a round needs (default ``cfg.num_clients``); a deployment that must go
    on after losing SuperNodes sets it lower once all nodes have connected.
    ``checkpoint``: a file (``<results>/<key>.partial.pt``, see :func:`checkpoint_path`) the run
    saves its state to after every ``checkpoint_every``-th round (default ``cfg.eval_every``,
    the last round excepted), and resumes from when it exists and belongs to this run: the
    result is then the one an uninterrupted run gives, timings aside.  A checkpoint of another
    run, or one that cannot be read, is renamed ``*.bad`` (with a warning) and the run starts
    from round 1.  The caller deletes the file once the result is written.  ``None``: no file.
    """
    from clients.client_app import resolve_device
    from clients.tasks import get_task

    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    task = get_task(cfg.task)
    device = resolve_device(cfg.device)  # the clients resolve "auto" the same way
    initial = ArrayRecord(task.build_model().state_dict())
    evaluate = make_evaluator(cfg, task, device)

    client_config = cfg.client_config()
    adversary = OmniscientAdversary.from_config(grid, {**client_config, "knowledge": cfg.knowledge}, device=device)
    if not adversary.params.target:
        # The omniscient adversary knows the defense: defense-aware attacks simulate this rule.
        target, target_params = rule_under_test(cfg)
        adversary.params = dataclasses.replace(adversary.params, target=target, target_params=target_params)
    result = RunResult(
        config=cfg.to_dict(),
        key=cfg.key(),
        engine=engine,
        byzantine_partitions=sorted(int(p) for p in adversary.byzantine_partitions),
    )
    evals: dict[int, MetricRecord] = {}
    last_tick = [time.perf_counter()]
    strategy = build_strategy(cfg)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    every = cfg.eval_every if checkpoint_every is None else int(checkpoint_every)
    if every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {every}")
    batched = bool(getattr(grid, "batched_clients", False))
    offset, wall_before = 0, 0.0
    if ckpt is not None:
        saved = _read_checkpoint(ckpt, cfg, engine=engine, batched_clients=batched)
        if saved is not None:
            fresh_rng = _get_rng_state()
            try:
                strategy.load_state_dict(saved["strategy"])
                rounds = [RoundRecord(**r) for r in saved["rounds"]]
                if [r.round for r in rounds] != list(range(1, saved["round"] + 1)):
                    raise ValueError("the saved records are not rounds 1..k")
                model = ArrayRecord(saved["model"])
                if list(model.keys()) != list(initial.keys()):
                    raise ValueError("the saved model's arrays are not this task's")
                _set_rng_state(saved["rng"])
            except Exception as err:  # noqa: BLE001 - any misfit: start afresh, never half-restored
                _set_rng_state(fresh_rng)
                _set_aside(ckpt, f"cannot restore it ({type(err).__name__}: {err})")
                strategy = build_strategy(cfg)
            else:
                initial = model
                offset = int(saved["round"])
                result.rounds = rounds
                evals.update({int(k): MetricRecord(dict(v)) for k, v in saved["evals"].items()})
                result.initial_acc = float(saved["initial_acc"])
                wall_before = float(saved["wall_seconds"])
                strategy.round_offset = offset

    def save_checkpoint(server_round: int, arrays: ArrayRecord) -> None:
        assert ckpt is not None
        state = {
            "format": CHECKPOINT_FORMAT,
            "key": cfg.key(),
            "config": _checked_config(cfg),
            "engine": engine,
            "batched_clients": batched,
            "round": server_round,
            "model": arrays.to_torch_state_dict(),
            "strategy": strategy.state_dict(),
            "rounds": [asdict(r) for r in result.rounds],
            "evals": {int(k): {kk: float(vv) for kk, vv in v.items()} for k, v in evals.items()},
            "initial_acc": float(result.initial_acc),
            "wall_seconds": wall_before + time.perf_counter() - start,
            "rng": _get_rng_state(),
        }
        try:
            _write_checkpoint(ckpt, state)
        except OSError as err:  # a full disk must not end the run: it only loses its restart point
            warnings.warn(f"checkpoint {ckpt} not written after round {server_round}: {err}", RuntimeWarning, stacklevel=2)

    def evaluate_and_record(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if offset and server_round == 0:
            # Resumed: Flower's evaluation of the starting model is the saved round's, already
            # recorded; the rounds it counts from 1 are the run's rounds offset + 1, ...
            last_tick[0] = time.perf_counter()
            return None
        server_round += offset
        metrics = evaluate(server_round, arrays)
        if metrics is not None:
            evals[server_round] = metrics
        if server_round == 0:
            result.initial_acc = float(metrics["test-acc"]) if metrics is not None else float("nan")
            last_tick[0] = time.perf_counter()
            return metrics
        diag = strategy.history[-1]
        adv = adversary.history[-1] if adversary.history else {}
        byz_nodes = {int(n) for n in adv.get("byzantine_node_ids", [])}
        det = detection_counts(diag, byz_nodes)
        now = time.perf_counter()
        record = RoundRecord(
            round=server_round,
            test_acc=float(metrics["test-acc"]) if metrics is not None else float("nan"),
            test_loss=float(metrics["test-loss"]) if metrics is not None else float("nan"),
            received=len(diag.received),
            valid=len(diag.valid),
            selected=len(diag.selected) if diag.outcome == "aggregated" else 0,
            agg_seconds=diag.seconds,
            round_seconds=now - last_tick[0],
            attack=str(adv.get("attack", cfg.attack)),
            outcome=diag.outcome,
            **det,
        )
        last_tick[0] = now
        result.rounds.append(record)
        if ckpt is not None and server_round % every == 0 and server_round < cfg.rounds:
            save_checkpoint(server_round, arrays)
        if progress is not None:
            progress(record)
        return metrics

    if min_nodes is not None:
        strategy.min_available_nodes = strategy.min_train_nodes = int(min_nodes)
    strategy.start(
        grid=adversary,
        initial_arrays=initial,
        num_rounds=cfg.rounds - offset,
        timeout=timeout,
        train_config=ConfigRecord(client_config),
        evaluate_config=ConfigRecord(client_config),
        evaluate_fn=evaluate_and_record,
    )
    result.wall_seconds = wall_before + time.perf_counter() - start
    return result


# ---------------------------------------------------------------------------------------------
# Checkpoints of a run in progress
# ---------------------------------------------------------------------------------------------

#: Version of the checkpoint's layout; a file of another version is set aside, not read.
CHECKPOINT_FORMAT = 1
#: Settings that do not change what a run computes: a checkpoint may differ in them.
_NOT_COMPUTED = ("data_dir", "download", "num_cpus", "num_gpus")


def checkpoint_path(results_dir: str | Path, key: str) -> Path:
    """Where the run named ``key`` keeps its checkpoint in ``results_dir``: ``<key>.partial.pt``."""
    return Path(results_dir) / f"{key}.partial.pt"


def _checked_config(cfg: ExperimentConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.to_dict().items() if k not in _NOT_COMPUTED}


def _set_aside(path: Path, why: str) -> None:
    bad = path.with_name(path.name + ".bad")
    try:
        path.replace(bad)
    except OSError as err:
        warnings.warn(f"checkpoint {path}: {why}; could not rename it ({err}); starting from round 1", RuntimeWarning, stacklevel=3)
        return
    warnings.warn(f"checkpoint {path}: {why}; moved to {bad.name}, starting from round 1", RuntimeWarning, stacklevel=3)


def _read_checkpoint(path: Path, cfg: ExperimentConfig, *, engine: str, batched_clients: bool) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if there is one and it is this run's; else None (a damaged or
    foreign file is set aside as ``*.bad``)."""
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, not a torch file, unknown types, ...
        _set_aside(path, f"unreadable ({type(err).__name__}: {err})")
        return None
    why = None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        why = "not a checkpoint of this version"
    elif data.get("key") != cfg.key() or data.get("config") != _checked_config(cfg):
        why = f"it is the checkpoint of another run ({data.get('key')!r}, not {cfg.key()!r})"
    elif data.get("engine") != engine or data.get("batched_clients") != batched_clients:
        why = (f"it was written by the {data.get('engine')!r} engine (batched clients: {data.get('batched_clients')}), "
               f"this run uses {engine!r} (batched clients: {batched_clients})")
    elif not isinstance(data.get("round"), int) or not 1 <= data["round"] < cfg.rounds:
        why = f"its round {data.get('round')!r} is not one of 1..{cfg.rounds - 1}"
    elif not all(k in data for k in ("model", "strategy", "rounds", "evals", "initial_acc", "wall_seconds", "rng")):
        why = "it lacks part of the run's state"
    if why is not None:
        _set_aside(path, why)
        return None
    return data


def _to_cpu_tree(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu")
    if isinstance(value, dict):
        return {k: _to_cpu_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu_tree(v) for v in value)
    return value


def _write_checkpoint(path: Path, data: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, on disk (fsync) before it replaces ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as fh:
            torch.save(_to_cpu_tree(data), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _get_rng_state() -> dict[str, Any]:
    """The process-wide generators (torch, CUDA when in use, numpy's legacy one, Python's
    ``random``, which Flower's node sampling draws from), as plain data and tensors."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def client_app():
    """The ClientApp every simulated node runs: the honest app wrapped by the Byzantine mod."""
    from clients.app import app

    return app


def run_experiment(
    cfg: ExperimentConfig,
    *,
    engine: str = "inprocess",
    progress: Callable[[RoundRecord], None] | None = None,
    ray_address: str | None = None,
    batched_clients: bool = False,
    checkpoint: str | Path | None = None,
) -> RunResult:
    """Run ``cfg`` under ``engine``: ``inprocess`` (no Ray) or ``ray`` (Flower's simulation engine).

    ``ray_address`` attaches the Ray engine to an existing cluster (``ray start --head``) instead
    of starting a local one.  ``batched_clients`` (in-process engine only): each round's FedSGD
    client steps are computed in batched ``torch.func`` calls before the ClientApp runs for
    every node (see :class:`~simulations.engine.inprocess.InProcessGrid`); the run's config and
    key are unchanged, the result's ``engine_options`` records it.  ``checkpoint``: a file to
    save the run's state to every ``cfg.eval_every`` rounds and resume from (see
    :func:`run_on_grid`); None (default) writes none.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if batched_clients and engine != "inprocess":
        raise ValueError(f"batched_clients needs the in-process engine, not {engine!r}")
    if engine == "inprocess":
        from .inprocess import InProcessGrid

        grid = InProcessGrid(client_app(), cfg.num_clients, seed=cfg.seed, batched_clients=batched_clients)
        result = run_on_grid(grid, cfg, engine=engine, progress=progress, checkpoint=checkpoint)
        if batched_clients:
            result.engine_options["batched_clients"] = True
        return result

    from flwr.simulation import run_simulation

    for key, value in SIMULATION_ENV.items():
        os.environ.setdefault(key, value)
    box: dict[str, Any] = {}
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        box["result"] = run_on_grid(grid, cfg, engine="ray", progress=progress, checkpoint=checkpoint)

    init_args: dict[str, Any] = {"address": ray_address} if ray_address else {"num_cpus": os.cpu_count() or 2}
    backend_config = {
        "client_resources": {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
        "init_args": init_args,
    }
    try:
        run_simulation(
            server_app=server,
            client_app=client_app(),
            num_supernodes=cfg.num_clients,
            backend_config=backend_config,
        )
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    if "result" not in box:
        raise RuntimeError("the simulation ended without a result (see the Flower log above)")
    return box["result"]
