"""Relevance propagation against the attention maps, Grad-CAM and the input-only controls, on one fixed protocol.

The protocol (the one the measurements filed against cnnlab used): deletion AUC of the TRUE class's probability as
pixels are set to 0, most relevant first, in 16 equal steps (17 points, trapezoid rule; lower is better), per image,
then the mean with its 95 % interval (normal approximation) and, against the best control, the paired difference.
The maps are cnnlab's own (`cnnlab.saliency`); `brightness` (the brightest pixels first) and `random` are the
controls.

    python benchmarks/relevance.py --model mnist_vit --data-root ../shared/data --n 50
    python benchmarks/relevance.py --model mnist_cnn --data-root ../shared/data --n 50 --methods lrp,gradcam,vanilla
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time

import numpy as np
import torch

import cnnlab

METHODS = "attnlrp,attnlrp:attnlrp,chefer,rollout,gradcam,vanilla,lrp"
STEPS = 16


def deletion_auc(model, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, steps: int = STEPS) -> np.ndarray:
    """(N,) AUC of the target's probability as the top k/steps of the pixels (by `maps`) are set to 0."""
    n, _, h, w = x.shape
    order = maps.flatten(1).argsort(dim=1, descending=True)
    probs = []
    with torch.no_grad():
        for k in range(steps + 1):
            keep = torch.ones(n, h * w)
            cut = round(k * h * w / steps)
            keep.scatter_(1, order[:, :cut], 0.0)
            probs.append(model(x * keep.view(n, 1, h, w)).softmax(1).gather(1, target.view(-1, 1))[:, 0])
    p = torch.stack(probs, 1).numpy()
    return ((p[:, 1:] + p[:, :-1]) / 2).mean(1)


def interval(v: np.ndarray) -> tuple[float, float]:
    half = 1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return float(v.mean()), float(half)


def digits(root: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from cnnlab.core.data import load_mnist

    X, y = load_mnist(root, train=False)
    return X[:n].float() / 255, y[:n]


def photos(path: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The foolbox20 ImageNet photos (label index in the name), at Lite0's input through its preprocessing."""
    from pathlib import Path

    from cnnlab.core.inputs import sources

    files = sorted(Path(path).glob("*.jpg"))[:n]
    prep = cnnlab.load_model("efficientnet_lite0").preprocess
    x = torch.stack([s.network_input(prep) for s in sources([str(f) for f in files])[0]])
    y = torch.tensor([int(f.stem.split("_")[-1]) for f in files])
    return x, y


def cpu_flags() -> str:
    try:
        flags = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "?"
    found = [f for f in ("avx512_bf16", "amx_bf16", "avx512f", "avx2") if f in flags]
    return "CPU-bf16" if "avx512_bf16" in found or "amx_bf16" in found else ("CPU-avx2" if found else "?")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mnist_vit")
    ap.add_argument("--data-root", help="holds MNIST/raw (digits)")
    ap.add_argument("--photos", help="a folder of ImageNet photos named *_<label>.jpg (instead of digits)")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--methods", default=METHODS, help="NAME, or attnlrp:VARIANT[:GAMMA], comma-separated")
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args()
    model = cnnlab.load_model(args.model)
    x, y = photos(args.photos, args.n) if args.photos else digits(args.data_root, args.n)
    rows, scores = [], {}
    g = torch.Generator().manual_seed(0)
    controls = {"brightness": x.mean(1), "random": torch.rand(x.shape[0], *x.shape[-2:], generator=g)}
    for name in [m for m in args.methods.split(",") if m]:
        method, _, variant = name.partition(":")  # attnlrp:VARIANT or attnlrp:VARIANT:GAMMA
        variant, _, gamma = variant.partition(":")
        options = ({"attnlrp_variant": variant} if variant else {}) | ({"attnlrp_gamma": float(gamma)} if gamma else {})
        t0 = time.perf_counter()
        try:
            maps = cnnlab.saliency(model, x, method=method, target=[int(t) for t in y], **options).maps
        except cnnlab.CnnlabError as exc:
            print(f"{name}: refused: {exc}")
            continue
        scores[name] = deletion_auc(model, x, maps, y)
        rows.append({"method": name, "seconds": round(time.perf_counter() - t0, 2)})
    for name, maps in controls.items():
        scores[name] = deletion_auc(model, x, maps, y)
        rows.append({"method": f"{name} (control)", "seconds": 0.0})
    best_control = min(("brightness", "random"), key=lambda k: scores[k].mean())
    for row in rows:
        key = row["method"].replace(" (control)", "")
        mean, half = interval(scores[key])
        diff, dhalf = interval(scores[key] - scores[best_control])
        wins = int((scores[key] < scores[best_control]).sum())
        row |= {"deletion_auc": round(mean, 3), "ci": round(half, 3),
                f"minus_{best_control}": round(diff, 3), "diff_ci": round(dhalf, 3), "wins": wins}
    rows.sort(key=lambda r: r["deletion_auc"])
    where = f"{args.model}, {len(x)} {'photos' if args.photos else 'MNIST test digits'}"
    print(f"deletion AUC (true class, pixels to 0 in {STEPS} steps; lower is better), {where}, {cpu_flags()} "
          f"({platform.processor() or platform.machine()}), {time.strftime('%Y-%m-%d')}")
    print(f"| method | deletion AUC ± 95 % | minus {best_control} (paired) ± 95 % | better than {best_control} on | s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['deletion_auc']:.3f} ± {r['ci']:.3f} | {r[f'minus_{best_control}']:+.3f} ± "
              f"{r['diff_ci']:.3f} | {r['wins']} of {len(x)} | {r['seconds']:.1f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"model": args.model, "n": len(x), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
