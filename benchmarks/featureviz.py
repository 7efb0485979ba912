"""Feature visualization: which parameterization and transform chain draws a class that ANOTHER model recognizes
(results in docs/benchmarks.md, "Feature visualization").

Generator efficientnet_lite0, judge efficientnet_lite2, 512 steps at 224 px, one image per class, seed 0. The held-out
classes were chosen before any run and never used to pick settings; the tuning classes are the ones the pixel
method's settings were chosen on (docs/benchmarks.md, classviz). One JSON line per (setting, class) is appended to
--out (a rerun skips what is there), and each image is saved beside it.

    python benchmarks/featureviz.py [--classes held-out|tuning] [--settings fourier+chain,...] [--out FILE.jsonl]
"""
import argparse
import json
import os
import time
from pathlib import Path

HELD_OUT = ["hummingbird", "jellyfish", "strawberry", "lighthouse", "cheeseburger", "peacock", "monarch", "broccoli",
            "castle", "ladybug"]
TUNING = ["tarantula", "gorilla", "tick", "goldfish", "school bus", "pizza", "volcano", "flamingo", "lemon", "zebra"]
NO_CHAIN = dict(pad=0, jitter=0, augment=0)
SETTINGS = {
    "fourier+chain": dict(param="fourier"),
    "fourier": dict(param="fourier", **NO_CHAIN),
    "pixel+chain": dict(param="pixel"),
    "pixel": dict(param="pixel", **NO_CHAIN),
    "pixel, the report's jitter 16": dict(param="pixel", pad=0, jitter=16, augment=0),
    "pixel, 0.3 default (jitter 16, 4 copies)": dict(param="pixel", pad=0, jitter=16, augment=4),
}

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--classes", default="held-out", choices=["held-out", "tuning"])
ap.add_argument("--settings", default="fourier+chain,fourier,pixel+chain,pixel")
ap.add_argument("--iters", type=int, default=512)
ap.add_argument("--size", type=int, default=224)
ap.add_argument("--device", default="cpu")
ap.add_argument("--out", default="featureviz.jsonl")
ap.add_argument("--table", action="store_true", help="print the markdown table of what --out holds, and stop")
args = ap.parse_args()
if args.table:
    from statistics import median
    rows = [json.loads(line) for line in Path(args.out).read_text().splitlines()]
    print("| setting | judge top-1 | judge top-5 | judge ranks | median judge p | median seconds / image |")
    print("|---|---|---|---|---|---|")
    for setting in dict.fromkeys(r["setting"] for r in rows):
        rs = [r for r in rows if r["setting"] == setting]
        ranks = [r["judge_rank"] for r in rs]
        print(f"| {setting} | {sum(k == 1 for k in ranks)} / {len(rs)} | {sum(k <= 5 for k in ranks)} / {len(rs)} | "
              f"{', '.join(map(str, ranks))} | {median(r['judge_prob'] for r in rs):.3f} | "
              f"{median(r['seconds'] for r in rs):.0f} |")
    raise SystemExit

import torch  # noqa: E402

from cnnlab.core import imagenet  # noqa: E402
from cnnlab.core.images import save_png  # noqa: E402
from cnnlab.core.models import load_model  # noqa: E402
from cnnlab.explain.classviz import class_probability  # noqa: E402
from cnnlab.explain.dream import RenderOptions, render  # noqa: E402
from cnnlab.explain.objectives import class_logit  # noqa: E402

out = Path(args.out)
done = {(r["setting"], r["class"]) for r in map(json.loads, out.read_text().splitlines())} if out.exists() else set()
gen = load_model("efficientnet_lite0", device=args.device)
judge = load_model("efficientnet_lite2", device=args.device)
classes = HELD_OUT if args.classes == "held-out" else TUNING
cpu = os.popen("lscpu | grep -o 'avx512_bf16\\|amx_bf16\\|avx2' | sort -u | tr '\\n' ' '").read().strip()
for setting in args.settings.split(","):
    for name in classes:
        if (setting, name) in done:
            continue
        index = imagenet.resolve_class(name)
        t0 = time.perf_counter()
        image, _ = render(gen, class_logit(index), RenderOptions(iters=args.iters, size=args.size, **SETTINGS[setting]))
        seconds = time.perf_counter() - t0
        own, own_rank = class_probability(gen, image[0], index)
        prob, rank = class_probability(judge, image[0], index)
        save_png(image[0], out.with_suffix("") / f"{setting.replace(' ', '_')}_{name.replace(' ', '_')}.png")
        row = {"setting": setting, "class": name, "judge_rank": rank, "judge_prob": prob, "own_prob": own,
               "seconds": seconds, "threads": torch.get_num_threads(), "cpu_flags": cpu, "iters": args.iters}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
