"""Hugging Face `transformers` image classifiers as backbones: `hf:ORG/NAME` (the Hub, or its local cache) and
`hf:PATH` (a `save_pretrained` folder), through `AutoModelForImageClassification` and `AutoImageProcessor`; and,
for a model already in hand, the preprocessing its architecture's image processor uses. `transformers` is an
optional extra (`pip install 'cnnlab[hf]'`), imported only here and only when an HF model is asked for."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from .errors import CnnlabError, WeightsUnavailable
from .preprocess import Preprocess

PREFIX = "hf:"
_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL's codes, as image processors store them


def transformers_module():
    try:
        import transformers
    except ImportError:
        raise CnnlabError("Hugging Face models need transformers: pip install 'cnnlab[hf]'") from None
    return transformers


def is_hf_model(module: nn.Module) -> bool:
    """A `transformers` model (without importing transformers: its models carry a config with a model_type)."""
    config = getattr(module, "config", None)
    return isinstance(getattr(config, "model_type", None), str) and hasattr(module, "can_generate")


def preprocess_of(processor, config=None) -> Preprocess:
    """What an image processor does, as cnnlab's resize-the-shorter-side-then-crop: its mean and std (0 and 1 when
    it does not normalize), its crop (or its resize when it does not crop), its crop_pct, its resampling."""
    size = dict(getattr(processor, "size", None) or {})
    crop = dict(getattr(processor, "crop_size", None) or {}) if getattr(processor, "do_center_crop", False) else {}
    side = size.get("shortest_edge") or size.get("height") or size.get("longest_edge")
    input_size = int(crop.get("height") or side or getattr(config, "image_size", None) or 224)
    if config is not None and isinstance(getattr(config, "image_size", None), int) and not crop:
        input_size = config.image_size  # the size the architecture was built for (position embeddings, windows)
    crop_pct = getattr(processor, "crop_pct", None)
    resize = int(input_size / crop_pct) if crop_pct else int(side or input_size) if crop else input_size
    normalize = getattr(processor, "do_normalize", True)
    mean = tuple(processor.image_mean) if normalize and processor.image_mean is not None else (0.0, 0.0, 0.0)
    std = tuple(processor.image_std) if normalize and processor.image_std is not None else (1.0, 1.0, 1.0)
    interpolation = _RESAMPLE.get(int(getattr(processor, "resample", 2) or 2), "bilinear")
    return Preprocess(input_size, max(resize, input_size), interpolation, mean, std)


def default_processor(model: nn.Module):
    """The architecture's image processor with its default settings (for a model built from a config alone)."""
    transformers = transformers_module()
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

    names = IMAGE_PROCESSOR_MAPPING_NAMES.get(model.config.model_type)
    if isinstance(names, dict):
        names = [names.get("torchvision"), names.get("pil")]
    for name in names if isinstance(names, (list, tuple)) else [names]:
        if name and hasattr(transformers, name):
            try:
                return getattr(transformers, name)()
            except Exception:  # noqa: BLE001 — a processor that needs files of its own (timm_wrapper's)
                continue
    return None


def model_preprocess(model: nn.Module) -> Preprocess | None:
    """An HF model's preprocessing from its architecture's processor and its config (None when it has none)."""
    processor = default_processor(model)
    return preprocess_of(processor, model.config) if processor is not None else None


def labels_of(config) -> tuple[str, ...] | None:
    """The class names in `id2label`, unless they are transformers' placeholders (LABEL_0, LABEL_1, …)."""
    id2label = getattr(config, "id2label", None) or {}
    labels = [str(id2label[k]) for k in sorted(id2label, key=int)] if id2label else []
    if not labels or all(label == f"LABEL_{i}" for i, label in enumerate(labels)):
        return None
    return tuple(labels)


def _source(name: str) -> tuple[str, bool]:
    """The repository id or folder an `hf:` spec names, and whether it is a local folder."""
    if not name:
        raise CnnlabError("hf: needs a model: hf:ORG/NAME (the Hugging Face Hub) or hf:PATH (a save_pretrained folder)")
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local), True
    if name.startswith(("/", "./", "../", "~")) or local.exists():
        raise CnnlabError(f"hf:{name}: no such folder (hf:PATH names a save_pretrained folder; hf:ORG/NAME a model "
                          "of the Hub)")
    return name, False


def load_config(name: str):
    """The model's config: from the folder, the local cache, or — when the hub answers — the Hub."""
    from . import hub

    transformers = transformers_module()
    source, local = _source(name)
    try:
        return transformers.AutoConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as exc:
        if local:
            raise CnnlabError(f"{source} holds no Hugging Face model config (config.json): {exc}") from None
    if not hub.reachable():
        raise WeightsUnavailable(hub.offline_hint(f"the files of hf:{name}", flag="hf:PATH (a save_pretrained "
                                                                               "folder)").replace(" to a state dict", ""))
    try:
        return transformers.AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise CnnlabError(f"no Hugging Face model {name!r}: {str(exc).splitlines()[0]}") from None


def build(name: str, config) -> nn.Module:
    """The architecture with random weights."""
    transformers = transformers_module()
    named = [a for a in getattr(config, "architectures", None) or [] if hasattr(transformers, a)]
    try:  # the class the files name (DeiT: with or without its teacher), else the auto class of the model type
        return getattr(transformers, named[0])(config) if named else \
            transformers.AutoModelForImageClassification.from_config(config)
    except (ValueError, TypeError) as exc:  # not an image classifier
        raise CnnlabError(f"hf:{name} is not an image classifier ({config.model_type}): "
                          f"{str(exc).splitlines()[0][:160]}") from None


def pretrained_state(name: str) -> dict:
    """The model's own weights (the folder's, the cache's, or the Hub's)."""
    transformers = transformers_module()
    source, _ = _source(name)
    for local_only in (True, False):
        try:
            model = transformers.AutoModelForImageClassification.from_pretrained(source, local_files_only=local_only)
            return model.state_dict()
        except OSError:
            from . import hub

            if local_only and hub.reachable():
                continue
            raise WeightsUnavailable(hub.offline_hint(f"the weights of hf:{name}")) from None
    raise AssertionError


def processor_preprocess(name: str, model: nn.Module) -> Preprocess:
    """The model's own image processor (its preprocessor_config.json), else its architecture's defaults."""
    transformers = transformers_module()
    source, _ = _source(name)
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, KeyError):
        processor = None
    if processor is None:
        found = model_preprocess(model)
        if found is None:
            raise CnnlabError(f"hf:{name} has no image processor to say its preprocessing: pass --mean, --std and "
                              "--input-size")
        return found
    return preprocess_of(processor, model.config)
