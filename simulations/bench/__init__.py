"""Benchmarks: they measure and print, and assert nothing.

:mod:`.rules` times every aggregation rule against one pass over the data and Flower's built-in
counterparts (``python -m simulations.bench.rules``); :mod:`.round` times one federated round
under Flower (in-process and with Ray) beside the same round's pure computation (``python -m
simulations.bench.round``).  Layering: the benchmarks import :mod:`simulations.config`,
:mod:`simulations.engine`, ``clients`` and ``signguard_flwr``; nothing imports them.
"""
