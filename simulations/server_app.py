"""The ServerApp of ``flwr run .``: one experiment from the run config.

Run config keys are the settings of :data:`clients.schema.SETTINGS`: those of
:class:`simulations.config.ExperimentConfig` (``task``, ``defense``, ``defense-params``,
``attack``, ``attack-params``, ``num-clients``, ``num-byzantine`` or ``byzantine-fraction``,
``partition``, ``rounds``, ...), plus the ServerApp's own (``SERVERAPP_SETTINGS``):
``results-dir``: where the JSON/CSV result files go ("" = ``results/flwr-run`` under the
directory the SuperLink was started from); ``round-timeout``: seconds a round waits for replies
(default 3600); ``min-nodes``: the nodes a round needs once all ``num-clients`` nodes have
connected (0, the default, = ``num-clients``; a deployment that must go on after losing
SuperNodes sets it lower); ``node-timeout``: seconds to wait for the ``num-clients`` nodes to
connect before giving up with the fix (default 300).

The run config is checked before anything waits: a typo in a key, an unknown defense, bad
rule or attack parameters, or a set-up that cannot run (Krum with n < 2f + 3, an attack with no
Byzantine client) fails at once with one line naming the key.
"""

from __future__ import annotations

import sys
import time
from logging import ERROR, INFO
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log

from clients.schema import SERVERAPP_SETTINGS

from .config import ExperimentConfig
from .engine import check_run, run_on_grid

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_config = dict(context.run_config)
    try:
        own = {s.key: s.coerce(run_config.pop(s.key, s.default), f"run-config key {s.key!r}")
               for s in SERVERAPP_SETTINGS}
        cfg = ExperimentConfig.from_run_config(run_config)
        check_run(cfg)
    except (ValueError, TypeError) as err:
        log(ERROR, "signguard-flwr: invalid run config: %s", err)
        raise SystemExit(f"signguard-flwr: invalid run config: {err}") from None
    results_dir = Path(own["results-dir"] or "results/flwr-run").expanduser()
    timeout, min_nodes, node_timeout = own["round-timeout"], own["min-nodes"], own["node-timeout"]
    log(INFO, "signguard-flwr: app code from %s", _code_origins())
    wait_for_nodes(grid, cfg.num_clients, node_timeout)
    if not 0 < min_nodes < cfg.num_clients:
        min_nodes = cfg.num_clients
    result = run_on_grid(grid, cfg, engine="flwr-run", timeout=timeout, min_nodes=min_nodes)
    json_path, _ = result.write(results_dir)
    summary = result.summary()
    log(
        INFO,
        "signguard-flwr: %s finished: best accuracy %.4f, final %.4f; results in %s",
        result.key,
        summary["best_acc"],
        summary["final_acc"],
        json_path.resolve(),
    )


def wait_for_nodes(grid: Grid, num_nodes: int, timeout: float, *, poll: float = 1.0) -> None:
    """Wait until ``num_nodes`` nodes are connected; after ``timeout`` seconds raise SystemExit
    with how many came and how to give the simulation enough SuperNodes.

    Flower's own sampling would wait forever for nodes that never come (e.g. a simulation
    federation with fewer ``num-supernodes`` than ``num-clients``).
    """
    deadline = time.monotonic() + timeout
    last_said = -1
    while True:
        connected = len(list(grid.get_node_ids()))
        if connected >= num_nodes:
            return
        if time.monotonic() >= deadline:
            why = (f"only {connected} of the {num_nodes} nodes (num-clients) connected within {timeout:.0f} s; "
                   f"give the simulation that many SuperNodes: flwr run . <federation> --federation-config "
                   f"\"num-supernodes={num_nodes}\", start more SuperNodes, or lower num-clients")
            log(ERROR, "signguard-flwr: %s", why)
            raise SystemExit(f"signguard-flwr: {why}")
        if connected != last_said:
            log(INFO, "signguard-flwr: %d of %d nodes connected; waiting (up to %.0f s)", connected, num_nodes, timeout)
            last_said = connected
        time.sleep(poll)


def _code_origins() -> str:
    """Where the app's packages were imported from (the FAB's install dir in a deployment)."""
    names = ("simulations", "clients", "signguard_flwr")
    return ", ".join(f"{n}={Path(sys.modules[n].__file__).parent}" for n in names if n in sys.modules)
