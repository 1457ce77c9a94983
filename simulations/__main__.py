"""``python -m simulations``: the ``signguard-sim`` command (see :mod:`simulations.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
