"""Which training-speed levers pay on this machine? One GAN training step (D on real, D on fake, G through D) on
random data, timed with each lever on or off, every run in the same process layout (results in docs/benchmarks.md).

Levers: cl (channels_last, conv models), fused (fused Adam), freeze (D's weights need no gradient during the G step),
compile (torch.compile / Inductor). `plain` = none of them (the pytorch/examples loop). `--batches 64,256` times
each lever at each batch size: a larger batch (with a scaled learning rate) pays only where it raises the samples
per second, i.e. where the step is bound by overhead rather than arithmetic.

    python benchmarks/gan_levers.py --model cdcgan --levers plain,cl_fused,cl_fused_freeze,fused_compile [--iters 20]
    python benchmarks/gan_levers.py --model cdcgan --levers cl_fused --batches 64,128,256 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from cnnlab.gan.models import build_gan

SHAPES = {"dcgan": (3, 64), "cdcgan": (1, 28), "cgan": (1, 28)}


def iters_per_s(model: str, levers: str, iters: int, batch: int = 64) -> tuple[float, float]:
    """(iterations/s after 3 warm-up steps, warm-up seconds) for one combination of levers."""
    torch.manual_seed(0)
    nc, size = SHAPES[model]
    G, D = build_gan(model, 100, 64, 64, nc, 10, True, size)
    fmt = torch.channels_last if "cl" in levers and model != "cgan" else torch.contiguous_format
    G, D = G.to(memory_format=fmt), D.to(memory_format=fmt)
    fused = True if "fused" in levers else None
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999), fused=fused)
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999), fused=fused)
    if "compile" in levers:
        G, D = torch.compile(G), torch.compile(D)
    classes = 1 if model == "dcgan" else 10
    X = (torch.rand(batch, nc, size, size) * 2 - 1).contiguous(memory_format=fmt)
    Y = torch.randint(0, classes, (batch,))

    def step():
        D.zero_grad(set_to_none=True)
        out = D(X, Y)
        F.binary_cross_entropy_with_logits(out, torch.ones_like(out)).backward()
        yf = torch.randint(0, classes, (batch,))
        fake = G(torch.randn(batch, 100), yf)
        out = D(fake.detach(), yf)
        F.binary_cross_entropy_with_logits(out, torch.zeros_like(out)).backward()
        opt_d.step()
        G.zero_grad(set_to_none=True)
        if "freeze" in levers:
            D.requires_grad_(False)
        out = D(fake, yf)
        F.binary_cross_entropy_with_logits(out, torch.ones_like(out)).backward()
        D.requires_grad_(True)
        opt_g.step()

    t0 = time.perf_counter()
    for _ in range(3):
        step()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return iters / (time.perf_counter() - t0), warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cdcgan", choices=list(SHAPES))
    ap.add_argument("--levers", default="plain,cl_fused,cl_fused_freeze,fused_compile")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--batches", default="64", help="batch sizes, comma-separated")
    ap.add_argument("--repeats", type=int, default=1, help="rounds over every setting (the median is kept)")
    args = ap.parse_args()
    settings = [(lv, int(b)) for lv in args.levers.split(",") for b in args.batches.split(",")]
    runs: dict = {s: [] for s in settings}
    for _ in range(args.repeats):  # interleaved: a slow spell of a shared machine hits every setting alike
        for levers, batch in settings:
            runs[levers, batch].append(iters_per_s(args.model, levers, args.iters, batch))
    rows = []
    for (levers, batch), got in runs.items():
        speed = sorted(s for s, _ in got)[len(got) // 2]
        rows.append({"model": args.model, "levers": levers, "batch": batch, "iters_per_s": speed,
                     "samples_per_s": speed * batch, "warmup_s": got[0][1]})
        print(rows[-1], flush=True)
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
