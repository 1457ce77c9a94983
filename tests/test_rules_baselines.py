"""Tests for the baseline aggregation rules (mean, trimmed mean, median, GeoMed, Krum,
Multi-Krum, Bulyan, DnC).

Each rule is checked on a matrix small enough to do by hand, against Flower's own functions
where those are correct, against slow direct implementations written here from the
formulas, and for its invariances.
"""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
from flwr.server.strategy.aggregate import (
    aggregate_bulyan,
    aggregate_krum,
    aggregate_median,
    aggregate_trimmed_avg,
)
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean

from signguard_flwr.rules import RULES, InsufficientClientsError, get_rule
from signguard_flwr.rules.columns import single_threaded_torch
from signguard_flwr.rules.distances import central_row, gram_matrix, pairwise_sq_distances
from signguard_flwr.rules.dnc import sample_coordinates
from signguard_flwr.rules.krum import krum_scores, recursive_krum

BASELINES = ("mean", "trimmed_mean", "median", "geomed", "krum", "multi_krum", "bulyan", "dnc")
F_RULES = ("trimmed_mean", "krum", "multi_krum", "bulyan", "dnc")
ROW_SELECTING = ("mean", "krum", "multi_krum", "bulyan", "dnc")

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def call(name: str, x: torch.Tensor, f: int = 2, **params):
    """Call a rule, passing ``f`` only to rules that take it and seeding DnC."""
    rule = RULES[name]
    if "f" in rule.param_names:
        params.setdefault("f", f)
    if name == "dnc":
        params.setdefault("generator", torch.Generator().manual_seed(0))
    return rule(x, **params)


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def flower_results(x: torch.Tensor):
    """Rows as Flower legacy ``results``: one single-array NDArrays per client, weight 1."""
    return [([row.numpy().copy()], 1) for row in x]


def vec(t) -> np.ndarray:
    return t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


# --------------------------------------------------------------------------- slow references


def slow_sq_distances(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    dist = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            dist[i, j] = (x[i].double() - x[j].double()).square().sum()
    return dist


def slow_recursive_krum(x: torch.Tensor, f: int, count: int) -> list[int]:
    """Bulyan's selection written plainly: Krum on what is left, remove, repeat."""
    dist = slow_sq_distances(x)
    remaining = list(range(x.shape[0]))
    chosen = []
    for _ in range(count):
        r = len(remaining)
        k = max(1, r - f - 2)
        scores = []
        for i in remaining:
            others = sorted(float(dist[i, j]) for j in remaining if j != i)
            scores.append(sum(others[:k]))
        best = remaining[int(np.argmin(scores))]
        chosen.append(best)
        remaining.remove(best)
    return chosen


def slow_closest_to_centre_mean(rows: torch.Tensor, beta: int, low: bool) -> torch.Tensor:
    """Per coordinate: mean of the ``beta`` values closest to the (mid or low) median."""
    out = torch.empty(rows.shape[1], dtype=rows.dtype)
    k = rows.shape[0]
    for j in range(rows.shape[1]):
        values = sorted(rows[:, j].tolist())
        if low or k % 2:
            centre = values[(k - 1) // 2]
        else:
            centre = 0.5 * (values[k // 2 - 1] + values[k // 2])
        closest = sorted(values, key=lambda v: abs(v - centre))[:beta]
        out[j] = sum(closest) / beta
    return out


def slow_bulyan(x: torch.Tensor, f: int) -> tuple[torch.Tensor, list[int]]:
    n = x.shape[0]
    theta, beta = n - 2 * f, n - 4 * f
    order = slow_recursive_krum(x, f, theta)
    return slow_closest_to_centre_mean(x[order], beta, low=False), order


def slow_bulyan_reference(x: torch.Tensor, f: int) -> torch.Tensor:
    """EPFL Bulyan-over-Multi-Krum as described in the reference spec, step by step."""
    n = x.shape[0]
    m_max, theta = n - f - 2, n - 2 * f - 2
    beta = theta - 2 * f
    dist = slow_sq_distances(x).sqrt()
    scores = []
    for i in range(n):
        others = sorted(float(dist[i, j]) for j in range(n) if j != i)
        scores.append(sum(others[:m_max]))
    remaining = list(range(n))
    stored = []
    for t in range(theta):
        ranked = sorted(remaining, key=lambda i: (scores[i], i))
        stored.append(x[ranked[: m_max - t]].mean(dim=0))
        remaining.remove(ranked[0])
    return slow_closest_to_centre_mean(torch.stack(stored), beta, low=True)


# --------------------------------------------------------------------------- registry


def test_registry_names_and_order():
    assert list(RULES)[: len(BASELINES)] == list(BASELINES)
    for name in F_RULES:
        assert "f" in RULES[name].param_names
    assert RULES["dnc"].defaults == {"niters": 5, "b": 10000, "c": 1.0, "generator": None}
    assert get_rule("median") is RULES["median"]


# --------------------------------------------------------------------------- known answers


def test_mean_known_answer():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]])
    res = call("mean", x)
    assert torch.equal(res.vector, torch.tensor([3.0, 5.0]))
    assert res.selected.tolist() == [True, True, True]


def test_trimmed_mean_known_answer():
    x = torch.tensor(
        [[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0], [100.0, -100.0]],
        dtype=torch.float64,
    )
    # col 0 sorted 1 2 3 4 100 -> keep 2 3 4; col 1 sorted -100 10 20 30 40 -> keep 10 20 30
    assert call("trimmed_mean", x, f=1).vector.tolist() == [3.0, 20.0]
    assert call("trimmed_mean", x, f=2).vector.tolist() == [3.0, 20.0]
    assert torch.allclose(call("trimmed_mean", x, f=0).vector, x.mean(dim=0))
    assert call("trimmed_mean", x, f=1).selected is None


def test_trimmed_mean_keeps_precision_next_to_huge_values():
    # Subtracting the extremes from the total would wipe out the small values here.
    x = torch.tensor([[1e30], [1.0], [2.0], [3.0], [-1e30]], dtype=torch.float32)
    assert call("trimmed_mean", x, f=1).vector.item() == 2.0


def test_median_known_answer_even_and_odd():
    x = torch.tensor([[1.0, -4.0], [2.0, 8.0], [3.0, 0.0], [10.0, 1.0]])
    assert call("median", x).vector.tolist() == [2.5, 0.5]
    assert call("median", x, variant="low").vector.tolist() == [2.0, 0.0]
    odd = x[:3]
    assert call("median", odd).vector.tolist() == [2.0, 0.0]
    assert call("median", odd, variant="low").vector.tolist() == [2.0, 0.0]
    assert call("median", x).selected is None


def test_median_low_is_torch_median():
    x = randn(10, 9000, seed=3, dtype=torch.float32)
    assert torch.equal(call("median", x, variant="low").vector, x.median(dim=0).values)


def test_median_mid_does_not_overflow():
    big = torch.finfo(torch.float32).max
    x = torch.tensor([[big], [big], [0.0], [-1.0]])
    assert call("median", x).vector.item() == pytest.approx(big / 2, rel=1e-6)


def test_geomed_known_answers():
    square_and_centre = torch.tensor(
        [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5]], dtype=torch.float64
    )
    centre = torch.tensor([0.5, 0.5], dtype=torch.float64)
    assert torch.allclose(call("geomed", square_and_centre).vector, centre)
    # Equilateral triangle: the Fermat point is the centroid.
    triangle = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 3**0.5]], dtype=torch.float64)
    res = call("geomed", triangle)
    assert torch.allclose(res.vector, torch.tensor([1.0, 3**0.5 / 3], dtype=torch.float64))
    assert res.selected is None
    # In one dimension the geometric median is the median, even far from the mean.
    line = torch.tensor([[0.0], [1.0], [10.0]], dtype=torch.float64)
    assert call("geomed", line).vector.item() == pytest.approx(1.0, abs=1e-5)


def test_krum_known_answer_and_neighbour_conventions():
    x = torch.tensor([[0.0], [1.0], [2.0], [3.5], [100.0]], dtype=torch.float64)
    # f=1, k=n-f-2=2: scores 0:1+4=5, 1:1+1=2, 2:1+2.25=3.25, 3.5:2.25+6.25=8.5
    res = call("krum", x, f=1)
    assert res.vector.tolist() == [1.0]
    assert res.selected.tolist() == [False, True, False, False, False]
    assert res.info["scores"][:4].tolist() == [5.0, 2.0, 3.25, 8.5]
    assert res.info["neighbours"] == 2
    # k=n-f-1=3: 0:17.25, 1:8.25, 2:7.25, 3.5:20.75 -> the reference picks row 2.
    ref = call("krum", x, f=1, neighbours="reference")
    assert ref.vector.tolist() == [2.0]
    assert ref.info["scores"][:4].tolist() == [17.25, 8.25, 7.25, 20.75]


def test_krum_returns_a_copy():
    x = torch.tensor([[0.0], [1.0], [2.0], [3.5], [100.0]])
    res = call("krum", x, f=1)
    res.vector.add_(1000.0)
    assert x[1].item() == 1.0


def test_multi_krum_known_answer():
    x = torch.tensor([[0.0], [1.0], [2.0], [3.5], [100.0]], dtype=torch.float64)
    res = call("multi_krum", x, f=1)  # m = n - f = 4: rows 0..3
    assert res.vector.item() == pytest.approx((0 + 1 + 2 + 3.5) / 4)
    assert res.selected.tolist() == [True, True, True, True, False]
    assert res.info["m"] == 4
    assert call("multi_krum", x, f=1, m=2).vector.item() == pytest.approx(1.5)
    assert call("multi_krum", x, f=1, m=1).vector.item() == 1.0
    # Reference parity: k = n-f-1 and m = n-f-2 = 2 -> rows 2 and 1.
    ref = call("multi_krum", x, f=1, m=2, neighbours="reference")
    assert ref.selected.tolist() == [False, True, True, False, False]


def test_bulyan_known_answer():
    # n = 4f + 3 = 7, theta = 5, beta = 3.  Recursive Krum keeps the five inliers; their median
    # is 2 and the three values closest to it are 2, 1 and 3.5.
    x = torch.tensor([[0.0], [1.0], [2.0], [3.5], [4.0], [50.0], [-60.0]], dtype=torch.float64)
    res = call("bulyan", x, f=1)
    assert res.vector.item() == pytest.approx(6.5 / 3)
    assert res.selected.tolist() == [True] * 5 + [False] * 2
    assert res.info["order"][:3] == [2, 1, 3]
    assert (res.info["theta"], res.info["beta"]) == (5, 3)


def test_dnc_known_answer():
    x = torch.tensor(
        [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [10.0, 10.0]], dtype=torch.float64
    )
    res = call("dnc", x, f=1)  # b >= d: every iteration sees all coordinates
    assert res.vector.tolist() == [0.5, 0.5]
    assert res.selected.tolist() == [True, True, True, True, False]
    assert res.info["fallback"] is False
    # Projections on (1,1)/sqrt(2) of the centred rows, squared.
    expected = torch.tensor([11.52, 7.22, 7.22, 3.92, 115.52], dtype=torch.float64)
    assert torch.allclose(res.info["scores"][0], expected)


def test_dnc_empty_intersection_falls_back_to_most_kept_rows():
    # With one coordinate per subset, column 0 keeps rows {0, 1} and column 1 keeps {2, 3}.
    x = torch.tensor([[5.0, 0.0], [5.2, 10.0], [0.0, 5.0], [10.0, 5.2]], dtype=torch.float64)
    res = call("dnc", x, f=1, c=2.0, b=1, niters=20, generator=torch.Generator().manual_seed(1))
    counts = res.info["kept_counts"]
    assert res.info["fallback"] is True
    assert 0 < counts.max() < 20
    assert torch.equal(res.selected, counts == counts.max())
    assert torch.allclose(res.vector, x[res.selected].mean(dim=0))


# --------------------------------------------------------------------------- Flower equivalence


@pytest.mark.parametrize("n", [9, 10])
def test_median_matches_flower(n):
    x = randn(n, 20000, seed=n)  # > one column block
    expected = aggregate_median(flower_results(x))[0]
    np.testing.assert_array_equal(vec(call("median", x).vector), expected)
    x32 = x.float()
    expected32 = aggregate_median(flower_results(x32))[0]
    np.testing.assert_allclose(vec(call("median", x32).vector), expected32, rtol=1e-6, atol=0)


@pytest.mark.parametrize(("n", "f"), [(10, 2), (11, 3), (7, 1)])
def test_trimmed_mean_matches_flower(n, f):
    x = randn(n, 20000, seed=n + f)
    cut = (f + 0.5) / n  # int(cut * n) == f without rounding trouble
    ours = vec(call("trimmed_mean", x, f=f).vector)
    # Summation order differs, hence the tiny atol for results near 0.
    expected = aggregate_trimmed_avg(flower_results(x), cut)[0]
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours, trim_mean(x.numpy(), cut), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("seed", range(3))
def test_krum_and_multi_krum_match_flower(seed):
    n, f = 12, 3
    x = randn(n, 50, seed=seed)
    x[:f] += randn(f, 50, seed=seed + 100)  # make some rows further out
    np.testing.assert_array_equal(
        vec(call("krum", x, f=f).vector), aggregate_krum(flower_results(x), f, to_keep=0)[0]
    )
    for m in (2, 5, n - f):
        np.testing.assert_allclose(
            vec(call("multi_krum", x, f=f, m=m).vector),
            aggregate_krum(flower_results(x), f, to_keep=m)[0],
            rtol=1e-12,
        )


@pytest.mark.parametrize(("n", "f", "d"), [(11, 2, 30), (15, 3, 9000), (7, 1, 5)])
def test_bulyan_matches_flower_legacy(n, f, d):
    x = randn(n, d, seed=n)
    x[:f] = x[:f] * 3 + 2
    results = flower_results(x)
    expected = aggregate_bulyan(copy.copy(results), f, aggregate_krum, to_keep=0)[0]
    np.testing.assert_allclose(vec(call("bulyan", x, f=f).vector), expected, rtol=1e-12)


# --------------------------------------------------------------------------- Bulyan specifics


def test_bulyan_is_recursive_krum_not_one_shot_ranking():
    n, f = 11, 2
    theta = n - 2 * f
    x = randn(n, 3, seed=0)
    x[:2] = x[:2] * 3 + 4  # two outliers
    slow_vector, slow_order = slow_bulyan(x, f)
    one_shot = torch.sort(krum_scores(slow_sq_distances(x), n - f - 2), stable=True).indices[:theta]
    # The construction only proves something if the two selections differ.
    assert set(slow_order) != set(one_shot.tolist())
    one_shot_vector = slow_closest_to_centre_mean(x[one_shot], theta - 2 * f, low=False)
    assert not torch.allclose(slow_vector, one_shot_vector)

    res = call("bulyan", x, f=f)
    assert res.info["order"] == slow_order
    assert torch.equal(res.selected, torch.isin(torch.arange(n), torch.tensor(slow_order)))
    assert torch.allclose(res.vector, slow_vector, rtol=1e-12, atol=0)


@pytest.mark.parametrize("seed", range(3))
def test_bulyan_matches_slow_recursive_implementation(seed):
    n, f = 15, 3
    x = randn(n, 40, seed=seed)
    x[:f] = x[:f] + 0.5 * randn(f, 40, seed=seed + 7)
    slow_vector, slow_order = slow_bulyan(x, f)
    res = call("bulyan", x, f=f)
    assert res.info["order"] == slow_order
    assert torch.allclose(res.vector, slow_vector, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("seed", range(2))
def test_bulyan_reference_variant_matches_slow_epfl_procedure(seed):
    n, f = 13, 2
    x = randn(n, 25, seed=seed)
    x[:f] = x[:f] * 4
    res = call("bulyan", x, f=f, variant="reference")
    assert torch.allclose(res.vector, slow_bulyan_reference(x, f), rtol=1e-12, atol=1e-15)
    assert (res.info["theta"], res.info["beta"]) == (n - 2 * f - 2, n - 4 * f - 2)
    assert int(res.selected.sum()) == n - f - 2


def test_recursive_krum_rescored_on_remaining_rows():
    # After the first pick, scores must be recomputed without the removed row.
    x = randn(9, 4, seed=5)
    dist = pairwise_sq_distances(x)
    assert recursive_krum(dist, 1, 5) == slow_recursive_krum(x, 1, 5)


# --------------------------------------------------------------------------- distances


def exact_sq_distances(x: torch.Tensor) -> torch.Tensor:
    xd = x.double()
    return torch.stack([(xd - row).square().sum(dim=1) for row in xd])


def max_rel_err(approx: torch.Tensor, exact: torch.Tensor, mask: torch.Tensor) -> float:
    return ((approx - exact).abs()[mask] / exact[mask]).max().item()


def test_pairwise_distances_accurate_with_large_common_offset():
    # Full model weights: a common N(0, 0.05) vector plus a 1e-4 client spread, d = 1e6.
    # Flower's float32 Gram trick errs by ~50% here; ours must match direct differences.
    n, d = 6, 1_000_000
    offset = 0.05 * randn(1, d, seed=1, dtype=torch.float32)
    x = offset + 1e-4 * randn(n, d, seed=2, dtype=torch.float32)
    exact = exact_sq_distances(x)
    ours = pairwise_sq_distances(x)
    assert ours.dtype == torch.float64
    assert torch.equal(ours.diagonal(), torch.zeros(n, dtype=torch.float64))
    off = ~torch.eye(n, dtype=torch.bool)
    assert max_rel_err(ours, exact, off) < 1e-6

    # The data really defeats the naive float32 formula (so this test can fail).
    sq = x.square().sum(dim=1)
    naive = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    assert max_rel_err(naive.double(), exact, off) > 1e-2

    k = n - 1 - 2
    assert int(call("krum", x, f=1).info["index"]) == int(torch.argmin(krum_scores(exact, k)))


def test_pairwise_distances_accurate_next_to_huge_rows():
    # Three rows 1e6 times larger than the rest must not spoil the distances between the others
    # (centring on the mean would: its error here is ~100%).
    n, d = 12, 200_000
    x = 1e-3 * randn(n, d, seed=3, dtype=torch.float32)
    x[:3] *= 1e6
    assert central_row(x) >= 3
    exact = exact_sq_distances(x)
    off = ~torch.eye(n, dtype=torch.bool)
    assert max_rel_err(pairwise_sq_distances(x), exact, off) < 1e-6
    mean_centred = gram_matrix(x, x.mean(dim=0))
    sq = mean_centred.diagonal()
    bad = sq[:, None] + sq[None, :] - 2 * mean_centred
    honest = off.clone()
    honest[:3] = honest[:, :3] = False
    assert max_rel_err(bad, exact, honest) > 1e-2


def test_gram_matrix_matches_direct_products():
    x = randn(5, 40000, seed=4)  # several chunks, float64 products
    assert torch.allclose(gram_matrix(x), x @ x.T, rtol=1e-12, atol=0)
    c = randn(40000, seed=5)
    assert torch.allclose(gram_matrix(x, c), (x - c) @ (x - c).T, rtol=1e-12, atol=1e-9)
    x32 = x.float()
    assert gram_matrix(x32).dtype == torch.float64
    assert torch.allclose(gram_matrix(x32), x32.double() @ x32.double().T, rtol=1e-5)


def test_gram_matrix_restores_blas_threads_and_takes_any_layout():
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = blas_threads()
    wide = randn(6, 90000, seed=7, dtype=torch.float32)
    x = wide[:, ::2]  # non-contiguous rows
    exact = x.double() @ x.double().T
    assert torch.allclose(gram_matrix(x), exact, rtol=1e-5)
    assert torch.allclose(gram_matrix(x.T.contiguous().T), exact, rtol=1e-5)  # column-major
    grad = x.clone().requires_grad_(True)
    assert torch.allclose(gram_matrix(grad, grad[0]), gram_matrix(x, x[0]), rtol=0)
    # The per-call limit of numpy's BLAS to one thread is undone afterwards.
    assert blas_threads() == before


def test_column_blocks_restore_threads_and_allow_concurrent_calls():
    x = randn(9, 40000, seed=6, dtype=torch.float32)  # several blocks: the threaded path
    expected = torch.from_numpy(np.median(x.numpy(), axis=0))
    before = torch.get_num_threads()
    results = [None] * 4

    def run(i):
        results[i] = call("median", x).vector

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.get_num_threads() == before
    for r in results:
        assert torch.allclose(r, expected, rtol=1e-6, atol=0)


def test_single_threaded_torch_nests_and_restores():
    before = torch.get_num_threads()
    with single_threaded_torch():
        assert torch.get_num_threads() == 1
        with single_threaded_torch():
            assert torch.get_num_threads() == 1
        assert call("median", randn(5, 20000, seed=1)).vector.shape == (20000,)  # no deadlock
    assert torch.get_num_threads() == before


# --------------------------------------------------------------------------- GeoMed optimality


@pytest.mark.parametrize("seed", range(3))
def test_geomed_optimality(seed):
    n, d = 11, 6
    x = randn(n, d, seed=seed)
    x[:3] += 8.0  # a cluster of outliers
    res = call("geomed", x)
    z = res.vector
    diff = x - z
    dist = diff.norm(dim=1)
    # First-order optimality: the unit vectors from z to the points sum to ~0.
    assert (diff / dist[:, None]).sum(dim=0).norm().item() < 1e-5
    objective = dist.sum().item()
    assert res.info["objective"] == pytest.approx(objective, rel=1e-10)
    assert res.info["converged"] and 1 <= res.info["iterations"] <= 100

    def obj(p):
        return (x - p).norm(dim=1).sum().item()

    assert objective <= obj(x.mean(dim=0)) + 1e-12
    assert objective <= obj(x.median(dim=0).values) + 1e-12
    for row in x:
        assert objective <= obj(row) + 1e-12


def test_geomed_reference_reweighting():
    x = randn(9, 4, seed=2)
    x[0] += 3.0
    plain = call("geomed", x)
    ref = call("geomed", x, reweight_rounds=2)
    w = torch.ones(9, dtype=torch.float64)
    alpha = plain.info["alpha"]
    # First reweighting multiplies by exp(-distance to the first solution).
    w1 = w * torch.exp(-(x - alpha @ x).norm(dim=1))
    assert ref.info["weights"].shape == (9,)
    assert ref.info["reweight_underflow"] is False
    assert not torch.allclose(ref.vector, plain.vector)
    # Weighted optimality for the final weights.
    diff = x - ref.vector
    unit = diff / diff.norm(dim=1, keepdim=True)
    assert (ref.info["weights"][:, None] * unit).sum(dim=0).norm().item() < 1e-5
    assert torch.all(ref.info["weights"] <= w1 + 1e-15)


def test_geomed_reweighting_underflow_keeps_finite_result():
    # Every point is ~5800 from the centroid of this triangle: exp(-distance) is 0 for all.
    x = 1e4 * torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 3**0.5 / 2]], dtype=torch.float64)
    res = call("geomed", x, reweight_rounds=2)
    assert torch.isfinite(res.vector).all()
    assert res.info["reweight_underflow"] is True


# --------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("name", BASELINES)
def test_permutation_invariance(name):
    n = 11
    x = randn(n, 300, seed=7)
    x[:2] = x[:2] * 2 + 1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    a = call(name, x)
    b = call(name, x[perm])
    assert torch.allclose(a.vector, b.vector, rtol=1e-10, atol=1e-12)
    if a.selected is None:
        assert b.selected is None
    else:
        assert torch.equal(b.selected, a.selected[perm])


@pytest.mark.parametrize("name", BASELINES)
def test_translation_equivariance(name):
    x = randn(11, 200, seed=8)
    shift = 3.0 * randn(200, seed=9)
    a = call(name, x)
    b = call(name, x + shift)
    assert torch.allclose(b.vector, a.vector + shift, rtol=1e-9, atol=1e-9)
    if a.selected is not None:
        assert torch.equal(a.selected, b.selected)


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_shape_device_preserved(name, dtype):
    x = randn(11, 17, seed=1, dtype=dtype)
    res = call(name, x)
    assert res.vector.dtype == dtype
    assert res.vector.shape == (17,)
    assert res.vector.device == x.device
    if name in ROW_SELECTING:
        assert res.selected.dtype == torch.bool and res.selected.shape == (11,)
    else:
        assert res.selected is None


@pytest.mark.parametrize("name", BASELINES)
def test_zero_and_identical_rows(name):
    zeros = torch.zeros(11, 5)
    assert torch.equal(call(name, zeros).vector, torch.zeros(5))
    row = torch.tensor([0.5, -2.0, 3.0, 0.0, 1e-3])
    same = row.repeat(11, 1)
    assert torch.allclose(call(name, same).vector, row, rtol=1e-6, atol=0)


def test_geomed_with_repeated_point():
    x = torch.tensor([[1.0, 1.0]] * 5 + [[0.0, 0.0], [5.0, -3.0]], dtype=torch.float64)
    res = call("geomed", x)
    assert torch.isfinite(res.vector).all()
    assert torch.allclose(res.vector, torch.tensor([1.0, 1.0], dtype=torch.float64), atol=1e-5)


# --------------------------------------------------------------------------- DnC specifics


def test_dnc_seeded_generator_is_reproducible():
    x = randn(20, 5000, seed=11)
    x[:4] += 0.3
    kw = dict(f=4, b=100, niters=3)
    a = RULES["dnc"](x, generator=torch.Generator().manual_seed(5), **kw)
    b = RULES["dnc"](x, generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(a.vector, b.vector)
    assert torch.equal(a.info["scores"], b.info["scores"])
    c = RULES["dnc"](x, generator=torch.Generator().manual_seed(6), **kw)
    assert not torch.equal(a.info["scores"], c.info["scores"])
    # generator=None uses torch's global RNG
    torch.manual_seed(0)
    g1 = RULES["dnc"](x, **kw)
    torch.manual_seed(0)
    g2 = RULES["dnc"](x, **kw)
    assert torch.equal(g1.info["scores"], g2.info["scores"])


def test_dnc_removes_far_rows():
    x = randn(20, 3000, seed=12)
    x[:4] += 2.0 * randn(3000, seed=13)  # four colluding rows along one direction
    res = call("dnc", x, f=4, b=500)
    assert res.selected[:4].sum() == 0
    assert int(res.selected.sum()) == 16
    assert torch.allclose(res.vector, x[4:].mean(dim=0))


def test_dnc_kept_count_rounding():
    x = randn(47, 10, seed=3)
    res = call("dnc", x, f=30, c=0.1, niters=1)  # 47 - 0.1*30 = 44 exactly
    assert res.info["kept_per_iteration"] == 44
    ref = call("dnc", randn(50, 10), f=10, c=49 / 50, niters=1)  # reference c = (n-1)/n
    assert ref.info["kept_per_iteration"] == 40


@pytest.mark.parametrize(("d", "b"), [(10, 20), (1000, 400), (10**6, 1000)])
def test_sample_coordinates(d, b):
    g = torch.Generator().manual_seed(0)
    cols = sample_coordinates(d, b, g)
    if b >= d:
        assert cols is None
        return
    assert cols.numel() == b
    assert torch.equal(cols, torch.unique(cols))  # sorted, no repeats
    assert 0 <= int(cols.min()) and int(cols.max()) < d


def test_sample_coordinates_is_uniform():
    # Small d, b << d path: every coordinate should be drawn about equally often.
    g = torch.Generator().manual_seed(1)
    d, b, reps = 40, 5, 4000
    counts = torch.zeros(d)
    for _ in range(reps):
        counts[sample_coordinates(d, b, g)] += 1
    expected = reps * b / d
    assert (counts - expected).abs().max() < 5 * expected**0.5


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("name", "n", "f", "match"),
    [
        ("trimmed_mean", 4, 2, "n > 2f"),
        ("krum", 6, 2, "n >= 2f \\+ 3"),
        ("multi_krum", 6, 2, "n >= 2f \\+ 3"),
        ("bulyan", 10, 2, "n >= 4f \\+ 3"),
        ("dnc", 3, 3, "floor\\(n - c\\*f\\)"),
    ],
)
def test_insufficient_clients(name, n, f, match):
    x = randn(n, 4)
    with pytest.raises(InsufficientClientsError, match=match) as err:
        call(name, x, f=f)
    assert f"n={n}" in str(err.value) and f"f={f}" in str(err.value)


@pytest.mark.parametrize(
    ("name", "n", "f"),
    [("krum", 7, 2), ("multi_krum", 7, 2), ("bulyan", 11, 2), ("trimmed_mean", 5, 2)],
)
def test_boundary_row_counts_work(name, n, f):
    assert call(name, randn(n, 4), f=f).vector.shape == (4,)


@pytest.mark.parametrize(
    ("name", "params", "error", "match"),
    [
        ("trimmed_mean", {"f": -1}, ValueError, "f"),
        ("trimmed_mean", {"f": 1.5}, TypeError, "f"),
        ("trimmed_mean", {}, TypeError, "f"),
        ("median", {"variant": "upper"}, ValueError, "variant"),
        ("geomed", {"eps": 0.0}, ValueError, "eps"),
        ("geomed", {"max_iter": 0}, ValueError, "max_iter"),
        ("geomed", {"tol": -1.0}, ValueError, "tol"),
        ("geomed", {"reweight_rounds": -1}, ValueError, "reweight_rounds"),
        ("krum", {"f": True}, TypeError, "f"),
        ("krum", {"f": 1, "neighbours": "all"}, ValueError, "neighbours"),
        ("multi_krum", {"f": 1, "m": 0}, ValueError, "m"),
        ("bulyan", {"f": 1, "variant": "flower"}, ValueError, "variant"),
        ("dnc", {"f": 1, "niters": 0}, ValueError, "niters"),
        ("dnc", {"f": 1, "b": 0}, ValueError, "b"),
        ("dnc", {"f": 1, "c": -0.5}, ValueError, "c"),
        ("dnc", {"f": 1, "generator": 42}, TypeError, "generator"),
        ("mean", {"f": 1}, TypeError, "unknown parameter"),
    ],
)
def test_validate_rejects_bad_parameters(name, params, error, match):
    with pytest.raises(error, match=match):
        RULES[name].validate(**params)
    if params and "unknown" not in match:
        with pytest.raises(error, match=match):
            RULES[name](randn(20, 3), **params)


@pytest.mark.parametrize("name", BASELINES)
def test_validate_accepts_defaults(name):
    params = {"f": 2} if name in F_RULES else {}
    RULES[name].validate(**params)


def test_multi_krum_m_larger_than_n():
    with pytest.raises(ValueError, match="m must be <= n"):
        call("multi_krum", randn(7, 3), f=1, m=8)


@pytest.mark.parametrize("name", BASELINES)
def test_bad_update_matrix(name):
    with pytest.raises(TypeError):
        call(name, np.zeros((7, 3)))
    with pytest.raises(ValueError):
        call(name, torch.zeros(7))


# --------------------------------------------------------------------------- CUDA


@CUDA
@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(name, dtype):
    x = randn(15, 20000, seed=21, dtype=dtype)
    x[:3] += 1.0
    cpu = call(name, x, f=3)
    gpu = call(name, x.cuda(), f=3)
    assert gpu.vector.device.type == "cuda" and gpu.vector.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert torch.allclose(gpu.vector.cpu(), cpu.vector, rtol=tol, atol=tol)
    if cpu.selected is not None:
        assert gpu.selected.device.type == "cuda"
        assert torch.equal(gpu.selected.cpu(), cpu.selected)


# --------------------------------------------------------------------------- one enormous coordinate
def test_one_huge_coordinate_does_not_stall_the_distance_rules():
    """One coordinate of 2e19 in 1 of 20 updates overflowed the float32 Gram products: GeoMed
    returned a non-finite vector (so the strategy kept the old model every round).  The Gram
    block is redone in float64, and GeoMed runs until its iterate stops moving."""
    from signguard_flwr.rules import RULES

    torch.manual_seed(0)
    x = torch.randn(20, 1000)
    x[0, 5] = 2e19
    honest = x[1:]
    result = RULES["geomed"](x)
    assert bool(torch.isfinite(result.vector).all())
    # The outlier pulls the geometric median by a bounded amount: it lands next to the honest one.
    assert float((result.vector - RULES["geomed"](honest).vector).norm()) < 3.0
    assert float((result.vector - honest.mean(0)).norm()) < 3.0
    for name in ("krum", "multi_krum", "bulyan"):
        out = RULES[name](x, f=1)
        assert bool(torch.isfinite(out.vector).all()), name
        if out.selected is not None:
            assert not bool(out.selected[0]), name  # the row with 2e19 is never selected
