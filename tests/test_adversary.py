"""Omniscient adversary (simulations/engine/adversary.py) on a fake Grid, plus Ray integration runs."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from collections.abc import Iterable

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, Metadata, MetricRecord, RecordDict
from flwr.serverapp import Grid

from clients.attacks import ATTACKS, AttackResult, byzmean, knowledge_rows, lie, lie_z_max, min_max, register_attack
from clients.byzantine import ADVERSARY_DIRECTIVE_KEY
from simulations.engine import OmniscientAdversary

D = 7
KEYS = ["layer.weight", "layer.bias"]
NODE_OF = {pid: 1000 + 17 * pid for pid in range(6)}  # partition id -> node id
BYZ = [1, 4]
_ids = itertools.count()


def global_arrays() -> dict[str, np.ndarray]:
    return {
        "layer.weight": np.linspace(-1, 1, 5, dtype=np.float32).reshape(1, 5),
        "layer.bias": np.array([0.1, 0.2], dtype=np.float32),
        "bn.running_var": np.ones(2, dtype=np.float32),
        "bn.num_batches_tracked": np.array(3, dtype=np.int64),
    }


def to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.array(v, order="C")) for k, v in arrays.items()})


def delta_of(pid: int, server_round: int) -> np.ndarray:
    return np.random.default_rng([pid, server_round]).normal(size=D).astype(np.float32)


def instructions(server_round: int = 1, message_type: str = "train") -> list[Message]:
    # One shared RecordDict, as FedAvg.configure_train does.
    content = RecordDict({"arrays": to_record(global_arrays()),
                          "config": ConfigRecord({"server-round": server_round})})
    return [Message(content, metadata=Metadata(
        run_id=1, message_id=f"msg-{next(_ids)}", src_node_id=0, dst_node_id=node, reply_to_message_id="",
        group_id=str(server_round), created_at=time.time(), ttl=600.0, message_type=message_type))
        for node in NODE_OF.values()]


def honest_reply(msg: Message, pid: int) -> Message:
    r = int(msg.content["config"]["server-round"])
    sent = {k: v.numpy() for k, v in msg.content["arrays"].items()}
    local = dict(sent)
    delta = delta_of(pid, r)
    local["layer.weight"] = sent["layer.weight"] + delta[:5].reshape(1, 5)
    local["layer.bias"] = sent["layer.bias"] + delta[5:]
    local["bn.running_var"] = np.full(2, 2.0 + pid, dtype=np.float32)
    return Message(RecordDict({"arrays": to_record(local),
                               "metrics": MetricRecord({"num-examples": 10 + pid, "train-loss": 0.5}),
                               "diag": ConfigRecord({"partition-id": pid})}), reply_to=msg)


class FakeGrid(Grid):
    """Answers each message with ``handler(msg, pid)``; records what it was sent."""

    def __init__(self, handler=honest_reply, match_ids: bool = True) -> None:
        self.handler = handler
        self.match_ids = match_ids
        self.sent: list[list[Message]] = []
        self.pid_of = {node: pid for pid, node in NODE_OF.items()}

    def set_run(self, run):  # pragma: no cover - delegation only
        self._run = run

    @property
    def run(self):  # pragma: no cover
        return None

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # pragma: no cover
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(NODE_OF.values())

    def push_messages(self, messages):  # pragma: no cover
        raise NotImplementedError

    def pull_messages(self, message_ids):  # pragma: no cover
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.sent.append(messages)
        replies = [self.handler(m, self.pid_of[m.metadata.dst_node_id]) for m in messages]
        if not self.match_ids:  # like an in-process engine: replies to copies with blank ids
            for r in replies:
                r.metadata.__dict__["_reply_to_message_id"] = ""
        return replies


def updates(replies: list[Message]) -> dict[int, np.ndarray]:
    g = global_arrays()
    base = np.concatenate([g[k].reshape(-1) for k in KEYS]).astype(np.float64)
    out = {}
    for r in replies:
        if r.has_error():
            continue
        a = {k: v.numpy() for k, v in r.content["arrays"].items()}
        out[int(r.content["diag"]["partition-id"])] = np.concatenate([a[k].reshape(-1) for k in KEYS]) - base
    return out


def honest_g(server_round: int = 1) -> torch.Tensor:
    """Honest vectors in the attack (gradient) domain, rows = partition ids 0..5."""
    return -torch.tensor(np.stack([delta_of(p, server_round) for p in range(6)]), dtype=torch.float64)


def run_round(adversary: OmniscientAdversary, server_round: int = 1) -> list[Message]:
    return list(adversary.send_and_receive(instructions(server_round)))


# ------------------------------------------------------------------------------------ LIE


@pytest.mark.parametrize("match_ids", [True, False])
def test_lie_rewrites_exactly_the_byzantine_replies(match_ids):
    grid = FakeGrid(match_ids=match_ids)
    adv = OmniscientAdversary(grid, attack="lie", byzantine_partitions=BYZ, z=0.3)
    replies = run_round(adv)
    got = updates(replies)
    expected = -(lie(honest_g(), 0.3)).numpy()  # back to the update domain
    for pid in range(6):
        if pid in BYZ:
            assert np.allclose(got[pid], expected, atol=1e-6)
        else:
            assert np.allclose(got[pid], delta_of(pid, 1), atol=1e-6)
    by_pid = {int(r.content["diag"]["partition-id"]): r for r in replies}
    for pid in BYZ:  # metrics, diag, buffers and reply metadata preserved
        r = by_pid[pid]
        assert dict(r.content["metrics"]) == {"num-examples": 10 + pid, "train-loss": 0.5}
        arrays = {k: v.numpy() for k, v in r.content["arrays"].items()}
        assert list(arrays) == list(global_arrays())
        assert np.array_equal(arrays["bn.running_var"], np.full(2, 2.0 + pid, dtype=np.float32))
        assert arrays["bn.num_batches_tracked"].shape == () and int(arrays["bn.num_batches_tracked"]) == 3
        assert r.metadata.src_node_id == NODE_OF[pid]
    (entry,) = adv.history
    assert entry["round"] == 1 and entry["attack"] == "lie" and entry["applied_by"] == "adversary"
    assert entry["byzantine_partition_ids"] == BYZ
    assert entry["byzantine_node_ids"] == sorted(NODE_OF[p] for p in BYZ)
    assert entry["rewritten_node_ids"] == sorted(NODE_OF[p] for p in BYZ)
    assert entry["node_partitions"] == {n: p for p, n in NODE_OF.items()}
    assert entry["z"] == 0.3 and entry["knowledge"] == "omniscient"


def test_honest_replies_are_the_same_objects():
    seen = {}

    def handler(msg, pid):
        seen[pid] = honest_reply(msg, pid)
        return seen[pid]

    replies = run_round(OmniscientAdversary(FakeGrid(handler), attack="lie", byzantine_partitions=BYZ))
    for r in replies:
        pid = int(r.content["diag"]["partition-id"])
        assert (r is seen[pid]) == (pid not in BYZ)


def test_lie_update_domain_and_z_max():
    adv = OmniscientAdversary(FakeGrid(), attack="lie", byzantine_partitions=BYZ, z="max", domain="update")
    got = updates(run_round(adv))
    z = lie_z_max(6, 2)
    assert np.allclose(got[1], lie(-honest_g(), z).numpy(), atol=1e-6)  # μ_Δ − z·σ_Δ
    assert adv.history[0]["z"] == pytest.approx(z)


@pytest.mark.parametrize("knowledge", ["benign", "colluders"])
def test_lie_knowledge(knowledge):
    adv = OmniscientAdversary(FakeGrid(), attack="lie", byzantine_partitions=BYZ, knowledge=knowledge)
    got = updates(run_round(adv))
    rows = knowledge_rows(honest_g(), BYZ, knowledge)
    assert np.allclose(got[4], -lie(rows, 0.3).numpy(), atol=1e-6)
    assert adv.history[0]["knowledge"] == knowledge


@pytest.mark.parametrize("attack", ["lie", "byzmean", "min_max", "noise"])
def test_attack_matrix_on_another_device_gives_the_same_replies(attack):
    """device= moves the round's matrix (and the attack math) there; replies stay CPU arrays.

    Checked on "cpu" given explicitly everywhere, and on "cuda" where a GPU exists.
    """
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    reference = updates(run_round(OmniscientAdversary(FakeGrid(), attack=attack, byzantine_partitions=BYZ)))
    for device in devices:
        adv = OmniscientAdversary(FakeGrid(), attack=attack, byzantine_partitions=BYZ, device=device)
        got = updates(run_round(adv))
        assert adv.device == torch.device(device)
        for pid in range(6):
            assert np.allclose(got[pid], reference[pid], atol=1e-5), (device, pid)


# ------------------------------------------------------------------------ ByzMean, Min-Max


def test_byzmean_mean_of_submissions_is_target():
    adv = OmniscientAdversary(FakeGrid(), attack="byzmean", byzantine_partitions=BYZ, z=0.3)
    got = updates(run_round(adv))
    submitted_mean = -np.mean([got[p] for p in range(6)], axis=0)  # gradient domain
    assert np.allclose(submitted_mean, lie(honest_g(), 0.3).numpy(), atol=1e-5)
    expected = -byzmean(honest_g(), BYZ, z=0.3).numpy()
    assert np.allclose(got[1], expected[0], atol=1e-5) and np.allclose(got[4], expected[1], atol=1e-5)


def test_min_max_records_gamma_and_rewrites():
    adv = OmniscientAdversary(FakeGrid(), attack="min_max", byzantine_partitions=BYZ)
    got = updates(run_round(adv))
    rows, gamma = min_max(honest_g(), BYZ)
    assert adv.history[0]["gamma"] == pytest.approx(gamma, rel=1e-5)
    assert np.allclose(got[1], -rows[0].numpy(), atol=1e-5) and np.allclose(got[4], got[1])


def test_min_sum_records_gamma():
    adv = OmniscientAdversary(FakeGrid(), attack="min_sum", byzantine_partitions=BYZ, perturbation="sign")
    run_round(adv)
    assert adv.history[0]["gamma"] > 0 and adv.history[0]["applied_by"] == "adversary"


# ------------------------------------------------------------------ what passes through


def test_error_and_malformed_replies_pass_through():
    def handler(msg, pid):
        if pid == 0:
            return Message(Error(code=2, reason="crashed"), reply_to=msg)
        if pid == 1:  # Byzantine but malformed: a wrong shape cannot be attacked
            r = honest_reply(msg, pid)
            arrays = {k: v.numpy() for k, v in r.content["arrays"].items()}
            arrays["layer.bias"] = np.zeros(3, dtype=np.float32)
            return Message(RecordDict({"arrays": to_record(arrays), "diag": ConfigRecord({"partition-id": 1})}),
                           reply_to=msg)
        if pid == 2:
            return Message(RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)
        return honest_reply(msg, pid)

    grid = FakeGrid(handler)
    adv = OmniscientAdversary(grid, attack="lie", byzantine_partitions=BYZ)
    replies = run_round(adv)
    assert replies[0].has_error() and replies[0].error.reason == "crashed"
    assert replies[1].content["arrays"]["layer.bias"].numpy().shape == (3,)
    assert "arrays" not in replies[2].content
    entry = adv.history[0]
    assert entry["num_valid"] == 3 and entry["num_unparsed"] == 2 and entry["num_replies"] == 6
    assert entry["byzantine_partition_ids"] == [4]
    got = updates([replies[3], replies[4], replies[5]])
    rows = honest_g()[[3, 4, 5]]
    assert np.allclose(got[4], -lie(rows, 0.3).numpy(), atol=1e-6)
    assert np.allclose(got[3], delta_of(3, 1), atol=1e-6)


def test_evaluate_round_passes_through():
    grid = FakeGrid(lambda msg, pid: Message(RecordDict({"metrics": MetricRecord({"eval-acc": 0.1})}), reply_to=msg))
    adv = OmniscientAdversary(grid, attack="lie", byzantine_partitions=BYZ)
    msgs = instructions(message_type="evaluate")
    replies = list(adv.send_and_receive(msgs))
    assert len(replies) == 6 and adv.history == []
    assert grid.sent[0] == msgs


def test_static_client_side_attack_is_only_recorded():
    adv = OmniscientAdversary(FakeGrid(), attack="sign_flip", byzantine_partitions=BYZ)
    got = updates(run_round(adv))
    assert all(np.allclose(got[p], delta_of(p, 1), atol=1e-6) for p in range(6))
    assert adv.history[0]["applied_by"] == "clients" and adv.history[0]["byzantine_partition_ids"] == BYZ


def test_attack_failure_is_recorded_not_raised():
    adv = OmniscientAdversary(FakeGrid(), attack="lie", byzantine_partitions=[3], knowledge="colluders")
    got = updates(run_round(adv))
    assert np.allclose(got[3], delta_of(3, 1), atol=1e-6)
    assert adv.history[0]["applied_by"] == "none" and "row" in adv.history[0]["error"]


def test_constructor_validation():
    with pytest.raises(ValueError, match="attack"):
        OmniscientAdversary(FakeGrid(), attack="teleport")
    with pytest.raises(ValueError, match="knowledge"):
        OmniscientAdversary(FakeGrid(), attack="lie", knowledge="all")
    with pytest.raises(ValueError, match="byzantine_partitions"):
        OmniscientAdversary(FakeGrid(), attack="lie", byzantine_partitions=[1, 1])
    with pytest.raises(ValueError, match="perturbation"):
        OmniscientAdversary(FakeGrid(), attack="min_max", perturbation="up")


def test_from_config_matches_the_client_side_identity():
    from clients.byzantine import byzantine_partitions

    config = {"attack": "min_max", "seed": 4, "num-clients": 6, "num-byzantine": 2,
              "knowledge": "benign", "attack-params": "perturbation='unit',search='reference'"}
    adv = OmniscientAdversary.from_config(FakeGrid(), config)
    assert adv.byzantine_partitions == frozenset(byzantine_partitions(6, 2, 4))
    assert adv.attack == "min_max" and adv.seed == 4
    assert (adv.params.knowledge, adv.params.perturbation, adv.params.search) == ("benign", "unit", "reference")


# ------------------------------------------------------------------------------ time-varying


def test_time_varying_delegates_label_flip_to_clients():
    grid = FakeGrid()
    adv = OmniscientAdversary(grid, attack="time_varying", byzantine_partitions=BYZ, tv_attacks=("label_flip",))
    got = updates(run_round(adv))
    assert all(m.content["config"][ADVERSARY_DIRECTIVE_KEY] == "label_flip" for m in grid.sent[0])
    assert all(m.content["config"]["server-round"] == 1 for m in grid.sent[0])
    assert all(np.allclose(got[p], delta_of(p, 1), atol=1e-6) for p in range(6))
    assert adv.history[0]["attack"] == "label_flip" and adv.history[0]["applied_by"] == "clients"


def test_time_varying_applies_client_side_draws_centrally():
    grid = FakeGrid()
    adv = OmniscientAdversary(grid, attack="time_varying", byzantine_partitions=BYZ, tv_attacks=("sign_flip",))
    got = updates(run_round(adv))
    assert all(m.content["config"][ADVERSARY_DIRECTIVE_KEY] == "none" for m in grid.sent[0])
    for p in range(6):
        assert np.allclose(got[p], (-1.0 if p in BYZ else 1.0) * delta_of(p, 1), atol=1e-6)
    assert adv.history[0]["applied_by"] == "adversary"


@pytest.fixture
def toy_attacks():
    """A colluding and a client-side attack registered for one test, and removed after it."""
    register_attack("toy_mean", kind="colluding", summary="the mean of the known updates")(
        lambda honest, byzantine, params: AttackResult(honest.mean(dim=0).expand(len(byzantine), -1).clone(), {"z": 0.0}))
    register_attack("toy_double_flip", kind="client", summary="−2·g")(lambda g, params, generator: -2 * g)
    yield
    del ATTACKS["toy_mean"], ATTACKS["toy_double_flip"]


def test_registered_attacks_run_with_no_other_edit(toy_attacks):
    adv = OmniscientAdversary(FakeGrid(), attack="toy_mean", byzantine_partitions=BYZ)
    got = updates(run_round(adv))
    mean = np.mean([delta_of(p, 1) for p in range(6)], axis=0)
    for p in range(6):
        assert np.allclose(got[p], mean if p in BYZ else delta_of(p, 1), atol=1e-6)
    assert adv.history[0]["applied_by"] == "adversary" and adv.history[0]["z"] == 0.0
    # A client-side attack drawn by a time-varying schedule runs centrally, row by row.
    adv = OmniscientAdversary(FakeGrid(), attack="time_varying", byzantine_partitions=BYZ,
                              tv_attacks=("toy_double_flip",))
    got = updates(run_round(adv))
    for p in range(6):
        assert np.allclose(got[p], (-2.0 if p in BYZ else 1.0) * delta_of(p, 1), atol=1e-6)


@pytest.fixture
def recording_attack():
    """A colluding attack that records the honest matrix it is given, in the order given."""
    seen: list[torch.Tensor] = []

    def attack(honest, byzantine, params):
        seen.append(honest.clone())
        return AttackResult(honest.mean(dim=0).expand(len(byzantine), -1).clone(), {})

    register_attack("toy_recording", kind="colluding", summary="records its input")(attack)
    yield seen
    del ATTACKS["toy_recording"]


class ShuffledGrid(FakeGrid):
    """Replies in another order than the messages were sent, as a real engine may."""

    def __init__(self, order: list[int]) -> None:
        super().__init__()
        self.order = order

    def send_and_receive(self, messages, *, timeout=None):
        replies = list(super().send_and_receive(messages, timeout=timeout))
        return [replies[i] for i in self.order]


def test_the_attack_sees_the_rows_in_partition_order_whatever_the_reply_order(recording_attack):
    # Means and spreads over the honest rows are float sums: summed in reply order they changed
    # in the last bits from run to run (node ids and arrival order differ), so a rerun of a
    # colluding-attack experiment did not repeat it.  The adversary sorts by partition id.
    outputs = []
    for order in ([0, 1, 2, 3, 4, 5], [5, 3, 0, 4, 1, 2], [2, 4, 5, 1, 0, 3]):
        replies = list(OmniscientAdversary(ShuffledGrid(order), attack="toy_recording", byzantine_partitions=BYZ)
                       .send_and_receive(instructions(1)))
        assert [int(r.content["diag"]["partition-id"]) for r in replies] == order  # reply order kept
        outputs.append(updates(replies))
    first, *rest = recording_attack
    assert torch.allclose(first.double(), honest_g(), atol=1e-6)  # rows = partitions 0..5
    assert all(torch.equal(first, other) for other in rest)
    for other in outputs[1:]:
        assert all(np.array_equal(outputs[0][p], other[p]) for p in range(6))


def test_time_varying_schedule_per_round_matches_history():
    adv = OmniscientAdversary(FakeGrid(), attack="time_varying", byzantine_partitions=BYZ, seed=3,
                              tv_period="round")
    for r in range(1, 13):
        run_round(adv, r)
    attacks = [e["attack"] for e in adv.history]
    assert attacks == [adv.schedule.attack_for_round(r) for r in range(1, 13)]
    assert len(set(attacks)) > 2
    for e in adv.history:
        expected = ("none" if e["attack"] == "none" else
                    "clients" if e["attack"] == "label_flip" else "adversary")
        assert e["applied_by"] == expected


# ------------------------------------------------------------------ Ray integration (slow)


def _ray_helpers():
    try:
        from .conftest import assert_no_ray_processes, simulation_env
    except ImportError:  # tests/ not a package
        from conftest import assert_no_ray_processes, simulation_env
    return assert_no_ray_processes, simulation_env


class RecordingGrid(Grid):
    """Delegating Grid that keeps (sent, replies, config at send time) of every train round.

    The config is copied because FedAvg writes "server-round" into the same ConfigRecord
    object every round.
    """

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.rounds: list[tuple[list[Message], list[Message], dict]] = []

    def set_run(self, run):
        self.grid.set_run(run)

    @property
    def run(self):
        return self.grid.run

    def create_message(self, *args, **kwargs):
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self):
        return self.grid.get_node_ids()

    def push_messages(self, messages):
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids):
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        config = dict(messages[0].content["config"]) if messages else {}
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        if messages and messages[0].metadata.message_type == "train":
            self.rounds.append((messages, replies, config))
        return replies


def _simulate(attack: str, seed: int):
    """6 clients (2 Byzantine), 2 FedAvg rounds on digits; returns (adversary, inner, outer, run_config)."""
    from flwr.app import Context
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    from clients.byzantine import byzantine_partitions, wrap_client_app
    from clients.client_app import app as honest_app
    from clients.tasks import get_task

    run_config = {"task": "digits", "seed": seed, "attack": attack, "num-byzantine": 2, "num-clients": 6}
    out: dict = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        inner = RecordingGrid(grid)
        adversary = OmniscientAdversary(inner, attack=attack,
                                        byzantine_partitions=byzantine_partitions(6, 2, seed), seed=seed)
        outer = RecordingGrid(adversary)
        strategy = FedAvg(fraction_evaluate=0.0, min_available_nodes=6, min_train_nodes=6)
        torch.manual_seed(seed)
        model = get_task("digits").build_model()
        # run_simulation gives ClientApps an empty run config: forward it in the train config.
        strategy.start(grid=outer, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=2,
                       train_config=ConfigRecord(run_config))
        out.update(adversary=adversary, inner=inner, outer=outer)

    assert_no_ray_processes, simulation_env = _ray_helpers()
    # Ray workers import clients/ and signguard_flwr/ by name: make the repository importable.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = (saved + os.pathsep if saved else "") + root
    try:
        with simulation_env():
            run_simulation(server_app=server, client_app=wrap_client_app(honest_app), num_supernodes=6,
                           backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                           "init_args": {"num_cpus": 2}})
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    assert_no_ray_processes()
    assert subprocess.run(["pgrep", "-P", str(os.getpid()), "-f", "raylet|gcs_server"],
                          capture_output=True).returncode == 1, "raylet/gcs_server left running"
    return out["adversary"], out["inner"], out["outer"], run_config


def _round_updates(sent: list[Message], replies: list[Message]) -> dict[int, torch.Tensor]:
    from signguard_flwr.arrays import record_numpy, record_to_vector, update_keys

    g = record_numpy(sent[0].content["arrays"])
    keys = update_keys(g)
    base = record_to_vector(g, keys, dtype=torch.float64)
    return {int(r.content["diag"]["partition-id"]):
            record_to_vector(record_numpy(r.content["arrays"]), keys, dtype=torch.float64) - base
            for r in replies if not r.has_error()}


@pytest.mark.slow
def test_simulation_lie_adversary_ground_truth_and_formula():
    from clients.byzantine import byzantine_partitions

    adversary, inner, outer, _ = _simulate("lie", seed=5)
    byz = byzantine_partitions(6, 2, 5)
    assert [e["round"] for e in adversary.history] == [1, 2]
    for entry, (sent, raw, _), (_, seen, _) in zip(adversary.history, inner.rounds, outer.rounds):
        assert entry["byzantine_partition_ids"] == byz and entry["num_valid"] == 6
        nodes = {int(r.content["diag"]["partition-id"]): r.metadata.src_node_id for r in raw}
        assert entry["byzantine_node_ids"] == sorted(nodes[p] for p in byz)
        honest = _round_updates(sent, raw)
        attacked = _round_updates(sent, seen)
        g = -torch.stack([honest[p] for p in range(6)])
        expected = -lie(g, 0.3)
        for p in range(6):
            want = expected if p in byz else honest[p]
            assert torch.allclose(attacked[p], want, atol=1e-5), p


@pytest.mark.slow
def test_simulation_sign_flip_by_the_client_mod():
    from flwr.app import Context

    from clients.byzantine import byzantine_partitions
    from clients.client_app import app as honest_app

    adversary, inner, _, run_config = _simulate("sign_flip", seed=2)
    byz = byzantine_partitions(6, 2, 2)
    assert [e["applied_by"] for e in adversary.history] == ["clients", "clients"]
    for entry, (sent, replies, config) in zip(adversary.history, inner.rounds):
        assert entry["byzantine_partition_ids"] == byz and entry["round"] == config["server-round"]
        got = _round_updates(sent, replies)
        content = RecordDict({"arrays": sent[0].content["arrays"], "config": ConfigRecord(config)})
        for p in range(6):
            # The honest client is deterministic in (seed, partition, round): recompute here.
            msg = Message(content, metadata=Metadata(
                run_id=1, message_id="x", src_node_id=0, dst_node_id=1, reply_to_message_id="", group_id="",
                created_at=time.time(), ttl=600.0, message_type="train"))
            ctx = Context(run_id=1, node_id=1, node_config={"partition-id": p, "num-partitions": 6},
                          state=RecordDict(), run_config=dict(run_config))
            honest = _round_updates(sent, [honest_app(msg, ctx)])[p]
            assert torch.allclose(got[p], -honest if p in byz else honest, atol=1e-5), p


def test_time_varying_label_flip_reaches_the_real_client_in_process():
    """Directive → byzantine_mod → honest ClientApp's label-transform hook, without Ray."""
    from flwr.app import Context
    from flwr.serverapp.strategy import FedAvg

    from clients.byzantine import byzantine_partitions, wrap_client_app
    from clients.client_app import app as honest_app
    from clients.tasks import get_task
    from simulations.engine import InProcessGrid

    run_config = {"task": "digits", "seed": 1, "attack": "time_varying", "num-byzantine": 1,
                  "num-clients": 4, "tv-attacks": "label_flip"}
    byz = byzantine_partitions(4, 1, 1)
    inner = RecordingGrid(InProcessGrid(wrap_client_app(honest_app), 4, run_config=run_config, seed=1))
    adversary = OmniscientAdversary.from_config(inner, run_config)
    assert adversary.byzantine_partitions == frozenset(byz)
    torch.manual_seed(0)
    model = get_task("digits").build_model()
    FedAvg(fraction_evaluate=0.0, min_available_nodes=4, min_train_nodes=4).start(
        grid=adversary, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=1,
        train_config=ConfigRecord(run_config))
    (sent, replies, config), = inner.rounds
    assert config[ADVERSARY_DIRECTIVE_KEY] == "label_flip"
    assert adversary.history[0]["applied_by"] == "clients"
    got = _round_updates(sent, replies)
    for p in range(4):
        ctx = Context(run_id=1, node_id=1, node_config={"partition-id": p, "num-partitions": 4},
                      state=RecordDict(), run_config={})
        plain = RecordDict({"arrays": sent[0].content["arrays"],
                            "config": ConfigRecord({**run_config, "server-round": 1})})
        flipped = RecordDict({"arrays": sent[0].content["arrays"],
                              "config": ConfigRecord({**run_config, "server-round": 1, "label-transform": "flip"})})
        meta = sent[0].metadata
        honest = _round_updates(sent, [honest_app(Message(plain, metadata=meta), ctx)])[p]
        poisoned = _round_updates(sent, [honest_app(Message(flipped, metadata=meta), ctx)])[p]
        assert not torch.allclose(honest, poisoned, atol=1e-4)
        assert torch.allclose(got[p], poisoned if p in byz else honest, atol=1e-6), p
