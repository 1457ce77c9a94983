"""A whole Flower deployment on one machine: SuperLink, SuperNodes, ``flwr run``, teardown.

:class:`Deployment` starts real ``flower-superlink`` and ``flower-supernode`` processes on the
loopback interface, each with its own ``FLWR_HOME`` under a state directory (``.deploy/`` in
the repository by default), records their PIDs (and start times, so a recycled PID is never
signalled) in ``state.json``, writes the Flower config the ``flwr`` CLI needs, submits the app
with ``flwr run``, and stops everything it started by PID: SuperNodes first (SIGTERM), then the
SuperLink, SIGKILL after a timeout, and any leftover descendant (the SuperExec and app
processes each of them spawns) last.

Transport follows the installed flwr: 1.40+ SuperNodes talk to the SuperLink's Fleet API over
HTTP(S) on the SuperLink's single ``--host/--port``; flwr 1.39 uses the gRPC Fleet API
(``grpc-rere``) on a second port (``--fleet-api-address``), the SuperNodes' ``--superlink``.
The ``flwr`` CLI (Control API) is HTTP(S) on the SuperLink's port in both.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from .certs import TlsFiles, make_supernode_keys, make_tls_certificates, private_dir, write_owner_only
from .processes import descendants, is_alive, start_time

__all__ = [
    "REPO_ROOT",
    "DEFAULT_STATE_DIR",
    "CONNECTION_NAME",
    "Deployment",
    "DeploymentError",
    "NodeSpec",
    "ProcInfo",
    "RunOutcome",
    "descendants",
    "flwr_version",
    "format_node_config",
    "free_port",
    "iter_lines",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = REPO_ROOT / ".deploy"
CONNECTION_NAME = "signguard-deploy"
HOST = "127.0.0.1"

# Offline and quiet, for every process we start (the SuperLink and SuperNodes pass their
# environment on to the SuperExec and app processes they spawn).
BASE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PYTHONUNBUFFERED": "1",
    "NO_COLOR": "1",
}

_ACTIVATED = re.compile(r"\[Fleet\.ActivateNode\] Activated node_id=(\d+)")
_DEACTIVATED = re.compile(r"\[Fleet\.DeactivateNode\] Deactivated node_id=(\d+)")
_NODE_ID = re.compile(r"SuperNode ID: (\d+)")
_RUN_ID = re.compile(r"Successfully started run (\d+)")
_RESULTS = re.compile(r"results in (\S+\.json)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# The app's own packages; `flwr run` packs their .py files into the FAB.
APP_PACKAGES = ("clients", "simulations", "signguard_flwr")


class DeploymentError(RuntimeError):
    """A deployment step failed (the message names the step and points at its log)."""


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


@dataclass
class ProcInfo:
    """One process we started: enough to find it again and to stop exactly it."""

    role: str
    pid: int
    start_time: float | None
    log: str
    flwr_home: str
    cmd: list[str]
    port: int = 0
    partition_id: int | None = None
    node_config: dict[str, Any] = field(default_factory=dict)
    node_id: int | None = None

    def alive(self) -> bool:
        return is_alive(self.pid, self.start_time)


@dataclass
class NodeSpec:
    """One SuperNode: its partition and extra node config (``byzantine``, ``attack``, ``fault``...)."""

    partition_id: int
    byzantine: bool = False
    attack: str = "none"
    extra: dict[str, Any] = field(default_factory=dict)

    def node_config(self, num_partitions: int) -> dict[str, Any]:
        config: dict[str, Any] = {
            "partition-id": self.partition_id,
            "num-partitions": num_partitions,
            "byzantine": self.byzantine,
        }
        if self.byzantine:
            config["attack"] = self.attack
        config.update(self.extra)
        return config


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string


def format_node_config(config: Mapping[str, Any]) -> str:
    """``--node-config`` text: ``key=value`` pairs, strings quoted (flwr parses each as TOML)."""
    return " ".join(f"{k}={_toml_value(v)}" for k, v in config.items())


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_open(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def flwr_version(bin_dir: Path) -> tuple[int, int, int]:
    """The flwr version installed beside ``bin_dir/python``."""
    out = subprocess.run(
        [str(bin_dir / "python"), "-c", "import flwr; print(flwr.__version__)"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.strip()
    parts = [int(p) for p in re.findall(r"\d+", out)[:3]]
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


def _tail(path: str | Path, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(_ANSI.sub("", text).splitlines()[-lines:])


@dataclass
class RunOutcome:
    """What ``flwr run`` produced."""

    returncode: int
    seconds: float
    run_id: int | None
    log: str
    results_dir: str
    result: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.result is not None


# --------------------------------------------------------------------------------------------
# The deployment
# --------------------------------------------------------------------------------------------


class Deployment:
    """SuperLink + SuperNodes on 127.0.0.1, managed through a state directory.

    Parameters
    ----------
    state_dir : path
        Where every process's ``FLWR_HOME``, log, the certificates, keys, the Flower config
        (``cli/config.toml``) and ``state.json`` live.  Default ``<repo>/.deploy``.
    venv : path, optional
        A virtual environment whose ``bin/`` holds ``flower-superlink``, ``flower-supernode``,
        ``flwr`` and ``python`` (default: the running interpreter's).  Its flwr version picks
        the transport (``http`` for 1.40+, ``grpc`` for 1.39).
    """

    def __init__(self, state_dir: str | Path = DEFAULT_STATE_DIR, *, venv: str | Path | None = None) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.state_file = self.state_dir / "state.json"
        self._popen: dict[int, subprocess.Popen] = {}
        self.state: dict[str, Any] = {}
        if self.state_file.is_file():
            self.state = json.loads(self.state_file.read_text())
        if venv is not None:
            self.bin_dir = Path(venv).resolve() / "bin"
        elif self.state.get("bin_dir"):
            self.bin_dir = Path(self.state["bin_dir"])
        else:
            self.bin_dir = Path(sys.executable).parent
        if not (self.bin_dir / "flower-superlink").exists():
            raise DeploymentError(f"no flower-superlink in {self.bin_dir} (pass --venv with flwr installed)")

    # ------------------------------------------------------------------ properties
    @property
    def cli_home(self) -> Path:
        return self.state_dir / "cli"

    @property
    def processes(self) -> list[ProcInfo]:
        procs = []
        if self.state.get("superlink"):
            procs.append(ProcInfo(**self.state["superlink"]))
        procs.extend(ProcInfo(**n) for n in self.state.get("nodes", []))
        return procs

    @property
    def nodes(self) -> list[ProcInfo]:
        return [ProcInfo(**n) for n in self.state.get("nodes", [])]

    @property
    def superlink(self) -> ProcInfo | None:
        return ProcInfo(**self.state["superlink"]) if self.state.get("superlink") else None

    def pids(self) -> list[int]:
        """PIDs of the started processes that are still alive."""
        return [p.pid for p in self.processes if p.alive()]

    def is_up(self) -> bool:
        return any(p.alive() for p in self.processes)

    def env(self, flwr_home: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FLWR_HOME", "VIRTUAL_ENV")}
        env.update(BASE_ENV)
        env["FLWR_HOME"] = str(flwr_home)
        env["VIRTUAL_ENV"] = str(self.bin_dir.parent)
        # flower-superlink / flower-supernode spawn flower-superexec, flwr-serverapp and
        # flwr-clientapp by name: take them from the same environment.
        env["PATH"] = str(self.bin_dir) + os.pathsep + env.get("PATH", "")
        return env

    def _save(self) -> None:
        private_dir(self.state_dir)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.state_file)

    def _spawn(self, role: str, cmd: list[str], home: Path, **info: Any) -> ProcInfo:
        home.mkdir(parents=True, exist_ok=True)
        log_path = home / f"{role}.log"
        with open(log_path, "ab") as log_fh:
            log_fh.write(f"\n$ {' '.join(cmd)}\n".encode())
            log_fh.flush()
            proc = subprocess.Popen(
                cmd, cwd=home, env=self.env(home), stdin=subprocess.DEVNULL, stdout=log_fh,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._popen[proc.pid] = proc
        return ProcInfo(role=role, pid=proc.pid, start_time=start_time(proc.pid), log=str(log_path),
                        flwr_home=str(home), cmd=cmd, **info)

    # ------------------------------------------------------------------ up
    def up(
        self,
        nodes: int | Sequence[NodeSpec] = 5,
        *,
        byzantine: int = 0,
        attack: str = "sign_flip",
        tls: bool = False,
        auth: bool = False,
        port: int | None = None,
        node_extra: Mapping[int, Mapping[str, Any]] | None = None,
        startup_timeout: float = 180.0,
        log: IO[str] | None = None,
    ) -> dict[str, Any]:
        """Start a SuperLink and the SuperNodes; return the state (also in ``state.json``).

        ``nodes``: a count (partitions ``0..n-1``; the first ``byzantine`` of them Byzantine,
        running the client-side ``attack``) or explicit :class:`NodeSpec` s.  ``node_extra``:
        more node config per partition id (e.g. ``{2: {"fault": "nan"}}``).  ``auth`` needs
        ``tls`` (flwr refuses SuperNode authentication over plain HTTP).
        """
        from clients.attacks import get_attack, is_client_side

        say = (lambda *a: print(*a, file=log, flush=True)) if log is not None else (lambda *a: None)
        if self.is_up():
            raise DeploymentError(f"a deployment is already running from {self.state_dir} (PIDs {self.pids()}); "
                                  "run `python -m simulations.deploy down` first")
        if auth and not tls:
            raise DeploymentError("SuperNode authentication needs TLS: pass --tls with --auth")
        if isinstance(nodes, int):
            if nodes < 1:
                raise DeploymentError("need at least one SuperNode")
            if not 0 <= byzantine < nodes:
                raise DeploymentError(f"--byzantine must be in [0, {nodes}), got {byzantine}")
            get_attack(attack)
            if byzantine and not is_client_side(attack):
                raise DeploymentError(
                    f"attack {attack!r} is not a client-side attack: colluding attacks (lie, byzmean, "
                    "min_max, min_sum) need a collusion channel between the Byzantine nodes, which a "
                    "deployment does not have (see docs/deployment.md); time_varying is simulation-only")
            specs = [NodeSpec(i, byzantine=i < byzantine, attack=attack) for i in range(nodes)]
        else:
            specs = list(nodes)
        for spec in specs:
            spec.extra = {**spec.extra, **dict((node_extra or {}).get(spec.partition_id, {}))}
        n = len(specs)

        version = flwr_version(self.bin_dir)
        transport = "http" if version >= (1, 40, 0) else "grpc"
        # Owner-only: the state folder holds keys, the CLI's connection config and the CA; a
        # local user who cannot read them cannot drive this deployment's Control API with the
        # flwr CLI (see docs/deployment.md for what remains).
        private_dir(self.state_dir)
        self.state = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "bin_dir": str(self.bin_dir),
            "flwr_version": ".".join(map(str, version)),
            "transport": transport,
            "host": HOST,
            "tls": tls,
            "auth": auth,
            "num_nodes": n,
            "byzantine_partitions": sorted(s.partition_id for s in specs if s.byzantine),
            "attack": next((s.attack for s in specs if s.byzantine), "none"),
            "superlink": None,
            "nodes": [],
        }
        control_port = port or free_port()
        fleet_port = control_port if transport == "http" else free_port()
        self.state.update(control_port=control_port, fleet_port=fleet_port)
        self._save()
        t0 = time.monotonic()
        try:
            tls_files: TlsFiles | None = None
            if tls:
                tls_files = make_tls_certificates(self.state_dir / "certs")
                self.state["certs"] = str(tls_files.directory)
            self.write_flower_config(tls_files)

            # --- SuperLink
            cmd = [str(self.bin_dir / "flower-superlink"), "--host", HOST, "--port", str(control_port),
                   "--disable-runtime-dependency-installation"]
            if transport == "grpc":
                cmd += ["--fleet-api-type", "grpc-rere", "--fleet-api-address", f"{HOST}:{fleet_port}"]
            if tls_files is not None:
                cmd += ["--ssl-ca-certfile", str(tls_files.ca_cert), "--ssl-certfile", str(tls_files.server_cert),
                        "--ssl-keyfile", str(tls_files.server_key)]
            else:
                cmd.append("--insecure")
            if auth:
                cmd.append("--enable-supernode-auth")
            superlink = self._spawn("superlink", cmd, self.state_dir / "superlink", port=control_port)
            self.state["superlink"] = asdict(superlink)
            self._save()
            say(f"SuperLink pid {superlink.pid} on {HOST}:{control_port} (flwr {self.state['flwr_version']}, "
                f"fleet over {transport.upper()}{'S' if tls and transport == 'http' else ''}"
                f"{' + TLS' if tls and transport == 'grpc' else ''}{f', port {fleet_port}' if transport == 'grpc' else ''})")
            self._wait(lambda: _port_open(control_port) and _port_open(fleet_port), startup_timeout,
                       "the SuperLink to listen", superlink)

            # --- SuperNode keys, registered with the SuperLink before the nodes start
            keys: dict[int, Path] = {}
            if auth:
                for spec in specs:
                    private, public = make_supernode_keys(self.state_dir / "keys", f"node-{spec.partition_id}")
                    out = self.flwr(["supernode", "register", str(public), CONNECTION_NAME, "--name",
                                     f"node-{spec.partition_id}"], timeout=120)
                    if out.returncode != 0:
                        raise DeploymentError(f"`flwr supernode register` failed for node {spec.partition_id}:\n"
                                              f"{out.stdout}{out.stderr}")
                    keys[spec.partition_id] = private
                    say(f"registered {public.name}: {_ANSI.sub('', out.stdout).strip().splitlines()[-1:]}")

            # --- SuperNodes
            for spec in specs:
                node_config = spec.node_config(n)
                node_port = free_port()
                cmd = [str(self.bin_dir / "flower-supernode"), "--superlink", f"{HOST}:{fleet_port}",
                       "--host", HOST, "--port", str(node_port), "--node-config", format_node_config(node_config)]
                if transport == "grpc":
                    cmd.append("--grpc-rere")
                if tls_files is not None:
                    cmd += ["--root-certificates", str(tls_files.ca_cert)]
                else:
                    cmd.append("--insecure")
                if auth:
                    cmd += ["--auth-supernode-private-key", str(keys[spec.partition_id])]
                proc = self._spawn("supernode", cmd, self.state_dir / f"node-{spec.partition_id}", port=node_port,
                                   partition_id=spec.partition_id, node_config=node_config)
                self.state["nodes"].append(asdict(proc))
                self._save()
                say(f"SuperNode pid {proc.pid}: partition {spec.partition_id}/{n}"
                    f"{' BYZANTINE (' + spec.attack + ')' if spec.byzantine else ''}"
                    f"{''.join(f' {k}={v}' for k, v in spec.extra.items())}")

            self._wait(lambda: len(self.connected_node_ids()) >= n, startup_timeout,
                       f"{n} SuperNodes to connect", superlink, check_all=True)
            self._record_node_ids()
            self.state["up_seconds"] = round(time.monotonic() - t0, 2)
            self._save()
            say(f"{n} SuperNodes connected in {self.state['up_seconds']:.1f} s; Flower config: "
                f"{self.cli_home / 'config.toml'}")
        except BaseException:
            self.down(timeout=10.0)
            raise
        return self.state

    def _wait(self, cond, timeout: float, what: str, proc: ProcInfo, *, check_all: bool = False) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            dead = [p for p in (self.processes if check_all else [proc]) if not p.alive()]
            if dead:
                raise DeploymentError(f"{dead[0].role} (pid {dead[0].pid}) exited while waiting for {what}; "
                                      f"log {dead[0].log}:\n{_tail(dead[0].log)}")
            if time.monotonic() > deadline:
                raise DeploymentError(f"timed out after {timeout:.0f} s waiting for {what}; log {proc.log}:\n"
                                      f"{_tail(proc.log)}")
            time.sleep(0.5)

    def connected_node_ids(self) -> set[int]:
        """Node ids the SuperLink has activated and not deactivated (from its log)."""
        link = self.superlink
        if link is None:
            return set()
        try:
            text = Path(link.log).read_text(errors="replace")
        except OSError:
            return set()
        active: set[int] = set()
        for line in text.splitlines():
            if m := _ACTIVATED.search(line):
                active.add(int(m.group(1)))
            elif m := _DEACTIVATED.search(line):
                active.discard(int(m.group(1)))
        return active

    def _record_node_ids(self) -> None:
        for node in self.state["nodes"]:
            try:
                m = _NODE_ID.search(Path(node["log"]).read_text(errors="replace"))
            except OSError:
                m = None
            node["node_id"] = int(m.group(1)) if m else None

    # ------------------------------------------------------------------ Flower config / CLI
    def write_flower_config(self, tls_files: TlsFiles | None) -> Path:
        """``cli/config.toml``: the ``[superlink.signguard-deploy]`` connection (the default)."""
        private_dir(self.cli_home)
        lines = [
            "[superlink]",
            f'default = "{CONNECTION_NAME}"',
            "",
            f"[superlink.{CONNECTION_NAME}]",
            f'address = "{HOST}:{self.state["control_port"]}"',
        ]
        if tls_files is not None:
            lines.append(f"root-certificates = {json.dumps(str(tls_files.ca_cert))}")
        else:
            lines.append("insecure = true")
        path = self.cli_home / "config.toml"
        write_owner_only(path, "\n".join(lines) + "\n")
        return path

    def flwr(self, args: Sequence[str], *, timeout: float = 300.0, cwd: str | Path | None = None
             ) -> subprocess.CompletedProcess:
        """Run the ``flwr`` CLI against this deployment (``FLWR_HOME`` = ``cli/``)."""
        env = self.env(self.cli_home)
        env["COLUMNS"] = "200"
        return subprocess.run([str(self.bin_dir / "flwr"), *args], cwd=cwd or self.cli_home, env=env,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def stage_app(self, clientapp: str | None = None, serverapp: str | None = None,
                  app_root: Path = REPO_ROOT) -> Path:
        """Copy the app (pyproject + the .py files of its packages) into ``app/``.

        ``flwr run`` packs what it finds in the app directory into the FAB: staging keeps
        ``flwr run`` from touching the repository and lets a test swap the ClientApp component
        (``simulations.deploy.faults:app``) without editing ``pyproject.toml``.
        """
        dest = self.state_dir / "app"
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        text = (app_root / "pyproject.toml").read_text()
        for key, value in (("clientapp", clientapp), ("serverapp", serverapp)):
            if value:
                text, count = re.subn(rf'(?m)^{key}\s*=.*$', f'{key} = "{value}"', text)
                if count != 1:
                    raise DeploymentError(f"could not set {key} in the staged pyproject.toml")
        (dest / "pyproject.toml").write_text(text)
        for name in ("README.md", "LICENSE"):
            if (app_root / name).is_file():
                shutil.copy2(app_root / name, dest / name)
        for package in APP_PACKAGES:
            for src in (app_root / package).rglob("*.py"):
                if "__pycache__" in src.parts:
                    continue
                target = dest / src.relative_to(app_root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
        return dest

    # ------------------------------------------------------------------ run
    def run(
        self,
        defense: str = "signguard",
        rounds: int = 3,
        *,
        run_config: Mapping[str, Any] | None = None,
        clientapp: str | None = None,
        round_timeout: float | None = None,
        min_nodes: int | None = None,
        timeout: float | None = None,
        stream: IO[str] | None = None,
        on_line=None,
    ) -> RunOutcome:
        """Submit the app with ``flwr run <staged app> signguard-deploy --stream`` and wait.

        The run config gets ``num-clients`` (the number of SuperNodes), ``num-byzantine`` and
        ``byzantine-placement="first"`` (the ServerApp's ground truth: the Byzantine nodes are
        partitions ``0..m-1``, as ``up`` made them), ``attack`` (recorded, applied by the
        nodes), ``defense``, ``rounds``, ``results-dir``, and ``round-timeout`` / ``min-nodes``
        when given; ``run_config`` adds or overrides keys.  ``on_line(line)`` sees every output
        line as it arrives (the fault tests kill a node mid-run from there).
        """
        if not self.is_up():
            raise DeploymentError(f"no deployment is running from {self.state_dir}: run `up` first")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        results_dir = self.state_dir / "runs" / stamp
        results_dir.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "num-clients": self.state["num_nodes"],
            "num-byzantine": len(self.state["byzantine_partitions"]),
            "byzantine-placement": "first",
            "attack": self.state["attack"],
            "defense": defense,
            "rounds": int(rounds),
            "eval-every": 1,
            "results-dir": str(results_dir),
        }
        if round_timeout is not None:
            config["round-timeout"] = float(round_timeout)
        if min_nodes is not None:
            config["min-nodes"] = int(min_nodes)
        config.update(run_config or {})
        override = results_dir / "run-config.toml"
        override.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in config.items()))
        app_dir = self.stage_app(clientapp=clientapp)
        log_path = results_dir / "flwr-run.log"
        cmd = [str(self.bin_dir / "flwr"), "run", str(app_dir), CONNECTION_NAME, "--run-config", str(override),
               "--stream"]
        env = self.env(self.cli_home)
        env["COLUMNS"] = "200"
        t0 = time.monotonic()
        run_id = None
        result_path = None
        with open(log_path, "w") as log_fh:
            log_fh.write(f"$ {' '.join(cmd)}\n")
            proc = subprocess.Popen(cmd, cwd=app_dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1)
            lines: queue.Queue[str | None] = queue.Queue()

            def pump() -> None:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    lines.put(raw)
                lines.put(None)

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            try:
                deadline = None if timeout is None else t0 + timeout
                while True:
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(f"flwr run did not finish within {timeout:.0f} s (log {log_path})")
                    try:
                        raw = lines.get(timeout=1.0)
                    except queue.Empty:
                        continue
                    if raw is None:
                        break
                    line = _ANSI.sub("", raw)
                    log_fh.write(line)
                    log_fh.flush()
                    if stream is not None:
                        stream.write(line)
                        stream.flush()
                    if run_id is None and (m := _RUN_ID.search(line)):
                        run_id = int(m.group(1))
                    if m := _RESULTS.search(line):
                        result_path = m.group(1)
                    if on_line is not None:
                        on_line(line)
                proc.wait(timeout=60)
            except BaseException:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                if run_id is not None and self.is_up():
                    self.flwr(["stop", str(run_id), CONNECTION_NAME], timeout=60)
                raise
            finally:
                reader.join(timeout=5)
        seconds = time.monotonic() - t0
        result = None
        candidates = [Path(result_path)] if result_path else sorted(results_dir.glob("*.json"))
        for path in candidates:
            if path.is_file():
                result = json.loads(path.read_text())
                break
        return RunOutcome(returncode=proc.returncode, seconds=seconds, run_id=run_id, log=str(log_path),
                          results_dir=str(results_dir), result=result)

    # ------------------------------------------------------------------ faults
    def kill_node(self, partition_id: int, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to one SuperNode's process group (node, SuperExec, app); return its PID."""
        for node in self.nodes:
            if node.partition_id == partition_id:
                if node.alive():
                    self._signal_group(node, sig)
                    self._reap(node.pid, 10.0)
                return node.pid
        raise DeploymentError(f"no SuperNode with partition id {partition_id}")

    # ------------------------------------------------------------------ down
    def _signal_group(self, proc: ProcInfo, sig: int) -> None:
        if not proc.alive():
            return
        try:
            os.killpg(proc.pid, sig)  # start_new_session: the group id is the leader's PID
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(proc.pid, sig)

    def _reap(self, pid: int, timeout: float) -> bool:
        """Wait up to ``timeout`` for ``pid`` to exit (reaping it if it is our child)."""
        popen = self._popen.get(pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if popen is not None:
                try:
                    popen.wait(timeout=0.2)
                    return True
                except subprocess.TimeoutExpired:
                    continue
            if start_time(pid) is None:
                return True
            time.sleep(0.2)
        return False

    def down(self, timeout: float = 15.0, log: IO[str] | None = None) -> list[int]:
        """Stop everything this deployment started; return the PIDs that were signalled.

        SuperNodes first (SIGTERM to each one's process group: the node deregisters), then the
        SuperLink; whatever is still alive after ``timeout`` seconds gets SIGKILL, and so do
        descendants (SuperExec, ``flwr-serverapp``, ``flwr-clientapp``) that outlived their
        parent.  Only PIDs recorded in ``state.json`` (with their start time) are signalled.
        """
        say = (lambda *a: print(*a, file=log, flush=True)) if log is not None else (lambda *a: None)
        stopped: list[int] = []
        for group in (self.nodes, [p for p in [self.superlink] if p is not None]):
            live = [p for p in group if p.alive()]
            # Snapshot each process's descendants now: once a parent dies they are reparented.
            family: dict[int, list[tuple[int, float | None]]] = {
                p.pid: [(d, start_time(d)) for d in descendants(p.pid)] for p in live
            }
            for proc in live:
                self._signal_group(proc, signal.SIGTERM)
                stopped.append(proc.pid)
            deadline = time.monotonic() + timeout
            for proc in live:
                if not self._reap(proc.pid, max(0.1, deadline - time.monotonic())):
                    say(f"{proc.role} pid {proc.pid} ignored SIGTERM for {timeout:.0f} s: SIGKILL")
                    self._signal_group(proc, signal.SIGKILL)
                    self._reap(proc.pid, 5.0)
                say(f"stopped {proc.role} pid {proc.pid}"
                    f"{'' if proc.partition_id is None else f' (partition {proc.partition_id})'}")
            # Descendants in sessions of their own (the SuperLink's SuperExec is one) watch their
            # parent and exit on their own; whatever is left gets SIGTERM, then SIGKILL.
            leftovers = [(d, st) for p in live for d, st in family[p.pid] if st is not None]
            for sig, grace in ((None, 5.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
                leftovers = [(d, st) for d, st in leftovers if is_alive(d, st)]
                if not leftovers:
                    break
                for pid, _ in leftovers:
                    if sig is not None:
                        say(f"{signal.Signals(sig).name} leftover pid {pid}")
                        try:
                            os.kill(pid, sig)
                        except ProcessLookupError:
                            pass
                end = time.monotonic() + grace
                while time.monotonic() < end and any(is_alive(d, st) for d, st in leftovers):
                    time.sleep(0.2)
        for pid, popen in list(self._popen.items()):
            if popen.poll() is None:
                popen.kill()
            popen.wait()
            del self._popen[pid]
        if self.state:
            self.state["stopped"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            self._save()
        return stopped

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """What is running: every process alive or not, and the nodes the SuperLink sees."""
        procs = []
        for p in self.processes:
            procs.append({
                "role": p.role, "pid": p.pid, "alive": p.alive(), "port": p.port,
                "partition_id": p.partition_id, "node_id": p.node_id, "node_config": p.node_config, "log": p.log,
            })
        return {
            "state_dir": str(self.state_dir),
            "up": self.is_up(),
            "flwr_version": self.state.get("flwr_version"),
            "transport": self.state.get("transport"),
            "tls": self.state.get("tls"),
            "auth": self.state.get("auth"),
            "address": f"{HOST}:{self.state.get('control_port')}" if self.state else None,
            "fleet_address": f"{HOST}:{self.state.get('fleet_port')}" if self.state else None,
            "byzantine_partitions": self.state.get("byzantine_partitions"),
            "attack": self.state.get("attack"),
            "connected_nodes": len(self.connected_node_ids()),
            "flower_config": str(self.cli_home / "config.toml"),
            "processes": procs,
        }

    def run_command_hint(self) -> str:
        """The ``flwr run`` command line a user can type against this deployment."""
        return (f"FLWR_HOME={self.cli_home} FLWR_TELEMETRY_ENABLED=0 {self.bin_dir / 'flwr'} run . "
                f"{CONNECTION_NAME} --run-config \"num-clients={self.state.get('num_nodes')} "
                f"num-byzantine={len(self.state.get('byzantine_partitions', []))} byzantine-placement='first' "
                f"attack='{self.state.get('attack')}' rounds=3\" --stream")


def iter_lines(path: str | Path) -> Iterable[str]:
    """The lines of a log without ANSI colours."""
    return _ANSI.sub("", Path(path).read_text(errors="replace")).splitlines()
