"""Reports from hand-made result files: table cells, paper pairs, plots."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from simulations.cli.main import main
from simulations.config import ExperimentConfig
from simulations.engine import RoundRecord, RunResult
from simulations.reporting import paper_numbers as paper
from simulations.reporting import report, tables
from simulations.reporting.entries import SIGNGUARD_FAMILY, entries_from_results, load_entries

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_result(
    *,
    task: str = "mnist",
    defense: str = "mean",
    attack: str = "none",
    accs: tuple[float, ...] = (0.5, 0.8, 0.9, 0.85),
    num_clients: int = 50,
    num_byzantine: int = 10,
    honest_rate: float = 1.0,
    byzantine_rate: float = 1.0,
    tp: int = 0,
    fp: int = 0,
    fn: int = 10,
    tn: int = 40,
    seed: int = 0,
    round_seconds: float = 0.1,
    **settings,
) -> RunResult:
    """A finished run with a known accuracy curve and constant per-round detection numbers."""
    cfg = ExperimentConfig(
        task=task,
        defense=defense,
        attack=attack,
        num_clients=num_clients,
        num_byzantine=num_byzantine,
        rounds=len(accs),
        seed=seed,
        **settings,
    )
    rounds = [
        RoundRecord(
            round=i + 1,
            test_acc=acc,
            test_loss=1.0 - acc if not math.isnan(acc) else float("nan"),
            received=num_clients,
            valid=num_clients,
            selected=tn + fn,
            tp=tp,
            fp=fp,
            fn=fn,
            tn=tn,
            precision=tp / (tp + fp) if tp + fp else float("nan"),
            recall=tp / (tp + fn) if tp + fn else float("nan"),
            honest_selected_rate=honest_rate,
            byzantine_selected_rate=byzantine_rate,
            agg_seconds=0.01,
            round_seconds=round_seconds,
            attack=attack,
            outcome="aggregated",
        )
        for i, acc in enumerate(accs)
    ]
    return RunResult(
        config=cfg.to_dict(),
        key=cfg.key(),
        engine="inprocess",
        byzantine_partitions=list(range(num_byzantine)),
        rounds=rounds,
        wall_seconds=1.0,
        initial_acc=0.1,
    )


def write_fixture_results(out: Path) -> Path:
    """A folder of result files with known numbers (Table I/II/III, detection, all figures)."""
    nan = float("nan")
    runs = [
        # MNIST, the paper's setting: Table I pairs.  Best accuracies 0.90, 0.97, 0.60.
        make_result(defense="mean", attack="none", accs=(0.5, nan, 0.9, 0.85)),
        make_result(defense="mean", attack="lie", accs=(0.4, 0.6, 0.5, 0.55)),
        make_result(
            defense="signguard", attack="lie", accs=(0.7, 0.97, 0.96, 0.95),
            honest_rate=0.95, byzantine_rate=0.0, tp=10, fp=2, fn=0, tn=38,
        ),
        make_result(
            defense="signguard", attack="none", accs=(0.7, 0.98, 0.96, 0.95),
            honest_rate=0.9, byzantine_rate=0.8, tp=2, fp=4, fn=8, tn=36,
        ),
        # Two seeds of one cell: mean ± std of 0.80 and 0.90 = 85.00±5.00.
        make_result(defense="median", attack="lie", accs=(0.1, 0.8, 0.7, 0.6), seed=0),
        make_result(defense="median", attack="lie", accs=(0.2, 0.9, 0.5, 0.5), seed=1),
        # Detection hand case: 3 Byzantine of 10, 1 kept, 2 honest rejected (TP 2, FP 2, FN 1, TN 5).
        make_result(
            task="digits", defense="multi_krum", attack="sign_flip", num_clients=10, num_byzantine=3,
            accs=(0.3, 0.85), tp=2, fp=2, fn=1, tn=5, honest_rate=5 / 7, byzantine_rate=1 / 3,
        ),
        make_result(task="digits", defense="mean", attack="sign_flip", num_clients=10, num_byzantine=3, accs=(0.3, 0.7)),
        # Table III: SignGuard-Sim ablations on LIE (and the full rule).
        make_result(task="cifar10", defense="signguard_sim", attack="lie", accs=(0.5, 0.91),
                    defense_params={"norm_filter": False}),
        make_result(task="cifar10", defense="signguard_sim", attack="lie", accs=(0.3, 0.40),
                    defense_params={"cluster_filter": False, "clip": False}),
        make_result(task="cifar10", defense="signguard_sim", attack="lie", accs=(0.5, 0.92)),
        # Fig. 4: Fashion-MNIST at 5 and 10 Byzantine clients, plus the no-attack benchmark.
        make_result(task="fmnist", defense="mean", attack="none", accs=(0.6, 0.88)),
        make_result(task="fmnist", defense="signguard_sim", attack="lie", num_byzantine=5, accs=(0.6, 0.87)),
        make_result(task="fmnist", defense="signguard_sim", attack="lie", num_byzantine=10, accs=(0.6, 0.86)),
        make_result(task="fmnist", defense="median", attack="lie", num_byzantine=5, accs=(0.6, 0.70)),
        make_result(task="fmnist", defense="median", attack="lie", num_byzantine=10, accs=(0.6, 0.50)),
        # Fig. 5: time-varying attack.
        make_result(task="fmnist", defense="signguard", attack="time_varying", accs=(0.5, 0.7, 0.8, 0.85)),
        make_result(task="fmnist", defense="median", attack="time_varying", accs=(0.5, 0.3, 0.6, 0.4)),
        # Fig. 6: non-IID shards at s = 0.3 and 0.8.
        make_result(task="fmnist", defense="signguard_sim", attack="lie", partition="shard", partition_s=0.3, accs=(0.5, 0.8)),
        make_result(task="fmnist", defense="signguard_sim", attack="lie", partition="shard", partition_s=0.8, accs=(0.5, 0.85)),
        make_result(task="fmnist", defense="multi_krum", attack="lie", partition="shard", partition_s=0.3, accs=(0.5, 0.4)),
        make_result(task="fmnist", defense="multi_krum", attack="lie", partition="shard", partition_s=0.8, accs=(0.5, 0.6)),
    ]
    for run in runs:
        run.write(out)
    return out


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixture_results(tmp_path_factory.mktemp("results"))


def _section(markdown: str, heading: str) -> str:
    """The text under a heading containing ``heading`` up to the next heading of the same level."""
    start = markdown.index(heading)
    level = markdown.rfind("\n", 0, start)
    hashes = markdown[level + 1 : start].strip()
    rest = markdown[start + len(heading) :]
    end = re.search(rf"\n{re.escape(hashes)} ", rest)
    return rest[: end.start()] if end else rest


def _row(table: str, label: str) -> list[str]:
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in\n{table}")


def _header(table: str) -> list[str]:
    for line in table.splitlines():
        if line.startswith("| "):
            return [c.strip() for c in line.strip().strip("|").split("|")]
    raise AssertionError("no table")


def test_table1_cells_and_paper_pairs(results_dir: Path) -> None:
    entries = load_entries([results_dir])
    md = tables.table1_markdown(entries)
    assert "Table I — best test accuracy / final test accuracy (%)" in md
    mnist = _section(md, "MNIST (CNN), IID, n = 50, 10 Byzantine (20%), 4 rounds")
    assert _header(mnist) == ["defense", "No attack", "LIE"]
    # best / final (the last evaluated round; NaN rounds are not evaluations), † = one seed.
    assert _row(mnist, "Mean") == ["Mean", "90.00 / 85.00† (99.23)", "60.00 / 55.00† (84.49)"]
    assert _row(mnist, "SignGuard") == ["SignGuard", "98.00 / 95.00† (99.11)", "97.00 / 95.00† (99.15)"]
    # Two seeds: best 80 and 90, final 60 and 50 -> mean ± std of each, no one-seed mark.
    assert _row(mnist, "Median") == ["Median", "–", "85.00±7.07 / 55.00±7.07 (74.37)"]
    assert "Seeds 0, 1: a cell with several runs shows mean±std over its seeds." in mnist
    assert "\n† one seed." in mnist
    # Mean without attack: evaluations 50, 90, 85 at rounds 1, 3, 4 (round 2 not evaluated).
    assert (
        "Convergence: Mean (no attack) last three evaluations 50.00, 90.00, 85.00 (rounds 1, 3, 4): "
        "not converged (max − min 40.00 > 0.5 points)."
    ) in mnist
    # Rows in the paper's order.
    labels = [line.split("|")[1].strip() for line in mnist.splitlines() if line.startswith("| ") and "defense" not in line]
    assert labels == ["Mean", "Median", "SignGuard"]
    # No paper number outside the paper's setting (digits; Fashion-MNIST with 5 Byzantine).
    digits = _section(md, "Digits 8×8 (MLP), IID, n = 10, 3 Byzantine (30%), 2 rounds")
    assert _row(digits, "Multi-Krum") == ["Multi-Krum", "85.00 / 85.00†"]
    assert "Convergence: Mean (no attack) last three evaluations" not in digits
    fm5 = _section(md, "Fashion-MNIST (CNN), IID, n = 50, 5 Byzantine (10%), 2 rounds")
    assert _row(fm5, "SignGuard-Sim") == ["SignGuard-Sim", "87.00 / 87.00†"]
    assert "Convergence: no Mean (no attack) run in this block." in fm5
    fm10 = _section(md, "Fashion-MNIST (CNN), IID, n = 50, 10 Byzantine (20%), 2 rounds")
    assert _row(fm10, "SignGuard-Sim") == ["SignGuard-Sim", "–", "86.00 / 86.00† (89.36)"]
    assert "Convergence: Mean (no attack) last three evaluations 60.00, 88.00 (rounds 1, 2): not converged (fewer than three evaluations)." in fm10
    # Ablations are not Table I rows.
    assert "norm_filter" not in md


def _curve(*tail: float, rounds: int = 30, every: int = 10) -> tuple[float, ...]:
    """Accuracies of ``rounds`` rounds evaluated every ``every`` rounds, ending with ``tail``."""
    nan = float("nan")
    accs = [nan] * rounds
    evaluated = [r for r in range(1, rounds + 1) if r % every == 0]
    for r, acc in zip(evaluated[-len(tail):], tail):
        accs[r - 1] = acc
    return tuple(accs)


def test_convergence_line_converged_and_not() -> None:
    converged = make_result(accs=_curve(0.985, 0.986, 0.9855))
    assert tables.has_converged(converged)
    assert tables.last_evaluations(converged) == [(10, pytest.approx(98.5)), (20, pytest.approx(98.6)), (30, pytest.approx(98.55))]
    line = tables.convergence_line(entries_from_results([converged]))
    assert line == (
        "Convergence: Mean (no attack) last three evaluations 98.50, 98.60, 98.55 (rounds 10, 20, 30): "
        "converged (max − min 0.10 ≤ 0.5 points)."
    )
    unconverged = make_result(accs=_curve(0.90, 0.93, 0.95))
    assert not tables.has_converged(unconverged)
    assert tables.convergence_line(entries_from_results([unconverged])) == (
        "Convergence: Mean (no attack) last three evaluations 90.00, 93.00, 95.00 (rounds 10, 20, 30): "
        "not converged (max − min 5.00 > 0.5 points)."
    )
    # Exactly 0.5 points is converged; other defenses and attacked Mean runs do not count.
    edge = make_result(accs=_curve(0.90, 0.905, 0.9))
    others = [make_result(defense="signguard", accs=_curve(0.1, 0.5, 0.9)), make_result(attack="lie", accs=_curve(0.1, 0.5, 0.9))]
    assert tables.convergence_line(entries_from_results([edge, *others])).endswith(
        "90.00, 90.50, 90.00 (rounds 10, 20, 30): converged (max − min 0.50 ≤ 0.5 points)."
    )
    # Several seeds: each seed's values; converged only when every seed is.
    seeds = [
        make_result(accs=_curve(0.985, 0.986, 0.9855), seed=0),
        make_result(accs=_curve(0.97, 0.98, 0.979), seed=1),
    ]
    assert tables.convergence_line(entries_from_results(seeds)) == (
        "Convergence: Mean (no attack) last three evaluations seed 0: 98.50, 98.60, 98.55 (rounds 10, 20, 30); "
        "seed 1: 97.00, 98.00, 97.90 (rounds 10, 20, 30): not converged (seed 1: max − min 1.00 > 0.5 points)."
    )
    seeds[1] = make_result(accs=_curve(0.979, 0.98, 0.9799), seed=1)
    assert tables.convergence_line(entries_from_results(seeds)).endswith(
        ": converged (every seed's max − min ≤ 0.5 points, at most 0.10)."
    )


def test_table1_blocks_carry_their_convergence_line() -> None:
    """A converged 300-round block and an unconverged 100-round block, side by side."""
    runs = [
        make_result(accs=_curve(0.985, 0.986, 0.9855, rounds=300), seed=s) for s in (0, 1)
    ] + [
        make_result(defense="signguard", attack="lie", accs=_curve(0.97, 0.98, 0.975, rounds=300), seed=s) for s in (0, 1)
    ] + [
        make_result(defense="signguard", attack="none", accs=_curve(0.95, 0.96, 0.97, rounds=300)),
        make_result(accs=_curve(0.89, 0.92, 0.95, rounds=100)),
    ]
    md = tables.table1_markdown(entries_from_results(runs))
    long = _section(md, "MNIST (CNN), IID, n = 50, 10 Byzantine (20%), 300 rounds")
    assert "(rounds 280, 290, 300): converged (every seed's max − min ≤ 0.5 points, at most 0.10)." in long
    assert _row(long, "Mean") == ["Mean", "98.60±0.00 / 98.55±0.00 (99.23)", "–"]
    assert _row(long, "SignGuard") == ["SignGuard", "97.00 / 97.00† (99.11)", "98.00±0.00 / 97.50±0.00 (99.15)"]
    assert "\n† one seed." in long
    short = _section(md, "MNIST (CNN), IID, n = 50, 10 Byzantine (20%), 100 rounds")
    assert "89.00, 92.00, 95.00 (rounds 80, 90, 100): not converged (max − min 6.00 > 0.5 points)." in short
    # A block whose every cell averages several seeds has no one-seed footnote.
    multi = tables.table1_markdown(entries_from_results(runs[:4]))
    assert "†" not in multi.split("|---", 1)[1]


def test_table1_marks_cells_with_fewer_seeds_than_the_blocks_fullest() -> None:
    """A sweep half-way through its seeds: three seeds without attack, two under LIE, one under Min-Max."""
    runs = [make_result(accs=_curve(0.985, 0.986, 0.9855, rounds=300), seed=s) for s in (0, 1, 2)]
    runs += [make_result(attack="lie", accs=_curve(0.5, 0.6, 0.7, rounds=300), seed=s) for s in (0, 1)]
    runs += [make_result(attack="min_max", accs=_curve(0.1, 0.1, 0.1, rounds=300))]
    md = tables.table1_markdown(entries_from_results(runs))
    block = _section(md, "MNIST (CNN), IID, n = 50, 10 Byzantine (20%), 300 rounds")
    assert _row(block, "Mean") == [
        "Mean", "98.60±0.00 / 98.55±0.00 (99.23)", "70.00±0.00 / 70.00±0.00‡ (84.49)", "10.00 / 10.00† (68.89)"
    ]
    assert "\n† one seed." in block and "\n‡ 2 seeds (the block's fullest cells have 3)." in block
    # Every cell at the same count: no ‡ anywhere in the block's table.
    even = tables.table1_markdown(entries_from_results(runs[:3] + [make_result(attack="lie", accs=_curve(0.5, 0.6, 0.7, rounds=300), seed=2)] + runs[3:5]))
    assert "‡" not in even.split("|---", 1)[1]


def test_table2_selected_rates_beside_paper(results_dir: Path) -> None:
    entries = load_entries([results_dir])
    md = tables.table2_markdown(entries)
    assert "CIFAR-10" in md  # says where the paper's numbers come from
    mnist = _section(md, "MNIST (CNN), IID, n = 50, 10 Byzantine (20%), 4 rounds")
    assert _header(mnist) == ["attack", "SignGuard H", "SignGuard M"]
    assert _row(mnist, "LIE") == ["LIE", "0.9500 (0.9532)", "0.0000 (0.0000)"]
    assert _row(mnist, "No attack") == ["No attack", "0.9000", "0.8000"]  # the paper has no such row
    # Outside the paper's setting (here 5 of 50 Byzantine) no paper number stands beside ours.
    fm5 = _section(md, "Fashion-MNIST (CNN), IID, n = 50, 5 Byzantine (10%), 2 rounds")
    assert "(" not in "".join(fm5.splitlines()[1:])


def test_selected_rates_and_detection(results_dir: Path) -> None:
    entries = load_entries([results_dir])
    rates = _section(tables.selected_rates_markdown(entries), "Digits 8×8 (MLP)")
    assert _row(rates, "Multi-Krum") == ["Multi-Krum", "0.714 / 0.333"]
    assert _row(rates, "Mean") == ["Mean", "1.000 / 1.000"]
    detection = _section(tables.detection_markdown(entries), "Digits 8×8 (MLP)")
    assert _row(detection, "Multi-Krum") == ["Multi-Krum", "0.50 / 0.67"]
    assert _row(detection, "Mean") == ["Mean", "– / 0.00"]  # flags nothing: precision undefined
    mnist = _section(tables.detection_markdown(entries), "MNIST (CNN), IID")
    assert _row(mnist, "SignGuard") == ["SignGuard", "0.33 / 0.20", "0.83 / 1.00"]


def test_table3_ablation_rows(results_dir: Path) -> None:
    entries = load_entries([results_dir])
    md = tables.table3_markdown(entries)
    table = _section(md, "SignGuard-Sim: CIFAR-10 (ResNet-18)")
    assert _header(table) == ["thresholding", "clustering", "norm-clip", "LIE"]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines() if line.startswith("| ") and "thresholding" not in line]
    assert rows == [
        ["✓", "", "", "40.00 (56.74)"],
        ["", "✓", "✓", "91.00 (93.17)"],
        ["✓", "✓", "✓", "92.00 (92.40)"],
    ]
    assert tables.table3_markdown([e for e in entries if e.ablation is None]) == ""
    # The full defense's runs under attacks no ablation ran under add no column.
    extra = entries_from_results([
        make_result(task="cifar10", defense="signguard_sim", attack="noise", accs=(0.5, 0.7)),
    ])
    table = _section(tables.table3_markdown(entries + extra), "SignGuard-Sim: CIFAR-10 (ResNet-18)")
    assert _header(table) == ["thresholding", "clustering", "norm-clip", "LIE"]


def test_table3_shows_attack_parameter_variants_side_by_side() -> None:
    """The clustering-only row under the reverse attack at r = 3 and at the paper's r = 100."""
    only_clustering = {"norm_filter": False, "cluster_filter": True, "clip": False}
    entries = entries_from_results([
        make_result(task="cifar10", defense="signguard_sim", attack="reverse_scaling", accs=(0.5, 0.6),
                    defense_params=only_clustering),
        make_result(task="cifar10", defense="signguard_sim", attack="reverse_scaling", accs=(0.2, 0.3),
                    defense_params=only_clustering, attack_params={"scale": 100.0}),
    ])
    table = _section(tables.table3_markdown(entries), "SignGuard-Sim: CIFAR-10 (ResNet-18)")
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines() if line.startswith("| ") and "thresholding" not in line]
    assert rows == [["", "✓", "", "60.00 [default] / 30.00 [scale=100.0] (25.29)"]]


def test_report_command_writes_markdown_and_plots(results_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["report", str(results_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    text = (out / "report.md").read_text()
    assert "Table I — best test accuracy" in printed
    for heading in ("Table I", "Table II", "Selected rates", "Table III", "Detection", "Figures"):
        assert f"## {heading}" in text
    pngs = sorted(p.name for p in out.glob("*.png"))
    kinds = {name.split("-")[0] for name in pngs}
    assert kinds == {"accuracy", "selection", "fraction", "timevarying", "noniid"}
    for name in pngs:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
        assert f"({name})" in text  # linked from the report
    assert any(name.startswith("fraction-fmnist") for name in pngs)
    assert "noniid-fmnist-noniid-n50-b10-r2.png" in pngs


def test_plots_only_for_data_present(tmp_path: Path) -> None:
    run = make_result(task="digits", defense="signguard", attack="lie", accs=(0.2, 0.5, 0.7))
    run.write(tmp_path / "r")
    _, _, figures = report.write_report([tmp_path / "r"], tmp_path / "out")
    assert [f.name for f in figures] == ["accuracy-digits-iid-n50-b10-r3.png", "selection-digits-iid-n50-b10-r3.png"]


def test_fraction_figure_keeps_only_swept_curves() -> None:
    from simulations.reporting.plots import fraction_panels

    runs = [
        make_result(task="fmnist", defense="median", attack="lie", num_byzantine=m) for m in (5, 10, 15)
    ] + [
        make_result(task="fmnist", defense="signguard_sim", attack="lie", num_byzantine=m) for m in (5, 10)
    ] + [
        make_result(task="fmnist", defense="mean", attack="lie", num_byzantine=10),  # one point: no curve
        make_result(task="fmnist", defense="median", attack="noise", num_byzantine=10),  # one fraction: no panel
        make_result(task="fmnist", defense="mean", attack="none", num_byzantine=10),
    ]
    entries = entries_from_results(runs)
    panels = fraction_panels(entries)
    assert [attack for attack, _ in panels] == ["LIE"]
    assert [(label, sorted(e.num_byzantine for e in members)) for label, members in panels[0][1]] == [
        ("Median", [5, 10, 15]), ("SignGuard-Sim", [5, 10]),
    ]
    # Nothing swept at all: every attacked run stays visible.
    single = fraction_panels(entries_from_results(runs[5:]))
    assert [attack for attack, _ in single] == ["Noise", "LIE"]


def test_report_errors(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no result files" in capsys.readouterr().err


PAPER_MD = Path(__file__).resolve().parents[2] / "shared" / "design" / "paper-results.md"


@pytest.mark.skipif(not PAPER_MD.is_file(), reason="design notes not next to the repository")
def test_paper_numbers_match_the_notes() -> None:
    """Every number of Tables I-III in paper_numbers.py is the one in design/paper-results.md."""
    text = PAPER_MD.read_text()
    names = {v: k for k, v in paper.DATASET_NAMES.items()}
    defenses = {v: k for k, v in paper.DEFENSE_NAMES.items()}
    attacks = {v: k for k, v in paper.ATTACK_NAMES.items()}
    seen = 0
    section = ""
    for line in text.splitlines():
        if line.startswith("## "):
            section = line
        if not line.startswith("| ") or "---" in line:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if section.startswith("## Table I ") and cells[0] in names:
            values = [float(v) for v in cells[2:]]
            assert [paper.table1(names[cells[0]], defenses[cells[1]], a) for a in paper.TABLE1_ATTACKS] == values
            seen += 1
        elif section.startswith("## Table II ") and cells[0] in attacks:
            values = [float(v) for v in cells[1:]]
            got = [x for d in SIGNGUARD_FAMILY for x in paper.table2(d, attacks[cells[0]])]
            assert got == values
            seen += 1
        elif section.startswith("## Table III") and cells[0] in ("✓", ""):
            combo = tuple(c == "✓" for c in cells[:3])
            assert [paper.table3(*combo, a) for a in paper.TABLE3_ATTACKS] == [float(v) for v in cells[3:]]
            seen += 1
    assert seen == 40 + 5 + 6
