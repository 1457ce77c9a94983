"""The honest ClientApp: settings, batch schedule, FedSGD/FedAvg, label-flip hook, evaluate, Flower run."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flwr.app import DEFAULT_TTL, ArrayRecord, ConfigRecord, Context, Message, MessageType, Metadata, RecordDict
from torch import nn

from clients import client_app as ca
from clients.client_app import (
    ClientSettings,
    app,
    apply_label_transform,
    clear_caches,
    fedavg_epoch_positions,
    fedsgd_batch_positions,
    load_client_data,
    resolve_device,
    resolve_settings,
    train_fedsgd,
)
from clients.tasks import TASKS, Task, get_task
from clients.tasks.datasets import load_digits_dataset

NUM_PARTITIONS = 4

# ============================================================================ helpers


def make_message(
    arrays: dict[str, torch.Tensor], config: dict[str, Any], message_type: str = MessageType.TRAIN
) -> Message:
    """An instruction message as the server would send it (built from explicit metadata)."""
    metadata = Metadata(
        run_id=1,
        message_id=f"msg-{time.monotonic_ns()}",
        src_node_id=0,
        dst_node_id=7,
        reply_to_message_id="",
        group_id=str(config.get("server-round", "")),
        created_at=time.time(),
        ttl=DEFAULT_TTL,
        message_type=message_type,
    )
    content = RecordDict({"arrays": ArrayRecord(arrays), "config": ConfigRecord(config)})
    return Message(content=content, metadata=metadata)


def make_context(partition_id: int = 1, run_config: dict[str, Any] | None = None, **node: Any) -> Context:
    node_config = {"partition-id": partition_id, "num-partitions": NUM_PARTITIONS, **node}
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(),
                   run_config={"task": "digits", **(run_config or {})})


def initial_state(task: str = "digits", seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return get_task(task).build_model().state_dict()


def returned_state(reply: Message) -> dict[str, torch.Tensor]:
    assert not reply.has_error()
    return reply.content["arrays"].to_torch_state_dict()


def expected_fedsgd(state: dict[str, torch.Tensor], partition_id: int, server_round: int,
                    flip: bool = False, batch_size: int = 50, seed: int = 0) -> tuple[dict[str, torch.Tensor], float]:
    """w - grad computed here, on the batch the schedule assigns to (partition, round)."""
    data = load_client_data("digits", None, "iid", {}, partition_id, NUM_PARTITIONS, seed)
    pos = fedsgd_batch_positions(data.num_train, batch_size, server_round, seed, partition_id)
    x, y = data.train.get_batch(data.train_indices[pos])
    if flip:
        y = 9 - y
    model = get_task("digits").build_model()
    model.load_state_dict(state)
    params = dict(model.named_parameters())
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(params.values()))
    out = {name: (state[name] - g).detach() for name, g in zip(params, grads)}
    return out, float(loss.detach())


@pytest.fixture(autouse=True)
def fresh_caches():
    clear_caches()
    yield
    clear_caches()


# ============================================================================ settings


def test_settings_defaults_and_precedence() -> None:
    assert resolve_settings({}) == ClientSettings()
    s = resolve_settings(
        {"task": "mnist", "seed": 3, "batch-size": 20, "num-server-rounds": 9, "partition": "shard"},
        ConfigRecord({"batch-size": 10, "server-round": 2, "local-lr": "0.05", "download": "true"}),
    )
    assert (s.task, s.seed, s.batch_size, s.local_lr, s.download) == ("mnist", 3, 10, 0.05, True)
    assert s.partition_params() == {"s": 0.3}
    assert resolve_settings({"partition": "dirichlet", "dirichlet-alpha": 1}).partition_params() == {
        "alpha": 1.0, "min_size": 10,
    }


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"task": "svhn"}, "Unknown task"),
        ({"partition": "sorted"}, "'partition'"),
        ({"client-mode": "fedprox"}, "'client-mode'"),
        ({"batch-size": 0}, "'batch-size'"),
        ({"batch-size": 2.5}, "'batch-size'"),
        ({"seed": -1}, "'seed'"),
        ({"partition-s": 1.2}, "'partition-s'"),
        ({"dirichlet-alpha": 0}, "'dirichlet-alpha'"),
        ({"local-lr": "fast"}, "'local-lr'"),
        ({"download": "maybe"}, "'download'"),
        ({"device": "tpu-ish"}, "'device'"),
        ({"device": "meta"}, "'device'"),
    ],
)
def test_settings_validation_names_the_key(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_settings(config)


def test_device_setting_resolves_where_the_client_trains() -> None:
    assert resolve_settings({"device": "auto"}).device == "auto"
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            resolve_settings({"device": "cuda"})


# ============================================================================ batch schedule


def test_fedsgd_schedule_walks_an_epoch_then_reshuffles() -> None:
    n, b = 337, 50  # 6 full batches per epoch, 37 samples skipped per epoch
    epoch0 = [fedsgd_batch_positions(n, b, r, seed=0, partition_id=2) for r in range(1, 7)]
    flat = np.concatenate(epoch0)
    assert all(len(p) == b for p in epoch0) and len(np.unique(flat)) == 6 * b
    epoch1 = fedsgd_batch_positions(n, b, 7, seed=0, partition_id=2)
    assert not np.array_equal(epoch1, epoch0[0])
    assert np.array_equal(fedsgd_batch_positions(n, b, 4, 0, 2), epoch0[3])  # pure function of the round
    assert not np.array_equal(fedsgd_batch_positions(n, b, 4, 0, 3), epoch0[3])  # differs per client
    assert sorted(fedsgd_batch_positions(30, b, 5, 0, 0).tolist()) == list(range(30))  # fewer than B: all


def test_fedavg_epochs_cover_all_data_each_epoch() -> None:
    batches = list(fedavg_epoch_positions(103, 25, epochs=2, server_round=1, seed=0, partition_id=0))
    assert [len(b) for b in batches] == [25, 25, 25, 25, 3] * 2
    assert sorted(np.concatenate(batches[:5]).tolist()) == list(range(103))


# ============================================================================ client data


def test_client_data_cached_and_test_shares_cover_test_set() -> None:
    a = load_client_data("digits", None, "iid", {}, 0, NUM_PARTITIONS, 0)
    b = load_client_data("digits", "/ignored/for/digits", "iid", {}, 0, NUM_PARTITIONS, 0)
    assert a.train is b.train and a.train_indices is b.train_indices  # no reload per round
    shares = [load_client_data("digits", None, "iid", {}, p, NUM_PARTITIONS, 0) for p in range(NUM_PARTITIONS)]
    assert sorted(np.concatenate([s.test_indices for s in shares]).tolist()) == list(range(len(a.test)))
    assert sum(s.num_train for s in shares) == len(a.train)
    shard = load_client_data("digits", None, "shard", {"s": 0.0}, 0, NUM_PARTITIONS, 0)
    assert len(np.unique(shard.train.targets[shard.train_indices])) <= 4
    with pytest.raises(ValueError, match="partition-id"):
        load_client_data("digits", None, "iid", {}, NUM_PARTITIONS, NUM_PARTITIONS, 0)


# ============================================================================ train handler


def test_fedsgd_reply_is_w_minus_grad() -> None:
    state = initial_state()
    reply = app(make_message(state, {"server-round": 3}), make_context(partition_id=1))
    got = returned_state(reply)
    want, loss = expected_fedsgd(state, partition_id=1, server_round=3)
    assert list(got) == list(state)
    for key in state:
        assert got[key].dtype == state[key].dtype and got[key].shape == state[key].shape
        assert torch.allclose(got[key], want[key], atol=1e-6)
        # The server reads the gradient back as global - returned.
        assert torch.allclose(state[key] - got[key], state[key] - want[key], atol=1e-6)
    assert dict(reply.content["metrics"]) == pytest.approx({"num-examples": 50, "train-loss": loss})
    assert dict(reply.content["diag"]) == {"partition-id": 1}
    assert reply.metadata.reply_to_message_id.startswith("msg-")


def test_fedsgd_result_independent_of_process_history() -> None:
    """Ray reuses actors across rounds; a round's result must not depend on what ran before."""
    state = initial_state()
    fresh = returned_state(app(make_message(state, {"server-round": 2}), make_context(2)))
    clear_caches()
    for r in (1, 2, 5):
        app(make_message(state, {"server-round": r}), make_context(2))
    reused = returned_state(app(make_message(state, {"server-round": 2}), make_context(2)))
    assert all(torch.equal(fresh[k], reused[k]) for k in state)


def test_message_config_overrides_run_config() -> None:
    state = initial_state()
    ctx = make_context(0, run_config={"batch-size": 50})
    reply = app(make_message(state, {"server-round": 1, "batch-size": 8}), ctx)
    assert reply.content["metrics"]["num-examples"] == 8


def test_label_flip_hook_trains_on_flipped_labels() -> None:
    state = initial_state()
    flipped = returned_state(app(make_message(state, {"server-round": 1, "label-transform": "flip"}), make_context(3)))
    honest = returned_state(app(make_message(state, {"server-round": 1}), make_context(3)))
    want, _ = expected_fedsgd(state, partition_id=3, server_round=1, flip=True)
    assert all(torch.allclose(flipped[k], want[k], atol=1e-6) for k in state)
    assert not torch.allclose(flipped["fc2.bias"], honest["fc2.bias"])


def test_apply_label_transform() -> None:
    y = torch.tensor([0, 3, 9])
    assert apply_label_transform(y, "flip", 10).tolist() == [9, 6, 0]
    assert apply_label_transform(torch.tensor([0, 1, 2, 3]), "flip", 4).tolist() == [3, 2, 1, 0]
    assert apply_label_transform(y, None, 10) is y and apply_label_transform(y, "none", 10) is y
    with pytest.raises(ValueError, match="label-transform"):
        apply_label_transform(y, "shuffle", 10)


def test_fedavg_trains_locally_and_is_deterministic() -> None:
    state = initial_state()
    config = {"server-round": 1, "client-mode": "fedavg", "local-epochs": 3, "local-lr": 0.5, "batch-size": 32}
    reply = app(make_message(state, config), make_context(0))
    again = returned_state(app(make_message(state, config), make_context(0)))
    got = returned_state(reply)
    assert all(torch.equal(got[k], again[k]) for k in state)
    assert any(not torch.allclose(got[k], state[k]) for k in state)
    data = load_client_data("digits", None, "iid", {}, 0, NUM_PARTITIONS, 0)
    assert reply.content["metrics"]["num-examples"] == data.num_train
    before, after = get_task("digits").build_model(), get_task("digits").build_model()
    before.load_state_dict(state)
    after.load_state_dict(got)
    batches = list(ca.iter_batches(data.train, data.train_indices, 500))
    assert ca.evaluate(after, batches)[0] < ca.evaluate(before, batches)[0]


class TinyBN(nn.Module):
    """Digits model with BatchNorm and dropout: exercises buffers and train-mode randomness."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 16)
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(torch.flatten(x, 1))))))


def test_train_fedsgd_unit_step_and_bn_buffers() -> None:
    torch.manual_seed(0)
    model = TinyBN()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(20, 1, 8, 8), torch.randint(0, 10, (20,))
    ref = TinyBN()
    ref.load_state_dict(start)
    torch.manual_seed(5)
    grads = torch.autograd.grad(F.cross_entropy(ref(x), y), list(ref.parameters()))
    torch.manual_seed(5)  # same dropout mask
    train_fedsgd(model, (x, y))
    for (name, p), g in zip(model.named_parameters(), grads):
        assert torch.allclose(p.detach(), start[name] - g, atol=1e-6)
        assert p.grad is None
    after = model.state_dict()
    assert int(after["bn.num_batches_tracked"]) == 1
    assert not torch.allclose(after["bn.running_mean"], start["bn.running_mean"])


def test_handler_keeps_buffer_keys_and_dtypes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TASKS, "digits_bn", Task("digits_bn", 10, TinyBN, TASKS["digits"].loader, needs_data_dir=False))
    state = initial_state("digits_bn")
    reply = app(make_message(state, {"server-round": 1, "task": "digits_bn"}), make_context(0))
    got = returned_state(reply)
    assert list(got) == list(state)
    assert {k: (v.dtype, v.shape) for k, v in got.items()} == {k: (v.dtype, v.shape) for k, v in state.items()}
    assert got["bn.num_batches_tracked"].dtype == torch.int64 and int(got["bn.num_batches_tracked"]) == 1


# ============================================================================ evaluate handler


def test_evaluate_on_test_shares() -> None:
    state = initial_state()
    total = 0
    for pid in range(NUM_PARTITIONS):
        reply = app(make_message(state, {"server-round": 1}, MessageType.EVALUATE), make_context(pid))
        metrics = dict(reply.content["metrics"])
        assert set(metrics) == {"num-examples", "eval-loss", "eval-acc"}
        assert 0.0 <= metrics["eval-acc"] <= 1.0 and metrics["eval-loss"] > 0
        total += metrics["num-examples"]
    assert total == len(load_digits_dataset()[1])


# ============================================================================ errors


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (lambda msg, ctx: msg.content["config"].pop("server-round"), ValueError, "server-round"),
        (
            lambda msg, ctx: msg.content["config"].__setitem__("label-transform", "shuffle"),
            ValueError,
            "label-transform",
        ),
        (lambda msg, ctx: msg.content.pop("arrays"), ValueError, "arrays"),
        (lambda msg, ctx: msg.content["arrays"].pop("fc2.bias"), RuntimeError, "fc2.bias"),
        (lambda msg, ctx: ctx.node_config.pop("partition-id"), ValueError, "node-config"),
        (lambda msg, ctx: ctx.node_config.__setitem__("partition-id", 9), ValueError, "partition-id"),
        (lambda msg, ctx: ctx.run_config.__setitem__("task", "svhn"), ValueError, "Unknown task"),
    ],
)
def test_bad_input_raises_instead_of_training(mutate, error: type[Exception], match: str) -> None:
    msg, ctx = make_message(initial_state(), {"server-round": 1}), make_context(0)
    mutate(msg, ctx)
    with pytest.raises(error, match=match):
        app(msg, ctx)


# ============================================================================ real Flower simulation


RAY_PROCESS_PATTERN = r"raylet|gcs_server|ray::|ray/_private|ray/dashboard|ray/autoscaler"


def ray_processes_marked(marker: str) -> list[str]:
    """Ray processes (found with pgrep) whose environment carries ``marker``.

    Other engineers' simulations may run Ray on the same machine at the same time; only the
    processes started under this test's marker count.  Orphaned workers are re-parented to
    init, so a parent-child walk alone would miss them.
    """
    out = subprocess.run(["pgrep", "-f", RAY_PROCESS_PATTERN], capture_output=True, text=True, check=False).stdout
    found = []
    for pid in out.split():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()[:80]
        except OSError:  # exited meanwhile, or not ours to read
            continue
        if marker.encode() in environ.split(b"\0"):
            found.append(f"{pid}:{cmdline!r}")
    return found


@pytest.mark.slow
def test_run_simulation_fedavg_digits() -> None:
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    from .conftest import assert_no_ray_processes, simulation_env

    num_nodes, results = 5, {}
    marker = f"SIGNGUARD_TEST_MARKER={uuid.uuid4().hex}"
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(min_available_nodes=num_nodes, min_train_nodes=num_nodes, min_evaluate_nodes=num_nodes)
        results["result"] = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(initial_state()),
            num_rounds=2,
            # Message overrides: the run config of run_simulation is empty, so this is also how
            # the task and client mode reach the clients here.
            train_config=ConfigRecord({"task": "digits", "client-mode": "fedavg", "local-epochs": 2,
                                       "local-lr": 0.2, "batch-size": 16}),
            evaluate_config=ConfigRecord({"task": "digits"}),
        )
        results["ray-during-run"] = ray_processes_marked(marker)  # the marker check sees our Ray

    key, value = marker.split("=")
    with simulation_env(), pytest.MonkeyPatch.context() as mp:
        mp.setenv(key, value)  # inherited by every Ray process this run starts
        run_simulation(
            server_app=server_app,
            client_app=app,
            num_supernodes=num_nodes,
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2}},
        )
    assert_no_ray_processes()
    deadline = time.monotonic() + 20.0
    while (left := ray_processes_marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"Ray processes left running: {left}"

    assert results["ray-during-run"], "marker not found on the run's Ray processes"
    result = results["result"]
    train_metrics = result.train_metrics_clientapp
    eval_metrics = result.evaluate_metrics_clientapp
    assert sorted(train_metrics) == [1, 2] and sorted(eval_metrics) == [1, 2]
    assert "train-loss" in train_metrics[2]
    assert eval_metrics[2]["eval-acc"] > eval_metrics[1]["eval-acc"] - 0.05
    assert eval_metrics[2]["eval-acc"] > 0.5
    final = result.arrays.to_torch_state_dict()
    assert list(final) == list(initial_state())


def test_state_dict_on_cpu_is_the_state_dict() -> None:
    from clients.client_app import _gather_to_cpu, state_dict_on_cpu
    from clients.tasks import get_task

    model = get_task("cifar10").build_model()
    if torch.cuda.is_available():
        model = model.cuda()
    expected = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    for got in (state_dict_on_cpu(model), _gather_to_cpu(model.state_dict())):  # both paths
        assert list(got) == list(expected)
        for key, tensor in expected.items():
            assert got[key].device.type == "cpu" and got[key].dtype == tensor.dtype
            assert torch.equal(got[key], tensor), key
