"""Top-k classification of a batch (the report's Q1.3), and its figure."""
from __future__ import annotations

from typing import Sequence

import torch

from ..core.backbones import Backbone
from ..core.hooks import eval_mode


def classify_tensor(backbone: Backbone, x: torch.Tensor, topk: int = 5) -> list[list[dict]]:
    """Top-k of a batch of [0,1] images: [{"index", "label", "prob"}, ...] per image; labels are the model's."""
    with torch.inference_mode(), eval_mode(backbone):
        probs = backbone(x.to(backbone.device)).float().softmax(dim=1)
    values, indices = probs.topk(min(topk, probs.shape[1]), dim=1)
    return [[{"index": int(i), "label": backbone.labels[int(i)], "prob": float(v)} for v, i in zip(vs, ix)]
            for vs, ix in zip(values.tolist(), indices.tolist())]


def classification_figure(names: Sequence[str], x: Sequence[torch.Tensor], tops: list[list[dict]],
                          title: str = "Top-5 classes"):
    """Images above bar charts of their top-k classes (the report's Q1.3 figure)."""
    from ..core.figures import hwc, new_figure

    n = len(names)
    fig = new_figure(3.2 * n, 5.6)
    axes = fig.subplots(2, n, squeeze=False, gridspec_kw={"height_ratios": [3, 2]})
    for j, (name, top) in enumerate(zip(names, tops)):
        axes[0, j].imshow(hwc(x[j]), cmap="gray" if x[j].shape[0] == 1 else None)
        axes[0, j].set_title(str(name)[-28:], fontsize=9)
        axes[0, j].axis("off")
        labels = [t["label"].split(",")[0][:22] for t in top][::-1]
        axes[1, j].barh(labels, [t["prob"] for t in top][::-1], color="tab:blue")
        axes[1, j].set_xlim(0, 1)
        axes[1, j].tick_params(labelsize=7)
    fig.suptitle(title)
    return fig
