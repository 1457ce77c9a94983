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

from ..config import ExperimentConfig
from .args import CLIError, build_parser, config_from_args, configs_from_sweep_args, sweep_reuse_folders

__all__ = ["main", "CLIError", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parents[2]
"""Default result folders are relative to the repository (the Flower app's root)."""
MAIN_RESULTS = Path("results") / "main"
RUN_RESULTS = Path("results") / "runs"
SWEEP_RESULTS = Path("results") / "sweeps"
NAMED_SWEEP_RESULTS = Path("docs") / "results"
COMMANDS = ("main", "run", "sweep", "report")


def _engines() -> list[str]:
    from ..engine import ENGINES

    return list(ENGINES)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def _quiet_flower(verbose: bool) -> None:
    if not verbose:
        from ..engine.logs import quiet_flower

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


def _run_configs(configs: Sequence[ExperimentConfig], results_dir: Path, args: argparse.Namespace, *, reuse: bool,
                 reuse_from: Sequence[Path] = ()):
    from ..sweeps.runner import check_jobs, run_sweep

    jobs = getattr(args, "jobs", 1)
    if jobs is None:  # the main job: one experiment per core with the in-process engine
        jobs = max(1, min(os.cpu_count() or 1, len(configs))) if _engine(args) == "inprocess" else 1
    try:
        check_jobs(jobs, _engine(args))
    except ValueError as err:
        raise CLIError(f"--{err}") from None
    batched = bool(getattr(args, "batched_clients", False))
    if batched and _engine(args) != "inprocess":
        raise CLIError(f"--batched-clients needs the in-process engine, not {_engine(args)!r}")
    return run_sweep(
        configs,
        results_dir,
        engine=_engine(args),
        reuse=reuse,
        show_progress=not args.quiet,
        ray_address=args.ray_address,
        jobs=jobs,
        batched_clients=batched,
        reuse_from=reuse_from,
    )


def cmd_main(args: argparse.Namespace) -> int:
    from ..reporting.entries import entries_from_results
    from ..reporting.report import build_report
    from ..reporting.summary_figure import plot_main_summary
    from ..reporting.tables import selected_rates_markdown, table1_markdown
    from ..reporting.verdict import verdict_markdown
    from ..sweeps.named import build_sweep

    engine = _engine(args)
    configs = build_sweep("main")
    results_dir = _results_dir(args, MAIN_RESULTS)
    _say(f"Main job: {len(configs)} runs ({engine} engine) into {results_dir}")
    start = time.perf_counter()
    results = _run_configs(configs, results_dir, args, reuse=not args.no_reuse)
    entries = entries_from_results(results)
    _say()
    _say(table1_markdown(entries))
    _say(selected_rates_markdown(entries))
    summary = verdict_markdown(entries)
    markdown, figures = build_report(entries, results_dir)
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
    from ..sweeps.named import SWEEPS

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
    from ..reporting.entries import entries_from_results
    from ..reporting.tables import table1_markdown
    from ..sweeps.runner import check_result, find_shared_result, result_path

    configs = configs_from_sweep_args(args)
    if args.name:
        default = NAMED_SWEEP_RESULTS / args.name
    else:
        default = SWEEP_RESULTS / Path(args.config).stem if args.config else SWEEP_RESULTS
    results_dir = _results_dir(args, default)
    reuse_from = sweep_reuse_folders(args, results_dir)
    finished: set[str] = set()
    shared: dict[str, Path] = {}
    damaged: dict[str, str] = {}
    for cfg in configs if not args.no_reuse else ():
        path = result_path(results_dir, cfg)
        if path.is_file():
            result, problem = check_result(path, cfg)
            if result is None:
                damaged[cfg.key()] = problem or "damaged"
            else:
                finished.add(cfg.key())
                continue
        if (found := find_shared_result(results_dir, cfg, reuse_from)) is not None:
            shared[cfg.key()] = found[1]
    extra = f", {len(damaged)} damaged (to redo)" if damaged else ""
    extra += f", {len(shared)} to copy from {', '.join(sorted({f.name for f in shared.values()}))}" if shared else ""
    _say(f"Sweep {args.name or args.config or '(flags)'}: {len(configs)} runs, {len(finished)} already done{extra}, into {results_dir}")
    if args.dry_run:
        return _dry_run(configs, finished, results_dir, args.jobs, damaged, shared)
    results = _run_configs(configs, results_dir, args, reuse=not args.no_reuse, reuse_from=reuse_from)
    entries = entries_from_results(results)
    _say()
    _say(table1_markdown(entries))
    _say(f"Tables and plots: signguard-sim report {results_dir}")
    return 0


def _measured_results(results_dir: Path) -> tuple[list, list]:
    """Finished runs to measure round costs from: ``results_dir``'s own (the freshest: this code,
    this machine) and those of every other folder of docs/results, each folder read once."""
    from ..sweeps.runner import load_results

    own = results_dir.resolve() if results_dir.is_dir() else None
    evidence = REPO_ROOT / NAMED_SWEEP_RESULTS
    others = sorted(p for p in evidence.iterdir() if p.is_dir() and p.resolve() != own) if evidence.is_dir() else []
    return (load_results([results_dir]) if own else []), load_results(others)


def _dry_run(configs: Sequence[ExperimentConfig], finished: set[str], results_dir: Path, jobs: int,
             damaged: dict[str, str] | None = None, shared: dict[str, Path] | None = None) -> int:
    """List the runs (done / shared / todo, with each todo run's estimated time) and the sweep's estimate."""
    from ..sweeps.runner import estimate_seconds

    shared = shared or {}
    todo = [c for c in configs if c.key() not in finished and c.key() not in shared]
    fresh, older = _measured_results(results_dir)
    estimate = estimate_seconds(todo, older, jobs=jobs, fresh=fresh)
    per_run = {r.config.key(): r.text() for r in estimate.runs}
    for cfg in configs:
        if cfg.key() in finished:
            _say(f"  [done] {cfg.key()}  rounds={cfg.rounds}")
        elif cfg.key() in shared:
            _say(f"  [copy] {cfg.key()}  rounds={cfg.rounds}  (finished in {shared[cfg.key()]})")
        elif damaged and cfg.key() in damaged:
            _say(f"  [redo] {cfg.key()}  rounds={cfg.rounds}  {per_run[cfg.key()]}  (result file damaged: {damaged[cfg.key()]})")
        else:
            _say(f"  [todo] {cfg.key()}  rounds={cfg.rounds}  {per_run[cfg.key()]}")
    line = estimate.line()
    _say(line[0].upper() + line[1:] + ".")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..reporting.entries import load_entries
    from ..reporting.report import build_report, write_evidence_report

    if args.evidence:
        if args.results:
            raise CLIError("give RESULTS or --evidence, not both")
        out = Path(args.out).expanduser() if args.out else None
        try:
            path, markdown, figures = write_evidence_report(REPO_ROOT, out, plots=not args.no_plots)
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
    entries = load_entries(paths)
    if not entries:
        raise CLIError(f"no result files (<key>.json) under {', '.join(map(str, paths))}")
    out.mkdir(parents=True, exist_ok=True)
    markdown, figures = build_report(entries, out, plots=not args.no_plots)
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
    from ..engine.logs import restored_flower_logging

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
