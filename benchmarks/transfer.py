"""Transfer benchmarks (results go to docs/benchmarks.md).

(a) throughput: a plain torchvision loop (fp32, NCHW, batch 32, no_grad, decoding in the main process) vs
    `extract_features` on the same images in the same run, for VGG16 (random weights: same cost) and Lite0;
(b) accuracy: the 15-Scene protocol (100 train / class, rest test), mean ± sd over seeds, per offline backbone;
(c) wall time of a full layers × C ablation (one extraction + every SVM) vs one extraction pass;
(d) the defaults of `cnnlab transfer` end to end, mean ± sd over seeds;
(e) the accuracy cost of bf16 autocast: the same splits scored with fp32 and with bf16 features (Lite0);
(f) fp32 levers on the VGG16 forward pass alone (batch 32, random input): NCHW, channels_last, torch.compile.

    python benchmarks/transfer.py --data ../shared/data/15scene [--part a,b,c,d] [--n 128] [--seeds 5]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import numpy as np
import torch

from cnnlab.core.models import create_backbone
from cnnlab.core.data import ImageFolder, random_split
from cnnlab.transfer.features import extract_features
from cnnlab.jobs.transfer import transfer
from cnnlab.jobs.transfer import DEFAULT_CS, TransferConfig
from cnnlab.transfer.svm import run_grid


def plain_loop(name: str, paths, batch: int = 32, device: str = "cpu") -> float:
    """What a typical lab notebook does: images/s."""
    import torchvision.models as tvm
    from PIL import Image
    from torchvision import transforms as T

    if name == "vgg16":
        model, size, resize = tvm.vgg16(weights=None).eval(), 224, 256
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    else:
        backbone = create_backbone(name)
        model, p = backbone.net, backbone.preprocess
        size, resize, mean, std = p.input_size, p.resize_size, p.mean, p.std
    model = model.to(device)
    tf = T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(paths), batch):
            x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths[i:i + batch]])
            model(x.to(device)).cpu()  # the copy back waits for the device
    return len(paths) / (time.perf_counter() - t0)


def part_a(ds: ImageFolder, n: int, workers: int, device: str = "cpu") -> list[dict]:
    rng = np.random.default_rng(0)
    paths = [ds.paths[i] for i in rng.choice(len(ds.paths), n, replace=False)]
    rows = []
    for name, layer, weights in (("vgg16", "relu7", "random"), ("efficientnet_lite0", "pre_logits", "default")):
        plain = plain_loop(name, paths, device=device)
        b = create_backbone(name, weights, device=device)
        fs = extract_features(b, paths, [layer], workers=workers, progress=False)
        ours = fs.timing["images_per_s"]
        rows.append({"backbone": name, "n": n, "plain_images_per_s": plain, "cnnlab_images_per_s": ours,
                     "speedup": ours / plain, "precision": fs.timing["precision"]})
        print(rows[-1], flush=True)
    return rows


def part_b(ds: ImageFolder, seeds: int, cache: str, backbones, layers, flip: bool = False) -> list[dict]:
    rows = []
    for name in backbones:
        b = create_backbone(name)
        parts = sorted({p for spec in layers for p in spec.split("+")})
        fs = extract_features(b, ds.paths, parts, flip=flip, cache_dir=cache, progress=True)
        y = ds.labels[fs.keep]
        for spec in layers:
            accs = []
            for seed in range(seeds):
                sp = random_split(y, 100, seed)
                r = run_grid(fs.features, y, sp.train, sp.test, [spec.split("+")], list(DEFAULT_CS), "power-l2", 5, seed,
                             n_jobs=2)
                accs.append(r.selected["test_accuracy"])
            rows.append({"backbone": name, "layer": spec, "flip": flip, "mean": float(np.mean(accs)),
                         "sd": float(np.std(accs)), "seeds": seeds, "per_seed": accs})
            print(rows[-1], flush=True)
    return rows


def part_d(data: str, seeds: int, cache: str, backbone: str | None, layers: list[str] | None = None) -> dict:
    """The defaults end to end (`cnnlab transfer --data DIR --seed k`): the CV-selected layer and C, scored on test."""
    accs, chosen = [], []
    for seed in range(seeds):
        config = TransferConfig(data=data, seed=seed, cache_dir=cache)
        if backbone:
            config = config.replace(backbone=backbone)
        if layers:
            config = config.replace(layers=layers)
        s = transfer(config=config).summary()
        accs.append(s["selected"]["test_accuracy"])
        chosen.append((s["selected"]["layer"], s["selected"]["C"]))
    row = {"backbone": config.backbone, "layers": config.layers, "mean": float(np.mean(accs)),
           "sd": float(np.std(accs, ddof=1)), "per_seed": accs, "selected": chosen}
    print(row, flush=True)
    return row


def part_e(ds: ImageFolder, seeds: int, cache: str, per_class: int = 150, spec: str = "pre_logits+block5") -> dict:
    """bf16 vs fp32 features (Lite0), same images, same splits, same CV: the paired difference in test accuracy.

    On a CPU without native bf16 the autocast is emulated (≈ 1 img/s here), hence a seeded subset of `per_class`
    images per class (100 train + the rest test, as the standard protocol) rather than all 4485.
    """
    rng = np.random.default_rng(0)
    subset = np.sort(np.concatenate([rng.choice(np.flatnonzero(ds.labels == c), per_class, replace=False)
                                     for c in range(len(ds.classes))]))
    paths = [ds.paths[i] for i in subset]
    b = create_backbone("efficientnet_lite0")
    parts = spec.split("+")
    accs, timing = {}, {}
    for precision in ("fp32", "bf16"):
        fs = extract_features(b, paths, parts, precision=precision, cache_dir=cache, progress=True)
        timing[precision] = fs.timing
        y = ds.labels[subset][fs.keep]
        accs[precision] = []
        for seed in range(seeds):
            sp = random_split(y, 100, seed)
            r = run_grid(fs.features, y, sp.train, sp.test, [parts], list(DEFAULT_CS), "power-l2", 5, seed, n_jobs=2)
            accs[precision].append(r.selected["test_accuracy"])
    diff = np.array(accs["bf16"]) - np.array(accs["fp32"])
    row = {"layer": spec, "images": len(paths), "fp32": accs["fp32"], "bf16": accs["bf16"],
           "mean_diff_points": float(diff.mean() * 100),
           "sd_diff_points": float(diff.std(ddof=1) * 100) if seeds > 1 else 0.0,
           "bf16_images_per_s": timing["bf16"].get("images_per_s"), "cpu": torch.backends.cpu.get_cpu_capability()}
    print(row, flush=True)
    return row


def part_f(batch: int = 32, repeats: int = 2) -> dict:
    """Images/s of the bare VGG16 forward pass: how far fp32 can go on this machine without decoding."""
    import torch._inductor.config as inductor
    import torchvision.models as tvm

    inductor.freezing = True  # constant-fold the weights: oneDNN prepacks them once

    def speed(model, x):
        with torch.inference_mode():
            model(x)  # warm-up (and compilation)
            t0 = time.perf_counter()
            for _ in range(repeats):
                model(x)
        return repeats * len(x) / (time.perf_counter() - t0)

    model, x = tvm.vgg16(weights=None).eval(), torch.rand(batch, 3, 224, 224)
    row = {"nchw_eager": speed(model, x)}
    model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    row["channels_last_eager"] = speed(model, x)
    t0 = time.perf_counter()
    compiled = torch.compile(model)
    row["channels_last_compiled"] = speed(compiled, x)
    row["compile_and_measure_s"] = time.perf_counter() - t0
    print(row, flush=True)
    return row


def part_c(data: str, workers: int) -> dict:
    layers = ["block5", "block6", "block7", "pre_logits"]
    b = create_backbone("efficientnet_lite0")
    ds = ImageFolder.scan(data)
    t0 = time.perf_counter()
    extract_features(b, ds.paths, layers[-1:], workers=workers, progress=False)
    one_pass = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        s = transfer(data, "efficientnet_lite0", layers=layers, workers=workers, cache_dir=tmp).summary()
        full = time.perf_counter() - t0
    row = {"one_extraction_pass_s": one_pass, "full_ablation_s": full, "ratio": full / one_pass,
           "fit_s": s["timing"]["fit_s"], "grid": f"{len(layers)} layers x {len(DEFAULT_CS)} C, 5-fold CV"}
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--part", default="a,b,c")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--backbones", default="efficientnet_lite0,efficientnet_lite1,efficientnet_lite2")
    ap.add_argument("--layers", default="pre_logits,pre_logits+block5")
    ap.add_argument("--device", default="cpu", help="part a: cpu or cuda (bf16 is automatic where native)")
    ap.add_argument("--per-class", type=int, default=150, help="part e: images per class in the subset")
    ap.add_argument("--flip", action="store_true", help="part b: average each image's features with its mirror")
    ap.add_argument("--default-backbone", default=None, help="part d: replace the default backbone")
    ap.add_argument("--default-layers", default=None, help="part d: replace the default layer specs")
    args = ap.parse_args()
    ds = ImageFolder.scan(args.data)
    out = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    if "a" in args.part:
        out["a"] = part_a(ds, args.n, args.workers, args.device)
    if "b" in args.part:
        out["b"] = part_b(ds, args.seeds, args.cache or tempfile.mkdtemp(), args.backbones.split(","),
                          args.layers.split(","), args.flip)
    if "c" in args.part:
        out["c"] = part_c(args.data, args.workers)
    if "d" in args.part:
        out["d"] = part_d(args.data, args.seeds, args.cache or tempfile.mkdtemp(), args.default_backbone,
                          args.default_layers.split(",") if args.default_layers else None)
    if "f" in args.part:
        out["f"] = part_f()
    if "e" in args.part:
        out["e"] = part_e(ds, args.seeds, args.cache or tempfile.mkdtemp(), args.per_class)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
