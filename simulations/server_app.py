"""The ServerApp of ``flwr run .``: one experiment from the run config.

Run config keys are those of :class:`simulations.config.ExperimentConfig` with dashes
(``task``, ``defense``, ``defense-params``, ``attack``, ``attack-params``, ``num-clients``,
``num-byzantine`` or ``byzantine-fraction``, ``partition``, ``rounds``, ...), plus
``results-dir``: where the JSON/CSV result files go (default ``results/flwr-run`` under the
directory the SuperLink was started from); ``round-timeout``: seconds a round waits for replies
(default 3600); ``min-nodes``: the nodes a round needs once all ``num-clients`` nodes have
connected (0, the default, = ``num-clients``; a deployment that must go on after losing
SuperNodes sets it lower).
"""

from __future__ import annotations

import sys
import time
from logging import INFO
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log

from .config import ExperimentConfig
from .experiment import run_on_grid

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_config = dict(context.run_config)
    results_dir = Path(str(run_config.pop("results-dir", "") or "results/flwr-run")).expanduser()
    timeout = float(run_config.pop("round-timeout", 3600.0))
    min_nodes = int(run_config.pop("min-nodes", 0))
    cfg = ExperimentConfig.from_run_config(run_config)
    log(INFO, "signguard-flwr: app code from %s", _code_origins())
    if 0 < min_nodes < cfg.num_clients:
        # Start with every node (no sampling race), then let rounds go on with fewer.
        while len(list(grid.get_node_ids())) < cfg.num_clients:
            log(INFO, "signguard-flwr: waiting for %d nodes to connect", cfg.num_clients)
            time.sleep(1)
    else:
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


def _code_origins() -> str:
    """Where the app's packages were imported from (the FAB's install dir in a deployment)."""
    names = ("simulations", "clients", "signguard_flwr")
    return ", ".join(f"{n}={Path(sys.modules[n].__file__).parent}" for n in names if n in sys.modules)
