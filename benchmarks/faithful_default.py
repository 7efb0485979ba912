"""Which saliency method deletes the evidence fastest on photos it was not tuned on? (the choice
of the default). Every candidate and pytorch-grad-cam's variants at the last layer go through one metric: cnnlab's deletion
ratio (16×16 patches blurred away most-salient first, AUC over that of 4 random orders, computed once per image).
Tune on one set (the 20 foolbox photos), report on another (the 25 lab images of imagenet_val_25.npz).

    python benchmarks/faithful_default.py --images ../shared/data/imagenet/foolbox20 \
        --candidates gradcam,smoothgrad-gradcam,rise --theirs GradCAM,GradCAMPlusPlus,XGradCAM,HiResCAM,LayerCAM

A candidate is a registered method name, optionally with options: `rise:rise_masks=500`, `gradcam:layer=head`.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from cnnlab.core.inputs import read_images
from cnnlab.core.models import create_backbone
from cnnlab.explain.faithfulness import deletion_insertion, random_baseline
from cnnlab.explain.saliency import method, predicted


def parse(spec: str):
    name, _, opts = spec.partition(":")
    kwargs = {}
    for kv in filter(None, opts.split(";")):
        k, v = kv.split("=")
        kwargs[k] = v.split("+") if k == "layer" else json.loads(v)
    return method(name, kwargs)


def theirs(backbone, variant: str, layer: str = "head"):
    """A pytorch-grad-cam variant at one cut point, as a function (x, targets) → maps."""
    import pytorch_grad_cam as cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module = dict(backbone.net.named_modules())[backbone.resolve(layer).module]

    def maps(x, targets):
        with getattr(cam, variant)(model=backbone, target_layers=[module]) as c:
            return torch.from_numpy(c(input_tensor=x.clone(), targets=[ClassifierOutputTarget(int(t))
                                                                       for t in targets]))
    return maps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--candidates", default="gradcam,smoothgrad-gradcam")
    ap.add_argument("--theirs", default="", help="pytorch-grad-cam classes at the last layer (`head`)")
    ap.add_argument("--batch", type=int, default=5)
    ap.add_argument("--out", default=None, help="also write the JSON there")
    args = ap.parse_args()
    b = create_backbone("efficientnet_lite0")
    x = read_images([args.images], args.n).batch(b.preprocess)
    pred = predicted(b, x)
    t0 = time.perf_counter()
    base = torch.cat([random_baseline(b, x[i:i + 1], pred[i:i + 1], seed=i, kinds=("deletion",))
                      ["random_deletion_auc"] for i in range(len(x))])
    out = {"images": args.images, "n": len(x), "date": time.strftime("%Y-%m-%d"),
           "random_deletion_auc": float(base.mean()), "baseline_seconds": time.perf_counter() - t0, "rows": {}}
    fns = {c: (lambda m: lambda xx, tt: m.attribute(b, xx, tt))(parse(c)) for c in filter(None, args.candidates.split(","))}
    fns |= {f"pytorch-grad-cam {v}": theirs(b, v) for v in filter(None, args.theirs.split(","))}
    for name, fn in fns.items():
        t = time.perf_counter()
        maps = torch.cat([fn(x[i:i + args.batch], pred[i:i + args.batch]).float() for i in range(0, len(x), args.batch)])
        seconds = (time.perf_counter() - t) / len(x)
        s = deletion_insertion(b, x, maps, pred, n_random=0)
        out["rows"][name] = {"deletion_ratio": float(s["deletion_auc"].mean() / base.mean()),
                             "deletion_auc": float(s["deletion_auc"].mean()),
                             "insertion_auc": float(s["insertion_auc"].mean()), "seconds_per_image": seconds}
        print(name, json.dumps(out["rows"][name]), flush=True)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
