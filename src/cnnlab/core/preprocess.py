"""Preprocessing that travels with a backbone's weights: resize, center crop, and the normalization constants."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from PIL import Image


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

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """PIL image → float (3,H,W) in [0,1]; normalization is the model's job, not the loader's."""
        from torchvision.transforms import v2

        mode = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC}[self.interpolation]
        return v2.Compose(
            [
                v2.ToImage(),
                v2.Resize(self.resize_size, interpolation=mode, antialias=True),
                v2.CenterCrop(self.input_size),
                v2.ToDtype(torch.float32, scale=True),
            ]
        )
