"""The signguard-sim command: tiny end-to-end runs, resumable sweeps, the main job, bad flags."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import simulations.cli.args as cli_args
import simulations.cli.main as cli
from simulations.cli.main import main
from simulations.config import ExperimentConfig
from simulations.engine import RoundRecord, RunResult
from simulations.sweeps import named as named_sweeps
from simulations.sweeps import runner as sweep_module

TINY = ["--num-clients", "4", "--num-byzantine", "1", "--rounds", "2", "--eval-every", "1", "-q"]
SUMMARY_KEYS = {
    "best_acc", "final_acc", "initial_acc", "honest_selected_rate", "byzantine_selected_rate", "judged_rounds",
    "tp", "fp", "fn", "tn", "precision", "recall", "mean_agg_seconds", "mean_round_seconds", "wall_seconds",
}
ROUND_FIELDS = [f.name for f in dataclasses.fields(RoundRecord)]


def test_run_end_to_end_writes_json_and_csv(tmp_path: Path, capsys) -> None:
    out = tmp_path / "runs"
    rc = main(["run", *TINY, "--defense", "signguard", "--attack", "sign_flip", "--results-dir", str(out)])
    assert rc == 0
    [json_path] = list(out.glob("*.json"))
    [csv_path] = list(out.glob("*.csv"))
    assert json_path.stem == csv_path.stem
    assert json_path.stem.startswith("digits-signguard-sign_flip-b1-iid-s0-")
    data = json.loads(json_path.read_text())
    assert set(data) == {"key", "engine", "config", "byzantine_partitions", "summary", "rounds"}
    assert data["engine"] == "inprocess" and data["key"] == json_path.stem
    assert set(data["summary"]) == SUMMARY_KEYS
    assert ExperimentConfig(**{**data["config"], "lr_milestones": tuple(data["config"]["lr_milestones"])}).key() == data["key"]
    assert len(data["byzantine_partitions"]) == 1
    assert [list(r) for r in data["rounds"]] == [ROUND_FIELDS] * 2
    for record in data["rounds"]:
        assert record["received"] == 4
        assert record["tp"] + record["fn"] == 1  # the one Byzantine client, detected or not
        assert record["tp"] + record["fp"] + record["fn"] + record["tn"] == 4
        assert 0.0 <= record["test_acc"] <= 1.0
    with csv_path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ROUND_FIELDS and len(rows) == 2
    printed = capsys.readouterr().out
    assert "best accuracy" in printed and str(json_path) in printed


def test_every_experiment_setting_has_a_flag() -> None:
    flags = {s.attr for s in cli_args.CONFIG_FLAGS}
    assert flags == {f.name for f in dataclasses.fields(ExperimentConfig)}
    parser = cli_args.build_parser()
    run_help = " ".join(parser._subparsers._group_actions[0].choices["run"].format_help().split())  # noqa: SLF001
    for setting in cli_args.CONFIG_FLAGS:
        assert cli_args.option(setting) in run_help
    # Help and defaults come from the settings table (the one default of signguard-sim and flwr run).
    assert "communication rounds (default 150)" in run_help and "every k rounds (and the last) (default 5)" in run_help
    assert "--byzantine-fraction" in run_help and "--engine" in run_help and "--ray-address" in run_help
    assert "--config FILE.toml" in run_help


def test_run_flags_map_to_the_config() -> None:
    args = cli_args.build_parser().parse_args([
        "run", "--task", "digits", "--defense", "multi_krum", "--defense-params", "f=3", "--attack", "lie",
        "--attack-params", "z=0.5", "--num-clients", "20", "--byzantine-fraction", "0.25", "--partition", "shard",
        "--partition-s", "0.5", "--rounds", "7", "--batch-size", "16", "--client-mode", "fedavg", "--local-lr", "0.05",
        "--local-epochs", "2", "--server-lr", "0.5", "--momentum", "0", "--weight-decay", "0", "--lr-milestones", "3,5",
        "--seed", "4", "--eval-every", "2", "--knowledge", "benign", "--byzantine-placement", "first", "--declared-f", "4",
    ])
    cfg = cli_args.config_from_args(args)
    assert cfg == ExperimentConfig(
        task="digits", defense="multi_krum", defense_params={"f": 3}, attack="lie", attack_params={"z": 0.5},
        num_clients=20, num_byzantine=5, partition="shard", partition_s=0.5, rounds=7, batch_size=16,
        client_mode="fedavg", local_lr=0.05, local_epochs=2, server_lr=0.5, momentum=0.0, weight_decay=0.0,
        lr_milestones=(3, 5), seed=4, eval_every=2, knowledge="benign", byzantine_placement="first", declared_f=4,
    )


def test_sweep_flags_expand_to_the_product() -> None:
    args = cli_args.build_parser().parse_args([
        "sweep", "--defense", "mean,signguard", "--attack", "none,lie", "--byzantine-fraction", "0.1,0.2",
        "--num-clients", "20", "--defense-params", "",
    ])
    configs = cli_args.configs_from_sweep_args(args)
    assert len(configs) == 8
    assert {(c.defense, c.attack, c.num_byzantine) for c in configs} == {
        (d, a, m) for d in ("mean", "signguard") for a in ("none", "lie") for m in (2, 4)
    }
    # Alternatives of rule parameters are separated by ';' (',' separates the parameters).
    args = cli_args.build_parser().parse_args(["sweep", "--defense", "signguard_sim", "--defense-params", "clip=False,norm_filter=False;clip=True"])
    assert [c.defense_params for c in cli_args.configs_from_sweep_args(args)] == [{"clip": False, "norm_filter": False}, {"clip": True}]


def test_sweep_is_resumable(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "sweep"
    argv = ["sweep", "--defense", "mean,signguard", "--attack", "none,sign_flip", *TINY, "--results-dir", str(out)]
    assert main(argv) == 0
    files = sorted(out.glob("*.json"))
    assert len(files) == 4 and len(list(out.glob("*.csv"))) == 4
    mtimes = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(sweep_module, "run_experiment", must_not_run)
    assert main(argv) == 0
    assert "4 runs, 4 already done" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes

    # An interrupted sweep: one result lost -> only that run is redone.
    files[0].unlink()
    calls: list[str] = []

    def fake_run(cfg, **kwargs):
        calls.append(cfg.key())
        return RunResult(config=cfg.to_dict(), key=cfg.key(), engine="fake", byzantine_partitions=[0])

    monkeypatch.setattr(sweep_module, "run_experiment", fake_run)
    assert main(argv) == 0
    assert calls == [files[0].stem]
    # --no-reuse redoes every run.
    calls.clear()
    assert main([*argv, "--no-reuse"]) == 0
    assert sorted(calls) == sorted(p.stem for p in files)


@pytest.fixture
def stop_resource_tracker():
    """Stop the process that ``multiprocessing`` starts for a spawn-context pool (it would
    otherwise live as long as the test process, and the suite leaves no process behind)."""
    yield
    from multiprocessing import resource_tracker

    resource_tracker._resource_tracker._stop()  # noqa: SLF001 - no public way; exists since 3.8


def test_sweep_with_jobs_matches_the_sequential_sweep(tmp_path: Path, capfd, stop_resource_tracker) -> None:
    grid = ["--defense", "mean,signguard", "--attack", "none,sign_flip", *TINY]
    assert main(["sweep", *grid, "--results-dir", str(tmp_path / "one")]) == 0
    # Two worker processes; one result already there is reused, the other three are run.
    sequential = {p.name: json.loads(p.read_text()) for p in (tmp_path / "one").glob("*.json")}
    first = sorted(sequential)[0]
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / first).write_text((tmp_path / "one" / first).read_text())
    capfd.readouterr()
    assert main(["sweep", *grid, "--jobs", "2", "--results-dir", str(tmp_path / "two")]) == 0
    out, err = capfd.readouterr()
    assert "4 runs, 1 already done" in out
    # The workers log as quietly as the parent: no per-round Flower INFO lines.
    assert "[ROUND" not in out + err and "fraction_evaluate" not in out + err
    parallel = {p.name: json.loads(p.read_text()) for p in (tmp_path / "two").glob("*.json")}
    assert sorted(parallel) == sorted(sequential)
    assert len(list((tmp_path / "two").glob("*.csv"))) == 3  # the copied run brought no CSV
    for name, data in sequential.items():
        assert parallel[name]["config"] == data["config"]
        got = [(r["received"], r["selected"], r["tp"], r["fp"]) for r in parallel[name]["rounds"]]
        assert got == [(r["received"], r["selected"], r["tp"], r["fp"]) for r in data["rounds"]]
        assert parallel[name]["summary"]["best_acc"] == pytest.approx(data["summary"]["best_acc"], abs=0.02)
    # The worker processes are gone once the sweep returns (only multiprocessing's resource
    # tracker stays, which the fixture stops).
    from .conftest import descendant_pids

    def cmdline(pid: int) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # exited meanwhile
            return b"resource_tracker"

    assert [pid for pid in descendant_pids() if b"resource_tracker" not in cmdline(pid)] == []


def test_sweep_jobs_rejects_bad_values(tmp_path: Path, capsys) -> None:
    assert main(["sweep", *TINY, "--jobs", "0", "--results-dir", str(tmp_path)]) == 2
    assert "--jobs" in capsys.readouterr().err
    assert main(["sweep", *TINY, "--jobs", "2", "--engine", "ray", "--results-dir", str(tmp_path)]) == 2
    assert "in-process engine" in capsys.readouterr().err
    with pytest.raises(ValueError, match="jobs"):
        sweep_module.run_sweep([ExperimentConfig()], tmp_path, jobs=0)
    assert not list(tmp_path.glob("*.json"))


def test_sweep_list_and_dry_run(tmp_path: Path, capsys) -> None:
    assert main(["sweep", "--list"]) == 0
    listing = capsys.readouterr().out
    for name, build in named_sweeps.SWEEPS.items():
        line = next(line for line in listing.splitlines() if line.startswith(name + " "))
        assert f" {len(build())} " in line
    assert main(["sweep", "table1-mnist", "--dry-run", "--rounds", "3", "--results-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "90 runs, 0 already done" in printed and "rounds=3" in printed
    assert not list(tmp_path.glob("*.json"))


def _timed_result(cfg: ExperimentConfig, seconds_per_round: float) -> RunResult:
    nan = float("nan")
    rounds = [
        RoundRecord(round=i + 1, test_acc=0.5, test_loss=nan, received=4, valid=4, selected=4, tp=0, fp=0, fn=1, tn=3,
                    precision=nan, recall=0.0, honest_selected_rate=1.0, byzantine_selected_rate=1.0, agg_seconds=0.0,
                    round_seconds=seconds_per_round, attack=cfg.attack, outcome="aggregated")
        for i in range(cfg.rounds)
    ]
    return RunResult(config=cfg.to_dict(), key=cfg.key(), engine="inprocess", byzantine_partitions=[0], rounds=rounds)


def test_sweep_dry_run_estimates_the_time(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """Round costs come from the sweep's folder and every folder of docs/results; done runs cost nothing."""
    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path)
    base = ExperimentConfig(task="digits", num_clients=4, num_byzantine=1, rounds=120)
    # Measured elsewhere: Mean without attack at 0.5 s/round, SignGuard under LIE at 1 s/round.
    _timed_result(base.replace(defense="mean", attack="none", rounds=3), 0.5).write(tmp_path / "docs" / "results" / "old")
    _timed_result(base.replace(defense="signguard", attack="lie", rounds=2), 1.0).write(tmp_path / "sweep")
    # Already done in the sweep's folder (and itself a measurement of Mean under sign-flip, 9 s/round).
    _timed_result(base.replace(defense="mean", attack="sign_flip"), 9.0).write(tmp_path / "sweep")
    argv = ["sweep", "--task", "digits", "--num-clients", "4", "--num-byzantine", "1", "--rounds", "120",
            "--defense", "mean,signguard", "--attack", "none,sign_flip", "--dry-run", "-j", "2",
            "--results-dir", str(tmp_path / "sweep")]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Sweep (flags): 4 runs, 1 already done")
    runs = {line.split()[1]: line for line in lines[1:5]}
    keys = {(d, a): base.replace(defense=d, attack=a).key() for d in ("mean", "signguard") for a in ("none", "sign_flip")}
    assert runs[keys["mean", "sign_flip"]] == f"  [done] {keys['mean', 'sign_flip']}  rounds=120"
    assert runs[keys["mean", "none"]].endswith("rounds=120  ~1 min (0.50 s/round, task+defense+attack, 1 run)")
    # SignGuard without attack: same task and defense (1 s/round); under sign-flip too.
    assert runs[keys["signguard", "none"]].endswith("rounds=120  ~2 min (1.00 s/round, task+defense, 1 run)")
    assert runs[keys["signguard", "sign_flip"]].endswith("rounds=120  ~2 min (1.00 s/round, task+defense, 1 run)")
    # 60 + 120 + 120 s of work; two at once: 60 + 120 on one worker, 120 on the other.
    assert lines[5] == "Estimated 3 min (5 min of work, 2 jobs at once), from measured round costs of 2 runs."
    assert len(lines) == 6
    assert len(list((tmp_path / "sweep").glob("*.json"))) == 2  # nothing ran


def test_sweep_dry_run_names_unmeasured_tasks(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path)  # no docs/results at all
    argv = ["sweep", "--task", "digits", "--defense", "mean,median", "--rounds", "5", "--dry-run", "--results-dir", str(tmp_path / "s")]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(line.endswith("rounds=5  no measurement for task digits") for line in lines[1:3])
    assert lines[3] == "No measurement for task digits (2 runs not in the estimate)."


def test_main_job_is_the_default(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, stop_resource_tracker) -> None:
    base = ExperimentConfig(task="digits", num_clients=4, num_byzantine=1, rounds=2, eval_every=1)
    tiny_main = lambda: [base.replace(defense=d, attack=a) for a in ("none", "sign_flip") for d in ("mean", "signguard")]  # noqa: E731
    monkeypatch.setitem(named_sweeps.SWEEPS, "main", tiny_main)
    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path)
    assert main(["-q"]) == 0
    out_dir = tmp_path / "results" / "main"
    assert len(list(out_dir.glob("*.json"))) == 4
    printed = capsys.readouterr().out
    assert "Table I — best test accuracy" in printed and "Selected rates" in printed
    assert "| SignGuard |" in printed and "Sign-flip" in printed
    assert (out_dir / "report.md").is_file()
    pngs = list(out_dir.glob("*.png"))
    assert pngs and all(str(p) in printed for p in pngs)
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)


def test_the_real_main_job_is_the_paper_setting() -> None:
    configs = named_sweeps.build_sweep("main")
    assert {(c.defense, c.attack) for c in configs} == {
        (d, a) for d in ("mean", "median", "multi_krum", "signguard") for a in ("none", "min_max")
    }
    assert {(c.task, c.num_clients, c.num_byzantine, c.partition) for c in configs} == {("mnist-mini", 50, 10, "iid")}
    assert {(c.rounds, c.eval_every, c.seed) for c in configs} == {(150, 5, 0)}


BAD = [
    (["run", "--defense", "foo"], "unknown defense 'foo'; known: bulyan, centered_clipping, dnc, geomed, krum, mean, median, multi_krum"),
    (["run", "--attack", "bar"], "unknown attack 'bar'; known: agr_tailored, byzmean, fang_krum"),
    (["run", "--task", "baz"], "unknown task 'baz'; known: agnews, cifar10, digits, fmnist, mnist"),
    (["sweep", "--defense", "mean,foo"], "unknown defense 'foo'"),
    (["run", "--rounds", "x"], "--rounds: expected an integer, got 'x'"),
    (["run", "--rounds", "0"], "rounds must be >= 1"),
    (["run", "--defense-params", "nonsense"], "--defense-params: expected"),
    (["run", "--defense", "multi_krum", "--defense-params", "bogus=1"], "--defense-params for 'multi_krum'"),
    (["run", "--attack", "lie", "--attack-params", "zz=1"], "--attack-params for 'lie'"),
    (["run", "--num-byzantine", "60"], "num_byzantine must be in [0, num_clients)"),
    (["run", "--byzantine-fraction", "1.5"], "--byzantine-fraction must be in [0, 1)"),
    (["run", "--byzantine-fraction", "0.1", "--num-byzantine", "3"], "not both"),
    (["run", "--engine", "spark"], "unknown engine 'spark'; known: inprocess, ray"),
    (["run", "--partition", "zipf"], "unknown partition 'zipf'; known: dirichlet, iid, shard"),
    (["run", "--partition-s", "3"], "'partition-s' must be in [0, 1]"),
    (["run", "--device", "nodevice"], "--device: 'nodevice' is not a torch device"),
    (["run", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["bogus"], "unknown command 'bogus'; choose one of: main, run, sweep, report"),
    (["sweep", "nope"], "unknown sweep 'nope'"),
    (["sweep", "main", "--defense", "mean,median"], "a named sweep takes single values only"),
    (["report"], "the following arguments are required: RESULTS"),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_flags_exit_2_with_one_line(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("signguard-sim"), captured.err
    assert message in captured.err


def test_help_exits_0(capsys) -> None:
    assert main(["--help"]) == 0
    assert main(["sweep", "--help"]) == 0
    assert "comma-separated alternatives" in capsys.readouterr().out


def test_console_script_and_module_entry_points(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": ""}
    script = Path(sys.executable).parent / "signguard-sim"
    commands = [[sys.executable, "-m", "simulations", "run", "--defense", "foo"]]
    if script.is_file():
        commands.append([str(script), "run", "--defense", "foo"])
    for command in commands:
        proc = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().endswith("signguard_dist, signguard_sim, trimmed_mean")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--defense", "krum", "--num-clients", "10", "--num-byzantine", "4"], "n >= 2f + 3"),
        (["run", "--defense", "bulyan", "--num-clients", "10", "--num-byzantine", "2"], "n >= 4f + 3"),
        (["run", "--attack", "lie", "--num-byzantine", "0"], "with 0 Byzantine clients would run as no attack"),
    ],
)
def test_infeasible_setups_are_refused_up_front(argv, message, capsys) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_download_flag_reaches_the_clients_and_does_not_change_the_run_key() -> None:
    from simulations.cli.args import build_parser, config_from_args

    args = build_parser().parse_args(["run", "--task", "digits", "--download"])
    cfg = config_from_args(args)
    assert cfg.download is True and cfg.client_config()["download"] is True
    assert cfg.key() == cfg.replace(download=False).key()  # where the data came from is not a setting
    args = build_parser().parse_args(["run", "--task", "digits", "--download", "false"])
    assert config_from_args(args).download is False


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_run_config_file_with_flags_over_it(tmp_path: Path) -> None:
    args = cli_args.build_parser().parse_args(["run", "--config", str(EXAMPLES / "exp.toml"), "--rounds", "7", "--seed", "2"])
    cfg = cli_args.config_from_args(args)
    assert cfg == ExperimentConfig(task="digits", num_clients=20, num_byzantine=4, defense="signguard", attack="lie",
                                   attack_params={"z": 0.3}, rounds=7, eval_every=5, seed=2)
    # A share in the file applies to the number of clients after the flags; a flag replaces it.
    exp = tmp_path / "exp.toml"
    exp.write_text('byzantine-fraction = 0.25\nattack-params = {z = 0.5}\n')
    cfg = cli_args.config_from_args(cli_args.build_parser().parse_args(["run", "--config", str(exp), "--num-clients", "20"]))
    assert (cfg.num_clients, cfg.num_byzantine, cfg.attack_params) == (20, 5, {"z": 0.5})
    cfg = cli_args.config_from_args(cli_args.build_parser().parse_args(["run", "--config", str(exp), "--num-byzantine", "3"]))
    assert (cfg.num_clients, cfg.num_byzantine) == (50, 3)


def test_sweep_config_file_runs_its_grid(tmp_path: Path, capsys) -> None:
    assert main(["sweep", "--config", str(EXAMPLES / "sweep.toml"), "--rounds", "3", "--dry-run", "--results-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"Sweep {EXAMPLES / 'sweep.toml'}: 12 runs, 0 already done")
    keys = [line.split()[1] for line in lines[1:13]]
    base = ExperimentConfig(task="digits", num_clients=20, num_byzantine=4, rounds=3, eval_every=5)
    assert keys == [base.replace(seed=s, attack=a, defense=d).key()
                    for s in (0, 1) for a in ("none", "lie") for d in ("mean", "median", "signguard")]


BAD_FILES = [
    (["run"], "rouns = 3\n", "exp.toml: unknown key 'rouns' (did you mean 'rounds'?); known: attack,"),
    (["run"], 'rounds = "x"\n', "exp.toml: key 'rounds': expected an integer, got 'x'"),
    (["run"], "num-clients = 0\n", "exp.toml: key 'num-clients' must be >= 1, got 0"),
    (["run"], "num-byzantine = 2\nbyzantine-fraction = 0.1\n", "give num-byzantine or byzantine-fraction, not both"),
    (["run"], "rounds = \n", "exp.toml: not valid TOML"),
    (["run"], "[base]\nrounds = 3\n", "exp.toml: has [base] / [grid], so it is a sweep file"),
    (["sweep"], "rounds = 3\n", "exp.toml: settings at the top level make an experiment file"),
    (["sweep"], "[base]\nrounds = 3\n[grid]\nseed = [0, 'a']\n", "exp.toml: [grid] key 'seed': expected an integer, got 'a'"),
    (["sweep"], "[grid]\nseed = 1\n", "exp.toml: [grid] key 'seed' must be a non-empty list of values, got 1"),
    (["sweep", "main"], "[grid]\nseed = [1]\n", "give a sweep NAME or --config FILE, not both"),
]


@pytest.mark.parametrize(("command", "text", "message"), BAD_FILES, ids=[m for _, _, m in BAD_FILES])
def test_bad_config_files_exit_2_naming_the_file_and_key(command, text, message, tmp_path: Path, capsys) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(text)
    assert main([*command, "--config", str(path), "--dry-run"] if command[0] == "sweep" else [*command, "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert main(["run", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml: no such file" in capsys.readouterr().err


def test_download_flag_rejects_other_values(capsys) -> None:
    assert main(["run", "--download", "maybe"]) == 2
    assert "--download: expected true or false, got 'maybe'" in capsys.readouterr().err
