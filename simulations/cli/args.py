"""The command line's flags and files, turned into experiment configurations.

:func:`build_parser` is ``signguard-sim``'s argument parser (every experiment setting of
:data:`clients.schema.EXPERIMENT_SETTINGS` is a flag); :func:`config_from_args` makes the one
run of ``run`` (flags over an experiment file), :func:`configs_from_sweep_args` the runs of
``sweep`` (a named sweep, a sweep file, or the product of the flags' alternatives).  A bad flag
or value raises :class:`CLIError` (one line, exit code 2); :mod:`.main` runs the commands.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clients.schema import EXPERIMENT_SETTINGS, Setting, choices_of

from ..config import BYZANTINE_FRACTION, ExperimentConfig

__all__ = ["CLIError", "CONFIG_FLAGS", "option", "validate", "config_from_args", "configs_from_sweep_args", "build_parser"]


class CLIError(Exception):
    """A bad flag or value: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise CLIError(f"{self.prog}: error: {message} (see --help)")


#: The experiment settings, each a flag ``--<key>`` (clients.schema.SETTINGS: kinds, defaults, help).
CONFIG_FLAGS: tuple[Setting, ...] = EXPERIMENT_SETTINGS
_CHOICE_FLAGS = tuple(s for s in CONFIG_FLAGS if s.choices is not None)
_METAVARS = {"int": "N", "int_or_none": "N", "float": "X", "params": "K=V,...", "ints": "R,R,..."}


def option(setting: Setting) -> str:
    """The flag of a setting: ``--eval-every``."""
    return "--" + setting.key


def _separator(setting: Setting) -> str:
    """How sweep alternatives are separated (params and milestones contain commas)."""
    return ";" if setting.kind in ("params", "ints") else ","


# ---------------------------------------------------------------------------------------------
# Parsing values
# ---------------------------------------------------------------------------------------------


def _convert(setting: Setting, text: str) -> Any:
    try:
        return setting.coerce(text, option(setting))
    except ValueError as err:
        raise CLIError(str(err)) from None


def _check_choice(setting: Setting, value: Any) -> None:
    # Not argparse's ``choices=``: a sweep flag holds several comma-separated values
    # ("--defense mean,signguard"), each checked here after the split, with one error line that
    # lists the registry's names.
    known = choices_of(setting)
    if known is not None and value not in known:
        raise CLIError(f"unknown {setting.attr.replace('_', ' ')} {value!r}; known: {', '.join(known)}")


def _values(setting: Setting, raw: str | None, *, listable: bool) -> list[Any] | None:
    if raw is None:
        return None
    parts = raw.split(_separator(setting)) if listable and setting.sweepable else [raw]
    values = list({repr(v): v for v in (_convert(setting, p) for p in parts)}.values())  # unique, in order
    for v in values:
        _check_choice(setting, v)
    return values


def validate(cfg: ExperimentConfig) -> None:
    """Check what the run would reject only later (rule and attack parameters, client settings)."""
    from clients.settings import resolve_device

    for setting in _CHOICE_FLAGS:
        _check_choice(setting, getattr(cfg, setting.attr))
    try:
        resolve_device(cfg.device)
    except ValueError as err:
        raise CLIError("--device: " + str(err).replace("Config key 'device': ", "")) from None
    from ..engine import check_run

    try:
        check_run(cfg, name=lambda key: f"--{key}")
    except ValueError as err:
        raise CLIError(str(err).replace("num-byzantine (or byzantine-fraction)", "--num-byzantine (or --byzantine-fraction)")) from None


def _make_config(base: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    try:
        return base.replace(**changes)
    except (ValueError, TypeError) as err:
        raise CLIError(str(err)) from None


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CLIError(f"--byzantine-fraction: expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise CLIError(f"--byzantine-fraction must be in [0, 1), got {value}")
    return value


def _with_fraction(cfg: ExperimentConfig, fraction: float) -> ExperimentConfig:
    return _make_config(cfg, num_byzantine=int(round(fraction * cfg.num_clients)))


def _one_byzantine_flag(args: argparse.Namespace) -> None:
    if args.byzantine_fraction is not None and args.num_byzantine is not None:
        raise CLIError("give --num-byzantine or --byzantine-fraction, not both")


def _flag_values(args: argparse.Namespace, *, listable: bool) -> dict[str, list[Any]]:
    """The alternatives of each experiment flag given (attribute -> values)."""
    axes = {}
    for setting in CONFIG_FLAGS:
        values = _values(setting, getattr(args, setting.attr), listable=listable)
        if values is not None:
            axes[setting.attr] = values
    return axes


def _from_file(read: Callable[[Any], Any], source: str) -> Any:
    """``read(source)``, its errors (which name the file and the key) as CLI errors."""
    try:
        return read(source)
    except ValueError as err:
        raise CLIError(str(err)) from None


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """One :class:`ExperimentConfig` from ``run``'s flags over ``--config``'s file (unset: the defaults)."""
    _one_byzantine_flag(args)
    changes = {k: v[0] for k, v in _flag_values(args, listable=False).items()}
    fraction = None if args.byzantine_fraction is None else _fraction(args.byzantine_fraction)
    if args.config:
        from ..sweeps.files import build_config, read_experiment

        settings = _from_file(read_experiment, args.config)
        if "num_byzantine" in changes or fraction is not None:  # a flag replaces the file's count or share
            settings = {k: v for k, v in settings.items() if k not in ("num-byzantine", BYZANTINE_FRACTION)}
        # The file's share applies to the number of clients after the flags.
        if fraction is None and BYZANTINE_FRACTION in settings:
            fraction = float(settings.pop(BYZANTINE_FRACTION))
        base = _from_file(lambda path: build_config(settings, str(path)), args.config)
    else:
        base = ExperimentConfig()
    cfg = _make_config(base, **changes)
    if fraction is not None:
        cfg = _with_fraction(cfg, fraction)
    validate(cfg)
    return cfg


def configs_from_sweep_args(args: argparse.Namespace) -> list[ExperimentConfig]:
    """A named sweep or ``--config``'s sweep file with single-value overrides, or the product of
    the comma-separated alternatives of ``sweep``'s flags."""
    _one_byzantine_flag(args)
    from ..sweeps.runner import expand

    axes = _flag_values(args, listable=True)
    fractions = None
    if args.byzantine_fraction is not None:
        fractions = [_fraction(t) for t in args.byzantine_fraction.split(",")]
    if args.name and args.config:
        raise CLIError("give a sweep NAME or --config FILE, not both")
    if args.name or args.config:
        multi = [f"--{k.replace('_', '-')}" for k, v in axes.items() if len(v) > 1]
        if multi or (fractions and len(fractions) > 1):
            raise CLIError(f"a named sweep takes single values only (overrides for every run), not lists: {' '.join(multi) or '--byzantine-fraction'}")
        configs = _from_file(lambda _: _sweep_configs(args), args.name or args.config)
        overrides = {k: v[0] for k, v in axes.items()}
        configs = [_make_config(c, **overrides) for c in configs]
        if fractions:
            configs = [_with_fraction(c, fractions[0]) for c in configs]
    else:
        base = _make_config(ExperimentConfig(), **{k: v[0] for k, v in axes.items() if len(v) == 1})
        order = [s.attr for s in CONFIG_FLAGS]
        multi_axes = {k: v for k, v in axes.items() if len(v) > 1}
        # Outermost first: task, clients, ... attack, defense (the paper's table layout).
        ordered = sorted(multi_axes, key=lambda k: (k in ("attack", "defense"), k == "defense", order.index(k)))
        try:
            configs = expand(base, **{k: multi_axes[k] for k in ordered})
        except (ValueError, TypeError) as err:
            raise CLIError(str(err)) from None
        if fractions:
            configs = [_with_fraction(c, f) for f in fractions for c in configs]
    unique: dict[str, ExperimentConfig] = {}
    for cfg in configs:
        unique.setdefault(cfg.key(), cfg)  # a run listed twice runs at its first place
    for cfg in unique.values():
        validate(cfg)
    return list(unique.values())


def sweep_reuse_folders(args: argparse.Namespace, results_dir: Path) -> list[Path]:
    """Folders whose finished runs ``sweep`` copies instead of running: the sweep file's
    ``reuse-from`` (sweep names, folders beside ``results_dir``), then ``--reuse-from``."""
    names: tuple[str, ...] = ()
    if args.config:
        from ..sweeps.files import read_sweep

        names = read_sweep(args.config).reuse_from
    elif args.name:
        from ..sweeps.named import SWEEPS

        names = SWEEPS[args.name].reuse_from if args.name in SWEEPS else ()
    folders = [results_dir.parent / name for name in names]
    for text in args.reuse_from or ():
        folder = Path(text).expanduser()
        if not folder.is_dir():
            raise CLIError(f"--reuse-from {text}: not a folder")
        folders.append(folder)
    return folders


def _sweep_configs(args: argparse.Namespace) -> list[ExperimentConfig]:
    """The runs of ``sweep NAME`` or ``sweep --config FILE``."""
    if args.config:
        from ..sweeps.files import read_sweep

        return read_sweep(args.config).configs()
    from ..sweeps.named import build_sweep

    return build_sweep(args.name)


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------


def _add_engine_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", default="inprocess", help="inprocess (default: no Ray, fastest) or ray (Flower's simulation engine)")
    p.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="attach the Ray engine to an existing cluster (ray start --head); implies --engine ray")
    p.add_argument("--results-dir", default=None, metavar="DIR", help="where <key>.json and <key>.csv go")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="show Flower's log")
    p.add_argument("--batched-clients", action="store_true",
                   help="in-process engine: compute each round's FedSGD client steps in one batched torch.func call "
                   "(models without dropout; same results up to float rounding; not part of the run's key)")


def _add_config_flags(p: argparse.ArgumentParser, *, lists: bool) -> None:
    p.add_argument("--config", default=None, metavar="FILE.toml",
                   help="a sweep file ([base] settings, [grid] alternatives; see examples/sweep.toml); flags override "
                   "its settings in every run" if lists else
                   "an experiment file: keys of [tool.flwr.app.config] (see examples/exp.toml); flags override it")
    group = p.add_argument_group(
        "experiment settings" + (" (comma-separated alternatives; ';' between alternatives of -params and --lr-milestones)" if lists else "")
    )
    for setting in CONFIG_FLAGS:
        if setting.kind == "bool":
            group.add_argument(option(setting), dest=setting.attr, default=None, nargs="?", const="true",
                               metavar="BOOL", help=setting.help_text())
            continue
        metavar = _METAVARS.get(setting.kind, setting.attr.upper())
        if lists and setting.sweepable:
            metavar = {"params": "K=V,..;..", "ints": "R,..;.."}.get(setting.kind, metavar + ",...")
        group.add_argument(option(setting), dest=setting.attr, default=None, metavar=metavar, help=setting.help_text())
    group.add_argument("--byzantine-fraction", default=None, metavar="F" + (",..." if lists else ""),
                       help="Byzantine share of the clients (sets --num-byzantine = round(F * n))")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="signguard-sim",
        description="Simulations of SignGuard and the baseline defenses on Flower. Without a command: the main job.",
        epilog="See docs/running.md for details.",
    )
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="{main,run,sweep,report}")

    p = sub.add_parser("main", help="the main job: bundled MNIST subset, 50 clients, 10 Byzantine, 4 defenses x 2 attacks (default)",
                       description="The main job: sweep 'main' into results/main, then the tables and plots.")
    _add_engine_flags(p)
    p.add_argument("--no-reuse", action="store_true", help="redo runs whose result files exist")
    _add_jobs_flag(p, all_cores=True)

    p = sub.add_parser("run", help="one experiment from flags", description="Run one experiment; results into results/runs.")
    _add_config_flags(p, lists=False)
    _add_engine_flags(p)

    p = sub.add_parser("sweep", help="a named sweep or the product of flag values (resumable)",
                       description="Run a named sweep (into docs/results/NAME) or the product of the flags' comma-separated "
                       "values (into results/sweeps). Finished runs (result files present) are reused.")
    p.add_argument("name", nargs="?", default=None, help="a named sweep (see --list)")
    p.add_argument("--list", action="store_true", help="print the named sweeps and their size")
    p.add_argument("--no-reuse", action="store_true", help="redo runs whose result files exist")
    p.add_argument("--reuse-from", action="append", default=[], metavar="DIR",
                   help="another sweep's result folder: runs finished there (same key) are copied, not run again "
                   "(repeatable; a sweep file's reuse-from names such folders beside its own)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the runs without running them, with the time each run still to do is estimated to take "
                   "(from the round costs of finished runs here and in docs/results) and the total for --jobs")
    _add_jobs_flag(p)
    _add_config_flags(p, lists=True)
    _add_engine_flags(p)

    p = sub.add_parser("report", help="markdown tables and plots from result files",
                       description="Tables in the paper's shape (Table I, II, III, detection) and PNG plots from result "
                       "files or folders. Writes report.md and the PNGs into --out and prints the markdown.")
    p.add_argument("results", nargs="*", metavar="RESULTS", help="result .json files or folders holding them")
    p.add_argument("--evidence", action="store_true",
                   help="the committed evidence: the folders of docs/results listed in simulations/reporting/report.py's "
                   "EVIDENCE_FOLDERS, into docs/results/report (or --out)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: the results folder if one is given, "
                   "docs/results/report with --evidence, else results/report)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _add_jobs_flag(p: argparse.ArgumentParser, *, all_cores: bool = False) -> None:
    p.add_argument("--jobs", "-j", type=_positive_int, default=None if all_cores else 1, metavar="N",
                   help="experiments run at once, each in its own process with cores/N torch threads "
                   "(in-process engine; default " + ("one per core" if all_cores else "1") + ")")

