"""Preprocessing that travels with a backbone's weights: resize, center crop, and the normalization constants.

The resize and crop are tensor operations on float [0,1] images, differentiable, and the very code every reader
uses: the loader of `classify` and `features` runs `Preprocess.__call__` on each decoded image, and an attack on a
full-size photo runs it inside the graph, so the two cannot disagree.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from PIL import Image

INTERPOLATIONS = ("bilinear", "bicubic")
# Longer side at most this many times the shorter before resizing: the center crop keeps a square anyway, so only
# extreme strips (panoramas, 4000×3 images) are cut, and their resize stays small.
MAX_ASPECT = 4


@dataclass(frozen=True)
class Preprocess:
    input_size: int  # side of the square crop fed to the network
    resize_size: int  # shorter side after resizing, before the center crop
    interpolation: str  # "bilinear" | "bicubic"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_crop_pct(cls, input_size: int, crop_pct: float, interpolation: str, mean, std) -> "Preprocess":
        return cls(input_size, int(math.floor(input_size / crop_pct)), interpolation, tuple(mean), tuple(std))

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Float images (...,C,H,W) in [0,1] → (...,C,S,S): shorter side to `resize_size` (antialiased), then the
        central S×S crop. Differentiable; an image already S×S with resize_size == S passes unchanged."""
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        mode = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}[self.interpolation]
        h, w = x.shape[-2:]
        if max(h, w) > MAX_ASPECT * min(h, w):  # a 4000×3 strip would resize to 341k pixels wide: crop it first
            side = MAX_ASPECT * min(h, w)
            x = TF.center_crop(x, [min(h, side), min(w, side)])
        if min(x.shape[-2:]) != self.resize_size:
            x = TF.resize(x, [self.resize_size], interpolation=mode, antialias=True).clamp(0, 1)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = TF.center_crop(x, [self.input_size, self.input_size])
        return x

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """PIL image → float (3,H,W) in [0,1] at the network's size; normalization is the model's job."""
        return functools.partial(_from_pil, self)


def _from_pil(preprocess: Preprocess, img: Image.Image) -> torch.Tensor:
    from .images import pil_to_tensor

    return preprocess(pil_to_tensor(img))
