"""Argument checks of the attack package: a ``ValueError`` naming the argument, as everywhere."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

__all__ = ["check_byzantine", "check_choice", "check_float", "check_matrix", "require_int"]


def require_int(name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` as int, else ``ValueError`` naming ``name`` (also below ``minimum``)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_float(name: str, value: Any, *, positive: bool = False, nonneg: bool = False) -> float:
    """``value`` as a finite float (``> 0`` / ``>= 0`` when asked), else ``ValueError``.

    Unlike :func:`signguard_flwr.rules.base.check_float` a non-number is a ``ValueError`` too:
    attack parameters arrive from config strings, where a wrong type is a wrong value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if nonneg and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else ``ValueError`` naming ``name``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_matrix(name: str, rows: Any, min_rows: int = 1) -> torch.Tensor:
    """``rows`` if it is a float ``(rows, d)`` tensor with at least ``min_rows`` rows."""
    if not isinstance(rows, torch.Tensor) or rows.ndim != 2 or not rows.is_floating_point():
        shape = tuple(rows.shape) if isinstance(rows, torch.Tensor) else type(rows).__name__
        raise ValueError(f"{name} must be a float torch.Tensor of shape (rows, d), got {shape}")
    if rows.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} row(s), got {rows.shape[0]}")
    return rows


def check_byzantine(byzantine: Iterable[int], n: int) -> list[int]:
    """The Byzantine row indices as a list: distinct, in ``[0, n)``, at least one."""
    idx = [require_int("byzantine", i, 0) for i in byzantine]
    if len(set(idx)) != len(idx):
        raise ValueError(f"byzantine has repeated row indices: {idx}")
    if any(i >= n for i in idx):
        raise ValueError(f"byzantine row indices must be < n = {n}, got {idx}")
    if not idx:
        raise ValueError("byzantine must name at least one row")
    return idx
