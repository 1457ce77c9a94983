"""Resuming a sweep trusts only whole result files: damaged ones are set aside and run again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations.cli.main import main
from simulations.config import ExperimentConfig
from simulations.sweeps.runner import check_result, load_results, result_path, run_sweep

CFG = ExperimentConfig(task="digits", num_clients=4, num_byzantine=1, rounds=2, eval_every=1, defense="mean")


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    run_sweep([CFG], tmp_path, show_progress=False)
    return result_path(tmp_path, CFG)


def _damage(path: Path, how: str) -> None:
    data = json.loads(path.read_text())
    if how == "truncated":
        path.write_text(path.read_text()[: len(path.read_text()) // 2])
    elif how == "empty":
        path.write_text("")
    elif how == "missing-round":
        data["rounds"] = data["rounds"][:1]
        path.write_text(json.dumps(data))
    elif how == "missing-field":
        del data["rounds"][0]["test_acc"]
        path.write_text(json.dumps(data))
    elif how == "other-config":
        data["config"]["rounds"] = 5
        path.write_text(json.dumps(data))


@pytest.mark.parametrize("how", ["truncated", "empty", "missing-round", "missing-field", "other-config"])
def test_damaged_results_are_detected(finished: Path, how: str) -> None:
    assert check_result(finished, CFG)[0] is not None
    _damage(finished, how)
    result, problem = check_result(finished, CFG)
    assert result is None and problem


def test_resume_moves_a_damaged_file_aside_and_runs_again(finished: Path, capsys) -> None:
    good = finished.read_text()
    _damage(finished, "missing-round")
    [result] = run_sweep([CFG], finished.parent, show_progress=False)
    assert len(result.rounds) == 2
    assert "holds 1 of 2 rounds" in capsys.readouterr().err
    accs = lambda text: [(r["test_acc"], r["selected"]) for r in json.loads(text)["rounds"]]  # noqa: E731
    assert accs(finished.read_text()) == accs(good)  # redone, same numbers
    kept = list((finished.parent / "damaged").glob("*.json"))
    assert len(kept) == 1  # nothing lost: the damaged file is kept for inspection


def test_dry_run_and_report_say_which_files_are_damaged(finished: Path, capsys) -> None:
    _damage(finished, "truncated")
    folder = str(finished.parent)
    assert main(["sweep", "--task", "digits", "--num-clients", "4", "--num-byzantine", "1", "--rounds", "2",
                 "--eval-every", "1", "--defense", "mean", "--results-dir", folder, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "0 already done, 1 damaged (to redo)" in out and "[redo]" in out
    assert load_results([finished.parent]) == []
    assert "skipping damaged result" in capsys.readouterr().err


def test_no_progress_bars_when_stderr_is_not_a_terminal(tmp_path: Path, capsys) -> None:
    """A sweep's log file was 98 KB of carriage returns: bars only on a terminal; the line per
    finished run stays."""
    run_sweep([CFG], tmp_path, show_progress=True)
    captured = capsys.readouterr()
    assert "\r" not in captured.err
    assert "best acc" in captured.out
