"""Mean, coordinate-wise trimmed mean and coordinate-wise median.

The two coordinate-wise rules run their per-column selections through
:func:`~signguard_flwr.rules.columns.columnwise_apply` (cache-sized column blocks, spread over
worker threads; :mod:`.columns` says why).
"""

from __future__ import annotations

import torch

from . import register
from .base import (
    AggregationResult,
    InsufficientClientsError,
    Rule,
    check_choice,
    check_updates,
    require_f,
)
from .columns import columnwise_apply

__all__ = ["mean", "trimmed_mean", "median", "median_of_rows"]

MEDIAN_VARIANTS = ("mid", "low")


def median_of_rows(block: torch.Tensor, variant: str = "mid") -> torch.Tensor:
    """Median of each row of a ``(B, k)`` block.

    ``variant="mid"`` is the usual median (mean of the two middle values for even ``k``);
    ``"low"`` is the lower middle value, the sorted element at index ``(k - 1) // 2``.
    """
    k = block.shape[1]
    if variant == "low" or k % 2 == 1:
        return block.median(dim=1).values
    # The k/2 + 1 smallest values contain both middle ones as their two largest; two unsorted
    # selections beat a full sort and beat two kthvalue calls (each a full selection).
    low_half = block.topk(k // 2 + 1, dim=1, largest=False, sorted=False).values
    middles = low_half.topk(2, dim=1, sorted=False).values
    # 0.5*a + 0.5*b cannot overflow for finite a, b, unlike (a + b) / 2; both round the same.
    return middles[:, 0] * 0.5 + middles[:, 1] * 0.5


def mean(updates: torch.Tensor) -> AggregationResult:
    r"""Plain average of the client updates (FedSGD / FedAvg with equal weights).

    .. math:: \bar g = \frac{1}{n} \sum_{i=1}^{n} g_i

    Not robust: one Byzantine row moves the output arbitrarily.  It is the "no defence"
    baseline of every Byzantine-robustness paper.

    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` float tensor, one row per client.

    Returns
    -------
    AggregationResult
        ``vector`` = the mean; ``selected`` = all rows.
    """
    updates = check_updates(updates)
    n = updates.shape[0]
    return AggregationResult(
        vector=updates.mean(dim=0),
        selected=torch.ones(n, dtype=torch.bool, device=updates.device),
        info={},
    )


def _validate_trimmed_mean(f: int | None = None) -> None:
    require_f(f)


def trimmed_mean(updates: torch.Tensor, f: int) -> AggregationResult:
    r"""Coordinate-wise trimmed mean (Yin et al., ICML 2018).

    For every coordinate ``j`` sort the ``n`` values :math:`g_{1j}, \dots, g_{nj}` into
    :math:`g_{(1)j} \le \dots \le g_{(n)j}`, drop the ``f`` largest and ``f`` smallest and
    average the rest:

    .. math:: \mathrm{TrMean}(g)_j = \frac{1}{n - 2f} \sum_{k=f+1}^{n-f} g_{(k)j}

    The trim is a count, not a fraction (Flower's ``beta`` gives ``floor(beta * n)``, which can
    under-trim by one through rounding).  ``f = 0`` is the mean.  Kept values are selected, not
    obtained by subtracting the extremes from the total, so huge Byzantine values cannot cancel
    the precision of the benign ones.

    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` float tensor.
    f : int
        Values dropped at each end of every coordinate (the declared number of Byzantine
        clients), ``f >= 0``.

    Returns
    -------
    AggregationResult
        ``selected`` is ``None`` (no row is kept or dropped as a whole).

    Raises
    ------
    InsufficientClientsError
        If ``n <= 2f``.
    """
    updates = check_updates(updates)
    f = require_f(f)
    n = updates.shape[0]
    if n <= 2 * f:
        raise InsufficientClientsError(
            f"trimmed_mean needs n > 2f rows; got n={n}, f={f}"
        )
    info = {"trimmed_per_side": f, "kept_per_coordinate": n - 2 * f}
    if f == 0:
        return AggregationResult(vector=updates.mean(dim=0), selected=None, info=info)

    def kernel(block: torch.Tensor) -> torch.Tensor:
        # n-f smallest, then the n-2f largest of those = sorted positions f .. n-f-1.
        below = block.topk(n - f, dim=1, largest=False, sorted=False).values
        kept = below.topk(n - 2 * f, dim=1, largest=True, sorted=False).values
        return kept.mean(dim=1)

    return AggregationResult(vector=columnwise_apply(updates, kernel), selected=None, info=info)


def _validate_median(variant: str = "mid") -> None:
    check_choice("variant", variant, MEDIAN_VARIANTS)


def median(updates: torch.Tensor, variant: str = "mid") -> AggregationResult:
    r"""Coordinate-wise median (Yin et al., ICML 2018).

    .. math:: \mathrm{Med}(g)_j = \mathrm{median}(g_{1j}, \dots, g_{nj})

    For even ``n`` the median is ambiguous; ``variant`` picks it:

    * ``"mid"`` (default): mean of the two middle values, as ``numpy.median`` and Flower's
      ``FedMedian`` (decision X14);
    * ``"low"``: the lower middle value (sorted index ``(n - 1) // 2``), what ``torch.median``
      returns and what the SignGuard reference code uses.

    For odd ``n`` both are the middle value.

    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` float tensor.
    variant : {"mid", "low"}
        Which middle value for even ``n``.

    Returns
    -------
    AggregationResult
        ``selected`` is ``None``.
    """
    updates = check_updates(updates)
    check_choice("variant", variant, MEDIAN_VARIANTS)
    vector = columnwise_apply(updates, lambda block: median_of_rows(block, variant))
    return AggregationResult(vector=vector, selected=None, info={"variant": variant})


register(Rule("mean", mean))
register(Rule("trimmed_mean", trimmed_mean, validate=_validate_trimmed_mean, display_name="TrMean"))
register(Rule("median", median, validate=_validate_median))
