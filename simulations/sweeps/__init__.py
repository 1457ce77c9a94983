"""Sweeps: many experiments, their files and their results.

:mod:`.files` reads experiment and sweep files (TOML, the keys of ``[tool.flwr.app.config]``);
:mod:`.named` is the named sweeps of ``signguard-sim sweep NAME``, the ``*.toml`` files of this
folder; :mod:`.runner` runs a list of configurations (resumable, in parallel worker processes),
loads result files and estimates how long the runs still to do take.  Layering: the sweeps
import :mod:`simulations.config` and :mod:`simulations.engine`, never the reports or the CLI.
This ``__init__`` imports nothing, so that reading result files does not load the named sweeps.
"""
