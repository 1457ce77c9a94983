"""Strategies: message plumbing, update semantics, server optimizer, bad input, diagnostics."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import signguard_flwr
from signguard_flwr import STRATEGIES, RobustStrategy

from .flower_fakes import FakeGrid, error_reply, flower_identity, train_reply

ALL_NAMES = [
    "Mean",
    "TrimmedMean",
    "Median",
    "GeoMed",
    "MultiKrum",
    "Bulyan",
    "DnC",
    "SignGuard",
    "SignGuardSim",
    "SignGuardDist",
]
# Declared f for the rules that take one (n = 12 replies below satisfies Bulyan's n >= 4f+3).
F_PARAMS = {"TrimmedMean": {"f": 2}, "MultiKrum": {"f": 2}, "Bulyan": {"f": 2}, "DnC": {"f": 2}, "Krum": {"f": 2}}


def make(name: str, **kwargs) -> RobustStrategy:
    cls = getattr(signguard_flwr, name)
    params = {**F_PARAMS.get(name, {}), **kwargs}
    params.setdefault("fraction_evaluate", 0.0)
    params.setdefault("seed", 0)
    return cls(**params)


def global_model(d: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "layer.weight": rng.normal(size=(2, d // 2)).astype(np.float32),
        "bn.weight": np.ones(2, dtype=np.float32),
        "bn.running_mean": np.zeros(2, dtype=np.float32),
        "bn.num_batches_tracked": np.array(3, dtype=np.int64),
    }


def send(strategy: RobustStrategy, model: dict[str, np.ndarray], node_ids, server_round: int = 1) -> list[Message]:
    """Run configure_train for ``node_ids`` and return the instruction messages."""
    # FedAvg's sampling blocks until min_available_nodes (2) are connected: pad tiny grids.
    node_ids = list(node_ids) + [10_000 + i for i in range(max(0, 2 - len(node_ids)))]
    grid = FakeGrid({nid: (lambda m: None) for nid in node_ids})
    record = ArrayRecord({k: Array(v) for k, v in model.items()})
    with flower_identity():
        return list(strategy.configure_train(server_round, record, ConfigRecord(), grid))


def apply_update(model: dict[str, np.ndarray], delta: np.ndarray, buffer_value: float = 0.0) -> dict[str, np.ndarray]:
    out = dict(model)
    out["layer.weight"] = (model["layer.weight"].reshape(-1) + delta[: model["layer.weight"].size]).reshape(
        model["layer.weight"].shape
    ).astype(np.float32)
    out["bn.weight"] = (model["bn.weight"] + delta[model["layer.weight"].size :]).astype(np.float32)
    out["bn.running_mean"] = np.full(2, buffer_value, dtype=np.float32)
    return out


def flat(record: ArrayRecord) -> np.ndarray:
    arrays = {k: v.numpy() for k, v in record.items()}
    return np.concatenate([arrays["layer.weight"].reshape(-1), arrays["bn.weight"]])


# --------------------------------------------------------------------------- API surface
def test_all_strategies_exported_and_are_message_api_strategies():
    for name in ALL_NAMES:
        cls = getattr(signguard_flwr, name)
        assert issubclass(cls, FedAvg), name
        assert STRATEGIES[cls.rule_name] is cls
        assert cls.rule_name in signguard_flwr.RULES


def test_a_registered_rule_becomes_a_strategy_with_no_other_edit():
    """Registering a rule is all it takes: strategy class, STRATEGIES entry, state, docstring."""
    from signguard_flwr.rules import RULES, Rule, register, unregister
    from signguard_flwr.rules.base import AggregationResult, check_float, check_updates
    from signguard_flwr.strategies import strategy_class

    def scaled_mean(updates: torch.Tensor, scale: float = 0.5, state: list | None = None) -> AggregationResult:
        """Toy rule: the mean scaled by ``scale``, remembering each round's row count."""
        updates = check_updates(updates)
        if state is not None:
            state.append(updates.shape[0])
        return AggregationResult(vector=scale * updates.mean(dim=0))

    def validate(scale: float = 0.5, state: list | None = None) -> None:
        check_float("scale", scale, minimum=0.0, strict_min=True)

    register(Rule("toy_scaled_mean", scaled_mean, validate=validate, make_state=list, variant_of="mean"))
    try:
        with pytest.raises(ValueError, match="already registered"):
            register(Rule("toy_scaled_mean", scaled_mean))
        cls = STRATEGIES["toy_scaled_mean"]
        assert cls is strategy_class("toy_scaled_mean") and cls.__name__ == "ToyScaledMean"
        assert "toy_scaled_mean" in sorted(STRATEGIES) and len(STRATEGIES) == len(RULES)  # CLI choices
        assert issubclass(cls, signguard_flwr.Mean) and cls.rule_name == "toy_scaled_mean"
        assert cls.__doc__.startswith("Toy rule: the mean scaled by") and "``scale``" in cls.__doc__
        assert RULES["toy_scaled_mean"].display_name == "ToyScaledMean"
        with pytest.raises(ValueError, match="scale"):
            cls(scale=0.0)
        strategy = cls(scale=0.25, fraction_evaluate=0.0)
        model = global_model()
        send(strategy, model, [1, 2, 3])
        deltas = [np.full(8, float(i)) for i in (1, 2, 3)]
        arrays, _ = strategy.aggregate_train(1, [train_reply(i, apply_update(model, d)) for i, d in zip((1, 2, 3), deltas)])
        np.testing.assert_allclose(flat(arrays), flat_of(model) + 0.25 * 2.0, atol=1e-6)
        assert strategy.rule_state == [3]  # made by make_state, passed as state= every round
        assert signguard_flwr.Mean().rule_state is None  # the parent keeps no state
    finally:
        unregister("toy_scaled_mean")
    assert "toy_scaled_mean" not in STRATEGIES and "toy_scaled_mean" not in RULES
    with pytest.raises(KeyError, match="toy_scaled_mean"):
        strategy_class("toy_scaled_mean")


def test_named_classes_keep_their_names_hierarchy_and_pickle():
    import pickle

    from signguard_flwr import SignGuard, SignGuardDist, SignGuardSim
    from signguard_flwr.rules.signguard import SignGuardState

    assert [cls.__name__ for cls in STRATEGIES.values()] == [
        rule.class_name for rule in signguard_flwr.RULES.values()
    ]
    assert issubclass(SignGuardSim, SignGuard) and issubclass(SignGuardDist, SignGuard)
    assert SignGuard(preset="reference").rule_state is None
    assert isinstance(SignGuardSim(preset="reference").rule_state, SignGuardState)
    assert pickle.loads(pickle.dumps(SignGuardDist)) is SignGuardDist
    assert SignGuard.__doc__.startswith("SignGuard (Xu et al., ICDCS 2022)")


@pytest.mark.parametrize(
    "name, kwargs, exc, match",
    [
        ("TrimmedMean", {"f": -1}, ValueError, "f"),
        ("MultiKrum", {"f": "two"}, TypeError, "f"),
        ("Median", {"foo": 1}, TypeError, "foo"),
        ("Mean", {"buffers": "average"}, ValueError, "buffers"),
        ("Mean", {"server_lr": 0.0}, ValueError, "server_lr"),
        ("Mean", {"server_momentum": 1.5}, ValueError, "server_momentum"),
        ("Mean", {"server_weight_decay": -1.0}, ValueError, "server_weight_decay"),
        ("Mean", {"dtype": torch.int32}, ValueError, "dtype"),
        ("SignGuard", {"generator": None}, TypeError, "generator"),
        ("SignGuard", {"seed": "x"}, TypeError, "seed"),
        ("SignGuard", {"seed": -3}, ValueError, "seed"),
        ("Mean", {"is_buffer": 5}, TypeError, "is_buffer"),
        ("Mean", {"is_buffer": "running_mean"}, TypeError, "is_buffer"),
        ("Mean", {"device": "tpu"}, ValueError, "device"),
        ("Mean", {"device": "no-such-device"}, ValueError, "device"),
        pytest.param("Mean", {"device": "cuda"}, ValueError, "device 'cuda': this process sees no CUDA GPU",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")),
    ],
)
def test_invalid_constructor_arguments_fail_at_construction(name, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        make(name, **kwargs)


def test_summary_logs_rule_settings(caplog):
    strategy = make("MultiKrum", server_lr=0.1, server_momentum=0.9)
    with caplog.at_level(logging.INFO, logger="flwr"):
        strategy.summary()
    text = caplog.text
    assert "multi_krum" in text and "f: 2" in text and "momentum=0.9" in text
    # Not FedAvg's "Weighted by: 'num-examples'": updates are never weighted by reported counts.
    assert "Weighted by" not in text and "Updates: unweighted" in text and "Minimum available nodes" in text


# --------------------------------------------------------------------------- semantics
def test_mean_aggregates_updates_not_weights_and_ignores_num_examples():
    model = global_model()
    strategy = make("Mean")
    send(strategy, model, [1, 2, 3])
    deltas = [np.full(8, 1.0), np.full(8, 2.0), np.full(8, 6.0)]
    replies = [
        train_reply(nid, apply_update(model, d), num_examples=n)
        for nid, d, n in zip([1, 2, 3], deltas, [1, 1, 10_000])
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)
    expected = np.concatenate([model["layer.weight"].reshape(-1), model["bn.weight"]]) + 3.0
    np.testing.assert_allclose(flat(arrays), expected, rtol=0, atol=1e-6)
    assert metrics["valid"] == 3 and metrics["selected"] == 3 and metrics["num-examples"] == 10_002
    assert metrics["agg-seconds"] >= 0


def test_buffers_are_not_in_the_update_and_follow_the_policy():
    model = global_model()
    replies_buffers = [0.0, 1.0, 100.0]
    for policy, expected_buffer in [("median", 1.0), ("keep", 0.0), ("selected_mean", np.mean(replies_buffers))]:
        strategy = make("Mean", buffers=policy)
        send(strategy, model, [1, 2, 3])
        replies = [
            train_reply(nid, apply_update(model, np.zeros(8), buffer_value=b))
            for nid, b in zip([1, 2, 3], replies_buffers)
        ]
        arrays, _ = strategy.aggregate_train(1, replies)
        out = {k: v.numpy() for k, v in arrays.items()}
        np.testing.assert_allclose(out["bn.running_mean"], expected_buffer, rtol=1e-6)
        assert out["bn.num_batches_tracked"].dtype == np.int64
        assert list(out) == list(model)  # same keys, same order
        # the robust statistics saw only the 8 trainable coordinates
        assert strategy.history[-1].valid == [1, 2, 3]


def test_server_optimizer_reproduces_torch_sgd_with_momentum_and_weight_decay():
    model = global_model()
    strategy = make("Mean", server_lr=0.1, server_momentum=0.9, server_weight_decay=5e-4)
    w = torch.nn.Parameter(torch.from_numpy(np.concatenate([model["layer.weight"].reshape(-1), model["bn.weight"]])))
    reference = torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(1)
    current = model
    for rnd in range(1, 4):
        deltas = [rng.normal(size=8).astype(np.float32) for _ in range(3)]
        send(strategy, current, [1, 2, 3], server_round=rnd)
        arrays, _ = strategy.aggregate_train(rnd, [train_reply(i + 1, apply_update(current, d)) for i, d in enumerate(deltas)])
        # the reference: gradient = -(mean update), computed from what the server actually received
        received = np.stack([flat_of(apply_update(current, d)) - flat_of(current) for d in deltas])
        w.grad = -torch.from_numpy(received.mean(0).astype(np.float32))
        reference.step()
        np.testing.assert_allclose(flat(arrays), w.detach().numpy(), rtol=1e-6, atol=1e-7)
        current = {k: v.numpy() for k, v in arrays.items()}


def flat_of(model: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([model["layer.weight"].reshape(-1), model["bn.weight"]]).astype(np.float32)


def test_lr_milestones_decay_the_server_lr():
    opt = signguard_flwr.ServerOptimizer(lr=0.1, momentum=0.0, milestones=[2], gamma=0.1)
    w = torch.zeros(1)
    w = opt.step(w, torch.ones(1))  # step 1 at lr 0.1
    w = opt.step(w, torch.ones(1))  # step 2 at lr 0.1
    w = opt.step(w, torch.ones(1))  # step 3 at lr 0.01
    assert w.item() == pytest.approx(0.21)


def test_selected_node_ids_are_reported_and_identity_does_not_decide():
    model = global_model()
    rng = np.random.default_rng(3)
    deltas = [rng.normal(size=8) * 0.1 for _ in range(11)] + [np.full(8, 50.0)]
    outputs = []
    for ids in (list(range(1, 13)), list(range(112, 100, -1))):
        strategy = make("MultiKrum")
        send(strategy, model, ids)
        arrays, metrics = strategy.aggregate_train(1, [train_reply(i, apply_update(model, d)) for i, d in zip(ids, deltas)])
        outputs.append(flat(arrays))
        diag = strategy.history[-1]
        assert ids[-1] not in diag.selected  # the outlier was dropped, by value not by id
        assert metrics["selected"] == len(diag.selected) == 10
        assert diag.rejected[ids[-1]].startswith("filtered")
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-6)


# --------------------------------------------------------------------------- bad input
def bad_replies(model):
    good = apply_update(model, np.full(8, 0.1))
    nan = dict(good, **{"layer.weight": np.full_like(model["layer.weight"], np.nan)})
    inf = dict(good, **{"bn.weight": np.array([np.inf, 1.0], dtype=np.float32)})
    shape = dict(good, **{"layer.weight": np.zeros((3, 3), dtype=np.float32)})
    dtype = dict(good, **{"layer.weight": model["layer.weight"].astype(np.float64)})
    missing = {k: v for k, v in good.items() if k != "bn.weight"}
    extra = dict(good, **{"intruder": np.zeros(2, dtype=np.float32)})
    return {
        101: ("NaN", train_reply(101, nan)),
        102: ("NaN or Inf", train_reply(102, inf)),
        103: ("shape", train_reply(103, shape)),
        104: ("dtype", train_reply(104, dtype)),
        105: ("missing", train_reply(105, missing)),
        106: ("unexpected", train_reply(106, extra)),
        107: ("error reply", error_reply(107, "boom")),
        108: ("no ArrayRecord", train_reply(108, None)),
    }


@pytest.mark.parametrize("name", ALL_NAMES)
def test_bad_replies_are_rejected_logged_once_and_the_model_stays_finite(name, caplog):
    model = global_model()
    strategy = make(name)
    rng = np.random.default_rng(0)
    good_ids = list(range(1, 13))
    bad = bad_replies(model)
    send(strategy, model, good_ids + list(bad))
    replies = [train_reply(i, apply_update(model, 0.1 + 0.01 * rng.normal(size=8))) for i in good_ids]
    replies += [msg for _, msg in bad.values()]
    replies.append(train_reply(99, apply_update(model, np.zeros(8))))  # zero-norm update: valid input
    with caplog.at_level(logging.INFO, logger="flwr"):
        arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None
    assert np.isfinite(flat(arrays)).all()
    diag = strategy.history[-1]
    for nid, (why, _) in bad.items():
        assert why in diag.rejected[nid], (nid, diag.rejected[nid])
        assert sum(f"node {nid} rejected" in r.getMessage() for r in caplog.records) == 1
    assert 99 in diag.valid
    assert metrics["received"] == len(replies)
    assert metrics["failures"] == 1 and metrics["invalid"] == len(bad) - 1
    assert metrics["valid"] == len(good_ids) + 1


@pytest.mark.parametrize("name", ALL_NAMES)
def test_empty_round_and_all_rejected_keep_the_model(name):
    model = global_model()
    strategy = make(name)
    send(strategy, model, [1, 2])
    arrays, metrics = strategy.aggregate_train(1, [])
    assert arrays is None and metrics["received"] == 0 and metrics["aggregated"] == 0
    nan = dict(model, **{"layer.weight": np.full_like(model["layer.weight"], np.nan)})
    arrays, metrics = strategy.aggregate_train(1, [train_reply(1, nan), error_reply(2)])
    assert arrays is None and metrics["valid"] == 0
    assert "kept" in strategy.history[-1].outcome


@pytest.mark.parametrize("name", ALL_NAMES)
def test_identical_updates_give_that_update(name):
    model = global_model()
    strategy = make(name)
    ids = list(range(1, 13))
    send(strategy, model, ids)
    delta = np.linspace(-0.5, 0.5, 8)
    arrays, _ = strategy.aggregate_train(1, [train_reply(i, apply_update(model, delta)) for i in ids])
    assert arrays is not None
    np.testing.assert_allclose(flat(arrays), flat_of(model) + delta.astype(np.float32), atol=1e-5)


@pytest.mark.parametrize("name", ["TrimmedMean", "MultiKrum", "Bulyan", "DnC"])
def test_fewer_clients_than_declared_f_allows_keeps_the_model(name):
    model = global_model()
    strategy = make(name, f=3)  # Krum needs n >= 2f+3 = 9, Bulyan 15, trimmed mean n > 6
    send(strategy, model, [1, 2, 3, 4])
    arrays, metrics = strategy.aggregate_train(1, [train_reply(i, apply_update(model, np.full(8, 0.1 * i))) for i in range(1, 5)])
    if arrays is None:
        assert "too few" in strategy.history[-1].outcome
        assert metrics["aggregated"] == 0
    else:  # DnC degrades gracefully instead: the result must then be finite
        assert np.isfinite(flat(arrays)).all()


def test_aggregate_evaluate_skips_malformed_metrics():
    strategy = make("Mean")
    good = Message(RecordDict({"metrics": MetricRecord({"num-examples": 10, "eval-acc": 0.5})}), metadata=_meta(1))
    good2 = Message(RecordDict({"metrics": MetricRecord({"num-examples": 30, "eval-acc": 0.9})}), metadata=_meta(2))
    bad = Message(RecordDict({"metrics": MetricRecord({"eval-acc": 0.1})}), metadata=_meta(3))
    out = strategy.aggregate_evaluate(1, [good, good2, bad, error_reply(4)])
    assert out["eval-acc"] == pytest.approx((0.5 * 10 + 0.9 * 30) / 40)


def _meta(node_id):
    from .flower_fakes import reply_metadata

    return reply_metadata(node_id, "evaluate")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(ALL_NAMES),
    kinds=st.lists(
        st.sampled_from(["good", "good", "good", "zero", "nan", "inf", "huge", "shape", "dtype", "missing", "error", "dup"]),
        min_size=0,
        max_size=14,
    ),
    seed=st.integers(0, 10_000),
)
def test_hypothesis_random_mixtures_of_bad_replies_never_crash(name, kinds, seed):
    model = global_model()
    strategy = make(name)
    rng = np.random.default_rng(seed)
    ids = list(range(1, len(kinds) + 1))
    send(strategy, model, ids)
    base = rng.normal(size=8)
    replies = []
    for nid, kind in zip(ids, kinds):
        delta = base + 0.1 * rng.normal(size=8)
        arrays = apply_update(model, delta)
        if kind == "zero":
            arrays = apply_update(model, np.zeros(8))
        elif kind == "nan":
            arrays["bn.weight"] = np.array([np.nan, 0.0], dtype=np.float32)
        elif kind == "inf":
            arrays["layer.weight"] = np.full_like(arrays["layer.weight"], -np.inf)
        elif kind == "huge":
            arrays = apply_update(model, np.full(8, 1e30))
        elif kind == "shape":
            arrays["bn.weight"] = np.zeros(5, dtype=np.float32)
        elif kind == "dtype":
            arrays["bn.weight"] = arrays["bn.weight"].astype(np.float16)
        elif kind == "missing":
            arrays.pop("layer.weight")
        elif kind == "dup":
            arrays = apply_update(model, base)
        replies.append(error_reply(nid) if kind == "error" else train_reply(nid, arrays))
    arrays, metrics = strategy.aggregate_train(1, replies)
    if arrays is not None:
        assert np.isfinite(flat(arrays)).all()
    assert metrics["received"] == len(replies)


# --------------------------------------------------------------------------- a rejected step leaves no trace
def _flat_model(d: int, dtype=np.float32) -> dict[str, np.ndarray]:
    return {"w": np.zeros(d, dtype=dtype)}


def _replies(model: dict[str, np.ndarray], deltas: list[np.ndarray], start: int = 1) -> list[Message]:
    return [
        train_reply(start + i, {"w": (model["w"] + d).astype(model["w"].dtype)}) for i, d in enumerate(deltas)
    ]


def test_a_rejected_round_leaves_the_momentum_buffer_untouched():
    """Mean(server_lr=10, server_momentum=0.9): round 1 overflows and is rejected; round 2's
    zero updates must then leave the model where it was (it used to jump to 3.4e38)."""
    model = _flat_model(4)
    strategy = make("Mean", server_lr=10.0, server_momentum=0.9)
    send(strategy, model, [1, 2, 3, 4])
    huge = np.full(4, 3.0e38, dtype=np.float32)
    arrays, metrics = strategy.aggregate_train(1, _replies(model, [huge] * 4))
    assert arrays is None and metrics["aggregated"] == 0
    assert strategy.optimizer.steps == 0
    send(strategy, model, [1, 2, 3, 4], server_round=2)
    arrays, _ = strategy.aggregate_train(2, _replies(model, [np.zeros(4, dtype=np.float32)] * 4))
    np.testing.assert_array_equal(arrays["w"].numpy(), model["w"])
    assert strategy.optimizer.steps == 1


def test_rollback_restores_the_previous_momentum_buffer():
    from signguard_flwr.optim import ServerOptimizer

    opt = ServerOptimizer(lr=0.1, momentum=0.9)
    w = torch.zeros(3)
    w = opt.step(w, torch.ones(3))
    before = opt.state_dict()["optimizer"]["state"][0]["momentum_buffer"].clone()
    opt.step(w, torch.full((3,), 5.0))
    opt.rollback()
    after = opt.state_dict()["optimizer"]["state"][0]["momentum_buffer"]
    torch.testing.assert_close(after, before)
    assert opt.steps == 1
    # The same step again gives what it would have without the rolled-back one.
    fresh = ServerOptimizer(lr=0.1, momentum=0.9)
    torch.testing.assert_close(opt.step(w, torch.ones(3)), fresh.step(fresh.step(torch.zeros(3), torch.ones(3)), torch.ones(3)))
    opt.rollback()  # the step just taken
    with pytest.raises(RuntimeError, match="no server step"):
        opt.rollback()  # only one step can be undone
    with pytest.raises(RuntimeError, match="no server step"):
        ServerOptimizer().rollback()


def test_a_float16_model_never_becomes_infinite():
    """Mean(server_lr=2) on a float16 model: 2 x 4e4 is finite in float32, inf in float16."""
    model = _flat_model(4, np.float16)
    strategy = make("Mean", server_lr=2.0)
    send(strategy, model, [1, 2, 3])
    big = np.full(4, 4.0e4, dtype=np.float32)
    arrays, metrics = strategy.aggregate_train(1, _replies(model, [big] * 3))
    assert arrays is None and metrics["aggregated"] == 0
    assert "not be finite" in strategy.history[-1].outcome
    send(strategy, model, [1, 2, 3], server_round=2)
    arrays, _ = strategy.aggregate_train(2, _replies(model, [np.full(4, 1.0, dtype=np.float32)] * 3))
    assert arrays["w"].numpy().dtype == np.float16
    np.testing.assert_array_equal(arrays["w"].numpy(), np.full(4, 2.0, dtype=np.float16))


# --------------------------------------------------------------------------- evaluate replies, duplicates, empty selections
def _eval_reply(node_id: int, metrics: dict) -> Message:
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), metadata=_meta(node_id))


def test_aggregate_evaluate_rejects_list_and_non_finite_metrics_instead_of_crashing(caplog):
    strategy = make("Mean")
    replies = [
        _eval_reply(1, {"num-examples": 10, "acc": 0.5}),
        _eval_reply(2, {"num-examples": 10, "acc": [1.0, 2.0]}),
        _eval_reply(3, {"num-examples": 10, "acc": float("nan")}),
        _eval_reply(4, {"num-examples": 10, "acc": float("inf")}),
        _eval_reply(5, {"num-examples": 30, "acc": 0.9}),
        _eval_reply(6, {"num-examples": -5, "acc": 0.0}),
    ]
    with caplog.at_level(logging.WARNING, logger="flwr"):
        out = strategy.aggregate_evaluate(1, replies)
    assert out["acc"] == pytest.approx((0.5 * 10 + 0.9 * 30) / 40)
    ignored = [r for r in caplog.records if "ignored" in r.getMessage()]
    assert sorted(int(r.getMessage().split("node ")[1].split(" ")[0]) for r in ignored) == [2, 3, 4, 6]


def test_one_client_cannot_decide_the_evaluation_average():
    strategy = make("Mean")
    honest = [_eval_reply(i, {"num-examples": 100, "acc": 0.9}) for i in range(1, 10)]
    liar = _eval_reply(99, {"num-examples": 2**70, "acc": 0.0})
    out = strategy.aggregate_evaluate(1, [*honest, liar])
    # Capped at 10 x the median weight (100): 1000 / (900 + 1000) of the average at most.
    assert out["acc"] == pytest.approx(0.9 * 900 / 1900)
    assert out["acc"] > 0.4


def test_a_node_is_counted_once_per_round(caplog):
    model = global_model()
    strategy = make("Mean")
    send(strategy, model, [1, 2])
    once = train_reply(1, apply_update(model, np.full(8, 1.0)))
    again = train_reply(1, apply_update(model, np.full(8, 100.0)))
    other = train_reply(2, apply_update(model, np.full(8, 3.0)))
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, metrics = strategy.aggregate_train(1, [once, again, again, other])
    expected = np.concatenate([model["layer.weight"].reshape(-1), model["bn.weight"]]) + 2.0
    np.testing.assert_allclose(flat(arrays), expected, atol=1e-6)
    assert metrics["valid"] == 2 and metrics["received"] == 4
    assert sum("another reply from this node" in r.getMessage() for r in caplog.records) == 2
    # Same for evaluation: the second reply of node 1 does not count.
    out = strategy.aggregate_evaluate(1, [_eval_reply(1, {"num-examples": 10, "acc": 0.2}),
                                          _eval_reply(1, {"num-examples": 10, "acc": 1.0})])
    assert out["acc"] == pytest.approx(0.2)


def test_negative_num_examples_are_not_summed():
    model = global_model()
    strategy = make("Mean")
    send(strategy, model, [1, 2])
    replies = [train_reply(1, apply_update(model, np.full(8, 1.0)), num_examples=10),
               train_reply(2, apply_update(model, np.full(8, 1.0)), num_examples=-1000)]
    _, metrics = strategy.aggregate_train(1, replies)
    assert metrics["num-examples"] == 10 and metrics["num-examples-invalid"] == 1


def test_a_rule_that_selects_nothing_keeps_the_model_and_says_so(caplog):
    model = global_model()
    strategy = make("SignGuard")
    nodes = list(range(1, 8))
    send(strategy, model, nodes)
    zero = [train_reply(n, apply_update(model, np.zeros(8))) for n in nodes]  # all-zero updates
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, metrics = strategy.aggregate_train(1, zero)
    assert arrays is None and metrics["aggregated"] == 0 and metrics["selected"] == 0
    outcome = strategy.history[-1].outcome
    assert "selected none of 7 valid updates" in outcome and "global model kept" in outcome
    assert any("selected none" in r.getMessage() for r in caplog.records)


def test_rules_take_tensors_that_require_grad_and_return_detached_results():
    """requires_grad input crashed SignGuard and left the other rules' output on the graph."""
    x = torch.randn(12, 40, requires_grad=True)
    for name, rule in signguard_flwr.RULES.items():
        kwargs = {"f": 2} if "f" in rule.param_names else {}
        seeded = lambda: {"generator": torch.Generator().manual_seed(0)} if "generator" in rule.param_names else {}  # noqa: E731
        result = rule(x, **kwargs, **seeded())
        assert not result.vector.requires_grad and result.vector.grad_fn is None, name
        expected = rule(x.detach().clone(), **kwargs, **seeded()).vector
        torch.testing.assert_close(result.vector, expected, msg=name)
