"""How faithful is a saliency map? Deletion and insertion AUC (Petsiuk et al. 2018, RISE).

Patches (16×16 at 224 pixels: a 14×14 grid by default) are ranked by mean attribution. Deletion replaces them, most salient first, with a
strongly blurred copy of the image; insertion starts from that blurred copy and restores them. The curve is the
softmax probability of the class along ~28 steps; its area (mean of the trapezoids, x in [0,1]) is the score:
low deletion and high insertion are good. The same with a random patch order is the baseline, averaged over several
orders: one order alone moves a method's deletion ratio by a lot (measured: docs/benchmarks.md, explain).
Pixel-level or black-fill deletion mostly measures how CNNs hate speckle noise, hence patches and blur.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.backbones import Backbone
from ..core.errors import CnnlabError
from ..core.hooks import eval_mode
from .saliency import BLUR_SIGMA, blurred, patch_size


FILLS = ("blur", "black")  # what a removed patch becomes: a strongly blurred copy of the image, or black


def absent(x: torch.Tensor, fill: str, blur_sigma: float) -> torch.Tensor:
    """The image with everything removed, for deletion's end and insertion's start."""
    if fill not in FILLS:
        raise CnnlabError(f"fill must be one of {', '.join(FILLS)}, not {fill!r}")
    return blurred(x, blur_sigma) if fill == "blur" else torch.zeros_like(x)


def patch_order(maps: torch.Tensor, patch: int) -> torch.Tensor:
    """(B,H,W) maps → (B,P) patch indices, most salient first."""
    scores = F.avg_pool2d(maps.unsqueeze(1), patch).flatten(1)
    return scores.argsort(dim=1, descending=True)


def _probability(backbone: Backbone, imgs: torch.Tensor, target: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Softmax probability of each image's `target` (B,), in batches, without gradients."""
    probs = []
    with torch.no_grad():
        for i in range(0, len(imgs), batch_size):
            out = backbone(imgs[i:i + batch_size].to(backbone.device)).float().softmax(dim=1)
            probs.append(out[torch.arange(len(out)), target[i:i + batch_size].to(out.device)].cpu())
    return torch.cat(probs)


def curve_ends(backbone: Backbone, start: torch.Tensor, end: torch.Tensor, target: torch.Tensor,
               batch_size: int = 32) -> torch.Tensor:
    """The first and last points of every curve from `start` to `end` (B, 2): the same for every patch order, so
    computed once per image and shared by every method and random order."""
    target = torch.as_tensor(target).long()
    with eval_mode(backbone):
        p = _probability(backbone, torch.cat([start, end]), torch.cat([target, target]), batch_size)
    return torch.stack([p[:len(start)], p[len(start):]], dim=1)


def _curves(backbone: Backbone, x: torch.Tensor, base: torch.Tensor, order: torch.Tensor, target: torch.Tensor,
            patch: int, steps: int, batch_size: int, ends: torch.Tensor | None = None) -> torch.Tensor:
    """Probability of `target` as patches of `base` replace those of `x` in `order`: (B, steps+1). `ends`
    (`curve_ends`): the first and last points, known already (only the points between are computed)."""
    B, _, H, W = x.shape
    gh, gw = H // patch, W // patch
    n = gh * gw
    counts = torch.linspace(0, n, steps + 1).round().long()
    inner = slice(1, steps) if ends is not None else slice(0, steps + 1)
    imgs = []
    for b in range(B):
        rank = torch.empty(n, dtype=torch.long)
        rank[order[b]] = torch.arange(n)
        rank_map = rank.view(gh, gw).repeat_interleave(patch, 0).repeat_interleave(patch, 1)
        rank_map = F.pad(rank_map, (0, W - gw * patch, 0, H - gh * patch), value=n)  # edge pixels never move
        masks = (rank_map.unsqueeze(0) < counts[inner].view(-1, 1, 1)).to(x.dtype).unsqueeze(1).to(x.device)
        imgs.append(x[b:b + 1] * (1 - masks) + base[b:b + 1] * masks)  # (points, C, H, W)
    points = len(imgs[0])
    curves = torch.empty(B, steps + 1)
    # every image's points in one stream of batches: full batches however few points a curve computes
    if points:
        curves[:, inner] = _probability(backbone, torch.cat(imgs), target.repeat_interleave(points),
                                        batch_size).view(B, points)
    if ends is not None:
        curves[:, 0], curves[:, -1] = ends[:, 0], ends[:, 1]
    return curves


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under curves sampled uniformly on [0,1]: (B,S+1) → (B,)."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[-1] - 1), dim=-1)


def random_orders(n_images: int, n_patches: int, k: int, seed: int | list[int] = 0) -> torch.Tensor:
    """k random patch orders per image, (k, B, P): a pure function of the seed; with one seed per image, each
    image's orders are those it would get alone with its seed (so a batch scores as its images one by one)."""
    if isinstance(seed, (list, tuple)):
        return torch.cat([random_orders(1, n_patches, k, s) for s in seed], dim=1)
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.stack([torch.randperm(n_patches, generator=g) for _ in range(n_images)])
                        for _ in range(k)])


def _ends(backbone: Backbone, x: torch.Tensor, base: torch.Tensor, target: torch.Tensor, kinds, batch_size: int,
          ends: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """Each kind's curve ends: those given, the others computed (deletion's are insertion's, reversed)."""
    ends = dict(ends or {})
    if kinds and not any(k in ends for k in ("deletion", "insertion")):
        ends["deletion"] = curve_ends(backbone, x, base, target, batch_size)
    if "deletion" in ends:
        ends.setdefault("insertion", ends["deletion"].flip(1))
    elif "insertion" in ends:
        ends["deletion"] = ends["insertion"].flip(1)
    return ends


def random_baseline(backbone: Backbone, x: torch.Tensor, target: torch.Tensor | list[int], patch: int | None = None,
                    steps: int = 28, blur_sigma: float = BLUR_SIGMA, seed: int | list[int] = 0,
                    batch_size: int = 32, n_random: int = 4, curves: bool = False,
                    kinds: tuple[str, ...] = ("deletion", "insertion"), fill: str = "blur",
                    ends: dict[str, torch.Tensor] | None = None, return_ends: bool = False) -> dict[str, torch.Tensor]:
    """Per-image deletion/insertion AUC of random patch orders (seeded: one seed, or one per image; mean over
    `n_random` orders). It does not depend on any map: compute it once when comparing several methods on the same images. With `curves`, also the
    mean curves themselves (B, steps+1). `kinds`: which of the two; `ends`: the curves' ends where known
    (`curve_ends`; {kind: (B, 2)}); `return_ends`: also return them (`random_{kind}_ends`), for the methods'
    curves to share."""
    if n_random < 1:
        raise CnnlabError(f"the random baseline needs at least one order, not {n_random}")
    x = x.detach().to(backbone.device)
    target = torch.as_tensor(target).long()
    patch = patch or patch_size(x)
    base = absent(x, fill, blur_sigma)
    n_patches = (x.shape[-2] // patch) * (x.shape[-1] // patch)
    rand = random_orders(len(x), n_patches, n_random, seed)
    out = {}
    with eval_mode(backbone):
        ends = _ends(backbone, x, base, target, kinds, batch_size, ends)
        for kind in kinds:
            start, end = (x, base) if kind == "deletion" else (base, x)
            c = torch.stack([_curves(backbone, start, end, o, target, patch, steps, batch_size, ends[kind])
                             for o in rand])
            out[f"random_{kind}_auc"] = auc(c).mean(0)
            if return_ends:
                out[f"random_{kind}_ends"] = ends[kind]
            if curves:
                out[f"random_{kind}_curve"] = c.mean(0)
    return out


def deletion_insertion(backbone: Backbone, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor | list[int],
                       patch: int | None = None, steps: int = 28, blur_sigma: float = BLUR_SIGMA, seed: int = 0,
                       batch_size: int = 32, n_random: int = 4, curves: bool = False,
                       kinds: tuple[str, ...] = ("deletion", "insertion"), fill: str = "blur",
                       ends: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Per-image deletion/insertion AUC for `maps`, plus `random_baseline` unless n_random = 0; with `curves`, the
    probability curves too (B, steps+1), for plotting. `kinds`: which of the two; `fill`: what a removed patch
    becomes (`FILLS`); `ends`: the curves' first and last points where known ({kind: (B, 2)}, `curve_ends`: the
    same for every map of the image, so shared by the methods compared)."""
    x = x.detach().to(backbone.device)
    target = torch.as_tensor(target).long()
    patch = patch or patch_size(x)
    base = absent(x, fill, blur_sigma)
    order = patch_order(maps.cpu().float(), patch)
    out = {}
    with eval_mode(backbone):
        ends = _ends(backbone, x, base, target, kinds, batch_size, ends)
        for kind in kinds:
            start, end = (x, base) if kind == "deletion" else (base, x)
            c = _curves(backbone, start, end, order, target, patch, steps, batch_size, ends[kind])
            out[f"{kind}_auc"] = auc(c)
            if curves:
                out[f"{kind}_curve"] = c
    if n_random:
        out |= random_baseline(backbone, x, target, patch, steps, blur_sigma, seed, batch_size, n_random, curves,
                               kinds, fill, ends)
    return out
