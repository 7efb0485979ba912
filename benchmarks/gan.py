"""GAN training speed: a plain pytorch/examples-style loop vs `cnnlab gan train`, same networks, batch and data.

The plain loop: NCHW, default Adam, BCE-with-logits, the D step's fakes reused for the G step, no logging.
cnnlab: channels_last (conv models), fused Adam, TensorBoard scalars, checkpoint at the end; `--precision bf16`
autocasts its forward passes.

    python benchmarks/gan.py --data-root ../shared/data [--iters 60] [--batch 64] [--device cuda] [--precision bf16]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
import torch.nn.functional as F

from cnnlab.gan.models import build_gan
from cnnlab.gan.training import GanConfig, load_training_data, train_run


def plain_loop(config: GanConfig, warmup: int = 5, device: str = "cpu") -> float:
    X, Y, classes = load_training_data(config)
    torch.manual_seed(0)
    G, D = build_gan(config.model, config.nz, config.ngf, config.ndf, X.shape[1], classes or 10, True, X.shape[-1])
    G, D = G.to(device), D.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=config.lr, betas=(config.beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=config.lr, betas=(config.beta1, 0.999))
    B = config.batch
    for it in range(warmup + config.iters):
        if it == warmup:
            t0 = time.perf_counter()
        idx = torch.randint(0, len(X), (B,))
        real, y = X[idx].to(device).float() / 127.5 - 1, Y[idx].to(device)
        yf = torch.randint(0, classes or 1, (B,), device=device)
        D.zero_grad()
        out = D(real, y)
        F.binary_cross_entropy_with_logits(out, torch.ones_like(out)).backward()
        fake = G(torch.randn(B, config.nz, device=device), yf)
        out = D(fake.detach(), yf)
        F.binary_cross_entropy_with_logits(out, torch.zeros_like(out)).backward()
        opt_d.step()
        G.zero_grad()
        out = D(fake, yf)
        F.binary_cross_entropy_with_logits(out, torch.ones_like(out)).backward()
        opt_g.step()
    float(out.sum())  # waits for the device
    return config.iters / (time.perf_counter() - t0)


def cnnlab_loop(config: GanConfig, device: str = "cpu") -> float:
    with tempfile.TemporaryDirectory() as tmp:
        warm = config.replace(iters=5, device=device)
        train_run(warm, f"{tmp}/warm", progress=False)  # same warm-up as the plain loop
        s = train_run(config.replace(device=device), f"{tmp}/run", progress=False).summary()
    return s["iters_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--models", default="cdcgan,cgan,dcgan")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"], help="cnnlab's side (the plain loop: fp32)")
    args = ap.parse_args()
    rows = []
    for model in args.models.split(","):
        data = "celeba64" if model == "dcgan" else "mnist"
        config = GanConfig(model=model, data=data, data_root=args.data_root, batch=args.batch, iters=args.iters,
                           checkpoint_every=10**9, limit=4096, precision=args.precision)
        plain, ours = plain_loop(config, device=args.device), cnnlab_loop(config, args.device)
        rows.append({"model": model, "batch": args.batch, "device": args.device, "precision": args.precision, "plain_iters_per_s": plain, "cnnlab_iters_per_s": ours,
                     "speedup": ours / plain})
        print(rows[-1], flush=True)
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
