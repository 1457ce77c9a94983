"""Centered Clipping and nearest-neighbour mixing against plain-loop oracles on tiny matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from signguard_flwr.rules.centered_clipping import CenteredClippingState, centered_clipping
from signguard_flwr.rules.nnm import nearest_neighbor_mixing


def _cc_oracle(rows: np.ndarray, tau: float | None, iterations: int, center: np.ndarray) -> np.ndarray:
    v = center.astype(np.float64).copy()
    for _ in range(iterations):
        dists = [np.linalg.norm(g - v) for g in rows]
        radius = float(np.median(dists)) if tau is None else tau
        step = np.zeros_like(v)
        for g, dist in zip(rows, dists):
            step += (g - v) * (min(1.0, radius / dist) if dist > 0 else 1.0)
        v = v + step / len(rows)
    return v


def _nnm_oracle(rows: np.ndarray, f: int) -> np.ndarray:
    n = len(rows)
    out = []
    for i in range(n):
        dist = [float(np.sum((rows[i] - rows[j]) ** 2)) for j in range(n)]
        nearest = sorted(range(n), key=lambda j: (dist[j], j))[: n - f]
        out.append(np.mean([rows[j] for j in nearest], axis=0))
    return np.stack(out)


@pytest.mark.parametrize("tau", [None, 0.5, 100.0])
@pytest.mark.parametrize("iterations", [1, 3])
def test_centered_clipping_matches_the_formula(tau, iterations) -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(7, 5))
    rows[0] *= 50.0  # one far row: clipped
    got = centered_clipping(torch.tensor(rows), tau=tau, iterations=iterations)
    want = _cc_oracle(rows, tau, iterations, np.zeros(5))
    np.testing.assert_allclose(got.vector.numpy(), want, rtol=1e-12, atol=1e-12)
    assert got.selected is None


def test_centered_clipping_starts_from_the_previous_aggregate() -> None:
    rng = np.random.default_rng(1)
    first, second = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    state = CenteredClippingState()
    out1 = centered_clipping(torch.tensor(first), state=state)
    assert not out1.info["from_previous"]
    torch.testing.assert_close(state.center, out1.vector)
    out2 = centered_clipping(torch.tensor(second), state=state)
    assert out2.info["from_previous"]
    want = _cc_oracle(second, None, 1, out1.vector.numpy())
    np.testing.assert_allclose(out2.vector.numpy(), want, rtol=1e-12, atol=1e-12)


def test_centered_clipping_bounds_the_pull_of_huge_rows() -> None:
    honest = torch.ones(8, 3)
    byz = torch.full((2, 3), -1e9)
    out = centered_clipping(torch.cat([honest, byz]), tau=1.0)
    # The honest rows (distance sqrt(3) > tau) each add their unit direction / n; each
    # Byzantine row moves the centre by at most tau / n more, however large it is.
    honest_part = 8 * honest[0] / 3**0.5 / 10
    assert torch.linalg.vector_norm(out.vector - honest_part) <= 2 * 1.0 / 10 + 1e-6
    assert out.info["clipped"] == 10  # every row is farther than 1.0 from zero


@pytest.mark.parametrize("bad", [{"tau": 0.0}, {"tau": -1.0}, {"iterations": 0}, {"state": object()}])
def test_centered_clipping_rejects_bad_parameters(bad) -> None:
    with pytest.raises((ValueError, TypeError), match=next(iter(bad))):
        centered_clipping(torch.ones(3, 2), **bad)


@pytest.mark.parametrize("f", [0, 1, 3])
def test_nnm_matches_the_formula(f) -> None:
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(8, 6))
    rows[:2] += 20.0  # a far pair: its neighbours are each other
    got = nearest_neighbor_mixing(torch.tensor(rows), f)
    np.testing.assert_allclose(got.numpy(), _nnm_oracle(rows, f), rtol=1e-12, atol=1e-12)


def test_nnm_with_f_zero_is_the_mean_everywhere() -> None:
    rows = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(nearest_neighbor_mixing(rows, 0), rows.mean(0).expand(5, 3))


def test_nnm_breaks_ties_towards_lower_rows() -> None:
    rows = torch.tensor([[0.0], [1.0], [-1.0], [5.0]], dtype=torch.float64)
    # Row 0 is at distance 1 from rows 1 and 2; with n - f = 2 it takes itself and row 1.
    assert float(nearest_neighbor_mixing(rows, 2)[0, 0]) == 0.5


@pytest.mark.parametrize("f", [None, -1, 4])
def test_nnm_rejects_bad_f(f) -> None:
    with pytest.raises((ValueError, TypeError), match="f"):
        nearest_neighbor_mixing(torch.ones(4, 2), f)


def test_registered_nnm_rules_are_mixing_then_the_rule() -> None:
    from signguard_flwr.rules import RULES

    rows = torch.randn(12, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    for inner, params in (("multi_krum", {"f": 3}), ("median", {}), ("trimmed_mean", {"f": 3})):
        got = RULES[f"nnm_{inner}"](rows, **({"f": 3} | params))
        want = RULES[inner](nearest_neighbor_mixing(rows, 3), **params)
        torch.testing.assert_close(got.vector, want.vector)
        assert got.info["pre_aggregation"] == "nnm"
    with pytest.raises(TypeError, match="f"):
        RULES["nnm_median"].validate()  # NNM needs f even where the rule does not
    with pytest.raises(TypeError, match="unknown"):
        RULES["nnm_median"].validate(f=2, tau=1.0)


def test_cc_and_nnm_are_strategies_with_state_where_the_rule_has_one() -> None:
    from signguard_flwr import STRATEGIES, CenteredClipping, NNMCenteredClipping

    assert STRATEGIES["centered_clipping"] is CenteredClipping
    for cls in (CenteredClipping, NNMCenteredClipping):
        strategy = cls(fraction_evaluate=0.0, **({"f": 2} if cls is NNMCenteredClipping else {}))
        assert isinstance(strategy.rule_state, CenteredClippingState)
    with pytest.raises((TypeError, ValueError), match="tau"):
        CenteredClipping(fraction_evaluate=0.0, tau=-1.0)
