"""Scripted Flower deployment on one machine (loopback): SuperLink, SuperNodes, TLS, faults.

Command line (see ``docs/deployment.md``)::

    python -m simulations.deploy up --nodes 5 --byzantine 1 --attack sign_flip [--tls] [--auth]
    python -m simulations.deploy run --defense signguard --rounds 3
    python -m simulations.deploy status
    python -m simulations.deploy down

Python::

    from simulations.deploy import Deployment
    dep = Deployment("/tmp/dep")
    try:
        dep.up(4, byzantine=1, attack="sign_flip", tls=True)
        outcome = dep.run("signguard", rounds=2)
    finally:
        dep.down()

Modules: :mod:`.core` (the :class:`Deployment`: up, run, down, status), :mod:`.config` (paths,
environment, node specs, ports), :mod:`.processes` (process identity, stopping), :mod:`.logs`
(what the processes' logs say), :mod:`.runs` (``flwr run``: staged app, streamed log, outcome),
:mod:`.certs` (CA, server certificate, SuperNode keys), :mod:`.faults` (a test ClientApp whose
nodes send NaN, wrongly shaped or no arrays, crash, or never answer).
"""

from .core import (
    CONNECTION_NAME,
    DEFAULT_STATE_DIR,
    REPO_ROOT,
    Deployment,
    DeploymentError,
    NodeSpec,
    ProcInfo,
    RunOutcome,
    descendants,
    flwr_version,
    format_node_config,
    free_port,
    iter_lines,
)

__all__ = [
    "CONNECTION_NAME",
    "DEFAULT_STATE_DIR",
    "REPO_ROOT",
    "Deployment",
    "DeploymentError",
    "NodeSpec",
    "ProcInfo",
    "RunOutcome",
    "descendants",
    "flwr_version",
    "format_node_config",
    "free_port",
    "iter_lines",
]
