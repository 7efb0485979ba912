"""Transformation robustness for feature visualization: what the model sees of the image at each step.

The chain, each link off at 0: pad (a constant grey border, lucid's 12 px), jitter (a random shift of up to N
pixels; the report's jitter is this roll), then `augment` copies, each randomly scaled (± `scale`) and rotated
(± `rotate` degrees) through one affine resampling. The objective is averaged over the copies, so the image must work
under all of them. lucid's standard chain is pad 12, jitter 8, one scaled and rotated copy (± 10 %, ± 10°); the
report's is jitter 16 only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.config import Config, option


@dataclass
class TransformOptions(Config):
    pad: int | None = option(None, low=0, help="grey border added before the other transforms, in pixels (0: none; "
                                               "default: lucid's 12 px at 224 px, in proportion to the image side)")
    jitter: int | None = option(None, low=0, help="random shift of up to this many pixels at each step (0: none; "
                                                  "default: lucid's 8 px at 224 px, in proportion)")
    augment: int = option(1, low=0, help="randomly scaled and rotated copies scored per step (0: none)")
    scale: float = option(0.1, low=0, high=0.9, help="± relative scale of those copies")
    rotate: float = option(10.0, low=0, high=180, help="± degrees of rotation of those copies")


def _affine_copies(x: torch.Tensor, n: int, scale: float, rotate: float, g: torch.Generator) -> torch.Tensor:
    """n randomly scaled and rotated copies of a batch (B,C,H,W) → (n*B,C,H,W), copy-major."""
    b = x.shape[0]
    s = 1 + (torch.rand(n, generator=g) * 2 - 1) * scale
    a = (torch.rand(n, generator=g) * 2 - 1) * math.radians(rotate)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a) / s, -torch.sin(a) / s
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a) / s, torch.cos(a) / s
    theta = theta.repeat_interleave(b, dim=0).to(x)
    grid = F.affine_grid(theta, (n * b, *x.shape[1:]), align_corners=False)
    return F.grid_sample(x.repeat(n, 1, 1, 1), grid, padding_mode="reflection", align_corners=False)


def apply(x: torch.Tensor, options: TransformOptions, g: torch.Generator) -> torch.Tensor:
    """The views of a batch (B,C,H,W) the model is shown this step: (K*B, C, H', W'), copy-major (view k*B + b is a
    copy of image b), K = max(augment, 1)."""
    side = max(x.shape[-2:])
    pad, jitter = _pixels(options.pad, 12, side), _pixels(options.jitter, 8, side)
    if pad:
        x = F.pad(x, [pad] * 4, value=0.5)
    if jitter:
        dx, dy = torch.randint(-jitter, jitter + 1, (2,), generator=g).tolist()
        x = x.roll((dx, dy), dims=(2, 3))
    if options.augment:
        x = _affine_copies(x, options.augment, options.scale, options.rotate, g)
    return x


def _pixels(value: int | None, at_224: int, side: int) -> int:
    return value if value is not None else max(1, round(at_224 * side / 224))

