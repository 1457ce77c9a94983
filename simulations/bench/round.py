"""Benchmark: one federated round under Flower + Ray beside the same round's pure computation.

For the MNIST CNN with 50 clients (FedSGD, batch 50), measures the steady-state round time of

* **pure**: the same 50 client gradients (the ClientApp's own ``local_train``) and the same
  aggregation + server step, in one process, no Flower messages at all;
* **in-process Flower**: the strategy, adversary and ClientApp exchanging real Flower Messages
  through :class:`simulations.engine.InProcessGrid` (no Ray);
* **Flower + Ray**: Flower's simulation engine (``run_simulation``) with Ray actors.

and prints the ratios (target: Flower + Ray ≤ 1.5× pure).  ``--clients-large 1000`` adds a
1,000-client Flower + Ray simulation of the same small CNN and reports its round time and the
peak memory of this process tree.

Run: ``python -m simulations.bench.round [--rounds 6] [--defense signguard] [--clients-large 1000]``.
A benchmark measures and prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time

import torch

from ..config import ExperimentConfig
from ..engine import build_strategy, run_experiment


def pure_rounds(cfg: ExperimentConfig, rounds: int) -> list[float]:
    """Per-round seconds of the computation alone: 50 local_train calls + rule + server step."""
    from clients.client_app import ClientSettings, _cached_model, client_data_for, local_train
    from flwr.app import ArrayRecord

    from signguard_flwr.arrays import record_numpy, update_keys

    settings = ClientSettings(task=cfg.task, seed=cfg.seed, batch_size=cfg.batch_size)
    datas = [client_data_for(settings, pid, cfg.num_clients) for pid in range(cfg.num_clients)]
    torch.manual_seed(cfg.seed)
    from clients.tasks import get_task

    global_model = get_task(cfg.task).build_model()
    strategy = build_strategy(cfg)
    keys = update_keys(record_numpy(ArrayRecord(global_model.state_dict())))
    model = _cached_model(cfg.task)
    times = []
    for rnd in range(1, rounds + 1):
        start = time.perf_counter()
        global_state = {k: v.clone() for k, v in global_model.state_dict().items()}
        gvec = torch.cat([global_state[k].reshape(-1) for k in keys])
        rows = torch.empty((cfg.num_clients, gvec.numel()), dtype=torch.float32)
        for pid, data in enumerate(datas):
            model.load_state_dict(global_state, strict=True)
            local_train(model, data, settings, partition_id=pid, server_round=rnd)
            state = model.state_dict()
            rows[pid] = torch.cat([state[k].reshape(-1) for k in keys])
        rows.sub_(gvec)
        result = strategy.aggregate_updates(rows)
        new = strategy.optimizer.step(gvec, result.vector, server_round=rnd)
        offset = 0
        with torch.no_grad():
            for k in keys:
                n = global_state[k].numel()
                global_state[k].copy_(new[offset : offset + n].view_as(global_state[k]))
                offset += n
        global_model.load_state_dict(global_state)
        times.append(time.perf_counter() - start)
    return times


def flower_rounds(cfg: ExperimentConfig, engine: str) -> list[float]:
    result = run_experiment(cfg, engine=engine)
    return [r.round_seconds for r in result.rounds]


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its (finished or live) children, in MB."""
    import resource

    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (self_kb + child_kb) / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="mnist")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=6, help="rounds per engine; the first is excluded as warm-up")
    parser.add_argument("--defense", default="signguard")
    parser.add_argument("--clients-large", type=int, default=0, help="also run a Flower+Ray simulation with this many clients")
    parser.add_argument("--rounds-large", type=int, default=3)
    args = parser.parse_args(argv)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    for key, value in {"FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}.items():
        os.environ.setdefault(key, value)

    cfg = ExperimentConfig(
        task=args.task,
        num_clients=args.clients,
        num_byzantine=0,
        defense=args.defense,
        attack="none",
        rounds=args.rounds,
        eval_every=10**6,
        num_cpus=1,
    )
    rows = []
    pure = pure_rounds(cfg, args.rounds)
    rows.append(("pure computation (one process)", pure))
    rows.append(("Flower, in-process grid", flower_rounds(cfg, "inprocess")))
    rows.append(("Flower + Ray simulation", flower_rounds(cfg, "ray")))
    base = statistics.median(pure[1:])
    print(f"\nOne round, {args.task} CNN, {args.clients} clients, FedSGD batch {cfg.batch_size}, defense {args.defense}, "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")
    print("| engine | median round (s) | min (s) | × pure |\n|---|---|---|---|")
    for name, times in rows:
        steady = times[1:] if len(times) > 1 else times
        med = statistics.median(steady)
        print(f"| {name} | {med:.3f} | {min(steady):.3f} | {med / base:.2f} |")

    if args.clients_large:
        big = cfg.replace(num_clients=args.clients_large, rounds=args.rounds_large)
        start = time.perf_counter()
        times = flower_rounds(big, "ray")
        wall = time.perf_counter() - start
        print(f"\n{args.clients_large}-client Flower + Ray simulation ({args.task} CNN, {args.defense}): "
              f"round times {', '.join(f'{t:.1f}' for t in times)} s; wall {wall:.0f} s incl. start-up; "
              f"peak RSS (server process + children) {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
