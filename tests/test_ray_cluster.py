"""Attach the Ray simulation engine to an existing Ray cluster (``ray start --head``).

The test starts its own one-node cluster (loopback, free ports, a short private temp dir: Ray's
socket paths must stay under ~107 characters), runs a 2-round, 4-client digits experiment with
``run_experiment(cfg, engine="ray", ray_address=...)``, and stops exactly the processes it
started (``ray stop`` would stop every Ray on the machine, other users' included): the cluster's
processes share the process group of the ``ray start`` call.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from simulations.config import ExperimentConfig
from simulations.engine import run_experiment

from .conftest import assert_no_ray_processes, simulation_env

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cluster_pids(pgid: int, temp_dir: str) -> list[int]:
    """Live processes of the cluster: in the ``ray start`` process group or naming our temp dir."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] == "Z":
            continue
        if int(fields[2]) == pgid or temp_dir in cmd:
            out.append(pid)
    return out


def _stop_cluster(pgid: int, temp_dir: str, timeout: float = 20.0) -> list[int]:
    """SIGTERM the cluster's processes, SIGKILL what outlives ``timeout``; return survivors."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        for pid in _cluster_pids(pgid, temp_dir):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _cluster_pids(pgid, temp_dir):
            time.sleep(0.5)
        if not _cluster_pids(pgid, temp_dir):
            return []
    return _cluster_pids(pgid, temp_dir)


@pytest.mark.slow
def test_experiment_on_an_existing_ray_cluster() -> None:
    ray_bin = BIN / "ray"
    if not ray_bin.is_file():
        pytest.skip("the ray command is not installed next to this Python")
    temp_dir = tempfile.mkdtemp(prefix="sgr", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    command = [
        str(ray_bin), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
        "--disable-usage-stats", f"--temp-dir={temp_dir}", "--include-dashboard=false",
        f"--dashboard-port={_free_port()}", f"--ray-client-server-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
        f"--runtime-env-agent-port={_free_port()}", f"--metrics-export-port={_free_port()}",
        "--object-store-memory=100000000",
    ]
    # A new session: the daemons it starts stay in the process group of this call.
    starter = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pgid = starter.pid
    try:
        output, _ = starter.communicate(timeout=180)
        assert starter.returncode == 0, output[-3000:]
        cfg = ExperimentConfig(task="digits", num_clients=4, num_byzantine=1, rounds=2, eval_every=1, attack="sign_flip")
        with simulation_env():
            result = run_experiment(cfg, engine="ray", ray_address=f"127.0.0.1:{port}")
        assert result.engine == "ray"
        assert [r.round for r in result.rounds] == [1, 2]
        assert all(r.received == 4 and r.tp + r.fn == 1 for r in result.rounds)
        assert 0.0 <= result.best_acc <= 1.0
        # The driver joined our cluster instead of starting a local one: one session, in our temp dir.
        assert len(list(Path(temp_dir).glob("session_2*"))) == 1
    finally:
        left = _stop_cluster(pgid, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"Ray cluster processes survived: {left}"
    assert_no_ray_processes()
