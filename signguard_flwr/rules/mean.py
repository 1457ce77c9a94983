"""Mean, coordinate-wise trimmed mean and coordinate-wise median, and the column-block machinery
the coordinate-wise rules share.

The coordinate-wise rules select per column among ``n`` values.  torch's CPU kernels for
selection along ``dim=0`` of an ``(n, d)`` matrix are slow (strided access, one small
selection per column), so :func:`columnwise_apply` feeds them cache-sized blocks of columns
transposed to ``(block, n)`` and selects along the contiguous last dimension.

On CPU the blocks are spread over worker threads that each run single-threaded kernels
(:func:`map_column_blocks`).  torch's own intra-op parallelism would open one OpenMP region,
with its barrier, per small kernel; on a machine whose cores are busy with other work every
barrier waits for a descheduled thread, and the same median took 0.42 to 3.0 s from one call to
the next on the 2-core development machine.  With independent workers pulling blocks from a
shared queue it took 0.42 s every time, and the Gram matrix of :mod:`.krum` got 25% faster.
For the same reason the small ``n x n`` stages of the rules run under
:func:`single_threaded_torch` (a 50 x 50 ``eigh`` took 0.1 ms single-threaded and 200 ms
with 2 threads on a busy machine).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

from . import register
from .base import (
    AggregationResult,
    InsufficientClientsError,
    Rule,
    check_choice,
    check_int,
    check_updates,
)

__all__ = [
    "mean",
    "trimmed_mean",
    "median",
    "columnwise_apply",
    "map_column_blocks",
    "single_threaded_torch",
    "median_of_rows",
    "require_f",
]

T = TypeVar("T")

# Columns per block on CPU: (8192 x 50) float32 is 1.6 MB and stays in L2; larger blocks were
# measurably slower, smaller ones pay per-call overhead.  On CUDA one kernel over many columns
# is what is fast, so blocks there are only bounded to cap the transposed copy's memory.
_CPU_BLOCK = 8192
_CUDA_BLOCK = 1 << 21

MEDIAN_VARIANTS = ("mid", "low")

# torch.set_num_threads is process-wide: one lock serialises the sections that lower it, so
# that concurrent callers cannot restore each other's value wrongly.
_THREADS_LOCK = threading.RLock()
_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    # One pool per worker count; called with _THREADS_LOCK held.
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="signguard-columns")
    return _POOLS[workers]


@contextmanager
def single_threaded_torch() -> Iterator[None]:
    """Run the body with torch's intra-op parallelism set to 1, then restore it.

    For small work (``n x n`` matrices, a few thousand columns) where thread start-up and
    barriers cost more than they save.  A no-op when torch is already single-threaded, which
    is also the case inside :func:`map_column_blocks` workers.  The setting is process-wide:
    other torch work running concurrently is single-threaded for that time.
    """
    if torch.get_num_threads() <= 1:
        yield
        return
    with _THREADS_LOCK:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


def map_column_blocks(
    d: int, block: int, work: Callable[[Iterator[int]], T], on_cuda: bool = False
) -> list[T]:
    """Run ``work`` over the column blocks ``[start, start + block)`` of a ``d``-column matrix.

    ``work`` receives an iterator of block starts and returns one partial result; the list of
    partial results is returned.  On CPU with more than one torch thread, ``work`` runs in that
    many worker threads pulling starts from one shared iterator (so a descheduled worker delays
    nothing but its current block), with torch's intra-op parallelism set to 1 meanwhile.
    Other torch work running concurrently in the process is single-threaded for that time.
    """
    starts = range(0, d, block)
    workers = torch.get_num_threads()
    if on_cuda or workers <= 1 or len(starts) < 2:
        return [work(iter(starts))]
    shared = iter(starts)  # next() on a range iterator is atomic under the GIL
    with single_threaded_torch(), _THREADS_LOCK:
        futures = [_pool(workers).submit(work, shared) for _ in range(workers)]
        return [future.result() for future in futures]


def columnwise_apply(
    updates: torch.Tensor,
    kernel: Callable[[torch.Tensor], torch.Tensor],
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply a per-coordinate reduction to every column of ``updates``.

    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` matrix.
    kernel : callable
        Maps a contiguous ``(B, k)`` block (one row per coordinate, one column per client)
        to a ``(B,)`` tensor.
    rows : torch.Tensor, optional
        Long indices of the rows to use (``k = len(rows)``); all rows when ``None``.  Rows are
        gathered block by block, so no ``(k, d)`` copy of the selection is ever made.

    Returns
    -------
    torch.Tensor
        Shape ``(d,)``, dtype and device of ``updates``.
    """
    d = updates.shape[1]
    out = torch.empty(d, dtype=updates.dtype, device=updates.device)
    block = _CUDA_BLOCK if updates.is_cuda else _CPU_BLOCK

    def work(starts: Iterator[int]) -> None:
        for start in starts:
            cols = updates[:, start : start + block]
            if rows is not None:
                cols = cols.index_select(0, rows)
            out[start : start + block] = kernel(cols.T.contiguous())

    map_column_blocks(d, block, work, on_cuda=updates.is_cuda)
    return out


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


def require_f(f: int | None) -> int:
    """Check the declared number of Byzantine clients ``f`` (required, int >= 0)."""
    if f is None:
        raise TypeError("f (declared number of Byzantine clients) is required")
    return check_int("f", f, minimum=0)


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
register(Rule("trimmed_mean", trimmed_mean, validate=_validate_trimmed_mean))
register(Rule("median", median, validate=_validate_median))
