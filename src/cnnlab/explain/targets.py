"""What the explain jobs share: the target of each image, class names for figures, how many images a figure shows."""
from __future__ import annotations

from typing import Sequence

import torch

from ..core.backbones import Backbone
from ..core.errors import CnnlabError

SHOWN = 12  # images in an overview figure (every image keeps its own PNG)


def resolve_targets(spec: str | None, preds: torch.Tensor, backbone: Backbone, seed: int = 0,
                    positions: list[int] | None = None, per_image: Sequence[str] | None = None) -> list[int] | None:
    """'pred' → the model's predictions; 'random' → random classes ≠ the prediction (seeded: the image at place p
    among the inputs gets the p-th draw, however the inputs are cut into chunks); 'none' → untargeted; otherwise one
    class of the model (index or name) for every image. `per_image`: one class per input (indexed by `positions`)."""
    if per_image is not None:
        positions = list(range(len(preds))) if positions is None else positions
        return [backbone.class_index(per_image[p]) for p in positions]
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


def per_image_targets(options: dict) -> dict:
    """The API's `target=` given as one class per image (a list, a tuple, an array or a tensor of indices or names)
    becomes the config's `targets` list."""
    target = options.get("target")
    if isinstance(target, int) and not isinstance(target, bool):
        return {**options, "target": str(target)}
    if target is None or isinstance(target, str):
        return options
    if hasattr(target, "tolist"):
        target = target.tolist()
    if isinstance(target, (list, tuple)):
        options = dict(options)
        options.pop("target")
        options["targets"] = [str(t) for t in target]
    return options


def check_target_classes(backbone: Backbone, target: str | None, targets: Sequence[str] | None, n: int) -> None:
    """Before any work: one class per image when given per image, and every class named is one of the model's."""
    if targets is not None and len(targets) != n:
        raise CnnlabError(f"target: {len(targets)} classes given for {n} input images (one per image)")
    for t in targets or ([] if target in (None, "pred", "random", "none") else [target]):
        backbone.class_index(t)


def short_name(labels: Sequence[str], index: int) -> str:
    return labels[index].split(",")[0].strip()
