"""Attacks one client computes alone, from its own update or its own data (SignGuard §V-B).

The Byzantine client mod runs them on its reply; the simulation adversary can run the ones
that need no data row by row (a time-varying schedule's draw), with the same generator
streams, so both give the same vectors for the same inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from ._checks import check_float, require_int
from .common import mean_std
from .registry import register_attack

if TYPE_CHECKING:
    from .params import AttackParams

__all__ = ["flip_labels", "noise_attack", "random_update", "reverse_scaling", "sign_flip"]


def random_update(
    shape: int | Sequence[int],
    sigma: float = 0.5,
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Random (Gaussian) attack: send ``N(0, σ²·I)`` regardless of the data.

    Paper §V-B: σ = 0.5 (the reference draws ``0.5·N(0, I)`` per Byzantine client).
    """
    sigma = check_float("sigma", sigma, nonneg=True)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    # Always drawn in float32, so a float64 caller (the client mod) and a float32 one (the
    # adversary) get the same numbers from the same seed.
    return (torch.randn(shape, generator=generator, dtype=torch.float32) * sigma).to(dtype)


def noise_attack(
    g: torch.Tensor, sigma: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Noise attack: ``g + N(0, σ²·I)`` with the client's own honest vector ``g`` (σ = 0.5)."""
    sigma = check_float("sigma", sigma, nonneg=True)
    noise = torch.randn(g.shape, generator=generator, dtype=torch.float32)  # float32: see random_update
    return g + (sigma * noise).to(device=g.device, dtype=g.dtype)


def sign_flip(g: torch.Tensor) -> torch.Tensor:
    """Sign-flip attack: ``−g`` (paper §V-B: no scaling)."""
    return -g


def reverse_scaling(g: torch.Tensor, r: float = 3.0) -> torch.Tensor:
    """Reverse attack with scaling: ``−r·g``, ``r > 0``.

    Paper §VI-C (ablation, Table III): ``r = R = 3.0`` (the norm band's upper bound) when
    thresholding/clipping are on, ``r = 100`` otherwise.  Absent from the reference code.
    """
    r = check_float("r", r, positive=True)
    return -r * g


def flip_labels(y: Any, num_classes: int) -> Any:
    """Label-flip map ``y → C − 1 − y`` for any number of classes ``C``.

    Works on torch tensors, numpy arrays and Python ints.  The reference hard-codes
    ``9 − y`` (defect D13, wrong for AG-News' C = 4).
    """
    num_classes = require_int("num_classes", num_classes, 1)
    lo, hi = (int(y.min()), int(y.max())) if hasattr(y, "min") else (int(y), int(y))
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"y must lie in [0, {num_classes}), got values in [{lo}, {hi}]")
    return (num_classes - 1) - y


# --------------------------------------------------------------------------------------------
# Registered: fn(g, params, generator) -> the vector the Byzantine client sends (attack domain)
# --------------------------------------------------------------------------------------------


@register_attack("none", kind="none", summary="honest behaviour")
def _honest(g: torch.Tensor, params: AttackParams, generator: torch.Generator | None) -> torch.Tensor:
    return g


@register_attack("random", kind="client", seeded=True, reports=("sigma",), summary="N(0, σ²I), σ = 0.5")
def _random(g: torch.Tensor, params: AttackParams, generator: torch.Generator | None) -> torch.Tensor:
    return random_update(g.shape[-1], params.sigma, generator, dtype=g.dtype)


@register_attack("noise", kind="client", seeded=True, reports=("sigma",), summary="g + N(0, σ²I), σ = 0.5")
def _noise(g: torch.Tensor, params: AttackParams, generator: torch.Generator | None) -> torch.Tensor:
    return noise_attack(g, params.sigma, generator)


@register_attack("sign_flip", kind="client", summary="−g")
def _sign_flip(g: torch.Tensor, params: AttackParams, generator: torch.Generator | None) -> torch.Tensor:
    return sign_flip(g)


# The honest handler trains on labels C − 1 − y (clients.client_app reads "label-transform").
register_attack("label_flip", kind="client", needs_data=True, instruction={"label-transform": "flip"},
                summary="train on labels C − 1 − y")(None)


@register_attack("reverse_scaling", kind="client", reports=("scale",),
                 summary="−r·g (r = 3 with clipping, 100 without)")
def _reverse_scaling(g: torch.Tensor, params: AttackParams, generator: torch.Generator | None) -> torch.Tensor:
    return reverse_scaling(g, params.scale)


def _lie_local_check(params: AttackParams) -> None:
    if isinstance(params.z, str):
        raise ValueError("z must be numeric for lie_local ('max' depends on the run's n and m)")


@register_attack("lie_local", kind="client", needs_data=True, passes=lambda p: p.lie_batches, check=_lie_local_check,
                 summary="μ − z·σ over the client's own k mini-batch updates")
def _lie_local(g: torch.Tensor, params: AttackParams, generator: torch.Generator | None) -> torch.Tensor:
    """Non-colluding LIE: ``μ − z·σ`` over the rows of ``g``, ``k = lie_batches`` honest updates
    of the client's own data (``z`` numeric: ``"max"`` needs the run's n and m)."""
    mu, sigma = mean_std(g)
    return mu - params.z * sigma
