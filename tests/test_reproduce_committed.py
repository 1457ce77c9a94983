"""Committed results reproduce: a few committed run keys rerun for their first evaluation window.

Guards behaviour-preserving refactors: every figure a run records (accuracy, loss, what was
received, selected and detected) must come out identical, only the timings may differ. The runs
cover the adversary (colluding attacks), a client-side attack, the similarity features of the
SignGuard family and the distance-based baselines.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from simulations.config import ExperimentConfig
from simulations.engine import run_experiment

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
TIMINGS = {"agg_seconds", "round_seconds"}
# The test loss is a float sum over 10,000 images of a model that went through BLAS products
# (DnC's Gram matrix, the Krum family's distances).  Intel MKL picks kernels by buffer alignment,
# so the last bits of such products, and with them the loss's 8th digit, can differ between
# processes unless MKL_CBWR is set before start (measured: DnC under LIE, round 10,
# 2.2939150146 vs 2.2939150391 in two processes of the same code).  The kernels also depend on
# the CPU's instruction set, and a model near a decision boundary then classifies a test image
# differently: Median under Min-Max at round 10 (13.5% accuracy, most predictions near ties)
# gave 0.1351 on an AMD EPYC (AVX-512, and with ATEN_CPU_CAPABILITY=avx2 or default) where the
# committed run, made on another machine, has 0.135; the loss agreed to 2e-7.  So accuracy may
# move by at most two of the 10,000 test images; what was received, selected and detected must
# match exactly (a changed behaviour changes those, or the loss, by far more).
LOSS_REL_TOL = 1e-6
ACC_ABS_TOL = 2 / 10_000

# The main job's data ships with the repository, so these run everywhere.
BUNDLED = [
    "main/mnist-mini-signguard-min_max-",
    "main/mnist-mini-multi_krum-min_max-",
    "main/mnist-mini-mean-none-",
]
# These need MNIST from the offline datasets beside the repository.
MNIST = [
    "converged-mnist/mnist-dnc-lie-",
    "converged-mnist/mnist-signguard_dist-sign_flip-",
    "converged-mnist/mnist-signguard_sim-lie-",
    "converged-mnist/mnist-median-min_max-",
]


def _committed(prefix: str) -> dict:
    folder, stem = prefix.split("/")
    [path] = sorted((RESULTS / folder).glob(f"{stem}b10-iid-s0-*.json"))
    return json.loads(path.read_text())


def _same(got: object, want: object, field: str = "") -> bool:
    if isinstance(got, float) and isinstance(want, float) and math.isnan(got) and math.isnan(want):
        return True
    if field == "test_loss" and isinstance(got, float) and isinstance(want, float):
        return math.isclose(got, want, rel_tol=LOSS_REL_TOL)
    if field == "test_acc" and isinstance(got, float) and isinstance(want, float):
        return abs(got - want) <= ACC_ABS_TOL + 1e-12
    return got == want and type(got) is type(want)


@pytest.fixture(autouse=True)
def one_thread():
    """Run as the sweeps ran: one torch thread per run (``--jobs`` = cores).

    Multi-threaded LAPACK/BLAS reductions (DnC's SVD, the Gram products) are not bit-reproducible
    across thread schedules; with one thread every figure is.
    """
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):  # the BLAS/LAPACK pools torch does not govern
        yield
    torch.set_num_threads(threads)


def _check_reproduces(prefix: str) -> None:
    committed = _committed(prefix)
    cfg = ExperimentConfig.from_dict(committed["config"])
    assert cfg.key() == committed["key"]
    rounds = cfg.eval_every  # up to and including the first evaluation after round 0
    result = run_experiment(cfg.replace(rounds=rounds)).to_json()
    assert result["byzantine_partitions"] == committed["byzantine_partitions"]
    assert len(result["rounds"]) == rounds
    differences = [
        (want["round"], field, got[field], value)
        for got, want in zip(result["rounds"], committed["rounds"][:rounds])
        for field, value in want.items()
        if field not in TIMINGS and not _same(got[field], value, field)
    ]
    assert not differences, f"{prefix}: (round, field, now, committed) {differences[:6]}"
    assert not math.isnan(result["rounds"][-1]["test_acc"])  # the window ends with an evaluation


@pytest.mark.parametrize("prefix", BUNDLED)
def test_bundled_runs_reproduce(prefix: str) -> None:
    _check_reproduces(prefix)


@pytest.mark.parametrize("prefix", MNIST)
def test_mnist_runs_reproduce(prefix: str, shared_data: Path) -> None:
    _check_reproduces(prefix)


def test_a_changed_figure_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison is not vacuous: a rule that selects differently is caught."""
    import simulations.engine.experiment as experiment

    real = experiment.detection_counts

    def off_by_one(diag, byzantine_nodes):
        counts = real(diag, byzantine_nodes)
        counts["tp"] += 1
        return counts

    monkeypatch.setattr(experiment, "detection_counts", off_by_one)
    with pytest.raises(AssertionError, match="'tp'"):
        _check_reproduces(BUNDLED[2])


def test_accuracy_tolerance_is_two_test_images() -> None:
    """Only CPU-kernel noise is forgiven: one or two of 10,000 images, never three."""
    assert _same(0.1351, 0.135, "test_acc")
    assert _same(0.9702, 0.97, "test_acc")
    assert not _same(0.1353, 0.135, "test_acc")
    assert not _same(0.9701, 0.97, "train_loss")  # only the test figures have a tolerance
    assert not _same(2.2935, 2.2936, "test_loss")
