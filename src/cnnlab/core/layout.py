"""A layer's output read as an image-shaped map (B,C,h,w): the one place every class activation map and the default
layer read layers through. Convolutional maps pass as they are; channels-last stages (Swin, timm's NHWC blocks) are
permuted; token sequences (ViT, DeiT, EVA, …: (B,N,C)) lose their prefix tokens (class, distillation, registers:
those the model declares, else the fewest whose removal leaves a grid with the image's aspect — Hugging Face's ViT,
CaiT's and XCiT's patch-only tokens) and the rest is laid on the patch grid. Anything else — a vector, attention
scores, a tuple — has no image layout, and saying so is the caller's one-line error."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

KINDS = ("nchw", "nhwc", "tokens")
MAX_PREFIX = 16  # tokens before the patches that a count can show: a class token, a distillation token, registers


@dataclass(frozen=True)
class Layout:
    """How a layer's output maps onto the image: `kind` (nchw, nhwc, tokens), `prefix` tokens dropped, `grid` (h, w)."""

    kind: str
    grid: tuple[int, int]
    prefix: int = 0

    def to_nchw(self, t: torch.Tensor) -> torch.Tensor:
        """(B,C,h,w) from the layer's output (a view where the layout allows; gradients flow through)."""
        if self.kind == "nchw":
            return t
        if self.kind == "nhwc":
            return t.permute(0, 3, 1, 2)
        h, w = self.grid
        return t[:, self.prefix:].reshape(t.shape[0], h, w, t.shape[-1]).permute(0, 3, 1, 2)

    def describe(self) -> str:
        what = {"nchw": "channels-first maps", "nhwc": "channels-last maps", "tokens": "tokens"}[self.kind]
        drop = f", {self.prefix} prefix token{'s' * (self.prefix != 1)} dropped" if self.prefix else ""
        return f"{what} on a {self.grid[0]}×{self.grid[1]} grid{drop}"


def prefix_tokens(net: nn.Module) -> int:
    """The tokens before the patches that a model declares: timm's `num_prefix_tokens` (class, distillation and
    register tokens), torchvision's `class_token`; 0 otherwise."""
    n = getattr(net, "num_prefix_tokens", None)
    if isinstance(n, int):
        return n
    return 1 if isinstance(getattr(net, "class_token", None), nn.Parameter) else 0


def _grid_like(h: int, w: int, image: tuple[int, int]) -> bool:
    """A plausible feature grid of an image of size `image`: more than one cell each way, no larger than the image,
    with the image's aspect ratio (to the rounding of a stride)."""
    H, W = image
    return 1 < h <= H and 1 < w <= W and abs(h * W - w * H) <= max(H, W) / min(h, w) + 1e-9


def token_grid(n: int, image: tuple[int, int]) -> tuple[int, int] | None:
    """(h, w) with h·w = n and the image's aspect ratio, or None."""
    H, W = image
    h = max(1, round(math.sqrt(n * H / W)))
    for hh in (h, h - 1, h + 1):
        if hh > 0 and n % hh == 0 and _grid_like(hh, n // hh, image):
            return hh, n // hh
    return None


def layout_of(t, image: tuple[int, int], net: nn.Module, module: nn.Module | None = None,
              batch: int | None = None) -> Layout | None:
    """The image layout of a layer's output `t` for a batch of `batch` images of size `image` (h, w), or None
    (windows of an image stacked along the batch, as MaxViT's, are not laid on it)."""
    if not isinstance(t, torch.Tensor) or batch is not None and t.shape[0] != batch:
        return None
    if t.ndim == 4:
        _, d1, d2, d3 = t.shape
        first, last = _grid_like(d2, d3, image), _grid_like(d1, d2, image)
        if first and last:  # square everything: a LayerNorm over the last axis says which axis holds the channels
            last = isinstance(module, nn.LayerNorm) and tuple(module.normalized_shape) == (d3,)
            first = not last
        if first:
            return Layout("nchw", (d2, d3))
        if last:
            return Layout("nhwc", (d1, d2))
        return None
    if t.ndim == 3:  # the model's declared prefix first, then the fewest tokens whose removal leaves a patch grid
        n = t.shape[1]
        for prefix in dict.fromkeys([prefix_tokens(net), *range(MAX_PREFIX + 1)]):
            grid = token_grid(n - prefix, image) if n > prefix else None
            if grid:
                return Layout("tokens", grid, prefix)
    return None


def inside_attention(name: str, net: nn.Module) -> bool:
    """Whether module `name` lies inside an attention module: its outputs are queries, keys, heads or attention
    scores, shaped like maps or tokens but not laid on the image."""
    parts = name.split(".")
    for k in range(1, len(parts)):
        owner = net.get_submodule(".".join(parts[:k]))
        if "attention" in type(owner).__name__.lower() or parts[k - 1] in ("attn", "attention", "self_attention"):
            return True
    return False
