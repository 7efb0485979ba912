"""The transfer capability, one call per job: `classify`, `features`, `transfer`. Each returns a result object; nothing
is written until its `save()`."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..core.backbones import Backbone
from ..core.data import ImageFolder, folder_split, parse_split, random_split
from ..core.errors import CnnlabError
from ..core.images import skip_reasons
from ..core.inputs import ImagesLike, batches, read_images, sources
from ..core.stream import stream_job
from ..core.jobs import ModelLike, configure, load_backbone, recorded, with_options
from ..core.models import load_model
from ..core.results import Result
from ..core.runs import atomic_path, default_cache_dir, write_json, write_text
from ..core.shards import distributed
from .classifier import TransferClassifier, expand_layer
from .classify import classification_figure, classify_tensor
from .configs import ClassifyConfig, FeaturesConfig, TransferConfig
from .features import FeatureSet, extract_features, forward_features, resolve_precision
from .store import FeatureStore, load_features, write_store
from .svm import run_grid

PREVIEW = 8  # images shown in classify's figure (every image is in the JSON)


# -------------------------------------------------------------------------------------------------------- classify
class ClassifyResult(Result):
    kind, figure_name = "classify", "classify.png"

    def __init__(self, config: ClassifyConfig, backbone: str, results: list[dict], skipped: list[tuple] | list[dict],
                 preview: list, model: str | None = None):
        super().__init__(config)
        self.backbone, self.results, self.model = backbone, results, model
        self.skipped = [s if isinstance(s, dict) else {"image": s[0], "error": s[1]} for s in skipped]
        self.preview = preview  # the first images as the network saw them

    def image_rows(self) -> list[dict]:
        return self.results

    def write_images(self, folder: Path, part: int | None = None) -> None:
        """Nothing per image: classify's results are its rows."""

    def summary(self) -> dict:
        s = {"backbone": self.backbone, "results": self.results, "skipped": self.skipped}
        if self.model:
            s["model"] = self.model
        return s | ({"run_dir": str(self.run_dir)} if self.run_dir else {})

    def text(self) -> str:
        lines = []
        for r in self.results:
            lines.append(r["image"])
            lines += [f"  {t['prob']:6.1%}  {t['label']} ({t['index']})" for t in r["top"]]
        return "\n".join(lines)

    def figures(self) -> dict:
        if not self.preview:
            return {}
        shown = self.results[:len(self.preview)]
        fig = classification_figure([Path(r["image"]).name for r in shown], self.preview, [r["top"] for r in shown],
                                    f"Top-{self.config.topk} classes, {self.backbone}"
                                    + (f" (the first {len(shown)} of {len(self.results)} images)"
                                       if len(self.results) > len(shown) else ""))
        return {self.figure_name: fig}

    @property
    def exit_code(self) -> int:
        return 0 if self.results else 2


@with_options(ClassifyConfig)
def classify(model: ModelLike | TransferClassifier = None, images: ImagesLike | None = None, *,
             config: ClassifyConfig | None = None, out: str | os.PathLike | None = None, progress: bool = False,
             **options) -> ClassifyResult:
    """Top-k classes of images: the model's own classes (ImageNet's for the pretrained backbones), or, with
    `model=` a `TransferClassifier` (or the option `model="RUN_DIR"`), the classes a transfer run learned. With
    `out`, the run is streamed into that folder chunk by chunk (results.jsonl): bounded memory, resumable, shared out
    over torchrun processes."""
    cfg = configure(ClassifyConfig, config, options)
    inputs = images if images is not None else cfg.inputs
    if inputs is None or (isinstance(inputs, list) and not inputs):
        raise CnnlabError("no input images given")
    if isinstance(model, TransferClassifier) or cfg.model:
        clf = model if isinstance(model, TransferClassifier) else TransferClassifier.load(
            cfg.model, model if isinstance(model, Backbone) else None, cfg.device)
        results, skipped = clf.top(inputs, cfg.topk)
        return ClassifyResult(cfg, clf.backbone, results, skipped, [], cfg.model or "TransferClassifier")
    backbone = load_backbone(model, cfg)
    cfg = recorded(cfg, backbone)
    items, prepared = sources(inputs)
    if out is None:
        return _classify_chunk(backbone, cfg, items, prepared, progress)
    return stream_job(cfg, items, prepared, Path(out), backbone.device, progress,
                      lambda chunk, first: _classify_chunk(backbone, cfg, chunk, prepared, False),
                      lambda cfg, rows, skipped, seconds, items, prepared, root: ClassifyResult(
                          cfg, cfg.backbone, rows, skipped, _preview(backbone, items, rows, prepared)))


def _classify_chunk(backbone: Backbone, cfg: ClassifyConfig, items: list, prepared: bool,
                    progress: bool) -> ClassifyResult:
    results, skipped, preview = [], [], []
    for names, x, bad in tqdm(batches(items, backbone.preprocess, cfg.batch_size, prepared), desc="classify",
                              unit="batch", disable=not progress):
        skipped += bad
        if x is None:
            continue
        results += [{"image": n, "top": t} for n, t in zip(names, classify_tensor(backbone, x, cfg.topk))]
        preview += list(x[:PREVIEW - len(preview)])
    return ClassifyResult(cfg, cfg.backbone, results, skipped, preview)


def _preview(backbone: Backbone, items: list, rows: list[dict], prepared: bool) -> list:
    by_name = {s.name: s for s in items}
    shown = [by_name[r["image"]] for r in rows[:PREVIEW]]
    return list(read_images(shown, prepared=prepared).batch(backbone.preprocess)) if shown else []


# -------------------------------------------------------------------------------------------------------- features
class FeaturesResult(Result):
    """`.features` {layer: (N, D) float32}, `.paths`, `.labels` and `.classes` (for a class-per-folder dataset);
    `.store` when the features were streamed into a feature store folder."""

    kind = "features"

    def __init__(self, config: FeaturesConfig, layers: list[str], features: dict[str, np.ndarray] | None,
                 paths: list[str], labels: np.ndarray | None, classes: Sequence[str], skipped: list[dict],
                 timing: dict, store: FeatureStore | None = None):
        super().__init__(config)
        self.layers, self._features, self.paths = layers, features, paths
        self.labels, self.classes, self.skipped, self.timing = labels, list(classes), skipped, timing
        self.store = store
        self.out: Path | None = store.root if store is not None else None

    @property
    def features(self) -> dict[str, np.ndarray]:
        if self._features is None:  # read from the store when first asked
            self._features = {l: self.store[l] for l in self.layers}
        return self._features

    def dims(self) -> dict[str, int]:
        if self._features is None:
            return self.store.dims()
        return {l: int(self._features[l].shape[1]) for l in self.layers}

    def summary(self) -> dict:
        return {"backbone": self.config.backbone, "weights": self.config.weights, "layers": self.layers,
                "out": str(self.out) if self.out else None, "n_images": len(self.paths), "dims": self.dims(),
                "images_per_s": self.timing.get("images_per_s"), "extract_s": self.timing.get("extract_s"),
                "cached_layers": self.timing.get("cached_layers", []), "precision": self.timing.get("precision"),
                "skipped": self.skipped, "skipped_images": [s["image"] for s in self.skipped]}

    def text(self) -> str:
        dims = ", ".join(f"{l}: {d}" for l, d in self.dims().items())
        rate = self.timing.get("images_per_s")
        return (f"{len(self.paths)} images → {self.out or '(not saved)'} ({dims}); "
                + (f"{rate:.1f} images/s" if rate else "nothing computed (cache or store)"))

    def save(self, out: str | os.PathLike | None = None, root: str | os.PathLike = "runs") -> Path:
        """`out` ending in .npz: that one file (arrays `features/<layer>`, `paths`, `labels`, `classes`, `meta/*`);
        otherwise a feature store folder (`cnnlab.load_features` reads both) with config.json and metrics.json."""
        if out is not None and str(out).endswith(".npz"):
            self._write_npz(Path(out))
            return Path(out)
        return super().save(out, root)

    def write_files(self, folder: Path) -> None:
        if self.store is not None and self.store.root.resolve() == folder.resolve():
            return  # streamed there already
        _write_store_from_memory(self, folder)
        self.out = folder

    def _meta(self) -> dict:
        c = self.config
        return {"backbone": c.backbone, "weights": c.weights, "pool": c.pool, "flip": c.flip,
                "precision": self.timing.get("precision")}

    def _write_npz(self, path: Path) -> None:
        self.out = path
        arrays = {f"features/{l}": self.features[l] for l in self.layers}
        labels = self.labels if self.labels is not None else np.full(len(self.paths), -1)
        meta = {f"meta/{k}": np.array(v) for k, v in self._meta().items()}
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, paths=np.array(self.paths), labels=labels, classes=np.array(self.classes), **arrays,
                         **meta)


def _write_store_from_memory(result: FeaturesResult, folder: Path) -> None:
    """An in-memory result written in the store's layout (parts of CHUNK rows), so every folder reads the same way."""
    from .features import CHUNK
    from .store import FORMAT

    n = len(result.paths)
    rows = []
    for k, start in enumerate(range(0, max(n, 1), CHUNK)):
        for l in result.layers:
            with atomic_path(folder / l / f"part-{k:05d}.npy") as tmp:
                np.save(tmp, result.features[l][start:start + CHUNK])
        rows.append(min(CHUNK, n - start))
    labels = result.labels if result.labels is not None else np.full(n, -1)
    write_json(folder / "index.json", {"format": FORMAT, **result._meta(), "layers": result.layers,
                                       "paths": result.paths, "labels": labels, "classes": result.classes,
                                       "rows_per_part": rows, "skipped": result.skipped})


def _class_folder(source) -> bool:
    return isinstance(source, (str, os.PathLike)) and Path(source).is_dir() and any(
        p.is_dir() and not p.name.startswith(".") for p in Path(source).iterdir())


@with_options(FeaturesConfig)
def features(model: ModelLike = None, images: ImagesLike | None = None, *, config: FeaturesConfig | None = None,
             out: str | os.PathLike | None = None, progress: bool = False, **options) -> FeaturesResult:
    """Features at every cut point in `layers` from one forward pass per batch. `images` (or the option `data`)
    may be a class-per-folder dataset (labels and classes come with it; cached, decoded in DataLoader workers) or
    any images (paths, PIL, arrays, a tensor). With `out` a folder (and a dataset), the features stream into a
    feature store there as they are computed: bounded memory, resumable, shared out over torchrun processes."""
    cfg = configure(FeaturesConfig, config, options)
    source = images if images is not None else cfg.data
    if source is None:
        raise CnnlabError("--data is required (a class-per-folder dataset), or pass images")
    backbone = load_backbone(model, cfg)
    cfg = recorded(cfg, backbone)
    layers = list(dict.fromkeys(cfg.layers or [backbone.default_layer]))
    backbone.check_layers(layers)
    if out is not None and not str(out).endswith(".npz") and _class_folder(source):
        return _features_to_store(backbone, ImageFolder.scan(source), layers, cfg, Path(out), progress)
    if _class_folder(source):
        ds = ImageFolder.scan(source)
        fs = extract_features(backbone, ds.paths, layers, pool=cfg.pool, flip=cfg.flip, batch_size=cfg.batch_size,
                              workers=cfg.workers, precision=cfg.precision, progress=progress,
                              cache_dir=(cfg.cache_dir or default_cache_dir()) if cfg.cache else None,
                              chunk_size=cfg.chunk_size)
        return FeaturesResult(cfg, layers, fs.features, [str(ds.paths[i]) for i in fs.keep], ds.labels[fs.keep],
                              ds.classes, skip_reasons(fs.failed), fs.timing)
    precision = resolve_precision(cfg.precision, backbone.device)
    chunks, names, skipped = {l: [] for l in layers}, [], []
    for chunk, x, bad in tqdm(batches(source, backbone.preprocess, cfg.batch_size), desc="features", unit="batch",
                              disable=not progress):
        skipped += [{"image": n, "error": e} for n, e in bad]
        if x is None:
            continue
        out = forward_features(backbone, x, layers, cfg.pool, cfg.flip, precision)
        for l in layers:
            chunks[l].append(out[l].cpu().numpy())
        names += chunk
    if not names:
        raise CnnlabError("no readable input images")
    feats = {l: np.concatenate(c) for l, c in chunks.items()}
    return FeaturesResult(cfg, layers, feats, names, None, [], skipped, {"precision": precision})


def _features_to_store(backbone, ds: ImageFolder, layers: list[str], cfg: FeaturesConfig, out: Path,
                       progress: bool) -> FeaturesResult:
    rank, world = distributed(backbone.device)
    timing = write_store(backbone, ds, layers, out, pool=cfg.pool, flip=cfg.flip, batch_size=cfg.batch_size,
                         workers=cfg.workers, precision=cfg.precision, chunk_size=cfg.chunk_size, rank=rank,
                         world=world, progress=progress and rank == 0)
    store = load_features(out)
    return FeaturesResult(cfg, layers, None, store.paths, store.labels, store.classes, store.skipped, timing, store)


# -------------------------------------------------------------------------------------------------------- transfer
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
        return results_markdown(self._summary) + (
            f"\nselected {sel['layer']} C={sel['C']:g}: test accuracy {sel['test_accuracy']:.4f}"
            + (f" → {self.run_dir}" if self.run_dir else ""))

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
        return folder_split(Path(config.data))
    ds = ImageFolder.scan(config.data)
    if config.limit_per_class:
        rng = np.random.default_rng(config.seed if config.limit_seed is None else config.limit_seed)
        keep = np.concatenate([rng.permutation(np.flatnonzero(ds.labels == c))[:config.limit_per_class]
                               for c in range(len(ds.classes))])
        ds = ds.subset(np.sort(keep))
    return ds, None


def _backbones(model, config: TransferConfig) -> list[Backbone]:
    if isinstance(model, (list, tuple)):
        return [load_backbone(m, config) for m in model]
    if model is not None:
        return [load_backbone(model, config)]
    names = config.backbone.split("+")
    if len(names) > 1 and config.weights not in ("default", "random"):
        raise CnnlabError("a weights file names one backbone: use --weights default|random with several backbones")
    return [load_model(n, config.weights, config.device, mean=config.mean, std=config.std,
                       input_size=config.input_size) for n in names]


def _extract(config: TransferConfig, backbones: list[Backbone], paths, progress: bool) -> FeatureSet:
    """Features of every cut point the layer specs name, from each backbone (one cached pass per backbone)."""
    parts = list(dict.fromkeys(p for spec in config.layers for p in spec.split("+")))
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
             config: TransferConfig | None = None, progress: bool = False, **options) -> TransferResult:
    """The report's transfer experiment on a class-per-folder dataset: features → (layer × C) grid of LinearSVCs,
    selection by cross-validation on the training split only, one score on test; returns the fitted classifier."""
    if data is not None:
        options["data"] = str(data)
    cfg = configure(TransferConfig, config, options)
    if cfg.features:
        return _transfer_from_store(cfg, load_features(cfg.features))
    if not cfg.data:
        raise CnnlabError("--data is required (a class-per-folder dataset), or --features")
    backbones = _backbones(model, cfg)
    if model is not None:
        cfg = cfg.replace(backbone="+".join(b.spec or f"<wrapped {b.name}>" for b in backbones))
    ds, split = _dataset_and_split(cfg)
    fs = _extract(cfg, backbones, ds.paths, progress)
    if split is not None:  # map the folder split onto the readable rows
        pos = {int(i): r for r, i in enumerate(fs.keep)}
        split = type(split)(np.array([pos[i] for i in split.train if i in pos]),
                            np.array([pos[i] for i in split.test if i in pos]), split.description)
    names = [b.name for b in backbones]
    specs = {expand_layer(spec, names): spec for spec in cfg.layers}
    paths = [str(ds.paths[i]) for i in fs.keep]
    return _fit(cfg, fs.features, ds.labels[fs.keep], list(ds.classes), paths, split, specs, fs.timing,
                skip_reasons(fs.failed), lambda layer, precision: TransferClassifier(
                    None, ds.classes, layer, backbones, cfg.weights, cfg.pool, cfg.flip, cfg.scaling, precision,
                    cfg.device))


def _transfer_from_store(cfg: TransferConfig, store: FeatureStore) -> TransferResult:
    """The SVM grid on features a `cnnlab features` run stored (store folder or .npz)."""
    labels, keep = store.labels, np.arange(len(store.paths))
    if parse_split(cfg.split)[0] == "folders":
        raise CnnlabError("--split folders needs --data; with --features use random:K")
    if cfg.limit_per_class:
        rng = np.random.default_rng(cfg.seed if cfg.limit_seed is None else cfg.limit_seed)
        keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:cfg.limit_per_class]
                                       for c in range(len(store.classes))]))
    parts = list(dict.fromkeys(p for spec in cfg.layers for p in spec.split("+")))
    features = {p: np.asarray(store[p])[keep] for p in parts}
    meta = store.index
    cfg = cfg.replace(backbone=meta.get("backbone") or cfg.backbone, weights=meta.get("weights") or cfg.weights)
    timing = {"extract_s": 0.0, "images_per_s": None, "cached_layers": parts, "precision": meta.get("precision")}
    return _fit(cfg, features, labels[keep], store.classes, [store.paths[i] for i in keep], None,
                {spec: spec for spec in cfg.layers}, timing, store.skipped,
                lambda layer, precision: TransferClassifier(
                    None, store.classes, layer, [meta.get("backbone")], meta.get("weights", "default"),
                    meta.get("pool", cfg.pool), bool(meta.get("flip", cfg.flip)), cfg.scaling, precision or "fp32",
                    cfg.device))


def _fit(cfg: TransferConfig, features: dict, y: np.ndarray, classes: list[str], paths: list[str], split,
         specs: dict[str, str], timing: dict, skipped: list[dict], make_classifier) -> TransferResult:
    """Split (15-Scene protocol unless given), the (layer × C) grid with CV on train, one score on test."""
    if split is None:
        split = random_split(y, parse_split(cfg.split)[1], cfg.seed)
    if len(split.test) == 0:
        raise CnnlabError("the test split is empty")
    result = run_grid(features, y, split.train, split.test, list(specs), list(cfg.Cs), cfg.scaling, cfg.folds,
                      cfg.seed)
    for row in result.grid + [result.selected]:  # report the layer specs as the user wrote them
        row["layer"] = specs[row["layer"]]
    y_test = y[split.test]
    per_class = {c: float((result.test_pred[y_test == i] == i).mean()) for i, c in enumerate(classes)
                 if (y_test == i).any()}
    summary = {
        "backbone": cfg.backbone, "weights": cfg.weights, "split": split.description, "seed": cfg.seed,
        "n_train": int(len(split.train)), "n_test": int(len(split.test)),
        "grid": result.grid, "selected": result.selected,
        "timing": {"extract_s": timing["extract_s"], "images_per_s": timing["images_per_s"], "fit_s": result.fit_s},
        "scaling": cfg.scaling, "classes": list(classes), "per_class_accuracy": per_class,
        "skipped": skipped, "skipped_images": [s["image"] for s in skipped],
        "cached_layers": timing["cached_layers"], "precision": timing["precision"],
    }
    classifier = make_classifier(result.selected["layer"], timing["precision"])
    classifier.estimator = result.model
    split_files = {"train": [paths[i] for i in split.train], "test": [paths[i] for i in split.test]}
    return TransferResult(cfg, summary, classifier, y_test, result.test_pred, split_files)


def load_classifier(run_dir: str | os.PathLike, model: Backbone | Sequence[Backbone] | None = None,
                    device: str = "cpu") -> TransferClassifier:
    """The classifier a `transfer` run saved (`model` supplies a wrapped module no spec can rebuild)."""
    return TransferClassifier.load(run_dir, model, device)


# ----------------------------------------------------------------------------------------------------- reporting
def results_markdown(summary: dict) -> str:
    """A table like the report's Q2-4.12: one row per (layer, C)."""
    sel = summary["selected"]
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
    ConfusionMatrixDisplay.from_predictions(y_true, y_pred, labels=list(range(n)), display_labels=list(classes),
                                            normalize="true", values_format=".2f", ax=ax, colorbar=False,
                                            cmap="Blues", xticks_rotation=60)
    for t in ax.texts:
        t.set_fontsize(6)
    ax.set_title("Normalized confusion matrix (test split)")
    return fig
