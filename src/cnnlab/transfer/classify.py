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
