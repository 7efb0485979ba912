"""How stable is the deletion metric's random baseline, and what does each reading of the gradient reach against a
stable one? (results in docs/benchmarks.md)

Prints the per-order mean random deletion AUC for `--orders` seeded orders, then the deletion AUC and ratio (to the
mean over all orders) of: vanilla and other channel reductions of ∂logit/∂x, gradients of the probability and of
the log-probability, gradient × input, gradient × (input − blurred input), and Integrated Gradients from a black or
a blurred baseline at 16 and 32 steps.

    python benchmarks/explain_baseline.py --images ../shared/data/imagenet/foolbox20 [--n 20] [--orders 10]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from cnnlab.core.inputs import read_images
from cnnlab.core.models import create_backbone
from cnnlab.core.hooks import eval_mode, frozen
from cnnlab.explain.faithfulness import deletion_insertion, random_baseline
from cnnlab.explain.saliency import attribute, blurred, predicted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--orders", type=int, default=10)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    args = ap.parse_args()
    b = create_backbone(args.backbone)
    x = read_images([args.images], args.n).batch(b.preprocess)
    pred = predicted(b, x)
    per_order = [float(random_baseline(b, x, pred, seed=k, n_random=1)["random_deletion_auc"].mean())
                 for k in range(args.orders)]
    rand = sum(per_order) / len(per_order)
    out = {"date": time.strftime("%Y-%m-%d"), "n": len(x), "random_per_order": per_order, "random_mean": rand,
           "maps": {}}
    print("random deletion AUC per order", [round(r, 3) for r in per_order], "mean", round(rand, 4), flush=True)

    def grad(score):
        xx = x.clone().requires_grad_(True)
        with eval_mode(b), frozen(b):
            g, = torch.autograd.grad(score(b(xx)).gather(1, pred[:, None]).sum(), xx)
        return g

    g = grad(lambda o: o)
    base = blurred(x, 10.0)
    maps = {"vanilla (max |g| over channels)": g.abs().amax(1), "mean |g|": g.abs().mean(1),
            "|sum g|": g.sum(1).abs(), "L2 of g": g.norm(dim=1),
            "probability: max |g|": grad(lambda o: o.softmax(1)).abs().amax(1),
            "log-probability: max |g|": grad(lambda o: o.log_softmax(1)).abs().amax(1),
            "g × x": (g * x).sum(1).abs(), "g × (x − blurred)": (g * (x - base)).sum(1).abs()}
    for baseline in ("black", "blur"):
        for steps in (16, 32):
            t0 = time.perf_counter()
            o = dict(ig_baseline=baseline, ig_steps=steps)
            maps[f"IG {baseline} {steps} steps"] = torch.cat(
                [attribute(b, x[i:i + 4], pred[i:i + 4], "ig", o) for i in range(0, len(x), 4)])
            print(f"IG {baseline} {steps}: {(time.perf_counter() - t0) / len(x):.2f} s/image", flush=True)
    for name, m in maps.items():
        d = float(deletion_insertion(b, x, m, pred, n_random=0)["deletion_auc"].mean())
        out["maps"][name] = {"deletion_auc": d, "ratio": d / rand}
        print(f"{name:32s} deletion {d:.3f}  ratio {d / rand:.3f}", flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
