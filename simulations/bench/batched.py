"""Benchmark: a FedSGD round's client steps one by one beside one batched ``torch.func`` call.

Times, per round (median over the rounds after the first, which warms up):

* **per-client loop**: for each client, load the global model and take its FedSGD step, as the
  pure computation of :mod:`simulations.bench.round` does (``local_train`` on the client's data;
  ``train_fedsgd`` on random tensors in synthetic mode);
* **batched**: the same K steps through :func:`clients.batched.fedsgd_steps_batched` (and, with
  real data, :func:`clients.batched.prepare_round`, which also draws the K batches);
* **reference**: one forward/backward of all K x B images as a single batch, the floor a batched
  round can approach.

It also prints the largest difference between the two paths' results (float32 rounding).
``--synthetic`` (or a task whose dataset is absent) uses random tensors of the task's input
shape, e.g. 3x32x32 for ``cifar10``, so the ResNet-18 timing needs no dataset.

Run: ``python -m simulations.bench.batched --task cifar10 --clients 50 --batch-size 50 [--device cuda]``;
on a CPU use small sizes (``--clients 4 --batch-size 8``).  A benchmark measures and prints;
it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

#: Input shape of each task's samples, for synthetic data.
INPUT_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fmnist": (1, 28, 28), "mnist-mini": (1, 28, 28), "cifar10": (3, 32, 32)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def compare_client_steps(
    task_name: str,
    clients: int,
    batch_size: int,
    rounds: int = 4,
    device_name: str = "auto",
    synthetic: bool = False,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Time one round's client steps per client and batched, and print a table.

    Parameters
    ----------
    task_name : str
    clients, batch_size : int
        K clients of B samples each.
    rounds : int
        Rounds timed; the first is reported apart as warm-up.
    device_name : str
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
    synthetic : bool
        Random inputs of the task's shape instead of its dataset (also used when the dataset is
        absent).
    seed : int

    Returns
    -------
    dict
        Seconds per round of each row.
    """
    from clients import batched as batched_module
    from clients.batched import (
        FedSGDJob,
        batching_refusal,
        clear_prepared,
        fedsgd_steps_batched,
        prepare_round,
    )
    from clients.client_app import client_data_for
    from clients.settings import ClientSettings, resolve_device
    from clients.tasks import DatasetError, get_task
    from clients.training import fedsgd_batch_positions, local_train, train_fedsgd

    device = resolve_device(device_name)
    task = get_task(task_name)
    torch.manual_seed(seed)
    model = task.build_model().to(device)
    reason = batching_refusal(model)
    if reason is not None:
        print(f"{task_name}: the batched path is refused: {reason}")
        return {}
    global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    settings = ClientSettings(task=task_name, batch_size=batch_size, seed=seed, device=str(device))
    datas = None
    if not synthetic:
        try:
            datas = [client_data_for(settings, pid, clients) for pid in range(clients)]
        except DatasetError as err:
            print(f"{task_name}: dataset not available ({' '.join(str(err).split())[:120]}...); using random tensors")
    if datas is None:
        shape = INPUT_SHAPES.get(task_name)
        if shape is None:
            raise ValueError(f"no synthetic input shape for task {task_name!r}; known: {sorted(INPUT_SHAPES)}")
        gen = torch.Generator().manual_seed(seed)
        xs = torch.randn(clients, batch_size, *shape, generator=gen).to(device)
        ys = torch.randint(0, task.num_classes, (clients, batch_size), generator=gen).to(device)

    def per_client(rnd: int) -> None:
        for pid in range(clients):
            model.load_state_dict(global_state, strict=True)
            if datas is None:
                train_fedsgd(model, (xs[pid], ys[pid]))
            else:
                local_train(model, datas[pid], settings, partition_id=pid, server_round=rnd)

    def batched(rnd: int) -> None:
        if datas is None:
            fedsgd_steps_batched(model, xs, ys, state=global_state)
        else:  # the engine's path: draw the K batches, group by batch size, one vmap per group
            prepare_round(global_state, [FedSGDJob(pid, datas[pid], settings, rnd) for pid in range(clients)])
            clear_prepared()

    if datas is None:
        all_x, all_y = xs.reshape(-1, *xs.shape[2:]), ys.reshape(-1)
    else:
        parts = [d.train.get_batch(d.train_indices[fedsgd_batch_positions(d.num_train, batch_size, 1, seed, pid)])
                 for pid, d in enumerate(datas)]
        all_x, all_y = torch.cat([p[0] for p in parts]).to(device), torch.cat([p[1] for p in parts]).to(device)

    def reference(_rnd: int) -> None:
        model.load_state_dict(global_state, strict=True)
        model.train()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(all_x), all_y).backward()
        model.zero_grad(set_to_none=True)

    rows: dict[str, list[float]] = {"per-client loop": [], "batched (torch.func vmap)": [], f"reference: one fwd/bwd of {len(all_y)} images": []}
    funcs = list(zip(rows, (per_client, batched, reference), strict=True))
    for rnd in range(1, rounds + 1):
        for name, fn in funcs:
            rows[name].append(_timed(lambda fn=fn, rnd=rnd: fn(rnd), device))

    # Agreement of the two paths on round 1 (not timed).
    if datas is None:
        states, _ = fedsgd_steps_batched(model, xs, ys, state=global_state)
    worst = 0.0
    for pid in range(clients):
        model.load_state_dict(global_state, strict=True)
        if datas is None:
            train_fedsgd(model, (xs[pid], ys[pid]))
            mine = states[pid]
        else:
            local_train(model, datas[pid], settings, partition_id=pid, server_round=1)
            prepare_round(global_state, [FedSGDJob(pid, datas[pid], settings, 1)])
            [entry] = batched_module._PREPARED.values()
            mine = entry.state
            clear_prepared()
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                worst = max(worst, float((value - mine[key]).abs().max()))

    source = "random tensors" if datas is None else "its dataset"
    print(f"\n{task_name} ({sum(p.numel() for p in model.parameters()):,} parameters), {clients} clients x batch {batch_size} "
          f"from {source}, device {device}, torch threads {torch.get_num_threads()}")
    base = statistics.median(rows["per-client loop"][1:] or rows["per-client loop"])
    print("| client steps of one round | median (s) | min (s) | first round (s) | x per-client loop |\n|---|---|---|---|---|")
    for name, times in rows.items():
        steady = times[1:] or times
        med = statistics.median(steady)
        print(f"| {name} | {med:.4f} | {min(steady):.4f} | {times[0]:.4f} | {med / base:.3f} |")
    print(f"largest |batched - per-client| over all parameters and buffers: {worst:.3g}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="cifar10")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4, help="rounds timed; the first is reported apart as warm-up")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when visible)")
    parser.add_argument("--synthetic", action="store_true", help="random inputs of the task's shape instead of its dataset")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    compare_client_steps(args.task, args.clients, args.batch_size, args.rounds, args.device, args.synthetic, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
