"""Simulations of the SignGuard experiments: the Flower app's server side, in one sub-package per concern.

* :mod:`.config`: ``ExperimentConfig``, the settings of one run (shared by every concern);
* :mod:`.engine`: one experiment on a Flower Grid (ServerApp body, in-process Grid, omniscient
  adversary);
* :mod:`.sweeps`: many experiments (experiment and sweep files, the named sweeps, the resumable
  runner, result files);
* :mod:`.reporting`: tables, figures and verdicts from result files;
* :mod:`.cli`: the ``signguard-sim`` command;
* :mod:`.bench`: benchmarks; :mod:`.analysis`: one-off analyses behind docs/results/analysis;
* :mod:`.server_app` (``flwr run``), :mod:`.byo_server` (the plug-in example) and :mod:`.deploy`
  (a loopback deployment): the ways to run the app on Flower itself.

Layering: config ← engine ← sweeps ← reporting ← cli; each imports only those to its left.
The server apps and the benchmarks use config and engine only; deploy and analysis none of them.
"""
