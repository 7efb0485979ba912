"""The fine-tuning recipe, measured: cnnlab's classifiers, the plain PyTorch recipe a user would write, and one-choice
ablations of cnnlab's defaults, on the same splits (EfficientNet-Lite0, its ImageNet weights).

    python benchmarks/finetune_recipe.py --data DIR --rows svm,linear,all,plain --seeds 0,1,2 --out runs.jsonl
    python benchmarks/finetune_recipe.py --data DIR --rows all@batchnorm=train,all@lr=0.003 --seeds 0
    python benchmarks/finetune_recipe.py --table runs.jsonl
    python benchmarks/finetune_recipe.py --epoch-speed DIR --old-src OLD/src     # one epoch: before vs now, CPU

A row is `svm`, `linear`, `mlp`, `all`, `last:N` (cnnlab.transfer with that head or fine-tuning, every other option
at its default) or `plain`, each optionally followed by `@option=value` overrides (`all@batchnorm=train`,
`plain@epochs=5`). `plain` is the PyTorch transfer-learning tutorial's recipe, written here as a user would: a fresh
linear head, every weight trained by SGD (lr 1e-3, momentum 0.9, StepLR 7 / 0.1) on random resized crops and flips
of the whole training split, batch 32, BatchNorm frozen (`@batchnorm=train` trains it), fp32, the last epoch kept.
The split is cnnlab's `random:K` with the same seed (`core.data.random_split`).

`--epoch-speed` times one fine-tuning epoch (`--finetune all`, batch 32) of this checkout and of an older source tree
in turn, on the same images and machine: the `seconds` of the history's first trained epoch.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROWS = ("svm", "linear", "mlp", "all", "plain")


def parse_row(row: str) -> tuple[str, dict]:
    name, *pairs = row.split("@")
    options = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        options[key] = _value(value)
    return name, options


def _value(text: str):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def run_cnnlab(name: str, options: dict, data: str, seed: int, per_class: int, device: str, workers: int) -> dict:
    import cnnlab

    base = {"split": f"random:{per_class}", "seed": seed, "device": device, "workers": workers, "batch_size": 128}
    if name in ("linear", "mlp"):
        base["head"] = name
    elif name != "svm":
        base.update(head="linear", finetune=name)
    res = cnnlab.transfer(data, model="efficientnet_lite0", **(base | options))
    s = res.summary()
    return {"test_accuracy": s["selected"]["test_accuracy"], "selected": s["selected"], "history": s.get("history"),
            "n_train": s["n_train"], "n_test": s["n_test"]}


def run_plain(options: dict, data: str, seed: int, per_class: int, device: str, workers: int) -> dict:
    """The PyTorch transfer-learning tutorial's fine-tuning, on cnnlab's split."""
    import numpy as np
    import torch
    from PIL import Image
    from torch import nn
    from torchvision import transforms

    import cnnlab
    from cnnlab.core.data import ImageFolder, random_split
    from cnnlab.core.models import set_head

    epochs, lr = options.get("epochs", 8), options.get("lr", 1e-3)
    batch, bn = options.get("batch_size", 32), options.get("batchnorm", "frozen")
    ds = ImageFolder.scan(data)
    split = random_split(ds.labels, per_class, seed)
    model = cnnlab.load_model("efficientnet_lite0", device=device)  # normalizes inside: inputs in [0,1]
    set_head(model.net, len(ds.classes), seed=seed)
    train_tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor()])
    test_tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])

    class Files(torch.utils.data.Dataset):
        def __init__(self, rows, tf):
            self.rows, self.tf = rows, tf

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            r = self.rows[i]
            return self.tf(Image.open(ds.paths[r]).convert("RGB")), int(ds.labels[r])

    torch.manual_seed(seed)
    train = torch.utils.data.DataLoader(Files(split.train, train_tf), batch_size=batch, shuffle=True,
                                        num_workers=workers)
    test = torch.utils.data.DataLoader(Files(split.test, test_tf), batch_size=128, num_workers=workers)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.1)
    history = []
    for epoch in range(epochs):
        model.train()
        if bn == "frozen":
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        t0, total = time.perf_counter(), 0.0
        for x, y in train:
            loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
        sched.step()
        history.append({"epoch": epoch + 1, "loss": total / len(split.train), "seconds": time.perf_counter() - t0})
    model.eval()
    with torch.inference_mode():
        pred = np.concatenate([model(x.to(device)).argmax(1).cpu().numpy() for x, _ in test])
    return {"test_accuracy": float((pred == ds.labels[split.test]).mean()), "history": history,
            "n_train": len(split.train), "n_test": len(split.test)}


def measure(row: str, data: str, seed: int, per_class: int, device: str, workers: int) -> dict:
    name, options = parse_row(row)
    t0 = time.perf_counter()
    if name == "plain":
        r = run_plain(options, data, seed, per_class, device, workers)
    else:
        r = run_cnnlab(name, options, data, seed, per_class, device, workers)
    return {"row": row, "data": Path(data).name, "seed": seed, **r, "seconds": time.perf_counter() - t0,
            "device": device, "machine": machine(device), "date": time.strftime("%Y-%m-%d")}


def machine(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    from cnnlab.core.precision import native_bf16

    return f"{platform.machine()} {os.cpu_count()} cores, " + ("native bf16" if native_bf16("cpu") else "avx2 only")


def table(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| data | row | splits | test accuracy, mean ± sd | per split | kept epoch | seconds per split |")
    print("|---|---|---|---|---|---|---|")
    for data in dict.fromkeys(r["data"] for r in rows):
        for name in dict.fromkeys(r["row"] for r in rows if r["data"] == data):
            rs = sorted((r for r in rows if r["data"] == data and r["row"] == name), key=lambda r: r["seed"])
            acc = [r["test_accuracy"] for r in rs]
            sd = f"{statistics.stdev(acc):.3f}" if len(acc) > 1 else "—"
            kept = ", ".join(str(r["selected"]["epoch"]) if r.get("selected") and "epoch" in r["selected"]
                             else "last" for r in rs)
            print(f"| {data} | {name} | {len(rs)} | {statistics.mean(acc):.3f} ± {sd} | "
                  f"{', '.join(f'{a:.3f}' for a in acc)} | {kept} | "
                  f"{statistics.mean(r['seconds'] for r in rs):.0f} |")


def epoch_speed(data: str, old_src: str, per_class: int) -> None:
    """One fine-tuning epoch of each source tree, in turn, in a fresh process each."""
    code = ("import json, sys, cnnlab; r = cnnlab.transfer(sys.argv[1], model='efficientnet_lite0', head='linear', "
            "finetune='all', epochs=1, split='random:' + sys.argv[2], workers=2, {batch}); "
            "print(json.dumps(r.summary()['history'][1]))")
    for label, src, batch in (("before", old_src, "batch_size=32"), ("now", None, "train_batch_size=32")):
        env = {**os.environ, **({"PYTHONPATH": src} if src else {})}
        out = subprocess.run([sys.executable, "-c", code.format(batch=batch), data, str(per_class)], env=env,
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        row = json.loads(out)
        print(json.dumps({"code": label, "seconds": row["seconds"], "machine": machine("cpu"),
                          "date": time.strftime("%Y-%m-%d")}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data")
    ap.add_argument("--rows", default="svm,linear,all,plain")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="finetune.jsonl")
    ap.add_argument("--table", metavar="JSONL")
    ap.add_argument("--epoch-speed", metavar="DATA")
    ap.add_argument("--old-src", metavar="SRC", help="with --epoch-speed: the older source tree (its src/)")
    args = ap.parse_args()
    if args.table:
        return table(args.table)
    if args.epoch_speed:
        return epoch_speed(args.epoch_speed, args.old_src, args.per_class)
    for row in args.rows.split(","):
        for seed in map(int, args.seeds.split(",")):
            r = measure(row, args.data, seed, args.per_class, args.device, args.workers)
            print(json.dumps({k: r[k] for k in ("row", "data", "seed", "test_accuracy", "seconds")}), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
