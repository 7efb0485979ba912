"""Feature visualization by optimization (Olah et al. 2017): a batch of images, made by a parameterization
(`params.py`), is shown to the model through the transform chain (`transforms.py`) and ascends an objective
(`objectives.py`). The report's class-model visualization is one case: the `pixel` parameterization, a class
objective, the report's jitter.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..core.backbones import Backbone
from ..core.config import SEED_MAX, option, part
from ..core.errors import CnnlabError
from ..core.hooks import capture, eval_mode, frozen, run_until_captured
from ..core.inputs import batches
from .objectives import LOGITS, Objective
from .objectives import parse as parse_objective
from .params import PARAMS, Param
from .transforms import TransformOptions, apply


@dataclass
class RenderOptions(TransformOptions):
    param: Param = part(PARAMS, "fourier", help="image parameterization")
    iters: int = option(512, low=0, help="ascent steps (0: the starting image)")
    frames: list[int] = option(default_factory=list, low=1, help="steps to keep as frames, e.g. 25,100,200")
    seed: int = option(0, low=0, high=SEED_MAX, help="seed of the starting noise and of the transforms")
    size: int | None = option(None, low=8, help="side of the image drawn (default: the model's input size)")


class _RedirectedReLU(torch.autograd.Function):
    """ReLU (or ReLU6) whose gradient, for an image whose ordinary gradient through this layer is all zero, still
    flows where it would lift a unit out of its flat zone (lucid's redirected ReLU gradient): a unit that is dead
    on the grey starting image can then be drawn. Gradients are of a loss (descended)."""

    @staticmethod
    def forward(ctx, x, upper):
        ctx.save_for_backward(x)
        ctx.upper = upper
        return x.clamp(0, upper) if upper is not None else x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        inside = (x > 0) if ctx.upper is None else (x > 0) & (x < ctx.upper)
        plain = grad * inside
        # redirected: only what would push a unit further into its flat zone is blocked
        pushed_out = (x <= 0) & (grad > 0)
        if ctx.upper is not None:
            pushed_out |= (x >= ctx.upper) & (grad < 0)
        redirected = grad.masked_fill(pushed_out, 0)
        dead = plain.flatten(1).abs().sum(1) == 0
        return torch.where(dead.view(-1, *[1] * (grad.ndim - 1)), redirected, plain), None


@contextmanager
def redirected_relus(model: nn.Module) -> Iterator[nn.Module]:
    """Every nn.ReLU / nn.ReLU6 of `model` computes `_RedirectedReLU` inside the block (not in place); restored on
    exit."""
    changed, hooks = [], []
    for m in model.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            upper = 6.0 if isinstance(m, nn.ReLU6) else None
            changed.append((m, m.inplace))
            m.inplace = False
            hooks.append(m.register_forward_hook(lambda mod, inp, out, u=upper: _RedirectedReLU.apply(inp[0], u)))
    try:
        yield model
    finally:
        for h in hooks:
            h.remove()
        for m, inplace in changed:
            m.inplace = inplace


def activations(backbone: Backbone, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """The activations an objective reads, laid out as maps or vectors (`Backbone.laid_out`: tokens on their
    grid, channels last permuted), from one forward pass of pixels `x` (stopping early when the logits are not
    needed)."""
    inner = [layer for layer in layers if layer != LOGITS]
    if not inner:
        return {LOGITS: backbone(x)}
    backbone.check_layers(inner)
    points = {layer: backbone.resolve(layer) for layer in inner}
    wants_logits = LOGITS in layers
    with capture(backbone.net, points, stop_early=not wants_logits) as store:
        if wants_logits:
            logits = backbone(x)
        else:
            run_until_captured(backbone.net, backbone.normalize(x))
    acts = {layer: backbone.laid_out(store[layer], points[layer], tuple(x.shape[-2:])) for layer in inner}
    if wants_logits:
        acts[LOGITS] = logits
    return acts


def objective_values(backbone: Backbone, objective: Objective, images: torch.Tensor) -> torch.Tensor:
    """The objective of each image (B,) as it is, without transforms."""
    with torch.no_grad(), eval_mode(backbone):
        x = images.to(backbone.device)
        return objective(activations(backbone, x, objective.layers), len(x)).float().cpu()


def render(backbone: Backbone, objective: Objective, options: RenderOptions | None = None, batch: int = 1,
           init: torch.Tensor | None = None, progress=None,
           on_frame=None) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """The images (B,C,H,W) in [0,1] that ascend `objective`, and {step: images} for `options.frames`. `init`
    (B,C,H,W) starts from given images (DeepDream); otherwise from noise. The backbone's mode and flags are
    restored. `on_frame(step, images)` sees each frame as it is made."""
    o = options or RenderOptions()
    g = torch.Generator().manual_seed(o.seed)
    if init is not None:
        shape = tuple(init.shape)
    else:
        size = o.size or backbone.preprocess.input_size
        shape = (batch, backbone.in_channels, size, size)
    param = o.param.start(shape, g, backbone.device, init=init, normalize=backbone.normalize)
    frames: dict[int, torch.Tensor] = {}
    layers = objective.layers
    with eval_mode(backbone), frozen(backbone), redirected_relus(backbone):
        for it in range(1, o.iters + 1):
            image = param.image()
            value = objective(activations(backbone, _sized(backbone, apply(image, o, g)), layers), shape[0]).sum()
            param.step(value, it)
            if it in o.frames:
                frames[it] = _detached(param)
                if on_frame is not None:
                    on_frame(it, frames[it])
            if progress is not None:
                progress.update(1)
    return _detached(param), frames


def _sized(backbone: Backbone, views: torch.Tensor) -> torch.Tensor:
    """The views at the network's input size where it takes no other (padding and jitter grow them)."""
    size = backbone.preprocess.input_size
    if tuple(views.shape[-2:]) == (size, size) or not backbone.fixed_input_size:
        return views
    return torch.nn.functional.interpolate(views, size=(size, size), mode="bilinear", align_corners=False,
                                           antialias=True)


def _detached(param) -> torch.Tensor:
    with torch.no_grad():
        return param.image().detach().float().cpu()


# ------------------------------------------------------------------------- objectives from their spelling
def direction_from(backbone: Backbone, layer: str, source: str, batch_size: int = 16) -> torch.Tensor:
    """A direction in `layer`'s channel space: a .npy vector, or the mean activation (spatially averaged) of a
    folder of images ("what does this concept look like to the model")."""
    if source.endswith(".npy"):
        try:
            return torch.from_numpy(np.load(source)).float().flatten()
        except (OSError, ValueError) as exc:
            raise CnnlabError(f"cannot read the direction {source}: {exc}") from None
    total, n = None, 0
    with torch.no_grad():
        for _, x, _ in batches(source, backbone.preprocess, batch_size):
            if x is None:
                continue
            f = backbone.features(x.to(backbone.device), [layer], pool="avg")[layer].sum(0)
            total, n = (f if total is None else total + f), n + len(x)
    if not n:
        raise CnnlabError(f"no readable image in {source} to compute a direction from")
    return (total / n).cpu()


def build_objective(backbone: Backbone, spec: str | Objective) -> Objective:
    """An Objective from its spelling (or as given)."""
    if isinstance(spec, Objective):
        return spec
    return parse_objective(spec, class_index=backbone.class_index,
                            direction_from=lambda layer, source: direction_from(backbone, layer, source))
