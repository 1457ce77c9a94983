"""Build ``clients/tasks/data/mnist_mini.npz``: the bundled MNIST subset of the ``mnist-mini`` task.

The main job has to run offline on a fresh clone, and scikit-learn's 8x8 digits are too small to
show what the paper shows (measured: no attack of the registry costs Mean, Median or Multi-Krum
more than ~2 points there; docs/results/README.md, "The main job").  This subset is small enough
to ship in the repository (≈ 2 MB) and big enough for the paper's CNN to separate the defenses.

Selection (deterministic, no random draw): the first ``train_per_class`` images of each digit in
MNIST's original training order and the first ``test_per_class`` of each digit in the original
test order; kept in original order.  MNIST: Yann LeCun and Corinna Cortes, CC BY-SA 3.0 (see
``clients/tasks/data/README.md``).

Usage::

    python -m clients.tasks.make_mnist_mini [--data-dir D]   # D holds MNIST in any layout load_mnist reads
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .datasets import MNIST_MINI_PATH, load_mnist, default_data_dir

TRAIN_PER_CLASS = 1000
TEST_PER_CLASS = 200


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Sorted positions of the first ``per_class`` samples of every class."""
    picks = [np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
    short = [c for c, p in enumerate(picks) if len(p) < per_class]
    if short:
        raise ValueError(f"classes {short} have fewer than {per_class} samples")
    return np.sort(np.concatenate(picks))


def build(data_dir: Path, out: Path = MNIST_MINI_PATH) -> Path:
    train, test = load_mnist(data_dir)
    arrays = {}
    for split, ds, per_class in (("train", train, TRAIN_PER_CLASS), ("test", test, TEST_PER_CLASS)):
        idx = first_per_class(ds.targets, per_class)
        arrays[f"x_{split}"] = ds.data[idx, 0].numpy().astype(np.uint8)
        arrays[f"y_{split}"] = ds.targets[idx].astype(np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder holding full MNIST (default: the loaders' default)")
    args = parser.parse_args()
    path = build(Path(args.data_dir) if args.data_dir else default_data_dir())
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
