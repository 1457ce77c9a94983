"""Sweeps that share runs copy them from each other's folders instead of running them twice."""

from __future__ import annotations

from pathlib import Path

import pytest

import simulations.sweeps.runner as runner
from simulations.cli.main import main
from simulations.config import ExperimentConfig
from simulations.engine import RunResult, checkpoint_path
from simulations.sweeps.files import read_sweep
from simulations.sweeps.runner import result_path, run_sweep

TINY = dict(task="digits", num_clients=4, num_byzantine=1, rounds=2, eval_every=1)
A = ExperimentConfig(defense="mean", **TINY)
B = ExperimentConfig(defense="median", **TINY)
C = ExperimentConfig(defense="trimmed_mean", **TINY)


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another sweep's folder with A, B and C finished."""
    folder = tmp_path_factory.mktemp("other")
    run_sweep([A, B, C], folder, show_progress=False)
    return folder


def _must_not_run(cfg, **kwargs):
    raise AssertionError(f"{cfg.key()} was run although another sweep had finished it")


def test_a_shared_run_is_copied_byte_for_byte_not_run(tmp_path: Path, other: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "run_experiment", _must_not_run)
    checkpoint_path(tmp_path, A.key()).write_bytes(b"stale")  # a checkpoint of the same run: superseded
    [result] = run_sweep([A], tmp_path, show_progress=False, reuse_from=[other])
    assert result.key == A.key()
    for suffix in (".json", ".csv"):
        mine, theirs = result_path(tmp_path, A).with_suffix(suffix), result_path(other, A).with_suffix(suffix)
        assert mine.read_bytes() == theirs.read_bytes()
    assert not checkpoint_path(tmp_path, A.key()).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in other.iterdir() if p.stem == A.key())


def test_damaged_or_missing_shared_runs_are_run(tmp_path: Path, other: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    damaged = tmp_path / "damaged-other"
    damaged.mkdir()
    result_path(damaged, A).write_text(result_path(other, A).read_text()[:100])
    calls: list[str] = []

    def fake_run(cfg, **kwargs):
        calls.append(cfg.key())
        return RunResult(config=cfg.to_dict(), key=cfg.key(), engine="fake", byzantine_partitions=[0])

    monkeypatch.setattr(runner, "run_experiment", fake_run)
    run_sweep([A], tmp_path / "mine", show_progress=False, reuse_from=[damaged, tmp_path / "absent"])
    assert calls == [A.key()]
    assert result_path(damaged, A).read_text() == result_path(other, A).read_text()[:100]  # left alone
    # Without reuse nothing is copied either.
    calls.clear()
    run_sweep([A], tmp_path / "fresh", show_progress=False, reuse=False, reuse_from=[other])
    assert calls == [A.key()]


def test_a_run_finished_elsewhere_during_the_sweep_is_not_run(tmp_path: Path, other: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    calls: list[str] = []

    def fake_run(cfg, **kwargs):
        calls.append(cfg.key())
        # While A runs, the other sweep finishes B.
        shared.mkdir(exist_ok=True)
        for suffix in (".json", ".csv"):
            result_path(shared, B).with_suffix(suffix).write_bytes(result_path(other, B).with_suffix(suffix).read_bytes())
        return RunResult(config=cfg.to_dict(), key=cfg.key(), engine="fake", byzantine_partitions=[0])

    monkeypatch.setattr(runner, "run_experiment", fake_run)
    results = run_sweep([A, B], tmp_path / "mine", show_progress=False, reuse_from=[shared])
    assert calls == [A.key()]
    assert [r.key for r in results] == [A.key(), B.key()]
    assert result_path(tmp_path / "mine", B).read_bytes() == result_path(other, B).read_bytes()


@pytest.fixture
def stop_resource_tracker():
    yield
    from multiprocessing import resource_tracker

    resource_tracker._resource_tracker._stop()  # noqa: SLF001 - see tests/test_resume.py


def test_parallel_sweeps_hand_out_runs_late_enough_to_see_shared_ones(tmp_path: Path, other: Path, stop_resource_tracker) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()

    def publish_c(result: RunResult) -> None:  # the other sweep finishes C while A and B run
        for suffix in (".json", ".csv"):
            result_path(shared, C).with_suffix(suffix).write_bytes(result_path(other, C).with_suffix(suffix).read_bytes())

    mine = tmp_path / "mine"
    results = run_sweep([A, B, C], mine, show_progress=False, jobs=2, reuse_from=[shared], on_result=publish_c)
    assert [r.key for r in results] == [A.key(), B.key(), C.key()]
    # C came from the shared folder (identical bytes, its own timings), A and B were run here.
    assert result_path(mine, C).read_bytes() == result_path(other, C).read_bytes()
    assert result_path(mine, A).read_bytes() != result_path(other, A).read_bytes()


def test_sweep_files_name_the_sweeps_they_share_runs_with(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('reuse-from = ["converged-mnist"]\n[base]\ntask = "digits"\n')
    assert read_sweep(path).reuse_from == ("converged-mnist",)
    for bad in ('"converged-mnist"', '["../elsewhere"]', "[1]", '[""]'):
        path.write_text(f"reuse-from = {bad}\n")
        with pytest.raises(ValueError, match="reuse-from must be a list of sweep names"):
            read_sweep(path)


def test_cli_dry_run_lists_runs_to_copy(tmp_path: Path, other: Path, capsys) -> None:
    args = ["sweep", "--defense", "mean,geomed", "--task", "digits", "--num-clients", "4", "--num-byzantine", "1",
            "--rounds", "2", "--eval-every", "1", "-q", "--results-dir", str(tmp_path / "mine")]
    assert main([*args, "--reuse-from", str(other), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"2 runs, 0 already done, 1 to copy from {other.name}" in out
    assert f"[copy] {A.key()}" in out and "[todo] " in out
    assert main([*args, "--reuse-from", str(tmp_path / "nope"), "--dry-run"]) == 2
    assert "--reuse-from" in capsys.readouterr().err
