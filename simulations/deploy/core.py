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

Modules: this one (the :class:`Deployment`: its state, ``up``, ``run``, ``down``, ``status``);
:mod:`.config` (paths, environment, node specs, ports, flwr's version); :mod:`.processes`
(process identity, stopping process groups); :mod:`.logs` (what the processes' logs say);
:mod:`.runs` (``flwr run``: the staged app, its streamed log, the outcome); :mod:`.certs` (key
material).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from .certs import TlsFiles, make_supernode_keys, make_tls_certificates, private_dir, write_owner_only
from .config import (
    BASE_ENV,
    CONNECTION_NAME,
    DEFAULT_STATE_DIR,
    HOST,
    REPO_ROOT,
    DeploymentError,
    NodeSpec,
    flwr_version,
    format_node_config,
    free_port,
    node_specs,
    port_open,
)
from .logs import active_node_ids, iter_lines, logged_node_id, strip_ansi, tail
from .processes import ProcInfo, descendants, signal_group, start_time, stop_processes, wait_gone
from .runs import RunOutcome, read_result, stage_app, stream_run, write_run_config

# Deployment is defined here; the other names moved out of this module and stay importable from
# it, by module of origin (the package re-exports them all).
__all__ = [
    "Deployment",
    # .config
    "CONNECTION_NAME",
    "DEFAULT_STATE_DIR",
    "REPO_ROOT",
    "DeploymentError",
    "NodeSpec",
    "flwr_version",
    "format_node_config",
    "free_port",
    # .processes
    "ProcInfo",
    "descendants",
    # .logs
    "iter_lines",
    # .runs
    "RunOutcome",
]


Say = Callable[..., None]


def _printer(log: IO[str] | None) -> Say:
    """``say(*args)``: print to ``log`` (flushed), or do nothing without one."""
    return (lambda *a: print(*a, file=log, flush=True)) if log is not None else (lambda *a: None)


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
        say = _printer(log)
        if self.is_up():
            raise DeploymentError(f"a deployment is already running from {self.state_dir} (PIDs {self.pids()}); "
                                  "run `python -m simulations.deploy down` first")
        if auth and not tls:
            raise DeploymentError("SuperNode authentication needs TLS: pass --tls with --auth")
        specs = node_specs(nodes, byzantine, attack, node_extra)
        self._new_state(specs, tls=tls, auth=auth, port=port)
        t0 = time.monotonic()
        try:
            tls_files: TlsFiles | None = None
            if tls:
                tls_files = make_tls_certificates(self.state_dir / "certs")
                self.state["certs"] = str(tls_files.directory)
            self.write_flower_config(tls_files)
            superlink = self._start_superlink(tls_files, say)
            self._wait(lambda: port_open(self.state["control_port"]) and port_open(self.state["fleet_port"]),
                       startup_timeout, "the SuperLink to listen", superlink)
            keys = self._register_supernode_keys(specs, say) if auth else {}
            self._start_supernodes(specs, tls_files, keys, say)
            n = len(specs)
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

    def _new_state(self, specs: Sequence[NodeSpec], *, tls: bool, auth: bool, port: int | None) -> None:
        """A fresh ``state.json`` for ``specs``: flwr version, transport, ports; no process yet."""
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
            "num_nodes": len(specs),
            "byzantine_partitions": sorted(s.partition_id for s in specs if s.byzantine),
            "attack": next((s.attack for s in specs if s.byzantine), "none"),
            "superlink": None,
            "nodes": [],
        }
        control_port = port or free_port()
        fleet_port = control_port if transport == "http" else free_port()
        self.state.update(control_port=control_port, fleet_port=fleet_port)
        self._save()

    def _start_superlink(self, tls_files: TlsFiles | None, say: Say) -> ProcInfo:
        """Spawn ``flower-superlink`` on the state's ports (TLS and node auth as the state says)."""
        transport, control_port, fleet_port = (self.state[k] for k in ("transport", "control_port", "fleet_port"))
        tls = self.state["tls"]
        cmd = [str(self.bin_dir / "flower-superlink"), "--host", HOST, "--port", str(control_port),
               "--disable-runtime-dependency-installation"]
        if transport == "grpc":
            cmd += ["--fleet-api-type", "grpc-rere", "--fleet-api-address", f"{HOST}:{fleet_port}"]
        if tls_files is not None:
            cmd += ["--ssl-ca-certfile", str(tls_files.ca_cert), "--ssl-certfile", str(tls_files.server_cert),
                    "--ssl-keyfile", str(tls_files.server_key)]
        else:
            cmd.append("--insecure")
        if self.state["auth"]:
            cmd.append("--enable-supernode-auth")
        superlink = self._spawn("superlink", cmd, self.state_dir / "superlink", port=control_port)
        self.state["superlink"] = asdict(superlink)
        self._save()
        say(f"SuperLink pid {superlink.pid} on {HOST}:{control_port} (flwr {self.state['flwr_version']}, "
            f"fleet over {transport.upper()}{'S' if tls and transport == 'http' else ''}"
            f"{' + TLS' if tls and transport == 'grpc' else ''}{f', port {fleet_port}' if transport == 'grpc' else ''})")
        return superlink

    def _register_supernode_keys(self, specs: Sequence[NodeSpec], say: Say) -> dict[int, Path]:
        """A key pair per node, each public key registered with the SuperLink before the nodes start.

        Returns the private key file per partition id.
        """
        keys: dict[int, Path] = {}
        for spec in specs:
            private, public = make_supernode_keys(self.state_dir / "keys", f"node-{spec.partition_id}")
            out = self.flwr(["supernode", "register", str(public), CONNECTION_NAME, "--name",
                             f"node-{spec.partition_id}"], timeout=120)
            if out.returncode != 0:
                raise DeploymentError(f"`flwr supernode register` failed for node {spec.partition_id}:\n"
                                      f"{out.stdout}{out.stderr}")
            keys[spec.partition_id] = private
            say(f"registered {public.name}: {strip_ansi(out.stdout).strip().splitlines()[-1:]}")
        return keys

    def _start_supernodes(self, specs: Sequence[NodeSpec], tls_files: TlsFiles | None, keys: Mapping[int, Path],
                          say: Say) -> None:
        """Spawn one ``flower-supernode`` per spec, each recorded in the state as it starts."""
        n = len(specs)
        for spec in specs:
            node_config = spec.node_config(n)
            node_port = free_port()
            cmd = [str(self.bin_dir / "flower-supernode"), "--superlink", f"{HOST}:{self.state['fleet_port']}",
                   "--host", HOST, "--port", str(node_port), "--node-config", format_node_config(node_config)]
            if self.state["transport"] == "grpc":
                cmd.append("--grpc-rere")
            if tls_files is not None:
                cmd += ["--root-certificates", str(tls_files.ca_cert)]
            else:
                cmd.append("--insecure")
            if self.state["auth"]:
                cmd += ["--auth-supernode-private-key", str(keys[spec.partition_id])]
            proc = self._spawn("supernode", cmd, self.state_dir / f"node-{spec.partition_id}", port=node_port,
                               partition_id=spec.partition_id, node_config=node_config)
            self.state["nodes"].append(asdict(proc))
            self._save()
            say(f"SuperNode pid {proc.pid}: partition {spec.partition_id}/{n}"
                f"{' BYZANTINE (' + spec.attack + ')' if spec.byzantine else ''}"
                f"{''.join(f' {k}={v}' for k, v in spec.extra.items())}")

    def _wait(self, cond, timeout: float, what: str, proc: ProcInfo, *, check_all: bool = False) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            dead = [p for p in (self.processes if check_all else [proc]) if not p.alive()]
            if dead:
                raise DeploymentError(f"{dead[0].role} (pid {dead[0].pid}) exited while waiting for {what}; "
                                      f"log {dead[0].log}:\n{tail(dead[0].log)}")
            if time.monotonic() > deadline:
                raise DeploymentError(f"timed out after {timeout:.0f} s waiting for {what}; log {proc.log}:\n"
                                      f"{tail(proc.log)}")
            time.sleep(0.5)

    def connected_node_ids(self) -> set[int]:
        """Node ids the SuperLink has activated and not deactivated (from its log)."""
        link = self.superlink
        return set() if link is None else active_node_ids(link.log)

    def _record_node_ids(self) -> None:
        for node in self.state["nodes"]:
            node["node_id"] = logged_node_id(node["log"])

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
        """Stage the app into ``app/`` for ``flwr run`` (see :func:`.runs.stage_app`); return that folder."""
        return stage_app(self.state_dir / "app", clientapp=clientapp, serverapp=serverapp, app_root=app_root)

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
        override = write_run_config(results_dir / "run-config.toml", config)
        app_dir = self.stage_app(clientapp=clientapp)
        log_path = results_dir / "flwr-run.log"
        cmd = [str(self.bin_dir / "flwr"), "run", str(app_dir), CONNECTION_NAME, "--run-config", str(override),
               "--stream"]
        env = self.env(self.cli_home)
        env["COLUMNS"] = "200"
        t0 = time.monotonic()
        streamed = stream_run(cmd, cwd=app_dir, env=env, log_path=log_path, timeout=timeout, stream=stream,
                              on_line=on_line, stop=self._stop_run)
        seconds = time.monotonic() - t0
        return RunOutcome(returncode=streamed.returncode, seconds=seconds, run_id=streamed.run_id,
                          log=str(log_path), results_dir=str(results_dir),
                          result=read_result(streamed.result_path, results_dir))

    def _stop_run(self, run_id: int) -> None:
        # An interrupted `flwr run` leaves the run going on the SuperLink: stop it there too.
        if self.is_up():
            self.flwr(["stop", str(run_id), CONNECTION_NAME], timeout=60)

    # ------------------------------------------------------------------ faults
    def kill_node(self, partition_id: int, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to one SuperNode's process group (node, SuperExec, app); return its PID."""
        for node in self.nodes:
            if node.partition_id == partition_id:
                if node.alive():
                    signal_group(node, sig)
                    wait_gone(node.pid, 10.0, self._popen.get(node.pid))
                return node.pid
        raise DeploymentError(f"no SuperNode with partition id {partition_id}")

    # ------------------------------------------------------------------ down
    def down(self, timeout: float = 15.0, log: IO[str] | None = None) -> list[int]:
        """Stop everything this deployment started; return the PIDs that were signalled.

        SuperNodes first (SIGTERM to each one's process group: the node deregisters), then the
        SuperLink; whatever is still alive after ``timeout`` seconds gets SIGKILL, and so do
        descendants (SuperExec, ``flwr-serverapp``, ``flwr-clientapp``) that outlived their
        parent.  Only PIDs recorded in ``state.json`` (with their start time) are signalled.
        """
        say = _printer(log)
        stopped: list[int] = []
        for group in (self.nodes, [p for p in [self.superlink] if p is not None]):
            stopped += stop_processes(group, timeout, say, self._popen)
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
