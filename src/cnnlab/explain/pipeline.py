"""The explain commands: inputs → one library call → figures, PNGs, metrics.json and a JSON summary."""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core import imagenet
from ..core.backbones import Backbone, create_backbone
from ..core.errors import CnnlabError
from ..core.images import save_png
from ..core.runs import RunDir, atomic_path
from .attacks import attack
from .classviz import ClassVizConfig, class_probability, visualize_class
from .faithfulness import deletion_insertion
from .inputs import load_inputs, resolve_targets, short_label
from .saliency import SaliencyOptions, attribute, predicted


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_heatmap(m: torch.Tensor, path: Path) -> None:
    from PIL import Image

    cmap = _plt().get_cmap("hot")
    v = m.float().cpu().numpy()
    v = (v - v.min()) / max(float(v.max() - v.min()), 1e-12)
    rgb = (cmap(v)[..., :3] * 255).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def _grid_figure(rows: list[tuple[str, list]], titles: list[str], cmaps: list[str | None]):
    """Columns = images; each row a list of (H,W,3) or (H,W) arrays."""
    plt = _plt()
    n = len(titles)
    fig, axes = plt.subplots(len(rows), n, figsize=(2.2 * n, 2.3 * len(rows)), squeeze=False)
    for r, ((row_name, images), cmap) in enumerate(zip(rows, cmaps)):
        for j, img in enumerate(images):
            axes[r, j].imshow(img, cmap=cmap)
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
            if r == 0:
                axes[r, j].set_title(titles[j], fontsize=8)
        axes[r, 0].set_ylabel(row_name, fontsize=9)
    fig.tight_layout()
    return fig


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


# ------------------------------------------------------------------------------------------------------ saliency
def run_saliency(inputs: list[str], backbone: str = "efficientnet_lite0", weights: str = "default",
                 method: str = "vanilla", target: str = "pred", metrics: bool = False, limit: int | None = None,
                 options: SaliencyOptions | None = None, device: str = "cpu", out: str | None = None,
                 batch_size: int = 8, progress: bool = True, random_orders: int = 4) -> dict:
    if metrics and random_orders < 1:  # before any model is loaded
        raise CnnlabError("--random-orders must be at least 1")
    model = create_backbone(backbone, weights, device=device)
    data = load_inputs(inputs, model.preprocess, limit)
    run = RunDir.create(out, "saliency")
    run.write_config({"inputs": inputs, "backbone": backbone, "weights": weights, "method": method, "target": target,
                      "metrics": metrics, "random_orders": random_orders,
                      "options": asdict(options or SaliencyOptions())})
    preds = predicted(model, data.x).cpu()
    targets = resolve_targets(target, len(data.x), preds)
    maps, scores = [], []
    t0 = time.perf_counter()
    for i in tqdm(range(0, len(data.x), batch_size), desc=f"saliency {method}", disable=not progress):
        xb, tb = data.x[i:i + batch_size], targets[i:i + batch_size]
        m = attribute(model, xb, tb, method, options)
        maps.append(m.cpu())
        if metrics:  # faithfulness of the map for the predicted class
            scores.append(deletion_insertion(model, xb, m, preds[i:i + batch_size], n_random=random_orders,
                                              seed=i))
    maps = torch.cat(maps)
    seconds = time.perf_counter() - t0
    per_image = []
    for i, name in enumerate(data.names):
        png = run / f"saliency_{i:03d}.png"
        _save_heatmap(maps[i], png)
        entry = {"image": name, "target": targets[i], "target_label": imagenet.labels()[targets[i]],
                 "pred": int(preds[i]), "map": str(png)}
        if data.labels[i] is not None:
            entry["label"] = data.labels[i]
        per_image.append(entry)
    summary = {"backbone": backbone, "method": method, "results": per_image, "seconds": seconds,
               "skipped": data.skipped, "run_dir": str(run.path)}
    if metrics:
        keys = ["deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"]
        merged = {k: torch.cat([s[k] for s in scores]) for k in keys}
        for i, entry in enumerate(per_image):
            entry.update({k: float(merged[k][i]) for k in keys})
        summary["summary"] = {"n": len(per_image), **{k: float(merged[k].mean()) for k in keys}}
        summary["summary"]["deletion_ratio"] = summary["summary"]["deletion_auc"] / max(
            summary["summary"]["random_deletion_auc"], 1e-12)
    titles = [short_label(t) for t in targets]
    fig = _grid_figure([("image", [_hwc(x) for x in data.x]), (method, [m.numpy() for m in maps])], titles,
                       [None, "hot"])
    summary["figure"] = str(run.save_figure(fig, "saliency.png"))
    run.write_metrics({k: v for k, v in summary.items()})
    return summary


# --------------------------------------------------------------------------------------------------------- fool
def run_fool(inputs: list[str], backbone: str = "efficientnet_lite0", weights: str = "default", target: str = "random",
             seed: int = 0, method: str = "minimal", max_iters: int = 100, lr: float = 1.0, eps: float | None = None,
             norm: str = "linf", limit: int | None = None, device: str = "cpu", out: str | None = None,
             batch_size: int = 8, magnify: float = 10.0, progress: bool = True) -> dict:
    model = create_backbone(backbone, weights, device=device)
    data = load_inputs(inputs, model.preprocess, limit)
    run = RunDir.create(out, "fool")
    run.write_config({"inputs": inputs, "backbone": backbone, "weights": weights, "target": target, "seed": seed,
                      "method": method, "max_iters": max_iters, "lr": lr, "eps": eps, "norm": norm})
    preds = predicted(model, data.x).cpu()
    targets = resolve_targets(target, len(data.x), preds, seed)
    advs, results = [], []
    t0 = time.perf_counter()
    for i in tqdm(range(0, len(data.x), batch_size), desc=f"fool {method}", disable=not progress):
        xb = data.x[i:i + batch_size]
        tb = None if targets is None else targets[i:i + batch_size]
        r = attack(model, xb, tb, method, max_iters=max_iters, lr=lr, eps=eps, norm=norm)
        n = r.norms()
        advs.append(r.adversarial.cpu())
        for j in range(len(xb)):
            k = i + j
            png = save_png(r.adversarial[j], run / f"adversarial_{k:03d}.png")
            results.append({"image": data.names[k], "target": None if tb is None else int(tb[j]),
                            "pred_before": int(r.pred_before[j]), "pred_after": int(r.pred_after[j]),
                            "success": bool(r.success[j]), "iterations": int(r.iterations[j]),
                            "linf": float(n["linf"][j]), "l2": float(n["l2"][j]), "png": str(png)})
    seconds = time.perf_counter() - t0
    advs = torch.cat(advs)
    ok = [r for r in results if r["success"]] or results
    summary = {"backbone": backbone, "method": method, "results": results, "seconds": seconds,
               "summary": {"n": len(results), "success_rate": sum(r["success"] for r in results) / len(results),
                           "median_linf": statistics.median(r["linf"] for r in ok),
                           "median_l2": statistics.median(r["l2"] for r in ok),
                           "median_iterations": statistics.median(r["iterations"] for r in ok)},
               "skipped": data.skipped, "run_dir": str(run.path)}
    diff = [(0.5 + magnify * (a - x)).clamp(0, 1) for a, x in zip(advs, data.x)]
    titles = [f"{short_label(r['pred_before'])} → {short_label(r['pred_after'])}" for r in results]
    fig = _grid_figure([("original", [_hwc(x) for x in data.x]), ("adversarial", [_hwc(a) for a in advs]),
                        (f"difference ×{magnify:g}", [_hwc(d) for d in diff])], titles, [None, None, None])
    summary["figure"] = str(run.save_figure(fig, "fooling.png"))
    run.write_metrics(summary)
    return summary


# ---------------------------------------------------------------------------------------------------- classviz
def default_judge(backbones: list[str]) -> str:
    """A different model from the generator(s): Lite2, or Lite1 when Lite2 is one of them."""
    return "efficientnet_lite1" if "efficientnet_lite2" in backbones else "efficientnet_lite2"


def run_classviz(classes: list[str], backbones: list[str], config: ClassVizConfig, judge: str | None = None,
                 weights: str = "default", device: str = "cpu", out: str | None = None, progress: bool = True) -> dict:
    indices = [imagenet.resolve_class(c) for c in classes]
    judge = judge or default_judge(backbones)
    if judge in backbones:
        raise CnnlabError(f"the judge ({judge}) must be a different model from the generator(s)")
    run = RunDir.create(out, "classviz")
    run.write_config({"classes": classes, "backbones": backbones, "judge": judge, "config": asdict(config)})
    judge_model = create_backbone(judge, device=device)
    results, grid = [], {}
    bar = tqdm(total=len(indices) * len(backbones) * config.iters, desc="classviz", disable=not progress)
    t0 = time.perf_counter()
    for name in backbones:
        model = create_backbone(name, weights, device=device)
        for index in indices:
            image, frames = visualize_class(model, index, config, progress=bar)
            prob, _ = class_probability(model, image, index)
            jprob, jrank = class_probability(judge_model, image, index)
            stem = f"{name}_{imagenet.short_name(index).replace(' ', '_')}"
            paths = [str(save_png(image, run / f"{stem}.png"))]
            paths += [str(save_png(f, run / f"{stem}_iter{it:04d}.png")) for it, f in sorted(frames.items())]
            grid[(name, index)] = (image, frames)
            results.append({"class": imagenet.labels()[index], "index": index, "backbone": name, "target_prob": prob,
                            "judge": {"model": judge, "target_prob": jprob, "target_rank": jrank}, "images": paths})
    bar.close()
    seconds = time.perf_counter() - t0
    titles = [imagenet.short_name(i) for i in indices]
    rows = [(name, [_hwc(grid[(name, i)][0]) for i in indices]) for name in backbones]
    summary = {**results[0], "results": results, "seconds": seconds, "run_dir": str(run.path),
               "summary": {"n": len(results), "judge": judge,
                           "judge_top5": sum(r["judge"]["target_rank"] <= 5 for r in results),
                           "mean_target_prob": float(np.mean([r["target_prob"] for r in results]))}}
    summary["figure"] = str(run.save_figure(_grid_figure(rows, titles, [None] * len(rows)), "classviz.png"))
    if config.frames:
        its = sorted(config.frames)
        frame_rows = [(f"{n}: {imagenet.short_name(i)}", [_hwc(grid[(n, i)][1][it]) for it in its if it in grid[(n, i)][1]])
                      for n in backbones for i in indices]
        fig = _grid_figure(frame_rows, [f"iteration {it}" for it in its], [None] * len(frame_rows))
        summary["frames_figure"] = str(run.save_figure(fig, "frames.png"))
    run.write_metrics(summary)
    return summary
