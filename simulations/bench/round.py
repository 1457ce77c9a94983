"""Benchmark: one federated round under Flower + Ray beside the same round's pure computation.

For the MNIST CNN with 50 clients (FedSGD, batch 50), measures the steady-state round time of

* **plain loop**: a plain PyTorch loop over the same 50 gradients (same batches) and the same
  aggregation + server step, no client code at all (the floor no engine goes below);
* **pure**: the same 50 client gradients through the ClientApp's own ``local_train`` and the
  same aggregation + server step, in one process, no Flower messages at all;
* **in-process Flower**: the strategy, adversary and ClientApp exchanging real Flower Messages
  through :class:`simulations.engine.InProcessGrid` (no Ray);
* **Flower + Ray**: Flower's simulation engine (``run_simulation``) with Ray actors.

and prints the ratios (targets: Flower + Ray ≤ 1.5× pure; in-process grid ≤ 1.1× the plain loop).  ``--clients-large 1000`` adds a
1,000-client Flower + Ray simulation of the same small CNN and reports its round time and the
peak memory of this process tree.

Run: ``python -m simulations.bench.round [--rounds 6] [--repeats 3] [--engines inprocess ray] [--defense signguard]
[--clients-large 1000]``; ``--per-client`` instead breaks one client's call into its step and the message
work around it.
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


def server_step(strategy, rows: torch.Tensor, gvec: torch.Tensor, state: dict[str, torch.Tensor],
                keys: list[str], server_round: int) -> None:
    """Aggregate ``rows``, take the server optimizer's step and write it into ``state`` (in place)."""
    result = strategy.aggregate_updates(rows)
    new = strategy.optimizer.step(gvec, result.vector, server_round=server_round)
    offset = 0
    with torch.no_grad():
        for k in keys:
            n = state[k].numel()
            state[k].copy_(new[offset : offset + n].view_as(state[k]))
            offset += n


def pure_rounds(cfg: ExperimentConfig, rounds: int) -> list[float]:
    """Per-round seconds of the clients' own code without Flower: 50 local_train calls + rule + server step."""
    from flwr.app import ArrayRecord

    from clients.client_app import (
        ClientSettings,
        _cached_model,
        client_data_for,
        local_train,
    )
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
        server_step(strategy, rows, gvec, global_state, keys, rnd)
        global_model.load_state_dict(global_state)
        times.append(time.perf_counter() - start)
    return times


def plain_client_step(model: torch.nn.Module, global_state: dict[str, torch.Tensor], data, cfg: ExperimentConfig,
                      partition_id: int, server_round: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """One client's plain PyTorch step: load the weights, its batch, forward/backward, the flat gradient."""
    import torch.nn.functional as F

    from clients.training import fedsgd_batch_positions

    model.load_state_dict(global_state)
    pos = fedsgd_batch_positions(data.num_train, cfg.batch_size, server_round, cfg.seed, partition_id)
    x, y = data.train.get_batch(data.train_indices[pos])
    model.train()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()], out=out)


def plain_rounds(cfg: ExperimentConfig, rounds: int) -> list[float]:
    """Per-round seconds of a plain PyTorch loop over the same 50 gradients + rule + server step.

    No client code at all: per client, load the global weights, take the same batch (same
    positions), one forward/backward in train mode, the negated gradient into the update
    matrix, on one torch thread as the engines' clients run.  What no engine can go below.
    """

    from clients.client_app import ClientSettings, client_data_for
    from clients.tasks import get_task

    settings = ClientSettings(task=cfg.task, seed=cfg.seed, batch_size=cfg.batch_size)
    datas = [client_data_for(settings, pid, cfg.num_clients) for pid in range(cfg.num_clients)]
    torch.manual_seed(cfg.seed)
    task = get_task(cfg.task)
    global_model, model = task.build_model(), task.build_model()
    params = [name for name, _ in global_model.named_parameters()]
    strategy = build_strategy(cfg)
    times = []
    for rnd in range(1, rounds + 1):
        start = time.perf_counter()
        gstate = global_model.state_dict()
        gvec = torch.cat([gstate[k].reshape(-1) for k in params])
        rows = torch.empty((cfg.num_clients, gvec.numel()), dtype=torch.float32)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        for pid, data in enumerate(datas):
            plain_client_step(model, gstate, data, cfg, pid, rnd, out=rows[pid])
        torch.set_num_threads(threads)
        rows.neg_()
        server_step(strategy, rows, gvec, gstate, params, rnd)
        times.append(time.perf_counter() - start)
    return times


def client_call_breakdown(cfg: ExperimentConfig, calls: int = 40, repeats: int = 5) -> list[tuple[str, float]]:
    """Milliseconds of one client's call and of each piece of message work around its step.

    One client (partition 0, round 3), the pieces interleaved ``repeats`` times, each the best
    mean over ``calls`` calls: the plain PyTorch step (as :func:`plain_rounds`), the client's own
    ``local_train``, the whole ClientApp call on a delivered Message (copy of the instruction
    included), and the message work alone: the per-node copy of the instruction, loading the
    global model from the Message, serialising the reply's ``state_dict`` into an ``ArrayRecord``
    and the strategy's check and parse of the reply.  Where the in-process grid's round goes
    beyond the plain loop's.
    """
    import timeit

    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from clients.client_app import _cached_model, _load_model, app, client_data_for, local_train, state_dict_on_cpu
    from clients.settings import resolve_settings
    from clients.tasks import get_task
    from clients.tasks.models import FastMaxPool2d
    from signguard_flwr.arrays import state_record
    from signguard_flwr.replies import parse_train_reply
    from signguard_flwr.updates import global_view

    from ..engine.inprocess import _copy_content

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    run_config = cfg.client_config()
    settings = resolve_settings(run_config)
    pid, rnd = 0, 3
    data = client_data_for(settings, pid, cfg.num_clients)
    task = get_task(cfg.task)
    torch.manual_seed(cfg.seed)
    global_state = task.build_model().state_dict()
    content = RecordDict({"arrays": ArrayRecord(global_state), "config": ConfigRecord({**run_config, "server-round": rnd})})
    context = Context(run_id=1, node_id=1, node_config={"partition-id": pid, "num-partitions": cfg.num_clients},
                      state=RecordDict(), run_config=dict(run_config))
    glob = global_view(content["arrays"])
    plain_model, client_model = task.build_model(), _cached_model(cfg.task, "cpu")
    # The same plain step with torch's own max-pool wherever the model uses FastMaxPool2d.
    torch_pool_model = task.build_model()
    swapped = 0
    for name, module in list(torch_pool_model.named_modules()):
        if isinstance(module, FastMaxPool2d):
            parent = torch_pool_model.get_submodule(name.rpartition(".")[0]) if "." in name else torch_pool_model
            setattr(parent, name.rpartition(".")[2], torch.nn.MaxPool2d(
                module.kernel_size, module.stride, module.padding, module.dilation, module.return_indices, module.ceil_mode))
            swapped += 1

    def delivered() -> Message:
        return Message(content=_copy_content(content), dst_node_id=1, message_type="train", group_id="1")

    def plain_step(model: torch.nn.Module) -> None:
        plain_client_step(model, global_state, data, cfg, pid, rnd)

    def plain() -> None:
        plain_step(plain_model)

    def own_step() -> None:
        client_model.load_state_dict(global_state)
        local_train(client_model, data, settings, partition_id=pid, server_round=rnd)

    message = delivered()
    reply = app(message, context)
    pieces = {
        "plain PyTorch step (load, batch, forward/backward, gradient)": plain,
        "client's own step (load + local_train)": own_step,
        **({"plain step with torch's nn.MaxPool2d (instead of FastMaxPool2d)": lambda: plain_step(torch_pool_model)}
           if swapped else {}),
        "whole ClientApp call on a delivered Message": lambda: app(delivered(), context),
        "  per-node copy of the instruction (Message + records)": delivered,
        "  global model loaded from the Message": lambda: _load_model(message, cfg.task, "cpu"),
        "  reply's state_dict into an ArrayRecord": lambda: state_record(state_dict_on_cpu(client_model)),
        "  strategy: check and parse the reply": lambda: parse_train_reply(reply, glob),
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    best: dict[str, float] = {}
    try:
        for _ in range(repeats):  # interleaved, so a change of machine load hits every piece alike
            for name, fn in pieces.items():
                ms = timeit.timeit(fn, number=calls) / calls * 1e3
                best[name] = min(best.get(name, float("inf")), ms)
    finally:
        torch.set_num_threads(threads)
    return list(best.items())


def flower_rounds(cfg: ExperimentConfig, engine: str) -> list[float]:
    """Per-round seconds of a Flower run; the last round's includes the test-set evaluation."""
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
    parser.add_argument("--engines", nargs="+", choices=("inprocess", "ray"), default=["inprocess", "ray"],
                        help="Flower engines timed beside the pure computation")
    parser.add_argument("--repeats", type=int, default=1,
                        help="alternate pure and Flower runs this many times (medians over all of them)")
    parser.add_argument("--clients-large", type=int, default=0, help="also run a Flower+Ray simulation with this many clients")
    parser.add_argument("--rounds-large", type=int, default=3)
    parser.add_argument("--per-client", action="store_true",
                        help="instead: one client's call broken into its step and the message work around it (ms)")
    parser.add_argument("--batched", action="store_true",
                        help="instead: the pure computation's client gradients, per-client loop beside one batched "
                        "torch.func call (clients.batched), on CUDA when visible; random CIFAR-shaped inputs for cifar10 "
                        "without its dataset (smaller sizes: python -m simulations.bench.batched)")
    args = parser.parse_args(argv)
    if args.rounds < 3:
        parser.error("--rounds must be at least 3 (the first round is warm-up, the last one evaluates)")
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
    if args.per_client:
        print(f"\nOne client call, {args.task} CNN, FedSGD batch {cfg.batch_size}, one torch thread (best of 5 x 40 calls)")
        print("| piece | ms |\n|---|---|")
        for name, ms in client_call_breakdown(cfg):
            print(f"| {name} | {ms:.3f} |")
        return 0
    if args.batched:
        from .batched import compare_client_steps

        compare_client_steps(args.task, args.clients, cfg.batch_size, args.rounds, "auto", seed=cfg.seed)
        return 0
    names = {"inprocess": "Flower, in-process grid", "ray": "Flower + Ray simulation"}
    steady: dict[str, list[float]] = {"plain PyTorch loop (no client code)": [], "pure computation (one process)": []}
    for _ in range(args.repeats):  # interleaved, so a change of machine load hits every row alike
        steady["plain PyTorch loop (no client code)"] += plain_rounds(cfg, args.rounds)[1:]
        steady["pure computation (one process)"] += pure_rounds(cfg, args.rounds)[1:]
        for engine in args.engines:
            # Without the first round (warm-up) and the last (the run's only test-set evaluation,
            # 10,000 images, which the other rows do not do).
            steady.setdefault(names[engine], []).extend(flower_rounds(cfg, engine)[1:-1])
    rows = list(steady.items())
    plain, base = statistics.median(rows[0][1]), statistics.median(rows[1][1])
    print(f"\nOne round, {args.task} CNN, {args.clients} clients, FedSGD batch {cfg.batch_size}, defense {args.defense}, "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")
    print("| engine | median round (s) | min (s) | × pure | × plain loop |\n|---|---|---|---|---|")
    for name, times in rows:
        med = statistics.median(times)
        print(f"| {name} | {med:.3f} | {min(times):.3f} | {med / base:.2f} | {med / plain:.2f} |")

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
