"""cnnlab: transfer, explain and generate with ImageNet CNNs."""
from .core.backbones import Backbone, create_backbone, describe_backbone, list_backbones
from .core.errors import CnnlabError
from .transfer.classify import classify_images
from .transfer.features import extract_features
from .transfer.pipeline import TransferConfig, run_transfer

__all__ = [
    "Backbone", "CnnlabError", "TransferConfig", "classify_images", "create_backbone", "describe_backbone",
    "extract_features", "list_backbones", "run_transfer",
]
__version__ = "0.2.0"
