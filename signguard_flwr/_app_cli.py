"""Entry point of the ``signguard-sim`` command.

The simulation CLI lives in the Flower app's ``simulations`` package, which the wheel does not
ship (see pyproject.toml).  The command therefore works from a checkout of the repository:
installed in editable mode it finds the app next to this package; otherwise it looks in the
current directory and its parents for a folder holding ``simulations/cli/main.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _app_root() -> Path | None:
    candidates = [Path(__file__).resolve().parents[1], *Path.cwd().resolve().parents]
    candidates.insert(1, Path.cwd().resolve())
    for root in candidates:
        if (root / "simulations" / "cli" / "main.py").is_file() and (root / "clients").is_dir():
            return root
    return None


def main(argv: list[str] | None = None) -> int:
    root = _app_root()
    if root is None:
        sys.stderr.write(
            "signguard-sim runs the experiments of the signguard-flwr Flower app: run it from a clone of the "
            "repository (pip install -e . there), where the simulations/ and clients/ folders are.\n"
        )
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from simulations.cli.main import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
