"""Time estimates of planned sweeps from the round costs of finished runs (synthetic results)."""

from __future__ import annotations

import pytest

from simulations.config import ExperimentConfig
from simulations.engine import RoundRecord, RunResult
from simulations.sweeps.runner import estimate_seconds, format_duration, round_seconds

NAN = float("nan")


def measured(task: str, defense: str, attack: str, *per_round: float, seed: int = 0, device: str = "cpu") -> RunResult:
    """A finished run whose rounds took ``per_round`` seconds each."""
    cfg = ExperimentConfig(task=task, defense=defense, attack=attack, rounds=max(1, len(per_round)), seed=seed, device=device)
    rounds = [
        RoundRecord(
            round=i + 1, test_acc=NAN, test_loss=NAN, received=50, valid=50, selected=50, tp=0, fp=0, fn=10, tn=40,
            precision=NAN, recall=0.0, honest_selected_rate=1.0, byzantine_selected_rate=1.0, agg_seconds=0.01,
            round_seconds=s, attack=attack, outcome="aggregated",
        )
        for i, s in enumerate(per_round)
    ]
    return RunResult(config=cfg.to_dict(), key=cfg.key(), engine="inprocess", byzantine_partitions=[], rounds=rounds)


def plan(task: str, defense: str, attack: str, rounds: int = 100, **kw) -> ExperimentConfig:
    return ExperimentConfig(task=task, defense=defense, attack=attack, rounds=rounds, **kw)


MEASURED = [
    measured("mnist", "mean", "none", 1.0, 3.0),  # 2.0 s/round
    measured("mnist", "mean", "lie", 4.0, 4.0),  # 4.0
    measured("mnist", "signguard", "lie", 5.0, 5.0, seed=0),  # 5.0
    measured("mnist", "signguard", "lie", 7.0, 7.0, seed=1),  # 7.0 -> median 6.0
    measured("fmnist", "median", "none", 1.5, NAN),  # NaN rounds ignored: 1.5
    measured("cifar10", "mean", "none", 0.2, 0.2, device="cuda"),
]


def test_round_seconds_is_the_mean_over_rounds() -> None:
    assert round_seconds(MEASURED[0]) == pytest.approx(2.0)
    assert round_seconds(MEASURED[4]) == pytest.approx(1.5)
    assert round_seconds(measured("mnist", "mean", "none")) is None  # no rounds


def test_most_specific_match_wins() -> None:
    configs = [
        plan("mnist", "mean", "none"),  # task+defense+attack: 2.0 s/round
        plan("mnist", "signguard", "lie", rounds=10),  # two seeds: median 6.0
        plan("mnist", "mean", "min_max"),  # task+defense: median(2.0, 4.0) = 3.0
        plan("mnist", "dnc", "none"),  # task: median(2, 4, 5, 7) = 4.5
        plan("fmnist", "signguard", "lie", rounds=40),  # task: 1.5
    ]
    est = estimate_seconds(configs, MEASURED)
    got = [(r.match, r.measured, r.per_round, r.seconds) for r in est.runs]
    assert got == [
        ("task+defense+attack", 1, pytest.approx(2.0), pytest.approx(200.0)),
        ("task+defense+attack", 2, pytest.approx(6.0), pytest.approx(60.0)),
        ("task+defense", 2, pytest.approx(3.0), pytest.approx(300.0)),
        ("task", 4, pytest.approx(4.5), pytest.approx(450.0)),
        ("task", 1, pytest.approx(1.5), pytest.approx(60.0)),
    ]
    assert est.work_seconds == pytest.approx(1070.0)
    assert est.wall_seconds == pytest.approx(1070.0)  # one run at a time
    assert est.measured_runs == 5  # every result but the CUDA one
    assert est.unmeasured == {}
    assert est.runs[0].text() == "~3 min (2.00 s/round, task+defense+attack, 1 run)"
    assert est.line() == "estimated 18 min (18 min of work, one run at a time), from measured round costs of 5 runs"


def test_jobs_run_at_once() -> None:
    configs = [plan("mnist", "mean", "none", rounds=r) for r in (300, 300, 300, 300)]  # 600 s each
    est = estimate_seconds(configs, MEASURED, jobs=2)
    assert est.work_seconds == pytest.approx(2400.0)
    assert est.wall_seconds == pytest.approx(1200.0)
    assert est.line() == "estimated 20 min (40 min of work, 2 jobs at once), from measured round costs of 1 run"
    # More jobs than runs: no faster than the longest run; uneven runs are scheduled in order.
    assert estimate_seconds(configs[:1], MEASURED, jobs=4).wall_seconds == pytest.approx(600.0)
    uneven = [plan("mnist", "mean", "none", rounds=r) for r in (100, 300, 100, 100)]  # 200, 600, 200, 200 s
    assert estimate_seconds(uneven, MEASURED, jobs=2).wall_seconds == pytest.approx(600.0)


def test_tasks_without_a_measurement_are_named_and_left_out() -> None:
    configs = [
        plan("agnews", "mean", "none"),
        plan("agnews", "signguard", "lie"),
        plan("cifar10", "mean", "none"),  # measured on CUDA only
        plan("cifar10", "mean", "none", seed=1, device="cuda"),  # 0.2 s/round on CUDA
        plan("mnist", "mean", "none"),
    ]
    est = estimate_seconds(configs, MEASURED, jobs=2)
    assert [r.seconds for r in est.runs] == [None, None, None, pytest.approx(20.0), pytest.approx(200.0)]
    assert est.runs[0].text() == "no measurement for task agnews"
    assert est.runs[2].text() == "no measurement for task cifar10 on cpu, measured on cuda only"
    assert est.unmeasured == {"no measurement for task agnews": 2, "no measurement for task cifar10 on cpu, measured on cuda only": 1}
    assert est.work_seconds == pytest.approx(220.0)
    assert est.line() == (
        "estimated 3 min (4 min of work, 2 jobs at once), from measured round costs of 2 runs; "
        "no measurement for task agnews (2 runs not in the estimate); "
        "no measurement for task cifar10 on cpu, measured on cuda only (1 run not in the estimate)"
    )
    nothing = estimate_seconds([plan("agnews", "mean", "none")], [])
    assert nothing.line() == "no measurement for task agnews (1 run not in the estimate)"
    assert estimate_seconds([], MEASURED).line() == "nothing to run"


def test_duplicate_results_count_once() -> None:
    est = estimate_seconds([plan("mnist", "mean", "none")], [MEASURED[0], MEASURED[0]])
    assert est.measured_runs == 1 and est.runs[0].measured == 1


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (45.2, "45 s"), (59.6, "1 min"), (150.1, "3 min"), (3599, "1 h"), (3600, "1 h"),
     (12000, "3 h 20 min"), (100 * 3600 + 60, "100 h 1 min")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_fresh_runs_win_and_scale_the_older_measurements() -> None:
    # The sweep's own finished runs (same code, same machine) ran at half the older cost of
    # the same cells: matched cells use them alone, the others get the older cost × 0.5.
    fresh = [
        measured("mnist", "mean", "none", 1.0, 1.0, seed=1),  # older same cell: 2.0 -> ratio 0.5
        measured("mnist", "signguard", "lie", 3.0, 3.0, seed=2),  # older same cell: median 6.0 -> 0.5
    ]
    configs = [
        plan("mnist", "mean", "none", seed=2),  # fresh task+defense+attack: 1.0
        plan("mnist", "mean", "lie"),  # older task+defense+attack 4.0, × 0.5
        plan("fmnist", "median", "none"),  # another task: no fresh run, no drift: 1.5
    ]
    est = estimate_seconds(configs, [*MEASURED, *fresh], fresh=fresh)
    got = [(r.match, r.measured, r.per_round, r.scale) for r in est.runs]
    assert got == [
        ("task+defense+attack", 1, pytest.approx(1.0), None),
        ("task+defense+attack", 1, pytest.approx(2.0), pytest.approx(0.5)),
        ("task+defense+attack", 1, pytest.approx(1.5), None),
    ]
    assert est.drift == {"mnist": pytest.approx(0.5)}
    assert est.runs[1].text() == "~3 min (2.00 s/round, task+defense+attack, 1 run, ×0.50 drift)"
    assert "older mnist measurements ×0.50" in est.line()
    # Without fresh runs the same call keeps the older costs.
    assert estimate_seconds(configs, MEASURED).runs[1].per_round == pytest.approx(4.0)
