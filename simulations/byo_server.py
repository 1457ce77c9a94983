"""Plug SignGuard into your own ServerApp: the whole server side, in about 20 lines.

Works with any ClientApp whose train replies carry the model as an ``ArrayRecord`` under
``"arrays"`` (this project's ``clients.app:app`` here, with its digits task).  Run it with
``flwr run`` (``serverapp = "simulations.byo_server:app"`` in ``[tool.flwr.app.components]``),
``flwr.simulation.run_simulation(server_app=app, client_app=..., num_supernodes=...)`` or on any
``Grid``.  Run-config keys it reads, named as in this app's ``[tool.flwr.app.config]``:
``rounds`` (default 3; its former name ``num-server-rounds`` still works, with a
DeprecationWarning), ``num-clients`` (wait for that many nodes before round 1; default 2).
"""

import warnings

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result

from clients.tasks import get_task
from signguard_flwr import SignGuard

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> Result:
    config = context.run_config                             # keys as in [tool.flwr.app.config]
    if "num-server-rounds" in config:                       # the former name of "rounds"
        warnings.warn("run-config key 'num-server-rounds' is deprecated: use 'rounds'", DeprecationWarning)
    num_rounds = int(config.get("num-server-rounds", config.get("rounds", 3)))
    num_nodes = int(config.get("num-clients", 2))
    model = get_task("digits").build_model()              # your torch model
    strategy = SignGuard(                                   # any FedAvg argument works too
        fraction_evaluate=0.0,                              # no federated evaluation round
        min_available_nodes=num_nodes, min_train_nodes=num_nodes,
        server_lr=0.1, server_momentum=0.9, server_weight_decay=5e-4,  # the paper's FedSGD step
    )
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=num_rounds)
    for diag in strategy.history:                           # who was kept, who was filtered, why
        print(f"round {diag.server_round}: kept {len(diag.selected)}/{len(diag.received)}, "
              f"rejected {sorted(diag.rejected.values())}")
    return result
