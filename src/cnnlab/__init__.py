"""cnnlab: transfer, explain and generate with ImageNet CNNs — one Python API, with the CLI, the demo and the report
as thin faces on it.

    import cnnlab
    model = cnnlab.load_model("efficientnet_lite0")          # or "torchvision:resnet18", "timm:NAME", "file.py:fn"
    model = cnnlab.wrap(my_net, mean=..., std=..., input_size=224)   # any classifier nn.Module
    res = cnnlab.saliency(model, "photo.jpg", method="gradcam")       # .maps, .summary(), .figure(), .save(dir)
    clf = cnnlab.transfer("data/15scene", split="random:100").classifier
    clf.predict(["new.jpg"])
"""
__version__ = "0.3.0"

from . import gan  # noqa: E402  (cnnlab.gan.train / sample / evaluate)
from .core.backbones import Backbone  # noqa: E402
from .core.config import Config  # noqa: E402
from .core.errors import CnnlabError  # noqa: E402
from .core.inputs import read_images  # noqa: E402
from .core.models import create_backbone, describe_backbone, list_backbones, load_model, wrap  # noqa: E402
from .core.results import Result  # noqa: E402
from .explain.api import ClassVizResult, FoolResult, SaliencyResult, classviz, fool, saliency  # noqa: E402
from .explain.configs import ClassVizConfig, FoolConfig, SaliencyConfig  # noqa: E402
from .report.reproduce import ReproduceConfig, ReproduceResult, reproduce  # noqa: E402
from .transfer.api import (ClassifyResult, FeaturesResult, TransferResult, classify, features,  # noqa: E402
                           load_classifier, transfer)
from .transfer.classifier import TransferClassifier  # noqa: E402
from .transfer.configs import ClassifyConfig, FeaturesConfig, TransferConfig  # noqa: E402
from .transfer.features import extract_features  # noqa: E402
from .transfer.store import FeatureStore, load_features  # noqa: E402

describe = describe_backbone

__all__ = [
    "Backbone", "ClassVizConfig", "ClassVizResult", "ClassifyConfig", "ClassifyResult", "CnnlabError", "Config",
    "FeaturesConfig", "FeaturesResult", "FoolConfig", "FoolResult", "ReproduceConfig", "ReproduceResult", "Result",
    "SaliencyConfig", "SaliencyResult", "TransferClassifier", "TransferConfig", "TransferResult", "classify",
    "classviz", "create_backbone", "describe", "describe_backbone", "extract_features", "features", "fool", "gan",
    "list_backbones", "load_classifier", "load_features", "load_model", "read_images", "FeatureStore", "reproduce", "saliency", "transfer", "wrap",
]
