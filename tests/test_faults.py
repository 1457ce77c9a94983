"""Faults in a real deployment on 127.0.0.1: the server rejects, logs, times out and goes on.

The ClientApp is ``simulations.deploy.faults:app`` (the project's ClientApp with a fault mod
driven by node config ``fault=...``), staged into the FAB by ``Deployment.run(clientapp=...)``.

* ``test_malformed_replies_are_rejected``: nodes that send NaN arrays, a wrongly shaped array,
  an ArrayRecord with none of the model's arrays, and a crashing ClientApp (error reply), next to
  one honest node: every bad reply is rejected with its reason in the log, the rounds aggregate
  the honest reply, the ServerApp finishes.
* ``test_lost_nodes_round_timeout``: a node that never answers (sleeps past the round timeout)
  and a node SIGKILLed when round 2 starts: each round ends on ``round-timeout`` with the replies
  that arrived, ``min-nodes`` lets the run go on without the dead node.

Plus a fast in-process check of the fault mod itself (no processes).
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from simulations.deploy import Deployment, iter_lines
from tests.conftest import descendant_pids


@pytest.fixture
def deployment(tmp_path: Path):
    """A Deployment in a temporary state dir; always stopped, and nothing may outlive it."""
    before = set(descendant_pids())
    dep = Deployment(tmp_path / "deploy")
    try:
        yield dep
    finally:
        dep.down(timeout=10)
        deadline = time.monotonic() + 20
        while (left := set(descendant_pids()) - before) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, f"processes left behind: {sorted(left)}"


def test_fault_mod_inprocess() -> None:
    """The fault mod's replies are what the strategy must reject (no processes, no network)."""
    from flwr.app import ArrayRecord

    from clients.tasks import get_task
    from simulations.deploy.faults import app
    from simulations.engine import InProcessGrid
    from signguard_flwr import SignGuard

    faults = {0: "nan", 1: "shape", 2: "garbage", 3: "crash"}
    grid = InProcessGrid(app, 6, node_configs={p: {"fault": f} for p, f in faults.items()}, seed=1)
    strategy = SignGuard(fraction_evaluate=0.0, min_available_nodes=6, min_train_nodes=6)
    model = get_task("digits").build_model()
    strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=1)
    diag = strategy.history[0]
    assert len(diag.received) == 6 and len(diag.valid) == 2 and diag.outcome == "aggregated"
    reasons = sorted(diag.rejected.values())
    assert any("NaN" in r for r in reasons)
    assert any("has shape" in r for r in reasons)
    assert any("missing arrays" in r for r in reasons)
    assert any("error reply" in r and "fault injection" in r for r in reasons)


def _run_log(dep: Deployment) -> str:
    return "\n".join(iter_lines(next(Path(dep.state_dir, "runs").glob("*/flwr-run.log"))))


@pytest.mark.slow
def test_malformed_replies_are_rejected(deployment: Deployment) -> None:
    faults = {0: "nan", 1: "shape", 2: "garbage", 3: "crash"}
    deployment.up(5, node_extra={p: {"fault": f} for p, f in faults.items()}, log=sys.stdout)
    outcome = deployment.run("signguard", rounds=2, clientapp="simulations.deploy.faults:app", timeout=420)
    assert outcome.ok, outcome.log
    rounds = outcome.result["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        # 5 replies (one is Flower's error reply for the crash), 1 usable: the honest node's.
        assert (r["received"], r["valid"], r["selected"], r["outcome"]) == (5, 1, 1, "aggregated")
        assert not math.isnan(r["test_acc"])
    log = _run_log(deployment)
    for reason in ("rejected (update has NaN or Inf entries)", "has shape (2048,), expected (64, 64)",
                   "rejected (missing arrays", "rejected (error reply", "fault injection: this ClientApp crashes"):
        assert log.count(reason) == 2, reason  # once per round
    assert "'failures': 1, 'invalid': 3, 'valid': 1" in log
    # The ServerApp finished normally and the SuperLink is still serving.
    assert "finished: best accuracy" in log
    assert deployment.superlink is not None and deployment.superlink.alive()
    # The SuperNodes ran the ClientApp from the FAB installed under their own FLWR_HOME.
    node_log = "\n".join(iter_lines(deployment.nodes[0].log))
    assert f"clients={deployment.state_dir / 'node-0' / 'apps'}" in node_log


@pytest.mark.slow
def test_lost_nodes_round_timeout(deployment: Deployment) -> None:
    round_timeout = 40.0
    # partition 0 never answers; partition 1 is killed when round 2 starts; 2 and 3 are honest.
    deployment.up(4, node_extra={0: {"fault": "sleep", "fault-sleep": 3600}}, log=sys.stdout)
    killed: dict[str, float] = {}

    def on_line(line: str) -> None:
        if "[ROUND 2/" in line and not killed:
            killed["at"] = time.monotonic()
            # Kill from another thread: on_line runs in the loop that drains flwr's output.
            threading.Thread(target=deployment.kill_node, args=(1, signal.SIGKILL)).start()

    t0 = time.monotonic()
    outcome = deployment.run("signguard", rounds=2, clientapp="simulations.deploy.faults:app",
                             round_timeout=round_timeout, min_nodes=2, timeout=480, on_line=on_line)
    assert outcome.ok, outcome.log
    assert killed, "round 2 never started"
    assert not deployment.nodes[1].alive() and deployment.nodes[0].alive()
    rounds = outcome.result["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    # Round 1: the sleeper is missing; round 2: the sleeper and the killed node are missing.
    assert [(r["received"], r["valid"], r["outcome"]) for r in rounds] == [(3, 3, "aggregated"), (2, 2, "aggregated")]
    # Each round waited for the timeout (the sleeper never answers), not much longer.
    for r in rounds:
        assert round_timeout - 1 <= r["round_seconds"] <= round_timeout + 30, r
    log = _run_log(deployment)
    assert "finished: best accuracy" in log
    sleeper_log = "\n".join(iter_lines(deployment.nodes[0].log))
    assert "sleeping 3600 s before answering" in sleeper_log
    sys.stdout.write(f"run took {time.monotonic() - t0:.1f} s; rounds {[r['round_seconds'] for r in rounds]}\n")
