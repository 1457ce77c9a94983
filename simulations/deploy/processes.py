"""Process bookkeeping for the deployment: find a process again and stop exactly it.

A PID alone is not an identity (the kernel reuses PIDs), so every process we start is recorded
with its creation time; a PID whose creation time differs is someone else's process and is never
signalled.  psutil does the portable part (creation time, zombies, the process tree).
"""

from __future__ import annotations

import psutil

__all__ = ["descendants", "is_alive", "start_time"]


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
