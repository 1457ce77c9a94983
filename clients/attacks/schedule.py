"""Time-varying attack (SignGuard §VI-A; absent from the reference code: the design is ours)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._checks import check_choice, require_int
from .registry import get_attack, register_attack

__all__ = ["DEFAULT_TIME_VARYING_ATTACKS", "TimeVaryingSchedule", "as_attack_tuple"]

#: The attacks of the paper's Table I plus "none" (the reference's commented list, with
#: "signflip" spelled as registered).  Reverse-scaling is an ablation attack, not in the list.
DEFAULT_TIME_VARYING_ATTACKS: tuple[str, ...] = (
    "none", "random", "noise", "sign_flip", "label_flip", "lie", "byzmean", "min_max", "min_sum",
)

# Whoever runs the attack draws the round's attack from the schedule: no callable of its own.
register_attack("time_varying", kind="meta", summary="a fresh attack (or none) each round/epoch")(None)


def as_attack_tuple(value: Any) -> tuple[str, ...]:
    """Attack names from a list/tuple or a string separated by commas, bars or spaces."""
    if isinstance(value, str):
        return tuple(a for a in re.split(r"[,|\s]+", value) if a)
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise ValueError(f"tv_attacks must be a list or a comma-separated string, got {value!r}")


@dataclass(frozen=True)
class TimeVaryingSchedule:
    """Draw an attack afresh each round (or epoch), uniformly from ``attacks``, from a seed.

    Paper §VI-A: "change the attack method randomly at each epoch (including no attack
    scenario)".  The draw for period index ``e`` depends only on ``(seed, e)`` (numpy
    ``SeedSequence``), so every process that builds the schedule (the adversary, each client
    mod) agrees, whatever the order of calls.

    Parameters
    ----------
    attacks : tuple of str
        Registered attack names (not "time_varying"); default :data:`DEFAULT_TIME_VARYING_ATTACKS`.
    period : {"round", "epoch"}
        Draw per round, or per epoch of ``rounds_per_epoch`` rounds (FedSGD: 24 rounds per
        epoch on MNIST/FMNIST, 20 on CIFAR-10).
    rounds_per_epoch : int >= 1
    seed : int >= 0
    """

    attacks: tuple[str, ...] = DEFAULT_TIME_VARYING_ATTACKS
    period: str = "epoch"
    rounds_per_epoch: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        attacks = as_attack_tuple(self.attacks)
        if not attacks:
            raise ValueError("attacks must name at least one attack")
        for name in attacks:
            if get_attack(name).kind == "meta":
                raise ValueError(f"attacks must not contain {name!r}")
        object.__setattr__(self, "attacks", attacks)
        check_choice("period", self.period, ("round", "epoch"))
        require_int("rounds_per_epoch", self.rounds_per_epoch, 1)
        require_int("seed", self.seed, 0)

    def period_index(self, server_round: int) -> int:
        """0-based index of the round's period (rounds are 1-based, as Flower's)."""
        r = require_int("server_round", server_round, 1)
        return r - 1 if self.period == "round" else (r - 1) // self.rounds_per_epoch

    def attack_for_round(self, server_round: int) -> str:
        """The attack of round ``server_round`` (deterministic in ``(seed, period index)``)."""
        seq = np.random.SeedSequence([self.seed, self.period_index(server_round)])
        return self.attacks[int(np.random.default_rng(seq).integers(len(self.attacks)))]
