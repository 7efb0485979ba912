"""Part 1 of the report: VGG16's parameters, top-5 classification, and the 15-Scene table (C sweep × cut layer)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch import nn

from ..core.figures import new_figure, save_figure
from ..core.images import sample_photos
from ..core.models import weights_available
from ..core.table import list_backbones
from ..core.sources import get_entry
from ..jobs.models import describe_backbone
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


def _classifier_runs(ctx: Context, s: dict, rows: list[str]) -> dict[str, list[dict]]:
    """Each classifier of `rows` ('sift-bow', 'svm' on Lite0's frozen features, 'linear' / 'mlp' heads, 'last:N',
    'all') over the setting's seeds, on the same splits; their summaries and the fitted results."""
    data = ctx.data("15scene")
    common = {"split": s["split"], "limit_per_class": s["limit_per_class"], "limit_seed": 0,
              "cache_dir": str(ctx.cache_dir), "device": ctx.device, "data": str(data)}
    grid = {"folds": s["folds"]}  # the SVM grid's cross-validation (a trained head reads no --folds)
    out: dict[str, list[dict]] = {}
    for row in rows:
        for seed in s["seeds"]:
            if row == "sift-bow":
                cfg = TransferConfig(backbone="sift-bow", seed=seed, **common, **grid)
            elif row == "svm":
                cfg = TransferConfig(backbone="efficientnet_lite0", seed=seed, **common, **grid)
            elif row in ("linear", "mlp"):
                trained = {"epochs": s["epochs"]} if row == "mlp" else {}  # a logistic regression has no epochs
                cfg = TransferConfig(backbone="efficientnet_lite0", head=row, seed=seed, **common, **trained)
            else:
                cfg = TransferConfig(backbone="efficientnet_lite0", head="linear", finetune=row, epochs=s["epochs"],
                                     seed=seed, **common)
            r = transfer(config=cfg, progress=ctx.progress)
            r.save(ctx.dir / f"{row.replace(':', '-')}-seed{seed}")
            out.setdefault(row, []).append({"summary": r.summary(), "result": r})
    return out


def _accuracy_rows(runs: dict[str, list[dict]]) -> tuple[list[list[str]], dict]:
    rows, metrics = [], {}
    for name, rs in runs.items():
        acc = [r["summary"]["selected"]["test_accuracy"] for r in rs]
        secs = [r["summary"]["timing"]["extract_s"] + r["summary"]["timing"]["fit_s"] for r in rs]
        metrics[name] = {"test_accuracy": acc, "seconds": secs}
        rows.append([name, mean_sd(acc), f"{np.mean(secs):.0f}"])
    return rows, metrics


@experiment("transfer/Q2-3.10", "CNN features against SIFT + bag of words", SECTION,
            "The CNN's features do slightly better than SIFT + bag of words (the report's remark; Lazebnik et al. 2006 "
            "report 81.4 % on 15-Scene with a spatial pyramid and an intersection kernel).",
            quick={"split": "random:25", "limit_per_class": 40, "seeds": [0], "folds": 3},
            full={"split": "random:100", "limit_per_class": None, "seeds": [0, 1, 2], "folds": 5})
def sift_bow(ctx: Context, s: dict) -> Outcome:
    runs = _classifier_runs(ctx, s, ["sift-bow", "svm"])
    rows, metrics = _accuracy_rows(runs)
    gap = np.mean(metrics["svm"]["test_accuracy"]) - np.mean(metrics["sift-bow"]["test_accuracy"])
    n = runs["svm"][0]["summary"]
    result = (f"Over {len(s['seeds'])} split(s) ({n['n_train']} train / {n['n_test']} test images): SIFT + bag of "
              f"words {rows[0][1]}, efficientnet_lite0 + LinearSVC {rows[1][1]}: the CNN's features lead by "
              f"{100 * gap:.1f} points.")
    return Outcome(result, metrics, [Table("Test accuracy (mean ± sd over splits) and seconds per split",
                                           ["features", "test accuracy", "seconds"], rows)], [], [])


@experiment("transfer/Q2-3.11", "The SVM replaced by a neural network, and fine-tuning", SECTION,
            "The SVM could be replaced by a neural-network head, and the network's weights fine-tuned (at the risk of "
            "forgetting what the early convolutions learned).",
            quick={"split": "random:25", "limit_per_class": 40, "seeds": [0], "folds": 3, "epochs": 2,
                   "rows": ["svm", "linear", "last:2"]},
            full={"split": "random:100", "limit_per_class": None, "seeds": [0, 1, 2], "folds": 5, "epochs": 8,
                  "rows": ["svm", "linear", "mlp", "last:3", "all"]})
def heads(ctx: Context, s: dict) -> Outcome:
    from ..core.figures import save_figure
    from ..jobs.saliency import saliency

    runs = _classifier_runs(ctx, s, s["rows"])
    rows, metrics = _accuracy_rows(runs)
    best = max(metrics, key=lambda k: np.mean(metrics[k]["test_accuracy"]))
    result = (f"Test accuracy over {len(s['seeds'])} split(s), {s['epochs']} epoch(s) for the trained heads"
              + (" (--quick: few images and epochs, not the full recipe)" if s["epochs"] < 8 else "")
              + f": best {best} ({mean_sd(metrics[best]['test_accuracy'])}); "
              + ", ".join(f"{r[0]} {r[1]}" for r in rows) + ".")
    figures = []
    tuned = [k for k in runs if k.startswith("last:") or k == "all"]
    frozen = next((k for k in ("linear", "mlp") if k in runs), None)
    if tuned and frozen:  # where each looks: Grad-CAM of a few test photos, frozen head against fine-tuned
        photos = runs[frozen][0]["result"].split["test"][::max(1, len(runs[frozen][0]["result"].split["test"]) // 4)][:4]
        for name in (frozen, tuned[-1]):
            model = runs[name][0]["result"].classifier.backbone_model
            fig = saliency(model, photos, method="gradcam").figure()
            figures.append((save_figure(fig, ctx.dir / f"gradcam_{name.replace(':', '-')}.png"),
                            f"Grad-CAM of the {name} model on 15-Scene test photos"))
    return Outcome(result, metrics, [Table("Test accuracy (mean ± sd over splits) and seconds per split",
                                           ["classifier", "test accuracy", "seconds"], rows)], figures, [])


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
