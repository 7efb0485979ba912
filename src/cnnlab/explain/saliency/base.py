"""What every saliency method shares: the `SaliencyMethod` base (a registered `Part`), the registry `METHODS`,
options that several methods take (each declared once, as a mixin), and small map helpers."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F

from ...core.backbones import Backbone
from ...core.config import JOIN, SEED_MAX, option
from ...core.parts import Part, Registry
from ...core.hooks import eval_mode, frozen
from ...core.probe import default_cam_layers as cam_layers  # the one home of the default layer (re-exported)

METHODS = Registry("saliency method")


class FlatMapWarning(UserWarning):
    """A saliency map came out flat: it says nothing about where the class is."""


FLAT = 0.05  # a map whose values vary by at most this share of their mean magnitude (std / mean |map|) is flat


def flat_maps(maps: torch.Tensor) -> torch.Tensor:
    """(B,) which maps are flat: constant, or varying by at most FLAT of their mean magnitude (or not finite)."""
    m = maps.detach().float().flatten(1)
    spread = m.std(1) / m.abs().mean(1).clamp(min=1e-12)
    return (spread <= FLAT) | ~torch.isfinite(m).all(1)

register = METHODS.register
BLUR_SIGMA = 10.0  # σ of the blurred copy that stands for 'absent' (occlusion, IG, iterated-gradcam, deletion)


@dataclass
class SaliencyMethod(Part):
    """A saliency method: `attribute(backbone, x (B,C,H,W) in [0,1], targets (B,)) -> (B,H,W) ≥ 0`. The backbone
    comes back with its mode and requires_grad flags unchanged; x is not modified. Its options are its fields."""

    # it queries the model with the faithfulness panel's own perturbation (blurred patches): marked on leaderboards
    queries_panel: ClassVar[bool] = False
    # options that change the cost but not the maps: left out of `settings`
    MEMORY_ONLY: ClassVar[tuple[str, ...]] = ("internal_batch_size",)
    warn_flat: ClassVar[bool] = True  # a flat map is said (a warning naming the method and its layer), never silent
    # an input-only control, not an explanation: ranked beside the methods, never recommended, and when it ranks at
    # or above the best method the leaderboard says that its metrics are dominated by the input
    control: ClassVar[bool] = False

    def layers(self) -> Sequence[str]:
        """Cut points the method reads (checked before any work)."""
        return ()

    def used_layers(self, backbone: Backbone) -> list[str]:
        """The layers it reads on this model, defaults resolved: what a result records ([] for none)."""
        return list(self.layers())

    # it applies to transformers only, or to CNNs only (marked in the app; refused in one line elsewhere)
    transformers_only: ClassVar[bool] = False
    cnns_only: ClassVar[bool] = False

    def check(self, backbone: Backbone) -> None:
        """Everything refused before any work, in one call: a cut point the model lacks (the one layer check:
        `Backbone.check_layers`), then what the method itself cannot take (`check_model`)."""
        backbone.check_layers(list(self.layers()))
        self.check_model(backbone)

    def check_model(self, backbone: Backbone) -> None:
        """A one-line CnnlabError, before any work, where the method cannot apply to this model."""

    def attribute(self, backbone: Backbone, x: torch.Tensor, targets) -> torch.Tensor:
        x = x.detach().to(backbone.device).clone().requires_grad_(True)  # Captum warns otherwise
        targets = torch.as_tensor(targets, device=backbone.device).long().view(-1)
        with eval_mode(backbone), frozen(backbone):
            maps = self._maps(backbone, x, targets).detach()
        flat = flat_maps(maps)
        if flat.any() and self.warn_flat:
            n, layers = int(flat.sum()), self.used_layers(backbone)
            where = f" at {JOIN.join(layers)}" if layers else ""
            cause = self.flat_cause(backbone, x[flat], targets[flat])
            if cause.startswith("nothing there"):
                cause = self.level_cause(backbone, maps[flat], layers) or cause
            warnings.warn(f"{self.name}: the map of {n} of {len(maps)} image(s) is flat{where} (it varies by at most "
                          f"{FLAT:.0%} of its mean): {cause}", FlatMapWarning, stacklevel=2)
        return maps

    def flat_cause(self, backbone: Backbone, x: torch.Tensor, targets: torch.Tensor) -> str:
        """Why maps came out flat, in words: the class score ignoring the image (whatever the method), else the
        method's own reason."""
        from ...core.probe import score_ignores_input

        if score_ignores_input(backbone, x, targets):
            return ("the class score does not depend on the input (its gradient with respect to the image is 0: a "
                    "zero-initialized or constant head?)")
        layers = self.used_layers(backbone)
        return "nothing there supports the class" + (": pass --layer with another block's output" if layers else "")

    @staticmethod
    def level_cause(backbone: Backbone, maps: torch.Tensor, layers: Sequence[str]) -> str | None:
        """For maps that are flat but not zero: the class is supported about equally everywhere at the layer —
        because the model's BatchNorm statistics were never measured (the true cause, said first), or as random
        weights' late activations are."""
        from ...core.probe import unmeasured_norms

        if not (layers and bool((maps.flatten(1).amin(1) > 0).all())):
            return None
        where = f"{JOIN.join(layers)} supports the class about equally at every position"
        norms = unmeasured_norms(backbone.net)
        if norms:
            return (f"{where}: {len(norms)} BatchNorm layer(s) still hold their initial statistics (mean 0, variance "
                    "1: the network never saw data), so they do not center its activations — load trained weights, "
                    "or measure the statistics on your images (train-mode passes under torch.no_grad())")
        return (f"{where} (its activations vary little across the image, as random weights' do): pass --layer with "
                "an earlier block's output")

    def _maps(self, backbone: Backbone, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# ------------------------------------------------------------------------------- options several methods take
@dataclass
class BatchedOption:
    """Images per pass inside a part that runs the model many times (methods and metrics alike)."""

    internal_batch_size: int = option(32, low=1, help="images per pass inside smoothgrad / ig / occlusion / scorecam "
                                                      "/ rise (memory)")


@dataclass
class Batched(SaliencyMethod, BatchedOption):
    pass


@dataclass
class Blurs(SaliencyMethod):
    blur_sigma: float = option(BLUR_SIGMA, low=0, low_open=True,
                               help="the 'absent' image of occlusion and IG: a blurred copy with this σ")


@dataclass
class Seeded(SaliencyMethod):
    noise_seed: int = option(0, low=0, high=SEED_MAX, help="SmoothGrad: seed of its noise (the same maps on every run)")


@dataclass
class Layered(SaliencyMethod):
    """A method that reads cut points (default: the model's own, from its registry entry)."""

    layer: list[str] | None = option(None, sep=JOIN, help="Grad-CAM cut point(s) or module path(s); 'a+b' sums "
                                                         "several, each scaled to max 1 (default: the model's own, "
                                                         "from its registry entry, else its last spatial map)")

    def layers(self):
        return self.layer or ()

    def used_layers(self, backbone: Backbone) -> list[str]:
        return list(self.layer or cam_layers(backbone))


# ------------------------------------------------------------------------------------------------- helpers


def blurred(x: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
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


def upsampled(maps: torch.Tensor, size) -> torch.Tensor:
    """(B,h,w) maps → (B,H,W), bilinear."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def predicted(backbone: Backbone, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), eval_mode(backbone):
        return backbone(x.to(backbone.device)).argmax(dim=1)
