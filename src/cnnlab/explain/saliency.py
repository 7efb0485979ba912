"""Saliency methods, one registered class each (Captum's shape): options in the constructor,
`attribute(backbone, x, targets) -> maps (B,H,W) ≥ 0` per call. `METHODS` (the registry) is what the CLI's choices,
the app's list, the report and `--help` read; adding a method is one class here plus its row in the parametrized
test. Measured faithfulness of each: docs/benchmarks.md ("explain").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F

from ..core.backbones import Backbone
from ..core.config import Config, option, registry_help
from ..core.errors import CnnlabError
from ..core.hooks import eval_mode, frozen

IG_BASELINES = ("blur", "black")
METHODS: dict[str, type["SaliencyMethod"]] = {}


def register(cls: type["SaliencyMethod"]) -> type["SaliencyMethod"]:
    METHODS[cls.name] = cls
    return cls


@dataclass
class SaliencyOptions(Config):
    """Every method's options, as the CLI and a config file spell them (each method takes the ones it uses)."""

    smoothgrad_samples: int = option(16, flag="--samples", low=1, help="SmoothGrad: noisy copies per image")
    smoothgrad_sigma: float = option(0.15, low=0, help="SmoothGrad: noise std in [0,1] pixel units")
    noise_seed: int = option(0, help="SmoothGrad: seed of its noise (the same maps on every run)")
    ig_steps: int = option(32, low=1, help="Integrated Gradients: steps of the path integral")
    # a blurred copy is IG's 'absent' image by default (blur IG, Xu et al. 2020): see docs/benchmarks.md
    ig_baseline: str = option("blur", choices=IG_BASELINES,
                              help="Integrated Gradients' starting image: a blurred copy (σ --blur-sigma) or black")
    occlusion_window: int = option(32, low=1, help="occlusion: patch side in pixels")
    occlusion_stride: int = option(16, low=1, help="occlusion: patch stride in pixels")
    blur_sigma: float = option(10.0, low=0, low_open=True,
                               help="the 'absent' image of occlusion and IG: a blurred copy with this σ")
    internal_batch_size: int = option(32, low=1, help="images per pass inside smoothgrad / ig / occlusion (memory)")
    layer: list[str] | None = option(None, sep="+", help="Grad-CAM cut point(s) or module path(s); 'a+b' sums "
                                                         "several, each scaled to max 1 (default: the model's own, "
                                                         "from its registry entry, else its last spatial map)")


class SaliencyMethod:
    """A saliency method: `attribute(backbone, x (B,C,H,W) in [0,1], targets (B,)) -> (B,H,W) ≥ 0`. The backbone
    comes back with its mode and requires_grad flags unchanged; x is not modified."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""

    @classmethod
    def from_options(cls, o: SaliencyOptions) -> "SaliencyMethod":
        return cls()

    def layers(self) -> Sequence[str]:
        """Cut points the method reads (checked before any work)."""
        return ()

    def attribute(self, backbone: Backbone, x: torch.Tensor, targets) -> torch.Tensor:
        x = x.detach().to(backbone.device).clone().requires_grad_(True)  # Captum warns otherwise
        targets = torch.as_tensor(targets, device=backbone.device).long().view(-1)
        with eval_mode(backbone), frozen(backbone):
            return self._maps(backbone, x, targets).detach()

    def _maps(self, backbone: Backbone, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register
class Vanilla(SaliencyMethod):
    name, help = "vanilla", "|∂score/∂pixel|, max over channels (Simonyan et al. 2014; the report's)"

    def _maps(self, backbone, x, targets):
        import captum.attr as ca

        return ca.Saliency(backbone).attribute(x, target=targets, abs=True).amax(dim=1)


@register
class SmoothGrad(SaliencyMethod):
    name, help = "smoothgrad", "vanilla averaged over noisy copies (Smilkov et al. 2017)"

    def __init__(self, samples: int = 16, sigma: float = 0.15, seed: int = 0, batch: int = 32):
        self.samples, self.sigma, self.seed, self.batch = samples, sigma, seed, batch

    @classmethod
    def from_options(cls, o):
        return cls(o.smoothgrad_samples, o.smoothgrad_sigma, o.noise_seed, o.internal_batch_size)

    def _maps(self, backbone, x, targets):
        """Captum draws the noise from the global RNG: seeded on a fork, so the maps repeat and the caller's stream
        is left as it was."""
        import captum.attr as ca

        nt = ca.NoiseTunnel(ca.Saliency(backbone))
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            return nt.attribute(x, nt_type="smoothgrad", nt_samples=self.samples, stdevs=self.sigma,
                                nt_samples_batch_size=self.batch, target=targets, abs=True).amax(dim=1)


@register
class IntegratedGradients(SaliencyMethod):
    name, help = "ig", "Integrated Gradients from a blurred copy (Sundararajan et al. 2017; --ig-baseline)"

    def __init__(self, steps: int = 32, baseline: str = "blur", blur_sigma: float = 10.0, batch: int = 32):
        if baseline not in IG_BASELINES:
            raise CnnlabError(f"unknown IG baseline {baseline!r}; choose blur or black")
        self.steps, self.baseline, self.blur_sigma, self.batch = steps, baseline, blur_sigma, batch

    @classmethod
    def from_options(cls, o):
        return cls(o.ig_steps, o.ig_baseline, o.blur_sigma, o.internal_batch_size)

    def _maps(self, backbone, x, targets):
        import captum.attr as ca

        base = blurred(x.detach(), self.blur_sigma) if self.baseline == "blur" else torch.zeros_like(x)
        attr = ca.IntegratedGradients(backbone).attribute(x, baselines=base, target=targets, n_steps=self.steps,
                                                          internal_batch_size=self.batch)
        return attr.sum(dim=1).abs()


@register
class GradCam(SaliencyMethod):
    name = "gradcam"
    help = ("Grad-CAM (Selvaraju et al. 2017) at the model's last maps (its registry entry says where: Lite "
            "head+block6; --layer to change: a named cut point or any module path, e.g. layer4)")

    def __init__(self, layers: Sequence[str] | None = None):
        self.layer_names = list(layers) if layers else None

    @classmethod
    def from_options(cls, o):
        return cls(o.layer)

    def layers(self):
        return self.layer_names or ()

    def _maps(self, backbone, x, targets):
        return gradcam(backbone, x, targets, self.layer_names or cam_layers(backbone))


@register
class Occlusion(SaliencyMethod):
    name = "occlusion"
    help = "score drop when 32×32 patches are replaced by a blurred copy (Zeiler & Fergus 2014)"

    def __init__(self, window: int = 32, stride: int = 16, blur_sigma: float = 10.0, batch: int = 32):
        self.window, self.stride, self.blur_sigma, self.batch = window, stride, blur_sigma, batch

    @classmethod
    def from_options(cls, o):
        return cls(o.occlusion_window, o.occlusion_stride, o.blur_sigma, o.internal_batch_size)

    def _maps(self, backbone, x, targets):
        import captum.attr as ca

        w, s, c = self.window, self.stride, x.shape[1]
        attr = ca.Occlusion(backbone).attribute(x, sliding_window_shapes=(c, w, w), strides=(c, s, s),
                                                target=targets, baselines=blurred(x, self.blur_sigma),
                                                perturbations_per_eval=self.batch)
        return attr.mean(dim=1).clamp(min=0)  # keep the evidence FOR the class


@register
class SmoothGradGradCam(SaliencyMethod):
    name = "smoothgrad-gradcam"
    help = "SmoothGrad × Grad-CAM, each scaled to max 1: SmoothGrad's detail where Grad-CAM says the class is"

    def __init__(self, smoothgrad: SmoothGrad | None = None, cam: GradCam | None = None):
        self.smoothgrad, self.cam = smoothgrad or SmoothGrad(), cam or GradCam()

    @classmethod
    def from_options(cls, o):
        return cls(SmoothGrad.from_options(o), GradCam.from_options(o))

    def layers(self):
        return self.cam.layers()

    def _maps(self, backbone, x, targets):
        return unit(self.smoothgrad._maps(backbone, x, targets)) * unit(self.cam._maps(backbone, x, targets))


def method(name: str, options: SaliencyOptions | None = None) -> SaliencyMethod:
    """The registered method `name`, built from the options."""
    if name not in METHODS:
        raise CnnlabError(f"unknown saliency method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name].from_options(options or SaliencyOptions())


def attribute(backbone: Backbone, x: torch.Tensor, target, name: str = "vanilla",
              options: SaliencyOptions | None = None) -> torch.Tensor:
    """Saliency maps (B,H,W) of images x (B,C,H,W) in [0,1], one target class per image."""
    return method(name, options).attribute(backbone, x, target)


def methods_help() -> str:
    return registry_help(METHODS)


def cam_layers(backbone: Backbone) -> list[str]:
    """Where Grad-CAM reads when not told: the model's registry entry, else the last spatial map of its pass."""
    return list(backbone.cam_layers) if backbone.cam_layers else [backbone.last_spatial_layer()]


def blurred(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A strongly blurred copy: the 'absent' image for occlusion and deletion/insertion metrics."""
    from torchvision.transforms.functional import gaussian_blur

    k = int(2 * round(3 * sigma) + 1)
    k = min(k, 2 * (min(x.shape[-2:]) // 2) - 1)
    return gaussian_blur(x, [k, k], [sigma, sigma])


def unit(m: torch.Tensor) -> torch.Tensor:
    """Each map (B,H,W) scaled to max 1."""
    return m / m.flatten(1).amax(dim=1).clamp(min=1e-12).view(-1, 1, 1)


def gradcam(backbone: Backbone, x: torch.Tensor, targets: torch.Tensor, layers: Sequence[str]) -> torch.Tensor:
    """Grad-CAM upsampled to the image; several layers are summed after scaling each map to max 1, so a coarse deep
    map and a finer earlier one break each other's ties."""
    import captum.attr as ca

    backbone.check_layers(layers)
    modules = dict(backbone.net.named_modules())
    maps = []
    for layer in layers:
        module = modules[backbone.resolve(layer).module]
        cam = ca.LayerGradCam(backbone, module).attribute(x, target=targets, relu_attributions=True)
        maps.append(F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0])
    return maps[0] if len(maps) == 1 else sum(unit(m) for m in maps)


def predicted(backbone: Backbone, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), eval_mode(backbone):
        return backbone(x.to(backbone.device)).argmax(dim=1)
