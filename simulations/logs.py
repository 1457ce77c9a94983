"""Flower's log output for the command line: warnings only, without the strategies' fixed notice."""

from __future__ import annotations

import logging

__all__ = ["quiet_flower", "flower_is_quiet"]


class _DropEvaluateNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:  # our strategies always set it
        return "fraction_evaluate is set to 0.0" not in record.getMessage()


def quiet_flower() -> None:
    """Show Flower's warnings and errors only (each round's INFO lines drown a sweep's progress)."""
    import flwr.common.logger  # noqa: F401 - it sets the level when first imported: import it first

    logger = logging.getLogger("flwr")
    logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _DropEvaluateNotice) for f in logger.filters):
        logger.addFilter(_DropEvaluateNotice())


def flower_is_quiet() -> bool:
    return logging.getLogger("flwr").level >= logging.WARNING
