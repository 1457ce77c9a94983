"""Why plain SignGuard keeps sign-flipped updates: SignGuard's sign features, measured.

Trains the global model with FedSGD + Mean (no attack; server SGD lr 0.1, momentum 0.9,
weight decay 5e-4, as the experiments) and, at a few checkpoint rounds, computes the real
client updates of all ``n`` clients with the client training function
(:func:`clients.client_app.local_train`, FedSGD, batch 50).  ``m`` clients (a fixed random set)
then send the sign-flipped update ``-Δ_i`` of their own honest update, as
:func:`clients.attacks.sign_flip` does.  On that matrix it reports

* the fractions of positive / zero / negative coordinates (on the whole vector and on the 10%
  random sample that SignGuard uses), for honest and flipped rows;
* the gap between an honest row and its own flip in SignGuard's scaled feature space, against
  the spread of the honest rows and the MeanShift bandwidth;
* what :func:`signguard_flwr.rules.signguard.signguard` (project defaults and
  ``preset="reference"``) and ``signguard_sim`` keep, over ``--draws`` coordinate samples.

Between checkpoints the Mean step is computed on the union of the round's client batches (the
mean of equal-size batch-mean gradients is the gradient of the union's mean loss; only the
dropout masks differ), which is ~10x faster than 50 separate backward passes.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 .venv/bin/python -m simulations.analysis.signflip_features \
        --task mnist --checkpoints 1,25,50,100,200,300 --out signflip-mnist.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from clients.client_app import ClientSettings, derive_seed, fedsgd_batch_positions, load_client_data, local_train
from signguard_flwr.rules.signguard import SignGuardState, signguard, signguard_sim


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def layer_slices(model: torch.nn.Module) -> list[tuple[str, slice]]:
    out, start = [], 0
    for name, p in model.named_parameters():
        out.append((name, slice(start, start + p.numel())))
        start += p.numel()
    return out


def fractions(rows: torch.Tensor) -> np.ndarray:
    """(n, 3) fractions of positive, zero, negative entries."""
    s = torch.sign(rows)
    k = rows.shape[1]
    return torch.stack([(s > 0).sum(1), (s == 0).sum(1), (s < 0).sum(1)], 1).double().numpy() / k


def client_updates(model, global_state, datas, settings, server_round) -> torch.Tensor:
    w0 = torch.cat([v.reshape(-1) for k, v in global_state.items() if k in dict(model.named_parameters())])
    rows = []
    for pid, data in enumerate(datas):
        model.load_state_dict(global_state)
        local_train(model, data, settings, partition_id=pid, server_round=server_round)
        rows.append(flat_params(model) - w0)
    model.load_state_dict(global_state)
    return torch.stack(rows)


def mean_step(model, opt, datas, settings, server_round) -> None:
    xs, ys = [], []
    for pid, data in enumerate(datas):
        pos = fedsgd_batch_positions(data.num_train, settings.batch_size, server_round, settings.seed, pid)
        x, y = data.train.get_batch(data.train_indices[pos])
        xs.append(x)
        ys.append(y)
    model.train()
    opt.zero_grad()
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(settings.seed, 999, server_round))
        F.cross_entropy(model(torch.cat(xs)), torch.cat(ys)).backward()
    opt.step()


def analyse(updates: torch.Tensor, byz: np.ndarray, prev: torch.Tensor | None, draws: int, model) -> dict:
    n = updates.shape[0]
    honest = np.setdiff1d(np.arange(n), byz)
    attacked = updates.clone()
    attacked[byz] = -updates[byz]  # sign flip of the client's own honest update
    res: dict = {}
    full = fractions(updates)  # honest features of every client, whole vector
    res["full_vector"] = {
        "pos_mean": full[:, 0].mean(), "zero_mean": full[:, 1].mean(), "neg_mean": full[:, 2].mean(),
        "pos_sd": full[:, 0].std(ddof=1), "zero_sd": full[:, 1].std(ddof=1), "neg_sd": full[:, 2].std(ddof=1),
        "pos_minus_neg_mean": (full[:, 0] - full[:, 2]).mean(),
        "abs_pos_minus_neg_mean": np.abs(full[:, 0] - full[:, 2]).mean(),
        "pos_minus_neg_sd": (full[:, 0] - full[:, 2]).std(ddof=1),
    }
    # per-layer pos - neg (mean over clients) and each layer's share of the coordinates
    d = updates.shape[1]
    layers = {}
    for name, sl in layer_slices(model):
        fr = fractions(updates[:, sl])
        layers[name] = {"size_share": (sl.stop - sl.start) / d, "pos": fr[:, 0].mean(), "zero": fr[:, 1].mean(),
                        "neg": fr[:, 2].mean()}
    res["layers"] = layers
    norms = torch.linalg.vector_norm(updates, dim=1).numpy()
    res["norm_mean"], res["norm_sd"] = float(norms.mean()), float(norms.std(ddof=1))

    def run_rule(fn, label, **kw):
        kept_b, kept_h, clusters, bws, gaps, spreads, largest, featsave = [], [], [], [], [], [], [], None
        for t in range(draws):
            gen = torch.Generator().manual_seed(1000 + t)
            extra = {}
            if fn is signguard_sim:
                state = SignGuardState()
                if prev is not None:
                    signguard_sim(prev, state=state, warmup_rounds=0, generator=torch.Generator().manual_seed(5000 + t))
                extra = {"state": state, "warmup_rounds": 1 if prev is not None else 3}
            r = fn(attacked, generator=gen, **kw, **extra)
            sel = r.selected.numpy()
            kept_b.append(sel[byz].mean())
            kept_h.append(sel[honest].mean())
            info = r.info
            clusters.append(info["n_clusters"])
            bws.append(info["bandwidth"])
            lab = info["labels"].numpy()
            largest.append(int((lab == info["largest_label"]).sum()) if info["largest_label"] is not None else 0)
            f = info["features"].numpy()
            fh, fb = f[honest], f[byz]
            cen = fh.mean(0)
            # typical distance of an honest row to the honest centroid vs that of a flipped row
            spreads.append(np.median(np.linalg.norm(fh - cen, axis=1)))
            gaps.append(np.median(np.linalg.norm(fb - cen, axis=1)))
            if t == 0:
                coords = info.get("coordinates")
                raw = fractions(attacked[:, coords]) if coords is not None else None
                featsave = {"scaled_honest_mean": fh.mean(0).tolist(), "scaled_honest_sd": fh.std(0, ddof=1).tolist(),
                            "scaled_flipped_mean": fb.mean(0).tolist(), "scaled_flipped_sd": fb.std(0, ddof=1).tolist()}
                if raw is not None:
                    featsave.update(
                        raw_honest_mean=raw[honest].mean(0).tolist(), raw_honest_sd=raw[honest].std(0, ddof=1).tolist(),
                        raw_flipped_mean=raw[byz].mean(0).tolist(), raw_flipped_sd=raw[byz].std(0, ddof=1).tolist())
                if fn is signguard_sim:
                    featsave["phase"] = info["phase"]
                    s = info["similarity"].numpy()
                    featsave["cos_honest_mean"] = float(s[honest].mean())
                    featsave["cos_flipped_mean"] = float(s[byz].mean())
        res[label] = {"byz_kept": float(np.mean(kept_b)), "honest_kept": float(np.mean(kept_h)),
                      "n_clusters_mean": float(np.mean(clusters)), "largest_cluster_mean": float(np.mean(largest)),
                      "bandwidth_mean": float(np.mean(bws)), "honest_dist_to_centroid": float(np.mean(spreads)),
                      "flipped_dist_to_centroid": float(np.mean(gaps)), **(featsave or {})}

    run_rule(signguard, "signguard")
    run_rule(signguard, "signguard_reference", preset="reference")
    run_rule(signguard_sim, "signguard_sim")
    return res


def training_setup(args: argparse.Namespace):
    """What both analysis scripts start from: one torch thread, the sorted checkpoint rounds,
    the clients' IID data, the seeded initial model with the paper's server optimizer, and the
    seeded Byzantine client ids.  ``args`` needs task, clients, byzantine, checkpoints, seed."""
    torch.set_num_threads(1)
    checkpoints = sorted({int(c) for c in args.checkpoints.split(",")})
    settings = ClientSettings(task=args.task, seed=args.seed)
    datas = [load_client_data(args.task, None, "iid", {}, pid, args.clients, args.seed) for pid in range(args.clients)]
    torch.manual_seed(args.seed)
    model = datas[0].task.build_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    byz = np.sort(np.random.default_rng(args.seed).choice(args.clients, args.byzantine, replace=False))
    return checkpoints, settings, datas, model, opt, byz


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="mnist")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--byzantine", type=int, default=10)
    ap.add_argument("--checkpoints", default="1,25,50,100,200,300")
    ap.add_argument("--draws", type=int, default=20, help="coordinate samples per checkpoint")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON file for the numbers")
    args = ap.parse_args(argv)
    checkpoints, settings, datas, model, opt, byz = training_setup(args)
    test = datas[0].test
    out = {"task": args.task, "clients": args.clients, "byzantine": byz.tolist(), "d": int(flat_params(model).numel()),
           "checkpoints": {}}
    t0 = time.time()
    prev_updates = None
    for rnd in range(1, checkpoints[-1] + 1):
        need = rnd in checkpoints or rnd + 1 in checkpoints
        if need:
            state = {k: v.clone() for k, v in model.state_dict().items()}
            ups = client_updates(model, state, datas, settings, rnd)
            if rnd in checkpoints:
                # Sim's reference = its own output of the previous round, on the attacked matrix
                prev = None
                if prev_updates is not None:
                    prev = prev_updates.clone()
                    prev[byz] = -prev[byz]
                res = analyse(ups, byz, prev, args.draws, model)
                model.eval()
                with torch.no_grad():
                    idx = np.arange(0, len(test), 5)
                    x, y = test.get_batch(idx)
                    res["test_acc"] = float((model(x).argmax(1) == y).float().mean())
                out["checkpoints"][rnd] = res
                sg, sr, ss = res["signguard"], res["signguard_reference"], res["signguard_sim"]
                fv = res["full_vector"]
                print(f"round {rnd:4d} acc {res['test_acc']:.3f} | pos {fv['pos_mean']:.4f} zero {fv['zero_mean']:.4f} "
                      f"neg {fv['neg_mean']:.4f} |p-q| {fv['abs_pos_minus_neg_mean']:.4f} sd(p) {fv['pos_sd']:.4f} | "
                      f"kept flipped: SG {sg['byz_kept']:.2f} SGref {sr['byz_kept']:.2f} Sim {ss['byz_kept']:.2f} | "
                      f"honest: {sg['honest_kept']:.2f}/{sr['honest_kept']:.2f}/{ss['honest_kept']:.2f} | "
                      f"bw {sg['bandwidth_mean']:.3f} spread {sg['honest_dist_to_centroid']:.3f} "
                      f"flipdist {sg['flipped_dist_to_centroid']:.3f} ({time.time() - t0:.0f}s)", flush=True)
            prev_updates = ups
        else:
            prev_updates = None
        if rnd < checkpoints[-1]:
            mean_step(model, opt, datas, settings, rnd)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1, default=lambda v: float(v) if isinstance(v, (np.floating, np.integer)) else str(v))


if __name__ == "__main__":
    main()
