"""Process bookkeeping for the deployment: find a process again and stop exactly it.

A PID alone is not an identity (the kernel reuses PIDs), so every process we start is recorded
(:class:`ProcInfo`) with its creation time; a PID whose creation time differs is someone else's
process and is never signalled.  psutil does the portable part (creation time, zombies, the
process tree).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

__all__ = ["ProcInfo", "descendants", "is_alive", "signal_group", "start_time", "stop_processes", "wait_gone"]


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


def start_time(pid: int) -> float | None:
    """Creation time of ``pid`` (seconds since the epoch), or ``None`` if it is gone or a zombie."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None  # a zombie has exited; only its exit status is left to collect
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def is_alive(pid: int, started: float | None) -> bool:
    """Whether ``pid`` still runs and is the process that was started at ``started``.

    ``started=None`` accepts any live process with that PID (used only when the start time could
    not be read at launch).
    """
    current = start_time(pid)
    return current is not None and (started is None or current == started)


def descendants(root: int) -> list[int]:
    """PIDs of the live (non-zombie) descendants of ``root``, children before grandchildren."""
    try:
        tree = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    depth: dict[int, int] = {root: 0}
    alive: list[tuple[int, int]] = []
    # psutil lists the tree without a guaranteed order; sort by depth so callers can signal
    # parents before the processes they would otherwise re-spawn.
    for proc in tree:
        try:
            parent = proc.ppid()
            zombie = proc.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            continue
        depth[proc.pid] = depth.get(parent, 0) + 1
        if not zombie:
            alive.append((depth[proc.pid], proc.pid))
    return [pid for _, pid in sorted(alive, key=lambda item: item[0])]


def signal_group(proc: ProcInfo, sig: int) -> None:
    """Send ``sig`` to the process group ``proc`` leads, if ``proc`` is still the one we started."""
    if not proc.alive():
        return
    try:
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the leader's PID
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(proc.pid, sig)


def wait_gone(pid: int, timeout: float, popen: subprocess.Popen | None = None) -> bool:
    """Wait up to ``timeout`` for ``pid`` to exit (reaping it through ``popen`` if it is our child)."""
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


def stop_processes(
    procs: Sequence[ProcInfo],
    timeout: float,
    say: Callable[..., None],
    popens: Mapping[int, subprocess.Popen] | None = None,
) -> list[int]:
    """Stop the live ones of ``procs`` and whatever they spawned; return the PIDs signalled.

    SIGTERM to each one's process group; SIGKILL to those still alive ``timeout`` seconds later;
    then descendants that outlived their parent (:func:`_stop_leftovers`).

    Parameters
    ----------
    procs : sequence of ProcInfo
    timeout : float
        Seconds all of ``procs`` together get to exit after SIGTERM.
    say : callable
        Progress messages.
    popens : mapping, optional
        ``Popen`` objects by PID, for the processes this Python process started (reaped, so
        they do not linger as zombies).
    """
    popens = popens or {}
    live = [p for p in procs if p.alive()]
    # Snapshot each process's descendants now: once a parent dies they are reparented.
    family: dict[int, list[tuple[int, float | None]]] = {
        p.pid: [(d, start_time(d)) for d in descendants(p.pid)] for p in live
    }
    for proc in live:
        signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in live:
        if not wait_gone(proc.pid, max(0.1, deadline - time.monotonic()), popens.get(proc.pid)):
            say(f"{proc.role} pid {proc.pid} ignored SIGTERM for {timeout:.0f} s: SIGKILL")
            signal_group(proc, signal.SIGKILL)
            wait_gone(proc.pid, 5.0, popens.get(proc.pid))
        say(f"stopped {proc.role} pid {proc.pid}"
            f"{'' if proc.partition_id is None else f' (partition {proc.partition_id})'}")
    _stop_leftovers([(d, st) for p in live for d, st in family[p.pid] if st is not None], say)
    return [p.pid for p in live]


def _stop_leftovers(leftovers: Sequence[tuple[int, float | None]], say: Callable[..., None]) -> None:
    """Let descendants that outlived their parent exit: wait, then SIGTERM, then SIGKILL.

    Parameters
    ----------
    leftovers : sequence of (int, float or None)
        ``(pid, start time)`` pairs recorded while the parent lived (a dead parent's children
        are reparented, so they cannot be found from it afterwards).
    say : callable
        Progress messages.
    """
    # Descendants in sessions of their own (the SuperLink's SuperExec is one) watch their
    # parent and exit on their own; whatever is left gets SIGTERM, then SIGKILL.
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
