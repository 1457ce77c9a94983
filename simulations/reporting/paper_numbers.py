"""The SignGuard paper's published numbers (Tables I–III), as Python data for the reports.

Transcribed from J. Xu, S.-L. Huang, L. Song, T. Lan, "Byzantine-robust Federated Learning
through Collaborative Malicious Gradient Filtering" (ICDCS 2022), Tables I–III and §V.  Names
are ours: defenses as in :data:`signguard_flwr.STRATEGIES`,
attacks as in :data:`clients.attacks.ATTACKS`, datasets as in :data:`clients.tasks.TASKS`.

* Table I: best test accuracy (%), IID, n = 50 clients, 20% Byzantine (m = 10).
* Table II: average selected rate of honest (H) and malicious (M) gradients, CIFAR-10 ResNet-18.
* Table III: ablation of SignGuard-Sim's components (thresholding = norm filter, clustering =
  sign clustering, norm-clip), CIFAR-10 ResNet-18, best accuracy (%).
"""

from __future__ import annotations

from signguard_flwr.rules import RULES

__all__ = [
    "TABLE1",
    "TABLE1_ATTACKS",
    "TABLE1_DEFENSES",
    "TABLE1_SETTING",
    "TABLE2",
    "TABLE2_DATASET",
    "TABLE3",
    "TABLE3_ATTACKS",
    "TABLE3_DATASET",
    "TABLE3_DEFENSE",
    "DATASET_NAMES",
    "DEFENSE_NAMES",
    "ATTACK_NAMES",
    "table1",
    "table2",
    "table3",
]

#: How the paper (and our reports) print each name.
DATASET_NAMES: dict[str, str] = {
    "mnist": "MNIST (CNN)",
    "fmnist": "Fashion-MNIST (CNN)",
    "cifar10": "CIFAR-10 (ResNet-18)",
    "agnews": "AG-News (TextRNN)",
    "digits": "Digits 8×8 (MLP)",
    "mnist-mini": "MNIST-mini (CNN, bundled 10k subset)",
}
#: Display names of the defenses, in registry order (what each rule registered).
DEFENSE_NAMES: dict[str, str] = {name: rule.display_name for name, rule in RULES.items()}
ATTACK_NAMES: dict[str, str] = {
    "none": "No attack",
    "random": "Random",
    "noise": "Noise",
    "label_flip": "Label-flip",
    "byzmean": "ByzMean",
    "sign_flip": "Sign-flip",
    "lie": "LIE",
    "min_max": "Min-Max",
    "min_sum": "Min-Sum",
    "reverse_scaling": "Reverse (scaled)",
    "time_varying": "Time-varying",
    "lie_local": "LIE (local)",
    # Beyond the paper: attacks that know the defense (clients/attacks/defense_aware.py).
    "ipm": "IPM",
    "fang_krum": "Fang (Krum)",
    "fang_trmean": "Fang (TrMean)",
    "agr_tailored": "AGR-tailored",
    "strongest": "Strongest",
    "sign_mimic": "Sign-mimic",
    "signguard_tailored": "SignGuard-tailored",
    "mirror": "Mirror",
}

#: The setting of Table I: a result is comparable when it matches it.
TABLE1_SETTING = {"partition": "iid", "num_clients": 50, "num_byzantine": 10}

TABLE1_ATTACKS: tuple[str, ...] = ("none", "random", "noise", "label_flip", "byzmean", "sign_flip", "lie", "min_max", "min_sum")
"""Table I's columns, in the paper's order (our attack names)."""

TABLE1_DEFENSES: tuple[str, ...] = ("mean", "trimmed_mean", "median", "geomed", "multi_krum", "bulyan", "dnc", "signguard", "signguard_sim", "signguard_dist")
"""Table I's rows, in the paper's order."""

_TABLE1_ROWS: dict[str, dict[str, tuple[float, ...]]] = {
    "mnist": {  # MNIST (CNN)
        "mean": (99.23, 84.84, 90.48, 99.05, 31.98, 98.42, 84.49, 68.89, 34.46),
        "trimmed_mean": (98.23, 98.63, 98.53, 95.31, 58.87, 98.44, 94.50, 34.48, 43.89),
        "median": (97.46, 94.18, 97.45, 93.84, 40.04, 97.73, 74.37, 26.11, 38.13),
        "geomed": (93.21, 82.77, 78.68, 86.20, 45.02, 74.78, 34.37, 15.62, 20.53),
        "multi_krum": (99.20, 98.98, 99.11, 99.06, 83.26, 98.82, 90.04, 52.77, 27.27),
        "bulyan": (99.10, 99.17, 99.12, 99.15, 98.58, 98.81, 98.86, 52.45, 51.95),
        "dnc": (99.09, 99.07, 99.08, 99.17, 82.25, 98.73, 99.12, 98.97, 81.04),
        "signguard": (99.11, 99.09, 98.97, 99.18, 99.02, 99.13, 99.15, 99.18, 99.15),
        "signguard_sim": (99.16, 99.18, 99.16, 99.07, 98.91, 99.06, 99.22, 99.08, 99.13),
        "signguard_dist": (98.95, 99.05, 99.18, 99.11, 98.93, 98.86, 98.96, 99.01, 99.19),
    },
    "fmnist": {  # Fashion-MNIST (CNN)
        "mean": (89.51, 69.88, 31.83, 89.37, 16.31, 86.68, 79.78, 47.73, 45.12),
        "trimmed_mean": (87.02, 87.81, 87.45, 79.58, 62.66, 87.45, 54.28, 45.71, 42.96),
        "median": (80.77, 82.96, 82.59, 77.41, 47.46, 82.52, 45.14, 47.43, 50.83),
        "geomed": (76.51, 79.96, 78.93, 78.16, 40.51, 70.65, 10.00, 73.75, 66.63),
        "multi_krum": (87.89, 89.12, 88.94, 89.27, 69.95, 87.59, 72.22, 40.08, 47.36),
        "bulyan": (88.80, 89.31, 89.32, 89.21, 88.72, 87.52, 88.64, 59.65, 43.63),
        "dnc": (89.21, 88.89, 88.14, 88.85, 70.15, 87.58, 71.82, 88.43, 88.94),
        "signguard": (89.48, 89.34, 89.32, 89.12, 89.35, 88.69, 89.34, 89.48, 88.51),
        "signguard_sim": (89.43, 89.24, 89.21, 89.33, 89.28, 89.08, 89.36, 89.04, 88.18),
        "signguard_dist": (89.37, 88.87, 89.30, 89.31, 89.39, 89.21, 89.36, 89.34, 88.38),
    },
    "cifar10": {  # CIFAR-10 (ResNet-18)
        "mean": (93.16, 44.53, 46.34, 91.98, 17.18, 79.63, 55.86, 23.84, 18.17),
        "trimmed_mean": (93.15, 89.61, 89.47, 85.15, 30.13, 85.54, 43.76, 24.81, 23.36),
        "median": (74.18, 68.27, 71.42, 71.19, 23.47, 70.75, 27.35, 20.46, 22.74),
        "geomed": (65.62, 70.41, 69.35, 70.76, 24.86, 67.82, 23.55, 50.36, 45.23),
        "multi_krum": (93.14, 92.88, 92.81, 92.26, 50.41, 92.36, 42.58, 21.17, 38.24),
        "bulyan": (92.78, 91.87, 92.47, 92.24, 81.33, 90.12, 74.52, 29.87, 37.79),
        "dnc": (92.73, 88.01, 88.25, 92.05, 36.56, 84.76, 47.37, 52.94, 35.36),
        "signguard": (93.03, 92.78, 92.52, 92.28, 92.46, 88.61, 92.93, 92.56, 92.47),
        "signguard_sim": (93.19, 92.51, 91.38, 92.26, 92.26, 92.48, 92.62, 92.63, 92.75),
        "signguard_dist": (92.76, 92.64, 92.26, 92.51, 92.42, 91.69, 92.36, 92.82, 92.93),
    },
    "agnews": {  # AG-News (TextRNN)
        "mean": (89.36, 28.18, 28.41, 86.72, 25.05, 84.18, 79.34, 27.32, 25.24),
        "trimmed_mean": (87.57, 88.33, 88.72, 85.50, 37.51, 84.84, 66.95, 30.05, 30.28),
        "median": (84.57, 84.52, 84.59, 82.08, 28.99, 81.10, 32.39, 30.28, 29.71),
        "geomed": (82.38, 77.63, 77.18, 78.42, 27.36, 81.64, 31.57, 74.82, 71.48),
        "multi_krum": (88.86, 89.18, 89.22, 86.89, 68.53, 87.42, 72.98, 53.51, 32.46),
        "bulyan": (88.22, 88.86, 88.93, 85.54, 85.80, 86.55, 85.49, 47.76, 51.25),
        "dnc": (89.13, 86.42, 86.28, 86.72, 31.47, 86.30, 76.58, 88.45, 89.05),
        "signguard": (89.29, 89.22, 89.23, 86.78, 89.24, 86.53, 89.26, 89.23, 89.27),
        "signguard_sim": (89.24, 89.13, 89.29, 87.05, 89.36, 86.76, 89.33, 89.27, 89.37),
        "signguard_dist": (89.23, 89.16, 89.23, 87.25, 89.31, 87.30, 89.17, 89.22, 89.35),
    },
}

TABLE1: dict[str, dict[str, dict[str, float]]] = {
    dataset: {defense: dict(zip(TABLE1_ATTACKS, values)) for defense, values in rows.items()}
    for dataset, rows in _TABLE1_ROWS.items()
}
"""``TABLE1[dataset][defense][attack]``: best test accuracy in %."""

TABLE2_DATASET = "cifar10"
TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "byzmean": {"signguard": (0.9625, 0), "signguard_sim": (0.7791, 0), "signguard_dist": (0.9272, 0.0003)},
    "sign_flip": {"signguard": (0.6870, 0.3908), "signguard_sim": (0.7639, 0.0981), "signguard_dist": (0.7570, 0.2440)},
    "lie": {"signguard": (0.9532, 0), "signguard_sim": (0.7727, 0), "signguard_dist": (0.9151, 0)},
    "min_max": {"signguard": (0.9650, 0), "signguard_sim": (0.7866, 0.0003), "signguard_dist": (0.9105, 0.0009)},
    "min_sum": {"signguard": (0.9640, 0), "signguard_sim": (0.7752, 0), "signguard_dist": (0.9111, 0)},
}
"""``TABLE2[attack][defense] = (honest, malicious)`` average selected rates (CIFAR-10 only)."""

TABLE3_DATASET = "cifar10"
TABLE3_DEFENSE = "signguard_sim"
TABLE3_ATTACKS: tuple[str, ...] = ("random", "reverse_scaling", "lie")
"""Table III's columns: Random, Reverse (scaled), LIE."""
TABLE3: dict[tuple[bool, bool, bool], tuple[float, ...]] = {
    (True, False, False): (47.41, 44.48, 56.74),
    (False, True, False): (88.43, 25.29, 88.18),
    (False, False, True): (55.27, 54.29, 45.98),
    (True, True, False): (93.17, 92.43, 93.21),
    (False, True, True): (93.11, 93.02, 93.17),
    (True, True, True): (92.76, 93.16, 92.40),
}
"""``TABLE3[(thresholding, clustering, norm_clip)]``: best accuracy (%) per :data:`TABLE3_ATTACKS`."""


def table1(dataset: str, defense: str, attack: str) -> float | None:
    """Table I's best accuracy (%) for this cell, or None when the paper has none."""
    return TABLE1.get(dataset, {}).get(defense, {}).get(attack)


def table2(defense: str, attack: str) -> tuple[float, float] | None:
    """Table II's (honest, malicious) selected rates (CIFAR-10), or None."""
    return TABLE2.get(attack, {}).get(defense)


def table3(norm_filter: bool, cluster_filter: bool, clip: bool, attack: str) -> float | None:
    """Table III's best accuracy (%) for SignGuard-Sim with these components on, or None."""
    row = TABLE3.get((bool(norm_filter), bool(cluster_filter), bool(clip)))
    if row is None or attack not in TABLE3_ATTACKS:
        return None
    return row[TABLE3_ATTACKS.index(attack)]
