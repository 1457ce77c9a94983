"""The command line: ``signguard-sim`` (also ``python -m simulations``).

:mod:`.args` turns flags and experiment / sweep files into configurations (the parser, bad
values as one-line errors); :mod:`.main` runs the commands (``main``, ``run``, ``sweep``,
``report``) through the sweeps and the reports, and its :func:`~.main.main` is the entry point.
Layering: the CLI is the top layer; it may import every other concern (:mod:`simulations.config`,
:mod:`simulations.engine`, :mod:`simulations.sweeps`, :mod:`simulations.reporting`) and nothing
imports it but the entry points (``simulations/__main__.py``, ``signguard_flwr/_app_cli.py``).
This ``__init__`` imports nothing, so that ``simulations.cli.main`` names the module.
"""
