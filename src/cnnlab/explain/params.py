"""Image parameterizations for feature visualization, one registered class each (`PARAMS`).

- `pixel`: the image's pixels themselves, updated by the report's rule (Q3.8): a gradient step of fixed L2 norm,
  an L2 penalty on the normalized image, a Gaussian blur every few steps, clamping to [0,1].
- `fourier`: lucid's (Olah et al. 2017): the image is the inverse real FFT of a spectrum scaled by 1/frequency (so
  every frequency moves at the same rate, and high frequencies, which the model's gradient favours, do not win),
  its colours decorrelated with ImageNet's colour covariance, squashed by a sigmoid into [0,1]; Adam updates the
  spectrum.

Both make a batch of B images (B,C,H,W) in [0,1] and can start from given images (DeepDream on a photo).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..core.config import option
from ..core.parts import Part, Registry

PARAMS = Registry("parameterization")

# The square root of ImageNet's RGB covariance, as lucid measured it (lucid.optvis.param.color). Its columns are
# scaled to unit max norm so that decorrelated unit noise stays in range.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()
_FFT_MAGIC = 4.0  # lucid's scale of the spatial image before the sigmoid


register = PARAMS.register


def decorrelate(x: torch.Tensor) -> torch.Tensor:
    """Decorrelated colour space → RGB (a linear map per pixel); identity for one channel."""
    if x.shape[1] != 3:
        return x
    return torch.einsum("ij,bjhw->bihw", COLOR_CORRELATION.to(x), x)


def correlate(x: torch.Tensor) -> torch.Tensor:
    """The inverse of `decorrelate`."""
    if x.shape[1] != 3:
        return x
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(COLOR_CORRELATION.double()).to(x), x)


def frequency_scale(h: int, w: int, decay: float = 1.0) -> torch.Tensor:
    """(H, W//2+1): 1/frequency^decay of each coefficient of a real FFT, the lowest frequency floored at 1/max(H,W)."""
    fy = torch.fft.fftfreq(h).view(-1, 1)
    fx = torch.fft.rfftfreq(w).view(1, -1)
    freq = (fx ** 2 + fy ** 2).sqrt()
    return 1.0 / freq.clamp(min=1.0 / max(h, w)) ** decay


def spectrum_to_image(spectrum: torch.Tensor, size: tuple[int, int], decay: float = 1.0,
                      colour: bool = True) -> torch.Tensor:
    """A complex spectrum (B,C,H,W//2+1) → the image (B,C,H,W) in (0,1): scale by 1/frequency, inverse FFT,
    decorrelate colours, sigmoid."""
    h, w = size
    spatial = torch.fft.irfft2(spectrum * frequency_scale(h, w, decay).to(spectrum.device), s=(h, w), norm="ortho")
    spatial = spatial / _FFT_MAGIC
    return torch.sigmoid(decorrelate(spatial) if colour else spatial)


def image_to_spectrum(image: torch.Tensor, decay: float = 1.0, colour: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """The spectrum whose image is `image` (B,C,H,W) in [0,1] (clipped to [eps, 1-eps]): `spectrum_to_image`'s
    inverse."""
    h, w = image.shape[-2:]
    logits = torch.logit(image.clamp(eps, 1 - eps))
    spatial = (correlate(logits) if colour else logits) * _FFT_MAGIC
    return torch.fft.rfft2(spatial, norm="ortho") / frequency_scale(h, w, decay).to(image.device)


@dataclass
class Param(Part):
    """An image parameterization (its options are its fields): `start` makes a batch of images' parameters, then
    `image()` draws them and `step()` updates them."""

    default_lr: ClassVar[float]
    lr: float | None = option(None, low=0, low_open=True,
                              help="step size (default: the parameterization's: pixel 1.0, the L2 norm of a step in "
                                   "[0,1] pixel units; fourier 0.05, Adam's)")

    def start(self, shape: tuple[int, ...], generator: torch.Generator, device, init: torch.Tensor | None = None,
              normalize=None) -> "Param":
        """A copy holding the parameters of a batch of `shape` (noise from `generator`, or the images `init`);
        `normalize` is the model's input normalization (what an L2 penalty reads)."""
        state = copy.copy(self)
        state._start(shape, generator, device, init, normalize or (lambda t: t))
        return state

    def _start(self, shape, generator, device, init, normalize) -> None:
        raise NotImplementedError

    def image(self) -> torch.Tensor:
        """(B,C,H,W) in [0,1], differentiable w.r.t. the parameters."""
        raise NotImplementedError

    def step(self, objective: torch.Tensor, it: int) -> None:
        """Ascend `objective` (a scalar computed from this step's `image()`); `it` counts steps from 1."""
        raise NotImplementedError


@register
@dataclass
class PixelParam(Param):
    name, default_lr = "pixel", 1.0
    help = ("the pixels themselves, the report's ascent (a step of fixed L2 norm, L2 penalty, periodic blur, "
            "clamping)")
    l2: float = option(0.1, low=0, help="pixel: weight of the L2 penalty on the normalized image")
    blur_every: int = option(10, low=0, help="pixel: blur period in steps (0: never)")
    blur_sigma: float = option(0.5, low=0, help="pixel: blur sigma")

    def _start(self, shape, generator, device, init, normalize) -> None:
        noise = 0.5 + 0.1 * torch.randn(*shape, generator=generator)
        self.x = (noise if init is None else init.detach().cpu().float()).clamp(0, 1).to(device).requires_grad_(True)
        self.normalize = normalize

    def image(self) -> torch.Tensor:
        return self.x

    def step(self, objective: torch.Tensor, it: int) -> None:
        from torchvision.transforms.functional import gaussian_blur

        lr = self.default_lr if self.lr is None else self.lr
        loss = self.l2 * self.normalize(self.x).pow(2).sum() - objective
        (grad,) = torch.autograd.grad(loss, self.x)
        with torch.no_grad():
            norms = grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
            x = (self.x - lr * grad / norms).clamp(0, 1)
            if self.blur_every and it % self.blur_every == 0 and self.blur_sigma > 0:
                x = gaussian_blur(x, [5, 5], [self.blur_sigma, self.blur_sigma])
        self.x = x.requires_grad_(True)


@register
@dataclass
class FourierParam(Param):
    name, default_lr = "fourier", 0.05
    help = ("lucid's: a 1/frequency-scaled spectrum with ImageNet colour decorrelation and a sigmoid, updated by "
            "Adam")
    decorrelate: bool = option(True, negate="--no-decorrelate",
                               help="fourier: decorrelate colours with ImageNet's colour covariance")
    SD: ClassVar[float] = 0.01  # std of the starting spectrum (lucid's)

    def _start(self, shape, generator, device, init, normalize) -> None:
        b, c, h, w = shape
        self.size, self.colour = (h, w), self.decorrelate and c == 3
        if init is None:
            spectrum = torch.complex(*(self.SD * torch.randn(2, b, c, h, w // 2 + 1, generator=generator)))
        else:
            spectrum = image_to_spectrum(init.detach().cpu().float(), colour=self.colour)
        self.spectrum = torch.view_as_real(spectrum).to(device).requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.spectrum], lr=self.default_lr if self.lr is None else self.lr)

    def image(self) -> torch.Tensor:
        return spectrum_to_image(torch.view_as_complex(self.spectrum), self.size, colour=self.colour)

    def step(self, objective: torch.Tensor, it: int) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        (-objective).backward()
        self.optimizer.step()
