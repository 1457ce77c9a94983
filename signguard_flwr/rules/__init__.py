"""Byzantine-robust aggregation rules as pure functions over an ``(n, d)`` update matrix.

``RULES`` maps a name to a :class:`~signguard_flwr.rules.base.Rule`; call it as
``RULES["median"](updates)`` or ``RULES["multi_krum"](updates, f=10)``.  Every rule returns an
:class:`~signguard_flwr.rules.base.AggregationResult` with ``.vector``, ``.selected`` and ``.info``.

Adding a rule: write ``fn(updates, **params) -> AggregationResult`` (its docstring's first line
is the rule's summary) in a module of this package, end the module with
``register(Rule("name", fn, validate=...))`` (plus ``class_name``, ``display_name``,
``make_state`` where the defaults do not fit) and import the module below.  The strategy class,
the ``--defense`` choice and the display name in the reports all follow from that registration
(:func:`signguard_flwr.strategies.strategy_class`).
"""

from __future__ import annotations

from .base import AggregationResult, InsufficientClientsError, Rule

RULES: dict[str, Rule] = {}


def register(rule: Rule) -> Rule:
    """Add ``rule`` to :data:`RULES` under ``rule.name`` (names are unique)."""
    if rule.name in RULES:
        raise ValueError(f"rule {rule.name!r} is already registered")
    RULES[rule.name] = rule
    return rule


def unregister(name: str) -> Rule:
    """Remove the rule registered as ``name`` from :data:`RULES` and return it."""
    return RULES.pop(get_rule(name).name)


def get_rule(name: str) -> Rule:
    """Look a rule up by name, with a message listing the known names."""
    try:
        return RULES[name]
    except KeyError:
        raise KeyError(f"unknown rule {name!r}; known rules: {sorted(RULES)}") from None


# Rule modules register themselves on import; the order fixes the order of RULES.
from . import mean as _mean  # noqa: E402,F401
from . import geomed as _geomed  # noqa: E402,F401
from . import krum as _krum  # noqa: E402,F401
from . import dnc as _dnc  # noqa: E402,F401
from . import signguard as _signguard  # noqa: E402,F401
from . import centered_clipping as _centered_clipping  # noqa: E402,F401
from . import nnm as _nnm  # noqa: E402,F401  (after the rules it composes)

__all__ = ["RULES", "AggregationResult", "InsufficientClientsError", "Rule", "get_rule", "register", "unregister"]
