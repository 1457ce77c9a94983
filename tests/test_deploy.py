"""Scripted deployment (``simulations.deploy``): certificates, config, and a real SuperLink.

Fast tests check the pieces (certificates, SuperNode keys, node config text, the staged app, the
run-config keys against ``pyproject.toml``, refusals that start nothing).  Slow tests start real
processes on 127.0.0.1:

* ``test_cli_deployment_tls_auth``: ``python -m simulations.deploy up --tls --auth`` (3 nodes,
  one Byzantine sign-flipper), ``status``, ``run`` (2 rounds of SignGuard), a SuperNode with an
  unregistered key is refused, ``down``; every recorded process is gone afterwards.
* ``test_flwr139_grpc_deployment``: the same over flwr 1.39's gRPC Fleet API in a separate venv;
  only with ``SIGNGUARD_TEST_FLWR139=1`` (creates ``.deploy/venv-flwr139`` when missing, or
  uses ``SIGNGUARD_FLWR139_VENV``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from simulations.deploy import (
    DEFAULT_STATE_DIR,
    REPO_ROOT,
    Deployment,
    DeploymentError,
    descendants,
    format_node_config,
    free_port,
    iter_lines,
)
from simulations.deploy.certs import make_supernode_keys, make_tls_certificates
from simulations.deploy.processes import is_alive, start_time
from tests.conftest import assert_no_ray_processes

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1", "PYTHONUNBUFFERED": "1"}


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------


def test_tls_certificates(tmp_path: Path) -> None:
    files = make_tls_certificates(tmp_path)
    assert files.exist()
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The server certificate is signed by the CA ...
    server.verify_directly_issued_by(ca)
    # ... and names the loopback address and localhost.
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert (files.server_key.stat().st_mode & 0o777) == 0o600
    key = serialization.load_pem_private_key(files.server_key.read_bytes(), None)
    assert key.public_key().public_numbers() == server.public_key().public_numbers()


def test_secrets_are_owner_only_from_creation(tmp_path: Path) -> None:
    """Keys are created 0600 (never written 0644 first), their folders 0700, whatever the umask."""
    import os
    import stat

    from simulations.deploy import certs

    old_umask = os.umask(0)  # the most permissive: nothing may rely on the umask
    opened: list[tuple[str, int]] = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *args, **kwargs):
        opened.append((str(path), mode))
        return real_open(path, flags, mode, *args, **kwargs)

    try:
        os.open = spy
        files = certs.make_tls_certificates(tmp_path / "tls")
        private, public = certs.make_supernode_keys(tmp_path / "keys", "node-0")
        certs.write_owner_only(tmp_path / "tls" / "config.toml", "x = 1\n")
    finally:
        os.open = real_open
        os.umask(old_umask)
    for path in (files.ca_key, files.server_key, private, tmp_path / "tls" / "config.toml"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert (str(path), 0o600) in opened, path  # created with that mode, not chmod'ed after
    for folder in (tmp_path / "tls", tmp_path / "keys"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    # A key file that already existed with a wider mode is narrowed when rewritten.
    files.server_key.chmod(0o644)
    certs._write_private(files.server_key, b"new")
    assert stat.S_IMODE(files.server_key.stat().st_mode) == 0o600


def test_supernode_keys_are_what_flwr_reads(tmp_path: Path) -> None:
    private, public = make_supernode_keys(tmp_path, "node-0")
    key = serialization.load_ssh_private_key(private.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    pub = serialization.load_ssh_public_key(public.read_bytes())
    assert pub.public_numbers() == key.public_key().public_numbers()
    # flwr's own loader (`flwr supernode register`) accepts it.
    from flwr.cli.supernode.register import try_load_public_key

    assert try_load_public_key(public)


def test_node_config_text_parses_back() -> None:
    from flwr.common.config import parse_config_args

    config = {"partition-id": 2, "num-partitions": 5, "byzantine": True, "attack": "sign_flip", "fault-sleep": 1.5}
    assert parse_config_args([format_node_config(config)]) == config


def test_staged_app_swaps_clientapp_only(tmp_path: Path) -> None:
    dep = Deployment(tmp_path / "dep")
    app = dep.stage_app(clientapp="simulations.deploy.faults:app")
    project = tomllib.loads((app / "pyproject.toml").read_text())
    components = project["tool"]["flwr"]["app"]["components"]
    assert components == {"serverapp": "simulations.server_app:app", "clientapp": "simulations.deploy.faults:app"}
    for module in ("clients/app.py", "simulations/server_app.py", "simulations/deploy/faults.py",
                   "signguard_flwr/strategies/base.py"):
        assert (app / module).is_file()
    assert not (app / "tests").exists() and not list(app.rglob("__pycache__"))
    # The repository's own app is untouched and deploys the wrapped ClientApp.
    repo = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert repo["tool"]["flwr"]["app"]["components"]["clientapp"] == "clients.app:app"


def test_run_config_keys_exist_in_pyproject() -> None:
    """The SuperLink rejects run-config overrides whose key is not in [tool.flwr.app.config]."""
    repo = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    keys = set(repo["tool"]["flwr"]["app"]["config"])
    sent = {"num-clients", "num-byzantine", "byzantine-placement", "attack", "defense", "rounds", "eval-every",
            "results-dir", "round-timeout", "min-nodes"}
    assert sent <= keys, sorted(sent - keys)


def test_refusals_start_nothing(tmp_path: Path) -> None:
    dep = Deployment(tmp_path / "dep")
    with pytest.raises(DeploymentError, match="collusion channel"):
        dep.up(4, byzantine=1, attack="lie")
    with pytest.raises(DeploymentError, match="needs TLS"):
        dep.up(4, auth=True)
    with pytest.raises(DeploymentError, match="--byzantine"):
        dep.up(3, byzantine=3)
    assert dep.pids() == [] and not dep.is_up()
    with pytest.raises(DeploymentError, match="up` first"):
        dep.run()
    assert dep.down() == []


def test_cli_status_and_down_without_deployment(tmp_path: Path) -> None:
    state = str(tmp_path / "none")
    for cmd, rc in (("status", 1), ("down", 0)):
        out = subprocess.run([sys.executable, "-m", "simulations.deploy", "--state-dir", state, cmd],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == rc and "no deployment" in out.stdout


def test_default_state_dir_is_ignored_by_git() -> None:
    assert DEFAULT_STATE_DIR == REPO_ROOT / ".deploy"
    assert ".deploy/" in (REPO_ROOT / ".gitignore").read_text().split()


# --------------------------------------------------------------------------------------------
# Real processes
# --------------------------------------------------------------------------------------------


def _cli(state: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, **ENV}
    out = subprocess.run([sys.executable, "-m", "simulations.deploy", "--state-dir", str(state), *args],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    sys.stdout.write(f"$ deploy {' '.join(args)} -> {out.returncode}\n{out.stdout[-3000:]}{out.stderr[-3000:]}\n")
    return out


def _recorded(state: Path) -> list[tuple[int, float | None]]:
    """The processes `up` recorded and, as of now, all their descendants (SuperExec, apps)."""
    data = json.loads((state / "state.json").read_text())
    procs = [(p["pid"], p["start_time"]) for p in [data["superlink"], *data["nodes"]] if p]
    family = [(d, start_time(d)) for pid, _ in procs for d in descendants(pid)]
    return procs + [(pid, st) for pid, st in family if st is not None]


def _try_unregistered_node(dep: Deployment, workdir: Path) -> tuple[int, str]:
    """Start a SuperNode whose key the SuperLink does not know; return (exit code, log)."""
    private, _ = make_supernode_keys(workdir, "rogue")
    cmd = [str(dep.bin_dir / "flower-supernode"), "--superlink", f"127.0.0.1:{dep.state['fleet_port']}",
           "--port", str(free_port()), "--root-certificates", str(Path(dep.state["certs"]) / "ca.crt"),
           "--auth-supernode-private-key", str(private), "--max-retries", "1", "--max-wait-time", "20",
           "--node-config", "partition-id=0 num-partitions=1"]
    if dep.state["transport"] == "grpc":
        cmd.append("--grpc-rere")
    log = workdir / "rogue.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=dep.env(workdir), stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        rc = proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        rc = -1
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return rc, "\n".join(iter_lines(log))


def _check_run(result: dict, rounds: int, nodes: int, byzantine: list[int]) -> None:
    assert result["engine"] == "flwr-run"
    assert result["byzantine_partitions"] == byzantine
    assert [r["round"] for r in result["rounds"]] == list(range(1, rounds + 1))
    for r in result["rounds"]:
        assert r["received"] == nodes and r["valid"] == nodes and r["outcome"] == "aggregated"
        assert r["tp"] + r["fn"] == len(byzantine)  # the Byzantine node's reply was seen every round


@pytest.mark.slow
def test_cli_deployment_tls_auth(tmp_path: Path) -> None:
    state = tmp_path / "deploy"
    t0 = time.monotonic()
    up = None
    try:
        up = _cli(state, "up", "--nodes", "3", "--byzantine", "1", "--attack", "sign_flip", "--tls", "--auth")
        assert up.returncode == 0, up.stderr
        assert "fleet over HTTPS" in up.stdout or "GRPC + TLS" in up.stdout
        assert up.stdout.count("registered successfully") == 3
        t_up = time.monotonic() - t0
        config = (state / "cli" / "config.toml").read_text()
        assert 'root-certificates = "' in config and "insecure" not in config

        status = _cli(state, "status", "--json")
        info = json.loads(status.stdout)
        assert info["up"] and info["tls"] and info["auth"] and info["connected_nodes"] == 3
        byz = [p for p in info["processes"] if p["node_config"].get("byzantine")]
        assert [(p["partition_id"], p["node_config"]["attack"]) for p in byz] == [(0, "sign_flip")]

        dep = Deployment(state)
        rc, log = _try_unregistered_node(dep, tmp_path / "rogue")
        assert rc not in (0, -1) and "Failed to activate SuperNode" in log, log[-2000:]
        assert len(dep.connected_node_ids()) == 3

        # The run command exactly as `up` printed it, from another directory (plus quiet/timeout).
        printed = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
                   for line in up.stdout.splitlines()
                   if line.startswith(("run an experiment:", "or with flwr:", "stop everything:"))}
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        t1 = time.monotonic()
        run = subprocess.run(printed["run an experiment"] + " --quiet --timeout 480", shell=True, cwd=elsewhere,
                             capture_output=True, text=True, timeout=600)
        t_run = time.monotonic() - t1
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
        results = list((state / "runs").glob("*/*.json"))
        assert len(results) == 1
        _check_run(json.loads(results[0].read_text()), rounds=3, nodes=3, byzantine=[0])
        run_log = "\n".join(iter_lines(next((state / "runs").glob("*/flwr-run.log"))))
        # The ServerApp imported the app's packages from the FAB installed under the SuperLink's
        # FLWR_HOME, not from the repository.
        origin = next(line for line in run_log.splitlines() if "app code from" in line)
        for package in ("simulations", "clients", "signguard_flwr"):
            assert f"{package}={state / 'superlink' / 'apps'}" in origin, origin
        # ... and the plain `flwr run` line it printed, also from elsewhere.
        flwr = subprocess.run(printed["or with flwr"], shell=True, cwd=elsewhere, capture_output=True, text=True,
                              timeout=600)
        assert flwr.returncode == 0 and "finished: best accuracy" in flwr.stdout + flwr.stderr, (
            flwr.stdout[-3000:] + flwr.stderr[-2000:])
        sys.stdout.write(f"timings: up {t_up:.1f} s, run (3 rounds) {t_run:.1f} s\n")
    finally:
        recorded = _recorded(state) if (state / "state.json").exists() else []
        stop = next((line.split(":", 1)[1].strip() for line in (up.stdout if up is not None else "").splitlines()
                     if line.startswith("stop everything:")), None)  # `down` as `up` printed it
        down = (subprocess.run(stop, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120)
                if stop else _cli(state, "down"))
        Deployment(state).down()  # no-op when the CLI worked; the safety net when it did not
    assert down.returncode == 0
    time.sleep(1.0)
    assert recorded and not [pid for pid, st in recorded if is_alive(pid, st)]
    assert_no_ray_processes()


def _flwr139_venv() -> Path:
    venv = Path(os.environ.get("SIGNGUARD_FLWR139_VENV", str(DEFAULT_STATE_DIR / "venv-flwr139")))
    if not (venv / "bin" / "flower-superlink").exists():
        out = subprocess.run([sys.executable, "-m", "simulations.deploy", "venv", "--flwr", "1.39",
                              "--path", str(venv)], cwd=REPO_ROOT, timeout=3600)
        assert out.returncode == 0
    return venv


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SIGNGUARD_TEST_FLWR139") != "1",
                    reason="flwr 1.39 (gRPC Fleet API) deployment: set SIGNGUARD_TEST_FLWR139=1")
def test_flwr139_grpc_deployment(tmp_path: Path) -> None:
    dep = Deployment(tmp_path / "deploy", venv=_flwr139_venv())
    try:
        t0 = time.monotonic()
        dep.up(3, byzantine=1, attack="sign_flip", tls=True, auth=True, log=sys.stdout)
        t_up = time.monotonic() - t0
        assert dep.state["flwr_version"].startswith("1.39") and dep.state["transport"] == "grpc"
        assert dep.state["fleet_port"] != dep.state["control_port"]
        link_log = "\n".join(iter_lines(dep.superlink.log))
        assert f"Fleet API (gRPC-rere) on 127.0.0.1:{dep.state['fleet_port']}" in link_log
        rc, log = _try_unregistered_node(dep, tmp_path / "rogue")
        assert rc not in (0, -1) and "Failed to activate SuperNode" in log, log[-2000:]
        outcome = dep.run("signguard", rounds=2, timeout=480, stream=sys.stdout)
        assert outcome.ok, outcome.log
        _check_run(outcome.result, rounds=2, nodes=3, byzantine=[0])
        sys.stdout.write(f"timings: up {t_up:.1f} s, run (2 rounds) {outcome.seconds:.1f} s\n")
    finally:
        dep.down(timeout=10)
    assert_no_ray_processes()


def test_printed_commands_run_as_printed_from_another_directory(tmp_path: Path) -> None:
    """`up` printed `run ... --state-dir X` (rejected: the flag goes before the subcommand) and a
    `down` that, run from elsewhere, found no deployment. Run every printed hint from another
    folder against a state folder given relative to it."""
    import subprocess

    from simulations.deploy.__main__ import hints

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    state = tmp_path / "my-deploy"  # no deployment there: every command must find that folder
    commands = hints(state)
    assert set(commands) == {"run", "status", "down"}
    for name, command in commands.items():
        proc = subprocess.run(command, shell=True, cwd=elsewhere, capture_output=True, text=True, timeout=120)
        output = proc.stdout + proc.stderr
        assert "unrecognized arguments" not in output and "No module named" not in output, (name, output)
        assert str(state) in output, (name, output)  # it looked in the right folder
    # A relative --state-dir means the folder relative to where the command was typed.
    proc = subprocess.run([sys.executable, "-m", "simulations.deploy", "--state-dir", "rel-state", "down"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert f"no deployment in {REPO_ROOT / 'rel-state'}" in proc.stdout


def test_process_identity_survives_pid_reuse_checks() -> None:
    """A recorded (pid, start time) names one process: a different start time is someone else."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = start_time(child.pid)
        assert started is not None and is_alive(child.pid, started)
        assert not is_alive(child.pid, started + 1.0)  # same PID, other creation time
        assert child.pid in descendants(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert start_time(child.pid) is None and not is_alive(child.pid, started)
    assert child.pid not in descendants(os.getpid())
