"""The named strategies, made from the rule registry: one :class:`RobustStrategy` per rule.

Every class accepts FedAvg's constructor arguments, the server-optimizer and buffer options of
:class:`~signguard_flwr.strategies.base.RobustStrategy`, and its rule's hyper-parameters (see the
rule's docstring in :mod:`signguard_flwr.rules`).  Hyper-parameters are checked at construction.

Nothing here names a rule: :func:`strategy_class` builds the class from what the rule
registered (its class name, summary, state factory, the rule it is a variant of), and this
module exports one class per rule registered when it is imported (``Mean``, ``TrimmedMean``,
... ``SignGuardDist``).  :data:`STRATEGIES` reads the registry at every access, so a rule
registered later is a strategy too.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..rules import RULES, Rule, get_rule
from .base import RobustStrategy

# Built classes by rule name, with the Rule they were built from: a rule registered again
# under the same name (after unregister) gets a fresh class.
_CLASSES: dict[str, tuple[Rule, type[RobustStrategy]]] = {}


def strategy_class(rule_name: str) -> type[RobustStrategy]:
    """The strategy class of the registered rule ``rule_name`` (built once, then cached).

    A :class:`RobustStrategy` subclass named ``rule.class_name`` with ``rule_name`` set, the
    rule's summary as its docstring, and, for a rule with ``make_state``, a
    :meth:`~RobustStrategy.make_rule_state` that returns a fresh state.  A rule registered as
    ``variant_of`` another gets a subclass of that rule's class.

    Raises
    ------
    KeyError
        If no rule is registered under ``rule_name``.
    """
    rule = get_rule(rule_name)
    cached = _CLASSES.get(rule_name)
    if cached is not None and cached[0] is rule:
        return cached[1]
    base = strategy_class(rule.variant_of) if rule.variant_of else RobustStrategy
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": rule.class_name,
        "__doc__": _class_doc(rule),
        "rule_name": rule.name,
        # Set on every class, so that a variant does not inherit its parent's state.
        "make_rule_state": _state_hook(rule.make_state),
    }
    cls = type(rule.class_name, (base,), namespace)
    _CLASSES[rule_name] = (rule, cls)
    return cls


def _state_hook(make_state: Callable[[], Any] | None) -> Callable[[RobustStrategy], Any]:
    def make_rule_state(self: RobustStrategy) -> Any:
        return None if make_state is None else make_state()

    make_rule_state.__doc__ = RobustStrategy.make_rule_state.__doc__
    return make_rule_state


def _class_doc(rule: Rule) -> str:
    # ``state`` and ``generator`` belong to the strategy (created once, seeded by ``seed=``).
    params = [name for name in rule.param_names if name not in ("state", "generator")]
    accepted = ", ".join(f"``{name}``" for name in params) if params else "none"
    usage = (
        f"Takes FedAvg's arguments, the options of :class:`RobustStrategy` and the "
        f"hyper-parameters of rule ``{rule.name!r}`` ({accepted}), checked at construction; "
        f"see ``help(signguard_flwr.rules.RULES[{rule.name!r}])``."
    )
    return f"{rule.summary}\n\n{textwrap.fill(usage, width=96)}\n"


class _Strategies(Mapping[str, type[RobustStrategy]]):
    """Rule name -> strategy class, for every rule in :data:`~signguard_flwr.rules.RULES`."""

    def __getitem__(self, name: str) -> type[RobustStrategy]:
        if name not in RULES:
            raise KeyError(name)
        return strategy_class(name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(RULES))

    def __len__(self) -> int:
        return len(RULES)

    def __repr__(self) -> str:
        return f"STRATEGIES({', '.join(f'{k}={v.__name__}' for k, v in self.items())})"


#: Strategy class by rule name, in the order of :data:`~signguard_flwr.rules.RULES`.
STRATEGIES: Mapping[str, type[RobustStrategy]] = _Strategies()

__all__ = ["STRATEGIES", "strategy_class"]
for _rule in RULES.values():
    globals()[_rule.class_name] = strategy_class(_rule.name)
    __all__.append(_rule.class_name)
del _rule
