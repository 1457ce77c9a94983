"""Centered Clipping (Karimireddy, He & Jaggi, ICML 2021).

Starting from a centre ``v`` (the previous round's aggregate when the strategy keeps state,
zero otherwise), each iteration moves ``v`` by the mean of the clipped differences to it:

.. math:: v \\leftarrow v + \\frac{1}{n} \\sum_i (g_i - v) \\min\\Bigl(1, \\frac{\\tau}{\\|g_i - v\\|}\\Bigr).

A row far from the centre contributes at most ``tau / n`` to the step, so ``f`` Byzantine rows
move the aggregate by at most ``f tau / n`` per iteration whatever their size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import register
from .base import AggregationResult, Rule, check_float, check_int, check_updates

__all__ = ["CenteredClippingState", "centered_clipping"]


@dataclass
class CenteredClippingState:
    """The centre carried between rounds: the previous aggregate (``None`` before the first).

    The strategy owns one object and passes it every round as ``state=``.
    """

    center: torch.Tensor | None = None

    def reset(self) -> None:
        self.center = None


def _validate(tau: float | None = None, iterations: int = 1, state: CenteredClippingState | None = None) -> None:
    if tau is not None:
        check_float("tau", tau, minimum=0.0, strict_min=True)
    check_int("iterations", iterations, minimum=1)
    if state is not None and not isinstance(state, CenteredClippingState):
        raise TypeError(f"state must be a CenteredClippingState or None, got {type(state).__name__}")


def centered_clipping(
    updates: torch.Tensor,
    tau: float | None = None,
    iterations: int = 1,
    state: CenteredClippingState | None = None,
) -> AggregationResult:
    r"""Centered Clipping of the ``(n, d)`` update matrix.

    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` float matrix, one row per client.
    tau : float, optional
        Clipping radius.  ``None`` (our default) takes, at each iteration, the median distance
        of the rows to the current centre: the paper tunes ``tau`` by hand per task, and a
        fixed radius is meaningless across models whose update norms differ by orders of
        magnitude.  With the median, at least half of the rows (the honest majority when
        ``f < n/2``) are never clipped.
    iterations : int
        Number of clipping iterations ``L`` (the paper: 1 with momentum).
    state : CenteredClippingState, optional
        Centre carried between rounds.  Without it (or in the first round, or when ``d``
        changed) the centre starts at zero.  The output becomes ``state.center``.

    Returns
    -------
    AggregationResult
        ``vector`` the final centre; ``selected`` is ``None`` (every row enters, clipped or
        not); ``info`` holds ``clipped`` (rows clipped in the last iteration), ``tau`` (the
        last radius) and ``from_previous`` (whether the centre started at the previous
        aggregate).
    """
    _validate(tau, iterations, state)
    updates = check_updates(updates)
    n, d = updates.shape
    previous = state.center if state is not None else None
    from_previous = previous is not None and previous.numel() == d
    center = (
        previous.to(device=updates.device, dtype=updates.dtype).clone()
        if from_previous
        else torch.zeros(d, dtype=updates.dtype, device=updates.device)
    )
    clipped = torch.zeros(n, dtype=torch.bool, device=updates.device)
    radius = float("nan")
    for _ in range(iterations):
        diff = updates - center
        dist = torch.linalg.vector_norm(diff, dim=1)
        radius_t = dist.quantile(0.5) if tau is None else torch.tensor(tau, dtype=dist.dtype, device=dist.device)
        # min(1, tau / ||g_i - v||), written so that a row at the centre (distance 0) gets 1.
        scale = torch.where(dist > radius_t, radius_t / dist.clamp_min(torch.finfo(dist.dtype).tiny), torch.ones_like(dist))
        center = center + (scale @ diff) / n
        clipped = dist > radius_t
        radius = float(radius_t)
    if state is not None:
        state.center = center.detach().clone()
    return AggregationResult(
        vector=center,
        selected=None,
        info={"clipped": int(clipped.sum()), "tau": radius, "from_previous": from_previous},
    )


register(Rule("centered_clipping", centered_clipping, validate=_validate, display_name="CC",
              make_state=CenteredClippingState))
