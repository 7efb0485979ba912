"""Class-model visualization (Simonyan et al. 2014; the report's Q3.8–Q3.11): an image that ascends one class's
score — one objective of the feature-visualization renderer (`dream.py`).

The report's method is the `pixel` parameterization (L2 regularization, periodic blur, clamping) with a jitter of 16
and no other transform (`REPORT_METHOD`). cnnlab's default is lucid's: the `fourier` parameterization and the transform
chain (pad, jitter, random scale and rotation), which draws classes another model recognizes (docs/benchmarks.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.backbones import Backbone
from ..core.hooks import eval_mode
from .dream import RenderOptions, render
from .objectives import class_logit

ClassVizOptions = RenderOptions
# The report's settings (Q3.8: 200 iterations, lr 1, L2 0.1, jitter 16, blur σ 0.5 every 10 iterations), to which
# cnnlab 0.3 added 4 randomly scaled and rotated copies per step.
REPORT_METHOD = dict(param="pixel", iters=200, lr=1.0, pad=0, jitter=16, augment=0)


def visualize_class(backbone: Backbone, target: int, config: RenderOptions | None = None,
                    size: int | None = None, progress=None,
                    on_frame=None) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """The final image (3,H,W) in [0,1] and {iteration: frame}; the backbone's mode and flags are restored.
    `on_frame(iteration, image)` is called with each frame as it is made (to show the ascent while it runs)."""
    c = config or RenderOptions()
    if size:
        c = c.replace(size=size)
    show = None if on_frame is None else (lambda it, images: on_frame(it, images[0]))
    image, frames = render(backbone, class_logit(target), c, progress=progress, on_frame=show)
    return image[0], {it: f[0] for it, f in frames.items()}


def class_probability(backbone: Backbone, image: torch.Tensor, target: int) -> tuple[float, int]:
    """Softmax probability of `target` and its rank (1 = top class), after the backbone's own preprocessing size."""
    size = backbone.preprocess.input_size
    x = image.unsqueeze(0).to(backbone.device)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad(), eval_mode(backbone):
        p = backbone(x).float().softmax(dim=1)[0]
    return float(p[target]), int((p > p[target]).sum()) + 1
