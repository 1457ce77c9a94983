"""Flower's log output for the command line: warnings only, without the strategies' fixed notice."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

__all__ = ["quiet_flower", "flower_is_quiet", "RepeatLimiter", "restored_flower_logging"]


class _DropEvaluateNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:  # our strategies always set it
        return "fraction_evaluate is set to 0.0" not in record.getMessage()


class RepeatLimiter(logging.Filter):
    """Let through the first ``limit`` messages of each shape (digits masked), then say once
    that further ones are hidden.

    A run that diverges under attack makes the strategy reject all 50 replies of every round as
    non-finite: thousands of lines that differ only in round and node id, which bury the tables
    the command prints.  The run's result file keeps every round's counts.
    """

    _DIGITS = re.compile(r"\d+")

    def __init__(self, limit: int = 3) -> None:
        super().__init__()
        self.limit = limit
        self.seen: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        shape = self._DIGITS.sub("#", record.getMessage())
        count = self.seen.get(shape, 0) + 1
        self.seen[shape] = count
        if count == self.limit + 1:
            record.msg = f"{record.getMessage()} [further messages like this one are hidden; -v shows them]"
            record.args = None
        return count <= self.limit + 1


def quiet_flower() -> None:
    """Show Flower's warnings and errors only (each round's INFO lines drown a sweep's progress),
    each repeated warning a few times only (:class:`RepeatLimiter`)."""
    import flwr.common.logger  # noqa: F401 - it sets the level when first imported: import it first

    logger = logging.getLogger("flwr")
    logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _DropEvaluateNotice) for f in logger.filters):
        logger.addFilter(_DropEvaluateNotice())
    if not any(isinstance(f, RepeatLimiter) for f in logger.filters):
        logger.addFilter(RepeatLimiter())


def flower_is_quiet() -> bool:
    return logging.getLogger("flwr").level >= logging.WARNING


@contextlib.contextmanager
def restored_flower_logging() -> Iterator[None]:
    """Flower's logger level and filters as they were before the block."""
    import flwr.common.logger  # noqa: F401 - sets the level when first imported

    logger = logging.getLogger("flwr")
    level, filters = logger.level, list(logger.filters)
    try:
        yield
    finally:
        logger.setLevel(level)
        logger.filters[:] = filters
