"""Detection metrics against the ground truth: hand-made rounds with known counts."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from signguard_flwr import RoundDiagnostics
from simulations.engine import RoundRecord, RunResult, detection_counts

BYZANTINE = {1, 2, 3}
NODES = list(range(1, 11))  # 10 clients, 3 Byzantine (1, 2, 3), 7 honest (4..10)


def diag(selected: list[int], *, received: list[int] | None = None, valid: list[int] | None = None) -> RoundDiagnostics:
    received = NODES if received is None else received
    valid = received if valid is None else valid
    rejected = {n: "rule" for n in valid if n not in selected}
    rejected.update({n: "malformed" for n in received if n not in valid})
    return RoundDiagnostics(server_round=1, received=list(received), valid=list(valid), selected=list(selected), rejected=rejected)


def test_keeps_one_byzantine_rejects_two_honest() -> None:
    # The rule keeps Byzantine 1, drops Byzantine 2 and 3, and drops honest 4 and 5.
    counts = detection_counts(diag([1, 6, 7, 8, 9, 10]), BYZANTINE)
    assert (counts["tp"], counts["fp"], counts["fn"], counts["tn"]) == (2, 2, 1, 5)
    assert counts["tp"] + counts["fp"] + counts["fn"] + counts["tn"] == len(NODES)
    assert counts["precision"] == pytest.approx(0.5)
    assert counts["recall"] == pytest.approx(2 / 3)
    assert counts["honest_selected_rate"] == pytest.approx(5 / 7)
    assert counts["byzantine_selected_rate"] == pytest.approx(1 / 3)


def test_perfect_filter() -> None:
    counts = detection_counts(diag(NODES[3:]), BYZANTINE)
    assert (counts["tp"], counts["fp"], counts["fn"], counts["tn"]) == (3, 0, 0, 7)
    assert counts["precision"] == 1.0 and counts["recall"] == 1.0
    assert counts["honest_selected_rate"] == 1.0 and counts["byzantine_selected_rate"] == 0.0


def test_rule_that_keeps_everything_detects_nothing() -> None:
    counts = detection_counts(diag(NODES), BYZANTINE)
    assert (counts["tp"], counts["fp"], counts["fn"], counts["tn"]) == (0, 0, 3, 7)
    assert math.isnan(counts["precision"])  # nothing flagged: undefined
    assert counts["recall"] == 0.0


def test_malformed_reply_counts_as_detected() -> None:
    # Byzantine 2 sent a malformed reply (received, not valid); the rule then keeps everything valid.
    valid = [n for n in NODES if n != 2]
    counts = detection_counts(diag(valid, valid=valid), BYZANTINE)
    assert (counts["tp"], counts["fp"], counts["fn"], counts["tn"]) == (1, 0, 2, 7)


def test_missing_replies_are_not_counted() -> None:
    # Byzantine 3 and honest 10 never answered: neither positive nor negative.
    received = [n for n in NODES if n not in (3, 10)]
    counts = detection_counts(diag([1, 4, 5, 6, 7, 8, 9], received=received), BYZANTINE)
    assert (counts["tp"], counts["fp"], counts["fn"], counts["tn"]) == (1, 0, 1, 6)


def test_no_byzantine_clients() -> None:
    counts = detection_counts(diag(NODES[:8]), set())
    assert (counts["tp"], counts["fp"], counts["fn"], counts["tn"]) == (0, 2, 0, 8)
    assert counts["precision"] == 0.0
    assert math.isnan(counts["recall"]) and math.isnan(counts["byzantine_selected_rate"])


def _record(round_: int, counts: dict) -> RoundRecord:
    return RoundRecord(
        round=round_, test_acc=0.5, test_loss=1.0, received=10, valid=10, selected=counts["tn"] + counts["fn"],
        agg_seconds=0.0, round_seconds=0.0, attack="lie", outcome="aggregated", **counts,
    )


def test_run_summary_sums_counts_over_rounds() -> None:
    rounds = [
        _record(1, detection_counts(diag([1, 6, 7, 8, 9, 10]), BYZANTINE)),  # TP 2 FP 2 FN 1 TN 5
        _record(2, detection_counts(diag(NODES[3:]), BYZANTINE)),  # TP 3 FP 0 FN 0 TN 7
    ]
    summary = RunResult(config={}, key="k", engine="test", byzantine_partitions=[0, 1, 2], rounds=rounds).summary()
    assert (summary["tp"], summary["fp"], summary["fn"], summary["tn"]) == (5, 2, 1, 12)
    assert summary["precision"] == pytest.approx(5 / 7)
    assert summary["recall"] == pytest.approx(5 / 6)
    assert summary["honest_selected_rate"] == pytest.approx((5 / 7 + 1) / 2)
    assert summary["byzantine_selected_rate"] == pytest.approx((1 / 3 + 0) / 2)


def test_rounds_of_a_diverged_model_do_not_count_as_rejections() -> None:
    """After divergence every honest reply is non-finite and dropped before the rule: those rounds
    are left out of the selection rates and counts, so Mean does not "keep" a fraction of them."""
    byzantine = sorted(BYZANTINE)
    clean = _record(1, detection_counts(diag(NODES), BYZANTINE))  # Mean: everything selected
    diverged = replace(
        _record(2, detection_counts(diag(byzantine, valid=byzantine), BYZANTINE)), valid=len(byzantine)
    )  # the honest replies were non-finite, only the crafted rows reached the rule
    assert clean.judged and not diverged.judged
    summary = RunResult(config={}, key="k", engine="test", byzantine_partitions=[0, 1, 2], rounds=[clean, diverged]).summary()
    assert summary["judged_rounds"] == 1
    assert summary["honest_selected_rate"] == 1.0 and summary["byzantine_selected_rate"] == 1.0
    assert (summary["tp"], summary["fp"], summary["fn"], summary["tn"]) == (0, 0, 3, 7)
