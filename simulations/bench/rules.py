"""Benchmark every aggregation rule against a single pass over the data and Flower's built-ins.

Run::

    .venv/bin/python -m simulations.bench.rules [--d 1000000 11000000] [--n 50] [--f 10]
        [--repeats 3] [--skip-flower-slow] [--flower-timeout 1800] [--rules median krum ...]

For each ``d`` one random float32 ``(n, d)`` matrix is drawn (seeded).  Every rule in
``RULES`` is timed on it (median of ``--repeats`` calls; ``f`` is passed to rules that take
it, a seeded generator to rules that take one) and compared with the time of a single pass,
``updates.mean(0)``.  Where Flower ships a counterpart (legacy ``flwr.server.strategy.aggregate``
and the Message-API functions in ``flwr.serverapp.strategy``), it is fed the same rows as
numpy arrays and timed too, with the speed-up, the largest absolute difference between its
output and ours, and on how many coordinates they differ by more than 1e-5.

Each Flower call runs in a forked child process (it inherits the data copy-on-write and uses
only numpy), so a call that exceeds ``--flower-timeout`` seconds is killed and reported
instead of hanging the benchmark.  Flower's legacy Krum, Multi-Krum and Bulyan loop over all
``n^2`` pairs of rows in Python (Bulyan repeats that ``n - 2f`` times) and are run
``--flower-slow-repeats`` times (default 1); ``--skip-flower-slow`` leaves them out.

Prints a Markdown table per ``d`` on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from signguard_flwr.rules import RULES


@dataclass
class FlowerCounterpart:
    """A Flower function to time against one of our rules.

    ``setup(rows, n, f)`` builds the inputs Flower expects (not timed); ``run(state, n, f)``
    is the timed call and returns the aggregated vector as a 1-D numpy array.
    """

    label: str
    setup: Callable[[list[np.ndarray], int, int], Any]
    run: Callable[[Any, int, int], np.ndarray]
    slow: bool = False
    note: str = ""


def _legacy_results(rows: list[np.ndarray], n: int, f: int) -> list:
    return [([row], 1) for row in rows]


def _records(rows: list[np.ndarray], n: int, f: int) -> list:
    from flwr.app import ArrayRecord, MetricRecord, RecordDict

    return [
        RecordDict({"arrays": ArrayRecord([row]), "metrics": MetricRecord({"num-examples": 1})})
        for row in rows
    ]


def _stack(rows: list[np.ndarray], n: int, f: int) -> list[np.ndarray]:
    return rows


def _first_array(record: Any) -> np.ndarray:
    return record.to_numpy_ndarrays()[0]


def _flower_counterparts() -> dict[str, list[FlowerCounterpart]]:
    from flwr.server.strategy.aggregate import (
        aggregate,
        aggregate_bulyan,
        aggregate_krum,
        aggregate_median,
        aggregate_trimmed_avg,
    )
    from flwr.serverapp.strategy.bulyan import aggregate_n_closest_weights
    from flwr.serverapp.strategy.fedtrimmedavg import trim_mean
    from flwr.serverapp.strategy.multikrum import select_multikrum
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    def cut(n: int, f: int) -> float:
        # int(cut * n) == f exactly, avoiding the float under-trim of beta = f / n.
        return (f + 0.5) / n

    def message_bulyan(contents: list, n: int, f: int) -> np.ndarray:
        # The body of flwr.serverapp.strategy.Bulyan.aggregate_train, without the messages.
        theta, beta = n - 2 * f, n - 4 * f
        chosen = select_multikrum(contents, f, theta)
        arrays = [c["arrays"].to_numpy_ndarrays() for c in chosen]
        med = [np.median(layer, axis=0) for layer in zip(*arrays, strict=True)]
        return aggregate_n_closest_weights(med, arrays, beta)[0]

    return {
        "mean": [
            FlowerCounterpart(
                "legacy aggregate (FedAvg)", _legacy_results, lambda s, n, f: aggregate(s)[0]
            ),
            FlowerCounterpart(
                "serverapp aggregate_arrayrecords (FedAvg)",
                _records,
                lambda s, n, f: _first_array(aggregate_arrayrecords(s, "num-examples")),
            ),
        ],
        "median": [
            FlowerCounterpart(
                "legacy aggregate_median", _legacy_results, lambda s, n, f: aggregate_median(s)[0]
            ),
            FlowerCounterpart(
                "serverapp FedMedian (np.median)",
                _stack,
                lambda s, n, f: np.asarray(np.median(np.stack(s), axis=0)),
            ),
        ],
        "trimmed_mean": [
            FlowerCounterpart(
                "legacy aggregate_trimmed_avg",
                _legacy_results,
                lambda s, n, f: aggregate_trimmed_avg(s, cut(n, f))[0],
            ),
            FlowerCounterpart(
                "serverapp trim_mean",
                _stack,
                lambda s, n, f: np.asarray(trim_mean(np.stack(s), cut(n, f))),
            ),
        ],
        "krum": [
            FlowerCounterpart(
                "legacy aggregate_krum(to_keep=0)",
                _legacy_results,
                lambda s, n, f: aggregate_krum(s, f, to_keep=0)[0],
                slow=True,
            ),
            FlowerCounterpart(
                "serverapp select_multikrum(1)",
                _records,
                lambda s, n, f: _first_array(select_multikrum(s, f, 1)[0]["arrays"]),
            ),
        ],
        "multi_krum": [
            FlowerCounterpart(
                "legacy aggregate_krum(to_keep=n-f)",
                _legacy_results,
                lambda s, n, f: aggregate_krum(s, f, to_keep=n - f)[0],
                slow=True,
            ),
            FlowerCounterpart(
                "serverapp select_multikrum(n-f) + aggregate_arrayrecords",
                _records,
                lambda s, n, f: _first_array(
                    aggregate_arrayrecords(select_multikrum(s, f, n - f), "num-examples")
                ),
            ),
        ],
        "bulyan": [
            FlowerCounterpart(
                "legacy aggregate_bulyan(aggregate_krum, to_keep=0)",
                _legacy_results,
                # It pops from the list it is given: hand it a fresh list each call.
                lambda s, n, f: aggregate_bulyan(list(s), f, aggregate_krum, to_keep=0)[0],
                slow=True,
            ),
            FlowerCounterpart(
                "serverapp Bulyan (one-shot Multi-Krum top-theta)",
                _records,
                message_bulyan,
                note="one-shot selection, not recursive Krum: outputs differ by design",
            ),
        ],
    }


# Differences above this (on N(0, 1) data) are counted per coordinate in the report.
_DIFF_TOLERANCE = 1e-5


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        out = None
        gc.collect()
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _flower_child(conn, counterpart, rows, n, f, repeats, ours) -> None:
    try:
        state = counterpart.setup(rows, n, f)
        seconds, out = _median_time(lambda: counterpart.run(state, n, f), repeats)
        out = np.asarray(out, dtype=np.float64).ravel()
        if out.shape == ours.shape:
            gap = np.abs(out - ours)
            diff = (float(gap.max()), int(np.count_nonzero(gap > _DIFF_TOLERANCE)))
        else:
            diff = (float("nan"), -1)
        conn.send(("ok", seconds, diff))
    except BaseException as exc:  # report anything, including MemoryError
        conn.send(("error", f"{type(exc).__name__}: {exc}", None))
    finally:
        conn.close()


def _time_flower(
    counterpart: FlowerCounterpart,
    rows: list[np.ndarray],
    n: int,
    f: int,
    repeats: int,
    ours: np.ndarray,
    timeout: float,
) -> tuple[str, Any, tuple[float, int] | None]:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_flower_child, args=(child, counterpart, rows, n, f, repeats, ours), daemon=True
    )
    proc.start()
    child.close()
    deadline = time.monotonic() + timeout
    result = None
    while time.monotonic() < deadline:
        if parent.poll(min(5.0, max(0.0, deadline - time.monotonic()))):
            try:
                result = parent.recv()
            except EOFError:
                result = ("error", f"child exited with code {proc.exitcode}", None)
            break
        if not proc.is_alive():
            result = ("error", f"child exited with code {proc.exitcode} (out of memory?)", None)
            break
    if result is None:
        proc.kill()
        result = ("timeout", None, None)
    proc.join()
    parent.close()
    return result


def _load() -> str:
    # 1-minute load average: the machine is shared, and contention slows multi-threaded torch
    # kernels far more than numpy's single-threaded ones.
    return f"{os.getloadavg()[0]:.1f}"


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.3f}" if seconds < 10 else f"{seconds:.1f}"


#: Preset rows timed besides the registered rules: ``"<rule>:<preset>"``.
PRESET_ROWS = ("signguard:hardened",)


def _rule_kwargs(name: str, seed: int, f: int) -> dict[str, Any]:
    base, _, preset = name.partition(":")
    rule = RULES[base]
    kwargs: dict[str, Any] = {"preset": preset} if preset else {}
    if "f" in rule.param_names:
        kwargs["f"] = f
    if "generator" in rule.param_names:
        kwargs["generator"] = torch.Generator().manual_seed(seed)
    return kwargs


def bench_one_d(args: argparse.Namespace, d: int) -> list[str]:
    n, f = args.n, args.f
    print(f"[d={d:,}] drawing a ({n}, {d}) float32 matrix", file=sys.stderr, flush=True)
    updates = torch.randn(n, d, generator=torch.Generator().manual_seed(args.seed))
    single, _ = _median_time(lambda: updates.mean(dim=0), max(args.repeats, 5))
    counterparts = {} if args.no_flower else _flower_counterparts()
    rows_np = [updates[i].numpy() for i in range(n)]  # zero-copy views

    lines = [
        f"### d = {d:,} (n = {n}, f = {f}, float32)",
        "",
        f"Single pass `updates.mean(0)`: {single * 1e3:.1f} ms (at the start; each rule's "
        "\"× single pass\" divides by a single pass timed between that rule's calls).",
        "",
        "| rule | ours (s) | × single pass | Flower counterpart | Flower (s) | speed-up "
        "| max abs diff | load |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    names = args.rules or [*RULES, *PRESET_ROWS]
    for name in names:
        kwargs = _rule_kwargs(name, args.seed, f)
        rule = RULES[name.partition(":")[0]]
        print(f"[d={d:,}] {name} ...", file=sys.stderr, flush=True)
        try:
            rule(updates, **_rule_kwargs(name, args.seed, f))  # warm-up, not timed
            # The single pass is timed next to each call of the rule (interleaved), so the ratio
            # compares two measurements taken under the same load on a shared machine.
            ours_times, local_single = [], []
            for _ in range(args.repeats):
                local_single.append(_median_time(lambda: updates.mean(dim=0), 3)[0])
                seconds, res = _median_time(lambda: rule(updates, **kwargs), 1)
                ours_times.append(seconds)
            ours_s, near_single = statistics.median(ours_times), statistics.median(local_single)
        except Exception as exc:  # a rule that cannot run here is reported, not fatal
            lines.append(f"| {name} | error: {type(exc).__name__}: {exc} | | | | | | |")
            continue
        ours_vec = res.vector.double().numpy()
        del res
        ours_cols = f"| {name} | {_fmt_s(ours_s)} | {ours_s / near_single:.1f} "
        if name not in counterparts:
            lines.append(ours_cols + f"| – | – | – | – | {_load()} |")
        for i, cp in enumerate(counterparts.get(name, [])):
            head = ours_cols if i == 0 else "| | | "
            if cp.slow and args.skip_flower_slow:
                lines.append(head + f"| {cp.label} | skipped (--skip-flower-slow) | | | |")
                continue
            reps = args.flower_slow_repeats if cp.slow else args.repeats
            print(f"[d={d:,}]   flower: {cp.label} x{reps} ...", file=sys.stderr, flush=True)
            status, seconds, diff = _time_flower(
                cp, rows_np, n, f, reps, ours_vec, args.flower_timeout
            )
            if status == "timeout":
                lines.append(
                    head
                    + f"| {cp.label} | > {args.flower_timeout:.0f} (time limit) "
                    + f"| > {args.flower_timeout / ours_s:.0f}× "
                    + f"| skipped (time limit) | {_load()} |"
                )
            elif status == "error":
                lines.append(head + f"| {cp.label} | skipped ({seconds}) | | | {_load()} |")
            else:
                gap, count = diff
                where = f" at {count:,} of {d:,} coords" if count > 0 else ""
                note = f" ({cp.note})" if cp.note else ""
                lines.append(
                    head
                    + f"| {cp.label} | {_fmt_s(seconds)} | {seconds / ours_s:.1f}× "
                    + f"| {gap:.2e}{where}{note} | {_load()} |"
                )
            print(f"[d={d:,}]   -> {lines[-1]}", file=sys.stderr, flush=True)
        del ours_vec
        gc.collect()
    updates = rows_np = None  # free the matrix before the next size (not del: the lambdas above close over it)
    gc.collect()
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d", type=int, nargs="+", default=[1_000_000, 11_000_000])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--f", type=int, default=10, help="declared f for rules that take one")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rules", nargs="+", choices=[*RULES, *PRESET_ROWS],
                        help="default: all of RULES and the preset rows " + ", ".join(PRESET_ROWS))
    parser.add_argument("--no-flower", action="store_true", help="time our rules only")
    parser.add_argument(
        "--skip-flower-slow",
        action="store_true",
        help="skip Flower's legacy Krum, Multi-Krum and Bulyan (O(n^2) Python loops)",
    )
    parser.add_argument("--flower-slow-repeats", type=int, default=1)
    parser.add_argument(
        "--flower-timeout", type=float, default=1800.0, help="seconds per Flower call"
    )
    args = parser.parse_args(argv)
    if args.n < 4 * args.f + 3:
        print(
            f"note: n={args.n} < 4f+3={4 * args.f + 3}: Bulyan (ours and Flower's) will refuse",
            file=sys.stderr,
        )

    import flwr

    out = [
        "## Aggregation rules",
        "",
        f"Command: `.venv/bin/python -m simulations.bench.rules {' '.join(argv or sys.argv[1:])}`",
        "",
        f"Machine: {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), numpy {np.__version__}, flwr {flwr.__version__}, "
        f"Python {platform.python_version()}.",
        "",
    ]
    for d in args.d:
        out.extend(bench_one_d(args, d))
        print("\n".join(out), flush=True)
        out = []


if __name__ == "__main__":
    main()
