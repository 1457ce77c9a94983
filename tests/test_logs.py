"""Quiet command-line logs: repeated warnings are shown a few times, then hidden once said so."""

from __future__ import annotations

import logging

from simulations.engine.logs import RepeatLimiter


def _record(msg: str, *args, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("flwr", level, __file__, 1, msg, args, None)


def test_repeat_limiter_masks_digits_and_says_when_it_hides() -> None:
    limiter = RepeatLimiter(limit=2)
    passed = []
    for rnd in range(1, 6):
        for node in (11, 22):
            record = _record("round %d: reply from node %d rejected (NaN)", rnd, node)
            if limiter.filter(record):
                passed.append(record.getMessage())
    assert passed[:2] == ["round 1: reply from node 11 rejected (NaN)", "round 1: reply from node 22 rejected (NaN)"]
    assert len(passed) == 3 and "further messages like this one are hidden" in passed[2]
    # Another shape of message is counted on its own; errors always pass.
    assert limiter.filter(_record("no finite updates: global model kept"))
    assert all(limiter.filter(_record("boom %d", i, level=logging.ERROR)) for i in range(5))


def test_a_command_leaves_flower_logging_as_it_found_it(capsys) -> None:
    import flwr.common.logger  # noqa: F401 - configures the logger on first import

    from simulations.cli.main import main

    logger = logging.getLogger("flwr")
    before = (logger.level, list(logger.filters))
    assert main(["sweep", "--list"]) == 0
    assert (logger.level, list(logger.filters)) == before
