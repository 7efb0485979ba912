"""A feature store for datasets larger than memory: `DIR/<layer>/part-00000.npy` (one file per chunk of images, in
file order), `DIR/parts/part-00000.json` (that chunk's files fingerprint, settings, kept and failed rows: written last,
it is the chunk's commit mark) and `DIR/index.json` (paths, labels, classes, failed files, layers, the model) once every
chunk is in. Extraction streams into it (memory does not grow with the number of images), resumes after a crash by
skipping committed chunks, and shares chunks out over torchrun processes. `load_features(DIR)` memory-maps it."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.backbones import Backbone
from ..core.data import ImageFolder
from ..core.errors import CnnlabError
from ..core.images import skip_reasons
from ..core.runs import atomic_path, write_json
from ..core.runner import barrier, chunk_ranges
from .features import CHUNK, _Chunk, _run_pass, files_fingerprint, resolve_precision

FORMAT = "cnnlab-features-1"


def _settings(backbone: Backbone, layers: list[str], pool: str, flip: bool, precision: str) -> dict:
    return {"backbone": backbone.spec or backbone.name, "weights": backbone.weights, "weights_id": backbone.weights_id,
            "layers": layers, "pool": pool, "flip": flip, "precision": precision,
            "preprocess": backbone.preprocess.to_dict()}


def _part(root: Path, k: int) -> Path:
    return root / "parts" / f"part-{k:05d}.json"


def _committed(root: Path, k: int, expect: dict) -> bool:
    try:
        done = json.loads(_part(root, k).read_text())
    except (OSError, ValueError):
        return False
    return {key: done.get(key) for key in expect} == expect


def write_store(backbone: Backbone, ds: ImageFolder, layers: Sequence[str], root: str | os.PathLike, *,
                pool: str = "avg", flip: bool = False, batch_size: int = 64, workers: int = 2,
                precision: str = "auto", chunk_size: int = CHUNK, rank: int = 0, world: int = 1,
                progress: bool = True) -> dict:
    """Extract `layers` for every image of `ds` into the store at `root` (this process's chunks); rank 0 writes the
    index when all processes are done. Returns timing: computed images and seconds (this process)."""
    import time

    root = Path(root)
    layers = list(dict.fromkeys(layers))
    backbone.check_layers(layers)
    precision = resolve_precision(precision, backbone.device)
    settings = _settings(backbone, layers, pool, flip, precision)
    tag = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    chunks = [_Chunk(r.start, r.stop, {}) for r in chunk_ranges(len(ds.paths), chunk_size)]
    expect = {k: {"settings": tag, "files": files_fingerprint(ds.paths[c.start:c.end])} for k, c in enumerate(chunks)}
    todo = [c for k, c in list(enumerate(chunks))[rank::world] if not _committed(root, k, expect[k])]
    index_of = {c.start: k for k, c in enumerate(chunks)}

    def commit(c: _Chunk, feats: dict, keep: np.ndarray, failed: np.ndarray) -> None:
        k = index_of[c.start]
        for layer, f in feats.items():
            with atomic_path(root / layer / f"part-{k:05d}.npy") as tmp:
                np.save(tmp, f.astype(np.float32, copy=False))
        write_json(_part(root, k), expect[k] | {"start": c.start, "end": c.end, "keep": keep, "failed": failed})

    t0 = time.perf_counter()
    if todo:
        _run_pass(backbone, ds.paths, todo, layers, pool, flip, precision, batch_size, workers, progress, commit)
    seconds = time.perf_counter() - t0
    barrier()  # every process's chunks are committed
    if rank == 0:
        missing = [k for k in range(len(chunks)) if not _committed(root, k, expect[k])]
        if missing:
            raise CnnlabError(f"chunks {missing[:5]} of {root} are missing: run again to complete the store")
        _write_index(root, ds, chunks, settings)
    barrier()
    computed = sum(c.end - c.start for c in todo)
    return {"computed_images": computed, "extract_s": seconds, "precision": precision,
            "images_per_s": computed / seconds if computed and seconds > 0 else None}


def _write_index(root: Path, ds: ImageFolder, chunks: list[_Chunk], settings: dict) -> None:
    keep, failed, rows = [], [], []
    for k, c in enumerate(chunks):
        part = json.loads(_part(root, k).read_text())
        keep += [c.start + i for i in part["keep"]]
        failed += [c.start + i for i in part["failed"]]
        rows.append(len(part["keep"]))
    write_json(root / "index.json", {
        "format": FORMAT, **settings, "classes": list(ds.classes), "paths": [str(ds.paths[i]) for i in keep],
        "labels": ds.labels[keep].tolist(), "rows_per_part": rows,
        "skipped": skip_reasons([ds.paths[i] for i in failed])})


@dataclass
class FeatureStore:
    """Features on disk: `.parts[layer]` (read-only memory maps, one per chunk), `store[layer]` (all rows, in memory),
    `.paths`, `.labels`, `.classes`, `.layers`, `.skipped`, and the model's settings (`.index`)."""

    root: Path
    index: dict
    parts: dict[str, list[np.ndarray]]

    @property
    def paths(self) -> list[str]:
        return self.index["paths"]

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.index["labels"], dtype=np.int64)

    @property
    def classes(self) -> list[str]:
        return self.index["classes"]

    @property
    def layers(self) -> list[str]:
        return self.index["layers"]

    @property
    def skipped(self) -> list[dict]:
        return self.index.get("skipped", [])

    def __getitem__(self, layer: str) -> np.ndarray:
        if layer not in self.parts:
            raise CnnlabError(f"no layer {layer!r} in {self.root}; it holds {', '.join(self.layers)}")
        parts = [p for p in self.parts[layer] if p.size]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def dims(self) -> dict[str, int]:
        return {l: int(next((p.shape[1] for p in self.parts[l] if p.size), 0)) for l in self.layers}


def load_features(path: str | os.PathLike) -> FeatureStore:
    """A feature store folder (memory-mapped), or a `.npz` written by `cnnlab features --out X.npz`."""
    path = Path(path)
    if path.suffix == ".npz":
        return _from_npz(path)
    try:
        index = json.loads((path / "index.json").read_text())
    except FileNotFoundError:
        raise CnnlabError(f"{path} is not a finished feature store (no index.json: run `cnnlab features` again to "
                          "complete it)") from None
    except ValueError as exc:
        raise CnnlabError(f"cannot read {path / 'index.json'}: {exc}") from None
    if index.get("format") != FORMAT:
        raise CnnlabError(f"{path} is not a cnnlab feature store")
    parts = {l: [np.load(path / l / f"part-{k:05d}.npy", mmap_mode="r") for k in range(len(index["rows_per_part"]))]
             for l in index["layers"]}
    return FeatureStore(path, index, parts)


def _from_npz(path: Path) -> FeatureStore:
    try:
        z = np.load(path)
    except (OSError, ValueError) as exc:
        raise CnnlabError(f"cannot read {path}: {exc}") from None
    layers = [k.split("/", 1)[1] for k in z.files if k.startswith("features/")]
    if not layers:
        raise CnnlabError(f"{path} holds no features (expected arrays features/<layer>, from `cnnlab features`)")
    index = {"format": FORMAT, "layers": layers, "paths": [str(p) for p in z["paths"]],
             "labels": z["labels"].tolist(), "classes": [str(c) for c in z["classes"]],
             "rows_per_part": [len(z["paths"])]}
    for key in ("backbone", "weights", "pool", "flip", "precision"):
        if f"meta/{key}" in z.files:
            index[key] = z[f"meta/{key}"].item()
    return FeatureStore(path, index, {l: [z[f"features/{l}"]] for l in layers})
