"""Attack math of the SignGuard threat model: pure functions on torch tensors, no Flower.

This package is the one place where the attacks are computed, and :data:`ATTACKS` the one
registry both sides look them up in: the Byzantine client mod (:mod:`clients.byzantine`) runs
the client-side ones on a single client's update; the omniscient simulation adversary
(:mod:`simulations.engine.adversary`) runs the colluding ones on the round's whole update matrix.
Both therefore produce bit-identical vectors for the same inputs.

Modules: :mod:`~clients.attacks.registry` (``register_attack``, ``ATTACKS``),
:mod:`~clients.attacks.client_side` (random, noise, sign-flip, label-flip, reverse scaling,
local LIE), :mod:`~clients.attacks.colluding` (LIE, ByzMean, Min-Max, Min-Sum, γ search),
:mod:`~clients.attacks.defense_aware` (IPM, Fang et al., AGR-tailored and SignGuard-aware
attacks that know the rule under test), :mod:`~clients.attacks.schedule` (time-varying), :mod:`~clients.attacks.params`
(``AttackParams``), :mod:`~clients.attacks.apply` (``apply_attack``, the adversary's step),
:mod:`~clients.attacks.common` (seeds, attack domain, statistics).  A new attack is one
``@register_attack`` function in one of them (see :mod:`~clients.attacks.registry`).

Notation (SignGuard, Xu et al., ICDCS 2022, §V-B; ``docs/threat-model.md``)
---------------------------------------------------------------------------
``n`` clients submit vectors in a round, ``m`` of them Byzantine.  ``H`` is a matrix whose rows
are honest vectors ``h_i``; ``μ`` its row mean and ``σ`` its per-coordinate **unbiased** standard
deviation (``n − 1`` denominator, as the reference code).  Attacks are written in the paper's
*gradient* domain; :func:`to_attack_domain` turns a model update ``Δ = w_local − w_global`` into
the pseudo-gradient ``g = −Δ`` first (for a FedSGD client with a unit step, exactly the
mini-batch gradient), so that ``μ − z·σ`` means what the paper means.

Knowledge of a colluding attacker (``knowledge=``)
--------------------------------------------------
``"omniscient"`` (default, as the reference code)
    μ, σ and the Min-Max/Min-Sum constraints use **all n honest vectors**: every benign
    client's and the Byzantine clients' own honest ones.
``"benign"``
    only the ``n − m`` benign clients' vectors (Shejwalkar & Houmansadr's, Blades', FLPoison's
    choice).
``"colluders"``
    only the Byzantine clients' own honest vectors (Baruch et al.'s non-omniscient LIE); needs
    ``m >= 2``.
"""

from __future__ import annotations

# Registration order is the order of ATTACKS: client-side, colluding, then time-varying.
from ..schema import parse_bool
from ._checks import require_int
from .client_side import flip_labels, noise_attack, random_update, reverse_scaling, sign_flip
from .colluding import PERTURBATIONS, byzmean, gamma_search, lie, lie_attack, lie_z_max, min_max, min_sum
from .defense_aware import fang_krum, fang_trmean, ipm, match_sign_fractions, sign_mimic, tailored_gamma
from .common import KNOWLEDGE, from_attack_domain, knowledge_index, knowledge_rows, make_generator, mean_std, to_attack_domain
from .schedule import DEFAULT_TIME_VARYING_ATTACKS, TimeVaryingSchedule
from .params import AttackParams, parse_attack_params
from .registry import ATTACKS, AttackInfo, AttackResult, get_attack, is_client_side, is_colluding, register_attack
from .apply import apply_attack

__all__ = [
    "ATTACKS",
    "AttackInfo",
    "AttackParams",
    "AttackResult",
    "DEFAULT_TIME_VARYING_ATTACKS",
    "KNOWLEDGE",
    "PERTURBATIONS",
    "TimeVaryingSchedule",
    "apply_attack",
    "byzmean",
    "flip_labels",
    "from_attack_domain",
    "gamma_search",
    "fang_krum",
    "fang_trmean",
    "get_attack",
    "ipm",
    "is_client_side",
    "is_colluding",
    "knowledge_index",
    "knowledge_rows",
    "lie",
    "lie_attack",
    "lie_z_max",
    "make_generator",
    "match_sign_fractions",
    "mean_std",
    "min_max",
    "min_sum",
    "noise_attack",
    "parse_attack_params",
    "parse_bool",
    "random_update",
    "register_attack",
    "require_int",
    "reverse_scaling",
    "sign_flip",
    "sign_mimic",
    "tailored_gamma",
    "to_attack_domain",
]
