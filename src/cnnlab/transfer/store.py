"""A feature store for datasets larger than memory: a run directory of the one runner (`core/runner.py`) whose arrays
are the layers — `DIR/<layer>/part-00000.npy` (one file per chunk of images, in file order), `DIR/parts/part-00000.jsonl`
(that chunk's rows, written last: the chunk's commit mark) — and `DIR/index.json` (paths, labels, classes, skipped
files, layers, the model) once every chunk is in. Extraction streams into it (memory does not grow with the number
of images), resumes after a crash by skipping committed chunks, and shares chunks out over torchrun processes.
`load_features(DIR)` memory-maps it."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.backbones import Backbone
from ..core.data import ImageFolder
from ..core.errors import CnnlabError
from ..core.runner import Chunk, Runner, RunDirSink, barrier, settings_tag
from ..core.runs import is_npz, write_json
from ..core.precision import resolve_precision
from .features import CHUNK, files_fingerprint, run_pass

FORMAT = "cnnlab-features-1"


def _settings(backbone: Backbone, layers: list[str], pool: str, flip: bool, precision: str) -> dict:
    return {"backbone": backbone.spec or backbone.name, "weights": backbone.weights, "weights_id": backbone.weights_id,
            "layers": layers, "pool": pool, "flip": flip, "precision": precision,
            "preprocess": backbone.preprocess.to_dict()}


def write_store(backbone: Backbone, ds: ImageFolder, layers: Sequence[str], root: str | os.PathLike, *,
                pool: str = "avg", flip: bool = False, batch_size: int = 64, workers: int = 2,
                precision: str = "auto", chunk_size: int = CHUNK, progress: bool = True) -> dict:
    """Extract `layers` for every image of `ds` into the store at `root`: the runner's chunks (this process's share
    under torchrun), each committed as a part whose arrays are the layers; rank 0 writes the index when all
    processes are done. Returns timing: computed images and seconds (this process)."""
    import time

    root = Path(root)
    layers = list(dict.fromkeys(layers))
    backbone.check_layers(layers)
    precision = resolve_precision(precision, backbone.device)
    settings = _settings(backbone, layers, pool, flip, precision)
    sink = RunDirSink(root, settings_tag(settings, files_fingerprint(ds.paths)))
    runner = Runner(sink, len(ds.paths), chunk_size, backbone.device)
    todo = runner.todo()

    def commit(j: int, part: Chunk) -> None:
        k, r = todo[j]
        for row, i in zip(part.rows, r):
            row["label"] = int(ds.labels[i])
        sink.commit(k, part)

    t0 = time.perf_counter()
    if todo:
        run_pass(backbone, ds.paths, [r for _, r in todo], layers, pool, flip, precision, batch_size, workers,
                 progress and runner.rank == 0, commit)
    seconds = time.perf_counter() - t0
    if sink.finish(len(runner.chunks), runner.rank):
        write_index(root, sink, len(runner.chunks), list(ds.classes), settings)
    barrier()  # the index is there for every process
    computed = sum(len(r) for _, r in todo)
    return {"computed_images": computed, "extract_s": seconds, "precision": precision,
            "images_per_s": computed / seconds if computed and seconds > 0 else None}


def write_index(root: Path, sink, n_parts: int, classes: list[str], settings: dict,
                skipped: Sequence[dict] = ()) -> None:
    """`index.json` of a store whose parts are committed in `sink`: the readable images' paths and labels, the
    readable rows per part, the unreadable files with their reasons, the model's settings."""
    parts = [sink.read_part(k) for k in range(n_parts)]
    rows = [r for p in parts for r in p.rows]
    kept = [r for r in rows if "error" not in r]
    write_json(root / "index.json", {
        "format": FORMAT, **settings, "classes": list(classes), "paths": [r["image"] for r in kept],
        "labels": [r.get("label", -1) for r in kept],
        "rows_per_part": [sum("error" not in r for r in p.rows) for p in parts],
        "skipped": [{"image": r["image"], "error": r["error"]} for r in rows if "error" in r] + list(skipped)})


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
    if is_npz(path):
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
