"""The report's Q2-3.10 (CNN features vs SIFT + bag of words) and Q2-3.11 (the SVM replaced by a neural network; the
weights fine-tuned): every classifier `cnnlab transfer` offers, on the same splits, through the public API.

    python benchmarks/transfer_heads.py --data ../shared/data/15scene --seeds 0,1,2 \
        --rows sift-bow,svm,linear,mlp,last:3,all --epochs 6 --out heads.jsonl
    python benchmarks/transfer_heads.py --table heads.jsonl
    python benchmarks/transfer_heads.py --export-mnist ../shared/data digits200   # the second dataset

`--export-mnist ROOT DEST` writes 200 MNIST test digits per class as PNG class folders (a seeded draw): a second
dataset for the same table, far from ImageNet's photos (28×28 grey strokes), read as `--data DEST`.

Each row: test accuracy (the 15-Scene protocol: 100 training images per class, the rest for test) and wall time.
`svm`, `linear` and `mlp` read Lite0's frozen features (cached after the first extraction: their time is the fit);
`last:N` and `all` fine-tune Lite0 on augmented images with a linear head.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import cnnlab


def run(row: str, data: str, seed: int, epochs: int, per_class: int) -> dict:
    options = {"split": f"random:{per_class}", "seed": seed}
    if row == "sift-bow":
        res = cnnlab.transfer(data, model="sift-bow", **options)
    elif row == "svm":
        res = cnnlab.transfer(data, model="efficientnet_lite0", **options)
    elif row in ("linear", "mlp"):
        res = cnnlab.transfer(data, model="efficientnet_lite0", head=row, epochs=epochs, **options)
    else:
        res = cnnlab.transfer(data, model="efficientnet_lite0", head="linear", finetune=row, epochs=epochs, **options)
    s = res.summary()
    return {"row": row, "seed": seed, "test_accuracy": s["selected"]["test_accuracy"], "selected": s["selected"],
            "n_train": s["n_train"], "n_test": s["n_test"], "history": s.get("history")}


def export_mnist(root: str, dest: str, per_class: int = 200, seed: int = 0) -> None:
    import numpy as np
    from pathlib import Path
    from PIL import Image

    from cnnlab.core.data import load_mnist

    images, labels = load_mnist(root, train=False)
    rng = np.random.default_rng(seed)
    for digit in range(10):
        folder = Path(dest) / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        for i in rng.permutation(np.flatnonzero(labels.numpy() == digit))[:per_class]:
            Image.fromarray(images[i, 0].numpy()).save(folder / f"{int(i):05d}.png")


def table(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| classifier | splits | test accuracy, mean ± sd | per split | seconds per split |")
    print("|---|---|---|---|---|")
    for name in dict.fromkeys(r["row"] for r in rows):
        rs = [r for r in rows if r["row"] == name]
        acc = [r["test_accuracy"] for r in rs]
        sd = statistics.stdev(acc) if len(acc) > 1 else float("nan")
        print(f"| {name} | {len(rs)} | {statistics.mean(acc):.3f} ± {sd:.3f} | "
              f"{', '.join(f'{a:.3f}' for a in acc)} | {statistics.mean(r['seconds'] for r in rs):.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rows", default="sift-bow,svm,linear,mlp,last:3,all")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--out", default="heads.jsonl")
    ap.add_argument("--table", metavar="JSONL")
    ap.add_argument("--export-mnist", nargs=2, metavar=("ROOT", "DEST"))
    args = ap.parse_args()
    if args.export_mnist:
        return export_mnist(*args.export_mnist)
    if args.table:
        return table(args.table)
    for row in args.rows.split(","):
        for seed in map(int, args.seeds.split(",")):
            t0 = time.perf_counter()
            r = run(row, args.data, seed, args.epochs, args.per_class)
            r.update(seconds=time.perf_counter() - t0, date=time.strftime("%Y-%m-%d"),
                     cpu=platform.processor() or platform.machine())
            print(json.dumps(r), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
