"""Class-model visualization (Simonyan et al. 2014; the report's Q3.8–Q3.11): gradient ascent on a class score
from random noise, with L2 regularization, random jitter, periodic Gaussian blur and clamping to [0,1].

Beyond the report: `augment` > 0 (the default) scores each step on that many randomly scaled and rotated copies (transformation
robustness, as in lucid/lucent), which makes the image recognizable by *other* models, not only the one it was
optimized for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.backbones import Backbone
from ..core.config import Config, option
from ..core.hooks import eval_mode, frozen


@dataclass
class ClassVizOptions(Config):
    iters: int = option(200, low=0, help="ascent iterations (0: the starting noise)")
    lr: float = option(1.0, low=0, low_open=True, help="step size (L2 norm of each step, in [0,1] pixel units)")
    l2: float = option(1e-1, low=0, help="weight of the L2 penalty on the normalized image")
    jitter: int = option(16, low=0, help="random roll, in pixels")
    blur_every: int = option(10, low=0, help="blur period in iterations (0: never)")
    blur_sigma: float = option(0.5, low=0, help="blur sigma")
    # randomly scaled/rotated copies scored per step (0 = the report's method). Measured (docs/benchmarks.md):
    # how many copies make a class recognizable to another model: measured in docs/benchmarks.md (explain)
    augment: int = option(4, low=0, help="random scaled/rotated copies per step, for robustness (0: the report's "
                                         "method)")
    scale: float = option(0.1, low=0, high=0.9, help="± relative scale of those copies")
    rotate: float = option(10.0, low=0, high=180, help="± degrees of rotation of those copies")
    frames: list[int] = option(default_factory=list, low=1, help="iterations to keep as frames, e.g. 25,100,200")
    seed: int = option(0, help="noise seed")
    size: int | None = option(None, low=8, help="side of the image drawn (default: the model's input size)")


def _augment(x: torch.Tensor, n: int, scale: float, rotate: float, g: torch.Generator) -> torch.Tensor:
    """n random scale/rotation copies of one image (1,3,H,W) via one affine grid."""
    s = 1 + (torch.rand(n, generator=g) * 2 - 1) * scale
    a = (torch.rand(n, generator=g) * 2 - 1) * math.radians(rotate)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a) / s, -torch.sin(a) / s
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a) / s, torch.cos(a) / s
    grid = F.affine_grid(theta.to(x), (n, *x.shape[1:]), align_corners=False)
    return F.grid_sample(x.expand(n, -1, -1, -1), grid, padding_mode="reflection", align_corners=False)


def visualize_class(backbone: Backbone, target: int, config: ClassVizOptions | None = None,
                    size: int | None = None, progress=None,
                    on_frame=None) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """The final image (3,H,W) in [0,1] and {iteration: frame}; the backbone's mode and flags are restored.
    `on_frame(iteration, image)` is called with each frame as it is made (to show the ascent while it runs)."""
    from torchvision.transforms.functional import gaussian_blur

    c = config or ClassVizOptions()
    size = size or c.size or backbone.preprocess.input_size
    g = torch.Generator().manual_seed(c.seed)
    img = (0.5 + 0.1 * torch.randn(1, backbone.in_channels, size, size, generator=g)).clamp(0, 1).to(backbone.device)
    frames = {}
    with eval_mode(backbone), frozen(backbone):
        for it in range(1, c.iters + 1):
            ox, oy = (torch.randint(-c.jitter, c.jitter + 1, (2,), generator=g).tolist() if c.jitter else (0, 0))
            x = img.roll((ox, oy), dims=(2, 3)).requires_grad_(True)
            views = _augment(x, c.augment, c.scale, c.rotate, g) if c.augment else x
            score = backbone(views)[:, target].mean() - c.l2 * backbone.normalize(x).pow(2).sum()
            (grad,) = torch.autograd.grad(score, x)
            with torch.no_grad():
                step = c.lr * grad / grad.norm().clamp(min=1e-12)
                img = (x + step).roll((-ox, -oy), dims=(2, 3)).clamp(0, 1)
                if c.blur_every and it % c.blur_every == 0 and c.blur_sigma > 0:
                    img = gaussian_blur(img, [5, 5], [c.blur_sigma, c.blur_sigma])
            if it in c.frames:
                frames[it] = img[0].detach().cpu()
                if on_frame is not None:
                    on_frame(it, frames[it])
            if progress is not None:
                progress.update(1)
    return img[0].detach().cpu(), frames


def class_probability(backbone: Backbone, image: torch.Tensor, target: int) -> tuple[float, int]:
    """Softmax probability of `target` and its rank (1 = top class), after the backbone's own preprocessing size."""
    size = backbone.preprocess.input_size
    x = image.unsqueeze(0).to(backbone.device)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad(), eval_mode(backbone):
        p = backbone(x).float().softmax(dim=1)[0]
    return float(p[target]), int((p > p[target]).sum()) + 1
