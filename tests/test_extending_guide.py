"""docs/extending.md: its ```python blocks run, and what they register works then goes away."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
BLOCKS = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_the_guide_has_a_rule_and_an_attack_example() -> None:
    assert len(BLOCKS) == 2
    assert "register(Rule(" in BLOCKS[0] and "@register_attack(" in BLOCKS[1]


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_guide_block_runs_and_cleans_up(index: int) -> None:
    from clients.attacks import ATTACKS
    from signguard_flwr import STRATEGIES
    from signguard_flwr.rules import RULES

    before = (set(RULES), set(STRATEGIES), set(ATTACKS))
    exec(compile(BLOCKS[index], f"{GUIDE.name}[{index}]", "exec"), {"__name__": f"guide_{index}"})
    assert (set(RULES), set(STRATEGIES), set(ATTACKS)) == before
