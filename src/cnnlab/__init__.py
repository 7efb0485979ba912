"""cnnlab: transfer, explain and generate with ImageNet CNNs — one Python API, with the CLI, the demo, the report and
the app as thin faces on it.

    import cnnlab
    model = cnnlab.load_model("efficientnet_lite0")          # or "torchvision:resnet18", "timm:NAME", "file.py:fn"
    model = cnnlab.wrap(my_net, mean=..., std=..., input_size=224)   # any classifier nn.Module
    res = cnnlab.saliency(model, "photo.jpg", method="gradcam")       # .maps, .summary(), .figure(), .save(dir)
    clf = cnnlab.transfer("data/15scene", split="random:100").classifier
    clf.predict(["new.jpg"])

Names are loaded when first used (PEP 562), so `import cnnlab` costs nothing beyond Python itself, and the report,
the app, scikit-learn and matplotlib load only for the jobs that need them.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__  # noqa: F401
from .commands import api_names

# public name → the module that defines it (relative to this package): the jobs' names come from the command
# table (`commands.py`), the rest from here
_WHERE = {
    "Backbone": ".core.backbones", "Config": ".core.config", "CnnlabError": ".core.errors",
    "read_images": ".core.inputs", "Result": ".core.results",
    "create_backbone": ".core.models", "list_backbones": ".core.table", "load_model": ".core.models",
    "wrap": ".core.models",
    "TransferClassifier": ".transfer.classifier", "extract_features": ".transfer.features",
    "FeatureStore": ".transfer.store", "load_features": ".transfer.store",
    **api_names(),
}
del api_names
_ALIASES = {"describe": "describe_backbone"}

__all__ = sorted([*_WHERE, *_ALIASES, "gan"])

# `cnnlab.transfer` is the job; the capability package of the same name is imported first (it is light), so that
# importing it later does not rebind the name to the package.
from . import transfer as _transfer_package  # noqa: E402,F401

del transfer  # noqa: F821


def __getattr__(name: str) -> Any:
    if name == "gan":
        return importlib.import_module(".gan", __name__)
    target = _ALIASES.get(name, name)
    if target not in _WHERE:
        raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[target], __name__), target)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from . import gan  # noqa: F401
    from .core.backbones import Backbone  # noqa: F401
    from .core.config import Config  # noqa: F401
    from .core.errors import CnnlabError  # noqa: F401
    from .core.inputs import read_images  # noqa: F401
    from .core.models import create_backbone, load_model, wrap  # noqa: F401
    from .core.table import list_backbones  # noqa: F401
    from .core.results import Result  # noqa: F401
    from .jobs.classify import ClassifyConfig, ClassifyResult, classify  # noqa: F401
    from .jobs.classviz import ClassVizConfig, ClassVizResult, classviz  # noqa: F401
    from .jobs.atlas import AtlasConfig, AtlasResult, atlas  # noqa: F401
    from .jobs.dream import DreamConfig, DreamResult, dream  # noqa: F401
    from .jobs.evaluate import EvaluateSaliencyConfig, SaliencyEvaluation, evaluate_saliency  # noqa: F401
    from .jobs.features import FeaturesConfig, FeaturesResult, features  # noqa: F401
    from .jobs.fool import FoolConfig, FoolResult, fool  # noqa: F401
    from .jobs.models import ModelsConfig, ModelsResult, catalog, describe_backbone  # noqa: F401
    from .jobs.saliency import SaliencyConfig, SaliencyResult, saliency  # noqa: F401
    from .jobs.transfer import TransferConfig, TransferResult, load_classifier, transfer  # noqa: F401
    from .report.reproduce import ReproduceConfig, ReproduceResult, reproduce  # noqa: F401
    from .transfer.classifier import TransferClassifier  # noqa: F401
    from .transfer.features import extract_features  # noqa: F401
    from .transfer.store import FeatureStore, load_features  # noqa: F401
