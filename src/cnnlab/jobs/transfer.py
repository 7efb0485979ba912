"""The transfer job: `cnnlab.transfer` / `cnnlab transfer` — the report's part 1: features → (layer × C) grid of
linear SVMs (`transfer/svm.py`), selection by cross-validation on the training split, one score on test, and the
fitted classifier (`transfer/classifier.py`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..core.backbones import Backbone
from ..core.config import JOIN, SEED_MAX, field_default, flag_of, option
from ..core.data import SPLIT_HELP
from ..core.errors import CnnlabError
from ..core.calls import ModelLike, configure, load_backbones, with_options
from ..core.table import DEFAULT_BACKBONE
from ..core.results import Result
from ..core.runs import write_json, write_text
from ..transfer import bow, plan, routes
from ..transfer.classifier import TransferClassifier
from ..transfer.finetune import CHECKPOINT, check_checkpoint
from ..transfer.recipe import BATCHNORM, DEFAULT_RECIPE as _R, HEADS, OPTIMIZERS, SELECTIONS
from ..transfer.features import ExtractionOptions
from ..transfer.store import load_features
from ..transfer.summary import TransferSummary
from ..transfer.svm import SCALINGS
from ..transfer.tables import confusion_figure, results_csv, results_markdown

DEFAULT_CS = [100.0, 10.0, 1.0, 0.1, 0.01, 0.001]
# The three offline backbones, concatenated: the most accurate measured on 15-Scene, at the cost of three
# extractions (both in docs/benchmarks.md); `--backbone efficientnet_lite0` is the fast choice.
DEFAULT_TRANSFER_BACKBONE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
DEFAULT_LAYERS = (("pre_logits", "block5"),)


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
    seed: int = option(0, low=0, high=SEED_MAX, help="split and CV seed")
    backbone: list[str] = option(default_factory=lambda: list(DEFAULT_TRANSFER_BACKBONE), sep=JOIN,
                                 help="a backbone, or several joined by '+' (their features "
                                                           "concatenated); measured best on 15-Scene. 'sift-bow': "
                                                           "dense SIFT + bag of words with a spatial pyramid "
                                                           "(Lazebnik et al. 2006; cut points spm, bow), its "
                                                           "vocabulary fitted on the training split only")
    # 'a+b' concatenates cut points: why pre_logits+block5 alone, measured, is in docs/benchmarks.md (transfer)
    layers: list[list[str]] = option(default_factory=lambda: [list(g) for g in DEFAULT_LAYERS],
                               help="comma-separated cut points; 'a+b' concatenates two (sift-bow: spm when left "
                                    "at the default)")
    Cs: list[float] = option(default_factory=lambda: list(DEFAULT_CS), flag="--C", low=0, low_open=True,
                             help="comma-separated SVM C values")
    scaling: str = option("power-l2", choices=SCALINGS, help="feature scaling before the SVM")
    folds: int = option(5, low=2, help="cross-validation folds (the default 5 is lowered to the smallest class's "
                                        "training images; a number given must fit every class)")
    limit_per_class: int | None = option(None, low=1, help="use at most this many images per class (a seeded subset)")
    features: str | None = option(None, metavar="STORE_OR_NPZ",
                                  help="precomputed features (a store folder or an .npz from `cnnlab features`) "
                                       "instead of extracting them; --data is then not read")
    limit_seed: int | None = option(None, low=0, high=SEED_MAX, cli=False, help="seed of that subset (default: --seed); fix it to vary "
                                                          "splits over cached features")
    head: str = option("svm", choices=HEADS, help="the classifier on the features: the linear SVM grid; linear: "
                                                  "a logistic regression fitted to convergence (C by "
                                                  "cross-validation), a layer of the network; mlp: a hidden "
                                                  "layer trained by gradient (both give a network every command "
                                                  "takes: --backbone RUN_DIR)")
    finetune: str = option("none", metavar="none|last:N|all",
                           help="also train the backbone's last N units (or all), lower learning rates for "
                                "earlier ones; none: the head on frozen (cached) features")
    epochs: int = option(_R.epochs, low=1, high=10_000, help="mlp head / fine-tuning: epochs of the fixed schedule (a warm-up epoch, then "
                                         "cosine to 0 at the last step; the mlp head on cached features: 10× as many); "
                                         "the final weights are kept unless "
                                         "--select best")
    lr: float | None = option(None, low=0, low_open=True, high=10.0, default_help="0.01 with sgd, 0.001 with adamw",
                              help="mlp head / fine-tuning: the head's peak learning rate; unit k below it gets lr × "
                                   "--layer-decay^k")
    layer_decay: float = option(_R.layer_decay, low=0, low_open=True, high=1, help="fine-tuning: learning-rate factor per "
                                                                        "unit of depth")
    optimizer: str = option(_R.optimizer, choices=OPTIMIZERS, help="fine-tuning: SGD with Nesterov momentum 0.9, or "
                                                             "AdamW (the mlp head always trains with AdamW)")
    batchnorm: str = option(_R.batchnorm, choices=BATCHNORM, help="fine-tuning: BatchNorm keeps ImageNet's statistics "
                                                              "(frozen), or learns them from the batches (train)")
    train_batch_size: int = option(_R.batch_size, low=1, help="mlp head / fine-tuning: images per optimizer step "
                                                   "(--batch-size is the extraction's)")
    label_smoothing: float = option(_R.label_smoothing, low=0, high=0.99, help="mlp head / fine-tuning: label smoothing")
    weight_decay: float = option(_R.weight_decay, low=0, help="fine-tuning: weight decay")
    augment: bool = option(_R.augment, negate="--no-augment", help="fine-tuning: train on the model's center crop, "
                                                             "without random resized crops and flips")
    ema: float = option(_R.ema, low=0, high=0.9999, metavar="DECAY",
                        help="fine-tuning: keep (and validate) an exponential moving average of the weights, this "
                             "decay per optimizer step; 0: the weights themselves")
    select: str = option(_R.select, choices=SELECTIONS,
                         help="head / fine-tuning: which weights are kept: the last epoch's (the schedule's end), "
                              "or the epoch of lowest validation loss (ties to the later; epoch 0 is the head the "
                              "fine-tuning starts from)")
    patience: int | None = option(None, low=1, help="with --select best: stop after this many epochs without a "
                                                    "lower validation loss")
    val_fraction: float = option(0.1, low=0, high=0.5,
                                 help="head / fine-tuning: share of each class's training images held out for the "
                                      "validation curve (and --select best); never the test split; 0: none")
    resume: bool = option(False, help="fine-tuning: continue the checkpoint in --out")

_FIELDS = {f.name: f for f in fields(TransferConfig)}
_DEFAULTS = {name: field_default(f) for name, f in _FIELDS.items()}


class TransferResult(Result):
    """`.classifier` (a `TransferClassifier`: `predict(images)`), `.record` (the typed `TransferSummary`: `.grid`,
    `.selected`, …; `summary()` is its dict), `.grid`, `.selected`, `.split` (train/test paths)."""

    kind, figure_name = "transfer", "confusion.png"

    def __init__(self, config: TransferConfig, summary: TransferSummary, classifier: TransferClassifier,
                 y_test: np.ndarray, test_pred: np.ndarray, split: dict[str, list[str]]):
        super().__init__(config)
        self.record, self.classifier, self.split = summary, classifier, split
        self.y_test, self.test_pred = y_test, test_pred

    @property
    def grid(self) -> list[dict]:
        return self.record.grid

    @property
    def selected(self) -> dict:
        return self.record.selected

    @property
    def classes(self) -> list[str]:
        return self.record.classes

    def summary(self) -> dict:
        return self.record.summary() | ({"run_dir": str(self.run_dir)} if self.run_dir else {})

    def text(self) -> str:
        sel = self.selected
        what = f"epoch {sel['epoch']}" if "epoch" in sel else f"{sel['layer']} C={sel['C']:g}"
        return results_markdown(self.record.summary()) + (
            f"\nselected {what}: test accuracy {sel['test_accuracy']:.4f}" + (f" → {self.run_dir}" if self.run_dir
                                                                                  else ""))

    def figures(self) -> dict:
        return {self.figure_name: confusion_figure(self.y_test, self.test_pred, self.classes)}

    def write_files(self, folder: Path) -> None:
        write_text(folder / "results.md", results_markdown(self.record.summary()))
        write_text(folder / "results.csv", results_csv(self.grid))
        write_json(folder / "split.json", self.split)
        self.classifier.save(folder)


@with_options(TransferConfig)
def transfer(data: str | os.PathLike | None = None, model: ModelLike | Sequence[Backbone] = None, *,
             config: TransferConfig | None = None, progress: bool = False, out: str | os.PathLike | None = None,
             on_epoch: Callable[[dict], None] | None = None, **options) -> TransferResult:
    """The report's transfer experiment on a class-per-folder dataset: features → (layer × C) grid of LinearSVCs,
    selection by cross-validation on the training split only, one score on test; returns the fitted classifier.
    `layers` lists the candidates; a candidate that is itself a list (`[["pre_logits", "block5"]]`, the CLI's
    `pre_logits+block5`) concatenates those cut points. `model` may be a list of models: their features are
    concatenated. With a trained head (`head` linear|mlp, or `finetune`), `on_epoch` sees each epoch's row of the
    validation curve as it is done."""
    if data is not None:
        options["data"] = str(data)
    if isinstance(model, str):  # a spec, or several joined by '+': the config's to parse
        options["backbone"], model = model, None
    cfg = configure(TransferConfig, config, options)
    plan.check_options(cfg, model, _DEFAULTS, lambda name: flag_of(_FIELDS[name]), DEFAULT_TRANSFER_BACKBONE)
    if cfg.resume:  # a checkpoint that cannot be continued is said before any image is read
        if out is None:
            raise CnnlabError("--resume needs --out: the run directory whose checkpoint to continue")
        check_checkpoint(Path(out) / CHECKPOINT)
    if cfg.features:
        return _result(routes.store_route(cfg, load_features(cfg.features)))
    if not cfg.data:
        raise CnnlabError("--data is required (a class-per-folder dataset), or --features")
    r = plan.route(cfg.head, cfg.finetune)
    if r != "svm" and model is None and cfg.backbone == list(DEFAULT_TRANSFER_BACKBONE):
        cfg = cfg.replace(backbone=[DEFAULT_BACKBONE])  # a trained head trains one network: the default's first
    data = routes.dataset_and_split(cfg)
    # before any model is loaded or any image read; --folds as given (its default is lowered to fit, as its help says)
    plan.check_data(cfg, data, r, cfg.folds if cfg.folds != _DEFAULTS["folds"] else None)
    if bow.NAME in cfg.backbone:
        return _result(routes.bow_route(cfg, progress, data, cfg.layers == [list(g) for g in DEFAULT_LAYERS]))
    backbones = load_backbones(model, cfg)
    if model is not None:
        cfg = cfg.replace(backbone=[b.spec or f"<wrapped {b.name}>" for b in backbones])
    if r != "svm":
        return _result(routes.network_route(cfg, backbones, progress, Path(out) if out else None, on_epoch, data))
    return _result(routes.svm_route(cfg, backbones, progress, data))


def _result(o: routes.RouteResult) -> TransferResult:
    return TransferResult(o.config, o.summary, o.classifier, o.y_test, o.test_pred, o.split)


def load_classifier(run_dir: str | os.PathLike, model: Backbone | Sequence[Backbone] | None = None,
                    device: str = "cpu") -> TransferClassifier:
    """The classifier a `transfer` run saved (`model` supplies a wrapped module no spec can rebuild)."""
    return TransferClassifier.load(run_dir, model, device)
