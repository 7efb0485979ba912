"""Top-k ImageNet classification of image files (the report's Q1.3)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..core import imagenet
from ..core.backbones import Backbone
from ..core.errors import CnnlabError
from ..core.hooks import eval_mode
from ..core.images import load_image


def classify_tensor(backbone: Backbone, x: torch.Tensor, topk: int = 5) -> list[list[dict]]:
    """Top-k of a batch of [0,1] images: [{"index", "label", "prob"}, ...] per image."""
    with torch.inference_mode(), eval_mode(backbone):
        probs = backbone(x.to(backbone.device)).float().softmax(dim=1)
    values, indices = probs.topk(min(topk, probs.shape[1]), dim=1)
    return [[{"index": int(i), "label": imagenet.labels()[int(i)], "prob": float(v)} for v, i in zip(vs, ix)]
            for vs, ix in zip(values.tolist(), indices.tolist())]


def classify_images(backbone: Backbone, paths: Sequence[Path], topk: int = 5,
                    batch_size: int = 32) -> tuple[list[dict], list[dict]]:
    """({"image": path, "top": [...]} per readable image, {"image", "error"} per unreadable one)."""
    transform = backbone.preprocess.transform()
    results, skipped = [], []
    for start in range(0, len(paths), batch_size):
        chunk, tensors = [], []
        for p in paths[start:start + batch_size]:
            try:
                tensors.append(transform(load_image(p)))
                chunk.append(p)
            except CnnlabError as exc:
                skipped.append({"image": str(p), "error": str(exc)})
        if chunk:
            tops = classify_tensor(backbone, torch.stack(tensors), topk)
            results += [{"image": str(p), "top": top} for p, top in zip(chunk, tops)]
    return results, skipped


def classification_figure(names: Sequence[str], x: torch.Tensor, tops: list[list[dict]], title: str = "Top-5 ImageNet classes"):
    """Images above bar charts of their top-k classes (the report's Q1.3 figure); a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(names), figsize=(3.2 * len(names), 5.6), gridspec_kw={"height_ratios": [3, 2]},
                             squeeze=False)
    for j, (name, top) in enumerate(zip(names, tops)):
        axes[0, j].imshow(x[j].permute(1, 2, 0).cpu().numpy())
        axes[0, j].set_title(name)
        axes[0, j].axis("off")
        labels = [t["label"].split(",")[0][:22] for t in top][::-1]
        axes[1, j].barh(labels, [t["prob"] for t in top][::-1], color="tab:blue")
        axes[1, j].set_xlim(0, 1)
        axes[1, j].tick_params(labelsize=7)
    fig.subplots_adjust(wspace=0.7)
    fig.suptitle(title)
    return fig
