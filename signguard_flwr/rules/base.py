"""Shared types and checks for the aggregation rules.

Every rule is a pure function ``rule(updates, **params) -> AggregationResult`` over an
``(n, d)`` matrix of client updates (one row per client).  Rules never see Flower types and
never copy the ``n x d`` matrix to numpy: all heavy work stays in torch on the matrix's device.
"""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "AggregationResult",
    "InsufficientClientsError",
    "Rule",
    "check_updates",
    "check_int",
    "check_float",
    "check_choice",
    "require_f",
]


class InsufficientClientsError(ValueError):
    """Raised by a rule when there are too few rows for its declared ``f``.

    Example: Krum needs ``n >= 2f + 3``.  Strategies catch it, log it and keep the global
    model for that round instead of crashing.
    """


@dataclass
class AggregationResult:
    """What a rule returns.

    Attributes
    ----------
    vector : torch.Tensor
        The aggregated update, shape ``(d,)``, same dtype and device as the input.
    selected : torch.Tensor or None
        Boolean tensor of shape ``(n,)`` marking the rows that entered ``vector``; ``None``
        for rules that select no row as a whole (coordinate-wise median, trimmed mean, ...).
    info : dict
        Diagnostics (SignGuard features, cluster labels, norm band, Krum scores, ...).
        Values are tensors, numbers, strings or lists; never used by the caller to decide.
    """

    vector: torch.Tensor
    selected: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


def check_updates(updates: Any, *, min_rows: int = 1) -> torch.Tensor:
    """Validate the update matrix and return it without autograd history (no copy).

    The rules are aggregation steps, not differentiable layers: a tensor that requires grad is
    detached, so no rule fails on it or returns a result tied to the caller's graph.

    Raises
    ------
    TypeError
        If ``updates`` is not a floating-point ``torch.Tensor``.
    ValueError
        If it is not 2-D, or has fewer than ``min_rows`` rows or zero columns.
    """
    if not isinstance(updates, torch.Tensor):
        raise TypeError(
            f"updates must be a torch.Tensor of shape (n, d), got {type(updates).__name__}"
        )
    if updates.ndim != 2:
        raise ValueError(f"updates must have shape (n, d), got shape {tuple(updates.shape)}")
    if not updates.is_floating_point():
        raise TypeError(f"updates must be float32 or float64, got {updates.dtype}")
    n, d = updates.shape
    if n < min_rows:
        raise InsufficientClientsError(f"need at least {min_rows} update(s), got {n}")
    if d == 0:
        raise ValueError("updates have zero columns (d = 0)")
    return updates.detach()


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """Return ``value`` as int, or raise ``ValueError``/``TypeError`` naming ``name``."""
    if isinstance(value, (bool, float)) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = operator.index(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_min: bool = False,
    strict_max: bool = False,
) -> float:
    """Return ``value`` as a finite float within bounds, or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and (value <= minimum if strict_min else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict_min else '>='} {minimum}, got {value}")
    if maximum is not None and (value >= maximum if strict_max else value > maximum):
        raise ValueError(f"{name} must be {'<' if strict_max else '<='} {maximum}, got {value}")
    return value


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise naming ``name``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def require_f(f: int | None) -> int:
    """Check the declared number of Byzantine clients ``f`` (required, int >= 0)."""
    if f is None:
        raise TypeError("f (declared number of Byzantine clients) is required")
    return check_int("f", f, minimum=0)


class Rule:
    """A named aggregation rule: a pure function, an eager parameter check and what the
    strategies, the command line and the reports need to know about it.

    ``Rule`` objects are what :data:`signguard_flwr.rules.RULES` holds.  Calling one is the
    same as calling the wrapped function; :meth:`validate` checks hyper-parameters without any
    data, so strategies can fail at construction with a message naming the argument.
    Registering a rule (:func:`signguard_flwr.rules.register`) is all it takes to get a
    strategy class (:func:`signguard_flwr.strategies.strategy_class`), a ``--defense`` choice
    and a display name in the reports.

    Parameters
    ----------
    name : str
        Registry name (``"median"``, ``"signguard"``, ...).
    fn : callable
        ``fn(updates, **params) -> AggregationResult``.  Its signature lists the rule's
        hyper-parameters (:attr:`param_names`, :attr:`defaults`).
    validate : callable, optional
        ``validate(**params) -> None``; raises ``ValueError``/``TypeError`` naming the bad
        argument.  Unknown parameter names are always rejected.
    class_name : str, optional
        Name of the rule's strategy class; default: the registry name in CamelCase
        (``"multi_krum"`` -> ``"MultiKrum"``).
    display_name : str, optional
        How tables and plots print the rule (``"Multi-Krum"``); default: ``class_name``.
    summary : str, optional
        One line saying what the rule does, for help texts and the strategy's docstring;
        default: the first line of ``fn``'s docstring.
    make_state : callable, optional
        For rules that remember something across rounds: ``make_state()`` returns a fresh
        state object, which the strategy creates once and passes as ``state=`` every round.
    variant_of : str, optional
        Registry name of the rule this one varies (SignGuard-Sim varies SignGuard): its
        strategy class then subclasses that rule's class.
    """

    def __init__(
        self,
        name: str,
        fn: Callable[..., AggregationResult],
        validate: Callable[..., None] | None = None,
        *,
        class_name: str | None = None,
        display_name: str | None = None,
        summary: str | None = None,
        make_state: Callable[[], Any] | None = None,
        variant_of: str | None = None,
    ) -> None:
        self.name = name
        self.fn = fn
        self._validate = validate
        sig = inspect.signature(fn)
        self.param_names = tuple(p for p in sig.parameters if p != "updates")
        self.defaults = {
            k: p.default
            for k, p in sig.parameters.items()
            if k != "updates" and p.default is not inspect.Parameter.empty
        }
        self.class_name = class_name or "".join(part.capitalize() for part in name.split("_"))
        self.display_name = display_name or self.class_name
        self.summary = summary or _first_line(fn.__doc__) or name
        self.make_state = make_state
        self.variant_of = variant_of
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    def validate(self, **params: Any) -> None:
        """Check parameter names and values; raise naming the offending argument."""
        unknown = sorted(set(params) - set(self.param_names))
        if unknown:
            raise TypeError(
                f"rule {self.name!r} got unknown parameter(s) {unknown}; "
                f"it accepts {list(self.param_names)}"
            )
        if self._validate is not None:
            self._validate(**{**self.defaults, **params})

    def __call__(self, updates: torch.Tensor, **params: Any) -> AggregationResult:
        return self.fn(updates, **params)

    def __repr__(self) -> str:
        return f"Rule({self.name!r})"


def _first_line(doc: str | None) -> str:
    return doc.strip().splitlines()[0].strip() if doc and doc.strip() else ""
