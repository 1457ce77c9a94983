"""The ServerApp of ``flwr run .``: one experiment from the run config.

Run config keys are those of :class:`simulations.config.ExperimentConfig` with dashes
(``task``, ``defense``, ``defense-params``, ``attack``, ``attack-params``, ``num-clients``,
``num-byzantine`` or ``byzantine-fraction``, ``partition``, ``rounds``, ...), plus
``results-dir``: where the JSON/CSV result files go (default ``results/flwr-run`` under the
directory the SuperLink was started from).
"""

from __future__ import annotations

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
    cfg = ExperimentConfig.from_run_config(run_config)
    result = run_on_grid(grid, cfg, engine="flwr-run")
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
