"""Feature extraction: every requested cut point from one forward pass, batched, cached on disk."""
from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.backbones import Backbone
from ..core.data import ImageFiles, collate_skipping_bad
from ..core.hooks import eval_mode
from ..core.backbones import POOLINGS
from ..core.config import option
from ..core.jobs import ModelOptions
from ..core.runs import atomic_path

PRECISIONS = ("auto", "fp32", "bf16")
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
    cache_dir: str | None = option(None, env="CNNLAB_CACHE", default_help="$CNNLAB_CACHE or ~/.cache/cnnlab",
                                   help="feature cache folder")
    chunk_size: int = option(512, low=1, help="images per committed chunk (cache entries, store parts, torchrun "
                                              "shares)")


@dataclass
class FeatureSet:
    """Features of the readable images, rows in the order of the requested files."""

    features: dict[str, np.ndarray]  # layer → (N_ok, D) float32
    keep: np.ndarray  # indices (into the requested file list) of the rows
    failed: list[Path]  # unreadable files, skipped
    timing: dict = field(default_factory=dict)  # extract_s, images_per_s, cached_layers, computed_layers


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' → bf16 only where the hardware computes it natively (CUDA, or a CPU with AVX512-BF16/AMX).

    bf16 features cost no measurable accuracy on 15-Scene, and emulated bf16 is much slower than fp32, hence fp32
    elsewhere (both measured: docs/benchmarks.md, transfer part e)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    native = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)() or \
        getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return "bf16" if native else "fp32"


def _cache_key(backbone: Backbone, layer: str, pool: str, flip: bool, precision: str, fingerprint: str) -> str:
    point = backbone.resolve(layer)
    spec = {
        "backbone": backbone.name, "weights": backbone.weights_id, "module": point.module, "read": point.kind,
        "pool": pool, "flip": flip, "precision": precision, "preprocess": backbone.preprocess.to_dict(),
        "files": fingerprint, "version": 3,  # 2: resize in float (0.3); 3: JPEG draft decoding (0.4)
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def files_fingerprint(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = Path(p).stat()
        h.update(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _load_cached(path: Path):
    try:
        with np.load(path) as z:
            return z["features"], z["keep"], z["failed"]
    except Exception:  # unreadable cache entry: recompute rather than fail
        return None


def _save_cached(path: Path, features: np.ndarray, keep: np.ndarray, failed: np.ndarray) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, features=features, keep=keep, failed=failed)


def forward_features(backbone: Backbone, x: torch.Tensor, layers: list[str], pool: str, flip: bool,
                     precision: str) -> dict[str, torch.Tensor]:
    """Pooled features of a batch as float32; with `flip`, averaged with the mirrored images (same pass)."""
    x = x.to(backbone.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    if flip:
        x = torch.cat([x, x.flip(-1)])
    autocast = torch.autocast(backbone.device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    with torch.inference_mode(), autocast:
        out = backbone.features(x, layers, pool)
    out = {k: v.float() for k, v in out.items()}
    if flip:
        out = {k: 0.5 * (v[: len(v) // 2] + v[len(v) // 2:]) for k, v in out.items()}
    return out



@dataclass
class _Chunk:
    """One cache entry's share of the files: [start, end) of the list, and its files' cache entries per layer."""

    start: int
    end: int
    files: dict[str, Path]
    rows: dict[str, list] = field(default_factory=dict)
    keep: list = field(default_factory=list)
    failed: list = field(default_factory=list)


def extract_features(backbone: Backbone, paths: Sequence[Path], layers: Sequence[str], *, pool: str = "avg",
                     flip: bool = False, batch_size: int = 64, workers: int = 2, precision: str = "auto",
                     cache_dir: str | os.PathLike | None = None, progress: bool = True,
                     chunk_size: int = CHUNK) -> FeatureSet:
    """Features at `layers` for every readable image in `paths`.

    The files are cut into chunks of `chunk_size`; each chunk's features per layer are a cache entry in `cache_dir`
    (keyed by backbone, weights, cut point, pooling, preprocessing and the chunk's paths/sizes/mtimes), written
    atomically as soon as the chunk is done. The chunks and layers not cached all come from a single pass; a run
    killed mid-way leaves whole entries only, and the next run computes just the chunks that are missing.
    """
    layers = list(dict.fromkeys(layers))
    backbone.check_layers(layers)
    precision = resolve_precision(precision, backbone.device)
    cacheable = cache_dir is not None and backbone.weights_id is not None
    t0 = time.perf_counter()
    chunks, hits = [], {}
    for start in range(0, len(paths), chunk_size):
        end = min(start + chunk_size, len(paths))
        fp = files_fingerprint(paths[start:end]) if cacheable else ""
        files = {l: Path(cache_dir) / f"{_cache_key(backbone, l, pool, flip, precision, fp)}.npz"
                 for l in layers} if cacheable else {}
        chunks.append(_Chunk(start, end, files))
        for layer, file in files.items():
            hit = _load_cached(file) if file.is_file() else None
            if hit is not None:
                hits[(start, layer)] = hit
    need = [l for l in layers if any((c.start, l) not in hits for c in chunks)]
    todo = [c for c in chunks if any((c.start, l) not in hits for l in need)]
    if todo:
        _run_pass(backbone, paths, todo, need, pool, flip, precision, batch_size, workers, progress,
                  lambda c, feats, keep, failed: _cache_chunk(c, feats, keep, failed, hits))
    feats, keep, failed = _assemble(chunks, layers, hits)
    computed = sum(c.end - c.start for c in todo)
    elapsed = time.perf_counter() - t0
    timing = {"extract_s": elapsed, "images_per_s": computed / elapsed if computed and elapsed > 0 else None,
              "cached_layers": [l for l in layers if l not in need], "computed_layers": need,
              "computed_images": computed, "precision": precision}
    return FeatureSet(feats, keep, [Path(paths[i]) for i in failed], timing)


def _assemble(chunks: list[_Chunk], layers: list[str], hits: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    """Every chunk's entries, in file order: features per layer, kept and failed indices into the whole list."""
    feats = {l: [] for l in layers}
    keep, failed = [], []
    for c in chunks:
        first = hits[(c.start, layers[0])]
        keep.append(first[1] + c.start)
        failed.append(first[2] + c.start)
        for l in layers:
            feats[l].append(hits[(c.start, l)][0])
    cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)  # noqa: E731
    out = {}
    for l, parts in feats.items():
        parts = [p for p in parts if p.size]
        out[l] = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    return out, cat(keep, np.int64), cat(failed, np.int64)


def _run_pass(backbone, paths, todo: list[_Chunk], layers, pool, flip, precision, batch_size, workers, progress,
              on_chunk) -> None:
    """One DataLoader over the chunks to compute; `on_chunk(chunk, {layer: (n, D)}, keep, failed)` is called as soon
    as a chunk is complete (keep and failed: indices within the chunk)."""
    order = [i for c in todo for i in range(c.start, c.end)]
    ends = np.cumsum([c.end - c.start for c in todo])
    # batches never span two chunks: a chunk's features then do not depend on which others run with it (one process
    # or several give the same numbers)
    starts = np.concatenate([[0], ends[:-1]])
    batches = [list(range(b, min(b + batch_size, e))) for s, e in zip(starts, ends) for b in range(s, e, batch_size)]
    loader = torch.utils.data.DataLoader(
        ImageFiles([paths[i] for i in order], backbone.preprocess.read), batch_sampler=batches,
        num_workers=workers, collate_fn=collate_skipping_bad, persistent_workers=False,
        pin_memory=backbone.device.type == "cuda")
    for c in todo:
        c.rows, c.keep, c.failed = {l: [] for l in layers}, [], []
    bar = tqdm(total=len(order), desc=f"features {backbone.name}", unit="img", disable=not progress)
    done, flushed = 0, 0
    with eval_mode(backbone):
        for x, idx, bad in loader:
            out = forward_features(backbone, x, layers, pool, flip, precision) if x is not None else None
            for r, p in enumerate(idx.tolist()):  # p: position in `order`
                c = todo[int(np.searchsorted(ends, p, side="right"))]
                c.keep.append(order[p] - c.start)
                for l in layers:
                    c.rows[l].append(out[l][r].cpu().numpy())
            for p in bad:
                c = todo[int(np.searchsorted(ends, p, side="right"))]
                c.failed.append(order[p] - c.start)
            done += len(idx) + len(bad)
            bar.update(len(idx) + len(bad))
            while flushed < len(todo) and ends[flushed] <= done:  # batches come in order: this chunk is complete
                c = todo[flushed]
                feats = {l: np.stack(c.rows[l]) if c.rows[l] else np.zeros((0, 0), np.float32) for l in layers}
                on_chunk(c, feats, np.asarray(c.keep, np.int64), np.asarray(sorted(c.failed), np.int64))
                c.rows = {}
                flushed += 1
    bar.close()


def _cache_chunk(c: _Chunk, feats: dict, keep: np.ndarray, failed: np.ndarray, hits: dict) -> None:
    for l, f in feats.items():
        hits[(c.start, l)] = (f, keep, failed)
        if l in c.files:
            _save_cached(c.files[l], f, keep, failed)
