"""The features job: `cnnlab.features` / `cnnlab features` — features of images at several cut points from one pass;
a class-per-folder dataset is cached, or streamed into a feature store (`transfer/store.py`). Extraction itself:
`transfer/features.py`."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..core.config import option
from ..core.data import ImageFolder
from ..core.errors import CnnlabError
from ..core.images import skip_reasons
from ..core.inputs import ImagesLike, batches
from ..core.calls import ModelLike, configure, load_backbone, recorded, with_options
from ..core.results import Result
from ..core.runner import Chunk, RunDirSink, chunk_ranges, settings_tag
from ..core.runs import atomic_path, default_cache_dir, is_npz
from ..core.precision import resolve_precision
from ..transfer.features import ExtractionOptions, extract_features, forward_features
from ..transfer.store import FeatureStore, load_features, write_index, write_store


@dataclass
class FeaturesConfig(ExtractionOptions):
    """Extracts features of DATA/<class>/<images> at every cut point in --layers from ONE forward pass and saves
    them to an .npz (one array per layer, plus paths, labels and classes). Results are cached: a rerun with the
    same backbone, weights, preprocessing and files costs no forward pass. Any module path is a cut point too."""

    command = "features"
    data: str | None = option(None, required=True, help="dataset folder: one subfolder per class")
    layers: list[str] | None = option(None, help="comma-separated cut points (see `cnnlab models`; default: the "
                                                 "backbone's default layer)")



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
        if is_npz(out):
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
    """An in-memory result committed as a store's parts (of CHUNK rows) and indexed, so every folder reads the same."""
    from ..transfer.features import CHUNK

    labels = result.labels if result.labels is not None else np.full(len(result.paths), -1)
    sink = RunDirSink(folder, settings_tag(result._meta(), result.paths))
    ranges = chunk_ranges(len(result.paths), CHUNK)
    for k, r in enumerate(ranges):
        rows = [{"image": result.paths[i], "label": int(labels[i])} for i in r]
        sink.commit(k, Chunk(rows, {l: np.asarray(result.features[l][r.start:r.stop]) for l in result.layers}))
    write_index(folder, sink, len(ranges), result.classes, {**result._meta(), "layers": result.layers},
                result.skipped)


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
    if out is not None and not is_npz(out) and _class_folder(source):
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
    timing = write_store(backbone, ds, layers, out, pool=cfg.pool, flip=cfg.flip, batch_size=cfg.batch_size,
                         workers=cfg.workers, precision=cfg.precision, chunk_size=cfg.chunk_size, progress=progress)
    store = load_features(out)
    return FeaturesResult(cfg, layers, None, store.paths, store.labels, store.classes, store.skipped, timing, store)


