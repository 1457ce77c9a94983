"""Every setting of an experiment, declared once: the table :data:`SETTINGS`.

Each :class:`Setting` names a key in Flower's run-config spelling (``eval-every``; the Python
attribute is ``eval_every``), its kind, default, help text and who reads it.  The table drives

* ``simulations.config.ExperimentConfig`` (its fields and defaults; the run key hashes them),
* :class:`clients.settings.ClientSettings` (the honest ClientApp's fields),
* the keys the ServerApp forwards to the clients (``simulations.config.CLIENT_KEYS``),
* the ``signguard-sim`` flags and their help,
* the parsing of run configs, experiment and sweep files (:meth:`Setting.coerce`),
* ``[tool.flwr.app.config]`` in pyproject.toml (a test checks the keys and defaults agree).

To add a setting: add a :class:`Setting` here (in the place its attribute should take in the
config) and its key with the same default to pyproject.toml's ``[tool.flwr.app.config]``.

The module is plain Python (no torch, no Flower): both the ClientApp and the simulation import
it, and ``clients/`` must not import ``simulations/``.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "Setting",
    "SETTINGS",
    "SETTINGS_BY_KEY",
    "EXPERIMENT_SETTINGS",
    "CLIENT_SETTINGS",
    "SERVERAPP_SETTINGS",
    "CLIENT_MODES",
    "settings_dataclass",
    "choices_of",
    "parse_bool",
    "parse_params",
    "format_params",
]

#: Accepted values of ``client-mode``.
CLIENT_MODES = ("fedsgd", "fedavg")

_KINDS: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "params": dict[str, Any],  # run config: "k=v,k=v" (flat scalars only)
    "ints": tuple[int, ...],  # run config: "100,150"
    "int_or_none": int | None,  # run config: "" or < 0 = None (TOML has no null)
}
_EXPECTED = {
    "str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
    "params": '"key=value,..."', "ints": "integers", "int_or_none": "an integer",
}
_SIDES = ("server", "client", "both", "byzantine")
_SCOPES = ("experiment", "client", "serverapp")
_CHECKS: dict[str, Callable[[Any], bool]] = {
    ">= 0": lambda v: v >= 0,
    ">= 1": lambda v: v >= 1,
    "> 0": lambda v: v > 0 and math.isfinite(v),
    "in [0, 1]": lambda v: 0 <= v <= 1,
}


@dataclass(frozen=True, eq=False)  # a table row is itself (its default may be a dict: no field hash)
class Setting:
    """One setting.

    Attributes
    ----------
    key : str
        The run-config key (``[tool.flwr.app.config]``, ``--run-config``, files); the CLI flag
        is ``--<key>`` and the Python attribute ``key`` with ``-`` → ``_``.
    kind : str
        ``str``, ``int``, ``float``, ``bool``, ``params`` (a dict, ``"k=v,k=v"`` in a run
        config), ``ints`` (a tuple, ``"100,150"``) or ``int_or_none``.
    default : Any
        The one default: of ``ExperimentConfig``, the ClientApp, the CLI and pyproject.toml.
    help : str
        One line for ``--help`` (the default is appended when it is not empty).
    side : str
        Who reads it: ``server`` (ServerApp, simulation), ``client`` (the honest ClientApp),
        ``both``, or ``byzantine`` (the ServerApp and the clients' Byzantine wrapper).  Every
        experiment setting not ``server`` is forwarded to the clients in each message.
    scope : str
        ``experiment`` (a field of ``ExperimentConfig``, part of the run key, a CLI flag),
        ``serverapp`` (read by the ``flwr run`` ServerApp only: where results go, timeouts) or
        ``client`` (read by the ClientApp if present, not an app key: the run key lacks it).
    choices : tuple of str or str, optional
        The accepted values, or the name of the registry that lists them (see
        :func:`choices_of`).
    check : str, optional
        ``">= 0"``, ``">= 1"``, ``"> 0"`` (and finite) or ``"in [0, 1]"``.
    sweepable : bool
        Whether ``signguard-sim sweep`` takes alternatives for it (not for resources and paths).
    """

    key: str
    kind: str
    default: Any
    help: str
    side: str
    scope: str = "experiment"
    choices: tuple[str, ...] | str | None = None
    check: str | None = None
    sweepable: bool = True

    def __post_init__(self) -> None:
        if self.kind not in _KINDS or self.side not in _SIDES or self.scope not in _SCOPES:
            raise ValueError(f"setting {self.key!r}: bad kind, side or scope")
        if self.check is not None and self.check not in _CHECKS:
            raise ValueError(f"setting {self.key!r}: unknown check {self.check!r}")

    @property
    def attr(self) -> str:
        """The Python attribute (``eval_every`` for ``eval-every``)."""
        return self.key.replace("-", "_")

    @property
    def annotation(self) -> Any:
        return _KINDS[self.kind]

    def field(self) -> Any:
        """The ``dataclasses.field`` of this setting (a fresh dict per instance for params)."""
        if isinstance(self.default, dict):
            return dataclasses.field(default_factory=lambda: dict(self.default))
        return dataclasses.field(default=self.default)

    # ---------------------------------------------------------------- values
    def coerce(self, value: Any, name: str | None = None) -> Any:
        """``value`` (typed, as in a TOML file or a ConfigRecord, or text) as this setting's kind.

        Raises
        ------
        ValueError
            ``"<name>: expected <what>, got <value>"``; ``name`` defaults to the key.
        """
        name = name or self.key
        try:
            out = _coerce(self.kind, value, name)
        except ValueError as err:
            detail = f" ({err})" if self.kind == "params" and str(err) else ""
            raise ValueError(f"{name}: expected {_EXPECTED[self.kind]}, got {value!r}{detail}") from None
        return out

    def violation(self, value: Any) -> str | None:
        """What is wrong with a coerced ``value`` (``"must be >= 1"``), or None."""
        if self.check is None or value is None or _CHECKS[self.check](value):
            return None
        return f"must be {self.check}"

    def to_run_config(self, value: Any) -> Any:
        """``value`` as a flat run-config scalar (params and tuples as strings; None as -1)."""
        if self.kind == "params":
            return format_params(value)
        if self.kind == "ints":
            return ",".join(str(v) for v in value)
        if self.kind == "int_or_none" and value is None:
            return -1
        return value

    def help_text(self) -> str:
        """:attr:`help`, then the choices of a registry-backed setting, then the default.

        Registry choices are listed from the registry itself, so a newly registered rule, attack
        or task shows up in ``--help`` without editing this table.
        """
        text = self.help
        if isinstance(self.choices, str):
            text = f"{text}: {', '.join(choices_of(self))}"
        if self.default in ("", None, (), {}):
            return text
        default = str(self.default).lower() if isinstance(self.default, bool) else self.default
        return f"{text} (default {default})"


def _coerce(kind: str, value: Any, name: str) -> Any:
    if kind == "bool":
        return parse_bool(name, value)
    if kind == "params":
        return _params(value)
    if kind == "ints":
        if isinstance(value, (list, tuple)):
            return tuple(_coerce("int", v, name) for v in value)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return (int(value),)
        if isinstance(value, str):
            return tuple(int(t) for t in value.split(",") if t.strip())
        raise ValueError("")
    if kind == "int_or_none":
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        number = _coerce("int", value, name)
        return None if number < 0 else number
    if isinstance(value, bool):
        raise ValueError("")  # True is an int to Python, never a count or a rate here
    if kind == "int":
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
    elif kind == "float":
        if isinstance(value, numbers.Real):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
    elif isinstance(value, str):
        return value.strip()
    raise ValueError("")


# ------------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------------

# Order = ExperimentConfig's field order (result files list the config in it).
SETTINGS: tuple[Setting, ...] = (
    Setting("task", "str", "digits", "learning task (digits and mnist-mini run offline)", "both", choices="tasks"),
    Setting("num-clients", "int", 50, "number of clients n", "byzantine", check=">= 1"),
    Setting("num-byzantine", "int", 10, "number of Byzantine clients m", "byzantine", check=">= 0"),
    Setting("defense", "str", "signguard", "aggregation rule", "server", choices="defenses"),
    Setting("defense-params", "params", {}, 'the rule\'s parameters "k=v,k=v" (e.g. "preset=reference", "clip=False")',
            "server"),
    Setting("attack", "str", "none", "attack", "byzantine", choices="attacks"),
    Setting("attack-params", "params", {}, 'the attack\'s parameters "k=v,k=v" (e.g. "z=0.3", "scale=100")',
            "byzantine"),
    Setting("partition", "str", "iid", "data partition (shard = the paper's non-IID)", "both", choices="partitions"),
    Setting("partition-s", "float", 0.3, "IID share s of the shard partition", "both", check="in [0, 1]"),
    Setting("dirichlet-alpha", "float", 0.5, "concentration of the dirichlet partition", "both", check="> 0"),
    Setting("dirichlet-min-size", "int", 10, "minimum samples per client of the dirichlet partition", "client",
            scope="client", check=">= 0"),
    Setting("rounds", "int", 150, "communication rounds", "server", check=">= 1"),
    Setting("client-mode", "str", "fedsgd", "fedsgd (one batch gradient) or fedavg (local SGD epochs)", "client",
            choices=CLIENT_MODES),
    Setting("batch-size", "int", 50, "client mini-batch size", "client", check=">= 1"),
    Setting("local-epochs", "int", 1, "client epochs in fedavg mode", "client", check=">= 1"),
    Setting("local-lr", "float", 0.1, "client learning rate in fedavg mode", "client", check="> 0"),
    Setting("server-lr", "float", 0.1, "server SGD learning rate", "server"),
    Setting("momentum", "float", 0.9, "server SGD momentum", "server"),
    Setting("weight-decay", "float", 5e-4, "server SGD weight decay", "server"),
    Setting("lr-milestones", "ints", (), 'rounds where the server lr is multiplied by 0.1, "100,150" (default none)',
            "server"),
    Setting("seed", "int", 0, "seed of data split, Byzantine set, sampling, attacks", "both", check=">= 0"),
    Setting("data-dir", "str", "", "dataset folder (default: $SIGNGUARD_DATA_DIR, a shared/data folder beside the "
            "repository, ~/.cache/signguard-flwr/data)", "both", sweepable=False),
    Setting("download", "bool", False, "let torchvision download MNIST / Fashion-MNIST / CIFAR-10 into the data "
            "folder when absent (--download alone = true)", "both", sweepable=False),
    Setting("eval-every", "int", 5, "evaluate the global model on the test set every k rounds (and the last)",
            "server", check=">= 1"),
    Setting("knowledge", "str", "omniscient", "what colluding attacks see: omniscient, benign, colluders", "server",
            choices="knowledge"),
    Setting("byzantine-placement", "str", "random", "which clients are Byzantine: random or first", "byzantine",
            choices=("random", "first")),
    Setting("declared-f", "int_or_none", None, "f told to the defenses that take one (default, or < 0: the true "
            "number of Byzantine clients)", "server"),
    Setting("num-cpus", "float", 1.0, "CPUs per simulated client (Ray engine)", "server", sweepable=False),
    Setting("num-gpus", "float", 0.0, "GPUs per simulated client (Ray engine)", "server", sweepable=False),
    Setting("device", "str", "cpu", "torch device of aggregation, evaluation and the simulated clients' training: "
            "cpu, cuda, cuda:N, auto", "both", sweepable=False),
    Setting("results-dir", "str", "", 'where the JSON/CSV result files go ("" = results/flwr-run under the '
            "SuperLink's working directory)", "server", scope="serverapp"),
    Setting("round-timeout", "float", 3600.0, "seconds a round waits for replies", "server", scope="serverapp"),
    Setting("min-nodes", "int", 0, "nodes a round needs once all num-clients have connected (0 = num-clients; "
            "lower keeps a deployment going after losing SuperNodes)", "server", scope="serverapp"),
    Setting("node-timeout", "float", 300.0, "seconds to wait for num-clients nodes before giving up with the fix",
            "server", scope="serverapp"),
)

SETTINGS_BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
#: The fields of ``simulations.config.ExperimentConfig``, in order.
EXPERIMENT_SETTINGS: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.scope == "experiment")
#: The fields of :class:`clients.settings.ClientSettings` (what the honest ClientApp reads).
CLIENT_SETTINGS: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.side in ("client", "both"))
#: Keys only the ``flwr run`` ServerApp reads (``simulations.server_app``).
SERVERAPP_SETTINGS: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.scope == "serverapp")


_T = TypeVar("_T")


def settings_dataclass(settings: Iterable[Setting], *, frozen: bool = False) -> Callable[[type[_T]], type[_T]]:
    """Class decorator: a dataclass whose fields are ``settings`` (attribute, kind, default), in order.

    The class body holds the methods and the docstring; the fields come from the table, so a
    setting is declared in one place.
    """
    settings = tuple(settings)

    def wrap(cls: type[_T]) -> type[_T]:
        cls.__annotations__ = {s.attr: s.annotation for s in settings}
        for s in settings:
            setattr(cls, s.attr, s.field())
        return dataclass(frozen=frozen)(cls)

    return wrap


def choices_of(setting: Setting) -> list[str] | None:
    """The values ``setting`` accepts (registries are imported on demand: they pull in torch)."""
    if setting.choices is None or isinstance(setting.choices, tuple):
        return None if setting.choices is None else list(setting.choices)
    if setting.choices == "tasks":
        from clients.tasks import TASKS

        return sorted(TASKS)
    if setting.choices == "partitions":
        from clients.tasks import PARTITIONS

        return sorted(PARTITIONS)
    if setting.choices == "attacks":
        from clients.attacks import ATTACKS

        return sorted(ATTACKS)
    if setting.choices == "knowledge":
        from clients.attacks import KNOWLEDGE

        return list(KNOWLEDGE)
    if setting.choices == "defenses":
        from signguard_flwr import STRATEGIES

        return sorted(STRATEGIES)
    raise KeyError(setting.choices)


# ------------------------------------------------------------------------------------------------
# The parsers (one for booleans, one for "key=value,..." strings)
# ------------------------------------------------------------------------------------------------

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def parse_bool(name: str, value: Any) -> bool:
    """``True``/``False``, 1/0 or the strings true/false, 1/0, yes/no (any case) as a bool.

    Raises
    ------
    ValueError
        ``"<name>: expected true or false, got <value>"``.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name}: expected true or false, got {value!r}")


def parse_params(text: str | Mapping[str, Any] | None, name: str = "params") -> dict[str, Any]:
    """Parse ``"a=1,b=x,c=[1,2]"`` (or a mapping, e.g. a TOML inline table) into a dict.

    Flower's run config holds flat scalars only, so a rule's or an attack's parameters travel as
    one string.  Entries are split at commas outside brackets; values go through
    ``ast.literal_eval`` when they parse and stay strings otherwise; ``-`` in keys becomes ``_``.

    Raises
    ------
    ValueError
        ``"<name>: entry 'x' is not of the form key=value"``, or ``text`` neither a string nor a
        mapping.
    """
    try:
        return _params(text)
    except ValueError as err:
        raise ValueError(f"{name}: {str(err) or f'expected a string of key=value entries, got {text!r}'}") from None


def _params(text: Any) -> dict[str, Any]:
    if text is None or text == "":
        return {}
    if isinstance(text, Mapping):
        return {str(k).replace("-", "_"): v for k, v in text.items()}
    if not isinstance(text, str):
        raise ValueError("")
    parts, token, depth = [], "", 0
    for ch in text:
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth == 0:
            parts.append(token)
            token = ""
        else:
            token += ch
    parts.append(token)
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in parts)):
        if "=" not in part:
            raise ValueError(f"entry {part!r} is not of the form key=value")
        key, value = (s.strip() for s in part.split("=", 1))
        try:
            out[key.replace("-", "_")] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.replace("-", "_")] = value
    return out


def format_params(params: Mapping[str, Any]) -> str:
    """Inverse of :func:`parse_params` (sorted keys, so equal dicts give equal strings)."""
    return ",".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in sorted(params.items()))
