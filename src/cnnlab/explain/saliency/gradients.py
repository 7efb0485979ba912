"""Methods read from the gradient of the class score with respect to the pixels (through Captum where it has the
method), and the model-independent control."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...core.config import option
from .base import Batched, Blurs, Seeded, SaliencyMethod, blurred, register

IG_BASELINES = ("blur", "black")


@register
@dataclass
class Vanilla(SaliencyMethod):
    name, help = "vanilla", "|∂score/∂pixel|, max over channels (Simonyan et al. 2014; the report's)"

    def _maps(self, backbone, x, targets):
        import captum.attr as ca

        return ca.Saliency(backbone).attribute(x, target=targets, abs=True).amax(dim=1)


@register
@dataclass
class SmoothGrad(Batched, Seeded):
    name, help = "smoothgrad", "vanilla averaged over noisy copies (Smilkov et al. 2017)"
    quick = {"smoothgrad_samples": 8}
    smoothgrad_samples: int = option(16, flag="--samples", low=1, help="SmoothGrad: noisy copies per image")
    smoothgrad_sigma: float = option(0.15, low=0, help="SmoothGrad: noise std in [0,1] pixel units")

    def _maps(self, backbone, x, targets):
        """Captum draws the noise from the global RNG: seeded on a fork, so the maps repeat and the caller's stream
        is left as it was."""
        import captum.attr as ca

        nt = ca.NoiseTunnel(ca.Saliency(backbone))
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.noise_seed)
            return nt.attribute(x, nt_type="smoothgrad", nt_samples=self.smoothgrad_samples,
                                stdevs=self.smoothgrad_sigma, nt_samples_batch_size=self.internal_batch_size,
                                target=targets, abs=True).amax(dim=1)


@register
@dataclass
class IntegratedGradients(Batched, Blurs):
    name, help = "ig", "Integrated Gradients from a blurred copy (Sundararajan et al. 2017; --ig-baseline)"
    ig_steps: int = option(32, low=1, help="Integrated Gradients: steps of the path integral")
    # a blurred copy is IG's 'absent' image by default (blur IG, Xu et al. 2020): see docs/benchmarks.md
    ig_baseline: str = option("blur", choices=IG_BASELINES,
                              help="Integrated Gradients' starting image: a blurred copy (σ --blur-sigma) or black")

    def _maps(self, backbone, x, targets):
        import captum.attr as ca

        base = blurred(x.detach(), self.blur_sigma) if self.ig_baseline == "blur" else torch.zeros_like(x)
        attr = ca.IntegratedGradients(backbone).attribute(x, baselines=base, target=targets, n_steps=self.ig_steps,
                                                          internal_batch_size=self.internal_batch_size)
        return attr.sum(dim=1).abs()


@register
@dataclass
class InputXGradient(SaliencyMethod):
    name = "input-x-gradient"
    help = "the image times the gradient of the class score (Shrikumar et al. 2016), |sum over channels|"

    def _maps(self, backbone, x, targets):
        import captum.attr as ca

        return ca.InputXGradient(backbone).attribute(x, target=targets).sum(dim=1).abs()


@register
@dataclass
class GuidedBackprop(SaliencyMethod):
    name = "guided-backprop"
    help = ("Guided Backpropagation (Springenberg et al. 2015): only positive gradients pass back through each "
            "ReLU / ReLU6; |max over channels|")

    def _maps(self, backbone, x, targets):
        with guided_relus(backbone):
            score = backbone(x).gather(1, targets.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, x)
        return grad.abs().amax(dim=1)


@contextmanager
def guided_relus(model: nn.Module):
    """Backward hooks that keep only positive gradients through every ReLU and ReLU6 (Captum's GuidedBackprop
    hooks nn.ReLU only, and EfficientNet-Lite's activations are ReLU6); removed on exit."""
    handles = [m.register_full_backward_hook(lambda mod, gin, gout: (gin[0].clamp(min=0),))
               for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


@dataclass
class Control(SaliencyMethod):
    """An input-only control, not an explanation: the image alone, never the model (so the sanity checks must fail
    it, and a metric it scores well on is one the input games)."""

    control: ClassVar[bool] = True
    warn_flat: ClassVar[bool] = False


@register
@dataclass
class Brightness(Control):
    name = "brightness"
    help = ("CONTROL, not an explanation: the image's own intensity (its grey level), so deletion removes the "
            "brightest pixels first; where it ranks with the methods, the metric is dominated by the input")

    def _maps(self, backbone, x, targets):
        return x.detach().mean(1)


@register
@dataclass
class EdgeMap(Control):
    name = "edges"
    help = ("CONTROL, not an explanation: the image's edge map (Sobel gradient magnitude of its grey level); it "
            "ignores the model, so the model-randomization check must fail it")

    def _maps(self, backbone, x, targets):
        grey = x.detach().mean(1, keepdim=True)
        kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=x.device, dtype=x.dtype).view(1, 1, 3, 3)
        padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
        gx, gy = F.conv2d(padded, kx), F.conv2d(padded, kx.transpose(-1, -2))
        return (gx ** 2 + gy ** 2).sqrt()[:, 0]
