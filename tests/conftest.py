"""Shared test helpers: offline data location, simulation environment, process hygiene."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# Offline and quiet: no telemetry, no update checks, no Ray usage stats.
SIMULATION_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
}
os.environ.update(SIMULATION_ENV)


@pytest.fixture
def shared_data() -> Path:
    """The offline datasets beside the repository, or skip when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"offline datasets not found next to the repository ({SHARED_DATA})")
    return SHARED_DATA


@contextmanager
def simulation_env():
    """Environment for an in-process Flower simulation; always shuts Ray down."""
    saved = {k: os.environ.get(k) for k in SIMULATION_ENV}
    os.environ.update(SIMULATION_ENV)
    try:
        yield
    finally:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def descendant_pids(root: int | None = None) -> list[int]:
    """PIDs of every live descendant of ``root`` (this process by default)."""
    from simulations.deploy.core import descendants

    return descendants(os.getpid() if root is None else root)


def assert_no_ray_processes(timeout: float = 15.0) -> None:
    """Fail if processes started by this test process (Ray workers, raylet, ...) outlive it."""
    deadline = time.monotonic() + timeout
    while True:
        left = descendant_pids()
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    names = []
    for pid in left:
        try:
            names.append(f"{pid}:{Path(f'/proc/{pid}/cmdline').read_bytes()[:80]!r}")
        except OSError:
            pass
    assert not names, f"processes left behind: {names}"
