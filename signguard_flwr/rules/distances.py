"""Accurate pairwise squared distances and Gram matrices of the update rows.

Krum, Multi-Krum, Bulyan and GeoMed need only ``n x n`` quantities, computed from one
``n x n`` Gram matrix (one BLAS syrk pass over the data, ≈ 0.05 s at ``n = 50, d = 10**6`` in
float32 on 2 CPU cores), never by looping over pairs of rows.

Accuracy.  ``||x_i - x_j||^2 = G_ii + G_jj - 2 G_ij`` cancels badly when the rows share a
large common part: Flower's float32 version errs by up to 50% on full model weights
(``flower-notes.md`` §11).  The rounding error of ``D_ij`` is about
``eps * (||x_i - c||^2 + ||x_j - c||^2)`` for rows centred on ``c`` before the products, so
:func:`pairwise_sq_distances` centres on a *data row near the middle* of the others
(:func:`central_row`), not on the mean: a Byzantine row of enormous norm drags the mean far from
the honest rows and would destroy their distances (measured: relative error 80 with the mean,
1e-7 with the central row, for three rows 10**6 times larger than the rest).  Products run in
the input's precision over column chunks and are accumulated in float64, so the relative error
is about ``1e-7`` in float32 (``1e-16`` in float64) for rows at typical distances from the centre,
and no float64 copy of the matrix is ever made.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .columns import map_column_blocks, single_threaded_blas, single_threaded_torch

__all__ = ["central_row", "gram_matrix", "pairwise_sq_distances"]

# Column chunks for the Gram products: 16k columns x 50 rows x 4 B = 3.2 MB stays in cache
# on CPU (bigger was not faster); CUDA wants big chunks.
_CPU_CHUNK = 1 << 14
_CUDA_CHUNK = 1 << 20
# Columns sampled to find a central row: enough to rank rows robustly, ≈ 2 ms at any d.
_CENTRE_SAMPLE = 4096


def gram_matrix(updates: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
    """Gram matrix ``G_ij = (x_i - c) . (x_j - c)`` accumulated in float64.

    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` float tensor, CPU or CUDA.
    centre : torch.Tensor, optional
        ``(d,)`` vector ``c`` subtracted from every row before the products (no centring when
        ``None``).  Centring on a point near the rows is what keeps the result accurate.

    Returns
    -------
    torch.Tensor
        ``(n, n)`` float64 on the device of ``updates``.  Products are computed in the input's
        precision chunk by chunk; the chunk sums are accumulated in float64.
    """
    n, d = updates.shape
    if updates.is_cuda:
        return _gram_cuda(updates, centre)
    updates = updates.detach()  # numpy views need tensors outside autograd
    centre = None if centre is None else centre.detach()

    def work(starts: Iterator[int]) -> torch.Tensor:
        partial = np.zeros((n, n), dtype=np.float64)
        for start in starts:
            # A contiguous block (the centred copy, or one made here) lets BLAS read it directly.
            array = _centred_block(updates, centre, start, _CPU_CHUNK).contiguous().numpy()
            # numpy computes ``np.dot(a, a.T)`` on one buffer with BLAS syrk: half the flops of
            # torch's ``a @ a.T`` (a general gemm; torch exposes no syrk).  Multi-Krum at
            # n = 50, d = 10**6 on 2 cores went from 80 to 64 ms (docs/benchmarks.md).
            with np.errstate(over="ignore", invalid="ignore"):  # checked just below
                product = np.dot(array, array.T)
            if not np.isfinite(product).all():
                # A coordinate beyond ~1.8e19 overflows float32 when squared (one client can
                # send it); redo this block in float64 instead of poisoning every distance.
                wide = array.astype(np.float64)
                product = np.dot(wide, wide.T)
            partial += product
        return torch.from_numpy(partial)

    # The column workers already use every core: numpy's BLAS must not add threads of its own.
    with single_threaded_blas():
        return sum(map_column_blocks(d, _CPU_CHUNK, work))


def _centred_block(
    updates: torch.Tensor, centre: torch.Tensor | None, start: int, chunk: int
) -> torch.Tensor:
    block = updates[:, start : start + chunk]
    return block if centre is None else block - centre[start : start + chunk]


def _gram_cuda(updates: torch.Tensor, centre: torch.Tensor | None) -> torch.Tensor:
    n, d = updates.shape
    gram = torch.zeros(n, n, dtype=torch.float64, device=updates.device)
    for start in range(0, d, _CUDA_CHUNK):
        block = _centred_block(updates, centre, start, _CUDA_CHUNK)
        product = block @ block.T
        if not bool(torch.isfinite(product).all()):  # see gram_matrix: overflow of a large entry
            wide = block.to(torch.float64)
            product = wide @ wide.T
        gram += product.to(torch.float64)
    return gram


def central_row(updates: torch.Tensor) -> int:
    """Index of a row near the middle of the others: the centre used for accurate distances.

    On an evenly strided sample of at most 4096 columns (float64), the row whose
    ``ceil(n/2)`` nearest rows (itself included) have the smallest sum of squared distances.
    While fewer than half of the rows are outliers this is an honest-looking row, whatever
    the outliers' norms.
    """
    n, d = updates.shape
    step = -(-d // _CENTRE_SAMPLE)
    with single_threaded_torch():
        sample = updates[:, ::step].to(torch.float64)
        sq_dist = _distances_from_gram(sample @ sample.T)
        nearest = sq_dist.topk((n + 1) // 2, dim=1, largest=False).values.sum(dim=1)
        return int(torch.argmin(nearest))


def pairwise_sq_distances(updates: torch.Tensor) -> torch.Tensor:
    r"""Accurate pairwise squared Euclidean distances :math:`D_{ij} = \|g_i - g_j\|^2`.

    Computed from :func:`gram_matrix` centred on :func:`central_row`, clamped at 0 and with an
    exact zero diagonal.

    Returns
    -------
    torch.Tensor
        ``(n, n)`` float64, symmetric, on the device of ``updates``.
    """
    centre = updates[central_row(updates)]
    return _distances_from_gram(gram_matrix(updates, centre))


def _distances_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Squared distances ``G_ii + G_jj - 2 G_ij`` from a Gram matrix: clamped at 0, zero diagonal."""
    sq_norms = gram.diagonal()
    dist = (sq_norms[:, None] + sq_norms[None, :] - 2.0 * gram).clamp_min_(0.0)
    dist.fill_diagonal_(0.0)
    # Symmetrise so that ties between i->j and j->i are resolved identically.
    return (dist + dist.T) * 0.5
