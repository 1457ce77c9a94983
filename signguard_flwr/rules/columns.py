"""Column-block workers and thread limits shared by the rules.

The coordinate-wise rules select per column among ``n`` values.  torch's CPU kernels for
selection along ``dim=0`` of an ``(n, d)`` matrix are slow (strided access, one small
selection per column), so :func:`columnwise_apply` feeds them cache-sized blocks of columns
transposed to ``(block, n)`` and selects along the contiguous last dimension.

On CPU the blocks are spread over worker threads that each run single-threaded kernels
(:func:`map_column_blocks`).  torch's own intra-op parallelism would open one OpenMP region,
with its barrier, per small kernel; on a machine whose cores are busy with other work every
barrier waits for a descheduled thread, and the same median took 0.42 to 3.0 s from one call to
the next on the 2-core development machine.  With independent workers pulling blocks from a
shared queue it took 0.42 s every time, and the Gram matrix of :mod:`.distances` got 25% faster.
For the same reason the small ``n x n`` stages of the rules run under
:func:`single_threaded_torch` (a 50 x 50 ``eigh`` took 0.1 ms single-threaded and 200 ms
with 2 threads on a busy machine), and numpy's BLAS runs single-threaded inside the column
workers (:func:`single_threaded_blas`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from typing import TypeVar

import torch
from threadpoolctl import ThreadpoolController

__all__ = [
    "columnwise_apply",
    "map_column_blocks",
    "single_threaded_blas",
    "single_threaded_torch",
]

T = TypeVar("T")

# Columns per block on CPU: (8192 x 50) float32 is 1.6 MB and stays in L2; larger blocks were
# measurably slower, smaller ones pay per-call overhead.  On CUDA one kernel over many columns
# is what is fast, so blocks there are only bounded to cap the transposed copy's memory.
_CPU_BLOCK = 8192
_CUDA_BLOCK = 1 << 21

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


@lru_cache(maxsize=1)
def _blas_controller() -> ThreadpoolController:
    # Inspecting the loaded libraries costs ~10 ms; do it once.
    return ThreadpoolController()


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the body with numpy's BLAS limited to one thread, then restore its limits.

    For numpy products inside :func:`map_column_blocks` workers: the workers already use
    every core, and BLAS threads started inside each of them made a 50 x 16k block product
    1.6x slower with 2 threads.  Held under the same lock as :func:`single_threaded_torch`,
    since concurrent callers would otherwise restore each other's limits.
    """
    with _THREADS_LOCK, _blas_controller().limit(limits=1, user_api="blas"):
        yield


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
