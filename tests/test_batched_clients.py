"""Batched FedSGD clients (clients.batched): equal to the per-client path, and never served stale.

Tolerance: the batched step is compared with ``train_fedsgd`` client by client with
``allclose(atol=1e-5, rtol=1e-4)`` (integer buffers such as ``num_batches_tracked`` exactly).
``vmap`` runs the K clients' convolutions and matrix products as one batched kernel whose float32
sums are reduced in another order, so gradients differ in the last bits (measured: 0 for the
digits MLP, ≤ 2e-6 absolute for ResNet-18 on CPU); the tolerance is a few times that and still
far below any real difference (another batch or another augmentation changes values by 1e-2).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, MessageType, RecordDict
from torch import nn

from clients import batched, training
from clients.batched import (
    FedSGDJob,
    clear_prepared,
    fedsgd_steps_batched,
    prepare_round,
    prepared_count,
)
from clients.client_app import ClientData, clear_caches, load_client_data
from clients.settings import ClientSettings
from clients.tasks import TASKS, ArrayDataset, Task, get_task
from clients.tasks.models import MnistCNN
from clients.training import local_train, train_fedsgd
from simulations.config import ExperimentConfig
from simulations.engine import InProcessGrid, run_experiment

ATOL, RTOL = 1e-5, 1e-4


@pytest.fixture(autouse=True)
def _empty_cache():
    clear_prepared()
    yield
    clear_prepared()


class SmallBNCNN(nn.Module):
    """Conv + BatchNorm2d + BatchNorm1d: parameters and running statistics of both kinds."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc1 = nn.Linear(4 * 6 * 6, 16)
        self.bn1 = nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn2(self.conv(x)))
        return self.fc2(torch.relu(self.bn1(self.fc1(torch.flatten(x, 1)))))


class FunctionalDropout(nn.Module):
    """Dropout called functionally: invisible to the module scan, caught by vmap."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.dropout(torch.flatten(x, 1), 0.5, training=self.training))


def assert_states_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    for key, value in want.items():
        other = got[key]
        assert other.shape == value.shape and other.dtype == value.dtype, key
        if value.is_floating_point():
            assert torch.allclose(other, value, atol=ATOL, rtol=RTOL), (key, float((other - value).abs().max()))
        else:
            assert torch.equal(other, value), key


def per_client(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> tuple[list[dict[str, torch.Tensor]], list[float]]:
    states, losses = [], []
    for x, y in zip(xs, ys, strict=True):
        local = copy.deepcopy(model)
        losses.append(train_fedsgd(local, (x, y)))
        states.append(local.state_dict())
    return states, losses


def check_equal_to_per_client(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    states, losses = fedsgd_steps_batched(model, xs, ys)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # pure: model untouched
    want_states, want_losses = per_client(model, xs, ys)
    assert len(states) == len(want_states) == xs.shape[0]
    for got, want in zip(states, want_states, strict=True):
        assert_states_close(got, want)
    assert np.allclose(losses.numpy(), want_losses, atol=ATOL, rtol=RTOL)


# ============================================================================ the pure computation


def test_batchnorm_cnn_equals_per_client() -> None:
    torch.manual_seed(0)
    model = SmallBNCNN()
    # Non-trivial starting statistics, as after some rounds.
    model.bn2.running_mean.uniform_(-1, 1)
    model.bn1.running_var.uniform_(0.5, 2)
    model.bn1.num_batches_tracked.fill_(7)
    xs, ys = torch.randn(4, 6, 1, 8, 8) * torch.arange(1, 5).view(4, 1, 1, 1, 1), torch.randint(0, 10, (4, 6))
    check_equal_to_per_client(model, xs, ys)
    states, _ = fedsgd_steps_batched(model, xs, ys)
    # Each client has its own running statistics (the batches differ in scale).
    assert not torch.allclose(states[0]["bn2.running_var"], states[3]["bn2.running_var"])
    assert all(int(s["bn1.num_batches_tracked"]) == 8 for s in states)


@pytest.mark.parametrize("num_clients", [3, 5])
def test_digits_model_equals_per_client(num_clients: int) -> None:
    torch.manual_seed(1)
    model = get_task("digits").build_model()
    datas = [load_client_data("digits", None, "iid", None, pid, num_clients, 0) for pid in range(num_clients)]
    batches = [d.train.get_batch(np.array(d.train_indices[:20])) for d in datas]
    xs, ys = torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])
    check_equal_to_per_client(model, xs, ys)


def test_resnet18_equals_per_client() -> None:
    torch.manual_seed(2)
    model = get_task("cifar10").build_model()  # no data files needed to build it
    xs, ys = torch.randn(2, 4, 3, 32, 32), torch.randint(0, 10, (2, 4))
    check_equal_to_per_client(model, xs, ys)


def test_explicit_state_and_mode_restored() -> None:
    torch.manual_seed(3)
    model, other = SmallBNCNN(), SmallBNCNN()
    model.eval()
    xs, ys = torch.randn(2, 5, 1, 8, 8), torch.randint(0, 10, (2, 5))
    states, _ = fedsgd_steps_batched(model, xs, ys, state=other.state_dict())
    assert not model.training and not model.bn1.training
    want, _ = per_client(other, xs, ys)
    for got, ref in zip(states, want, strict=True):
        assert_states_close(got, ref)


def test_models_with_random_ops_are_refused() -> None:
    xs, ys = torch.randn(2, 4, 1, 28, 28), torch.randint(0, 10, (2, 4))
    with pytest.raises(ValueError, match="Dropout"):
        fedsgd_steps_batched(MnistCNN(), xs, ys)
    with pytest.raises(ValueError, match="random"):
        fedsgd_steps_batched(FunctionalDropout(), torch.randn(2, 4, 1, 8, 8), ys)
    assert batched.batching_refusal(get_task("digits").build_model()) is None
    assert batched.batching_refusal(get_task("cifar10").build_model()) is None


# ============================================================================ prepare_round + local_train


def digits_data(sizes: list[int], *, augment: bool = False) -> list[ClientData]:
    """Clients of the digits task with the given numbers of training samples."""
    base = load_client_data("digits", None, "iid", None, 0, 1, 0)
    train = base.train
    if augment:  # a random per-sample transform drawn from torch's global RNG, as CIFAR's crop/flip
        train = ArrayDataset(train.data, train.targets, transform=train.transform,
                             augment=lambda x: x.flip(-1) if torch.rand(()) < 0.5 else x)
    out, start = [], 0
    for n in sizes:
        out.append(ClientData(base.task, train, base.test, np.arange(start, start + n), base.test_indices))
        start += n
    return out


def fresh(global_state, data, settings, pid, rnd, transform=None):
    """local_train with nothing prepared: (state, metrics)."""
    saved = dict(batched._PREPARED)
    batched._PREPARED.clear()
    try:
        model = get_task(settings.task).build_model()
        model.load_state_dict(global_state)
        metrics = local_train(model, data, settings, partition_id=pid, server_round=rnd, label_transform=transform)
        return model.state_dict(), metrics
    finally:
        batched._PREPARED.update(saved)


def served(global_state, data, settings, pid, rnd, transform=None):
    model = get_task(settings.task).build_model()
    model.load_state_dict(global_state)
    metrics = local_train(model, data, settings, partition_id=pid, server_round=rnd, label_transform=transform)
    return model.state_dict(), metrics


def test_prepared_results_equal_local_train_across_batch_sizes() -> None:
    torch.manual_seed(4)
    global_state = get_task("digits").build_model().state_dict()
    settings = ClientSettings(task="digits", batch_size=10, seed=3)
    # 40 and 25 samples: batches of 10; 6 and 4 samples: all of them each round (6 and 4).
    datas = digits_data([40, 25, 6, 4], augment=True)
    jobs = [FedSGDJob(pid, data, settings, 2) for pid, data in enumerate(datas)]
    calls = []
    real = batched.fedsgd_steps_batched
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batched, "fedsgd_steps_batched", lambda m, xs, ys, state=None: calls.append(xs.shape[:2]) or real(m, xs, ys, state))
        assert prepare_round(global_state, jobs) == 4
    assert sorted(tuple(c) for c in calls) == [(1, 4), (1, 6), (2, 10)]  # grouped by batch size
    hits = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "take_prepared", lambda *a, **k: hits.append(batched.take_prepared(*a, **k)) or hits[-1])
        for pid, data in enumerate(datas):
            got, got_metrics = served(global_state, data, settings, pid, 2)
            assert hits[-1] is not None  # served from the cache
            want, want_metrics = fresh(global_state, data, settings, pid, 2)
            assert_states_close(got, want)
            assert got_metrics["num-examples"] == want_metrics["num-examples"] == min(10, data.num_train)
            assert abs(got_metrics["train-loss"] - want_metrics["train-loss"]) < 1e-5
    assert sum(h is not None for h in hits) == 4
    assert prepared_count() == 0  # each entry used once


def test_no_stale_results() -> None:
    torch.manual_seed(5)
    task = get_task("digits")
    global_a = task.build_model().state_dict()
    global_b = task.build_model().state_dict()
    settings = ClientSettings(task="digits", batch_size=10, seed=0)
    [data, other] = digits_data([30, 30])
    prepare_round(global_a, [FedSGDJob(0, data, settings, 1)])
    # Poison the entry: were it served, the model would hold these values.
    [entry] = batched._PREPARED.values()
    for tensor in entry.state.values():
        tensor.add_(1000) if tensor.is_floating_point() else None
    poisoned = {k: v.clone() for k, v in entry.state.items()}

    def check_not_served(state, *args) -> None:
        want, _ = fresh(*args)
        assert_states_close(state, want)
        assert not torch.allclose(state["fc1.weight"], poisoned["fc1.weight"])

    # Another round, another label transform, other settings, another client's data: not used, kept.
    for args in [(global_a, data, settings, 0, 2), (global_a, data, settings, 0, 1, "flip"),
                 (global_a, data, ClientSettings(task="digits", batch_size=10, seed=1), 0, 1),
                 (global_a, data, ClientSettings(task="digits", batch_size=5, seed=0), 0, 1),
                 (global_a, data, settings, 1, 1)]:
        check_not_served(served(*args)[0], *args)
    assert prepared_count() == 1
    # Same key but another client's rows (another ClientData under the same id): dropped, not used.
    check_not_served(served(global_a, other, settings, 0, 1)[0], global_a, other, settings, 0, 1)
    assert prepared_count() == 0
    # Same key, another global model: dropped, not used.
    prepare_round(global_a, [FedSGDJob(0, data, settings, 1)])
    check_not_served(served(global_b, data, settings, 0, 1)[0], global_b, data, settings, 0, 1)
    assert prepared_count() == 0
    # The exact call is served ("none" and None are the same transform), once.
    prepare_round(global_a, [FedSGDJob(0, data, settings, 1)])
    got, _ = served(global_a, data, settings, 0, 1, "none")
    assert_states_close(got, fresh(global_a, data, settings, 0, 1)[0])
    assert prepared_count() == 0
    # A new round's preparation replaces the old one's entries.
    prepare_round(global_a, [FedSGDJob(0, data, settings, 1)])
    prepare_round(global_a, [FedSGDJob(1, other, settings, 2)])
    assert list(batched._PREPARED) == [batched._key(1, 2, None, settings)]
    clear_caches()
    assert prepared_count() == 0


def test_label_flip_and_skipped_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(6)
    global_state = get_task("digits").build_model().state_dict()
    settings = ClientSettings(task="digits", batch_size=10)
    [data] = digits_data([30])
    prepare_round(global_state, [FedSGDJob(0, data, settings, 1, "flip")])
    got, _ = served(global_state, data, settings, 0, 1, "flip")
    assert prepared_count() == 0
    assert_states_close(got, fresh(global_state, data, settings, 0, 1, "flip")[0])
    # FedAvg clients and models with dropout are left to the per-client path.
    assert prepare_round(global_state, [FedSGDJob(0, data, ClientSettings(task="digits", client_mode="fedavg"), 1)]) == 0
    monkeypatch.setitem(TASKS, "digits_drop", Task("digits_drop", 10, FunctionalDropout, TASKS["digits"].loader, needs_data_dir=False))
    monkeypatch.setitem(TASKS, "mnist_cnn_digits", Task("mnist_cnn_digits", 10, MnistCNN, TASKS["digits"].loader, needs_data_dir=False))
    drop_state = FunctionalDropout().state_dict()
    assert prepare_round(drop_state, [FedSGDJob(0, data, ClientSettings(task="digits_drop", batch_size=10), 1)]) == 0
    assert prepare_round(MnistCNN().state_dict(), [FedSGDJob(0, data, ClientSettings(task="mnist_cnn_digits"), 1)]) == 0
    clear_caches()


# ============================================================================ the in-process engine


def _train_messages(grid: InProcessGrid, state: dict[str, torch.Tensor], config: dict) -> list:
    arrays = ArrayRecord(state)
    return [
        grid.create_message(RecordDict({"arrays": arrays, "config": ConfigRecord(config)}), MessageType.TRAIN, node, "1")
        for node in grid.get_node_ids()
    ]


@pytest.mark.parametrize("mode", ["fedsgd", "fedavg"])
def test_grid_replies_equal_and_cache_cleared(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from clients.app import app

    torch.manual_seed(7)
    state = get_task("digits").build_model().state_dict()
    config = {"server-round": 3, "task": "digits", "batch-size": 16, "client-mode": mode, "seed": 2}
    hits = []
    monkeypatch.setattr(training, "take_prepared", lambda *a, **k: hits.append(batched.take_prepared(*a, **k)) or hits[-1])
    replies = {}
    for flag in (False, True):
        grid = InProcessGrid(app, 5, seed=1, batched_clients=flag)
        replies[flag] = list(grid.send_and_receive(_train_messages(grid, state, config)))
        assert prepared_count() == 0
    assert sum(h is not None for h in hits) == (5 if mode == "fedsgd" else 0)
    for plain, fast in zip(replies[False], replies[True], strict=True):
        assert not plain.has_error() and not fast.has_error()
        assert_states_close(fast.content["arrays"].to_torch_state_dict(), plain.content["arrays"].to_torch_state_dict())
        assert abs(fast.content["metrics"]["train-loss"] - plain.content["metrics"]["train-loss"]) < 1e-5
    clear_caches()


def test_inprocess_run_with_batched_clients_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    hits = []
    monkeypatch.setattr(training, "take_prepared", lambda *a, **k: hits.append(batched.take_prepared(*a, **k)) or hits[-1])
    cfg = ExperimentConfig(task="digits", num_clients=8, num_byzantine=2, defense="signguard", attack="lie",
                           rounds=4, eval_every=1, batch_size=20)
    plain = run_experiment(cfg)
    assert not hits or all(h is None for h in hits)
    fast = run_experiment(cfg, batched_clients=True)
    assert sum(h is not None for h in hits) == cfg.num_clients * cfg.rounds  # every client step came batched
    assert fast.key == plain.key and fast.engine_options == {"batched_clients": True} and plain.engine_options == {}
    assert "engine_options" in fast.to_json() and "engine_options" not in plain.to_json()
    for a, b in zip(plain.rounds, fast.rounds, strict=True):
        assert abs(a.test_acc - b.test_acc) <= 1e-4 and abs(a.test_loss - b.test_loss) <= 1e-4
        assert (a.received, a.valid, a.selected, a.tp, a.fp, a.fn, a.tn, a.outcome) == (
            b.received, b.valid, b.selected, b.tp, b.fp, b.fn, b.tn, b.outcome)
    clear_caches()


def test_cli_flag(tmp_path: Path) -> None:
    from simulations.cli.main import main

    argv = ["run", "--task", "digits", "--num-clients", "4", "--num-byzantine", "1", "--rounds", "1", "-q",
            "--results-dir", str(tmp_path), "--batched-clients"]
    assert main(argv) == 0
    [path] = tmp_path.glob("*.json")
    assert json.loads(path.read_text())["engine_options"] == {"batched_clients": True}
    assert main([*argv, "--engine", "ray"]) == 2
    with pytest.raises(ValueError, match="in-process"):
        run_experiment(ExperimentConfig(task="digits", num_clients=4, num_byzantine=1, rounds=1), engine="ray", batched_clients=True)
    clear_caches()
