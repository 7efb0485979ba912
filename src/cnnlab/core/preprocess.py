"""Preprocessing that travels with a backbone's weights: resize, center crop, and the normalization constants.

The resize and crop are tensor operations on float [0,1] images, differentiable, and the very code every reader
uses: the loader of `classify` and `features` runs `Preprocess.__call__` on each decoded image, and an attack on a
full-size photo runs it inside the graph, so the two cannot disagree.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
import torch

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

    def read(self, path) -> torch.Tensor:
        """An image file straight to the network's input (3,S,S): decoded at a reduced scale where the format
        allows (`load_image`'s `min_side`), never held as a full-size float image longer than one resize."""
        from .images import load_image, pil_to_tensor

        return self(pil_to_tensor(load_image(path, min_side=self.resize_size)))


