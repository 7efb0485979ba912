"""What an attack differentiates: an image at its own size, through each network's own preprocessing (the same
`Preprocess` code that `classify` and `features` read files with), to the mean of the networks' logits."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..core.backbones import Backbone
from ..core.errors import CnnlabError


class ImageModel(nn.Module):
    """Images (B,C,H,W) in [0,1] at any size → logits. One backbone: its logits; several (an ensemble attack): the
    mean of their logits, each through its own resize and crop. `through_preprocess=False` feeds the images as they
    are (a tensor already prepared for the network)."""

    def __init__(self, backbones: Sequence[Backbone], through_preprocess: bool = True):
        super().__init__()
        if not backbones:
            raise CnnlabError("no model to attack")
        same_classes(backbones)
        self.backbones = nn.ModuleList(backbones)
        self.through_preprocess = through_preprocess

    @property
    def device(self) -> torch.device:
        return self.backbones[0].device

    @property
    def labels(self) -> tuple[str, ...]:
        return self.backbones[0].labels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = [b(b.preprocess(x) if self.through_preprocess else x) for b in self.backbones]
        return logits[0] if len(logits) == 1 else torch.stack(logits).mean(0)


def same_classes(backbones: Sequence[Backbone]) -> None:
    """Models attacked together, or judging each other's images, must name the same classes."""
    first = backbones[0]
    for b in backbones[1:]:
        if b.labels != first.labels:
            raise CnnlabError(f"{first.name} and {b.name} do not share their classes: they cannot be attacked or "
                              "judged together")
