"""Where models come from besides the table (`table.py`): any `timm:NAME`, any `torchvision:NAME` classifier,
`hf:ORG/NAME` or `hf:FOLDER` (a Hugging Face image classifier), a user's `path/to/file.py:factory`; and
`get_entry`, which turns any spec into its `BackboneEntry` (with a did-you-mean when a name is unknown)."""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch
from torch import nn

from .backbones import IMAGENET_MEAN, IMAGENET_STD
from .errors import CnnlabError, did_you_mean
from .hooks import CutPoint
from .preprocess import Preprocess
from .table import (REGISTRY, BackboneEntry, WeightsSource, hub_weights, weights_preprocess, generic_cut_points,
                       timm_preprocess, token_points)


def _timm_entry(model_name: str) -> BackboneEntry:
    import timm

    if model_name not in timm.list_models():
        raise CnnlabError(f"unknown timm model {model_name!r}{did_you_mean(model_name, timm.list_models(), n=3)}")

    def cut_points(net: nn.Module) -> dict[str, CutPoint]:
        points = {f"stage{i}": CutPoint(info["module"]) for i, info in enumerate(getattr(net, "feature_info", []))}
        points.update(token_points(net))
        head = net.get_classifier() if hasattr(net, "get_classifier") else None
        if isinstance(head, nn.Linear):
            name = next(n for n, m in net.named_modules() if m is head)
            points.update(pre_logits=CutPoint(name, "input"), logits=CutPoint(name))
        else:  # a head of several layers (CrossViT's two branches): the generic points (the last linear's input)
            points = {**generic_cut_points(net), **points}
        return points

    def load() -> dict[str, torch.Tensor]:
        from . import hub
        from .errors import WeightsUnavailable

        cfg = timm.models.get_pretrained_cfg(model_name)
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if repo:  # the hub's cache first; the hub itself only when it answers (not a minute of retries)
            local = hub.cached_file(repo, ("model.safetensors", "pytorch_model.bin"))
            if local is not None:
                return timm.create_model(model_name, pretrained=True,
                                         pretrained_cfg_overlay={"file": str(local)}).state_dict()
            if not hub.reachable():
                raise WeightsUnavailable(hub.offline_hint(f"pretrained weights for timm:{model_name}"))
        try:
            return timm.create_model(model_name, pretrained=True).state_dict()
        except Exception as exc:
            raise WeightsUnavailable(f"pretrained weights for timm:{model_name} could not be loaded "
                                     f"({exc.__class__.__name__}); they come from the Hugging Face hub: connect once "
                                     "to cache them, or pass --weights PATH to a state dict") from None

    def weights() -> WeightsSource:
        return WeightsSource(None, hint="timm downloads them from the Hugging Face hub (needs internet or a cache)",
                             load=load, tag="timm-default")

    return BackboneEntry(f"timm:{model_name}", f"timm model {model_name}",
                         lambda: timm.create_model(model_name, pretrained=False), timm_preprocess, cut_points,
                         weights, "pre_logits")


def _hf_entry(name: str) -> BackboneEntry:
    """`hf:ORG/NAME` or `hf:PATH`: a `transformers` image classifier, its preprocessing from its own image processor
    (or its architecture's), its class names from `id2label`."""
    from . import hf

    config = hf.load_config(name)
    local = Path(name).expanduser()
    if local.is_dir():  # a folder's weights can change: its files say which ones a cache holds
        files = sorted(local.glob("*.safetensors")) + sorted(local.glob("*.bin"))
        tag = "hf-folder:" + ",".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    else:
        tag = "hf-default"

    def weights() -> WeightsSource:
        return WeightsSource(None, hint="the model's own weights (its folder, the Hugging Face cache or the Hub)",
                             load=lambda: hf.pretrained_state(name), tag=tag)

    return BackboneEntry(f"hf:{name}", f"Hugging Face {config.model_type} model {name}", lambda: hf.build(name, config),
                         lambda net: hf.processor_preprocess(name, net),
                         lambda net: generic_cut_points(net, config.num_labels), weights, None, list_modules=True,
                         labels=hf.labels_of(config))


def _torchvision_any_entry(model_name: str) -> BackboneEntry:
    """Any torchvision classification model; preprocessing and weights from its `DEFAULT` weights enum."""
    import torchvision.models as tvm

    names = tvm.list_models(module=tvm)
    if model_name not in names:
        raise CnnlabError(f"unknown torchvision classification model {model_name!r}"
                          f"{did_you_mean(model_name, names, n=3)}")

    def enum():
        return tvm.get_model_weights(model_name).DEFAULT

    def preprocess(_net: nn.Module) -> Preprocess:
        return weights_preprocess(enum())

    def weights() -> WeightsSource:
        return hub_weights(enum().url)

    def build() -> nn.Module:
        # the architecture the default weights need: a ViT whose weights are at 518 pixels (vit_h_14's SWAG) is
        # built at 518, as torchvision does when it loads them; a builder without an image_size is built as it is
        size = _weights_preprocess_size(enum())
        if size != 224:
            try:
                return tvm.get_model(model_name, weights=None, image_size=size)
            except TypeError:
                pass
        return tvm.get_model(model_name, weights=None)

    return BackboneEntry(f"torchvision:{model_name}", f"torchvision {model_name} ({enum()})", build, preprocess,
                         lambda net: generic_cut_points(net, len(enum().meta["categories"])), weights, None,
                         list_modules=True)


def _weights_preprocess_size(weights_enum) -> int:
    return weights_preprocess(weights_enum).input_size


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
            found = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
            hint = did_you_mean(factory, found, fallback=f"; callables there: {', '.join(found[:8])}")
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
    if name.startswith("hf:"):
        return _hf_entry(name[len("hf:"):])
    if name.startswith("timm:"):
        return _timm_entry(name[len("timm:"):])
    if name.startswith("torchvision:"):
        return _torchvision_any_entry(name[len("torchvision:"):])
    if is_file_spec(name):
        return _file_entry(name)
    if name.startswith("<wrapped "):  # what a run on a module passed to cnnlab.wrap records
        raise CnnlabError(f"{name} was a module wrapped in Python (cnnlab.wrap): no command can rebuild it; rerun "
                          "in Python with the module and this config (cnnlab.JOB(model, config=Config.load(RUN)))")
    if "+" in name:
        raise CnnlabError(f"{name!r} names several backbones: load each one (only transfer and fool combine them)")
    if name not in REGISTRY:
        elsewhere = _known_elsewhere(name)
        hint = did_you_mean(elsewhere or name, [elsewhere] if elsewhere else REGISTRY)
        raise CnnlabError(f"unknown backbone {name!r}{hint}; available: {', '.join(REGISTRY)}, timm:<name>, "
                          "torchvision:<name>, hf:<org/name or folder> or path/to/file.py:factory")
    return REGISTRY[name]


def _known_elsewhere(name: str) -> str | None:
    """`torchvision:NAME` or `timm:NAME` where one of those libraries has a model of that exact name."""
    import torchvision.models as tvm

    if name in tvm.list_models(module=tvm):
        return f"torchvision:{name}"
    try:
        import timm
    except ImportError:
        return None
    return f"timm:{name}" if name in timm.list_models() else None
