"""Peak memory of per-image jobs on phone-size photos: `explain saliency --out` and `classify --out` over N JPEGs of
4000×3000 (synthetic: smooth colour fields with noise, saved at quality 90), each command in its own process, peak
RSS read from the kernel (ru_maxrss of the child). Also `import cnnlab` against `import torch, torchvision`.

    python benchmarks/memory.py --n 100 [--folder /tmp/phones] [--import-only]
    python benchmarks/memory.py --part evaluate --sizes 100,1000 [--data-root ../shared/data]

--part evaluate: `explain evaluate --out` (mnist_cnn, gradcam and vanilla, every metric) over N MNIST test digits
saved as PNGs (strokes drawn here if MNIST is absent), each N in its own process: peak RSS should not grow with N.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def photos(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        p = folder / f"phone_{k:03d}.jpg"
        if not p.is_file():
            small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize((4000, 3000), Image.BICUBIC)
            noise = rng.integers(-12, 13, (3000, 4000, 3), dtype=np.int16)
            arr = np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(p, quality=90)
        out.append(p)
    return out


def peak_mb(argv: list[str]) -> tuple[float, float]:
    """(peak RSS in MB of the child, seconds)."""
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.perf_counter() - t0


def own_peak_mb(cli_args: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one CLI call in a fresh process, read by that process itself."""
    code = ("import resource, sys; from cnnlab.cli import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024); sys.exit(rc)")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *cli_args], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1]), time.perf_counter() - t0


def digits(folder: Path, n: int, data_root: str) -> Path:
    """n MNIST test digits as PNGs (strokes if MNIST is not under data_root)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        from cnnlab.core.data import load_mnist

        images = load_mnist(data_root, train=False)[0][:n, 0].numpy()
    except Exception:  # noqa: BLE001 — no MNIST here: strokes of varying shape
        images = np.zeros((n, 28, 28), np.uint8)
        for k in range(n):
            images[k, 4 + k % 9:24, 6 + k % 7:12 + k % 11] = 255
    for k, a in enumerate(images):
        p = folder / f"digit_{k:05d}.png"
        if not p.is_file():
            Image.fromarray(np.asarray(a, dtype=np.uint8)).save(p)
    return folder


def evaluate_memory(args) -> dict:
    rows = {}
    for n in [int(v) for v in args.sizes.split(",")]:
        folder = digits(Path(args.folder) / f"digits{n}", n, args.data_root)
        cli = ["explain", "evaluate", str(folder), "--backbone", "mnist_cnn", "--methods", "gradcam,vanilla",
               "--metrics", "deletion,insertion,road,randomization", "--no-figure-steps", "--quiet",
               "--out", f"{args.out}/evaluate-{n}-{time.time()}"]
        rows[n] = dict(zip(("peak_rss_mb", "seconds"), own_peak_mb(cli)))
    return {"part": "evaluate", "images": "MNIST test digits, 28x28 PNG", "runs": rows}


def import_seconds(code: str, repeat: int = 5) -> float:
    best = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        best.append(time.perf_counter() - t0)
    return min(best)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--folder", default="/tmp/cnnlab-phones")
    ap.add_argument("--out", default="/tmp/cnnlab-memory-runs")
    ap.add_argument("--import-only", action="store_true", help="only the import times")
    ap.add_argument("--part", default="photos", choices=["photos", "evaluate"])
    ap.add_argument("--sizes", default="100,1000", help="--part evaluate: numbers of images, one process each")
    ap.add_argument("--data-root", default="../shared/data", help="--part evaluate: the folder holding MNIST/")
    args = ap.parse_args()
    if args.part == "evaluate":
        print(json.dumps(evaluate_memory(args), indent=2))
        return
    rows = {}
    if not args.import_only:
        photos(Path(args.folder), args.n)
    # ru_maxrss of children is the max over all children so far: the lighter command runs first
    for name, cmd in [] if args.import_only else [("classify", ["classify"]), ("saliency", ["explain", "saliency", "--method", "vanilla"])]:
        argv = [sys.executable, "-m", "cnnlab", *cmd, args.folder, "--quiet", "--out", f"{args.out}/{name}-{time.time()}"]
        rows[name] = dict(zip(("peak_rss_mb", "seconds"), peak_mb(argv)))
    torch_s = import_seconds("import torch, torchvision")
    cnnlab_s = import_seconds("import torch, torchvision, cnnlab")
    jobs_s = import_seconds("import torch, torchvision, cnnlab; cnnlab.saliency; cnnlab.classify; cnnlab.fool; "
                            "cnnlab.features")
    rows["import"] = {"torch_torchvision_s": torch_s, "plus_cnnlab_s": cnnlab_s - torch_s,
                      "plus_per_image_jobs_s": jobs_s - torch_s}
    print(json.dumps({"n": args.n, "photo": "4000x3000 JPEG", **rows}, indent=2))


if __name__ == "__main__":
    main()
