"""Targeted (and untargeted) adversarial examples in [0,1] pixel space, judged after 8-bit quantization.

The attacked `model` maps images in [0,1] to logits: a Backbone (normalization inside), or an `ImageModel` that
takes a photo at its own size through each network's own preprocessing (`explain/views.py`). So every bound, step
and clip here is in the pixels of the image that is saved. Success means the *quantized* image (what a saved PNG
holds) is classified as the target (or, untargeted, as anything but the original class): attacks keep iterating
until that is true or the budget runs out.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from torch import nn

from ..core.errors import CnnlabError
from ..core.hooks import eval_mode, frozen
from ..core.images import quantize

METHODS = ("minimal", "ascent", "fgsm", "pgd", "transfer")
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


def attack(model: nn.Module, x: torch.Tensor, target: torch.Tensor | list[int] | None, method: str = "minimal",
           max_iters: int = 100, lr: float = 1.0, eps: float | None = None, norm: str = "linf",
           step: float | None = None, patience: int = 15, loss: str | None = None, momentum: float = 1.0,
           diversity: float = 0.7, ti_kernel: int = 5, seed: int = 0) -> AttackResult:
    """Fool `model` (images in [0,1] → logits) on images x (B,C,H,W) in [0,1].

    method:
      minimal  — sign steps of `step` (default 0.25/255) inside an L∞ ball whose radius starts at 1/255 and grows
                 by 1/255 after `patience` steps without success: the smallest 8-bit change that fools.
      ascent   — the report's (cs231n): x += lr · g/‖g‖₂ on the target score until the quantized image fools.
      fgsm     — one step of size eps (Goodfellow et al. 2015).
      pgd      — `max_iters` steps of size `step` (default eps/4) projected into the eps-ball (Madry et al. 2018).
      transfer — made to fool *other* models: `max_iters` L∞ steps of `step` (default 2/255) inside the eps-ball
                 (default 16/255), all of them (no early stop), with the `loss` (default logit: Zhao et al. 2021), momentum
                 (MI-FGSM, Dong et al. 2018), input diversity with probability `diversity` (random shrink and pad,
                 Xie et al. 2019) and translation-invariant gradients (a Gaussian of side `ti_kernel`, Dong et al.
                 2019); 0 turns each off.
    target: one class per image, or None for untargeted (fgsm/pgd/minimal/transfer).
    loss: "ce" or "logit" for pgd, fgsm and transfer (default: ce, and logit for transfer).
    """
    if method not in METHODS:
        raise CnnlabError(f"unknown attack {method!r}; choose from {', '.join(METHODS)}")
    if norm not in NORMS:
        raise CnnlabError(f"unknown norm {norm!r}; choose from {', '.join(NORMS)}")
    loss = loss or ("logit" if method == "transfer" else "ce")
    if loss not in LOSSES:
        raise CnnlabError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
    if method == "ascent" and target is None:
        raise CnnlabError("the ascent method needs a target class")
    if method in ("fgsm", "pgd") and eps is None:
        eps = 8 / 255 if norm == "linf" else 1.0
    if method == "transfer":
        eps, norm = eps if eps is not None else 16 / 255, "linf"
    dev = getattr(model, "device", None) or next(model.parameters()).device
    x0 = quantize(x.detach().to(dev))
    B = len(x0)
    tgt = None if target is None else torch.as_tensor(target, device=dev).long().view(B)
    with eval_mode(model), frozen(model):
        with torch.no_grad():
            original = model(x0).argmax(dim=1)
        run = {"minimal": _minimal, "ascent": _ascent, "fgsm": _pgd, "pgd": _pgd, "transfer": _transfer}[method]
        kwargs = dict(max_iters=1 if method == "fgsm" else max_iters, lr=lr, eps=eps, norm=norm, step=step,
                      patience=patience, single=method == "fgsm", loss=loss, momentum=momentum, diversity=diversity,
                      ti_kernel=ti_kernel, seed=seed)
        adv, iters = run(model, x0, tgt, original, **kwargs)
        with torch.no_grad():
            adv = quantize(adv)
            pred = model(adv).argmax(dim=1)
    success = pred == tgt if tgt is not None else pred != original
    return AttackResult(adv.detach(), success.cpu(), iters.cpu(), original.cpu(), pred.cpu(), x0.detach())


def _minimal(model, x0, tgt, original, max_iters, step, patience, **_):
    B = len(x0)
    alpha = torch.full((B,), (step or 0.25 / 255), device=x0.device)
    radius = torch.full((B,), 1 / 255, device=x0.device)
    x, best = x0.clone(), x0.clone()
    done = torch.zeros(B, dtype=torch.bool, device=x0.device)
    iters = torch.zeros(B, dtype=torch.long)
    stuck = torch.zeros(B, dtype=torch.long, device=x0.device)
    for it in range(max_iters):
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
        grow = (stuck >= patience) & ~done
        radius = torch.where(grow, radius + 1 / 255, radius)
        stuck = torch.where(grow, torch.zeros_like(stuck), stuck)
        x = torch.where(done.view(-1, 1, 1, 1), best, x)
    iters[~done.cpu()] = max_iters
    return torch.where(done.view(-1, 1, 1, 1), best, x), iters


def _ascent(model, x0, tgt, original, max_iters, lr, **_):
    B = len(x0)
    x = x0.clone()
    done = torch.zeros(B, dtype=torch.bool, device=x0.device)
    iters = torch.full((B,), max_iters, dtype=torch.long)
    for it in range(max_iters + 1):
        with torch.no_grad():
            fooled = _fooled(model(quantize(x)), tgt, original)
        newly = fooled & ~done
        iters[newly.cpu()] = it
        done |= fooled
        if done.all() or it == max_iters:
            break
        xg = x.detach().requires_grad_(True)
        score = model(xg).gather(1, tgt.view(-1, 1)).sum()
        (g,) = torch.autograd.grad(score, xg)
        dx = lr * g / g.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
        x = torch.where(done.view(-1, 1, 1, 1), x, (x + dx).clamp(0, 1))
    return x, iters


def _pgd(model, x0, tgt, original, max_iters, eps, norm, step, single, loss, **_):
    B = len(x0)
    eps_t = torch.full((B,), float(eps), device=x0.device)
    alpha = eps_t if single else torch.full((B,), float(step or eps / 4), device=x0.device)
    x = x0.clone()
    done = torch.zeros(B, dtype=torch.bool, device=x0.device)
    iters = torch.full((B,), max_iters, dtype=torch.long)
    for it in range(max_iters):
        g, _ = _grad(model, x, tgt, original, loss)
        x_new = _project(x0, x - _step(g, alpha, norm), eps_t, norm)
        x = torch.where(done.view(-1, 1, 1, 1), x, x_new)
        if single:
            iters[:] = 1
            break
        with torch.no_grad():
            fooled = _fooled(model(quantize(x)), tgt, original)
        iters[(fooled & ~done).cpu()] = it + 1
        done |= fooled
        if done.all():
            break
    return x, iters


def _transfer(model, x0, tgt, original, max_iters, eps, step, loss, momentum, diversity, ti_kernel, seed, **_):
    B = len(x0)
    eps_t = torch.full((B,), float(eps), device=x0.device)
    alpha = torch.full((B,), float(step or 2 / 255), device=x0.device)
    g = torch.Generator().manual_seed(seed)
    kernel = _gaussian_kernel(ti_kernel, x0.shape[1]).to(x0) if ti_kernel > 1 else None
    x, velocity = x0.clone(), torch.zeros_like(x0)
    for _ in range(max_iters):
        transform = _diverse(g) if diversity > 0 and torch.rand((), generator=g) < diversity else None
        grad, _ = _grad(model, x, tgt, original, loss, transform)
        if kernel is not None:  # translation invariance: the gradient of a shifted image, averaged over shifts
            grad = F.conv2d(grad, kernel, padding=ti_kernel // 2, groups=x0.shape[1])
        velocity = momentum * velocity + grad / grad.abs().flatten(1).mean(1).clamp(min=1e-12).view(-1, 1, 1, 1)
        x = _project(x0, x - _step(velocity, alpha, "linf"), eps_t, "linf")
    return x, torch.full((B,), max_iters, dtype=torch.long)


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
