"""Saliency methods, one registered class each (Captum's shape): options in the constructor,
`attribute(backbone, x, targets) -> maps (B,H,W) ≥ 0` per call. `METHODS` (the registry) is what the CLI's choices,
the app's list, the report and `--help` read; adding a method is one class here plus its row in the parametrized
test. Measured faithfulness of each: docs/benchmarks.md ("explain").
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.backbones import Backbone
from ..core.config import Config, Registry, option, registry_help
from ..core.errors import CnnlabError
from ..core.hooks import capture, eval_mode, frozen, run_until_captured

IG_BASELINES = ("blur", "black")
# the most faithful method on photos it was not tuned on (deletion ratio; docs/benchmarks.md, Faithfulness)
RECOMMENDED = "iterated-gradcam"
METHODS = Registry("saliency method")
register = METHODS.register


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
    internal_batch_size: int = option(32, low=1, help="images per pass inside smoothgrad / ig / occlusion / scorecam / "
                                                      "rise (memory)")
    stages: int = option(14, low=1, help="iterated-gradcam: removal steps (each re-reads Grad-CAM of what is left)")
    # the default: the most faithful count on held-out photos (docs/benchmarks.md, Faithfulness)
    candidates: int = option(24, low=0, help="iterated-gradcam: at each step, blur each of Grad-CAM's top N patches "
                                             "alone and remove those whose loss lowers the class probability most "
                                             "(N forward passes per step; 0: Grad-CAM's order, much faster)")
    rise_masks: int = option(1000, flag="--masks", low=1, help="RISE: random masks per image")
    rise_cells: int = option(7, low=2, help="RISE: side of the masks' coarse grid (cells per side)")
    rise_p: float = option(0.5, low=0, low_open=True, high=1, help="RISE: probability that a cell is kept")
    layer: list[str] | None = option(None, sep="+", help="Grad-CAM cut point(s) or module path(s); 'a+b' sums "
                                                         "several, each scaled to max 1 (default: the model's own, "
                                                         "from its registry entry, else its last spatial map)")


class SaliencyMethod:
    """A saliency method: `attribute(backbone, x (B,C,H,W) in [0,1], targets (B,)) -> (B,H,W) ≥ 0`. The backbone
    comes back with its mode and requires_grad flags unchanged; x is not modified."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    # it queries the model with the faithfulness panel's own perturbation (blurred patches): marked on leaderboards
    queries_panel: ClassVar[bool] = False

    @classmethod
    def from_options(cls, o: SaliencyOptions) -> "SaliencyMethod":
        return cls()

    def layers(self) -> Sequence[str]:
        """Cut points the method reads (checked before any work)."""
        return ()

    def settings(self) -> dict:
        """What its maps depend on (the internal batch size, a memory knob, is left out)."""
        return {"name": self.name, **{k: v.settings() if isinstance(v, SaliencyMethod) else v
                                      for k, v in sorted(vars(self).items()) if k != "batch"}}

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


class _Layered(SaliencyMethod):
    """A method that reads cut points (`layers`; default: the model's own, from its registry entry)."""

    def __init__(self, layers: Sequence[str] | None = None):
        self.layer_names = list(layers) if layers else None

    @classmethod
    def from_options(cls, o):
        return cls(o.layer)

    def layers(self):
        return self.layer_names or ()


@register
class GradCam(_Layered):
    name = "gradcam"
    help = ("Grad-CAM (Selvaraju et al. 2017) at the model's last maps (its registry entry says where: Lite "
            "head+block6; --layer to change: a named cut point or any module path, e.g. layer4)")

    def _maps(self, backbone, x, targets):
        return gradcam(backbone, x, targets, self.layer_names or cam_layers(backbone))


@register
class Occlusion(SaliencyMethod):
    queries_panel = True  # it blurs patches and reads the class probability, as deletion does
    name = "occlusion"
    help = "score drop when 32×32 patches are replaced by a blurred copy (Zeiler & Fergus 2014)"

    def __init__(self, window: int = 32, stride: int = 16, blur_sigma: float = 10.0, batch: int = 32):
        self.window, self.stride, self.blur_sigma, self.batch = window, stride, blur_sigma, batch

    @classmethod
    def from_options(cls, o):
        return cls(o.occlusion_window, o.occlusion_stride, o.blur_sigma, o.internal_batch_size)

    def _maps(self, backbone, x, targets):
        import captum.attr as ca

        w = min(self.window, *x.shape[-2:])  # a patch no larger than the image (a 28×28 digit, say)
        s, c = min(self.stride, w), x.shape[1]
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


@register
class IteratedGradCam(GradCam):
    queries_panel = True  # it blurs patches and reads the class probability, as deletion does
    name = "iterated-gradcam"
    help = ("Grad-CAM re-read as the evidence is removed: in --stages steps, the patches (a 14×14 grid) that a fresh "
            "Grad-CAM of what is left ranks highest are blurred away; a pixel's value is the step that removed its "
            "patch (earlier is higher) plus that step's Grad-CAM; patches Grad-CAM never marks stay at 0. A second "
            "object of the class, or a part the first read hid, comes up once the first is gone")

    def __init__(self, layers: Sequence[str] | None = None, stages: int = 14, blur_sigma: float = 10.0,
                 candidates: int = 24, batch: int = 32):
        super().__init__(layers)
        self.stages, self.blur_sigma, self.candidates, self.batch = stages, blur_sigma, candidates, batch

    @classmethod
    def from_options(cls, o):
        return cls(o.layer, o.stages, o.blur_sigma, o.candidates, o.internal_batch_size)

    def _maps(self, backbone, x, targets):
        B, _, H, W = x.shape
        p = patch_size(x)
        gh, gw = H // p, W // p
        n = gh * gw
        base, layers = blurred(x.detach(), self.blur_sigma), self.layer_names or cam_layers(backbone)
        removed = torch.zeros(B, n, dtype=torch.bool, device=x.device)
        out = torch.zeros(B, H, W, device=x.device)
        cuts = [round(n * k / self.stages) for k in range(self.stages + 1)]
        for k in range(self.stages):
            need = (cuts[k + 1] - removed.sum(1)).clamp(min=0)  # this step's share, per image
            if int(need.max()) == 0:
                continue
            mask = _on_pixels(removed.float(), gh, gw, p, H, W)
            seen = (x.detach() * (1 - mask) + base * mask).requires_grad_(True)
            cam = unit(gradcam(backbone, seen, targets, layers).detach())
            score = F.avg_pool2d(cam[:, None], p).flatten(1).masked_fill(removed, -1.0)
            values, top = score.topk(max(int(need.max()), min(self.candidates, n)), dim=1)
            if self.candidates:  # Grad-CAM proposes, the class probability with each one blurred alone decides
                values, top = self._by_probability(backbone, seen.detach(), base, targets, values, top, (gh, gw, p))
            # only patches with evidence are removed: where Grad-CAM is 0 there is no order to give (an order by
            # position would not depend on the model); such patches stay tied at 0
            take = (torch.arange(top.shape[1], device=x.device)[None] < need[:, None]) & (values > 0)
            now = torch.zeros_like(removed).scatter_(1, top, take)
            if self.candidates:  # within the step, the order the probabilities gave
                rank = 1 - torch.arange(top.shape[1], device=x.device, dtype=out.dtype) / top.shape[1]
                within = torch.zeros(B, n, device=x.device).scatter_(1, top, rank.expand_as(top).contiguous())
                within = _on_pixels(within, gh, gw, p, H, W)[:, 0]
            else:
                within = cam
            # pixels of the patches removed now: (steps left) + the order within the step (this step's map, or the
            # probabilities' order), so a patch's mean keeps the order
            out += _on_pixels(now.float(), gh, gw, p, H, W)[:, 0] * (self.stages - k + within)
            removed |= now
        return out


    def _by_probability(self, backbone, seen, base, targets, values, top, grid):
        """The candidates (B, N) reordered by the class probability once each is blurred alone, lowest first;
        a candidate Grad-CAM gave no evidence (value ≤ 0) stays last and keeps its value."""
        gh, gw, p = grid
        B, N = top.shape
        H, W = seen.shape[-2:]
        probs = torch.empty(B, N, device=seen.device)
        with torch.no_grad():
            for b in range(B):
                one = torch.zeros(N, gh * gw, device=seen.device).scatter_(1, top[b][:, None], 1.0)
                for i in range(0, N, self.batch):
                    m = _on_pixels(one[i:i + self.batch], gh, gw, p, H, W)
                    probs[b, i:i + len(m)] = backbone(seen[b:b + 1] * (1 - m) + base[b:b + 1] * m).float() \
                        .softmax(1)[:, targets[b]]
        probs = probs.masked_fill(values <= 0, float("inf"))
        order = probs.argsort(dim=1)
        return values.gather(1, order), top.gather(1, order)


def _on_pixels(patches: torch.Tensor, gh: int, gw: int, p: int, H: int, W: int) -> torch.Tensor:
    """(B, gh·gw) patch values → (B,1,H,W), the pixels past the grid 0."""
    m = patches.view(-1, 1, gh, gw).repeat_interleave(p, 2).repeat_interleave(p, 3)
    return F.pad(m, (0, W - gw * p, 0, H - gh * p))


class _LayerCam(_Layered):
    """A class activation map read at cut points (`layers`, default the model's): one map per layer upsampled to the
    image, several summed after scaling each to max 1 (as Grad-CAM's)."""

    needs_gradients = True
    # the method's weights assume activations ≥ 0 (after a ReLU): at a layer where more than this share is negative
    # (a linear bottleneck) a default layer is left out, and a layer the user names gets a warning
    nonnegative: ClassVar[bool] = False
    NEGATIVE_SHARE: ClassVar[float] = 0.01

    def _maps(self, backbone, x, targets):
        import warnings

        names = self.layer_names or cam_layers(backbone)
        backbone.check_layers(names)
        maps = []
        for i, layer in enumerate(names):
            acts, grads = activations_and_gradients(backbone, x, targets, layer, self.needs_gradients)
            negative = float((acts < 0).float().mean()) if self.nonnegative else 0.0
            if negative > self.NEGATIVE_SHARE:
                if not self.layer_names and (maps or i < len(names) - 1):
                    continue  # a default layer where the method does not hold: the others suffice
                warnings.warn(f"{self.name} assumes non-negative activations; {negative:.0%} of {layer}'s are "
                              "negative, so its weights there are not meaningful (use a layer after a ReLU)",
                              stacklevel=2)
            cam = self._cam(backbone, x, targets, acts, grads).clamp(min=0)
            maps.append(F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0])
        return maps[0] if len(maps) == 1 else sum(unit(m) for m in maps)

    def _cam(self, backbone, x, targets, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """(B,h,w) from a layer's activations and the target score's gradients (B,K,h,w)."""
        raise NotImplementedError


@register
class GradCamPlusPlus(_LayerCam):
    name = "gradcam++"
    help = ("Grad-CAM++ (Chattopadhay et al. 2018): positive gradients weighted per position (--layer as gradcam; "
            "the model's layers with non-negative activations only)")
    nonnegative = True

    def _cam(self, backbone, x, targets, acts, grads):
        g2 = grads ** 2
        alpha = g2 / (2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g2 * grads + 1e-7)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        weights = (alpha * grads.clamp(min=0)).sum(dim=(2, 3), keepdim=True)
        return (weights * acts).sum(dim=1)


@register
class LayerCam(_LayerCam):
    name = "layercam"
    help = "LayerCAM (Jiang et al. 2021): activations times their positive gradients, position by position"

    def _cam(self, backbone, x, targets, acts, grads):
        return (grads.clamp(min=0) * acts).sum(dim=1)


@register
class ScoreCam(_LayerCam):
    name = "scorecam"
    help = ("Score-CAM (Wang et al. 2020): each channel's map, scaled to [0,1], masks the image; the class "
            "probability of each masked image weights that channel (one forward pass per channel, batched)")

    needs_gradients = False

    def __init__(self, layers: Sequence[str] | None = None, batch: int = 32):
        super().__init__(layers)
        self.batch = batch

    @classmethod
    def from_options(cls, o):
        return cls(o.layer, o.internal_batch_size)

    def _cam(self, backbone, x, targets, acts, grads):
        masks = F.interpolate(acts, size=x.shape[-2:], mode="bilinear", align_corners=False)
        low = masks.flatten(2).amin(dim=2)[..., None, None]
        high = masks.flatten(2).amax(dim=2)[..., None, None]
        masks = (masks - low) / (high - low).clamp(min=1e-12)  # (B,K,H,W), a flat channel masks everything out
        weights = torch.empty(acts.shape[:2], device=acts.device)
        with torch.no_grad():
            for b in range(len(x)):
                for k in range(0, masks.shape[1], self.batch):
                    m = masks[b, k:k + self.batch, None]  # (n,1,H,W)
                    weights[b, k:k + len(m)] = backbone(x[b:b + 1] * m).softmax(dim=1)[:, targets[b]]
        return (weights[..., None, None] * acts).sum(dim=1)


@register
class Rise(SaliencyMethod):
    name = "rise"
    help = ("RISE (Petsiuk et al. 2018): the class probability of the image under --masks random coarse masks "
            "(seeded), each mask weighted by it; model-agnostic, one forward pass per mask, batched")

    def __init__(self, masks: int = 1000, cells: int = 7, p: float = 0.5, seed: int = 0, batch: int = 32):
        self.masks, self.cells, self.p, self.seed, self.batch = masks, cells, p, seed, batch

    @classmethod
    def from_options(cls, o):
        return cls(o.rise_masks, o.rise_cells, o.rise_p, o.noise_seed, o.internal_batch_size)

    def random_masks(self, n: int, size: tuple[int, int], g: torch.Generator) -> torch.Tensor:
        """n smooth masks (n,1,H,W) in [0,1]: a coarse binary grid, upsampled bilinearly, shifted at random by up
        to one cell (the paper's construction)."""
        H, W = size
        ch, cw = -(-H // self.cells), -(-W // self.cells)
        grid = (torch.rand(n, 1, self.cells, self.cells, generator=g) < self.p).float()
        up = F.interpolate(grid, size=((self.cells + 1) * ch, (self.cells + 1) * cw), mode="bilinear",
                           align_corners=False)
        dy, dx = torch.randint(0, ch, (n,), generator=g), torch.randint(0, cw, (n,), generator=g)
        return torch.stack([up[i, :, dy[i]:dy[i] + H, dx[i]:dx[i] + W] for i in range(n)])

    def _maps(self, backbone, x, targets):
        g = torch.Generator().manual_seed(self.seed)  # the same masks for every image and every call
        out = torch.zeros(len(x), *x.shape[-2:], device=x.device)
        with torch.no_grad():
            for start in range(0, self.masks, self.batch):
                m = self.random_masks(min(self.batch, self.masks - start), x.shape[-2:], g).to(x.device)
                for b in range(len(x)):
                    probs = backbone(x[b:b + 1].detach() * m).softmax(dim=1)[:, targets[b]]
                    out[b] += (probs[:, None, None] * m[:, 0]).sum(dim=0)
        return out / (self.masks * self.p)


@register
class InputXGradient(SaliencyMethod):
    name = "input-x-gradient"
    help = "the image times the gradient of the class score (Shrikumar et al. 2016), |sum over channels|"

    def _maps(self, backbone, x, targets):
        import captum.attr as ca

        return ca.InputXGradient(backbone).attribute(x, target=targets).sum(dim=1).abs()


@register
class EdgeMap(SaliencyMethod):
    """A control for the sanity checks, not an explanation: it never looks at the model."""

    name = "edges"
    help = ("CONTROL, not an explanation: the image's edge map (Sobel gradient magnitude of its grey level); it "
            "ignores the model, so the model-randomization check must fail it")

    def _maps(self, backbone, x, targets):
        grey = x.detach().mean(1, keepdim=True)
        kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=x.device, dtype=x.dtype).view(1, 1, 3, 3)
        padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
        gx, gy = F.conv2d(padded, kx), F.conv2d(padded, kx.transpose(-1, -2))
        return (gx ** 2 + gy ** 2).sqrt()[:, 0]


@register
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


def activations_and_gradients(backbone: Backbone, x: torch.Tensor, targets: torch.Tensor, layer: str,
                              gradients: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A cut point's activations (B,K,h,w) and (with `gradients`) those of each image's target score with respect
    to them."""
    with capture(backbone.net, {"a": backbone.resolve(layer)}, stop_early=not gradients) as store:
        if gradients:
            score = backbone(x).gather(1, targets.view(-1, 1)).sum()
        else:
            with torch.no_grad():
                run_until_captured(backbone.net, backbone.normalize(x))
    acts = store["a"]
    if acts.ndim != 4:
        raise CnnlabError(f"a class activation map needs a spatial layer; {layer} gives {tuple(acts.shape)}")
    grads = torch.autograd.grad(score, acts)[0].detach() if gradients else None
    return acts.detach(), grads


def method(name: str, options: SaliencyOptions | None = None) -> SaliencyMethod:
    """The registered method `name`, built from the options."""
    if name not in METHODS:
        raise CnnlabError(f"unknown saliency method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name].from_options(options or SaliencyOptions())


def result_settings(cfg: SaliencyOptions, methods: Sequence[SaliencyMethod], drop: Sequence[str] = ()) -> dict:
    """A job's settings as far as its results depend on them: the methods' own settings instead of every method's
    option, so that a rerun with another method's option changed still reuses the committed results."""
    options = {f.name for f in fields(SaliencyOptions)} | set(drop)
    return {"job": {k: v for k, v in cfg.to_dict().items() if k not in options},
            "methods": [m.settings() for m in methods]}


def attribute(backbone: Backbone, x: torch.Tensor, target, name: str = "vanilla",
              options: SaliencyOptions | None = None) -> torch.Tensor:
    """Saliency maps (B,H,W) of images x (B,C,H,W) in [0,1], one target class per image."""
    return method(name, options).attribute(backbone, x, target)


def methods_help() -> str:
    """Each method's help, with the measured outcome of its sanity check (docs/benchmarks.md)."""
    from .sanity import verdict

    def text(name: str, cls) -> str:
        star = "★ RECOMMENDED (the most faithful measured on held-out photos). " if name == RECOMMENDED else ""
        return f"{star}{cls.help}{'. ' + verdict(name) if verdict(name) else ''}"

    return registry_help({name: text(name, cls) for name, cls in METHODS.items()})


def cam_layers(backbone: Backbone) -> list[str]:
    """Where Grad-CAM reads when not told: the model's registry entry, else the last spatial map of its pass."""
    return list(backbone.cam_layers) if backbone.cam_layers else [backbone.last_spatial_layer()]


def blurred(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A strongly blurred copy: the 'absent' image for occlusion and deletion/insertion metrics."""
    from torchvision.transforms.functional import gaussian_blur

    k = int(2 * round(3 * sigma) + 1)
    k = min(k, 2 * (min(x.shape[-2:]) // 2) - 1)
    return gaussian_blur(x, [k, k], [sigma, sigma])


def patch_size(x: torch.Tensor) -> int:
    """The patch of a 14×14 grid over the image (16 pixels at 224, 2 on a 28-pixel digit): deletion's and
    insertion's, and iterated-gradcam's."""
    return max(1, round(min(x.shape[-2:]) / 14))


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
