"""The four routes of a transfer run, each from a checked config (`jobs/transfer.py`: `TransferConfig`, whose
plan `plan.py` checked before any work) to a `RouteResult`: the report's SVM grid on cached features of one or several
backbones (`svm_route`), the hand-made SIFT bag of words through the same grid (`bow_route`), a linear or MLP head
on frozen features or a fine-tuned network (`network_route`), and the SVM grid on a feature store (`store_route`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.backbones import Backbone
from ..core.config import JOIN
from ..core.data import ImageFolder, folder_split, parse_split, random_split
from ..core.errors import CnnlabError
from ..core.images import skip_reasons
from ..core.runs import default_cache_dir
from . import bow
from .classifier import BowClassifier, NetworkClassifier, TransferClassifier, expand_layer
from .features import FeatureSet, extract_features
from .store import FeatureStore
from .summary import TransferSummary
from .svm import run_grid


@dataclass
class RouteResult:
    """What a route returns: the config as run (a route may resolve options), the summary (`--json`), the kept
    classifier, the test labels and predictions, and the train/test files."""

    config: object
    summary: TransferSummary
    classifier: object
    y_test: np.ndarray
    test_pred: np.ndarray
    split: dict[str, list[str]]


def dataset_and_split(config):
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


def _extract(config, backbones: list[Backbone], paths, progress: bool) -> FeatureSet:
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


def svm_route(cfg, backbones: list[Backbone], progress: bool, data) -> RouteResult:
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


def bow_route(cfg, progress: bool, data, default_layers: bool) -> RouteResult:
    """SIFT + bag of words: dense SIFT of every image, the split, the vocabulary from the training split's
    descriptors only, then the same (layer × C) grid as CNN features."""
    import time

    from tqdm.auto import tqdm

    from ..core.images import load_image, pil_to_tensor

    if cfg.backbone != [bow.NAME]:
        raise CnnlabError(f"{bow.NAME} cannot be joined with other backbones ('+'): use it alone")
    layers = [["spm"]] if default_layers else cfg.layers
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


def network_route(cfg, backbones: list[Backbone], progress: bool, out: Path | None,
                      on_epoch: Callable[[dict], None] | None, data):
    """A linear or MLP head (on frozen, cached features; or with the last units fine-tuned on augmented images),
    chosen on a validation split carved from the training split, scored once on test."""
    import copy
    import time

    import torch

    from ..core.blocks import blocks
    from ..core.models import head_of, set_head
    from .finetune import Images, diverged, finetune, trained_blocks
    from .heads import train_head
    from .recipe import Recipe, parse_finetune

    if len(backbones) != 1 or backbones[0].spec is None:
        raise CnnlabError("--head linear|mlp and --finetune train one backbone given by its spec (--backbone a+b is "
                          "for the SVM)")
    base = backbones[0]
    head = cfg.head if cfg.head != "svm" else "linear"
    n_unfrozen = parse_finetune(cfg.finetune, len(blocks(base.net, head_of(base.net))))
    if cfg.resume and out is None:
        raise CnnlabError("--resume needs --out: the run directory whose checkpoint to continue")
    recipe = Recipe.of(cfg)
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
    summary = TransferSummary.of(cfg, split, y_test, test_pred, list(ds.classes), timing, skipped, [], selected, scaling=None,
                       n_train=int(len(split.train) - len(val)), n_val=int(len(val)), history=history, head=head,
                       finetune=cfg.finetune, warnings=[warning] if warning else [],
                       trained=_trained(model.net, head_at, trained_blocks(model.net, n_unfrozen)),
                       notes=[] if len(val) else ["val_loss and val_accuracy are null: no validation split "
                                                  "(--val-fraction 0)"])
    classifier = NetworkClassifier(model, {"base": base.spec, "head": head, "finetune": cfg.finetune,
                                           "test_accuracy": selected["test_accuracy"]})
    split_files = {"train": [str(paths[i]) for i in split.train], "test": [str(paths[i]) for i in split.test]}
    return RouteResult(cfg, summary, classifier, y_test, test_pred, split_files)


def _trained(net, head: str, trained: list) -> dict:
    """What a trained head and fine-tuning changed: the head, the blocks (deepest first) and the modules beside them
    that went with them, and the number of parameters trained."""
    names = [n for b in trained for n in b.params] + [f"{head}.{n}" for n, _ in net.get_submodule(head).named_parameters()]
    params = dict(net.named_parameters())
    return {"head": head, "blocks": [b.name for b in trained], "with_blocks": [g for b in trained for g in b.glue],
            "parameters": int(sum(params[n].numel() for n in names))}


def store_route(cfg, store: FeatureStore) -> RouteResult:
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


def _fit(cfg, features: dict, y: np.ndarray, classes: list[str], paths: list[str], split,
         layers: list[list[str]], timing: dict, skipped: list[dict], make_classifier) -> RouteResult:
    """Split (15-Scene protocol unless given), the (layer × C) grid with CV on train, one score on test. `layers`
    are the feature groups of `cfg.layers` (those of every backbone, with several), named as the user wrote them."""
    if split is None:
        split = random_split(y, parse_split(cfg.split)[1], cfg.seed)
    if len(split.test) == 0:
        raise CnnlabError("the test split is empty")
    names = [JOIN.join(g) for g in cfg.layers]
    result = run_grid(features, y, split.train, split.test, layers, list(cfg.Cs), cfg.scaling, cfg.folds, cfg.seed,
                      names=names)
    summary = TransferSummary.of(cfg, split, y[split.test], result.test_pred, list(classes), timing | {"fit_s": result.fit_s},
                       skipped, result.grid, result.selected | {"inverse_temperature": result.inverse_temperature})
    classifier = make_classifier(cfg.layers[names.index(result.selected["layer"])], timing["precision"])
    classifier.estimator, classifier.inverse_temperature = result.model, result.inverse_temperature
    split_files = {"train": [paths[i] for i in split.train], "test": [paths[i] for i in split.test]}
    return RouteResult(cfg, summary, classifier, y[split.test], result.test_pred, split_files)
