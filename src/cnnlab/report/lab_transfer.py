"""Part 1 of the report: VGG16's parameters, top-5 classification, and the 15-Scene table (C sweep × cut layer)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch import nn

from ..core.figures import new_figure, save_figure
from ..core.images import sample_photos
from ..core.models import describe_backbone, get_entry, list_backbones, weights_available
from ..jobs.classify import classify
from ..jobs.transfer import transfer
from ..jobs.transfer import DEFAULT_TRANSFER_BACKBONE, TransferConfig
from .experiment import Context, Outcome, Table, experiment, mean_sd

SECTION = "Transfer learning (VGG16, 15-Scene)"
REPORT_FC = {"fc6": 102_764_544, "fc7": 16_781_312, "fc8": 4_097_000}

# The cut layers compared with the report's layer: the report's ablation for VGG16 (removing the last 2 or 4 layers),
# comparable points elsewhere; 'a+b' concatenates two points.
ABLATION = {
    "vgg16": ["relu7", "cut-2", "cut-4"],
    "alexnet": ["relu7", "relu6", "pool5"],
    "resnet50": ["avgpool", "layer3"],
    "squeezenet1_1": ["fire9", "fire7", "conv10"],
}
LITE_ABLATION = ["pre_logits", "block6", "block5", "pre_logits+block5"]
REPORT_TABLE = [("-", 100, 0.899), ("-", 10, 0.899), ("-", 1, 0.899), ("-", 0.1, 0.900), ("-", 0.01, 0.905),
                ("-", 0.001, 0.913), ("-2", 0.001, 0.8825), ("-4", 0.001, 0.8813)]


@experiment("transfer/Q1.1", "Parameters of VGG16's fully-connected layers", SECTION,
            "FC1 7×7×512×4096 + 4096 = 102,764,544; FC2 16,781,312; FC3 4,097,000: 123,642,856 parameters in the "
            "fully-connected layers alone.", quick={}, full={}, uses_data=False)
def vgg_parameters(ctx: Context, s: dict) -> Outcome:
    with torch.device("meta"):  # shapes only: no weights, no memory
        net = get_entry("vgg16").build()
    linear = [m for m in net.modules() if isinstance(m, nn.Linear)]
    rows, total = [], 0
    for name, m in zip(REPORT_FC, linear):
        n = sum(p.numel() for p in m.parameters())
        total += n
        rows.append([name, f"{m.in_features} → {m.out_features}", f"{n:,}", f"{REPORT_FC[name]:,}"])
    rows.append(["total", "", f"{total:,}", f"{sum(REPORT_FC.values()):,}"])
    overview = [[d["name"], f"{d['parameters']:,}", f"{d['fc_parameters']:,}", d["default_layer"],
                 "yes" if d["weights_offline"] else "no"] for d in map(describe_backbone, list_backbones())]
    return Outcome(
        f"Computed from the model: {total:,} parameters in VGG16's fully-connected layers "
        f"({'equal to' if total == sum(REPORT_FC.values()) else 'different from'} the report's count).",
        metrics={"fc_parameters": total, "per_layer": {r[0]: int(r[2].replace(",", "")) for r in rows[:-1]},
                 "matches_report": total == sum(REPORT_FC.values())},
        tables=[Table("VGG16 fully-connected layers", ["layer", "shape", "cnnlab (computed)", "report"], rows),
                Table("Every registered backbone", ["backbone", "parameters", "in fully-connected layers",
                                                    "default cut point", "weights offline"], overview)])


@experiment("transfer/Q1.3", "Top-5 classification of a few images", SECTION,
            "VGG16 classifies two of three photos correctly (racer, timber wolf); the first (pinwheel) is wrong.",
            quick={"backbones": ["efficientnet_lite0"]},
            full={"backbones": ["vgg16", "efficientnet_lite0", "efficientnet_lite2", "resnet50"]}, uses_data=False)
def top5(ctx: Context, s: dict) -> Outcome:
    rows, notes, figures, metrics = [], [], [], {}
    for name in s["backbones"]:
        if not weights_available(name):
            notes.append(f"{name} left out: its weights are not on this machine (cnnlab models says where to put them)")
            continue
        photos = sample_photos()
        names = list(photos)
        r = classify(name, photos, device=ctx.device, topk=5)
        tops = [e["top"] for e in r.results]
        metrics[name] = {n: t for n, t in zip(names, tops)}
        rows += [[name, n, t[0]["label"], f"{t[0]['prob']:.3f}", "; ".join(u["label"].split(",")[0] for u in t[1:])]
                 for n, t in zip(names, tops)]
        figures.append((save_figure(r.figure(), ctx.dir / f"top5_{name}.png"), f"Top-5 classes, {name}"))
    first = metrics[next(iter(metrics))] if metrics else {}
    result = ("; ".join(f"{n} → {t[0]['label'].split(',')[0]} ({t[0]['prob']:.2f})" for n, t in first.items())
              + f" ({next(iter(metrics))}).") if metrics else "No backbone with weights available."
    return Outcome(result, metrics, [Table("Top-1 and the next four", ["backbone", "image", "top-1", "p", "top 2–5"],
                                           rows)], figures, notes)


def _ablation_layers(name: str) -> list[str]:
    if "+" in name:  # several backbones concatenated: the default layers
        return TransferConfig().layers
    return LITE_ABLATION if name.startswith("efficientnet_lite") else ABLATION.get(name, [get_entry(name).default_layer])


@experiment("transfer/Q2-4.12", "15-Scene: C sweep at the report's layer and the cut-layer ablation", SECTION,
            "VGG16 relu7 + LinearSVC, one split: 0.899 at C = 100 … 0.913 at C = 0.001 (the best); removing the last "
            "2 / 4 layers: 0.8825 / 0.8813 at C = 0.001.",
            quick={"backbones": ["efficientnet_lite0"], "split": "random:100", "seeds": [0, 1, 2], "limit_per_class": 150,
                   "Cs": [100, 10, 1, 0.1, 0.01, 0.001], "folds": 3},
            full={"backbones": ["vgg16", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet50",
                                "squeezenet1_1", DEFAULT_TRANSFER_BACKBONE], "split": "random:100", "seeds": [0, 1, 2, 3, 4], "limit_per_class": None,
                  "Cs": [100, 10, 1, 0.1, 0.01, 0.001], "folds": 5})
def scene15(ctx: Context, s: dict) -> Outcome:
    data = ctx.data("15scene")
    rows, notes, metrics, figures = [], [], {}, []
    for name in s["backbones"]:
        if not all(weights_available(n) for n in name.split("+")):
            notes.append(f"{name} left out: its weights are not on this machine (cnnlab models says where to put them)")
            continue
        layers = _ablation_layers(name)
        runs = []
        for seed in s["seeds"]:
            r = transfer(config=TransferConfig(
                data=str(data), split=s["split"], seed=seed, backbone=name, layers=layers, Cs=s["Cs"], folds=s["folds"],
                limit_per_class=s["limit_per_class"], limit_seed=0, cache_dir=str(ctx.cache_dir), device=ctx.device),
                progress=ctx.progress)
            r.save(ctx.dir / f"{name}-seed{seed}")
            runs.append(r.summary())
        acc = defaultdict(list)
        for r in runs:
            for g in r["grid"]:
                acc[(g["layer"], g["C"])].append(g["test_accuracy"])
        selected = [r["selected"]["test_accuracy"] for r in runs]
        metrics[name] = {"grid": [{"layer": l, "C": c, "test_accuracy": v} for (l, c), v in acc.items()],
                         "selected_test_accuracy": selected, "n_train": runs[0]["n_train"],
                         "n_test": runs[0]["n_test"], "images_per_s": runs[0]["timing"]["images_per_s"]}
        rows += [[name, l, f"{c:g}", mean_sd(v)] for (l, c), v in acc.items()]
        rows.append([name, "selected by CV", "", f"**{mean_sd(selected)}**"])
        figures.append((_accuracy_figure(ctx, name, acc), f"Test accuracy against C per cut layer, {name}"))
    if not metrics:
        raise RuntimeError("no backbone with weights available")
    best = max(metrics, key=lambda n: np.mean(metrics[n]["selected_test_accuracy"]))
    first = metrics[best]
    result = (f"{best}: C and layer chosen by cross-validation on the training split give "
              f"{mean_sd(first['selected_test_accuracy'])} test accuracy over {len(s['seeds'])} random splits "
              f"({first['n_train']} train / {first['n_test']} test images"
              + (f", a subset of {s['limit_per_class']} images per class" if s["limit_per_class"] else "") + ").")
    report = Table("The report's table (VGG16, one split)", ["index of ablation", "C", "accuracy"],
                   [[a, f"{c:g}", f"{v:.4f}"] for a, c, v in REPORT_TABLE])
    ours = Table(f"cnnlab: test accuracy, mean ± sd over {len(s['seeds'])} splits", ["backbone", "cut layer", "C",
                                                                                    "test accuracy"], rows)
    return Outcome(result, metrics, [report, ours], figures, notes)


def _accuracy_figure(ctx: Context, name: str, acc: dict):
    fig = new_figure(6, 3.6)
    ax = fig.subplots()
    for layer in dict.fromkeys(l for l, _ in acc):
        cs = [c for l, c in acc if l == layer]
        v = np.array([acc[(layer, c)] for c in cs])
        ax.errorbar(cs, v.mean(1), yerr=v.std(1), marker="o", capsize=3, label=layer)
    ax.set_xscale("log")
    ax.set_xlabel("C (LinearSVC)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"15-Scene, {name}")
    ax.legend(fontsize=8)
    return save_figure(fig, ctx.dir / f"accuracy_vs_C_{name}.png")
