"""Inputs for the explain commands: image files, folders, or the labs' .npz (X uint8 (N,H,W,3), y)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..core import imagenet
from ..core.data import load_npz_images
from ..core.errors import CnnlabError
from ..core.images import collect_image_paths, load_image
from ..core.preprocess import Preprocess


@dataclass
class Inputs:
    names: list[str]  # a file path, or "<file.npz>#<i>"
    x: torch.Tensor  # (N,3,H,W) in [0,1], preprocessed for the backbone
    labels: list[int | None]  # ground truth where known
    skipped: list[str]


def load_inputs(items: Sequence[str], preprocess: Preprocess, limit: int | None = None) -> Inputs:
    transform = preprocess.transform()
    names, xs, labels, skipped = [], [], [], []
    for item in items:
        if str(item).endswith(".npz"):
            X, y, _ = load_npz_images(item)
            for i in range(len(X)):
                names.append(f"{item}#{i}")
                xs.append(transform(X[i]))
                labels.append(int(y[i]) if y is not None else None)
            continue
        for path in collect_image_paths([item]):
            try:
                xs.append(transform(load_image(path)))
            except CnnlabError as exc:
                skipped.append(str(exc))
                continue
            names.append(str(path))
            labels.append(None)
    if not xs:
        raise CnnlabError("no readable input images")
    n = limit or len(xs)
    return Inputs(names[:n], torch.stack(xs[:n]), labels[:n], skipped)


def resolve_targets(spec: str, n: int, predictions: torch.Tensor, seed: int = 0) -> list[int] | None:
    """'pred' → the model's predictions; 'random' → random classes ≠ prediction (seeded); 'none' → untargeted;
    otherwise one ImageNet class (index, synset or name) for every image."""
    if spec == "pred":
        return predictions.tolist()
    if spec == "none":
        return None
    if spec == "random":
        g = torch.Generator().manual_seed(seed)
        targets = torch.randint(0, 999, (n,), generator=g)
        return [int(t + (t >= p)) for t, p in zip(targets, predictions.cpu())]  # never the predicted class
    return [imagenet.resolve_class(spec)] * n


def short_label(index: int) -> str:
    return imagenet.short_name(index)
