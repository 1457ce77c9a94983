"""``python -m simulations.deploy {up,run,status,down,venv}``: a loopback Flower deployment.

Examples::

    python -m simulations.deploy up --nodes 5 --byzantine 1 --attack sign_flip --tls --auth
    python -m simulations.deploy run --defense signguard --rounds 3
    python -m simulations.deploy status
    python -m simulations.deploy down

    # the same over flwr 1.39's gRPC Fleet API, in a separate venv
    python -m simulations.deploy venv --flwr 1.39
    python -m simulations.deploy up --venv .deploy/venv-flwr139 --nodes 5 --byzantine 1
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
from pathlib import Path
from typing import Any

from .core import DEFAULT_STATE_DIR, REPO_ROOT, Deployment, DeploymentError


def _parse_kv(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as TOML (``3``, ``0.5``, ``true``, ``"x"``), else strings."""
    out: dict[str, Any] = {}
    for item in items:
        for part in item.split():
            if "=" not in part:
                raise SystemExit(f"expected key=value, got {part!r}")
            key, value = part.split("=", 1)
            try:
                out[key] = tomllib.loads(f"v = {value}")["v"]
            except tomllib.TOMLDecodeError:
                out[key] = value
    return out


def _faults(items: list[str]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for item in items:
        pid, _, kind = item.partition("=")
        if not pid.isdigit() or not kind:
            raise SystemExit(f"--fault expects PARTITION=KIND (e.g. 2=nan), got {item!r}")
        out.setdefault(int(pid), {})["fault"] = kind
    return out


def cmd_up(args: argparse.Namespace) -> int:
    dep = Deployment(args.state_dir, venv=args.venv)
    extra = _faults(args.fault)
    for item in args.node_config:
        pid, _, rest = item.partition(":")
        if not pid.isdigit():
            raise SystemExit(f"--node-config expects PARTITION:key=value ..., got {item!r}")
        extra.setdefault(int(pid), {}).update(_parse_kv([rest]))
    dep.up(args.nodes, byzantine=args.byzantine, attack=args.attack, tls=args.tls, auth=args.auth,
           port=args.port, node_extra=extra, startup_timeout=args.startup_timeout, log=sys.stdout)
    commands = hints(args.state_dir)
    print(f"run an experiment:  {commands['run']}")
    print(f"or with flwr:       cd {shlex.quote(str(REPO_ROOT))} && {dep.run_command_hint()}")
    print(f"what is running:    {commands['status']}")
    print(f"stop everything:    {commands['down']}")
    return 0


def hints(state_dir: str | Path) -> dict[str, str]:
    """The commands ``up`` prints, runnable as printed from any directory: they change to the
    repository (``-m simulations.deploy`` is found there) and name the state folder by its
    absolute path, before the subcommand where the parser wants it."""
    prefix = (f"cd {shlex.quote(str(REPO_ROOT))} && {shlex.quote(sys.executable)} -m simulations.deploy "
              f"--state-dir {shlex.quote(str(Path(state_dir).expanduser().resolve()))}")
    return {
        "run": f"{prefix} run --defense signguard --rounds 3",
        "status": f"{prefix} status",
        "down": f"{prefix} down",
    }


def _fmt(value: Any) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else (
        f"{value:.4f}" if isinstance(value, float) else str(value))


def cmd_run(args: argparse.Namespace) -> int:
    dep = Deployment(args.state_dir)
    outcome = dep.run(
        args.defense, args.rounds, run_config=_parse_kv(args.run_config), clientapp=args.clientapp,
        round_timeout=args.round_timeout, min_nodes=args.min_nodes, timeout=args.timeout,
        stream=None if args.quiet else sys.stdout,
    )
    print(f"\nflwr run exited {outcome.returncode} after {outcome.seconds:.1f} s (run id {outcome.run_id}); "
          f"log {outcome.log}")
    if outcome.result is None:
        print("no result file was written: see the log above and the SuperLink log "
              f"{dep.superlink.log if dep.superlink else ''}")
        return 1
    summary = outcome.result["summary"]
    print(f"result: {outcome.results_dir}")
    print("round  acc     received valid selected tp fp fn tn  round_s  outcome")
    for r in outcome.result["rounds"]:
        print(f"{r['round']:>5}  {_fmt(r['test_acc']):7} {r['received']:>8} {r['valid']:>5} {r['selected']:>8} "
              f"{r['tp']:>2} {r['fp']:>2} {r['fn']:>2} {r['tn']:>2}  {r['round_seconds']:7.1f}  {r['outcome']}")
    print(f"initial acc {_fmt(summary['initial_acc'])}, final {_fmt(summary['final_acc'])}, "
          f"ServerApp wall {summary['wall_seconds']:.1f} s")
    return 0 if outcome.ok else 1


def cmd_status(args: argparse.Namespace) -> int:
    if not (Path(args.state_dir) / "state.json").is_file():
        print(f"no deployment in {args.state_dir}")
        return 1
    dep = Deployment(args.state_dir)
    status = dep.status()
    if args.json:
        print(json.dumps(status, indent=1))
        return 0 if status["up"] else 1
    print(f"{'UP' if status['up'] else 'DOWN'}: flwr {status['flwr_version']}, fleet over {status['transport']}, "
          f"tls={status['tls']}, auth={status['auth']}, control {status['address']}, fleet {status['fleet_address']}")
    print(f"SuperNodes connected (SuperLink log): {status['connected_nodes']}; Byzantine partitions "
          f"{status['byzantine_partitions']} ({status['attack']})")
    for p in status["processes"]:
        what = p["role"] if p["partition_id"] is None else f"{p['role']} partition {p['partition_id']}"
        extra = {k: v for k, v in p["node_config"].items() if k not in ("partition-id", "num-partitions")}
        print(f"  {'alive' if p['alive'] else 'dead '} pid {p['pid']:>7}  port {p['port']:>5}  {what} {extra or ''}")
    print(f"Flower config: {status['flower_config']}")
    return 0 if status["up"] else 1


def cmd_down(args: argparse.Namespace) -> int:
    if not (Path(args.state_dir) / "state.json").is_file():
        print(f"no deployment in {args.state_dir}")
        return 0
    dep = Deployment(args.state_dir)
    stopped = dep.down(timeout=args.timeout, log=sys.stdout)
    print(f"stopped {len(stopped)} processes" if stopped else "nothing was running")
    return 0


def cmd_venv(args: argparse.Namespace) -> int:
    """Create a venv with another flwr (1.39: gRPC Fleet API) and this project, editable."""
    target = Path(args.path or DEFAULT_STATE_DIR / f"venv-flwr{args.flwr.replace('.', '')}").resolve()
    if not (target / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    spec = f"flwr[simulation]=={args.flwr}.*" if args.flwr.count(".") == 1 else f"flwr[simulation]=={args.flwr}"
    cmd = [str(target / "bin" / "pip"), "install", spec, "torch==2.14.1", "torchvision==0.29.1", "-e", f"{REPO_ROOT}[test]"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    print(f"ready: cd {shlex.quote(str(REPO_ROOT))} && {shlex.quote(sys.executable)} -m simulations.deploy "
          f"up --venv {shlex.quote(str(target))} --nodes 5 --byzantine 1")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR),
                        help="where PIDs, logs, FLWR_HOMEs, certificates live (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start a SuperLink and SuperNodes on 127.0.0.1")
    up.add_argument("--nodes", type=int, default=5)
    up.add_argument("--byzantine", type=int, default=0, help="number of Byzantine nodes (partitions 0..m-1)")
    up.add_argument("--attack", default="sign_flip", help="client-side attack of the Byzantine nodes")
    up.add_argument("--tls", action="store_true", help="generate a CA + server certificate and use TLS")
    up.add_argument("--auth", action="store_true", help="SuperNode authentication (needs --tls)")
    up.add_argument("--port", type=int, default=None, help="SuperLink port (default: a free one)")
    up.add_argument("--venv", default=None, help="virtual environment with the flwr to deploy (default: this one)")
    up.add_argument("--fault", action="append", default=[], metavar="PARTITION=KIND",
                    help="fault injection for `run --clientapp simulations.deploy.faults:app` "
                         "(nan, shape, garbage, crash, sleep)")
    up.add_argument("--node-config", action="append", default=[], metavar="PARTITION:key=value",
                    help="more node config for one SuperNode, e.g. '3:fault-sleep=60'")
    up.add_argument("--startup-timeout", type=float, default=180.0)
    up.set_defaults(func=cmd_up)

    run = sub.add_parser("run", help="run the app's ServerApp on the deployment (flwr run --stream)")
    run.add_argument("--defense", default="signguard")
    run.add_argument("--rounds", type=int, default=3)
    run.add_argument("--round-timeout", type=float, default=None, help="seconds a round waits for replies")
    run.add_argument("--min-nodes", type=int, default=None,
                     help="nodes a round needs after the start (default: all); lower it to survive lost nodes")
    run.add_argument("--run-config", action="append", default=[], metavar="KEY=VALUE",
                     help="more run-config keys, e.g. 'seed=1 defense-params=\"preset=reference\"'")
    run.add_argument("--clientapp", default=None,
                     help="ClientApp component to deploy instead of clients.app:app "
                          "(e.g. simulations.deploy.faults:app)")
    run.add_argument("--timeout", type=float, default=None, help="give up (and flwr stop the run) after this")
    run.add_argument("--quiet", action="store_true", help="do not echo the streamed logs")
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="what is running")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    down = sub.add_parser("down", help="stop every process `up` started (SuperNodes, then the SuperLink)")
    down.add_argument("--timeout", type=float, default=15.0, help="SIGKILL after this many seconds")
    down.set_defaults(func=cmd_down)

    venv = sub.add_parser("venv", help="create a venv with another flwr version (e.g. 1.39, gRPC)")
    venv.add_argument("--flwr", default="1.39")
    venv.add_argument("--path", default=None, help="default: .deploy/venv-flwr<version>")
    venv.set_defaults(func=cmd_venv)

    args = parser.parse_args(argv)
    # Relative to where the command was typed, once: every later use (and every printed hint)
    # then means the same folder whatever the working directory.
    args.state_dir = str(Path(args.state_dir).expanduser().resolve())
    try:
        return int(args.func(args))
    except DeploymentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
