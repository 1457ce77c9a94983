"""``flwr run`` against a deployment: the staged app, the run config, the streamed log, the outcome.

:class:`~simulations.deploy.core.Deployment.run` stages the app (:func:`stage_app`), writes the
run config and builds the command; :func:`stream_run` runs it,
copying every output line (colours stripped) to the run's log, an optional stream and an
``on_line`` callback while it watches for the run id and the result file the ServerApp names.
"""

from __future__ import annotations

import json
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .config import REPO_ROOT, DeploymentError, toml_value
from .logs import RESULTS, RUN_ID, strip_ansi

__all__ = ["APP_PACKAGES", "RunOutcome", "StreamedRun", "stage_app", "write_run_config", "stream_run", "read_result"]

# The app's own packages; `flwr run` packs their .py files into the FAB.
APP_PACKAGES = ("clients", "simulations", "signguard_flwr")


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


@dataclass
class StreamedRun:
    """What :func:`stream_run` saw: the exit status, the run id and the result file named."""

    returncode: int
    run_id: int | None
    result_path: str | None


def stage_app(dest: Path, clientapp: str | None = None, serverapp: str | None = None,
              app_root: Path = REPO_ROOT) -> Path:
    """Copy the app (pyproject + the .py files of its packages) into ``dest`` (emptied first).

    ``flwr run`` packs what it finds in the app directory into the FAB: staging keeps
    ``flwr run`` from touching the repository and lets a test swap the ClientApp component
    (``simulations.deploy.faults:app``) without editing ``pyproject.toml``.

    Parameters
    ----------
    dest : Path
    clientapp, serverapp : str, optional
        ``module:attribute`` components replacing those in the staged ``pyproject.toml``.
    app_root : Path, default the repository

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    DeploymentError
        A component key that is not exactly once in ``pyproject.toml``.
    """
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


def write_run_config(path: Path, config: Mapping[str, Any]) -> Path:
    """Write ``config`` as the TOML file ``flwr run --run-config`` reads; return ``path``."""
    path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in config.items()))
    return path


def stream_run(
    cmd: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    timeout: float | None = None,
    stream: IO[str] | None = None,
    on_line: Callable[[str], None] | None = None,
    stop: Callable[[int], None] | None = None,
) -> StreamedRun:
    """Run ``cmd`` (``flwr run ... --stream``) to its end, logging and scanning its output.

    Parameters
    ----------
    cmd : list of str
    cwd : Path
    env : mapping
    log_path : Path
        Gets the command line, then every output line without colours.
    timeout : float, optional
        Seconds from the start; past it, :class:`TimeoutError`.
    stream : text file, optional
        Also gets every line as it arrives.
    on_line : callable, optional
        Sees every line as it arrives (the fault tests kill a node mid-run from there).
    stop : callable, optional
        ``stop(run_id)`` on any exception once the run id is known, after the ``flwr``
        process is terminated: a client-side abort does not stop the run on the SuperLink.

    Returns
    -------
    StreamedRun
    """
    t0 = time.monotonic()
    run_id = None
    result_path = None
    with open(log_path, "w") as log_fh:
        log_fh.write(f"$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(cmd, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        lines: queue.Queue[str | None] = queue.Queue()

        # A reader thread, so the deadline is checked even while flwr prints nothing.
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
                line = strip_ansi(raw)
                log_fh.write(line)
                log_fh.flush()
                if stream is not None:
                    stream.write(line)
                    stream.flush()
                if run_id is None and (m := RUN_ID.search(line)):
                    run_id = int(m.group(1))
                if m := RESULTS.search(line):
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
            if run_id is not None and stop is not None:
                stop(run_id)
            raise
        finally:
            reader.join(timeout=5)
    return StreamedRun(returncode=proc.returncode, run_id=run_id, result_path=result_path)


def read_result(result_path: str | None, results_dir: Path) -> dict[str, Any] | None:
    """The ServerApp's result: the file it named, else the first ``*.json`` in ``results_dir``."""
    candidates = [Path(result_path)] if result_path else sorted(results_dir.glob("*.json"))
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text())
    return None
