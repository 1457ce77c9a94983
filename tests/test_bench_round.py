"""The round benchmark's pieces run (what they print is measured, not asserted)."""

import pytest

from simulations.bench import round as bench_round
from simulations.config import ExperimentConfig


def test_per_client_breakdown_times_every_piece_of_a_client_call():
    cfg = ExperimentConfig(task="digits", num_clients=10, num_byzantine=0, defense="mean", attack="none", rounds=3)
    pieces = dict(bench_round.client_call_breakdown(cfg, calls=1, repeats=1))
    assert len(pieces) == 7
    assert all(ms > 0 for ms in pieces.values())
    whole = pieces["whole ClientApp call on a delivered Message"]
    # The call contains the copy of its instruction and the reply's serialisation.
    assert whole > pieces["  per-node copy of the instruction (Message + records)"]
    assert whole > pieces["  reply's state_dict into an ArrayRecord"]


def test_per_client_breakdown_times_torch_max_pool_beside_the_fast_one_for_the_cnn():
    cfg = ExperimentConfig(task="mnist-mini", num_clients=10, num_byzantine=0, defense="mean", attack="none", rounds=3)
    pieces = dict(bench_round.client_call_breakdown(cfg, calls=1, repeats=1))
    assert pieces["plain step with torch's nn.MaxPool2d (instead of FastMaxPool2d)"] > 0
    assert len(pieces) == 8


def test_round_bench_needs_a_round_between_warm_up_and_evaluation(capsys):
    with pytest.raises(SystemExit):
        bench_round.main(["--rounds", "2"])
    assert "at least 3" in capsys.readouterr().err
