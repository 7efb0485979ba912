"""Explain benchmarks (results go to docs/benchmarks.md).

(a) faithfulness: deletion/insertion AUC of each saliency method vs a random patch order on ImageNet images;
(b) overhead of cnnlab's vanilla saliency vs a direct Captum `Saliency` call (same model, same images);
(c) fooling: success rate, median L∞ / iterations / seconds per image for random targets;
(d) class visualization: seconds per 100 iterations.

    python benchmarks/explain.py --images ../shared/data/imagenet/foolbox20 [--n 20] [--methods vanilla,gradcam]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from cnnlab.core.inputs import read_images
from cnnlab.core.models import create_backbone
from cnnlab.explain.attacks import attack
from cnnlab.explain.api import resolve_targets
from cnnlab.explain.classviz import ClassVizOptions, visualize_class
from cnnlab.explain.faithfulness import deletion_insertion, random_baseline
from cnnlab.explain.saliency import SaliencyOptions, attribute, predicted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--methods", default="vanilla,smoothgrad,ig,gradcam,gradcam:head+block6,occlusion",
                    help="methods; method:LAYER picks Grad-CAM layers, ig:black|blur IG's baseline")
    ap.add_argument("--random-orders", type=int, default=4, help="random patch orders averaged for the baseline")
    ap.add_argument("--skip-extras", action="store_true", help="faithfulness only (no overhead/fool/classviz)")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    args = ap.parse_args()
    b = create_backbone(args.backbone)
    x = read_images([args.images], args.n).batch(b.preprocess)
    pred = predicted(b, x)
    out = {"backbone": args.backbone, "n": len(x), "date": time.strftime("%Y-%m-%d"), "faithfulness": {}}
    baseline = random_baseline(b, x, pred, n_random=args.random_orders)  # the same for every method: once
    out["random"] = {k: float(v.mean()) for k, v in baseline.items()}
    for spec in args.methods.split(","):
        method, _, suffix = spec.partition(":")  # e.g. gradcam:head+block6, ig:black
        options = SaliencyOptions(ig_baseline=suffix or "blur") if method == "ig" else SaliencyOptions(
            layer=suffix or None)
        t0 = time.perf_counter()
        maps = torch.cat([attribute(b, x[i:i + 4], pred[i:i + 4], method, options) for i in range(0, len(x), 4)])
        secs = (time.perf_counter() - t0) / len(x)
        s = deletion_insertion(b, x, maps, pred, n_random=0) | baseline
        row = {k: float(v.mean()) for k, v in s.items()}
        row["deletion_ratio"] = row["deletion_auc"] / row["random_deletion_auc"]
        row["seconds_per_image"] = secs
        out["faithfulness"][spec] = row
        print(spec, row, flush=True)
    if args.skip_extras:
        print(json.dumps(out, indent=2))
        return

    import captum.attr as ca

    xs = x[:8]
    t0 = time.perf_counter()
    attribute(b, xs, pred[:8], "vanilla")
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ca.Saliency(b).attribute(xs.clone().requires_grad_(True), target=pred[:8], abs=True).amax(dim=1)
    direct = time.perf_counter() - t0
    out["overhead"] = {"cnnlab_s": ours, "captum_s": direct, "ratio": ours / direct}
    print(out["overhead"], flush=True)

    targets = resolve_targets("random", pred, b, seed=0)
    t0 = time.perf_counter()
    r = attack(b, x, targets, "minimal", max_iters=200)
    secs = time.perf_counter() - t0
    n = r.norms()
    out["fool"] = {"success_rate": float(r.success.float().mean()),
                   "median_linf_255": statistics.median((n["linf"] * 255).round().tolist()),
                   "median_iterations": statistics.median(r.iterations.tolist()), "seconds_per_image": secs / len(x)}
    print(out["fool"], flush=True)

    t0 = time.perf_counter()
    visualize_class(b, 76, ClassVizOptions(iters=100))
    out["classviz_s_per_100_iters"] = time.perf_counter() - t0
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
