"""What every job's API call shares: the model options of its config, turning a model argument (a spec, a
`Backbone`) into a `Backbone`, and merging keyword options into the config."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, fields
from typing import Any, Callable, Sequence, TypeVar

from torch import nn

from .backbones import Backbone
from .config import Config, field_default, option, option_meta
from .errors import CnnlabError
from .models import load_model
from .table import DEFAULT_BACKBONE

C = TypeVar("C", bound=Config)
ModelLike = Any  # a spec string, a Backbone (cnnlab.load_model / cnnlab.wrap), or None for the config's --backbone

def _backbone_help() -> str:
    """The registered names (from the registry: one home), then the other sources a spec may name."""
    from .table import REGISTRY

    return f"{', '.join(REGISTRY)}, timm:NAME, torchvision:NAME, hf:ORG/NAME (or hf:FOLDER), or path/to/file.py:factory"


BACKBONE_HELP = _backbone_help()


@dataclass
class ModelOptions(Config):
    backbone: str = option(DEFAULT_BACKBONE, help=BACKBONE_HELP)
    weights: str = option("default", help="'default' (pretrained; a factory's own), 'random' or 'random:SEED' (the "
                                          "initialization drawn from SEED, 0 by default), or a state dict file")
    device: str = option("cpu", help="torch device, e.g. cpu or cuda")
    mean: list[float] | None = option(None, help="preprocessing mean, 3 values (or 1 for a grayscale network), "
                                                 "comma-separated; default: the weights' own")
    std: list[float] | None = option(None, help="preprocessing std, like --mean")
    input_size: int | None = option(None, low=1, help="side of the network's square input; default: the weights' own")


CHUNK_HELP = "images per committed chunk (what a rerun skips, what a torchrun process takes; memory)"


@dataclass
class PerImageOptions(Config):
    """What every job over a list of images takes (saliency, evaluate, fool)."""

    inputs: list[str] = option(default_factory=list, positional=True, required=True, metavar="INPUTS",
                               help="image files, folders, or an .npz with X (N,H,W,3) uint8 and y (the labs' "
                                    "imagenet_val_25.npz)")
    limit: int | None = option(None, low=1, help="only the first N images")
    batch_size: int = option(8, low=1, help="images per batch")
    chunk_size: int = option(256, low=1, help=CHUNK_HELP)


def load_backbone(model: ModelLike, options: ModelOptions) -> Backbone:
    """The model to work on: the one given (its device is used), or `options.backbone` loaded on `options.device`."""
    if isinstance(model, Backbone):
        return model
    if isinstance(model, nn.Module):
        raise CnnlabError(f"a bare {type(model).__name__} does not say how to preprocess images: pass "
                          "cnnlab.wrap(module, mean=..., std=..., input_size=...)")
    if model is not None and not isinstance(model, str):
        raise CnnlabError(f"model must be a spec string or a cnnlab Backbone, got {type(model).__name__}")
    return load_model(model or options.backbone, options.weights, options.device, mean=options.mean, std=options.std,
                      input_size=options.input_size)


def load_backbones(model: ModelLike | Sequence[ModelLike], options: ModelOptions) -> list[Backbone]:
    """Several models: a list (specs or Backbones), one model, or the list `options.backbone` names."""
    if model is not None:
        return [load_backbone(m, options) for m in (model if isinstance(model, (list, tuple)) else [model])]
    names = options.backbone if isinstance(options.backbone, list) else [options.backbone]
    if len(names) > 1 and options.weights != "default" and not options.weights.startswith("random"):
        raise CnnlabError("a weights file names one backbone: use --weights default|random with several backbones")
    return [load_backbone(n, options) for n in names]


def recorded(config: C, backbone: Backbone) -> C:
    """The config as run: `backbone` names the model really used (a wrapped module cannot be rebuilt from it)."""
    spec = backbone.spec or f"<wrapped {backbone.name}>"
    if spec == config.backbone and backbone.weights == config.weights:
        return config
    return config.replace(backbone=spec, weights=backbone.weights)


def configure(cls: type[C], config: C | None, options: dict) -> C:
    """`config` (or the defaults) with keyword options on top; an unknown option is a one-line error."""
    if config is None:  # built once, with the options (not the defaults first: their parts would be built too)
        return cls.from_dict(options)
    if not isinstance(config, cls):
        raise CnnlabError(f"config must be a {cls.__name__}, got {type(config).__name__}")
    return config.replace(**options) if options else config


def with_options(cls: type[Config]) -> Callable:
    """Give a job function a signature that lists its config's options (for help(), IDEs and notebooks), keeping
    the config's defaults as the single source (a part's own options are keyword arguments too: see its class)."""
    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        base = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
        found = [f for f in fields(cls) if f.name not in {p.name for p in base}]
        fn.__signature__ = sig.replace(parameters=base + [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=field_default(f)) for f in found])
        fn.__doc__ = (fn.__doc__ or "") + f"\n\n    Options ({cls.__name__}):\n" + "\n".join(
            f"    {f.name}: {option_meta(f).get('help', '')}" for f in found) + "\n"
        fn.config_class = cls
        return fn
    return decorate
