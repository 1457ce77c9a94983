"""Nearest-neighbour mixing (NNM; Allouah et al., AISTATS 2023), a pre-aggregation step.

Each row is replaced by the mean of its ``n - f`` nearest rows (itself included, Euclidean
distance).  The mixed rows are closer to each other and to the honest mean than the raw ones,
which is what makes Krum-style and coordinate-wise rules robust under heterogeneous honest
updates.  The step needs only the ``n x n`` distance matrix plus one ``(n x n) @ (n x d)``
product, so it composes with any rule: :func:`with_nnm` turns a registered rule into one that
mixes first.  Registered compositions (Allouah et al.'s pairings): ``nnm_multi_krum``,
``nnm_trimmed_mean``, ``nnm_median``, ``nnm_geomed``, ``nnm_centered_clipping``.  Selections
keep their meaning: row ``i`` of the mixed matrix is still client ``i``'s.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from . import get_rule, register
from .base import AggregationResult, Rule, check_updates, require_f
from .distances import pairwise_sq_distances

__all__ = ["nearest_neighbor_mixing", "nnm_weights", "with_nnm"]


def nnm_weights(sq_dist: torch.Tensor, f: int) -> torch.Tensor:
    """The ``(n, n)`` mixing matrix: row ``i`` puts ``1/(n-f)`` on its ``n - f`` nearest rows.

    Ties are broken towards the lower row index (stable sort), so the result does not depend on
    the sorting backend.
    """
    n = sq_dist.shape[0]
    k = n - f
    order = torch.sort(sq_dist, dim=1, stable=True).indices[:, :k]
    weights = torch.zeros_like(sq_dist)
    weights.scatter_(1, order, 1.0 / k)
    return weights


def nearest_neighbor_mixing(updates: torch.Tensor, f: int) -> torch.Tensor:
    r"""Mix every row with its nearest neighbours.

    .. math:: \tilde g_i = \frac{1}{n - f} \sum_{j \in N_{n-f}(i)} g_j

    where :math:`N_{n-f}(i)` are the ``n - f`` rows closest to :math:`g_i`, :math:`g_i` included.

    Parameters
    ----------
    updates : torch.Tensor
        ``(n, d)`` float matrix.
    f : int
        Declared number of Byzantine rows, ``0 <= f < n``.

    Returns
    -------
    torch.Tensor
        The ``(n, d)`` mixed matrix (same dtype and device); row ``i`` stays client ``i``'s.
    """
    updates = check_updates(updates)
    f = require_f(f)
    n = updates.shape[0]
    if f >= n:
        raise ValueError(f"nearest-neighbour mixing needs f < n; got n={n}, f={f}")
    weights = nnm_weights(pairwise_sq_distances(updates), f)
    return weights.to(updates.dtype) @ updates


def with_nnm(inner: Rule) -> Rule:
    """``inner`` preceded by nearest-neighbour mixing, as a rule named ``nnm_<inner>``.

    Its parameters are ``inner``'s plus ``f`` (required: NNM needs it even when ``inner`` does
    not); ``inner``'s state, if any, carries over.
    """
    takes_f = "f" in inner.param_names

    def fn(updates: torch.Tensor, **params: Any) -> AggregationResult:
        f = params["f"]
        inner_params = params if takes_f else {k: v for k, v in params.items() if k != "f"}
        result = inner(nearest_neighbor_mixing(updates, f), **inner_params)
        result.info = {**result.info, "pre_aggregation": "nnm"}
        return result

    def validate(**params: Any) -> None:
        require_f(params.get("f"))
        inner.validate(**(params if takes_f else {k: v for k, v in params.items() if k != "f"}))

    # The composite's signature is the inner rule's plus f, so the strategy, the CLI and
    # Rule.validate see its real parameters.
    inner_sig = inspect.signature(inner.fn)
    params = list(inner_sig.parameters.values())
    if not takes_f:
        params.insert(1, inspect.Parameter("f", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None))
    fn.__signature__ = inner_sig.replace(parameters=params)  # type: ignore[attr-defined]
    fn.__doc__ = f"Nearest-neighbour mixing, then {inner.display_name} (Allouah et al., AISTATS 2023).\n\n{inner.__doc__ or ''}"
    fn.__name__ = f"nnm_{inner.name}"
    return Rule(f"nnm_{inner.name}", fn, validate=validate, class_name=f"NNM{inner.class_name}",
                display_name=f"NNM+{inner.display_name}", make_state=inner.make_state)


for _name in ("multi_krum", "trimmed_mean", "median", "geomed", "centered_clipping"):
    register(with_nnm(get_rule(_name)))
