"""The "plug it into your own server" example (``simulations/byo_server.py``) really runs.

* in-process (``simulations.engine.InProcessGrid``, no Ray): 6 nodes, one of them Byzantine
  (sign flip through the project's Byzantine mod, node config as in a deployment);
* under Flower's simulation engine (``flwr.simulation.run_simulation``, Ray), slow.
"""

from __future__ import annotations

import math

import pytest
from flwr.app import Context, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result

from clients.app import app as client_app
from simulations import byo_server
from simulations.engine import InProcessGrid
from tests.conftest import assert_no_ray_processes, simulation_env


def _context(run_config: dict) -> Context:
    return Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)


def test_byo_server_inprocess(capsys: pytest.CaptureFixture[str]) -> None:
    byzantine = {0: {"byzantine": True, "attack": "sign_flip"}}
    grid = InProcessGrid(client_app, 6, node_configs=byzantine, seed=3)
    result = byo_server.main(grid, _context({"rounds": 3, "num-clients": 6}))

    assert isinstance(result, Result)
    assert sorted(result.train_metrics_clientapp) == [1, 2, 3]
    for metrics in result.train_metrics_clientapp.values():
        assert metrics["received"] == 6 and metrics["valid"] == 6
        assert 1 <= metrics["selected"] <= 6
    # The final model is finite and has the task's arrays.
    final = result.arrays.to_numpy_ndarrays()
    assert final and all(math.isfinite(float(a.sum())) for a in final)
    out = capsys.readouterr().out
    assert out.count("round ") == 3 and "kept" in out


def test_byo_server_reads_the_apps_key_names_and_warns_on_the_old_one() -> None:
    """``rounds`` as in [tool.flwr.app.config]; the README's former ``num-server-rounds`` still works."""
    grid = InProcessGrid(client_app, 4, seed=1)
    result = byo_server.main(grid, _context({"rounds": 2, "num-clients": 4}))
    assert sorted(result.train_metrics_clientapp) == [1, 2]
    with pytest.warns(DeprecationWarning, match="'num-server-rounds' is deprecated: use 'rounds'"):
        result = byo_server.main(InProcessGrid(client_app, 4, seed=1), _context({"num-server-rounds": 1, "num-clients": 4}))
    assert sorted(result.train_metrics_clientapp) == [1]


@pytest.mark.slow
def test_byo_server_run_simulation() -> None:
    from flwr.simulation import run_simulation

    box: dict[str, Result] = {}
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        context.run_config.update({"rounds": 2, "num-clients": 4})
        box["result"] = byo_server.main(grid, context)

    with simulation_env():
        run_simulation(
            server_app=server,
            client_app=client_app,
            num_supernodes=4,
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2}},
        )
    assert_no_ray_processes()
    result = box["result"]
    assert sorted(result.train_metrics_clientapp) == [1, 2]
    assert all(m["received"] == 4 and m["valid"] == 4 for m in result.train_metrics_clientapp.values())


def test_readme_shows_the_tested_example() -> None:
    """The README's ServerApp is this file's code, so what users copy is what the tests run."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = (root / "simulations" / "byo_server.py").read_text()
    body = code[code.index("\nimport "):].strip()  # from the first import on
    assert body in (root / "README.md").read_text()
    assert 15 <= len([line for line in body.splitlines() if line.strip()]) <= 30  # "about 20 lines"
