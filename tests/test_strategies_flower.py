"""Every strategy in a real Flower run (Ray simulation engine), a few rounds each.

One ``run_simulation`` call drives all strategies one after another from the same ServerApp, so
Ray starts once.  The ClientApp solves a tiny least-squares problem; node 0 misbehaves (sends
NaN) to show a bad client cannot stop a real run.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

import signguard_flwr

from .conftest import assert_no_ray_processes, simulation_env

pytestmark = pytest.mark.slow

NUM_NODES = 12
D = 20
TRUE_W = np.linspace(-1, 1, D).astype(np.float32)
STRATEGY_ARGS = {
    "Mean": {},
    "TrimmedMean": {"f": 2},
    "Median": {},
    "GeoMed": {},
    "Krum": {"f": 2},
    "MultiKrum": {"f": 2},
    "Bulyan": {"f": 2},
    "DnC": {"f": 2},
    "SignGuard": {},
    "SignGuardSim": {},
    "SignGuardDist": {},
}
RESULTS: dict[str, dict] = {}

client = ClientApp()


@client.train()
def _train(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    w = msg.content["arrays"]["w"].numpy()
    rng = np.random.default_rng(pid)
    x = rng.normal(size=(32, D)).astype(np.float32)
    y = x @ TRUE_W
    grad = x.T @ (x @ w - y) / len(x)
    new_w = (w - 0.1 * grad).astype(np.float32)
    if pid == 0:
        new_w = np.full_like(w, np.nan)  # a broken client
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(new_w)}),
            "metrics": MetricRecord({"num-examples": 32, "train-loss": float(np.mean((x @ w - y) ** 2))}),
            "diag": ConfigRecord({"partition-id": pid}),
        }
    )
    return Message(content=content, reply_to=msg)


server = ServerApp()


@server.main()
def _main(grid: Grid, context: Context) -> None:
    for name, params in STRATEGY_ARGS.items():
        strategy = getattr(signguard_flwr, name)(
            fraction_evaluate=0.0,
            min_available_nodes=NUM_NODES,
            min_train_nodes=NUM_NODES,
            seed=0,
            **params,
        )
        init = ArrayRecord({"w": Array(np.zeros(D, dtype=np.float32))})
        result = strategy.start(grid=grid, initial_arrays=init, num_rounds=3)
        RESULTS[name] = {
            "w": result.arrays["w"].numpy(),
            "metrics": result.train_metrics_clientapp,
            "history": strategy.history,
        }


def test_every_strategy_runs_in_a_real_flower_simulation():
    from flwr.simulation import run_simulation

    RESULTS.clear()
    with simulation_env():
        run_simulation(
            server_app=server,
            client_app=client,
            num_supernodes=NUM_NODES,
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2}},
        )
    assert_no_ray_processes()
    assert set(RESULTS) == set(STRATEGY_ARGS)
    start_err = np.linalg.norm(TRUE_W)
    for name, res in RESULTS.items():
        assert np.isfinite(res["w"]).all(), name
        # three rounds of gradient steps move towards the solution
        assert np.linalg.norm(res["w"] - TRUE_W) < start_err, name
        assert len(res["history"]) == 3
        for diag in res["history"]:
            assert len(diag.received) == NUM_NODES
            assert any("NaN" in reason for reason in diag.rejected.values())
            assert len(diag.valid) == NUM_NODES - 1
        assert res["metrics"][3]["valid"] == NUM_NODES - 1
