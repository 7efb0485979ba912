"""The transfer job: `cnnlab.transfer` / `cnnlab transfer` — the report's part 1: features → (layer × C) grid of
linear SVMs (`transfer/svm.py`), selection by cross-validation on the training split, one score on test, and the
fitted classifier (`transfer/classifier.py`)."""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..core.backbones import Backbone
from ..core.config import SEED_MAX, JOIN, field_default, flag_of, option
from ..core.data import SPLIT_HELP, ImageFolder, folder_split, parse_split, random_split
from ..core.errors import CnnlabError
from ..core.images import skip_reasons
from ..core.jobs import ModelLike, configure, load_backbones, with_options
from ..core.registry import DEFAULT_BACKBONE
from ..core.results import Result
from ..core.runs import default_cache_dir, write_json, write_text
from ..transfer import bow, plan
from ..transfer.classifier import BowClassifier, NetworkClassifier, TransferClassifier, expand_layer
from ..transfer.finetune import (BATCHNORM, CHECKPOINT, HEADS, OPTIMIZERS, SELECTIONS, check_checkpoint,
                                 finetune_spelling)
from ..transfer.features import ExtractionOptions, FeatureSet, extract_features
from ..transfer.store import FeatureStore, load_features
from ..transfer.svm import SCALINGS, run_grid

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
    epochs: int = option(8, low=1, high=10_000, help="mlp head / fine-tuning: epochs of the fixed schedule (a warm-up epoch, then "
                                         "cosine to 0 at the last step; the mlp head on cached features: 10× as many); "
                                         "the final weights are kept unless "
                                         "--select best")
    lr: float | None = option(None, low=0, low_open=True, high=10.0, default_help="0.01 with sgd, 0.001 with adamw",
                              help="mlp head / fine-tuning: the head's peak learning rate; unit k below it gets lr × "
                                   "--layer-decay^k")
    layer_decay: float = option(0.7, low=0, low_open=True, high=1, help="fine-tuning: learning-rate factor per "
                                                                        "unit of depth")
    optimizer: str = option("sgd", choices=OPTIMIZERS, help="fine-tuning: SGD with Nesterov momentum 0.9, or "
                                                             "AdamW (the mlp head always trains with AdamW)")
    batchnorm: str = option("frozen", choices=BATCHNORM, help="fine-tuning: BatchNorm keeps ImageNet's statistics "
                                                              "(frozen), or learns them from the batches (train)")
    train_batch_size: int = option(32, low=1, help="mlp head / fine-tuning: images per optimizer step "
                                                   "(--batch-size is the extraction's)")
    label_smoothing: float = option(0.1, low=0, high=0.99, help="mlp head / fine-tuning: label smoothing")
    weight_decay: float = option(1e-4, low=0, help="fine-tuning: weight decay")
    augment: bool = option(True, negate="--no-augment", help="fine-tuning: train on the model's center crop, "
                                                             "without random resized crops and flips")
    ema: float = option(0.0, low=0, high=0.9999, metavar="DECAY",
                        help="fine-tuning: keep (and validate) an exponential moving average of the weights, this "
                             "decay per optimizer step; 0: the weights themselves")
    select: str = option("last", choices=SELECTIONS,
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
    """`.classifier` (a `TransferClassifier`: `predict(images)`), `.grid`, `.selected`, `.split` (train/test paths)."""

    kind, figure_name = "transfer", "confusion.png"

    def __init__(self, config: TransferConfig, summary: dict, classifier: TransferClassifier, y_test: np.ndarray,
                 test_pred: np.ndarray, split: dict[str, list[str]]):
        super().__init__(config)
        self._summary, self.classifier, self.split = summary, classifier, split
        self.y_test, self.test_pred = y_test, test_pred

    @property
    def grid(self) -> list[dict]:
        return self._summary["grid"]

    @property
    def selected(self) -> dict:
        return self._summary["selected"]

    @property
    def classes(self) -> list[str]:
        return self._summary["classes"]

    def summary(self) -> dict:
        return self._summary | ({"run_dir": str(self.run_dir)} if self.run_dir else {})

    def text(self) -> str:
        sel = self.selected
        what = f"epoch {sel['epoch']}" if "epoch" in sel else f"{sel['layer']} C={sel['C']:g}"
        return results_markdown(self._summary) + (
            f"\nselected {what}: test accuracy {sel['test_accuracy']:.4f}" + (f" → {self.run_dir}" if self.run_dir
                                                                                  else ""))

    def figures(self) -> dict:
        return {self.figure_name: confusion_figure(self.y_test, self.test_pred, self.classes)}

    def write_files(self, folder: Path) -> None:
        write_text(folder / "results.md", results_markdown(self._summary))
        write_text(folder / "results.csv", results_csv(self.grid))
        write_json(folder / "split.json", self.split)
        self.classifier.save(folder)


def _dataset_and_split(config: TransferConfig):
    kind, k = parse_split(config.split)
    if kind == "folders":
        if config.limit_per_class:
            raise CnnlabError("--limit-per-class draws a subset of one class-per-folder set; --split folders uses "
                              "train/ and test/ whole: drop one of them")
        return folder_split(Path(config.data))
    ds = ImageFolder.scan(config.data)
    if config.limit_per_class:
        rng = np.random.default_rng(config.seed if config.limit_seed is None else config.limit_seed)
        keep = np.concatenate([rng.permutation(np.flatnonzero(ds.labels == c))[:config.limit_per_class]
                               for c in range(len(ds.classes))])
        ds = ds.subset(np.sort(keep))
    return ds, None


def _extract(config: TransferConfig, backbones: list[Backbone], paths, progress: bool) -> FeatureSet:
    """Features of every cut point the layer specs name, from each backbone (one cached pass per backbone)."""
    parts = list(dict.fromkeys(p for group in config.layers for p in group))
    cache_dir = (config.cache_dir or default_cache_dir()) if config.cache else None
    sets = []
    for backbone in backbones:
        backbone.check_layers(parts)
        sets.append(extract_features(backbone, paths, parts, pool=config.pool, flip=config.flip,
                                     batch_size=config.batch_size, workers=config.workers,
                                     precision=config.precision, cache_dir=cache_dir, progress=progress,
                                     chunk_size=config.chunk_size))
    if len(sets) == 1:
        return sets[0]
    keep = sets[0].keep
    for fs in sets[1:]:  # unreadable files are the same for every backbone; intersect all the same
        keep = np.intersect1d(keep, fs.keep)
    features = {}
    for backbone, fs in zip(backbones, sets):
        rows = np.searchsorted(fs.keep, keep)
        features.update({f"{backbone.name}/{part}": fs.features[part][rows] for part in parts})
    extract_s = sum(fs.timing["extract_s"] for fs in sets)
    computed = any(fs.timing["images_per_s"] for fs in sets)  # None when every layer came from the cache
    timing = {"extract_s": extract_s, "images_per_s": len(keep) / extract_s if computed and extract_s > 0 else None,
              "cached_layers": [f"{b.name}/{l}" for b, fs in zip(backbones, sets) for l in fs.timing["cached_layers"]],
              "precision": sets[0].timing["precision"]}
    return FeatureSet(features, keep, sets[0].failed, timing)


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
    _check_options(cfg, model)
    if cfg.resume:  # a checkpoint that cannot be continued is said before any image is read
        if out is None:
            raise CnnlabError("--resume needs --out: the run directory whose checkpoint to continue")
        check_checkpoint(Path(out) / CHECKPOINT)
    if cfg.features:
        return _transfer_from_store(cfg, load_features(cfg.features))
    if not cfg.data:
        raise CnnlabError("--data is required (a class-per-folder dataset), or --features")
    r = plan.route(cfg.head, cfg.finetune)
    if r != "svm" and model is None and cfg.backbone == list(DEFAULT_TRANSFER_BACKBONE):
        cfg = cfg.replace(backbone=[DEFAULT_BACKBONE])  # a trained head trains one network: the default's first
    data = _dataset_and_split(cfg)
    _check_data(cfg, data, r)  # before any model is loaded or any image read
    if bow.NAME in cfg.backbone:
        return _transfer_bow(cfg, progress, data)
    backbones = load_backbones(model, cfg)
    if model is not None:
        cfg = cfg.replace(backbone=[b.spec or f"<wrapped {b.name}>" for b in backbones])
    if r != "svm":
        return _transfer_network(cfg, backbones, progress, Path(out) if out else None, on_epoch, data)
    return _transfer_svm(cfg, backbones, progress, data)


def _check_options(cfg: TransferConfig, model) -> None:
    """What can be refused from the options alone: an option the route does not read, a --finetune spelling, a
    trained head over several backbones or on a source that has no network."""
    plan.refuse_ignored(cfg, _DEFAULTS, lambda name: flag_of(_FIELDS[name]))
    if not cfg.layers or not all(cfg.layers):
        raise CnnlabError("--layers needs at least one cut point (e.g. pre_logits)")
    if not cfg.Cs:
        raise CnnlabError("--C needs at least one value (e.g. 1)")
    finetune_spelling(cfg.finetune)
    r = plan.route(cfg.head, cfg.finetune)
    if r == "svm":
        return
    what = "--finetune" if r == "finetune" else f"--head {cfg.head}"
    if cfg.features:
        raise CnnlabError(f"{what} trains a network on images; --features holds features only (the SVM grid): "
                          "pass --data instead")
    if bow.NAME in cfg.backbone:
        raise CnnlabError(f"{what} trains a network; {bow.NAME} has none (it takes the SVM grid)")
    several = len(model) if isinstance(model, (list, tuple)) else 1 if model is not None else len(cfg.backbone)
    if several > 1 and (model is not None or cfg.backbone != list(DEFAULT_TRANSFER_BACKBONE)):
        raise CnnlabError(f"{what} trains one network: name a single --backbone (e.g. {DEFAULT_BACKBONE}); "
                          "backbones joined with '+' are for the SVM grid")
    if cfg.select == "best" and not cfg.val_fraction:
        raise CnnlabError("--select best chooses on the validation split: give --val-fraction > 0")
    if cfg.resume and cfg.finetune == "none":
        raise CnnlabError("--resume continues a fine-tuning checkpoint: it needs --finetune last:N|all")


def _asked_folds(cfg: TransferConfig) -> int | None:
    """--folds as given; the default is one the grid lowers to the smallest class's training count (its help says)."""
    return cfg.folds if cfg.folds != _DEFAULTS["folds"] else None


def _check_data(cfg: TransferConfig, data, r: str) -> None:
    ds, split = data
    if split is None:  # random:K, drawn later
        counts = np.bincount(ds.labels, minlength=len(ds.classes))
        plan.check_counts(ds.classes, counts, parse_split(cfg.split), r, cfg.val_fraction, folds=_asked_folds(cfg))
    else:
        train = np.bincount(ds.labels[split.train], minlength=len(ds.classes))
        test = np.bincount(ds.labels[split.test], minlength=len(ds.classes))
        plan.check_counts(ds.classes, train, ("folders", None), r, cfg.val_fraction, test, folds=_asked_folds(cfg))


def _transfer_svm(cfg: TransferConfig, backbones: list[Backbone], progress: bool, data) -> TransferResult:
    """The report's route: features of every backbone (cached), then the (layer × C) grid of linear SVMs."""
    ds, split = data
    fs = _extract(cfg, backbones, ds.paths, progress)
    split = _readable(split, fs.keep)
    names = [b.name for b in backbones]
    paths = [str(ds.paths[i]) for i in fs.keep]
    return _fit(cfg, fs.features, ds.labels[fs.keep], list(ds.classes), paths, split,
                [expand_layer(g, names) for g in cfg.layers], fs.timing,
                skip_reasons(fs.failed), lambda layer, precision: TransferClassifier(
                    None, ds.classes, layer, backbones, cfg.weights, cfg.pool, cfg.flip, cfg.scaling, precision,
                    cfg.device))


def _readable(split, keep: np.ndarray):
    """A folder split mapped onto the readable rows (None, a random split to draw later, stays None)."""
    if split is None:
        return None
    pos = {int(i): r for r, i in enumerate(keep)}
    return type(split)(np.array([pos[i] for i in split.train if i in pos], dtype=int),
                       np.array([pos[i] for i in split.test if i in pos], dtype=int), split.description)


def _transfer_bow(cfg: TransferConfig, progress: bool, data) -> TransferResult:
    """SIFT + bag of words: dense SIFT of every image, the split, the vocabulary from the training split's
    descriptors only, then the same (layer × C) grid as CNN features."""
    import time

    from tqdm.auto import tqdm

    from ..core.images import load_image, pil_to_tensor

    if cfg.backbone != [bow.NAME]:
        raise CnnlabError(f"{bow.NAME} cannot be joined with other backbones ('+'): use it alone")
    layers = [["spm"]] if cfg.layers == [list(g) for g in DEFAULT_LAYERS] else cfg.layers
    for part in (p for g in layers for p in g):
        if part not in bow.LAYERS:
            raise CnnlabError(f"{bow.NAME} has no cut point {part!r}; it has {', '.join(bow.LAYERS)}")
    cfg = cfg.replace(layers=layers)
    ds, split = data
    settings, t0 = bow.BowSettings(), time.perf_counter()
    described, keep, failed = [], [], []
    for i, path in enumerate(tqdm(ds.paths, desc="dense SIFT", unit="img", disable=not progress)):
        try:
            described.append(bow.describe(pil_to_tensor(load_image(path)), settings))
            keep.append(i)
        except CnnlabError:
            failed.append(path)
    keep = np.array(keep, dtype=int)
    if not len(keep):
        raise CnnlabError(f"no readable images in {cfg.data}")
    y = ds.labels[keep]
    split = _readable(split, keep) or random_split(y, parse_split(cfg.split)[1], cfg.seed)
    vocabulary = bow.fit_vocabulary([described[i][1] for i in split.train], settings, cfg.seed)
    features = bow.features(described, vocabulary, settings)
    extract_s = time.perf_counter() - t0
    timing = {"extract_s": extract_s, "images_per_s": len(keep) / extract_s, "cached_layers": [], "precision": "fp32"}
    return _fit(cfg, features, y, list(ds.classes), [str(ds.paths[i]) for i in keep], split, layers, timing,
                skip_reasons(failed),
                lambda layer, precision: BowClassifier(None, ds.classes, layer, vocabulary, settings, cfg.scaling))


def _validation(y: np.ndarray, train: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Positions within `train` held out for model selection: a seeded share of each class (at least one)."""
    rng = np.random.default_rng(seed + 7919)
    val = [rng.permutation(np.flatnonzero(y[train] == c))[:max(1, round(fraction * (y[train] == c).sum()))]
           for c in np.unique(y[train])]
    return np.sort(np.concatenate(val))


def _transfer_network(cfg: TransferConfig, backbones: list[Backbone], progress: bool, out: Path | None,
                      on_epoch: Callable[[dict], None] | None, data):
    """A linear or MLP head (on frozen, cached features; or with the last units fine-tuned on augmented images),
    chosen on a validation split carved from the training split, scored once on test."""
    import copy
    import time

    import torch

    from ..core.blocks import blocks
    from ..core.models import head_of, set_head
    from ..transfer.finetune import Images, Recipe, diverged, finetune, parse_finetune, train_head, trained_blocks

    if len(backbones) != 1 or backbones[0].spec is None:
        raise CnnlabError("--head linear|mlp and --finetune train one backbone given by its spec (--backbone a+b is "
                          "for the SVM)")
    base = backbones[0]
    head = cfg.head if cfg.head != "svm" else "linear"
    n_unfrozen = parse_finetune(cfg.finetune, len(blocks(base.net, head_of(base.net))))
    if cfg.resume and out is None:
        raise CnnlabError("--resume needs --out: the run directory whose checkpoint to continue")
    recipe = Recipe(epochs=cfg.epochs, lr=cfg.lr, layer_decay=cfg.layer_decay, weight_decay=cfg.weight_decay,
                    label_smoothing=cfg.label_smoothing, batch_size=cfg.train_batch_size, optimizer=cfg.optimizer,
                    batchnorm=cfg.batchnorm, augment=cfg.augment, ema=cfg.ema, select=cfg.select,
                    patience=cfg.patience, seed=cfg.seed, precision=cfg.precision, workers=cfg.workers)
    ds, split = data
    t0 = time.perf_counter()
    fs = _extract(cfg.replace(layers=[["pre_logits"]]), [base], ds.paths, progress)
    keep = fs.keep
    y = ds.labels[keep]
    split = _readable(split, keep) or random_split(y, parse_split(cfg.split)[1], cfg.seed)
    val = _validation(y, split.train, cfg.val_fraction, cfg.seed) if cfg.val_fraction else np.array([], int)
    net = copy.deepcopy(base.net)
    head_at = set_head(net, len(ds.classes), head, seed=cfg.seed)
    name = f"{base.name} + {head} head" + (f", fine-tuned {cfg.finetune}" if n_unfrozen else "")
    model = Backbone(name, net, base.preprocess, base.cut_points, base.weights, None, labels=list(ds.classes),
                     spec=None, default_layer=base.default_layer, cam_layers=base.cam_layers).to(base.device).eval()
    paths = [ds.paths[i] for i in keep]
    # the head first, on the cached frozen features (fastai's fine_tune: a trained head before anything unfreezes)
    X = fs.features["pre_logits"]
    trained, history, chosen = train_head(X[split.train], y[split.train], val, len(ds.classes), head, recipe,
                                  on_epoch=None if n_unfrozen else on_epoch)
    net.get_submodule(head_at).load_state_dict(trained.state_dict())
    if not n_unfrozen:
        with torch.no_grad():
            test_pred = trained(torch.from_numpy(np.asarray(X[split.test], np.float32))).argmax(1).numpy()
    else:
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        history, chosen = finetune(model, [paths[i] for i in split.train], y[split.train], np.setdiff1d(
            np.arange(len(split.train)), val), val, n_unfrozen, recipe, out, cfg.resume, progress, on_epoch)
        loader = torch.utils.data.DataLoader(Images([paths[i] for i in split.test], y[split.test], model, False),
                                             batch_size=cfg.batch_size, num_workers=cfg.workers)
        with torch.inference_mode():
            test_pred = np.concatenate([model(x.to(model.device)).argmax(1).cpu().numpy() for x, _ in loader])
    fit_s = time.perf_counter() - t0
    y_test = y[split.test]
    kept = next(r for r in history if r["epoch"] == chosen)  # the epoch whose weights the classifier holds
    selected = {"layer": "pre_logits", "head": head, "finetune": cfg.finetune, "epoch": chosen,
                "rule": ("fitted to convergence" if head == "linear" and not n_unfrozen else
                         "lowest validation loss" if cfg.select == "best" else "last epoch"),
                "val_loss": kept.get("val_loss"), "val_accuracy": kept["val_accuracy"],
                "test_accuracy": float((test_pred == y_test).mean())}
    timing = fs.timing | {"fit_s": fit_s, "precision": recipe.precision}
    skipped = skip_reasons([ds.paths[i] for i in np.setdiff1d(np.arange(len(ds.paths)), keep)])
    warning = diverged(history, chosen) if n_unfrozen else None
    summary = _summary(cfg, split, y_test, test_pred, list(ds.classes), timing, skipped, [], selected, scaling=None,
                       n_train=int(len(split.train) - len(val)), n_val=int(len(val)), history=history, head=head,
                       finetune=cfg.finetune, warnings=[warning] if warning else [],
                       trained=_trained(model.net, head_at, trained_blocks(model.net, n_unfrozen)),
                       notes=[] if len(val) else ["val_loss and val_accuracy are null: no validation split "
                                                  "(--val-fraction 0)"])
    classifier = NetworkClassifier(model, {"base": base.spec, "head": head, "finetune": cfg.finetune,
                                           "test_accuracy": selected["test_accuracy"]})
    split_files = {"train": [str(paths[i]) for i in split.train], "test": [str(paths[i]) for i in split.test]}
    return TransferResult(cfg, summary, classifier, y_test, test_pred, split_files)


def _trained(net, head: str, trained: list) -> dict:
    """What a trained head and fine-tuning changed: the head, the blocks (deepest first) and the modules beside them
    that went with them, and the number of parameters trained."""
    names = [n for b in trained for n in b.params] + [f"{head}.{n}" for n, _ in net.get_submodule(head).named_parameters()]
    params = dict(net.named_parameters())
    return {"head": head, "blocks": [b.name for b in trained], "with_blocks": [g for b in trained for g in b.glue],
            "parameters": int(sum(params[n].numel() for n in names))}


def _transfer_from_store(cfg: TransferConfig, store: FeatureStore) -> TransferResult:
    """The SVM grid on features a `cnnlab features` run stored (store folder or .npz)."""
    labels, keep = store.labels, np.arange(len(store.paths))
    if parse_split(cfg.split)[0] == "folders":
        raise CnnlabError("--split folders needs --data; with --features use random:K")
    if cfg.limit_per_class:
        rng = np.random.default_rng(cfg.seed if cfg.limit_seed is None else cfg.limit_seed)
        keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:cfg.limit_per_class]
                                       for c in range(len(store.classes))]))
    parts = list(dict.fromkeys(p for group in cfg.layers for p in group))
    features = {p: np.asarray(store[p])[keep] for p in parts}
    meta = store.index
    cfg = cfg.replace(backbone=meta.get("backbone") or cfg.backbone, weights=meta.get("weights") or cfg.weights)
    timing = {"extract_s": 0.0, "images_per_s": None, "cached_layers": parts, "precision": meta.get("precision")}
    return _fit(cfg, features, labels[keep], store.classes, [store.paths[i] for i in keep], None, cfg.layers, timing,
                store.skipped,
                lambda layer, precision: TransferClassifier(
                    None, store.classes, layer, [meta.get("backbone")], meta.get("weights", "default"),
                    meta.get("pool", cfg.pool), bool(meta.get("flip", cfg.flip)), cfg.scaling, precision or "fp32",
                    cfg.device))


def _fit(cfg: TransferConfig, features: dict, y: np.ndarray, classes: list[str], paths: list[str], split,
         layers: list[list[str]], timing: dict, skipped: list[dict], make_classifier) -> TransferResult:
    """Split (15-Scene protocol unless given), the (layer × C) grid with CV on train, one score on test. `layers`
    are the feature groups of `cfg.layers` (those of every backbone, with several), named as the user wrote them."""
    if split is None:
        split = random_split(y, parse_split(cfg.split)[1], cfg.seed)
    if len(split.test) == 0:
        raise CnnlabError("the test split is empty")
    names = [JOIN.join(g) for g in cfg.layers]
    result = run_grid(features, y, split.train, split.test, layers, list(cfg.Cs), cfg.scaling, cfg.folds, cfg.seed,
                      names=names)
    summary = _summary(cfg, split, y[split.test], result.test_pred, list(classes), timing | {"fit_s": result.fit_s},
                       skipped, result.grid, result.selected | {"inverse_temperature": result.inverse_temperature})
    classifier = make_classifier(cfg.layers[names.index(result.selected["layer"])], timing["precision"])
    classifier.estimator, classifier.inverse_temperature = result.model, result.inverse_temperature
    split_files = {"train": [paths[i] for i in split.train], "test": [paths[i] for i in split.test]}
    return TransferResult(cfg, summary, classifier, y[split.test], result.test_pred, split_files)


def _summary(cfg: TransferConfig, split, y_test: np.ndarray, test_pred: np.ndarray, classes: list[str], timing: dict,
             skipped: list[dict], grid: list[dict], selected: dict, **route) -> dict:
    """The summary every route returns (metrics.json, --json): the split, the grid and the selection, the test
    split's per-class accuracy, timing and what was skipped; `route` adds or overrides a route's own keys."""
    return {
        "backbone": JOIN.join(cfg.backbone), "weights": cfg.weights, "split": split.description, "seed": cfg.seed,
        "n_train": int(len(split.train)), "n_test": int(len(split.test)), "grid": grid, "selected": selected,
        "timing": {k: timing[k] for k in ("extract_s", "images_per_s", "fit_s")}, "scaling": cfg.scaling,
        "classes": classes, "per_class_accuracy": {c: float((test_pred[y_test == i] == i).mean())
                                                   for i, c in enumerate(classes) if (y_test == i).any()},
        "skipped": skipped, "skipped_images": [s["image"] for s in skipped],
        "cached_layers": timing["cached_layers"], "precision": timing["precision"], **route}


def load_classifier(run_dir: str | os.PathLike, model: Backbone | Sequence[Backbone] | None = None,
                    device: str = "cpu") -> TransferClassifier:
    """The classifier a `transfer` run saved (`model` supplies a wrapped module no spec can rebuild)."""
    return TransferClassifier.load(run_dir, model, device)


# ----------------------------------------------------------------------------------------------------- reporting
def results_markdown(summary: dict) -> str:
    """A table like the report's Q2-4.12: one row per (layer, C)."""
    sel = summary["selected"]
    if not summary["grid"]:  # a trained head / fine-tuned network: its validation curve
        lines = [f"# Transfer: {summary['backbone']}, {summary['head']} head, fine-tuning {summary['finetune']}, "
                 f"split {summary['split']}, seed {summary['seed']}", "",
                 f"{summary['n_train']} training / {summary['n_val']} validation (from the training split) / "
                 f"{summary['n_test']} test images.", "",
                 "| epoch | training loss | validation loss | validation accuracy |", "|---|---|---|---|"]
        num = lambda v: "—" if v is None or v != v else format(v, ".4f")  # noqa: E731  (None, NaN: not measured)
        lines += [f"| {r['epoch']} | {num(r['loss'])} | {num(r.get('val_loss'))} | {num(r['val_accuracy'])} |"
                  for r in summary["history"]]
        lines += ["", f"Selected: epoch {sel['epoch']} ({sel.get('rule', 'best validation accuracy')}): test "
                      f"accuracy **{sel['test_accuracy']:.4f}**.", *[f"\n**Warning**: {w}." for w in
                                                                      summary.get("warnings", [])],
                  "", "| class | test accuracy |", "|---|---|"]
        lines += [f"| {c} | {a:.4f} |" for c, a in summary["per_class_accuracy"].items()]
        return "\n".join(lines) + "\n"
    lines = [
        f"# Transfer: {summary['backbone']} ({summary['weights']} weights), split {summary['split']}, seed {summary['seed']}",
        "", f"{summary['n_train']} training / {summary['n_test']} test images; scaling {summary['scaling']}; "
        "C and layer selected by cross-validation on the training split only.", "",
        "| layer | C | CV accuracy | test accuracy |", "|---|---|---|---|",
    ]
    for r in summary["grid"]:
        mark = " **(selected)**" if (r["layer"], r["C"]) == (sel["layer"], sel["C"]) else ""
        lines.append(f"| {r['layer']} | {r['C']:g} | {r['cv_accuracy']:.4f} | {r['test_accuracy']:.4f}{mark} |")
    lines += ["", f"Selected: layer {sel['layer']}, C = {sel['C']:g}: test accuracy **{sel['test_accuracy']:.4f}**.", "",
              "| class | test accuracy |", "|---|---|"]
    lines += [f"| {c} | {a:.4f} |" for c, a in summary["per_class_accuracy"].items()]
    return "\n".join(lines) + "\n"


def results_csv(grid: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["layer", "C", "cv_accuracy", "test_accuracy"])
    w.writeheader()
    w.writerows(grid)
    return buf.getvalue()


def confusion_figure(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]):
    from sklearn.metrics import ConfusionMatrixDisplay

    from ..core.figures import new_figure

    n = len(classes)
    fig = new_figure(0.55 * n + 3, 0.55 * n + 2.5)
    ax = fig.subplots()
    shown = ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=list(range(n)), display_labels=list(classes), normalize="true", values_format=".2f",
        ax=ax, colorbar=False, cmap="Blues", xticks_rotation=60)
    # each number in black or white by its own cell's lightness (scikit-learn splits at half the largest value,
    # which leaves dark numbers on the mid-blue cells); an empty cell (no such confusion) is left blank
    for (i, j), t in np.ndenumerate(shown.text_):
        r, g, b, _ = shown.im_.cmap(shown.im_.norm(shown.confusion_matrix[i, j]))
        t.set_color("black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white")
        t.set_fontsize(8 if n <= 10 else 7)
        if shown.confusion_matrix[i, j] == 0:
            t.set_text("")
    ax.set_title("Normalized confusion matrix (test split): the share of each true class predicted as each class")
    return fig
