"""``signguard-sim``: run the main job, single experiments, sweeps, and reports.

::

    signguard-sim                         # the main job (= signguard-sim main)
    signguard-sim run --defense signguard --attack lie --rounds 30
    signguard-sim sweep table1-mnist      # a named sweep, into docs/results/table1-mnist
    signguard-sim sweep --defense mean,signguard --attack none,lie --byzantine-fraction 0.1,0.2
    signguard-sim sweep --list
    signguard-sim run --config examples/exp.toml --rounds 30      # an experiment file, flags override it
    signguard-sim sweep --config examples/sweep.toml              # a sweep file: [base] + [grid]
    signguard-sim report docs/results/table1-mnist --out /tmp/report
    signguard-sim report --evidence       # rebuild docs/results/report from the evidence folders

Also ``python -m simulations``.  Bad flags or values end with exit code 2 and one line on
stderr.  See docs/running.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clients.schema import EXPERIMENT_SETTINGS, Setting, choices_of

from .config import BYZANTINE_FRACTION, ExperimentConfig

__all__ = ["main", "build_parser", "CONFIG_FLAGS", "option", "CLIError", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parents[1]
"""Default result folders are relative to the repository (the Flower app's root)."""
MAIN_RESULTS = Path("results") / "main"
RUN_RESULTS = Path("results") / "runs"
SWEEP_RESULTS = Path("results") / "sweeps"
NAMED_SWEEP_RESULTS = Path("docs") / "results"
COMMANDS = ("main", "run", "sweep", "report")


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


def _engines() -> list[str]:
    from .experiment import ENGINES

    return list(ENGINES)


# ---------------------------------------------------------------------------------------------
# Parsing values
# ---------------------------------------------------------------------------------------------


def _convert(setting: Setting, text: str) -> Any:
    try:
        return setting.coerce(text, option(setting))
    except ValueError as err:
        raise CLIError(str(err)) from None


def _check_choice(setting: Setting, value: Any) -> None:
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
    from .experiment import check_run

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
        from .config_files import build_config, read_experiment

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
    from .sweep import expand

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


def _sweep_configs(args: argparse.Namespace) -> list[ExperimentConfig]:
    """The runs of ``sweep NAME`` or ``sweep --config FILE``."""
    if args.config:
        from .config_files import read_sweep

        return read_sweep(args.config).configs()
    from .paper_sweeps import build_sweep

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
                   help="the committed evidence: the folders of docs/results listed in simulations/report.py's "
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


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def _quiet_flower(verbose: bool) -> None:
    if not verbose:
        from .logs import quiet_flower

        quiet_flower()


def _engine(args: argparse.Namespace) -> str:
    engine = "ray" if args.ray_address else args.engine
    known = _engines()
    if engine not in known:
        raise CLIError(f"unknown engine {engine!r}; known: {', '.join(known)}")
    return engine


def _results_dir(args: argparse.Namespace, default: Path) -> Path:
    return Path(args.results_dir).expanduser() if args.results_dir else REPO_ROOT / default


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _run_configs(configs: Sequence[ExperimentConfig], results_dir: Path, args: argparse.Namespace, *, reuse: bool):
    from .sweep import check_jobs, run_sweep

    jobs = getattr(args, "jobs", 1)
    if jobs is None:  # the main job: one experiment per core with the in-process engine
        jobs = max(1, min(os.cpu_count() or 1, len(configs))) if _engine(args) == "inprocess" else 1
    try:
        check_jobs(jobs, _engine(args))
    except ValueError as err:
        raise CLIError(f"--{err}") from None
    return run_sweep(
        configs,
        results_dir,
        engine=_engine(args),
        reuse=reuse,
        show_progress=not args.quiet,
        ray_address=args.ray_address,
        jobs=jobs,
    )


def cmd_main(args: argparse.Namespace) -> int:
    from . import report, verdict
    from .paper_sweeps import build_sweep
    from .plots import plot_main_summary

    engine = _engine(args)
    configs = build_sweep("main")
    results_dir = _results_dir(args, MAIN_RESULTS)
    _say(f"Main job: {len(configs)} runs ({engine} engine) into {results_dir}")
    start = time.perf_counter()
    results = _run_configs(configs, results_dir, args, reuse=not args.no_reuse)
    entries = report.entries_from_results(results)
    _say()
    _say(report.table1_markdown(entries))
    _say(report.selected_rates_markdown(entries))
    summary = verdict.verdict_markdown(entries)
    markdown, figures = report.build_report(entries, results_dir)
    (results_dir / "report.md").write_text(markdown + ("\n" + summary if summary else ""))
    overview = plot_main_summary(entries, results_dir / "main-summary.png")
    _say(f"Full report: {results_dir / 'report.md'}")
    for fig in [overview, *figures]:
        _say(f"Plot: {fig}")
    if summary:
        _say()
        _say(summary)
    _say(f"Main job done in {time.perf_counter() - start:.0f} s.")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    results_dir = _results_dir(args, RUN_RESULTS)
    engine = _engine(args)
    _say(f"Run {cfg.key()} ({engine} engine): {cfg.task}, {cfg.defense} vs {cfg.attack}, "
         f"{cfg.num_clients} clients ({cfg.num_byzantine} Byzantine), {cfg.rounds} rounds")
    [result] = _run_configs([cfg], results_dir, args, reuse=False)
    summary = result.summary()
    _say(f"best accuracy {summary['best_acc']:.4f}, final {summary['final_acc']:.4f}, honest kept "
         f"{summary['honest_selected_rate']:.3f}, Byzantine kept {summary['byzantine_selected_rate']:.3f}, "
         f"precision {summary['precision']:.3f}, recall {summary['recall']:.3f}, {summary['wall_seconds']:.1f} s")
    _say(f"Results: {results_dir / (result.key + '.json')} and .csv")
    return 0


def _list_sweeps() -> int:
    from .paper_sweeps import SWEEPS

    rows = []
    for name, build in SWEEPS.items():
        configs = build()
        rounds = sum(c.rounds for c in configs)
        rows.append((name, len(configs), rounds, getattr(build, "description", "")))
    width = max(len(r[0]) for r in rows)
    _say(f"{'name':{width}s}  runs  rounds  description")
    for name, n, rounds, doc in rows:
        _say(f"{name:{width}s}  {n:4d}  {rounds:6d}  {doc}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.list:
        return _list_sweeps()
    from . import report
    from .sweep import check_result, result_path

    configs = configs_from_sweep_args(args)
    if args.name:
        default = NAMED_SWEEP_RESULTS / args.name
    else:
        default = SWEEP_RESULTS / Path(args.config).stem if args.config else SWEEP_RESULTS
    results_dir = _results_dir(args, default)
    finished: set[str] = set()
    damaged: dict[str, str] = {}
    for cfg in configs if not args.no_reuse else ():
        path = result_path(results_dir, cfg)
        if path.is_file():
            result, problem = check_result(path, cfg)
            if result is None:
                damaged[cfg.key()] = problem or "damaged"
            else:
                finished.add(cfg.key())
    extra = f", {len(damaged)} damaged (to redo)" if damaged else ""
    _say(f"Sweep {args.name or args.config or '(flags)'}: {len(configs)} runs, {len(finished)} already done{extra}, into {results_dir}")
    if args.dry_run:
        return _dry_run(configs, finished, results_dir, args.jobs, damaged)
    results = _run_configs(configs, results_dir, args, reuse=not args.no_reuse)
    entries = report.entries_from_results(results)
    _say()
    _say(report.table1_markdown(entries))
    _say(f"Tables and plots: signguard-sim report {results_dir}")
    return 0


def _measured_results(results_dir: Path) -> list:
    """Finished runs to measure round costs from: ``results_dir`` and every folder of docs/results."""
    from .sweep import load_results

    evidence = REPO_ROOT / NAMED_SWEEP_RESULTS
    folders = [results_dir, *(sorted(p for p in evidence.iterdir() if p.is_dir()) if evidence.is_dir() else [])]
    return load_results([f for f in folders if f.is_dir()])


def _dry_run(configs: Sequence[ExperimentConfig], finished: set[str], results_dir: Path, jobs: int,
             damaged: dict[str, str] | None = None) -> int:
    """List the runs (done / todo, with each todo run's estimated time) and the sweep's estimate."""
    from .sweep import estimate_seconds

    todo = [c for c in configs if c.key() not in finished]
    estimate = estimate_seconds(todo, _measured_results(results_dir), jobs=jobs)
    per_run = {r.config.key(): r.text() for r in estimate.runs}
    for cfg in configs:
        if cfg.key() in finished:
            _say(f"  [done] {cfg.key()}  rounds={cfg.rounds}")
        elif damaged and cfg.key() in damaged:
            _say(f"  [redo] {cfg.key()}  rounds={cfg.rounds}  {per_run[cfg.key()]}  (result file damaged: {damaged[cfg.key()]})")
        else:
            _say(f"  [todo] {cfg.key()}  rounds={cfg.rounds}  {per_run[cfg.key()]}")
    line = estimate.line()
    _say(line[0].upper() + line[1:] + ".")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from . import report

    if args.evidence:
        if args.results:
            raise CLIError("give RESULTS or --evidence, not both")
        out = Path(args.out).expanduser() if args.out else None
        try:
            path, markdown, figures = report.write_evidence_report(REPO_ROOT, out, plots=not args.no_plots)
        except ValueError as err:
            raise CLIError(str(err)) from None
        _say(markdown)
        _say(f"Report: {path}")
        for fig in figures:
            _say(f"Plot: {fig}")
        return 0
    if not args.results:
        raise CLIError("signguard-sim report: error: the following arguments are required: RESULTS (or --evidence) (see --help)")
    paths = [Path(p).expanduser() for p in args.results]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise CLIError(f"no such file or folder: {', '.join(missing)}")
    if args.out:
        out = Path(args.out).expanduser()
    elif len(paths) == 1 and paths[0].is_dir():
        out = paths[0]
    else:
        out = REPO_ROOT / "results" / "report"
    entries = report.load_entries(paths)
    if not entries:
        raise CLIError(f"no result files (<key>.json) under {', '.join(map(str, paths))}")
    out.mkdir(parents=True, exist_ok=True)
    markdown, figures = report.build_report(entries, out, plots=not args.no_plots)
    (out / "report.md").write_text(markdown)
    _say(markdown)
    _say(f"Report: {out / 'report.md'}")
    for fig in figures:
        _say(f"Plot: {fig}")
    return 0


COMMAND_FUNCS: dict[str, Callable[[argparse.Namespace], int]] = {
    "main": cmd_main,
    "run": cmd_run,
    "sweep": cmd_sweep,
    "report": cmd_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad flags or values, 1 a failed run)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["main", *argv]
    elif not argv[0].startswith("-") and argv[0] not in COMMANDS:
        return _fail(f"unknown command {argv[0]!r}; choose one of: {', '.join(COMMANDS)}")
    parser = build_parser()
    from .logs import restored_flower_logging

    try:
        args = parser.parse_args(argv)
        if args.command is None:
            args = parser.parse_args(["main"])
        # The command's log settings end with it (main() also runs in-process, e.g. in tests).
        with restored_flower_logging():
            _quiet_flower(getattr(args, "verbose", False))
            return COMMAND_FUNCS[args.command](args)
    except CLIError as err:
        return _fail(str(err))
    except SystemExit as exc:  # --help
        return int(exc.code or 0) if not isinstance(exc.code, str) else _fail(exc.code)
    except KeyboardInterrupt:
        sys.stderr.write("signguard-sim: interrupted (finished runs are saved; run the same command to resume)\n")
        return 130
    except Exception as err:  # noqa: BLE001 - data errors and failed runs: one line, no traceback
        from clients.tasks import DatasetError

        if isinstance(err, DatasetError):
            return _fail(" ".join(str(err).split()))
        raise


def _fail(message: str) -> int:
    message = message if message.startswith("signguard-sim") else f"signguard-sim: error: {message}"
    sys.stderr.write(message + "\n")
    return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
