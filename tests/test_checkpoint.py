"""A run killed mid-way resumes from its checkpoint and ends exactly as an uninterrupted run.

The kill is simulated by raising from the ``progress`` callback after round k: the checkpoint the
run left behind (written every ``eval_every`` rounds) is then resumed by running the same
config again; every figure of every round must equal the uninterrupted run's, bit for bit (only
the timings differ), and so must the final model (the test loss at the last round, at full
precision, depends on every bit of it; the model itself is compared through a hook).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import pytest
import torch

from simulations.config import ExperimentConfig
from simulations.engine import RoundRecord, checkpoint_path, run_experiment
from simulations.engine import experiment as experiment_module
from simulations.sweeps.runner import result_path, run_sweep

TIMINGS = {"round_seconds", "agg_seconds"}
BASE = ExperimentConfig(task="digits", num_clients=6, num_byzantine=1, rounds=6, eval_every=2, batch_size=16)

CASES = {
    "mean-none": BASE.replace(defense="mean", attack="none"),
    "signguard_sim-lie": BASE.replace(defense="signguard_sim", attack="lie", lr_milestones=(3,), defense_params={"warmup_rounds": 1}),
    "centered_clipping-sign_flip": BASE.replace(defense="centered_clipping", attack="sign_flip"),
    "signguard-time_varying": BASE.replace(defense="signguard", attack="time_varying", attack_params={"tv_period": "round"}),
    "multi_krum-noise": BASE.replace(defense="multi_krum", attack="noise"),
}


class Killed(Exception):
    """Stands for the process being killed after a round."""


def _kill_after(k: int):
    def progress(record: RoundRecord) -> None:
        if record.round == k:
            raise Killed(k)

    return progress


def _figures(result) -> list[dict]:
    return [{k: v for k, v in dataclasses.asdict(r).items() if k not in TIMINGS} for r in result.rounds]


def _same(a: list[dict], b: list[dict]) -> bool:
    def eq(x, y) -> bool:
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            return True
        return x == y and type(x) is type(y)

    return len(a) == len(b) and all(ra.keys() == rb.keys() and all(eq(ra[k], rb[k]) for k in ra) for ra, rb in zip(a, b))


@pytest.fixture
def final_models(monkeypatch):
    """The model each run's evaluator saw last (the final global model), captured per run."""
    models: list[dict[str, torch.Tensor]] = []
    real = experiment_module.make_evaluator

    def make_evaluator(cfg, task, device):
        evaluate = real(cfg, task, device)

        def capture(server_round, arrays):
            if server_round == cfg.rounds:
                models.append({k: v.clone() for k, v in arrays.to_torch_state_dict().items()})
            return evaluate(server_round, arrays)

        return capture

    monkeypatch.setattr(experiment_module, "make_evaluator", make_evaluator)
    return models


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("k", [4, 3])
def test_resumed_run_equals_uninterrupted(tmp_path: Path, final_models, name: str, k: int) -> None:
    cfg = CASES[name]
    ckpt = checkpoint_path(tmp_path, cfg.key())
    whole = run_experiment(cfg)
    assert not ckpt.exists()

    with pytest.raises(Killed):
        run_experiment(cfg, checkpoint=ckpt, progress=_kill_after(k))
    saved = torch.load(ckpt, weights_only=True)
    assert saved["round"] == k - k % cfg.eval_every  # the last evaluation round before the kill
    seen: list[int] = []
    resumed = run_experiment(cfg, checkpoint=ckpt, progress=lambda r: seen.append(r.round))
    assert seen == list(range(saved["round"] + 1, cfg.rounds + 1))  # no round redone before the checkpoint

    assert [r.round for r in resumed.rounds] == list(range(1, cfg.rounds + 1))
    assert _same(_figures(resumed), _figures(whole)), (_figures(resumed), _figures(whole))
    assert resumed.initial_acc == whole.initial_acc
    assert resumed.byzantine_partitions == whole.byzantine_partitions
    last = resumed.rounds[-1]
    assert not math.isnan(last.test_loss) and last.test_loss == whole.rounds[-1].test_loss
    first, again = final_models[0], final_models[-1]
    assert len(final_models) == 2 and first.keys() == again.keys()
    assert all(torch.equal(first[n], again[n]) and first[n].dtype == again[n].dtype for n in first)


def test_sweep_resumes_and_deletes_the_checkpoint(tmp_path: Path) -> None:
    cfg = CASES["signguard_sim-lie"]
    [whole] = run_sweep([cfg], tmp_path / "whole", show_progress=False)
    folder = tmp_path / "killed"
    real = experiment_module.run_on_grid

    def killed_run(*args, **kwargs):
        kwargs["progress"] = _kill_after(3)
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiment_module, "run_on_grid", killed_run)
        with pytest.raises(Killed):
            run_sweep([cfg], folder, show_progress=False)
    ckpt = checkpoint_path(folder, cfg.key())
    assert ckpt.is_file() and ckpt.name == f"{cfg.key()}.partial.pt"
    assert not result_path(folder, cfg).exists()
    assert not list(folder.glob("*.tmp"))  # written atomically
    [resumed] = run_sweep([cfg], folder, show_progress=False)
    assert _same(_figures(resumed), _figures(whole))
    assert result_path(folder, cfg).is_file()
    assert not ckpt.exists()  # deleted once the result is written
    assert not list(folder.glob("*.partial.pt*"))


def test_no_checkpoint_by_default(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = CASES["mean-none"]
    with pytest.raises(Killed):
        run_experiment(cfg, progress=_kill_after(4))
    run_experiment(cfg)
    assert not list(tmp_path.rglob("*.partial.pt*"))


def _killed_checkpoint(tmp_path: Path, cfg: ExperimentConfig) -> Path:
    ckpt = checkpoint_path(tmp_path, cfg.key())
    with pytest.raises(Killed):
        run_experiment(cfg, checkpoint=ckpt, progress=_kill_after(4))
    assert ckpt.is_file()
    return ckpt


def test_checkpoint_of_another_config_is_set_aside(tmp_path: Path) -> None:
    cfg = CASES["mean-none"]
    other = cfg.replace(seed=1)
    ckpt = _killed_checkpoint(tmp_path, other)
    target = checkpoint_path(tmp_path, cfg.key())
    ckpt.replace(target)  # the other run's state under this run's name
    seen: list[int] = []
    with pytest.warns(RuntimeWarning, match="another run"):
        result = run_experiment(cfg, checkpoint=target, progress=lambda r: seen.append(r.round))
    assert seen == list(range(1, cfg.rounds + 1))  # started from round 1
    assert target.with_name(target.name + ".bad").is_file()
    assert _same(_figures(result), _figures(run_experiment(cfg)))


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "wrong-state"])
def test_damaged_checkpoint_is_set_aside(tmp_path: Path, how: str) -> None:
    cfg = CASES["centered_clipping-sign_flip"]
    ckpt = _killed_checkpoint(tmp_path, cfg)
    if how == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif how == "garbage":
        ckpt.write_bytes(b"not a checkpoint")
    elif how == "empty":
        ckpt.write_bytes(b"")
    else:  # readable, this run's, but its strategy state does not fit the defense
        data = torch.load(ckpt, weights_only=True)
        data["strategy"]["rule_state"]["type"] = "SomethingElse"
        torch.save(data, ckpt)
    seen: list[int] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_experiment(cfg, checkpoint=ckpt, progress=lambda r: seen.append(r.round))
    assert any(issubclass(w.category, RuntimeWarning) and "starting from round 1" in str(w.message) for w in caught)
    assert seen == list(range(1, cfg.rounds + 1))
    assert ckpt.with_name(ckpt.name + ".bad").is_file()
    assert _same(_figures(result), _figures(run_experiment(cfg)))


def test_cli_run_resumes_from_its_results_dir(tmp_path: Path) -> None:
    from simulations.cli.main import main

    cfg = CASES["centered_clipping-sign_flip"]
    argv = ["run", "--task", "digits", "--num-clients", "6", "--num-byzantine", "1", "--rounds", "6",
            "--eval-every", "2", "--batch-size", "16", "--defense", "centered_clipping", "--attack", "sign_flip",
            "-q", "--results-dir", str(tmp_path)]
    real = experiment_module.run_on_grid
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiment_module, "run_on_grid", lambda *a, **kw: real(*a, **{**kw, "progress": _kill_after(5)}))
        with pytest.raises(Killed):
            main(argv)
    [ckpt] = list(tmp_path.glob("*.partial.pt"))
    assert ckpt == checkpoint_path(tmp_path, cfg.key())  # the flags make the same run as cfg
    assert torch.load(ckpt, weights_only=True)["round"] == 4
    assert main(argv) == 0
    assert not list(tmp_path.glob("*.partial.pt*"))
    [resumed] = run_sweep([cfg], tmp_path, show_progress=False)  # loaded from the file just written
    assert _same(_figures(resumed), _figures(run_experiment(cfg)))
