"""The flwr-run ServerApp refuses a bad run config at once and never waits forever for nodes."""

from __future__ import annotations

import time

import pytest
from flwr.app import Context, RecordDict

from simulations import server_app
from simulations.config import ExperimentConfig


class _NoNodes:
    """A Grid with ``count`` connected nodes; any other use is a test failure."""

    def __init__(self, count: int = 0) -> None:
        self.count = count

    def get_node_ids(self):
        return list(range(1, self.count + 1))

    def __getattr__(self, name):  # pragma: no cover - reaching here means the app went on
        raise AssertionError(f"the ServerApp used grid.{name} with an invalid run config")


def _context(**overrides) -> Context:
    run_config = {**ExperimentConfig(task="digits", num_clients=5, num_byzantine=1, rounds=1).to_run_config(), **overrides}
    run_config = {k: v for k, v in run_config.items() if v is not None}
    return Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"defense": "foo"}, "unknown defense 'foo'"),
        ({"defense": "multi_krum", "num-byzantine": 2}, "n >= 2f + 3"),
        ({"attack": "lie", "num-byzantine": 0}, "0 Byzantine clients"),
        ({"attack": "lie", "attack-params": "zz=1"}, "attack-params"),
        ({"partition-s": 3.0}, "partition-s"),
        ({"rounds-typo": 3}, "unknown run-config key(s) ['rounds-typo']"),
    ],
)
def test_invalid_run_config_fails_before_waiting_for_nodes(overrides, message) -> None:
    start = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        server_app.main(_NoNodes(0), _context(**overrides))
    assert message in str(exit_info.value)
    assert time.monotonic() - start < 30


def test_too_few_nodes_stop_the_run_with_the_fix() -> None:
    start = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        server_app.wait_for_nodes(_NoNodes(3), 5, timeout=0.3, poll=0.05)
    assert time.monotonic() - start < 5
    text = str(exit_info.value)
    assert "only 3 of the 5 nodes" in text and '--federation-config "num-supernodes=5"' in text
    server_app.wait_for_nodes(_NoNodes(5), 5, timeout=0.0)  # enough nodes: returns at once
