"""Targeted (and untargeted) adversarial examples in [0,1] pixel space, judged after 8-bit quantization.

The attacked `model` maps images in [0,1] to logits: a Backbone (normalization inside), or an `ImageModel` that
takes a photo at its own size through each network's own preprocessing (`explain/views.py`). So every bound, step
and clip here is in the pixels of the image that is saved. Success means the *quantized* image (what a saved PNG
holds) is classified as the target (or, untargeted, as anything but the original class): attacks keep iterating
until that is true or the budget runs out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import torch
import torch.nn.functional as F

from torch import nn

from ..core.config import option
from ..core.parts import Part, Registry
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


def fooled(pred: torch.Tensor, target: torch.Tensor | None, original: torch.Tensor) -> torch.Tensor:
    """The one success test: the prediction is the target (targeted), or is no longer the original class."""
    return pred == target if target is not None else pred != original


def _fooled(logits: torch.Tensor, target: torch.Tensor | None, original: torch.Tensor) -> torch.Tensor:
    return fooled(logits.argmax(dim=1), target, original)


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


@dataclass
class Attack(Part):
    """An attack, its options its fields: one call `attack(model, x, target, seed) -> AttackResult`. `model` maps
    images in [0,1] to logits; `target` is one class per image, or None (untargeted)."""

    needs_target: ClassVar[bool] = False

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
        success = fooled(pred, tgt, original)
        return AttackResult(adv.detach(), success.cpu(), iters.cpu(), original.cpu(), pred.cpu(), x0.detach())

    def _run(self, model, x0, tgt, original, seed) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    BUDGET: ClassVar[tuple[str, ...]] = ("max_iters", "eps")  # the options that bound what an attack may try

    def advice(self) -> str:
        """What to raise when an image was not fooled: this attack's budget options, with their values."""
        from ..core.config import flag_of, part_fields

        knobs = [f"{flag_of(f)} (now {getattr(self, f.name) if getattr(self, f.name) is not None else 'its default'})"
                 for f in part_fields(type(self)) if f.name in self.BUDGET]
        raise_them = f"raise {' or '.join(knobs)}" if knobs else "try another --method"
        return raise_them + ("" if self.name == "pgd" else ", or try --method pgd")


# ------------------------------------------------------------------------------- options several attacks take
@dataclass
class Iterations(Attack):
    max_iters: int = option(100, low=1, help="gradient steps at most (transfer: exactly)")


@dataclass
class Stepped(Attack):
    step: float | None = option(None, low=0, low_open=True,
                                help="step size in pixel units (default: minimal 0.25/255, pgd eps/4, transfer 2/255)")


@dataclass
class Bounded(Attack):
    eps: float | None = option(None, low=0, low_open=True,
                               help="fgsm/pgd/transfer bound in [0,1] pixel units (default 8/255 for L∞, 1.0 for L2; "
                                    "transfer 16/255)")
    loss: str | None = option(None, choices=LOSSES, help="pgd/fgsm/transfer objective (default: ce; logit for transfer)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if getattr(self, "norm", "linf") == "linf" and self.eps is not None and self.eps > 1:
            raise CnnlabError(f"--eps must be in (0, 1] for the L∞ norm (pixel units), got {self.eps}")


@dataclass
class Normed(Attack):
    norm: str = option("linf", choices=NORMS, help="fgsm/pgd norm")


ATTACKS = Registry("attack")
register = ATTACKS.register


@register
@dataclass
class Minimal(Iterations, Stepped):
    name = "minimal"
    help = "sign steps inside an L∞ ball that grows 1/255 at a time: the smallest 8-bit change"
    patience: int = 15  # steps without success before the ball grows

    def _run(self, model, x0, tgt, original, seed):
        B = len(x0)
        alpha = torch.full((B,), self.step or 0.25 / 255, device=x0.device)
        radius = torch.full((B,), 1 / 255, device=x0.device)
        x, best = x0.clone(), x0.clone()
        done = torch.zeros(B, dtype=torch.bool, device=x0.device)
        iters = torch.zeros(B, dtype=torch.long)
        stuck = torch.zeros(B, dtype=torch.long, device=x0.device)
        for it in range(self.max_iters):
            g, _ = _grad(model, x, tgt, original)
            x = _project(x0, x - _step(g, alpha, "linf"), radius, "linf")
            with torch.no_grad():
                now = _fooled(model(quantize(x)), tgt, original)
            new = now & ~done
            best[new] = x[new]
            iters[new.cpu()] = it + 1
            done |= now
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
@dataclass
class Ascent(Iterations):
    name = "ascent"
    help = "the report's normalized gradient ascent on the target score (--lr)"
    needs_target = True
    lr: float = option(1.0, low=0, low_open=True, help="ascent step (L2 norm, pixel units)")

    def _run(self, model, x0, tgt, original, seed):
        B = len(x0)
        x = x0.clone()
        done = torch.zeros(B, dtype=torch.bool, device=x0.device)
        iters = torch.full((B,), self.max_iters, dtype=torch.long)
        for it in range(self.max_iters + 1):
            with torch.no_grad():
                now = _fooled(model(quantize(x)), tgt, original)
            iters[(now & ~done).cpu()] = it
            done |= now
            if done.all() or it == self.max_iters:
                break
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(model(xg).gather(1, tgt.view(-1, 1)).sum(), xg)
            dx = self.lr * g / g.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
            x = torch.where(done.view(-1, 1, 1, 1), x, (x + dx).clamp(0, 1))
        return x, iters


def _pgd(model, x0, tgt, original, eps: float, step: float, iterations: int, norm: str, loss: str):
    """`iterations` projected steps of size `step` in the `eps` ball, each image stopping once it is fooled."""
    B = len(x0)
    eps_t = torch.full((B,), float(eps), device=x0.device)
    alpha = torch.full((B,), float(step), device=x0.device)
    x = x0.clone()
    done = torch.zeros(B, dtype=torch.bool, device=x0.device)
    iters = torch.full((B,), iterations, dtype=torch.long)
    for it in range(iterations):
        g, _ = _grad(model, x, tgt, original, loss)
        x = torch.where(done.view(-1, 1, 1, 1), x, _project(x0, x - _step(g, alpha, norm), eps_t, norm))
        with torch.no_grad():
            now = _fooled(model(quantize(x)), tgt, original)
        iters[(now & ~done).cpu()] = it + 1
        done |= now
        if done.all():
            break
    return x, iters


@register
@dataclass
class PGD(Iterations, Stepped, Bounded, Normed):
    name = "pgd"
    help = "--max-iters projected steps in the --eps ball (Madry et al. 2018)"

    def _run(self, model, x0, tgt, original, seed):
        eps = self.eps if self.eps is not None else (8 / 255 if self.norm == "linf" else 1.0)
        return _pgd(model, x0, tgt, original, eps, self.step or eps / 4, self.max_iters, self.norm, self.loss or "ce")


@register
@dataclass
class FGSM(Bounded, Normed):
    name = "fgsm"
    help = "one signed step of size --eps (Goodfellow et al. 2015)"

    def _run(self, model, x0, tgt, original, seed):
        eps = self.eps if self.eps is not None else (8 / 255 if self.norm == "linf" else 1.0)
        return _pgd(model, x0, tgt, original, eps, eps, 1, self.norm, self.loss or "ce")


@register
@dataclass
class Transfer(Iterations, Stepped, Bounded):
    name = "transfer"
    help = ("made to fool other models: --max-iters L∞ steps in the --eps ball (default 16/255) with the logit loss, "
            "momentum, input diversity and translation-invariant gradients (--loss, --momentum, --diversity, "
            "--ti-kernel; 0 turns one off)")
    momentum: float = option(1.0, low=0, help="transfer: momentum of the gradient (MI-FGSM; 0 = off)")
    diversity: float = option(0.7, low=0, high=1, help="transfer: probability of a random shrink-and-pad per step "
                                                       "(input diversity; 0 = off)")
    ti_kernel: int = option(5, low=0, help="transfer: side of the Gaussian that smooths the gradient (translation "
                                           "invariance; 0 = off)")


    def _run(self, model, x0, tgt, original, seed):
        B, C = len(x0), x0.shape[1]
        eps_t = torch.full((B,), float(self.eps if self.eps is not None else 16 / 255), device=x0.device)
        alpha = torch.full((B,), float(self.step or 2 / 255), device=x0.device)
        g = torch.Generator().manual_seed(seed)
        k = self.ti_kernel
        kernel = _gaussian_kernel(k, C).to(x0) if k > 1 else None
        x, velocity = x0.clone(), torch.zeros_like(x0)
        for _ in range(self.max_iters):
            transform = _diverse(g) if self.diversity > 0 and torch.rand((), generator=g) < self.diversity else None
            grad, _ = _grad(model, x, tgt, original, self.loss or "logit", transform)
            if kernel is not None:  # translation invariance: the gradient of a shifted image, averaged over shifts
                grad = F.conv2d(grad, kernel, padding=k // 2, groups=C)
            scale = grad.abs().flatten(1).mean(1).clamp(min=1e-12).view(-1, 1, 1, 1)
            velocity = self.momentum * velocity + grad / scale
            x = _project(x0, x - _step(velocity, alpha, "linf"), eps_t, "linf")
        return x, torch.full((B,), self.max_iters, dtype=torch.long)


METHODS = tuple(ATTACKS)


def attack(model: nn.Module, x: torch.Tensor, target, method: str = "minimal", seed: int = 0,
           options: Mapping | None = None, **kw) -> AttackResult:
    """`ATTACKS.build(method, options)(model, x, target, seed)`: one call for a registered attack and its options."""
    return ATTACKS.build(method, {**(options or {}), **kw})(model, x, target, seed)


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
