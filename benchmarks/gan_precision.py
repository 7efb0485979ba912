"""Does bf16 training cost quality? The cDCGAN on MNIST trained with each precision over several seeds at equal
iterations, every run measured by `gan evaluate` (conditional accuracy, FD, KID, precision/recall,
density/coverage, CAS), then each bf16 mean compared with fp32's seed-to-seed spread (the rule for adopting
`--precision auto`: no metric of bf16 outside fp32's mean ± 2 sd).

    python benchmarks/gan_precision.py --data-root ../shared/data --device cuda --iters 8000 --batch 128 \
        --seeds 0,1,2 --out /tmp/precision            # a GPU: about 2 min per run on an H100
    python benchmarks/gan_precision.py --data-root ../shared/data --iters 4 --batch 8 --seeds 0 --eval-n 40 \
        --no-cas --out /tmp/p                          # the plumbing, in a minute on a CPU

    python benchmarks/gan_precision.py --data-root ../shared/data --precisions fp32,bf16-emulated ...
                                                       # a CPU without native bf16: bf16's numerics at fp32 speed

`bf16-emulated` trains with `--precision bf16` inside `cnnlab.core.precision.emulated_bf16`: the convolutions and
matrix products get bf16 operands, accumulate in fp32 and round once, as native bf16 kernels do (tests/test_precision.py
checks them against the correctly rounded result); the speed is fp32's, so its iters_per_s says nothing of bf16's.
Runs already finished under --out are not redone (each writes its scores.json last); a trained generator
(trained.json beside its checkpoint) is evaluated again, not retrained, when its scores.json is removed.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from contextlib import nullcontext

import numpy as np
import torch

from cnnlab.gan.evaluation import evaluate
from cnnlab.core.precision import emulated_bf16, native_bf16
from cnnlab.gan.training import GanConfig, train

METRICS = ("conditional_accuracy", "fd", "kid", "precision", "recall", "density", "coverage", "cas", "cas_real")


def run(args, precision: str, seed: int) -> dict:
    folder = Path(args.out) / f"{precision}-seed{seed}"
    done = folder / "scores.json"
    if done.is_file():
        return json.loads(done.read_text())
    emulated = precision == "bf16-emulated"
    config = GanConfig(model="cdcgan", data="mnist", data_root=args.data_root, iters=args.iters, batch=args.batch,
                       seed=seed, precision="bf16" if emulated else precision, device=args.device,
                       grid_at=[args.iters], checkpoint_every=args.iters)
    trained_file = folder / "trained.json"  # a trained generator is kept: a change of metrics re-evaluates only
    if trained_file.is_file():
        trained = json.loads(trained_file.read_text())
    else:
        with emulated_bf16() if emulated else nullcontext():
            trained = train(config=config, out=folder, progress=False).summary()
        trained_file.write_text(json.dumps({k: trained[k] for k in ("precision", "iters_per_s") if k in trained}))
    scores = evaluate(folder / "checkpoint.pt", data_root=args.data_root, n=args.eval_n, cas=args.cas).summary()
    # "training" (fp32/bf16), not "precision": that key is the metric (Kynkäänniemi et al.)
    row = {"training": precision if emulated else trained.get("precision", precision), "seed": seed, "iters_per_s": trained["iters_per_s"],
           **{k: scores[k] for k in METRICS if k in scores}}
    done.write_text(json.dumps(row))
    return row


def compare(rows: list[dict], base: str = "fp32") -> dict:
    """Per precision and metric: mean and sd over seeds; per other precision, whether each mean lies within the
    base's mean ± 2 sd (with one seed the base has no spread: 'within' is then not decided)."""
    out: dict = {}
    for p in sorted({r["training"] for r in rows}, key=lambda p: p != base):
        mine = [r for r in rows if r["training"] == p]
        out[p] = {k: {"mean": float(np.mean([r[k] for r in mine])),
                      "sd": float(np.std([r[k] for r in mine], ddof=1)) if len(mine) > 1 else None}
                  for k in (*METRICS, "iters_per_s") if all(k in r for r in mine)}
        out[p]["seeds"] = [r["seed"] for r in mine]
    for p, stats in out.items():
        if p == base or base not in out:
            continue
        stats["paired_diff"] = _paired(rows, p, base)
        stats["within_base_spread"] = {
            k: (abs(v["mean"] - out[base][k]["mean"]) <= 2 * out[base][k]["sd"]) if out[base][k]["sd"] is not None else None
            for k, v in stats.items() if k in METRICS and k in out[base]}
    return out


def _paired(rows: list[dict], p: str, base: str) -> dict:
    """Per metric, mean and sd over seeds of (p − base) on the same seed: same initial weights, data order and noise,
    so the difference is the precision's alone (plus the chaos it sets off)."""
    by = {(r["training"], r["seed"]): r for r in rows}
    seeds = [s for (q, s) in by if q == p and (base, s) in by]
    out = {}
    for k in METRICS:
        d = [by[p, s][k] - by[base, s][k] for s in seeds if k in by[p, s] and k in by[base, s]]
        if d:
            out[k] = {"mean": float(np.mean(d)), "sd": float(np.std(d, ddof=1)) if len(d) > 1 else None}
    return out


def markdown(summary: dict) -> str:
    keys = [k for k in (*METRICS, "iters_per_s") if all(k in s for s in summary.values())]
    lines = ["| training | seeds | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for p, s in summary.items():
        cells = [f"{s[k]['mean']:.3f}" + (f" ± {s[k]['sd']:.3f}" if s[k]["sd"] is not None else "") for k in keys]
        lines.append(f"| {p} | {len(s['seeds'])} | " + " | ".join(cells) + " |")
        if "paired_diff" in s:
            d = s["paired_diff"]
            cells = [(f"{d[k]['mean']:+.3f}" + (f" ± {d[k]['sd']:.3f}" if d[k]["sd"] is not None else ""))
                     if k in d else "" for k in keys]
            lines.append(f"| {p} − same seed's {next(iter(summary))} | {len(s['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--iters", type=int, default=8000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--eval-n", type=int, default=2000)
    ap.add_argument("--no-cas", dest="cas", action="store_false")
    args = ap.parse_args()
    rows = [run(args, p, int(s)) for s in args.seeds.split(",") for p in args.precisions.split(",")]
    summary = compare(rows)
    info = {"date": time.strftime("%Y-%m-%d"), "device": args.device, "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "native_bf16": native_bf16(args.device),
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None}
    print(markdown(summary))
    print(json.dumps({"machine": info, "rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
