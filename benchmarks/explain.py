"""Explain benchmarks (results go to docs/benchmarks.md).

(a) faithfulness: deletion/insertion AUC of each saliency method vs a random patch order on ImageNet images;
(b) overhead of cnnlab's vanilla saliency vs a direct Captum `Saliency` call (same model, same images);
(c) fooling: success rate, median L∞ / iterations / seconds per image for random targets;
(d) class visualization: seconds per 100 iterations;
--part roundtrip: fooling images as images — the fraction of saved PNGs that `cnnlab classify` (same backbone) puts on
    the target, and their median L∞, for photos at their own sizes (0.3) and for the old way (attack the 224×224
    network input, save that);
--part transfer: targeted / untargeted transfer to a model not attacked (Lite2) at ε = 16/255, from Lite0, from
    Lite0+Lite1, with --method transfer, and the transfer method's ingredients one at a time;
--part mnist: the L∞ / L2 a minimal fooling image needs on MNIST digits vs ImageNet photos (the report's Q2.7).

    python benchmarks/explain.py --images ../shared/data/imagenet/foolbox20 [--n 20] [--methods vanilla,gradcam]
    python benchmarks/explain.py --images ../shared/data/imagenet/foolbox20 --part roundtrip|transfer|mnist
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
from cnnlab.explain.targets import resolve_targets
from cnnlab.explain.classviz import ClassVizOptions, visualize_class
from cnnlab.explain.faithfulness import deletion_insertion, random_baseline
from cnnlab.explain.saliency import attribute, predicted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--methods", default="vanilla,smoothgrad,ig,gradcam,gradcam:head+block6,occlusion",
                    help="methods; method:LAYER picks Grad-CAM layers, ig:black|blur IG's baseline")
    ap.add_argument("--random-orders", type=int, default=4, help="random patch orders averaged for the baseline")
    ap.add_argument("--skip-extras", action="store_true", help="faithfulness only (no overhead/fool/classviz)")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--part", default="faithfulness", choices=["faithfulness", "roundtrip", "transfer", "mnist"])
    ap.add_argument("--iters", type=int, default=100, help="--part transfer: iterations of the transfer method")
    ap.add_argument("--data-root", default="../shared/data", help="--part mnist: the folder holding MNIST/")
    args = ap.parse_args()
    if args.part != "faithfulness":
        part = {"roundtrip": roundtrip, "transfer": transfer, "mnist": mnist}[args.part]
        print(json.dumps(part(args), indent=2))
        return
    b = create_backbone(args.backbone)
    x = read_images([args.images], args.n).batch(b.preprocess)
    pred = predicted(b, x)
    out = {"backbone": args.backbone, "n": len(x), "date": time.strftime("%Y-%m-%d"), "faithfulness": {}}
    baseline = random_baseline(b, x, pred, n_random=args.random_orders)  # the same for every method: once
    out["random"] = {k: float(v.mean()) for k, v in baseline.items()}
    for spec in args.methods.split(","):
        method, _, suffix = spec.partition(":")  # e.g. gradcam:head+block6, ig:black
        options = dict(ig_baseline=suffix or "blur") if method == "ig" else dict(layer=suffix or None)
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


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def roundtrip(args) -> dict:
    """Saved fooling images read back by `cnnlab classify`: made at the photo's size (now) or on the 224 crop (before)."""
    import tempfile

    import cnnlab

    model = cnnlab.load_model(args.backbone)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for way, images in (("photo at its own size (0.3)", [args.images]),
                            ("the network's 224 input (0.2)", read_images([args.images], args.n).batch(model.preprocess))):
            res, secs = _timed(lambda: cnnlab.fool(model, images, target="random", seed=0, max_iters=200,
                                                   limit=args.n))
            run = res.save(f"{tmp}/{len(rows)}")
            files = [run / f"adversarial_{k:03d}.png" for k in range(len(res.names))]
            back = cnnlab.classify(model, files, topk=1).results
            hits = [r["top"][0]["index"] == t for r, t in zip(back, res.targets)]
            rows[way] = {"n": len(files), "reported_success": float(res.success.float().mean()),
                         "classify_on_target": sum(hits) / len(hits),
                         "median_linf_255": statistics.median((res.linf * 255).round().tolist()),
                         "sizes": sorted({tuple(a.shape[-2:]) for a in res.adversarials}),
                         "seconds_per_image": secs / len(files)}
            print(way, rows[way], flush=True)
    return {"backbone": args.backbone, "date": time.strftime("%Y-%m-%d"), "roundtrip": rows}


def transfer(args) -> dict:
    """Targeted and untargeted transfer to Lite2 of images made at ε = 16/255 by single models, an ensemble, and the
    transfer method (with each of its ingredients switched off in turn)."""
    import cnnlab

    lite0, lite1 = cnnlab.load_model("efficientnet_lite0"), cnnlab.load_model("efficientnet_lite1")
    eps, it = 16 / 255, args.iters
    settings = {
        "Lite0, pgd": ([lite0], dict(method="pgd", eps=eps, max_iters=it)),
        "Lite0+Lite1, pgd": ([lite0, lite1], dict(method="pgd", eps=eps, max_iters=it)),
        "Lite0, transfer": ([lite0], dict(method="transfer", eps=eps, max_iters=it)),
        "Lite0+Lite1, transfer": ([lite0, lite1], dict(method="transfer", eps=eps, max_iters=it)),
        "Lite0+Lite1, transfer, loss ce": ([lite0, lite1], dict(method="transfer", eps=eps, max_iters=it, loss="ce")),
        "Lite0+Lite1, transfer, no momentum": ([lite0, lite1], dict(method="transfer", eps=eps, max_iters=it,
                                                                    momentum=0.0)),
        "Lite0+Lite1, transfer, no diversity": ([lite0, lite1], dict(method="transfer", eps=eps, max_iters=it,
                                                                     diversity=0.0)),
        "Lite0+Lite1, transfer, no TI": ([lite0, lite1], dict(method="transfer", eps=eps, max_iters=it, ti_kernel=0)),
    }
    rows = {}
    for name, (models, options) in settings.items():
        res, secs = _timed(lambda: cnnlab.fool(models, [args.images], target="random", seed=0, limit=args.n,
                                               eval_on=["efficientnet_lite2"], **options))
        rows[name] = res.summary()["transfer"]["efficientnet_lite2"] | {
            "white_box_success": float(res.success.float().mean()),
            "median_linf_255": statistics.median((res.linf * 255).round().tolist()), "seconds_per_image": secs / args.n}
        print(name, rows[name], flush=True)
    return {"to": "efficientnet_lite2", "eps": "16/255", "iters": it, "n": args.n, "date": time.strftime("%Y-%m-%d"),
            "transfer": rows}


def mnist(args) -> dict:
    """The smallest fooling change on digits (mnist_cnn) vs on photos (Lite0): minimal attack, random targets."""
    import cnnlab
    from cnnlab.core.data import load_mnist

    X, _ = load_mnist(args.data_root, train=False)
    digits = X[:args.n].float() / 255
    rows = {}
    for name, model, images, iters in (("MNIST digits, mnist_cnn", "mnist_cnn", digits, 3000),
                                       ("ImageNet photos, Lite0", "efficientnet_lite0", [args.images], 200)):
        res, secs = _timed(lambda: cnnlab.fool(model, images, target="random", seed=0, max_iters=iters, limit=args.n))
        ok = res.success
        rows[name] = {"success_rate": float(ok.float().mean()),
                      "median_linf_255": statistics.median((res.linf[ok] * 255).round().tolist()),
                      "median_l2": statistics.median(res.l2[ok].tolist()),
                      "median_rms_255": statistics.median(  # L2 / √(values): the typical change of one value
                          (255 * res.l2[ok] / torch.tensor([a.numel() ** 0.5 for a, s in zip(res.adversarials, ok)
                                                            if s])).tolist()),
                      "seconds_per_image": secs / len(res.names)}
        print(name, rows[name], flush=True)
    return {"n": args.n, "date": time.strftime("%Y-%m-%d"), "mnist_vs_imagenet": rows}


if __name__ == "__main__":
    main()
