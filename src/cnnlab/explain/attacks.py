"""Targeted (and untargeted) adversarial examples in [0,1] pixel space, judged after 8-bit quantization.

Normalization lives inside the backbone, so every bound, step and clip here is in pixel units.
Success means the *quantized* image (what a saved PNG holds) is classified as the target (or, untargeted,
as anything but the original class): attacks keep iterating until that is true or the budget runs out.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.backbones import Backbone
from ..core.errors import CnnlabError
from ..core.hooks import eval_mode, frozen
from ..core.images import quantize

METHODS = ("minimal", "ascent", "fgsm", "pgd")
NORMS = ("linf", "l2")


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


def _loss(backbone: Backbone, x: torch.Tensor, target: torch.Tensor | None, original: torch.Tensor):
    """Per-image objective to *decrease*: CE to the target, or minus CE to the original class."""
    logits = backbone(x)
    if target is not None:
        return F.cross_entropy(logits, target, reduction="none"), logits
    return -F.cross_entropy(logits, original, reduction="none"), logits


def _grad(backbone, x, target, original):
    x = x.detach().requires_grad_(True)
    loss, logits = _loss(backbone, x, target, original)
    (g,) = torch.autograd.grad(loss.sum(), x)
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


def attack(backbone: Backbone, x: torch.Tensor, target: torch.Tensor | list[int] | None, method: str = "minimal",
           max_iters: int = 100, lr: float = 1.0, eps: float | None = None, norm: str = "linf",
           step: float | None = None, patience: int = 15) -> AttackResult:
    """Fool `backbone` on images x (B,3,H,W) in [0,1].

    method:
      minimal — sign steps of `step` (default 0.25/255) inside an L∞ ball whose radius starts at 1/255 and grows
                by 1/255 after `patience` steps without success: the smallest 8-bit change that fools.
      ascent  — the report's (cs231n): x += lr · g/‖g‖₂ on the target score until the quantized image fools.
      fgsm    — one step of size eps (Goodfellow et al. 2015).
      pgd     — `max_iters` steps of size `step` (default eps/4) projected into the eps-ball (Madry et al. 2018).
    target: one class per image, or None for untargeted (fgsm/pgd/minimal).
    """
    if method not in METHODS:
        raise CnnlabError(f"unknown attack {method!r}; choose from {', '.join(METHODS)}")
    if norm not in NORMS:
        raise CnnlabError(f"unknown norm {norm!r}; choose from {', '.join(NORMS)}")
    if method == "ascent" and target is None:
        raise CnnlabError("the ascent method needs a target class")
    if method in ("fgsm", "pgd") and eps is None:
        eps = 8 / 255 if norm == "linf" else 1.0
    dev = backbone.device
    x0 = quantize(x.detach().to(dev))
    B = len(x0)
    tgt = None if target is None else torch.as_tensor(target, device=dev).long().view(B)
    with eval_mode(backbone), frozen(backbone):
        with torch.no_grad():
            original = backbone(x0).argmax(dim=1)
        run = {"minimal": _minimal, "ascent": _ascent, "fgsm": _pgd, "pgd": _pgd}[method]
        kwargs = dict(max_iters=1 if method == "fgsm" else max_iters, lr=lr, eps=eps, norm=norm, step=step,
                      patience=patience, single=method == "fgsm")
        adv, iters = run(backbone, x0, tgt, original, **kwargs)
        with torch.no_grad():
            adv = quantize(adv)
            pred = backbone(adv).argmax(dim=1)
    success = pred == tgt if tgt is not None else pred != original
    return AttackResult(adv.detach(), success.cpu(), iters.cpu(), original.cpu(), pred.cpu(), x0.detach())


def _minimal(backbone, x0, tgt, original, max_iters, step, patience, **_):
    B = len(x0)
    alpha = torch.full((B,), (step or 0.25 / 255), device=x0.device)
    radius = torch.full((B,), 1 / 255, device=x0.device)
    x, best = x0.clone(), x0.clone()
    done = torch.zeros(B, dtype=torch.bool, device=x0.device)
    iters = torch.zeros(B, dtype=torch.long)
    stuck = torch.zeros(B, dtype=torch.long, device=x0.device)
    for it in range(max_iters):
        g, _ = _grad(backbone, x, tgt, original)
        x = _project(x0, x - _step(g, alpha, "linf"), radius, "linf")
        with torch.no_grad():
            fooled = _fooled(backbone(quantize(x)), tgt, original)
        new = fooled & ~done
        best[new] = x[new]
        iters[new.cpu()] = it + 1
        done |= fooled
        if done.all():
            break
        stuck = torch.where(done, stuck, stuck + 1)
        grow = (stuck >= patience) & ~done
        radius = torch.where(grow, radius + 1 / 255, radius)
        stuck = torch.where(grow, torch.zeros_like(stuck), stuck)
        x = torch.where(done.view(-1, 1, 1, 1), best, x)
    iters[~done.cpu()] = max_iters
    return torch.where(done.view(-1, 1, 1, 1), best, x), iters


def _ascent(backbone, x0, tgt, original, max_iters, lr, **_):
    B = len(x0)
    x = x0.clone()
    done = torch.zeros(B, dtype=torch.bool, device=x0.device)
    iters = torch.full((B,), max_iters, dtype=torch.long)
    for it in range(max_iters + 1):
        with torch.no_grad():
            fooled = _fooled(backbone(quantize(x)), tgt, original)
        newly = fooled & ~done
        iters[newly.cpu()] = it
        done |= fooled
        if done.all() or it == max_iters:
            break
        xg = x.detach().requires_grad_(True)
        score = backbone(xg).gather(1, tgt.view(-1, 1)).sum()
        (g,) = torch.autograd.grad(score, xg)
        dx = lr * g / g.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
        x = torch.where(done.view(-1, 1, 1, 1), x, (x + dx).clamp(0, 1))
    return x, iters


def _pgd(backbone, x0, tgt, original, max_iters, eps, norm, step, single, **_):
    B = len(x0)
    eps_t = torch.full((B,), float(eps), device=x0.device)
    alpha = eps_t if single else torch.full((B,), float(step or eps / 4), device=x0.device)
    x = x0.clone()
    done = torch.zeros(B, dtype=torch.bool, device=x0.device)
    iters = torch.full((B,), max_iters, dtype=torch.long)
    for it in range(max_iters):
        g, _ = _grad(backbone, x, tgt, original)
        x_new = _project(x0, x - _step(g, alpha, norm), eps_t, norm)
        x = torch.where(done.view(-1, 1, 1, 1), x, x_new)
        if single:
            iters[:] = 1
            break
        with torch.no_grad():
            fooled = _fooled(backbone(quantize(x)), tgt, original)
        iters[(fooled & ~done).cpu()] = it + 1
        done |= fooled
        if done.all():
            break
    return x, iters
