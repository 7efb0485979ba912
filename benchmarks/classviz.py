"""Class-visualization settings vs recognizability by a different model (results in docs/benchmarks.md).

Generator Lite0, judge Lite2; for each setting, how many of 10 classes the judge ranks in its top 5.

    python benchmarks/classviz.py [--device cuda] [--generator-weights PATH] [--judge-weights PATH]
"""
import argparse

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--device", default="cpu")
ap.add_argument("--generator-weights", default="default")
ap.add_argument("--judge-weights", default="default")
args = ap.parse_args()
import time
from cnnlab.core.models import create_backbone
from cnnlab.core import imagenet
from cnnlab.explain.classviz import ClassVizOptions, visualize_class, class_probability
g = create_backbone("efficientnet_lite0", args.generator_weights, device=args.device)
j = create_backbone("efficientnet_lite2", args.judge_weights, device=args.device)
classes = ["tarantula", "gorilla", "tick", "goldfish", "school bus", "pizza", "volcano", "flamingo", "lemon", "zebra"]
configs = {
 "report": dict(augment=0),
 "aug4": dict(augment=4),
 "aug8-400": dict(augment=8, iters=400),
 "aug8-400-lr2": dict(augment=8, iters=400, lr=2.0),
 "aug8-400-l2.01": dict(augment=8, iters=400, l2=0.01),
 "aug8-400-blur1": dict(augment=8, iters=400, blur_sigma=1.0),
 "aug16-400-s.2r15": dict(augment=16, iters=400, scale=0.2, rotate=15),
 "aug8-800": dict(augment=8, iters=800),
 "aug16-400-s.3r20-j32": dict(augment=16, iters=400, scale=0.3, rotate=20, jitter=32),
}
for name, kw in configs.items():
    t0 = time.time(); ranks = []
    for c in classes:
        i = imagenet.resolve_class(c)
        img, _ = visualize_class(g, i, ClassVizOptions(**kw))
        ranks.append(class_probability(j, img, i)[1])
    print(name, "top5", sum(r <= 5 for r in ranks), ranks, round(time.time() - t0, 1), "s", flush=True)
