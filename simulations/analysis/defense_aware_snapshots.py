"""What the SignGuard-aware attacks do to SignGuard and to its hardened preset, on real updates.

Trains the bundled-MNIST task (``mnist-mini``: the paper's CNN, 50 clients, FedSGD + Mean, no
attack) and keeps the round's honest update matrix at a few checkpoint rounds (the rule is
wrapped, the run is the ordinary experiment).  On each kept matrix ``m`` rows are replaced by an
attack's rows (computed from the honest ones, in the gradient domain, exactly as the omniscient
adversary does) and each rule is run: how many honest and Byzantine rows it keeps, and the
cosine between its aggregate and the honest mean (below 0: the step goes against the honest
direction).  Defense-aware attacks search against the rule they are evaluated on.

Usage (from the repository root; ~10 min of one core)::

    OMP_NUM_THREADS=1 .venv/bin/python -m simulations.analysis.defense_aware_snapshots \
        --rounds 5,20,60,120 --out defense-aware-snapshots.json

``--all-defenses`` runs every defense of the ``defense-aware-mnist`` sweep (the paper's, Centered
Clipping, NNM, the SignGuard family and the hardened preset) under every defense-aware attack
instead: the one-step mechanism behind that sweep's table, at a fraction of its cost.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from clients.attacks import AttackParams, apply_attack, to_attack_domain
from signguard_flwr.rules import RULES
from simulations.config import ExperimentConfig
from simulations.engine import run_experiment
from simulations.engine.experiment import rule_under_test

ATTACKS: tuple[tuple[str, dict], ...] = (
    ("none", {}),
    ("sign_flip", {}),
    ("lie", {}),
    ("min_max", {}),
    ("byzmean", {}),
    ("ipm", {"epsilon": 0.1}),
    ("sign_mimic", {}),
    ("signguard_tailored", {}),
    ("mirror", {}),
)
RULE_SETTINGS: tuple[tuple[str, str, dict], ...] = (
    ("SignGuard", "signguard", {}),
    ("SignGuard-Sim", "signguard_sim", {}),
    ("SignGuard hardened", "signguard", {"preset": "hardened"}),
)


# --all-defenses: the defense-aware-mnist sweep's defenses and attacks.
DEFENSE_AWARE_ATTACKS: tuple[tuple[str, str, dict], ...] = (
    ("none", "none", {}),
    ("ipm ε=0.1", "ipm", {"epsilon": 0.1}),
    ("ipm ε=100", "ipm", {"epsilon": 100.0}),
    ("fang_krum", "fang_krum", {}),
    ("fang_trmean", "fang_trmean", {}),
    ("agr_tailored", "agr_tailored", {}),
    ("strongest", "strongest", {}),
    ("sign_mimic", "sign_mimic", {}),
    ("signguard_tailored", "signguard_tailored", {}),
    ("mirror", "mirror", {}),
)
ALL_DEFENSES: tuple[tuple[str, str, dict], ...] = (
    ("Mean", "mean", {}),
    ("Median", "median", {}),
    ("TrMean", "trimmed_mean", {}),
    ("GeoMed", "geomed", {}),
    ("Multi-Krum", "multi_krum", {}),
    ("Bulyan", "bulyan", {}),
    ("DnC", "dnc", {}),
    ("CC", "centered_clipping", {}),
    ("NNM+Multi-Krum", "nnm_multi_krum", {}),
    ("NNM+CC", "nnm_centered_clipping", {}),
    ("SignGuard", "signguard", {}),
    ("SignGuard-Sim", "signguard_sim", {}),
    ("SignGuard-Dist", "signguard_dist", {}),
    ("SignGuard hardened", "signguard", {"preset": "hardened"}),
)


def capture(rounds: list[int], seed: int = 0) -> dict[int, torch.Tensor]:
    """Honest ``(n, d)`` update matrices of a Mean run at ``rounds`` (model deltas)."""
    rule = RULES["mean"]
    original, calls, kept = rule.fn, [0], {}

    def recording(updates: torch.Tensor, **params):
        calls[0] += 1
        if calls[0] in rounds:
            kept[calls[0]] = updates.detach().clone()
        return original(updates, **params)

    rule.fn = recording
    try:
        run_experiment(ExperimentConfig(task="mnist-mini", defense="mean", attack="none", rounds=max(rounds),
                                        eval_every=max(rounds), seed=seed))
    finally:
        rule.fn = original
    return kept


def evaluate(
    matrix: torch.Tensor,
    m: int,
    seed: int = 0,
    *,
    attacks: tuple[tuple[str, str, dict], ...] | None = None,
    rules: tuple[tuple[str, str, dict], ...] = RULE_SETTINGS,
    progress: bool = False,
) -> list[dict]:
    """Every attack × rule setting on one honest matrix; Byzantine rows are the last ``m``.

    ``attacks`` are ``(label, registry name, extra parameters)`` (default: :data:`ATTACKS`).
    Rules that keep or drop no row (``selected`` is ``None``: median, trimmed mean, GeoMed,
    centered clipping, ...) report ``None`` for both kept counts.
    """
    if attacks is None:
        attacks = tuple((name, name, extra) for name, extra in ATTACKS)
    n = matrix.shape[0]
    byz = list(range(n - m, n))
    honest = to_attack_domain(matrix.clone())
    mu = honest[: n - m].mean(dim=0)
    # The rule and parameters the experiments' strategy uses (declared f included), per setting.
    prepared = [(label, name, *rule_under_test(ExperimentConfig(defense=name, defense_params=params,
                                                                num_clients=n, num_byzantine=m)))
                for label, name, params in rules]
    out = []
    for attack_label, attack, extra in attacks:
        for label, name, rule_name, rule_params in prepared:
            started = time.perf_counter()
            kwargs = dict(rule_params)
            rows = honest.clone()
            if attack == "sign_flip":
                rows[byz] = -honest[byz]
            elif attack != "none":
                attack_params = AttackParams(target=rule_name, target_params=kwargs, **extra)
                rows[byz] = apply_attack(attack, honest, byz, attack_params).rows.to(rows.dtype)
            # Seeded coordinate samples for the randomised rules (SignGuard, DnC); -Sim is stateless here.
            if "generator" in RULES[rule_name].param_names and name != "signguard_sim":
                kwargs["generator"] = torch.Generator().manual_seed(seed + 1)
            result = RULES[rule_name](rows, **kwargs)
            vector, selected = result.vector.double(), result.selected
            cosine = float(vector @ mu.double() / (vector.norm() * mu.double().norm()).clamp_min(1e-30))
            out.append({"attack": attack_label, "rule": label,
                        "honest_kept": None if selected is None else int(selected[: n - m].sum()),
                        "byzantine_kept": None if selected is None else int(selected[n - m :].sum()),
                        "cosine_to_honest_mean": round(cosine, 3)})
            if progress:
                print(f"  {attack_label} × {label}: {time.perf_counter() - started:.1f} s", flush=True)
    return out


def mirror_bound(matrix: torch.Tensor, m: int, seed: int = 0) -> dict:
    """How far ``mirror`` gets against the hardened preset on one honest matrix, beside the bound.

    A mirror row ``h_i - κμ`` (given back its own norm and sign fractions) has median cosine
    ``≈ (1 - κ)·q`` with the honest rows, where ``q`` is the honest rows' median of that
    statistic; the direction filter keeps it while that stays above ``q - gap`` (``gap``: the
    filter's ``hardening_k`` spreads), so the attacker's κ is bounded by about ``gap / q``.  The
    aggregate ``≈ μ(1 - (m/n)·κ)`` along the honest mean keeps its sign while ``κ < n/m``: the
    attack slows training and can only reverse it where honest updates are nearly orthogonal
    (``q < gap·m/n``).  Returns the measured κ, the predicted bound, and the aggregate's
    component along the honest mean relative to the aggregate of the clean matrix.
    """
    n = matrix.shape[0]
    byz = list(range(n - m, n))
    honest = to_attack_domain(matrix.clone())
    mu = honest[: n - m].mean(dim=0).double()
    params = {"preset": "hardened"}

    def run(rows: torch.Tensor):
        return RULES["signguard"](rows, generator=torch.Generator().manual_seed(seed + 1), **params)

    clean = run(honest)
    info = clean.info
    direction = info["direction"][~torch.isnan(info["direction"])]
    q = float(direction.median())
    gap = q - float(info["direction_threshold"])
    attack = apply_attack("mirror", honest, byz, AttackParams(target="signguard", target_params=params))
    rows = honest.clone()
    rows[byz] = attack.rows.to(rows.dtype)
    attacked = run(rows)

    def along(vector: torch.Tensor) -> float:
        return float(vector.double() @ mu / (mu @ mu))

    return {"q": round(q, 4), "gap": round(gap, 4), "kappa": round(float(attack.info["kappa"]), 3),
            "kappa_bound": round(gap / q, 3) if q > 0 else float("inf"), "reversal_at": n / m,
            "byzantine_kept": int(attacked.selected[n - m :].sum()),
            "step_along_mu": round(along(attacked.vector) / along(clean.vector), 3)}


def defenses_markdown(results: dict[int, list[dict]], m: int, n: int) -> str:
    """One table per round: defenses as rows, attacks as columns (the sweep's table's layout)."""
    lines = []
    attacks = [label for label, _, _ in DEFENSE_AWARE_ATTACKS]
    for rnd, rows in results.items():
        present = [a for a in attacks if any(r["attack"] == a for r in rows)]
        lines += [f"**Round {rnd}** (Byzantine kept of {m} · cos(aggregate, honest mean); rules that keep every row: "
                  f"cosine only; honest kept of {n - m} where below {n - m})", "",
                  "| defense | " + " | ".join(present) + " |", "|---|" + "---|" * len(present)]
        for label in dict.fromkeys(r["rule"] for r in rows):
            cells = []
            for attack in present:
                c = next(r for r in rows if r["attack"] == attack and r["rule"] == label)
                text = f"{c['cosine_to_honest_mean']:+.2f}"
                if c["byzantine_kept"] is not None:
                    text = f"{c['byzantine_kept']} · {text}"
                    if c["honest_kept"] < n - m:
                        text += f" (H {c['honest_kept']})"
                cells.append(text)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def sign_flip_directions(matrix: torch.Tensor, m: int, seed: int = 0) -> dict:
    """Why the hardened preset keeps sign-flipped rows early in training, on one honest matrix.

    The last ``m`` rows are replaced by their negatives and the hardened preset is run.  Returns
    the honest rows' median pairwise cosine, the quartiles of the direction statistic
    ``s_i = median_j C_ij`` over honest and over flipped rows, the filter's threshold, and how
    many rows of each kind it keeps.  When honest updates are nearly orthogonal the two ranges of
    ``s`` overlap, so no threshold on it drops the flipped rows without dropping honest ones.
    """
    n = matrix.shape[0]
    honest = to_attack_domain(matrix.clone())
    rows = honest.clone()
    rows[n - m :] = -honest[n - m :]
    result = RULES["signguard"](rows, preset="hardened", generator=torch.Generator().manual_seed(seed + 1))
    s = result.info["direction"]
    unit = torch.nn.functional.normalize(honest[: n - m].double(), dim=1)
    pairwise = (unit @ unit.T)[~torch.eye(n - m, dtype=torch.bool)]
    quartiles = torch.tensor([0.25, 0.5, 0.75], dtype=s.dtype)

    def q(values: torch.Tensor) -> list[float]:
        return [round(float(v), 4) for v in torch.quantile(values[~torch.isnan(values)], quartiles)]

    return {"honest_pairwise_cosine": round(float(pairwise.median()), 4), "s_honest": q(s[: n - m]),
            "s_flipped": q(s[n - m :]), "threshold": round(float(result.info["direction_threshold"]), 4),
            "honest_kept": int(result.selected[: n - m].sum()), "flipped_kept": int(result.selected[n - m :].sum())}


def markdown(results: dict[int, list[dict]], m: int, n: int) -> str:
    lines = []
    for rnd, rows in results.items():
        labels = [label for label, _, _ in RULE_SETTINGS]
        lines += [f"Round {rnd} (honest kept of {n - m} / Byzantine kept of {m} / cos(aggregate, honest mean))", "",
                  "| attack | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for attack, _ in ATTACKS:
            cells = [next(r for r in rows if r["attack"] == attack and r["rule"] == label) for label in labels]
            lines.append(f"| {attack} | " + " | ".join(
                f"{c['honest_kept']} / {c['byzantine_kept']} / {c['cosine_to_honest_mean']:+.2f}" for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", default="5,20,60,120", help="checkpoint rounds, comma-separated")
    parser.add_argument("--byzantine", type=int, default=10, help="rows replaced by the attack (of 50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--mirror-bound", action="store_true",
                        help="only the mirror attack against the hardened preset, beside the bound on its κ")
    parser.add_argument("--sign-flip", action="store_true",
                        help="only sign-flip against the hardened preset: its direction statistic for honest and flipped rows")
    parser.add_argument("--all-defenses", action="store_true",
                        help="every defense of the defense-aware-mnist sweep under every defense-aware attack")
    args = parser.parse_args(argv)
    rounds = sorted({int(r) for r in args.rounds.split(",")})
    start = time.perf_counter()
    kept = capture(rounds, args.seed)
    if args.mirror_bound:
        print("| round | honest median cosine q | filter gap | κ bound gap/q | κ found | Byzantine kept | step along μ (clean = 1) |")
        print("|---|---|---|---|---|---|---|")
        for rnd in rounds:
            b = mirror_bound(kept[rnd], args.byzantine, args.seed)
            print(f"| {rnd} | {b['q']:+.4f} | {b['gap']:.4f} | {b['kappa_bound']:.2f} | {b['kappa']:.2f} | "
                  f"{b['byzantine_kept']} of {args.byzantine} | {b['step_along_mu']:+.2f} |")
        print(f"(reversal needs κ > n/m = {kept[rounds[0]].shape[0] / args.byzantine:.0f}; {time.perf_counter() - start:.0f} s)")
        return 0
    n = next(iter(kept.values())).shape[0]
    if args.sign_flip:
        print("| round | honest median pairwise cosine | s of honest rows (Q25 / Q50 / Q75) | s of flipped rows (Q25 / Q50 / Q75) "
              "| threshold | honest kept | flipped kept |")
        print("|---|---|---|---|---|---|---|")
        for rnd in rounds:
            b = sign_flip_directions(kept[rnd], args.byzantine, args.seed)
            print(f"| {rnd} | {b['honest_pairwise_cosine']:+.3f} | {' / '.join(f'{v:+.3f}' for v in b['s_honest'])} | "
                  f"{' / '.join(f'{v:+.3f}' for v in b['s_flipped'])} | {b['threshold']:+.3f} | "
                  f"{b['honest_kept']} of {n - args.byzantine} | {b['flipped_kept']} of {args.byzantine} |")
        print(f"({time.perf_counter() - start:.0f} s)")
        return 0
    if args.all_defenses:
        results = {}
        for rnd in rounds:
            print(f"round {rnd}:", flush=True)
            results[rnd] = evaluate(kept[rnd], args.byzantine, args.seed, attacks=DEFENSE_AWARE_ATTACKS,
                                    rules=ALL_DEFENSES, progress=True)
        print(defenses_markdown(results, args.byzantine, n))
    else:
        results = {rnd: evaluate(kept[rnd], args.byzantine, args.seed) for rnd in rounds}
        print(markdown(results, args.byzantine, n))
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.out is not None:
        args.out.write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
