"""Targeted (and untargeted) adversarial examples in [0,1] pixel space, judged after 8-bit quantization.

The attacked `model` maps images in [0,1] to logits: a Backbone (normalization inside), or an `ImageModel` that
takes a photo at its own size through each network's own preprocessing (`explain/views.py`). So every bound, step
and clip here is in the pixels of the image that is saved. Success means the *quantized* image (what a saved PNG
holds) is classified as the target (or, untargeted, as anything but the original class): attacks keep iterating
until that is true or the budget runs out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from torch import nn

from ..core.config import Registry
from ..core.errors import CnnlabError
from ..core.hooks import eval_mode, frozen
from ..core.images import quantize

NORMS = ("linf", "l2")
LOSSES = ("logit", "ce")


@dataclass
class AttackResult:
    adversarial: torch.Tensor  # (B,3,H,W), quantized to 8 bits
    success: torch.Tensor  # (B,) bool
    iterations: torch.Tensor  # (B,) gradient steps taken
    pred_before: torch.Tensor
    pred_after: torch.Tensor
    original: torch.Tensor  # the 8-bit quantized input the perturbation is measured from

    def norms(self) -> dict[str, torch.Tensor]:
        """L∞ and L2 of the perturbation in [0,1] pixel units."""
        delta = (self.adversarial - self.original).flatten(1)
        return {"linf": delta.abs().amax(dim=1), "l2": delta.norm(dim=1)}


def _loss(logits: torch.Tensor, target: torch.Tensor | None, original: torch.Tensor, kind: str = "ce"):
    """Per-image objective to *decrease*: CE to the target (or minus the target's logit: the logit loss of Zhao et al.
    2021, which keeps pushing where CE saturates), or minus CE to the original class when untargeted."""
    if target is None:
        return -F.cross_entropy(logits, original, reduction="none")
    if kind == "logit":
        return -logits.gather(1, target.view(-1, 1))[:, 0]
    return F.cross_entropy(logits, target, reduction="none")


def _grad(model, x, target, original, kind: str = "ce", transform=None):
    x = x.detach().requires_grad_(True)
    logits = model(transform(x) if transform is not None else x)
    (g,) = torch.autograd.grad(_loss(logits, target, original, kind).sum(), x)
    return g, logits.detach()


def _fooled(logits: torch.Tensor, target: torch.Tensor | None, original: torch.Tensor) -> torch.Tensor:
    pred = logits.argmax(dim=1)
    return pred == target if target is not None else pred != original


def _project(x0: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    """Into the eps-ball around x0 (per image eps (B,)) and the [0,1] box."""
    d = x - x0
    if norm == "linf":
        e = eps.view(-1, 1, 1, 1)
        d = torch.maximum(torch.minimum(d, e), -e)
    else:
        n = d.flatten(1).norm(dim=1).clamp(min=1e-12)
        d = d * (eps / n).clamp(max=1.0).view(-1, 1, 1, 1)
    return (x0 + d).clamp(0, 1)


def _step(g: torch.Tensor, alpha: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest descent step of size alpha under the norm: sign for L∞ (FGSM), normalized gradient for L2."""
    if norm == "linf":
        return alpha.view(-1, 1, 1, 1) * g.sign()
    return alpha.view(-1, 1, 1, 1) * g / g.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)


class Attack:
    """An attack: its options in the constructor, one call `attack(model, x, target, seed) -> AttackResult`.
    `model` maps images in [0,1] to logits; `target` is one class per image, or None (untargeted)."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    needs_target: ClassVar[bool] = False

    @classmethod
    def from_config(cls, c) -> "Attack":
        """From a `FoolConfig`: the constructor's options that the config names (the same names)."""
        import inspect

        names = [n for n in inspect.signature(cls.__init__).parameters if n != "self" and hasattr(c, n)]
        return cls(**{n: getattr(c, n) for n in names})

    def __call__(self, model: nn.Module, x: torch.Tensor, target, seed: int = 0) -> AttackResult:
        if self.needs_target and target is None:
            raise CnnlabError(f"the {self.name} attack needs a target class")
        dev = getattr(model, "device", None) or next(model.parameters()).device
        x0 = quantize(x.detach().to(dev))
        tgt = None if target is None else torch.as_tensor(target, device=dev).long().view(len(x0))
        with eval_mode(model), frozen(model):
            with torch.no_grad():
                original = model(x0).argmax(dim=1)
            adv, iters = self._run(model, x0, tgt, original, seed)
            with torch.no_grad():
                adv = quantize(adv)
                pred = model(adv).argmax(dim=1)
        success = pred == tgt if tgt is not None else pred != original
        return AttackResult(adv.detach(), success.cpu(), iters.cpu(), original.cpu(), pred.cpu(), x0.detach())

    def _run(self, model, x0, tgt, original, seed) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


ATTACKS = Registry("attack")
register = ATTACKS.register


@register
class Minimal(Attack):
    name = "minimal"
    help = "sign steps inside an L∞ ball that grows 1/255 at a time: the smallest 8-bit change"

    def __init__(self, max_iters: int = 100, step: float | None = None, patience: int = 15):
        self.max_iters, self.step, self.patience = max_iters, step or 0.25 / 255, patience


    def _run(self, model, x0, tgt, original, seed):
        B = len(x0)
        alpha = torch.full((B,), self.step, device=x0.device)
        radius = torch.full((B,), 1 / 255, device=x0.device)
        x, best = x0.clone(), x0.clone()
        done = torch.zeros(B, dtype=torch.bool, device=x0.device)
        iters = torch.zeros(B, dtype=torch.long)
        stuck = torch.zeros(B, dtype=torch.long, device=x0.device)
        for it in range(self.max_iters):
            g, _ = _grad(model, x, tgt, original)
            x = _project(x0, x - _step(g, alpha, "linf"), radius, "linf")
            with torch.no_grad():
                fooled = _fooled(model(quantize(x)), tgt, original)
            new = fooled & ~done
            best[new] = x[new]
            iters[new.cpu()] = it + 1
            done |= fooled
            if done.all():
                break
            stuck = torch.where(done, stuck, stuck + 1)
            grow = (stuck >= self.patience) & ~done
            radius = torch.where(grow, radius + 1 / 255, radius)
            stuck = torch.where(grow, torch.zeros_like(stuck), stuck)
            x = torch.where(done.view(-1, 1, 1, 1), best, x)
        iters[~done.cpu()] = self.max_iters
        return torch.where(done.view(-1, 1, 1, 1), best, x), iters


@register
class Ascent(Attack):
    name = "ascent"
    help = "the report's normalized gradient ascent on the target score (--lr)"
    needs_target = True

    def __init__(self, max_iters: int = 100, lr: float = 1.0):
        self.max_iters, self.lr = max_iters, lr


    def _run(self, model, x0, tgt, original, seed):
        B = len(x0)
        x = x0.clone()
        done = torch.zeros(B, dtype=torch.bool, device=x0.device)
        iters = torch.full((B,), self.max_iters, dtype=torch.long)
        for it in range(self.max_iters + 1):
            with torch.no_grad():
                fooled = _fooled(model(quantize(x)), tgt, original)
            iters[(fooled & ~done).cpu()] = it
            done |= fooled
            if done.all() or it == self.max_iters:
                break
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(model(xg).gather(1, tgt.view(-1, 1)).sum(), xg)
            dx = self.lr * g / g.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
            x = torch.where(done.view(-1, 1, 1, 1), x, (x + dx).clamp(0, 1))
        return x, iters


@register
class PGD(Attack):
    name = "pgd"
    help = "--max-iters projected steps in the --eps ball (Madry et al. 2018)"

    def __init__(self, max_iters: int = 100, eps: float | None = None, norm: str = "linf", step: float | None = None,
                 loss: str | None = None):
        if norm not in NORMS:
            raise CnnlabError(f"unknown norm {norm!r}; choose from {', '.join(NORMS)}")
        if (loss or "ce") not in LOSSES:
            raise CnnlabError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
        self.max_iters, self.norm, self.loss = max_iters, norm, loss or "ce"
        self.eps = eps if eps is not None else (8 / 255 if norm == "linf" else 1.0)
        self.step = step or self.eps / 4


    def _run(self, model, x0, tgt, original, seed):
        B = len(x0)
        eps_t = torch.full((B,), float(self.eps), device=x0.device)
        alpha = torch.full((B,), float(self.step), device=x0.device)
        x = x0.clone()
        done = torch.zeros(B, dtype=torch.bool, device=x0.device)
        iters = torch.full((B,), self.max_iters, dtype=torch.long)
        for it in range(self.max_iters):
            g, _ = _grad(model, x, tgt, original, self.loss)
            x = torch.where(done.view(-1, 1, 1, 1), x, _project(x0, x - _step(g, alpha, self.norm), eps_t, self.norm))
            with torch.no_grad():
                fooled = _fooled(model(quantize(x)), tgt, original)
            iters[(fooled & ~done).cpu()] = it + 1
            done |= fooled
            if done.all():
                break
        return x, iters


@register
class FGSM(PGD):
    name = "fgsm"
    help = "one signed step of size --eps (Goodfellow et al. 2015)"

    def __init__(self, eps: float | None = None, norm: str = "linf", loss: str | None = None):
        super().__init__(1, eps, norm, None, loss)
        self.step = self.eps


@register
class Transfer(Attack):
    name = "transfer"
    help = ("made to fool other models: --max-iters L∞ steps in the --eps ball (default 16/255) with the logit loss, "
            "momentum, input diversity and translation-invariant gradients (--loss, --momentum, --diversity, "
            "--ti-kernel; 0 turns one off)")

    def __init__(self, max_iters: int = 100, eps: float | None = None, step: float | None = None,
                 loss: str | None = None, momentum: float = 1.0, diversity: float = 0.7, ti_kernel: int = 5):
        if (loss or "logit") not in LOSSES:
            raise CnnlabError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
        self.max_iters, self.eps, self.step = max_iters, eps if eps is not None else 16 / 255, step or 2 / 255
        self.loss, self.momentum, self.diversity, self.ti_kernel = loss or "logit", momentum, diversity, ti_kernel


    def _run(self, model, x0, tgt, original, seed):
        B, C = len(x0), x0.shape[1]
        eps_t = torch.full((B,), float(self.eps), device=x0.device)
        alpha = torch.full((B,), float(self.step), device=x0.device)
        g = torch.Generator().manual_seed(seed)
        k = self.ti_kernel
        kernel = _gaussian_kernel(k, C).to(x0) if k > 1 else None
        x, velocity = x0.clone(), torch.zeros_like(x0)
        for _ in range(self.max_iters):
            transform = _diverse(g) if self.diversity > 0 and torch.rand((), generator=g) < self.diversity else None
            grad, _ = _grad(model, x, tgt, original, self.loss, transform)
            if kernel is not None:  # translation invariance: the gradient of a shifted image, averaged over shifts
                grad = F.conv2d(grad, kernel, padding=k // 2, groups=C)
            scale = grad.abs().flatten(1).mean(1).clamp(min=1e-12).view(-1, 1, 1, 1)
            velocity = self.momentum * velocity + grad / scale
            x = _project(x0, x - _step(velocity, alpha, "linf"), eps_t, "linf")
        return x, torch.full((B,), self.max_iters, dtype=torch.long)


METHODS = tuple(ATTACKS)


def attack(model: nn.Module, x: torch.Tensor, target, method: str = "minimal", seed: int = 0,
           **options) -> AttackResult:
    """`ATTACKS[method](**options)(model, x, target, seed)`: one call for a registered attack and its options."""
    if method not in ATTACKS:
        raise CnnlabError(f"unknown attack {method!r}; choose from {', '.join(ATTACKS)}")
    try:
        attacker = ATTACKS[method](**options)
    except TypeError as exc:
        raise CnnlabError(f"attack {method}: {exc}") from None
    return attacker(model, x, target, seed)


def _gaussian_kernel(size: int, channels: int) -> torch.Tensor:
    """A (C,1,k,k) normalized Gaussian spanning ±3σ over its k pixels (the TI attack's kernel)."""
    r = torch.linspace(-3, 3, size)
    k1 = torch.exp(-r ** 2 / 2)
    k2 = torch.outer(k1, k1)
    return (k2 / k2.sum()).expand(channels, 1, size, size).contiguous()


def _diverse(g: torch.Generator):
    """Input diversity: shrink the images by a random factor in [1/1.1, 1] and pad them back to their size at a
    random place (the same draw for the batch)."""
    scale = 1 - torch.rand((), generator=g).item() * (1 - 1 / 1.1)
    u, v = torch.rand(2, generator=g).tolist()

    def transform(x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        h, w = max(1, round(H * scale)), max(1, round(W * scale))
        small = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        top, left = int(u * (H - h)), int(v * (W - w))
        return F.pad(small, (left, W - w - left, top, H - h - top))
    return transform
