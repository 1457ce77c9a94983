"""Issue #13's hardened-preset targets, checked from results (simulations/reporting/targets.py)."""

from __future__ import annotations

from simulations.reporting.entries import entries_from_results
from simulations.reporting.report import build_report
from simulations.reporting.targets import hardened_targets_markdown
from tests.test_report import make_result

HARD = {"defense_params": {"preset": "hardened"}}


def _rows(text: str) -> dict[str, tuple[str, str]]:
    out = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| target"):
            target, measured, met = (c.strip() for c in line.strip("|").split("|"))
            out[target.split(" (")[0]] = (measured, met)
    return out


def _runs(**accs_by_attack):
    return [make_result(defense="signguard", attack=a, accs=(acc,), seed=s, **HARD, **rates)
            for a, (seeds, rates) in accs_by_attack.items() for s, acc in enumerate(seeds)]


def test_met_missed_within_spread_and_missing_targets_are_told_apart() -> None:
    results = [
        make_result(defense="mean", attack="none", accs=(0.980,), seed=0),
        make_result(defense="mean", attack="none", accs=(0.982,), seed=1),
        *_runs(
            none=((0.978, 0.976), {"honest_rate": 0.95, "byzantine_rate": 1.0}),
            lie=((0.975, 0.977), {"honest_rate": 0.95, "byzantine_rate": 0.0}),
            min_max=((0.90, 0.91), {"honest_rate": 0.95, "byzantine_rate": 0.0}),
            sign_flip=((0.97, 0.97), {"honest_rate": 0.95, "byzantine_rate": 0.08}),
            byzmean=((0.97,), {"honest_rate": 0.95, "byzantine_rate": 0.02}),
            mirror=((0.930, 0.980), {"honest_rate": 0.95, "byzantine_rate": 1.0}),
        ),
        # Plain SignGuard's runs never count for the preset.
        make_result(defense="signguard", attack="none", accs=(0.10,)),
    ]
    text = hardened_targets_markdown(entries_from_results(results))
    rows = _rows(text)
    # A missed target with a measured reason links it; met targets get no such line.
    assert "Why *sign-flip: at most 5% of malicious updates kept* is missed: while honest updates" in text
    assert "../analysis/defense-aware-snapshots.md#sign-flip-against" in text
    assert text.count("Why *") == 1
    within = "within 2 points of no attack"
    assert rows[f"LIE: {within}"][1] == "yes"
    assert rows[f"Min-Max: {within}"][1] == "no" and "7.20 points below" in rows[f"Min-Max: {within}"][0]
    # 2.2 points below on average, but the two mirror seeds differ by 5 points.
    assert rows[f"Mirror: {within}"][1] == "within spread"
    assert rows["no attack within 0.5 points of Mean"][1] == "yes"  # 0.4 below
    assert rows["at least 90% of honest updates kept on average"] == ("95.0%", "yes")
    assert rows["sign-flip: at most 5% of malicious updates kept"] == ("8.0% (2 seeds)", "no")
    assert rows[f"LIE: {within}"][0].startswith("97.60±0.14 (2 seeds)")
    assert rows["LIE: no malicious update kept"][1] == "yes"
    assert rows["Min-Max: no malicious update kept"][1] == "yes"
    assert rows["ByzMean: no malicious update kept"] == ("2.00% (largest of 1 seed)", "no")
    assert rows["Min-Sum: no malicious update kept"] == ("no run", "missing")


def test_no_section_without_hardened_runs_and_the_report_carries_it() -> None:
    plain = [make_result(defense="mean", attack="none"), make_result(defense="signguard", attack="lie")]
    assert hardened_targets_markdown(entries_from_results(plain)) == ""
    markdown, _ = build_report(entries_from_results(plain + _runs(none=((0.9,), {}))), plots=False)
    assert "## The hardened SignGuard preset against its targets (issue #13)" in markdown
    assert "no attack within 0.5 points of Mean" in markdown
