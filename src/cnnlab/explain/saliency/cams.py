"""Class activation maps: one engine (`Cam`, as pytorch-grad-cam's BaseCAM) reads a cut point's activations and the
target score's gradients, each method says how to weigh them (`_cam`), and several layers are summed after scaling
each map to max 1, so a coarse deep map and a finer earlier one break each other's ties."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F

from ...core.backbones import Backbone
from ...core.errors import CnnlabError
from ...core.hooks import capture, run_until_captured
from ...core.layout import layout_of
from .base import Batched, Layered, cam_layers, register, unit, upsampled
from .gradients import SmoothGrad


@dataclass
class Cam(Layered):
    """A class activation map read at cut points (`layer`, default the model's): one map per layer upsampled to the
    image, several summed after scaling each to max 1."""

    needs_gradients: ClassVar[bool] = True
    # the method's weights assume activations ≥ 0 (after a ReLU): at a layer where more than this share is negative
    # (a linear bottleneck) a default layer is left out, and a layer the user names gets a warning
    nonnegative: ClassVar[bool] = False
    NEGATIVE_SHARE: ClassVar[float] = 0.01

    def check_model(self, backbone: Backbone) -> None:
        for layer in self.layer or ():
            grid_point(backbone, layer)

    def _maps(self, backbone, x, targets):
        names = self.layer or cam_layers(backbone)  # named ones were checked (`check`), defaults are the model's
        maps = []
        for i, layer in enumerate(names):
            acts, grads = activations_and_gradients(backbone, x, targets, layer, self.needs_gradients)
            negative = float((acts < 0).float().mean()) if self.nonnegative else 0.0
            if negative > self.NEGATIVE_SHARE:
                if not self.layer and (maps or i < len(names) - 1):
                    continue  # a default layer where the method does not hold: the others suffice
                warnings.warn(f"{self.name} assumes non-negative activations; {negative:.0%} of {layer}'s are "
                              "negative, so its weights there are not meaningful (use a layer after a ReLU)",
                              stacklevel=2)
            maps.append(upsampled(self._cam(backbone, x, targets, acts, grads).clamp(min=0), x.shape[-2:]))
        return maps[0] if len(maps) == 1 else sum(unit(m) for m in maps)

    def _cam(self, backbone, x, targets, acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
        """(B,h,w) from a layer's activations and the target score's gradients (B,K,h,w)."""
        raise NotImplementedError


@register
@dataclass
class GradCam(Cam):
    name = "gradcam"
    help = ("Grad-CAM (Selvaraju et al. 2017) at the model's last maps (its registry entry says where: Lite "
            "head+block6; --layer to change: a named cut point or any module path, e.g. layer4)")

    def _cam(self, backbone, x, targets, acts, grads):
        return (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1)


@register
@dataclass
class GradCamPlusPlus(Cam):
    name = "gradcam++"
    help = ("Grad-CAM++ (Chattopadhay et al. 2018): positive gradients weighted per position (--layer as gradcam; "
            "the model's layers with non-negative activations only)")
    nonnegative: ClassVar[bool] = True

    def _cam(self, backbone, x, targets, acts, grads):
        g2 = grads ** 2
        alpha = g2 / (2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g2 * grads + 1e-7)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        weights = (alpha * grads.clamp(min=0)).sum(dim=(2, 3), keepdim=True)
        return (weights * acts).sum(dim=1)


@register
@dataclass
class LayerCam(Cam):
    name = "layercam"
    help = "LayerCAM (Jiang et al. 2021): activations times their positive gradients, position by position"

    def _cam(self, backbone, x, targets, acts, grads):
        return (grads.clamp(min=0) * acts).sum(dim=1)


@register
@dataclass
class ScoreCam(Cam, Batched):
    name = "scorecam"
    help = ("Score-CAM (Wang et al. 2020): each channel's map, scaled to [0,1], masks the image; the class "
            "probability of each masked image weights that channel (one forward pass per channel, batched)")
    cost = "slow"
    needs_gradients: ClassVar[bool] = False

    def _cam(self, backbone, x, targets, acts, grads):
        masks = F.interpolate(acts, size=x.shape[-2:], mode="bilinear", align_corners=False)
        low = masks.flatten(2).amin(dim=2)[..., None, None]
        high = masks.flatten(2).amax(dim=2)[..., None, None]
        masks = (masks - low) / (high - low).clamp(min=1e-12)  # (B,K,H,W), a flat channel masks everything out
        weights = torch.empty(acts.shape[:2], device=acts.device)
        batch = self.internal_batch_size
        with torch.no_grad():
            for b in range(len(x)):
                for k in range(0, masks.shape[1], batch):
                    m = masks[b, k:k + batch, None]  # (n,1,H,W)
                    weights[b, k:k + len(m)] = backbone(x[b:b + 1] * m).softmax(dim=1)[:, targets[b]]
        return (weights[..., None, None] * acts).sum(dim=1)


@register
@dataclass
class SmoothGradGradCam(SmoothGrad, GradCam):
    name = "smoothgrad-gradcam"
    help = "SmoothGrad × Grad-CAM, each scaled to max 1: SmoothGrad's detail where Grad-CAM says the class is"

    def _maps(self, backbone, x, targets):
        return unit(SmoothGrad._maps(self, backbone, x, targets)) * unit(GradCam._maps(self, backbone, x, targets))


def gradcam(backbone: Backbone, x: torch.Tensor, targets: torch.Tensor, layers: Sequence[str]) -> torch.Tensor:
    """Grad-CAM of `x` upsampled to the image at `layers` (summed after scaling each to max 1)."""
    if not x.requires_grad:  # the activations need a graph even when the weights are frozen
        x = x.detach().requires_grad_(True)
    return GradCam(layer=list(layers))._maps(backbone, x, torch.as_tensor(targets, device=x.device).long().view(-1))


def grid_point(backbone: Backbone, layer: str):
    """The cut point `layer` names, if a map can be read there: a cut point that reads the class token (`blockN_cls`)
    is one vector per image, with no grid to lay a map on."""
    point = backbone.resolve(layer)
    if point.read == "cls":
        spatial = layer[:-len("_cls")] + "_mean" if layer.endswith("_cls") else point.module
        raise CnnlabError(f"{layer} reads the class token: one vector per image, no grid for a class activation map; "
                          f"use {spatial} (its patch tokens) or the module path {point.module}")
    return point


def activations_and_gradients(backbone: Backbone, x: torch.Tensor, targets: torch.Tensor, layer: str,
                              gradients: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A cut point's activations (B,K,h,w) and (with `gradients`) those of each image's target score with respect
    to them, read through the layer's image layout (`core.layout`: channels-last maps and patch tokens too)."""
    point = grid_point(backbone, layer)
    with capture(backbone.net, {"a": point}, stop_early=not gradients) as store:
        if gradients:
            score = backbone(x).gather(1, targets.view(-1, 1)).sum()
        else:
            with torch.no_grad():
                run_until_captured(backbone.net, backbone.normalize(x))
    raw = store["a"]
    layout = layout_of(raw, tuple(x.shape[-2:]), backbone.net, backbone.net.get_submodule(point.module),
                       batch=len(x))
    if layout is None:
        shape = tuple(raw.shape) if isinstance(raw, torch.Tensor) else type(raw).__name__
        raise CnnlabError(f"a class activation map needs a layer laid on the image (maps, or patch tokens); {layer} "
                          f"gives {shape}: pass --layer with a block's output or its first norm (e.g. "
                          f"{backbone.last_spatial_layer()})")
    grads = layout.to_nchw(torch.autograd.grad(score, raw)[0].detach()) if gradients else None
    return layout.to_nchw(raw.detach()), grads
