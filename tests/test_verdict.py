"""The main job's closing summary: held / degraded / fell against each defense's own no-attack run."""

from __future__ import annotations

import pytest

from simulations.reporting import verdict
from simulations.reporting.entries import entries_from_results
from tests.test_report import make_result


def _entries(*results):
    return entries_from_results(results)


def test_outcomes_judge_each_defense_against_its_own_clean_run() -> None:
    entries = _entries(
        make_result(defense="mean", attack="none", accs=(0.5, 0.95)),
        make_result(defense="mean", attack="min_max", accs=(0.6, 0.55)),
        make_result(defense="signguard", attack="none", accs=(0.5, 0.93), byzantine_rate=1.0),
        make_result(defense="signguard", attack="min_max", accs=(0.5, 0.92), byzantine_rate=0.0, honest_rate=0.95),
        make_result(defense="median", attack="none", accs=(0.5, 0.90)),
        make_result(defense="median", attack="min_max", accs=(0.5, 0.85)),
    )
    by = {(o.defense, o.attack): o for o in verdict.outcomes(entries)}
    assert set(by) == {("mean", "min_max"), ("signguard", "min_max"), ("median", "min_max")}
    assert by["mean", "min_max"].drop == pytest.approx(35.0)
    assert by["mean", "min_max"].status == "fell"
    assert by["signguard", "min_max"].drop == pytest.approx(1.0)
    assert by["signguard", "min_max"].status == "held"
    assert by["signguard", "min_max"].byzantine_kept == pytest.approx(0.0)
    assert by["signguard", "min_max"].honest_kept == pytest.approx(95.0)
    assert by["median", "min_max"].status == "degraded"
    # Best accuracy, not final: SignGuard's final equals its best here, Mean's does not.
    assert by["mean", "min_max"].final == pytest.approx(55.0)


def test_seeds_are_averaged_and_attacks_without_a_clean_run_are_skipped() -> None:
    entries = _entries(
        make_result(defense="mean", attack="none", accs=(0.9,), seed=0),
        make_result(defense="mean", attack="none", accs=(0.8,), seed=1),
        make_result(defense="mean", attack="lie", accs=(0.7,), seed=0),
        make_result(defense="mean", attack="lie", accs=(0.6,), seed=1),
        make_result(defense="median", attack="lie", accs=(0.6,)),  # no clean Median run
    )
    [only] = verdict.outcomes(entries)
    assert (only.defense, only.attack) == ("mean", "lie")
    assert only.clean_best == pytest.approx(85.0) and only.best == pytest.approx(65.0)


def test_verdict_markdown_names_who_held_and_who_fell() -> None:
    entries = _entries(
        make_result(defense="mean", attack="none", accs=(0.95,)),
        make_result(defense="mean", attack="min_max", accs=(0.60,)),
        make_result(defense="signguard", attack="none", accs=(0.94,)),
        make_result(defense="signguard", attack="min_max", accs=(0.94,), byzantine_rate=0.0),
    )
    text = verdict.verdict_markdown(entries)
    line = next(line for line in text.splitlines() if "Min-Max" in line)
    assert "fell: Mean 95.0 → 60.0 (-35.0)" in line
    assert "held: SignGuard 94.0 → 94.0 (+0.0)" in line
    assert "SignGuard 0% of malicious" in text
    assert verdict.verdict_markdown(_entries(make_result(defense="mean", attack="none"))) == ""
