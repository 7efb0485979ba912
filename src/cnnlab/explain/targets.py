"""What the explain jobs share: the target of each image, class names for figures, how many images a figure shows."""
from __future__ import annotations

from typing import Sequence

import torch

from ..core.backbones import Backbone

SHOWN = 12  # images in an overview figure (every image keeps its own PNG)


def resolve_targets(spec: str | None, preds: torch.Tensor, backbone: Backbone, seed: int = 0,
                    positions: list[int] | None = None) -> list[int] | None:
    """'pred' → the model's predictions; 'random' → random classes ≠ the prediction (seeded: the image at place p
    among the inputs gets the p-th draw, however the inputs are cut into chunks); 'none' → untargeted; otherwise one
    class of the model (index or name) for every image."""
    if spec is None or spec == "none":
        return None
    if spec == "pred":
        return [int(p) for p in preds]
    if spec == "random":
        positions = list(range(len(preds))) if positions is None else positions
        g = torch.Generator().manual_seed(seed)
        draws = torch.randint(0, backbone.num_classes - 1, (max(positions, default=-1) + 1,), generator=g)[positions]
        return [int(t + (t >= p)) for t, p in zip(draws, preds.cpu())]  # never the predicted class
    return [backbone.class_index(spec)] * len(preds)


def short_name(labels: Sequence[str], index: int) -> str:
    return labels[index].split(",")[0].strip()
