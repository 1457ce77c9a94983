"""What Bulyan's two variants output under LIE, on real MNIST client updates.

Trains the global model with FedSGD + Mean (as :mod:`simulations.analysis.signflip_features`)
and at a few checkpoint rounds builds the round's attacked matrix: the 50 clients' real FedSGD
gradients, with ``m`` of them replaced by the omniscient LIE vector ``μ − z·σ`` (z = 0.3,
:func:`clients.attacks.lie_attack`).  For Mean, canonical Bulyan (recursive Krum, θ = n − 2f)
and ``variant="reference"`` (the official code's EPFL Bulyan over Multi-Krum) it reports

* ``z_eff``: the aggregate written as ``μ − z_eff·σ`` (least squares along σ around the
  honest mean μ of all n clients) — 0.3 means the aggregate *is* the LIE vector;
* the fraction of coordinates with σ > 0 where the aggregate equals the LIE value (to 1e-6
  relative);
* cosine of the aggregate with the benign mean and its relative distance to it;
* for the reference variant, the ranks of the Byzantine rows in the static Krum ranking and how
  many of the θ stored averages contain a Byzantine row.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 .venv/bin/python -m simulations.analysis.bulyan_lie --checkpoints 1,30,60
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from clients.attacks import lie_attack
from signguard_flwr.rules.krum import bulyan
from simulations.analysis.signflip_features import client_updates, mean_step, training_setup


def describe(agg: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, mu_benign: torch.Tensor, lie_vec: torch.Tensor) -> dict:
    a, m, s = agg.double(), mu.double(), sigma.double()
    z_eff = float(((m - a) @ s) / (s @ s))
    # only coordinates where the clients disagree (σ > 0); where every gradient is 0 (dead ReLU
    # units) every rule outputs 0 = the LIE value
    live = s > 0
    eq = ((a - lie_vec.double()).abs() <= 1e-6 * lie_vec.double().abs())[live].double().mean()
    mb = mu_benign.double()
    return {
        "z_eff": z_eff,
        "frac_coords_equal_lie": float(eq),
        "cos_benign_mean": float(a @ mb / (a.norm() * mb.norm())),
        "rel_dist_benign_mean": float((a - mb).norm() / mb.norm()),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="mnist")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--byzantine", type=int, default=10)
    ap.add_argument("--checkpoints", default="1,30,60")
    ap.add_argument("--z", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    checkpoints, settings, datas, model, opt, byz = training_setup(args)
    n, f = args.clients, args.byzantine
    benign = np.setdiff1d(np.arange(n), byz)
    out = {"task": args.task, "byzantine": byz.tolist(), "checkpoints": {}}
    for rnd in range(1, checkpoints[-1] + 1):
        if rnd in checkpoints:
            state = {k: v.clone() for k, v in model.state_dict().items()}
            grads = -client_updates(model, state, datas, settings, rnd)  # gradient domain, as the attacks
            rows, _ = lie_attack(grads, byz.tolist(), z=args.z)
            attacked = grads.clone()
            attacked[byz] = rows
            mu, sigma = grads.mean(0), grads.std(0, unbiased=True)
            mu_b = grads[benign].mean(0)
            lie_vec = rows[0]
            res = {"live_coordinate_share": float((sigma > 0).double().mean()),
                   "mean": describe(attacked.mean(0), mu, sigma, mu_b, lie_vec)}
            can = bulyan(attacked, f, variant="canonical")
            res["bulyan_canonical"] = describe(can.vector, mu, sigma, mu_b, lie_vec)
            res["bulyan_canonical"]["byzantine_in_selection"] = int(can.selected[byz].sum())
            res["bulyan_canonical"]["theta"], res["bulyan_canonical"]["beta"] = can.info["theta"], can.info["beta"]
            ref = bulyan(attacked, f, variant="reference")
            r = describe(ref.vector, mu, sigma, mu_b, lie_vec)
            ranking = torch.sort(ref.info["scores"], stable=True).indices.tolist()
            ranks = sorted(ranking.index(int(b)) for b in byz)
            theta, m_max = ref.info["theta"], n - f - 2
            r.update(theta=theta, beta=ref.info["beta"], byzantine_ranks=ranks,
                     stored_averages_with_byzantine=sum(1 for t in range(theta) if any(t <= k < m_max for k in ranks)),
                     byzantine_share_of_stored=[round(sum(1 for k in ranks if t <= k < m_max) / (m_max - t), 3)
                                                for t in range(theta)])
            res["bulyan_reference"] = r
            out["checkpoints"][rnd] = res
            print(f"round {rnd}: " + "; ".join(
                f"{k}: z_eff {v['z_eff']:.3f} eqLIE {v['frac_coords_equal_lie']:.2f} cos {v['cos_benign_mean']:.3f} "
                f"rel {v['rel_dist_benign_mean']:.2f}" for k, v in res.items() if isinstance(v, dict)), flush=True)
            print(f"   canonical: byz in theta-selection {res['bulyan_canonical']['byzantine_in_selection']}/{f}; "
                  f"reference: byz ranks {ranks}, stored averages with a byz row {r['stored_averages_with_byzantine']}/{theta}",
                  flush=True)
            model.load_state_dict(state)
        if rnd < checkpoints[-1]:
            mean_step(model, opt, datas, settings, rnd)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
