"""The `Backbone`: an nn.Module that takes float (B,C,H,W) in [0,1], normalizes inside (so attacks and clipping
live in pixel space), knows its class names and cut points, and carries the preprocessing that matches its weights.
Every model cnnlab works on is one: registered ones, timm and torchvision models, a user's file, a wrapped module
(`core/models.py` builds them).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from .errors import CnnlabError, did_you_mean
from .hooks import CutPoint, capture, run_until_captured
from .layout import Layout
from .preprocess import Preprocess

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POOLINGS = ("avg", "max", "flatten")


class Backbone(nn.Module):
    """A classifier with normalization inside, class names, and cut points for features.

    Cut points are the named ones (`cut_points`, e.g. VGG16's `relu7`) and, for any model, every module path
    (`layer4`, `features.29`); `logits` is the network's output.
    """

    def __init__(self, name: str, net: nn.Module, preprocess: Preprocess, cut_points: dict[str, CutPoint],
                 weights: str = "default", weights_id: str | None = None, num_classes: int | None = None,
                 labels: Sequence[str] | None = None, spec: str | None = None, default_layer: str | None = None,
                 cam_layers: Sequence[str] = ()):
        super().__init__()
        self.name = name
        self.net = net
        self.preprocess = preprocess
        self.cut_points = dict(cut_points)
        self.weights = weights  # what the user asked for: "default" | "random:SEED" | a path
        self.weights_id = weights_id  # a stable identity for caches; None when not reproducible (random init)
        n = len(labels) if labels is not None else (num_classes or 1000)
        self.labels = tuple(labels) if labels is not None else default_labels(n)
        self.spec = spec  # what `load_model` takes to build it again; None for a wrapped module
        # the default cut point: the entry's where this network has it (a timm family with a multi-branch head has
        # no single pre_logits), else pre_logits, else logits
        known = default_layer in self.cut_points or (default_layer and default_layer in dict(net.named_modules()))
        self.default_layer = default_layer if known else next(
            (p for p in ("pre_logits", "logits") if p in self.cut_points), None)
        self.cam_layers = tuple(cam_layers)  # where Grad-CAM reads when not told (empty: the last spatial map)
        # a 1-value mean/std marks a grayscale network (e.g. an MNIST classifier): RGB inputs are averaged to gray
        self.in_channels = len(preprocess.mean)
        self.register_buffer("mean", torch.tensor(preprocess.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocess.std).view(1, -1, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def extra_repr(self) -> str:
        return f"name={self.name!r}, classes={self.num_classes}, input={self.preprocess.input_size}"

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0,1] pixels → the network's input: grayscale (B,1,H,W) is replicated to 3 channels for an RGB network,
        RGB is averaged to one channel for a grayscale one."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise CnnlabError(f"expected images of shape (B,1|3,H,W), got {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            x = x.expand(-1, 3, -1, -1) if self.in_channels == 3 else x.mean(dim=1, keepdim=True)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.net(self.normalize(x)))  # a transformers model's output carries them

    # ------------------------------------------------------------------------------------------- cut points
    def resolve(self, layer: str) -> CutPoint:
        """A named cut point, or the output of any module by its path."""
        if layer in self.cut_points:
            return self.cut_points[layer]
        if layer and layer in dict(self.net.named_modules()):
            return CutPoint(layer)
        self.check_layers([layer])
        raise AssertionError  # check_layers raised

    def check_layers(self, layers: list[str]) -> None:
        modules = [n for n, _ in self.net.named_modules() if n]
        unknown = [layer for layer in layers if layer not in self.cut_points and layer not in modules]
        if unknown:
            u = unknown[0]
            raise CnnlabError(f"unknown cut point {u!r} for {self.name}{did_you_mean(u, list(self.cut_points) + modules)}"
                              f"; available: {', '.join(self.cut_points)} or any module path (`cnnlab models "
                              "--backbone NAME` lists them)")

    def features(self, x: torch.Tensor, layers: list[str], pool: str = "avg") -> dict[str, torch.Tensor]:
        """(B, D) features at each requested cut point, all from ONE forward pass that stops at the deepest."""
        self.check_layers(layers)
        points = {layer: self.resolve(layer) for layer in layers}
        with capture(self.net, points) as store:
            run_until_captured(self.net, self.normalize(x))
        return {layer: self._pooled(store[layer], points[layer], pool, tuple(x.shape[-2:])) for layer in layers}

    def laid_out(self, t: torch.Tensor, point: CutPoint, image: tuple[int, int]) -> torch.Tensor:
        """A layer's output as maps (B,C,h,w) or a vector (B,C), whatever its layout (`core.layout`): a class token
        read (`read="cls"`) is (B,C); tokens lose their prefix (class, distillation, registers) and lie on the
        patch grid; a channels-last map is permuted. Anything with no image layout comes back as it is (its
        reader says what it needs)."""
        from .layout import layout_of, prefix_tokens

        if not isinstance(t, torch.Tensor) or point.kind != "output" or t.ndim not in (3, 4):
            return t
        if point.read == "cls":
            if t.ndim != 3 or not prefix_tokens(self.net):
                raise CnnlabError(f"{self.name} has no class token to read at {point.module!r}")
            return t[:, 0]
        module = self.net.get_submodule(point.module) if point.module else self.net
        layout = layout_of(t, image, self.net, module, batch=len(t))
        return layout.to_nchw(t) if layout is not None else t

    def _pooled(self, t: torch.Tensor, point: CutPoint, pool: str, image: tuple[int, int]) -> torch.Tensor:
        """(B, D) from a layer's output read by its layout: a channels-last map pools over its grid (not over its
        last two axes), a token sequence over its patch tokens (the prefix left out, as timm's
        `global_pool="avg"`); `flatten` keeps the output as it is unless the cut point reads tokens."""
        if pool not in POOLINGS:
            raise CnnlabError(f"unknown pooling {pool!r}; choose from {', '.join(POOLINGS)}")
        if pool != "flatten" or point.read != "all":
            t = self.laid_out(t, point, image)
        return pool_features(t, pool)

    def last_spatial_layer(self) -> str:
        """Where Grad-CAM reads when neither the caller nor the registry entry says (pytorch-grad-cam's users' most
        common question): the deepest output laid on the image through which the class score's gradient flows
        (`core.probe`: a transformer's last `norm1`, a CNN's last stage), found once per model on one probe pass.
        A default early in the network, or on a model whose scores ignore the image, is said in one warning."""
        if "_last_spatial" not in self.__dict__:
            import warnings

            from .probe import default_layer

            layer, warning, settled = default_layer(self)
            if layer is None:
                raise CnnlabError(f"{self.name} has no layer laid on the image (maps or patch tokens) for Grad-CAM: "
                                  "pass --layer MODULE_PATH")
            if warning:
                warnings.warn(warning, UserWarning, stacklevel=2)
            if not settled:  # scores that ignore the image say nothing of where the gradient flows: ask again later
                return layer
            self.__dict__["_last_spatial"] = layer
        return self.__dict__["_last_spatial"]

    @property
    def fixed_input_size(self) -> bool:
        """Whether the network takes only its input size (a ViT's position embeddings, a Swin's windows, a head that
        reshapes to a fixed count): probed once with a larger blank image, of an even and of an odd side."""
        if "_fixed_input" not in self.__dict__:
            from .hooks import eval_mode

            fixed = False
            for size in (self.preprocess.input_size + 32, self.preprocess.input_size + 37):
                try:
                    with torch.no_grad(), eval_mode(self):
                        self(torch.zeros(1, self.in_channels, size, size, device=self.device))
                except Exception:  # noqa: BLE001 — any refusal of the size is the answer
                    fixed = True
                    break
            self.__dict__["_fixed_input"] = fixed
        return self.__dict__["_fixed_input"]

    def class_index(self, query: str | int) -> int:
        """A class by index, or by name (ImageNet: also synset ids and substrings, with suggestions)."""
        from . import imagenet

        if self.labels == imagenet.labels():
            return imagenet.resolve_class(query)
        return resolve_label(query, self.labels)


def logits_of(out) -> torch.Tensor | None:
    """The logits in what a classifier's forward returned: a tensor; a `transformers` ModelOutput's or a dict's
    `logits`; the first item of a tuple or list (None when there are none)."""
    if isinstance(out, torch.Tensor):
        return out
    found = out.get("logits") if isinstance(out, Mapping) else getattr(out, "logits", None)
    if found is None and isinstance(out, (tuple, list)) and out:
        found = out[0]
    return found if isinstance(found, torch.Tensor) else None


def default_labels(n: int) -> tuple[str, ...]:
    """ImageNet's class names for a 1000-way classifier, else `class 0` … `class n-1`."""
    from . import imagenet

    return imagenet.labels() if n == 1000 else tuple(f"class {i}" for i in range(n))


def resolve_label(query: str | int, labels: Sequence[str]) -> int:
    q = str(query).strip()
    lowered = [label.lower() for label in labels]
    if q.lower() in lowered:
        return lowered.index(q.lower())
    if q.isdigit():
        index = int(q)
        if not 0 <= index < len(labels):
            raise CnnlabError(f"class index {index} is out of range 0..{len(labels) - 1}")
        return index
    partial = [i for i, label in enumerate(lowered) if q.lower() in label]
    if len(partial) == 1:
        return partial[0]
    hint = did_you_mean(q.lower(), lowered, n=3, cutoff=0.5)
    raise CnnlabError(f"unknown class {query!r}{hint} (the model's classes: {', '.join(labels[:5])}"
                      f"{', ...' if len(labels) > 5 else ''})")


def pool_features(t: torch.Tensor, pool: str = "avg") -> torch.Tensor:
    """(B,C,H,W) maps → (B,C) by global average/max pooling, or (B,C·H·W) by flattening; (B,N,C) tokens → mean
    (`Backbone.features` reads a layer by its layout first: channels-last maps, prefix tokens)."""
    if pool not in POOLINGS:
        raise CnnlabError(f"unknown pooling {pool!r}; choose from {', '.join(POOLINGS)}")
    if t.ndim == 4 and pool != "flatten":
        return t.mean(dim=(2, 3)) if pool == "avg" else t.amax(dim=(2, 3))
    if t.ndim == 3 and pool != "flatten":
        return t.mean(dim=1)
    return t.flatten(1)
