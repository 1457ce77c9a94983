"""``flwr run .`` on the managed local SuperLink: the app's pyproject config runs end to end.

The test isolates itself from any other Flower on the machine: its own ``FLWR_HOME`` (Flower
config, SuperLink state and logs), its own ports for the managed SuperLink, no runtime dependency
installation, no telemetry.  The managed SuperLink outlives ``flwr run`` (it is started detached);
the test finds it by its command line (its log file lies in our ``FLWR_HOME``) and stops it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from clients.schema import SERVERAPP_SETTINGS, SETTINGS
from simulations.config import ExperimentConfig
from simulations.sweeps.named import build_sweep

from .conftest import assert_no_ray_processes, descendant_pids

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def _superlinks(flwr_home: Path) -> list[int]:
    """PIDs of SuperLinks whose command line names our FLWR_HOME (its log and database live there)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and "flower-superlink" in (cmd := _cmdline(int(entry.name))) and str(flwr_home) in cmd:
            out.append(int(entry.name))
    return out


def _stop(pids: list[int], timeout: float = 30.0) -> list[int]:
    """SIGTERM each SuperLink, wait for it and its descendants; SIGKILL what is left; return leftovers."""
    family = set(pids)
    for pid in pids:
        family.update(descendant_pids(pid))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in family):
        time.sleep(0.5)
    left = [p for p in family if _alive(p)]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def test_pyproject_config_is_the_settings_table() -> None:
    """[tool.flwr.app.config] holds every app key of clients.schema.SETTINGS with its one default."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    config = pyproject["tool"]["flwr"]["app"]["config"]
    table = {s.key: s.to_run_config(s.default) for s in SETTINGS if s.scope != "client"}
    assert sorted(config) == sorted(table)
    assert {k: (v, type(v)) for k, v in config.items()} == {k: (v, type(v)) for k, v in table.items()}
    own = {s.key for s in SERVERAPP_SETTINGS}  # read by the ServerApp itself
    cfg = ExperimentConfig.from_run_config({k: v for k, v in config.items() if k not in own})
    assert cfg == ExperimentConfig()
    # digits, not the main job's mnist-mini: a FAB cannot carry the bundled .npz (code and text only).
    assert (cfg.task, cfg.num_clients, cfg.num_byzantine, cfg.partition) == ("digits", 50, 10, "iid")
    assert cfg.declared_f is None and cfg.defense_params == {} and cfg.lr_milestones == ()
    main_job = build_sweep("main")[0]
    assert (cfg.rounds, cfg.eval_every) == (main_job.rounds, main_job.eval_every)
    assert "federations" not in pyproject["tool"]["flwr"]


@pytest.mark.slow
def test_flwr_run_local_simulation(tmp_path: Path) -> None:
    flwr = BIN / "flwr"
    if not (flwr.is_file() and (BIN / "flower-superlink").is_file()):
        pytest.skip("flwr / flower-superlink not installed next to this Python")
    home = tmp_path / "flwr-home"
    home.mkdir()
    results = tmp_path / "results"
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        # Our own managed SuperLink, even when another one runs on the default ports.
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port()),
    }
    # The experiment file of the README (examples/exp.toml), made tiny: flwr run reads the same file.
    settings = tomllib.loads((REPO_ROOT / "examples" / "exp.toml").read_text())
    settings.update({"rounds": 2, "num-clients": 5, "num-byzantine": 1, "attack": "sign_flip", "eval-every": 1,
                     "results-dir": str(results)})
    run_config = tmp_path / "exp.toml"
    run_config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))  # strings, ints, floats
    command = [str(flwr), "run", ".", "local", "--run-config", str(run_config),
               "--federation-config", "num-supernodes=5", "--stream"]
    pyproject_before = (REPO_ROOT / "pyproject.toml").read_bytes()
    try:
        proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=400)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-3000:]
        files = list(results.glob("*.json"))
        assert len(files) == 1, output[-3000:]
        data = json.loads(files[0].read_text())
        assert data["engine"] == "flwr-run"
        assert data["config"]["num_clients"] == 5 and data["config"]["attack"] == "sign_flip"
        assert data["config"]["attack_params"] == {"z": 0.3} and data["config"]["task"] == "digits"
        assert [r["round"] for r in data["rounds"]] == [1, 2]
        assert all(r["received"] == 5 and r["tp"] + r["fn"] == 1 for r in data["rounds"])
        assert (results / f"{files[0].stem}.csv").is_file()
        assert "finished: best accuracy" in output
    finally:
        superlinks = _superlinks(home)
        left = _stop(superlinks)
    assert superlinks, "the managed SuperLink was not found"
    assert not left, f"SuperLink processes survived SIGTERM: {left}"
    assert not _superlinks(home)
    assert (REPO_ROOT / "pyproject.toml").read_bytes() == pyproject_before  # flwr run did not rewrite it
    assert_no_ray_processes()
