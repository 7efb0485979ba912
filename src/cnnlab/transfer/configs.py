"""The transfer jobs' configs: classify, features, transfer. Each field is an option of the API call and of the CLI."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.backbones import POOLINGS
from ..core.config import option
from ..core.data import SPLIT_HELP
from ..core.jobs import ModelOptions
from .features import PRECISIONS
from .svm import SCALINGS

DEFAULT_CS = [100.0, 10.0, 1.0, 0.1, 0.01, 0.001]
# The three offline backbones, concatenated: 0.950 ± 0.003 on 15-Scene over 5 splits vs 0.942 for Lite0 alone, for
# about 3.5× Lite0's extraction time (docs/benchmarks.md); `--backbone efficientnet_lite0` is the fast choice.
DEFAULT_TRANSFER_BACKBONE = "efficientnet_lite0+efficientnet_lite1+efficientnet_lite2"


@dataclass
class ClassifyConfig(ModelOptions):
    """Classifies image files (or every image in folders) into the 1000 ImageNet classes, or the model's own.
    With --model RUN_DIR, into the classes that `cnnlab transfer` learned there (its backbone, cut point and SVM).
    JSON: {"results": [{"image", "top": [{"index", "label", "prob"}]}], "skipped": [{"image", "error"}]}; index is
    the standard ImageNet-1k index (synsets in sorted order). Unreadable images are listed and skipped."""

    command = "classify"
    inputs: list[str] = option(default_factory=list, positional=True, required=True, metavar="IMAGES_OR_DIRS",
                               help="image files or folders")
    topk: int = option(5, low=1, help="classes per image")
    model: str | None = option(None, metavar="RUN_DIR", help="a `cnnlab transfer` run directory: classify into its "
                                                             "learned classes with its saved classifier")
    batch_size: int = option(32, low=1, help="images per forward pass")
    chunk_size: int = option(256, low=1, help="with --out: images per committed chunk (what a rerun skips, what a "
                                              "torchrun process takes)")


@dataclass
class ExtractionOptions(ModelOptions):
    pool: str = option("avg", choices=POOLINGS, help="how spatial maps become vectors")
    flip: bool = option(False, help="average features of each image and its mirror image")
    batch_size: int = option(64, low=1, help="images per forward pass")
    workers: int = option(2, low=0, help="DataLoader processes decoding images")
    precision: str = option("auto", choices=PRECISIONS,
                            help="'auto' uses bf16 autocast only where the hardware runs it natively")
    cache: bool = option(True, negate="--no-cache", help="neither read nor write the feature cache")
    cache_dir: str | None = option(None, env="CNNLAB_CACHE", default_help="$CNNLAB_CACHE or ~/.cache/cnnlab",
                                   help="feature cache folder")
    chunk_size: int = option(512, low=1, help="images per committed chunk (cache entries, store parts, torchrun "
                                              "shares)")


@dataclass
class FeaturesConfig(ExtractionOptions):
    """Extracts features of DATA/<class>/<images> at every cut point in --layers from ONE forward pass and saves
    them to an .npz (one array per layer, plus paths, labels and classes). Results are cached: a rerun with the
    same backbone, weights, preprocessing and files costs no forward pass. Any module path is a cut point too."""

    command = "features"
    data: str | None = option(None, required=True, help="dataset folder: one subfolder per class")
    layers: list[str] | None = option(None, help="comma-separated cut points (see `cnnlab models`; default: the "
                                                 "backbone's default layer)")


@dataclass
class TransferConfig(ExtractionOptions):
    """Transfer learning by feature extraction (the report's part 1): a linear SVM (scikit-learn LinearSVC) on
    features cut at each --layers point, for each --C. Every (layer, C) gets its k-fold cross-validation accuracy
    on the training split and its test accuracy (the report's table Q2-4.12); the layer and C are selected by CV
    on the training split only, and the selection is scored once on test. Writes results.md, results.csv,
    metrics.json, confusion.png, split.json and the fitted classifier (classifier.skops + classifier.json: use it
    with `cnnlab classify IMAGES --model RUN_DIR` or cnnlab.load_classifier). --layers a+b concatenates cut
    points; --backbone a+b concatenates backbones (each layer spec is read from every backbone, each part
    normalized on its own; features cached per backbone)."""

    command = "transfer"
    data: str | None = option(None, help="dataset folder: one subfolder per class (or train/ and test/)")
    split: str = option("random:100", help=SPLIT_HELP)
    seed: int = option(0, help="split and CV seed")
    backbone: str = option(DEFAULT_TRANSFER_BACKBONE, help="a backbone, or several joined by '+' (their features "
                                                           "concatenated); measured best on 15-Scene")
    # 'a+b' concatenates cut points: pre_logits+block5 measured +1.4 points over pre_logits alone on 15-Scene, and
    # offering pre_logits alone as well only let CV pick it on a noisy split (0.947 vs 0.950; docs/benchmarks.md)
    layers: list[str] = option(default_factory=lambda: ["pre_logits+block5"],
                               help="comma-separated cut points; 'a+b' concatenates two")
    Cs: list[float] = option(default_factory=lambda: list(DEFAULT_CS), flag="--C", low=0, low_open=True,
                             help="comma-separated SVM C values")
    scaling: str = option("power-l2", choices=SCALINGS, help="feature scaling before the SVM")
    folds: int = option(5, low=2, help="cross-validation folds")
    limit_per_class: int | None = option(None, low=1, help="use at most this many images per class (a seeded subset)")
    features: str | None = option(None, metavar="STORE_OR_NPZ",
                                  help="precomputed features (a store folder or an .npz from `cnnlab features`) "
                                       "instead of extracting them; --data is then not read")
    limit_seed: int | None = option(None, cli=False, help="seed of that subset (default: --seed); fix it to vary "
                                                          "splits over cached features")
