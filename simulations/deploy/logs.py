"""Reading the Flower processes' logs: colours stripped, node ids, run ids, result files.

The SuperLink and SuperNodes report what the deployment needs to know (which nodes are
connected, each node's id, the run id, where the ServerApp wrote its result) only in their
output, so the patterns below are the interface to them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "ANSI",
    "RUN_ID",
    "RESULTS",
    "strip_ansi",
    "tail",
    "iter_lines",
    "active_node_ids",
    "logged_node_id",
]

ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: ``flwr run``'s line naming the run it submitted.
RUN_ID = re.compile(r"Successfully started run (\d+)")
#: The ServerApp's line naming its result file.
RESULTS = re.compile(r"results in (\S+\.json)")
_ACTIVATED = re.compile(r"\[Fleet\.ActivateNode\] Activated node_id=(\d+)")
_DEACTIVATED = re.compile(r"\[Fleet\.DeactivateNode\] Deactivated node_id=(\d+)")
_NODE_ID = re.compile(r"SuperNode ID: (\d+)")


def strip_ansi(text: str) -> str:
    """``text`` without ANSI colour codes."""
    return ANSI.sub("", text)


def tail(path: str | Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log without colours, or ``"(no log)"`` if it cannot be read."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(strip_ansi(text).splitlines()[-lines:])


def iter_lines(path: str | Path) -> Iterable[str]:
    """The lines of a log without ANSI colours."""
    return strip_ansi(Path(path).read_text(errors="replace")).splitlines()


def active_node_ids(superlink_log: str | Path) -> set[int]:
    """Node ids the SuperLink's log shows activated and not deactivated since (empty if unreadable)."""
    try:
        text = Path(superlink_log).read_text(errors="replace")
    except OSError:
        return set()
    active: set[int] = set()
    for line in text.splitlines():
        if m := _ACTIVATED.search(line):
            active.add(int(m.group(1)))
        elif m := _DEACTIVATED.search(line):
            active.discard(int(m.group(1)))
    return active


def logged_node_id(supernode_log: str | Path) -> int | None:
    """The node id a SuperNode's log reports, or ``None`` (not yet logged, or no log)."""
    try:
        m = _NODE_ID.search(Path(supernode_log).read_text(errors="replace"))
    except OSError:
        m = None
    return int(m.group(1)) if m else None
