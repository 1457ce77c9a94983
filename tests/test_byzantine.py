"""Byzantine client mod (clients/byzantine.py) around a fake honest handler with a known update."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.attacks import ATTACKS, make_generator, mean_std, register_attack
from clients.byzantine import (
    ADVERSARY_DIRECTIVE_KEY,
    ByzantineClient,
    byzantine_mod,
    byzantine_partitions,
    is_byzantine_node,
    wrap_client_app,
)

SHAPES = {"fc.weight": (3, 4), "fc.bias": (3,)}
GLOBAL = {
    "fc.weight": np.arange(12, dtype=np.float32).reshape(3, 4) / 10,
    "fc.bias": np.array([0.5, -0.5, 0.0], dtype=np.float32),
    "bn.running_mean": np.zeros(3, dtype=np.float32),
    "bn.num_batches_tracked": np.array(7, dtype=np.int64),
}
UPDATE_KEYS = ["fc.weight", "fc.bias"]


def record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.array(v, order="C")) for k, v in arrays.items()})  # keeps 0-d shapes


def message(message_type: str = "train", server_round: int = 3, **config) -> Message:
    content = RecordDict({"arrays": record(GLOBAL), "config": ConfigRecord({"server-round": server_round, **config})})
    meta = Metadata(run_id=1, message_id="instr-1", src_node_id=0, dst_node_id=11, reply_to_message_id="",
                    group_id=str(server_round), created_at=time.time(), ttl=600.0, message_type=message_type)
    return Message(content, metadata=meta)


def context(partition_id: int = 2, num_partitions: int = 6, node: dict | None = None, **run) -> Context:
    node_config = {"partition-id": partition_id, "num-partitions": num_partitions, **(node or {})}
    return Context(run_id=1, node_id=11, node_config=node_config, state=RecordDict(), run_config=dict(run))


def known_delta(server_round: int, partition_id: int) -> np.ndarray:
    """The fake honest update: depends on round and partition, so every pass differs."""
    rng = np.random.default_rng([server_round, partition_id])
    return rng.normal(size=15).astype(np.float32)


def vector(arrays: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([arrays[k].astype(np.float64).reshape(-1) for k in UPDATE_KEYS])


class FakeHonest:
    """Honest handler: reply = global + known_delta(round, pid); buffers changed; records calls."""

    def __init__(self) -> None:
        self.calls: list[Message] = []

    def __call__(self, msg: Message, ctx: Context) -> Message:
        self.calls.append(msg)
        if msg.metadata.message_type != "train":
            return Message(RecordDict({"metrics": MetricRecord({"eval-acc": 0.5})}), reply_to=msg)
        r = int(msg.content["config"]["server-round"])
        delta = known_delta(r, int(ctx.node_config["partition-id"]))
        sent = {k: v.numpy() for k, v in msg.content["arrays"].items()}
        local = dict(sent)
        local["fc.weight"] = sent["fc.weight"] + delta[:12].reshape(3, 4)
        local["fc.bias"] = sent["fc.bias"] + delta[12:]
        local["bn.running_mean"] = np.full(3, 0.25, dtype=np.float32)  # the honest client's buffers
        local["bn.num_batches_tracked"] = np.array(8, dtype=np.int64)
        return Message(RecordDict({"arrays": record(local),
                                   "metrics": MetricRecord({"num-examples": 50, "train-loss": 1.25}),
                                   "diag": ConfigRecord({"partition-id": int(ctx.node_config["partition-id"])})}),
                       reply_to=msg)


def reply_update(reply: Message) -> np.ndarray:
    got = {k: v.numpy() for k, v in reply.content["arrays"].items()}
    return vector(got) - vector(GLOBAL)


def assert_rest_preserved(reply: Message, msg: Message) -> None:
    got = {k: v.numpy() for k, v in reply.content["arrays"].items()}
    assert list(got) == list(GLOBAL)
    for k, v in GLOBAL.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
    assert np.array_equal(got["bn.running_mean"], np.full(3, 0.25, dtype=np.float32))
    assert int(got["bn.num_batches_tracked"]) == 8
    assert dict(reply.content["metrics"]) == {"num-examples": 50, "train-loss": 1.25}
    assert dict(reply.content["diag"]) == {"partition-id": 2}
    assert reply.metadata.reply_to_message_id == msg.metadata.message_id
    assert reply.metadata.dst_node_id == msg.metadata.src_node_id
    assert reply.metadata.message_type == "train"


# ----------------------------------------------------------------------- client-side attacks


def test_sign_flip_reply():
    msg, honest = message(), FakeHonest()
    reply = ByzantineClient("sign_flip")(msg, context(), honest)
    assert np.allclose(reply_update(reply), -known_delta(3, 2), atol=1e-6)
    assert_rest_preserved(reply, msg)


@pytest.mark.parametrize("r", [3.0, 100.0])
def test_reverse_scaling_reply(r):
    reply = ByzantineClient("reverse_scaling", scale=r)(message(), context(), FakeHonest())
    assert np.allclose(reply_update(reply), -r * known_delta(3, 2), rtol=1e-5, atol=1e-5)


def test_noise_reply_is_seeded_and_has_sigma():
    msg = message()
    a = reply_update(ByzantineClient("noise", seed=4, sigma=0.5)(msg, context(), FakeHonest()))
    b = reply_update(ByzantineClient("noise", seed=4, sigma=0.5)(msg, context(), FakeHonest()))
    c = reply_update(ByzantineClient("noise", seed=4, sigma=0.5)(message(server_round=4), context(), FakeHonest()))
    assert np.array_equal(a, b)
    # gradient domain: g' = g + n with g = −Δ, so Δ' = Δ − n, n from (seed, partition, round)
    n = 0.5 * torch.randn(15, generator=make_generator(4, 2, 3)).numpy()
    assert np.allclose(a, known_delta(3, 2) - n, atol=1e-6)
    assert not np.allclose(c - known_delta(4, 2), a - known_delta(3, 2))


def test_random_reply_ignores_honest_update():
    reply = ByzantineClient("random", seed=1, sigma=0.5)(message(), context(), FakeHonest())
    n = 0.5 * torch.randn(15, generator=make_generator(1, 2, 3)).numpy()
    assert np.allclose(reply_update(reply), -n, atol=1e-6)
    assert_rest_preserved(reply, message())


def test_label_flip_sets_transform_on_a_copy():
    msg, honest = message(lr=0.1), FakeHonest()
    reply = ByzantineClient("label_flip")(msg, context(), honest)
    (seen,) = honest.calls
    assert seen is not msg and seen.content["config"]["label-transform"] == "flip"
    assert seen.content["config"]["lr"] == 0.1 and seen.content["config"]["server-round"] == 3
    assert "label-transform" not in msg.content["config"]  # the incoming message is untouched
    assert np.allclose(reply_update(reply), known_delta(3, 2), atol=1e-6)
    assert reply.metadata.reply_to_message_id == msg.metadata.message_id


def test_lie_local_uses_k_own_updates():
    msg, honest = message(server_round=3), FakeHonest()
    reply = ByzantineClient("lie_local", z=0.3, lie_batches=4)(msg, context(), honest)
    rounds = [int(m.content["config"]["server-round"]) for m in honest.calls]
    assert rounds == [9, 10, 11, 12]  # virtual rounds (r − 1)·k + j + 1: fresh batches
    g = -torch.tensor(np.stack([known_delta(r, 2) for r in rounds]), dtype=torch.float64)
    mu, sigma = mean_std(g)
    assert np.allclose(reply_update(reply), -(mu - 0.3 * sigma).numpy(), atol=1e-6)
    assert_rest_preserved(reply, msg)


def test_lie_local_needs_numeric_z():
    with pytest.raises(ValueError, match="z"):
        ByzantineClient("lie_local", z="max")


@pytest.fixture
def toy_attack():
    """A client-side attack (−2·g) registered for one test, and removed from the registry after."""
    register_attack("toy_double_flip", kind="client", summary="−2·g")(lambda g, params, generator: -2 * g)
    yield "toy_double_flip"
    del ATTACKS["toy_double_flip"]


def test_a_registered_attack_runs_with_no_other_edit(toy_attack):
    msg = message()
    reply = ByzantineClient(toy_attack)(msg, context(), FakeHonest())
    assert np.allclose(reply_update(reply), -2 * known_delta(3, 2), atol=1e-6)
    assert_rest_preserved(reply, msg)
    reply = byzantine_mod(msg, context(2, node={"byzantine": True, "attack": toy_attack}), FakeHonest())
    assert np.allclose(reply_update(reply), -2 * known_delta(3, 2), atol=1e-6)


@pytest.mark.parametrize("attack", ["none", "lie", "byzmean", "min_max", "min_sum"])
def test_colluding_and_none_are_honest_on_the_client(attack):
    msg, honest = message(), FakeHonest()
    reply = ByzantineClient(attack)(msg, context(), honest)
    assert honest.calls == [msg]
    assert np.allclose(reply_update(reply), known_delta(3, 2), atol=1e-6)


def test_non_train_messages_pass_through():
    honest = FakeHonest()
    msg = message("evaluate")
    reply = ByzantineClient("sign_flip")(msg, context(), honest)
    assert honest.calls == [msg] and dict(reply.content["metrics"]) == {"eval-acc": 0.5}


def test_error_reply_passes_through():
    from flwr.app import Error

    def failing(msg, ctx):
        return Message(Error(code=3, reason="boom"), reply_to=msg)

    reply = ByzantineClient("sign_flip")(message(), context(), failing)
    assert reply.has_error() and reply.error.reason == "boom"


def test_bad_attack_or_parameter():
    with pytest.raises(ValueError, match="attack"):
        ByzantineClient("teleport")
    with pytest.raises(ValueError, match="sigma"):
        ByzantineClient("noise", sigma=-1)
    with pytest.raises(ValueError, match="colour"):
        ByzantineClient("noise", colour=1)


# ------------------------------------------------------------------------------ time-varying


def test_time_varying_follows_adversary_directive():
    honest = FakeHonest()
    ByzantineClient("time_varying", tv_attacks=("sign_flip",))(
        message(**{ADVERSARY_DIRECTIVE_KEY: "label_flip"}), context(), honest)
    assert honest.calls[-1].content["config"]["label-transform"] == "flip"
    reply = ByzantineClient("time_varying", tv_attacks=("sign_flip",))(
        message(**{ADVERSARY_DIRECTIVE_KEY: "none"}), context(), honest)
    assert np.allclose(reply_update(reply), known_delta(3, 2), atol=1e-6)  # adversary in charge


def test_time_varying_without_adversary_draws_itself():
    flip = ByzantineClient("time_varying", tv_attacks=("sign_flip",))(message(), context(), FakeHonest())
    assert np.allclose(reply_update(flip), -known_delta(3, 2), atol=1e-6)
    collude = ByzantineClient("time_varying", tv_attacks=("lie",))(message(), context(), FakeHonest())
    assert np.allclose(reply_update(collude), known_delta(3, 2), atol=1e-6)


# ----------------------------------------------------------------------------- byzantine_mod


def test_byzantine_partitions_deterministic():
    a = byzantine_partitions(50, 10, seed=3)
    assert a == byzantine_partitions(50, 10, seed=3) == sorted(set(a))
    assert len(a) == 10 and all(0 <= p < 50 for p in a)
    assert any(byzantine_partitions(50, 10, seed=s) != a for s in range(4, 8))
    assert byzantine_partitions(50, 10, seed=3, placement="first") == list(range(10))
    assert byzantine_partitions(5, 0) == [] and byzantine_partitions(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="num_byzantine"):
        byzantine_partitions(5, 6)
    with pytest.raises(ValueError, match="placement"):
        byzantine_partitions(5, 1, placement="last")


def test_mod_simulation_identity_from_run_config():
    byz = byzantine_partitions(6, 2, seed=9)
    run = {"attack": "sign_flip", "num-byzantine": 2, "seed": 9}
    for pid in range(6):
        honest = FakeHonest()
        reply = byzantine_mod(message(), context(pid, **run), honest)
        sign = -1.0 if pid in byz else 1.0
        assert np.allclose(reply_update(reply), sign * known_delta(3, pid), atol=1e-6)
    assert sum(is_byzantine_node(context(p, **run)) for p in range(6)) == 2
    frac = {"attack": "sign_flip", "byzantine-fraction": 0.5, "seed": 9}
    assert sum(is_byzantine_node(context(p, **frac)) for p in range(6)) == 3


def test_mod_honest_node_reply_is_untouched():
    honest = FakeHonest()
    out = {}

    def spy(msg, ctx):
        out["reply"] = honest(msg, ctx)
        return out["reply"]

    reply = byzantine_mod(message(), context(0, attack="sign_flip", **{"num-byzantine": 0}), spy)
    assert reply is out["reply"]


def test_mod_node_config_wins():
    run = {"attack": "sign_flip", "num-byzantine": 6, "seed": 0}  # every partition Byzantine by run config
    reply = byzantine_mod(message(), context(2, node={"byzantine": False}, **run), FakeHonest())
    assert np.allclose(reply_update(reply), known_delta(3, 2), atol=1e-6)
    node = {"byzantine": "true", "attack": "reverse_scaling", "attack-scale": 2.0}
    reply = byzantine_mod(message(), context(2, node=node, **run), FakeHonest())
    assert np.allclose(reply_update(reply), -2.0 * known_delta(3, 2), atol=1e-5)


def test_mod_reads_packed_attack_params():
    run = {"attack": "noise", "num-byzantine": 6, "seed": 2, "attack-params": "sigma=0.0"}
    reply = byzantine_mod(message(), context(1, **run), FakeHonest())
    assert np.allclose(reply_update(reply), known_delta(3, 1), atol=1e-6)


def test_mod_reads_the_train_config_when_the_run_config_is_empty():
    # run_simulation gives ClientApps an empty run config; the ServerApp forwards its keys.
    byz = byzantine_partitions(6, 2, seed=9)
    forwarded = {"attack": "sign_flip", "num-byzantine": 2, "seed": 9}
    for pid in range(6):
        reply = byzantine_mod(message(**forwarded), context(pid), FakeHonest())
        sign = -1.0 if pid in byz else 1.0
        assert np.allclose(reply_update(reply), sign * known_delta(3, pid), atol=1e-6)


def test_mod_passes_evaluate_through():
    honest = FakeHonest()
    msg = message("evaluate")
    byzantine_mod(msg, context(2, node={"byzantine": True, "attack": "sign_flip"}), honest)
    assert honest.calls == [msg]


def test_wrap_client_app():
    inner = ClientApp()
    fake = FakeHonest()
    inner.train()(fake)
    inner.evaluate()(fake)
    app = wrap_client_app(inner)
    node = {"byzantine": True, "attack": "sign_flip"}
    reply = app(message=message(), context=context(2, node=node))
    assert np.allclose(reply_update(reply), -known_delta(3, 2), atol=1e-6)
    ev = app(message=message("evaluate"), context=context(2, node=node))
    assert dict(ev.content["metrics"]) == {"eval-acc": 0.5}
    honest = app(message=message(), context=context(2, node={"byzantine": False}))
    assert np.allclose(reply_update(honest), known_delta(3, 2), atol=1e-6)
