"""Scale benchmarks (results go to docs/benchmarks.md): does memory stay flat as the inputs grow, and do two
processes give the same output as one?

--part rss: peak RSS of `cnnlab explain saliency --method vanilla` (Lite0, streamed into its run directory) over 50
    vs 1000 images, and of `cnnlab features --out STORE` over 1,000 vs 20,000 image files (the 15-Scene images
    linked several times under other names), each in its own process;
--part torchrun: `cnnlab features` into a store and `cnnlab explain saliency` by 1 process and by 2 (torchrun,
    gloo, OMP_NUM_THREADS=1 each): wall time of both, and whether the outputs are identical (compared bit for bit).

    python benchmarks/scale.py --data ../shared/data/15scene --part rss|torchrun
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def peak_rss_mb(argv: list[str], env: dict | None = None) -> tuple[float, float]:
    """(peak RSS of the largest process of the command, in MB; wall seconds), measured by a fresh parent."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "r = subprocess.run(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t, r.returncode)")
    out = subprocess.run([sys.executable, "-c", probe, *argv], env=env or ENV, capture_output=True, text=True)
    kb, seconds, code = out.stdout.split()[-3:]
    if int(code):
        raise RuntimeError(out.stderr[-2000:])
    return int(kb) / 1024, float(seconds)


def linked_dataset(src: Path, dst: Path, n: int) -> Path:
    """n image files in src's class folders, linked again and again under other names."""
    files = sorted(p for p in src.rglob("*.jpg"))
    k = 0
    while k < n:
        for f in files:
            if k >= n:
                break
            target = dst / f.parent.name / f"{k // len(files)}_{f.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(f.resolve(), target)
            k += 1
    return dst


def part_rss(args) -> dict:
    rows = {}
    cnnlab = [sys.executable, "-m", "cnnlab"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in (50, 1000):
            images = linked_dataset(Path(args.data), tmp / f"sal{n}", n)
            mb, s = peak_rss_mb(cnnlab + ["explain", "saliency", str(images), "--method", "vanilla", "--quiet",
                                          "--out", str(tmp / f"s{n}")])
            rows[f"saliency vanilla, {n} images"] = {"peak_rss_mb": mb, "seconds": s}
            print(rows, flush=True)
        for n in (1000, 20000):
            data = linked_dataset(Path(args.data), tmp / f"feat{n}", n)
            mb, s = peak_rss_mb(cnnlab + ["features", "--data", str(data), "--out", str(tmp / f"f{n}"), "--quiet",
                                          "--workers", "2"])
            rows[f"features, {n} files"] = {"peak_rss_mb": mb, "seconds": s}
            print(rows, flush=True)
    return rows


def part_torchrun(args) -> dict:
    rows = {}
    env = {**ENV, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = linked_dataset(Path(args.data), tmp / "data", args.n)
        jobs = {"features": ["features", "--data", str(data), "--workers", "0", "--precision", "fp32",
                             "--chunk-size", "128", "--quiet", "--out"],
                "saliency": ["explain", "saliency", str(data), "--method", "vanilla", "--limit", "300",
                             "--chunk-size", "32", "--quiet", "--out"]}
        for name, argv in jobs.items():
            times = {}
            for procs in (1, 2):
                launcher = ([sys.executable, "-m", "cnnlab"] if procs == 1 else
                            [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}",
                             "--master_port=29591", "-m", "cnnlab"])
                t0 = time.perf_counter()
                subprocess.run(launcher + argv + [str(tmp / f"{name}{procs}")], env=env, check=True,
                               capture_output=True)
                times[procs] = time.perf_counter() - t0
            rows[name] = {"seconds_1_process": times[1], "seconds_2_processes": times[2],
                          "identical": _identical(name, tmp / f"{name}1", tmp / f"{name}2")}
            print(name, rows[name], flush=True)
    return rows


def _identical(name: str, a: Path, b: Path) -> bool:
    """Bit-for-bit: every array part, and the per-image results (file paths aside)."""
    if name == "features":
        parts = sorted(p.relative_to(a) for p in a.rglob("part-*.npy"))
        same = all(np.array_equal(np.load(a / p), np.load(b / p)) for p in parts)
        ia, ib = (json.loads((d / "index.json").read_text()) for d in (a, b))
        return same and ia["paths"] == ib["paths"] and ia["labels"] == ib["labels"]
    parts = sorted(p.relative_to(a) for p in (a / "maps").glob("part-*.npy"))
    same = all(np.array_equal(np.load(a / p), np.load(b / p)) for p in parts)
    rows = [[{k: v for k, v in json.loads(line).items() if k != "map"} for line in (d / "results.jsonl").open()]
            for d in (a, b)]
    return same and rows[0] == rows[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a class-per-folder dataset (15-Scene)")
    ap.add_argument("--part", choices=["rss", "torchrun"], default="rss")
    ap.add_argument("--n", type=int, default=1024, help="--part torchrun: images")
    args = ap.parse_args()
    out = {"date": time.strftime("%Y-%m-%d"), "part": args.part,
           "rows": part_rss(args) if args.part == "rss" else part_torchrun(args)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
