"""The shared Flower plumbing of every robust strategy.

One round, the data's way: ``configure_train`` remembers the arrays it sends; ``aggregate_train``
checks each reply on its own, stacks the updates ``Δ_i = w_i − w_global`` into one ``(n, d)``
torch matrix (built once, on the strategy's device, never copied to numpy), calls the pure rule
``RULES[name](updates, **params)``, applies the result with the server optimizer, aggregates the
buffers, and reports diagnostics.  Subclasses only name their rule.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any, ClassVar

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from ..arrays import BufferPredicate, make_buffer_predicate
from ..optim import ServerOptimizer
from ..replies import ParsedReply, find_metric_record, parse_train_reply
from ..rules import InsufficientClientsError, get_rule
from ..rules.base import AggregationResult, check_choice, check_int
from ..updates import UpdateView, global_view, stack

__all__ = ["RobustStrategy", "RoundDiagnostics", "BUFFER_POLICIES"]

BUFFER_POLICIES = ("median", "selected_mean", "keep")

# FedAvg's constructor arguments: they go to FedAvg, everything else to the rule.
_FEDAVG_ARGS = (
    "fraction_train",
    "fraction_evaluate",
    "min_train_nodes",
    "min_evaluate_nodes",
    "min_available_nodes",
    "weighted_by_key",
    "arrayrecord_key",
    "configrecord_key",
    "train_metrics_aggr_fn",
    "evaluate_metrics_aggr_fn",
)


@dataclass
class RoundDiagnostics:
    """What happened in one aggregation, for the caller (detection metrics, logs).

    Node ids appear here only for diagnostics: no decision of the strategy reads them.
    """

    server_round: int
    received: list[int] = field(default_factory=list)
    """Node ids of every reply, error replies included."""
    valid: list[int] = field(default_factory=list)
    """Node ids whose update entered the rule (row order of the update matrix)."""
    selected: list[int] = field(default_factory=list)
    """Node ids of the rows the rule selected (all valid ones for rules that select nothing)."""
    rejected: dict[int, str] = field(default_factory=dict)
    """Node id → why its reply was not used (malformed, non-finite, filtered by the rule)."""
    info: dict[str, Any] = field(default_factory=dict)
    """The rule's diagnostics (tensors moved to CPU)."""
    outcome: str = "aggregated"
    """``aggregated`` or why the global model was kept (``no valid replies``, ...)."""
    seconds: float = 0.0
    """Wall time of the aggregation (matrix, rule, optimizer, record)."""


def _resolve_device(device: Any) -> torch.device:
    """The strategy's torch device, checked now rather than at the first round."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: this process sees no CUDA GPU (use 'cpu' or 'auto')")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return resolved


#: A client's evaluation weight counts at most this many times the round's median weight.
EVALUATE_WEIGHT_CAP = 10.0


def _one_per_node(replies: list[Message], on_duplicate) -> list[Message]:
    """The first reply of each node, in order; ``on_duplicate(node_id, why)`` for the others.

    A node answers once per round: further replies (a buggy or malicious client, a replayed
    message) must not count it twice."""
    seen: set[int] = set()
    out = []
    for msg in replies:
        nid = int(msg.metadata.src_node_id)
        if nid in seen:
            on_duplicate(nid, "another reply from this node this round")
            continue
        seen.add(nid)
        out.append(msg)
    return out


def _bad_metrics(record: MetricRecord | None, weight_key: str) -> str | None:
    """Why an evaluate reply's metrics are unusable, or None."""
    if record is None:
        return "no single MetricRecord"
    weight = record.get(weight_key)
    if isinstance(weight, bool) or not isinstance(weight, (int, np.integer)) or weight < 0:
        return f"{weight_key!r} is {weight!r}, not a non-negative integer"
    for key, value in record.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            return f"metric {key!r} is a {type(value).__name__}, not a number"
        if not math.isfinite(float(value)):
            return f"metric {key!r} is {value!r}"
    return None


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu")
    return value


class RobustStrategy(FedAvg):
    """Base class: a FedAvg whose aggregation is a robust rule over client updates.

    Parameters
    ----------
    fraction_train, fraction_evaluate, min_train_nodes, min_evaluate_nodes, min_available_nodes, \
weighted_by_key, arrayrecord_key, configrecord_key, train_metrics_aggr_fn, evaluate_metrics_aggr_fn
        As in :class:`flwr.serverapp.strategy.FedAvg`.  ``weighted_by_key`` is only used for
        client-side *metrics*: updates are never weighted by client-reported example counts.
    server_lr, server_momentum, server_weight_decay, server_nesterov, lr_milestones, lr_gamma
        The :class:`~signguard_flwr.optim.ServerOptimizer` applying the aggregate.  Default:
        plain application ``w ← w + Δ``.  The paper's FedSGD setting is ``server_lr=0.1,
        server_momentum=0.9, server_weight_decay=5e-4``.
    buffers : {"median", "selected_mean", "keep"}, default "median"
        How non-trainable arrays (BatchNorm running statistics, integer counters) are set:
        coordinate-wise median over the valid replies (robust to a minority of tampered
        buffers, whatever the rule), mean over the rows the rule selected (falls back to the
        median for rules that select none), or kept from the global model.  Buffers never
        enter the update matrix or the robust statistics.
    is_buffer : callable or iterable of str, optional
        Which arrays are buffers: a predicate ``(name, ndarray) -> bool`` or a set of names.
        Default: non-float arrays and names ending in ``running_mean``, ``running_var``,
        ``num_batches_tracked``.
    device : str or torch.device, default "cpu"
        Where the update matrix lives and the rule runs (``"auto"``: CUDA when available).
    dtype : torch.dtype, default torch.float32
        dtype of the update matrix.
    seed : int, optional
        Seeds the ``torch.Generator`` handed to randomised rules (coordinate sampling, DnC).
    on_round : callable, optional
        Called with each round's :class:`RoundDiagnostics`.
    **rule_params
        The rule's own hyper-parameters (see the subclass); checked at construction.
    """

    rule_name: ClassVar[str] = ""

    def __init__(
        self,
        *,
        server_lr: float = 1.0,
        server_momentum: float = 0.0,
        server_weight_decay: float = 0.0,
        server_nesterov: bool = False,
        lr_milestones: Sequence[int] = (),
        lr_gamma: float = 0.1,
        buffers: str = "median",
        is_buffer: BufferPredicate | Iterable[str] | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int | None = None,
        on_round: Callable[[RoundDiagnostics], None] | None = None,
        **kwargs: Any,
    ) -> None:
        if not self.rule_name:
            raise TypeError("RobustStrategy is abstract: use a subclass that sets rule_name")
        fedavg_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _FEDAVG_ARGS}
        super().__init__(**fedavg_kwargs)
        self.rule = get_rule(self.rule_name)
        unknown = [k for k in kwargs if k not in self.rule.param_names or k in ("state", "generator")]
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected argument(s) {unknown}; rule {self.rule_name!r} "
                f"accepts {[p for p in self.rule.param_names if p not in ('state', 'generator')]}"
            )
        self.rule.validate(**kwargs)
        self.rule_params: dict[str, Any] = dict(kwargs)
        self.optimizer = ServerOptimizer(
            lr=server_lr,
            momentum=server_momentum,
            weight_decay=server_weight_decay,
            nesterov=server_nesterov,
            milestones=lr_milestones,
            gamma=lr_gamma,
        )
        self.buffers = check_choice("buffers", buffers, BUFFER_POLICIES)
        if is_buffer is not None and not callable(is_buffer) and (
            isinstance(is_buffer, (str, bytes)) or not isinstance(is_buffer, Iterable)
            or not all(isinstance(k, str) for k in is_buffer)
        ):
            raise TypeError(f"is_buffer must be a predicate (name, array) -> bool or an iterable of array names, got {is_buffer!r}")
        self.is_buffer = make_buffer_predicate(is_buffer)
        self.device = _resolve_device(device)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.dtype = dtype
        if seed is not None:
            check_int("seed", seed, minimum=0)
        self.seed = seed
        self.generator: torch.Generator | None = None
        if "generator" in self.rule.param_names:
            self.generator = torch.Generator(device="cpu")
            if seed is not None:
                self.generator.manual_seed(int(seed))
            else:
                self.generator.seed()
        self.rule_state = self.make_rule_state()
        self.on_round = on_round
        self.history: list[RoundDiagnostics] = []
        self._global: UpdateView | None = None  # the global model sent this round, flattened once
        self._sent_round: int | None = None
        #: Rounds already done before :meth:`start` was called (a run resumed from a checkpoint):
        #: added to every ``server_round`` Flower hands the strategy, so the clients, the
        #: optimizer's LR schedule and the diagnostics see the run's own round numbers.
        self.round_offset = 0

    # ------------------------------------------------------------------ hooks for subclasses
    def make_rule_state(self) -> Any:
        """State object passed to stateful rules as ``state=`` (None for stateless rules)."""
        return None

    # ------------------------------------------------------------------ Flower API
    def summary(self) -> None:
        """Log the strategy's settings in Flower's tree style."""
        log(INFO, "\t├──> Robust aggregation: %s (rule %r)", type(self).__name__, self.rule_name)
        for key, value in sorted(self.rule_params.items()):
            log(INFO, "\t│\t├── %s: %s", key, value)
        log(INFO, "\t│\t├── server optimizer: %s", self.optimizer)
        log(INFO, "\t│\t├── buffers: %s", self.buffers)
        log(INFO, "\t│\t└── device/dtype: %s / %s", self.device, self.dtype)
        # FedAvg's own summary says "Weighted by: 'num-examples'", which is not true here:
        # updates are never weighted by client-reported counts (only evaluation metrics are,
        # capped).  Log its sampling settings and keys with what they really do.
        log(INFO, "\t├──> Sampling:")
        log(INFO, "\t│\t├──Fraction: train (%.2f) | evaluate ( %.2f)", self.fraction_train, self.fraction_evaluate)
        log(INFO, "\t│\t├──Minimum nodes: train (%d) | evaluate (%d)", self.min_train_nodes, self.min_evaluate_nodes)
        log(INFO, "\t│\t└──Minimum available nodes: %d", self.min_available_nodes)
        log(INFO, "\t└──> Keys in records:")
        log(INFO, "\t\t├── Updates: unweighted (client-reported '%s' is ignored for aggregation)", self.weighted_by_key)
        log(INFO, "\t\t├── Evaluation metrics weighted by: '%s' (capped at %g x the median)", self.weighted_by_key, EVALUATE_WEIGHT_CAP)
        log(INFO, "\t\t├── ArrayRecord key: '%s'", self.arrayrecord_key)
        log(INFO, "\t\t└── ConfigRecord key: '%s'", self.configrecord_key)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember exactly the arrays sent this round (flattened once), then sample as FedAvg does."""
        server_round += self.round_offset
        self._global = global_view(arrays, is_buffer=self.is_buffer, dtype=self.dtype, device=self.device)
        self._sent_round = server_round
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Check replies one by one, run the rule on the update matrix, apply the result."""
        start = time.perf_counter()
        server_round += self.round_offset
        replies = list(replies)
        diag = RoundDiagnostics(server_round=server_round)
        diag.received = [int(m.metadata.src_node_id) for m in replies]
        glob = self._global
        if glob is None:
            raise RuntimeError("aggregate_train called before configure_train: no global model to diff against")

        parsed: list[ParsedReply] = []
        failures = 0
        # Sorting by node id fixes the row order for reproducibility only; every rule is
        # permutation invariant (tested), so the order cannot change which updates are kept.
        unique = _one_per_node(replies, lambda nid, why: log(
            WARNING, "aggregate_train round %s: reply from node %s ignored (%s)", server_round, nid, why))
        for msg in sorted(unique, key=lambda m: int(m.metadata.src_node_id)):
            reply, why = parse_train_reply(msg, glob, self.arrayrecord_key)
            if reply is None:
                failures += int(msg.has_error())
                self._reject(diag, int(msg.metadata.src_node_id), why or "invalid reply")
            else:
                parsed.append(reply)

        arrays_out: ArrayRecord | None = None
        result: AggregationResult | None = None
        if not glob.keys:
            diag.outcome = "the model has no trainable float arrays"
        elif not parsed:
            diag.outcome = "no valid replies: global model kept"
        else:
            updates, parsed = self._update_matrix(parsed, diag)
            diag.valid = [p.node_id for p in parsed]
            if not parsed:
                diag.outcome = "no finite updates: global model kept"
            else:
                result = self._run_rule(updates, diag)
                if result is not None:
                    arrays_out = self._apply(result, parsed, glob)
                    if arrays_out is None:
                        diag.outcome = "the new global model would not be finite; global model kept"
                        result = None
        if arrays_out is None:
            log(WARNING, "aggregate_train round %s: %s", server_round, diag.outcome)
        diag.seconds = time.perf_counter() - start
        metrics = self._round_metrics(diag, parsed, failures, result)
        self.history.append(diag)
        if self.on_round is not None:
            self.on_round(diag)
        return arrays_out, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """As FedAvg's, with the round counted from the start of the run (:attr:`round_offset`)."""
        return super().configure_evaluate(server_round + self.round_offset, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Average client evaluation metrics over the replies that pass a per-reply check.

        A reply is left out (and logged) when it is an error, repeats a node already heard this
        round, lacks a single MetricRecord, or has a metric that is not a finite number or a
        ``num-examples`` weight that is not a non-negative integer.  Weights are capped at
        :data:`EVALUATE_WEIGHT_CAP` times the median weight, so one client claiming 2**70
        examples cannot decide the average.  Never raises on client data.
        """
        server_round += self.round_offset
        good: list[RecordDict] = []
        for msg in _one_per_node(list(replies), lambda nid, why: log(
                WARNING, "aggregate_evaluate round %s: reply from node %s ignored (%s)", server_round, nid, why)):
            nid = msg.metadata.src_node_id
            if msg.has_error():
                log(INFO, "aggregate_evaluate round %s: error reply from node %s: %s", server_round, nid, msg.error.reason)
                continue
            record = find_metric_record(msg)
            why = _bad_metrics(record, self.weighted_by_key)
            if why is not None:
                log(WARNING, "aggregate_evaluate round %s: reply from node %s ignored (%s)", server_round, nid, why)
                continue
            good.append(RecordDict({"metrics": record}))
        if not good:
            return None
        common = set.intersection(*(set(next(iter(r.values())).keys()) for r in good))
        weights = [int(next(iter(r.values()))[self.weighted_by_key]) for r in good]
        cap = EVALUATE_WEIGHT_CAP * float(np.median(weights))
        trimmed = [
            RecordDict({"metrics": MetricRecord({
                **{k: v for k, v in next(iter(r.values())).items() if k in common},
                self.weighted_by_key: int(min(w, cap)),
            })})
            for r, w in zip(good, weights)
        ]
        if sum(int(min(w, cap)) for w in weights) <= 0:
            return None
        try:
            return self.evaluate_metrics_aggr_fn(trimmed, self.weighted_by_key)
        except Exception as err:  # a user's aggregation function must not take the server down
            log(WARNING, "aggregate_evaluate round %s: metrics aggregation failed (%s: %s)", server_round, type(err).__name__, err)
            return None

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The state this strategy carries from one round to the next, for a checkpoint.

        The server optimizer (momentum buffer, step count), the rule's cross-round state
        (SignGuard-Sim/-Dist, Centered Clipping: its fields, tensors on the CPU) and the seeded
        generator of randomised rules.  Plain data and tensors only (``torch.load(...,
        weights_only=True)`` reads it back).  :attr:`history` is not part of it: nothing reads
        a past round's diagnostics to decide the next one.
        """
        rule_state = None
        if self.rule_state is not None:
            fields = {}
            for name, value in vars(self.rule_state).items():
                if isinstance(value, torch.Tensor):
                    fields[name] = {"tensor": value.detach().to("cpu").clone(), "device": str(value.device)}
                elif value is None or isinstance(value, (bool, int, float, str)):
                    fields[name] = {"value": value}
                else:
                    raise TypeError(f"rule state field {name!r} is a {type(value).__name__}: cannot checkpoint it")
            rule_state = {"type": type(self.rule_state).__name__, "fields": fields}
        return {
            "rule": self.rule_name,
            "optimizer": self.optimizer.state_dict(),
            "rule_state": rule_state,
            "generator": None if self.generator is None else self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (raises ``ValueError`` if it does not fit)."""
        if state.get("rule") != self.rule_name:
            raise ValueError(f"state of rule {state.get('rule')!r}, not {self.rule_name!r}")
        saved_rule_state = state["rule_state"]
        if (saved_rule_state is None) != (self.rule_state is None):
            raise ValueError("rule state present in one of the saved state and this strategy only")
        if (state["generator"] is None) != (self.generator is None):
            raise ValueError("generator present in one of the saved state and this strategy only")
        if saved_rule_state is not None:
            if saved_rule_state["type"] != type(self.rule_state).__name__:
                raise ValueError(f"rule state {saved_rule_state['type']!r}, not {type(self.rule_state).__name__!r}")
            unknown = set(saved_rule_state["fields"]) - set(vars(self.rule_state))
            if unknown:
                raise ValueError(f"rule state has unknown fields {sorted(unknown)}")
        self.optimizer.load_state_dict(state["optimizer"], device=self.device)
        if saved_rule_state is not None:
            for name, entry in saved_rule_state["fields"].items():
                value = entry["tensor"].to(entry["device"]) if "tensor" in entry else entry["value"]
                setattr(self.rule_state, name, value)
        if self.generator is not None:
            self.generator.set_state(state["generator"])

    # ------------------------------------------------------------------ internals
    def _reject(self, diag: RoundDiagnostics, node_id: int, why: str) -> None:
        diag.rejected[node_id] = why
        log(WARNING, "aggregate_train round %s: reply from node %s rejected (%s); not aggregated", diag.server_round, node_id, why)

    def _update_matrix(
        self, parsed: list[ParsedReply], diag: RoundDiagnostics
    ) -> tuple[torch.Tensor, list[ParsedReply]]:
        """Stack ``w_i − w_global`` into one (n, d) tensor; drop rows with NaN/Inf."""
        updates = stack([p.update for p in parsed])  # on the global view's device and dtype
        finite = torch.isfinite(updates).all(dim=1)
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten().tolist()
            for row in bad:
                self._reject(diag, parsed[row].node_id, "update has NaN or Inf entries")
            keep = finite.nonzero().flatten()
            updates = updates.index_select(0, keep)
            parsed = [parsed[i] for i in keep.tolist()]
        return updates, parsed

    def aggregate_updates(self, updates: torch.Tensor) -> AggregationResult:
        """Run this strategy's rule on an ``(n, d)`` update matrix, with its parameters, its
        seeded generator and its state (SignGuard-Sim/Dist) — the pure step of a round."""
        params = dict(self.rule_params)
        if self.generator is not None:
            params["generator"] = self.generator
        if "state" in self.rule.param_names:
            params["state"] = self.rule_state
        return self.rule(updates, **params)

    def _run_rule(self, updates: torch.Tensor, diag: RoundDiagnostics) -> AggregationResult | None:
        try:
            result = self.aggregate_updates(updates)
        except InsufficientClientsError as err:
            diag.outcome = f"too few valid updates for {self.rule_name}: {err}; global model kept"
            return None
        except Exception as err:  # the server must survive any failure of one round's math
            diag.outcome = f"rule {self.rule_name} failed ({type(err).__name__}: {err}); global model kept"
            return None
        if result.vector.shape != (updates.shape[1],) or not bool(torch.isfinite(result.vector).all()):
            diag.outcome = f"rule {self.rule_name} returned a non-finite or misshaped vector; global model kept"
            return None
        diag.info = {k: _to_cpu(v) for k, v in result.info.items()}
        if result.selected is not None and not bool(result.selected.any()):
            # Nothing passed the rule's filters (all-zero updates, a majority it rejects): an
            # empty aggregate would still move the model through the momentum buffer.
            for nid in diag.valid:
                diag.rejected[nid] = f"filtered by {self.rule_name}"
            reasons = ", ".join(f"{k.replace('_', ' ')} {int(diag.info[k])}" for k in ("rejected_by_norm", "rejected_by_cluster") if k in diag.info)
            diag.outcome = f"{self.rule_name} selected none of {len(diag.valid)} valid updates" + (f" ({reasons})" if reasons else "") + "; global model kept"
            return None
        node_ids = diag.valid
        if result.selected is None:
            diag.selected = list(node_ids)
        else:
            mask = result.selected.detach().to("cpu").tolist()
            diag.selected = [nid for nid, keep in zip(node_ids, mask) if keep]
            for nid, keep in zip(node_ids, mask):
                if not keep:
                    diag.rejected[nid] = f"filtered by {self.rule_name}"
        return result

    def _apply(self, result: AggregationResult, parsed: list[ParsedReply], glob: UpdateView) -> ArrayRecord | None:
        new_weights = self.optimizer.step(glob.base, result.vector.to(self.dtype), server_round=self._sent_round)
        # Finite in the model's own dtypes, not only in the strategy's: 7e4 is a float32 but
        # overflows a float16 model.  A rejected step is undone (momentum buffer included).
        if not bool(torch.isfinite(new_weights).all()) or not glob.fits(new_weights):
            self.optimizer.rollback()
            return None
        return glob.rebuild(new_weights, replace=self._aggregate_buffers(parsed, glob, result.selected))

    def _aggregate_buffers(
        self, parsed: list[ParsedReply], glob: UpdateView, selected: torch.Tensor | None
    ) -> dict[str, np.ndarray]:
        """The next global buffers, by :attr:`buffers` policy; a buffer left out stays the global one."""
        template = glob.record
        update_keys = set(glob.keys)
        buffer_names = [k for k in template if k not in update_keys]
        if not buffer_names or self.buffers == "keep":
            return {}
        rows = parsed
        if self.buffers == "selected_mean" and selected is not None and bool(selected.any()):
            mask = selected.detach().to("cpu").tolist()
            rows = [p for p, keep in zip(parsed, mask) if keep]
            use_mean = True
        else:
            use_mean = False
        out: dict[str, np.ndarray] = {}
        for name in buffer_names:
            values = np.stack([p.arrays[name] for p in rows])
            if np.issubdtype(values.dtype, np.floating):
                finite = np.isfinite(values).reshape(len(rows), -1).all(axis=1)
                if not finite.any():
                    continue  # keep the global buffer: nothing trustworthy arrived
                values = values[finite]
            value = values.mean(axis=0) if use_mean else np.median(values, axis=0)
            out[name] = np.asarray(value).astype(template[name].dtype)
        return out

    def _round_metrics(
        self,
        diag: RoundDiagnostics,
        parsed: list[ParsedReply],
        failures: int,
        result: AggregationResult | None,
    ) -> MetricRecord:
        metrics: dict[str, int | float] = {
            "received": len(diag.received),
            "failures": failures,
            "invalid": len(diag.received) - failures - len(diag.valid),
            "valid": len(diag.valid),
            "selected": len(diag.selected) if result is not None else 0,
            "aggregated": int(result is not None),
            "agg-seconds": float(diag.seconds),
        }
        metrics["rejected-by-rule"] = len(diag.valid) - metrics["selected"] if result is not None else 0
        for key in ("rejected_by_norm", "rejected_by_cluster"):
            if key in diag.info:
                metrics[key.replace("_", "-")] = int(diag.info[key])
        # Client-reported training metrics: unweighted mean over the valid replies (a
        # Byzantine client must not be able to inflate its weight through num-examples).
        reported = [p.metrics for p in parsed if p.metrics is not None]
        if reported:
            common = set.intersection(*(set(r.keys()) for r in reported))
            for key in sorted(common):
                values = [r[key] for r in reported]
                if key == self.weighted_by_key:
                    # Reported example counts: only non-negative integers add up; the others are
                    # counted aside (diagnostics only: updates are never weighted by them).
                    ok = [v for v in values if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0]
                    metrics[key] = int(sum(ok))
                    if len(ok) < len(values):
                        metrics[f"{key}-invalid"] = len(values) - len(ok)
                elif key not in metrics and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
                ):
                    metrics[key] = float(sum(values) / len(values))
        return MetricRecord(metrics)
