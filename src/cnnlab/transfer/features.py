"""Feature extraction: every requested cut point from one forward pass, batched, cached on disk."""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.backbones import POOLINGS, Backbone
from ..core.config import cache_dir_option, option
from ..core.data import ImageFiles, collate_skipping_bad
from ..core.hooks import eval_mode
from ..core.calls import ModelOptions
from ..core.precision import PRECISIONS, autocast, resolve_precision
from ..core.runner import MemorySink, Chunk, RunDirSink, chunk_ranges

CHUNK = 512  # images per cache entry: a run killed mid-way keeps its finished chunks


@dataclass
class ExtractionOptions(ModelOptions):
    pool: str = option("avg", choices=POOLINGS, help="how spatial maps become vectors")
    flip: bool = option(False, help="average features of each image and its mirror image")
    batch_size: int = option(64, low=1, help="images per forward pass")
    workers: int = option(2, low=0, help="DataLoader processes decoding images")
    precision: str = option("auto", choices=PRECISIONS,
                            help="'auto' uses bf16 autocast only where the hardware runs it natively")
    cache: bool = option(True, negate="--no-cache", help="neither read nor write the feature cache")
    cache_dir: str | None = cache_dir_option("feature cache folder")
    chunk_size: int = option(512, low=1, help="images per committed chunk (cache entries, store parts, torchrun "
                                              "shares)")


@dataclass
class FeatureSet:
    """Features of the readable images, rows in the order of the requested files."""

    features: dict[str, np.ndarray]  # layer → (N_ok, D) float32
    keep: np.ndarray  # indices (into the requested file list) of the rows
    failed: list[Path]  # unreadable files, skipped
    timing: dict = field(default_factory=dict)  # extract_s, images_per_s, cached_layers, computed_layers


def _cache_key(backbone: Backbone, layer: str, pool: str, flip: bool, precision: str) -> str:
    point = backbone.resolve(layer)
    spec = {
        "backbone": backbone.name, "weights": backbone.weights_id, "module": point.module, "read": point.kind,
        "pool": pool, "flip": flip, "precision": precision, "preprocess": backbone.preprocess.to_dict(),
        "version": 4,  # 2: resize in float (0.3); 3: JPEG draft decoding; 4: committed as runner parts (0.4)
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def files_fingerprint(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = Path(p).stat()
        h.update(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def forward_features(backbone: Backbone, x: torch.Tensor, layers: list[str], pool: str, flip: bool,
                     precision: str) -> dict[str, torch.Tensor]:
    """Pooled features of a batch as float32; with `flip`, averaged with the mirrored images (same pass)."""
    x = x.to(backbone.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    if flip:
        x = torch.cat([x, x.flip(-1)])
    with torch.inference_mode(), autocast(precision, backbone.device):
        out = backbone.features(x, layers, pool)
    out = {k: v.float() for k, v in out.items()}
    if flip:
        out = {k: 0.5 * (v[: len(v) // 2] + v[len(v) // 2:]) for k, v in out.items()}
    return out



def extract_features(backbone: Backbone, paths: Sequence[Path], layers: Sequence[str], *, pool: str = "avg",
                     flip: bool = False, batch_size: int = 64, workers: int = 2, precision: str = "auto",
                     cache_dir: str | os.PathLike | None = None, progress: bool = True,
                     chunk_size: int = CHUNK) -> FeatureSet:
    """Features at `layers` for every readable image in `paths`.

    The files are cut into chunks of `chunk_size`; each chunk's features per layer are a cache entry in `cache_dir`:
    a runner part (`core/runner.py`) in `<key>/<fingerprint>/`, where the key names the backbone, weights, cut point,
    pooling and preprocessing and the fingerprint the chunk's paths/sizes/mtimes, committed as soon as the chunk is
    done. The chunks and layers not cached all come from a single pass; a run killed mid-way leaves whole entries
    only, and the next run computes just the chunks that are missing.
    """
    layers = list(dict.fromkeys(layers))
    backbone.check_layers(layers)
    precision = resolve_precision(precision, backbone.device)
    cacheable = cache_dir is not None and backbone.weights_id is not None
    t0 = time.perf_counter()
    chunks = chunk_ranges(len(paths), chunk_size)
    sinks = {}
    for l in layers:
        key = _cache_key(backbone, l, pool, flip, precision) if cacheable else ""
        for k, r in enumerate(chunks):
            sinks[(k, l)] = (RunDirSink(Path(cache_dir) / key / files_fingerprint(paths[r.start:r.stop]), key)
                             if cacheable else MemorySink())
    hits = {(k, l): part for (k, l), sink in sinks.items() if (part := sink.read_part(0)) is not None}
    need = [l for l in layers if any((k, l) not in hits for k in range(len(chunks)))]
    todo = [k for k in range(len(chunks)) if any((k, l) not in hits for l in need)]

    def commit(j: int, part: Chunk) -> None:
        for l in need:
            sink = sinks[(todo[j], l)]
            sink.commit(0, Chunk(part.rows, {"features": part.arrays[l]}))
            hits[(todo[j], l)] = sink.read_part(0)

    if todo:
        run_pass(backbone, paths, [chunks[k] for k in todo], need, pool, flip, precision, batch_size, workers,
                 progress, commit)
    rows = [r for k in range(len(chunks)) for r in hits[(k, layers[0])].rows]
    feats = {l: _stack([hits[(k, l)].arrays["features"] for k in range(len(chunks))]) for l in layers}
    computed = sum(len(chunks[k]) for k in todo)
    elapsed = time.perf_counter() - t0
    timing = {"extract_s": elapsed, "images_per_s": computed / elapsed if computed and elapsed > 0 else None,
              "cached_layers": [l for l in layers if l not in need], "computed_layers": need,
              "computed_images": computed, "precision": precision}
    keep = np.asarray([i for i, r in enumerate(rows) if "error" not in r], np.int64)
    return FeatureSet(feats, keep, [Path(paths[i]) for i, r in enumerate(rows) if "error" in r], timing)


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    parts = [np.asarray(p) for p in parts if p.size]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def run_pass(backbone: Backbone, paths: Sequence[Path], todo: list[range], layers: list[str], pool: str, flip: bool,
             precision: str, batch_size: int, workers: int, progress: bool,
             commit: Callable[[int, Chunk], None]) -> None:
    """One DataLoader over the chunks `todo` (ranges of `paths`); `commit(j, part)` gets chunk j's `Chunk` as soon as
    it is complete: one row per file ({"image"}, or {"image", "error"}) and the features {layer: (n_readable, D)}."""
    order = [i for r in todo for i in r]
    ends = np.cumsum([len(r) for r in todo])
    # batches never span two chunks: a chunk's features then do not depend on which others run with it (one process
    # or several give the same numbers)
    starts = np.concatenate([[0], ends[:-1]])
    batches = [list(range(b, min(b + batch_size, e))) for s, e in zip(starts, ends) for b in range(s, e, batch_size)]
    loader = torch.utils.data.DataLoader(
        ImageFiles([paths[i] for i in order], backbone.preprocess.read), batch_sampler=batches,
        num_workers=workers, collate_fn=collate_skipping_bad, persistent_workers=False,
        pin_memory=backbone.device.type == "cuda")
    rows: dict[int, dict] = {}  # position in `order` → its row
    feats: dict[int, dict] = {}  # position → {layer: (D,)}
    bar = tqdm(total=len(order), desc=f"features {backbone.name}", unit="img", disable=not progress)
    flushed = 0
    with eval_mode(backbone):
        for x, idx, bad in loader:
            out = forward_features(backbone, x, layers, pool, flip, precision) if x is not None else None
            for r, p in enumerate(idx.tolist()):
                rows[p] = {"image": str(paths[order[p]])}
                feats[p] = {l: out[l][r].cpu().numpy() for l in layers}
            for p, why in bad:
                rows[p] = {"image": str(paths[order[p]]), "error": why}
            bar.update(len(idx) + len(bad))
            while flushed < len(todo) and all(p in rows for p in range(starts[flushed], ends[flushed])):
                span = range(starts[flushed], ends[flushed])  # batches come in order: this chunk is complete
                kept = [p for p in span if p in feats]
                arrays = {l: np.stack([feats[p][l] for p in kept]) if kept else np.zeros((0, 0), np.float32)
                          for l in layers}
                commit(flushed, Chunk([rows.pop(p) for p in span], arrays))
                for p in kept:
                    del feats[p]
                flushed += 1
    bar.close()
