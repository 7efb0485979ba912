"""The explain capability, one call per job: `saliency`, `fool`, `classviz`. Each returns a result object holding the
tensors (maps, adversarial images, visualizations) and numbers; nothing is written until its `save()`."""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core import imagenet
from ..core.backbones import Backbone
from ..core.errors import CnnlabError
from ..core.figures import heat, image_grid, overlay
from ..core.images import save_png
from ..core.inputs import ImagesLike, read_images, sources
from ..core.jobs import ModelLike, configure, load_backbone, recorded, with_options
from ..core.models import load_model
from ..core.results import Result
from ..core.runs import atomic_path
from ..core.stream import stream_job
from .classviz import class_probability, visualize_class
from .configs import ClassVizConfig, SaliencyConfig
from .faithfulness import deletion_insertion
from .fooling import FoolResult, fool, png_roundtrip  # noqa: F401  (the capability's API in one place)
from .saliency import attribute, predicted
from .targets import SHOWN, resolve_targets, short_name  # noqa: F401

METRIC_KEYS = ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc")


def _stem(name: str) -> str:
    """A model or class name as part of a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def _predict_all(backbone: Backbone, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([predicted(backbone, x[i:i + batch_size]).cpu() for i in range(0, len(x), batch_size)])


# -------------------------------------------------------------------------------------------------------- saliency
class SaliencyResult(Result):
    """`.maps` (N,H,W) ≥ 0, `.images` (N,3,H,W) as the network saw them, `.targets`, `.preds`, `.scores`
    (per-image deletion/insertion AUCs when asked), `.names`. A run streamed into a folder (`out=`) keeps its rows
    and the figure's first images in memory; `.maps` then reads the maps back from the folder."""

    kind, figure_name = "saliency", "saliency.png"

    def __init__(self, config: SaliencyConfig, names: list[str], images: torch.Tensor, maps: torch.Tensor,
                 targets: list[int], preds: list[int], labels: list, scores: dict[str, torch.Tensor] | None,
                 skipped: list[dict], seconds: float, class_names: Sequence[str], positions: list[int] | None = None,
                 rows: list[dict] | None = None):
        super().__init__(config)
        self.names, self.images, self._maps, self.targets, self.preds = names, images, maps, targets, preds
        self.labels, self.scores, self.skipped, self.seconds = labels, scores, skipped, seconds
        self.class_names = class_names
        self.positions = positions if positions is not None else list(range(len(names)))
        self._rows = rows  # a streamed run's per-image rows (read back from its folder)

    @property
    def maps(self) -> torch.Tensor:
        if self._rows is None:
            return self._maps
        parts = sorted((self.run_dir / "maps").glob("part-*.npy"))
        return torch.cat([torch.from_numpy(np.load(p).astype(np.float32)) for p in parts])

    def _map_file(self, position: int) -> str:
        return f"saliency_{position:03d}.png"

    def image_rows(self) -> list[dict]:
        """One dict per image: what the JSON's `results` lists (and results.jsonl, one line each)."""
        if self._rows is not None:
            return self._rows
        rows = []
        for i, name in enumerate(self.names):
            entry = {"image": name, "target": self.targets[i], "target_label": self.class_names[self.targets[i]],
                     "pred": self.preds[i]}
            if self.run_dir:
                entry["map"] = self.path(self._map_file(self.positions[i]))
            if self.labels[i] is not None:
                entry["label"] = self.labels[i]
            if self.scores:
                entry.update({k: float(self.scores[k][i]) for k in METRIC_KEYS})
            rows.append(entry)
        return rows

    def summary(self) -> dict:
        per_image = self.image_rows()
        s = {"backbone": self.config.backbone, "method": self.config.method, "results": per_image,
             "seconds": self.seconds, "skipped": self.skipped}
        if self.config.metrics and per_image:
            m = {"n": len(per_image), **{k: float(np.mean([r[k] for r in per_image])) for k in METRIC_KEYS}}
            m["deletion_ratio"] = m["deletion_auc"] / max(m["random_deletion_auc"], 1e-12)
            s["summary"] = m
        if self.run_dir:
            s |= {"run_dir": str(self.run_dir), "figure": self.path(self.figure_name)}
        return s

    def text(self) -> str:
        n = len(self.image_rows())
        text = f"{n} {self.config.method} saliency maps in {self.seconds:.1f} s" + (
            f" → {self.path(self.figure_name)}" if self.run_dir else "")
        if self.config.metrics:
            m = self.summary()["summary"]
            text += (f"\ndeletion AUC {m['deletion_auc']:.3f} (random {m['random_deletion_auc']:.3f}, ratio "
                     f"{m['deletion_ratio']:.2f}); insertion AUC {m['insertion_auc']:.3f} "
                     f"(random {m['random_insertion_auc']:.3f})")
        return text

    def figures(self) -> dict:
        n = min(len(self.names), SHOWN)  # one row per image: the image beside its map
        maps = self._maps
        rows = [(short_name(self.class_names, self.targets[i]), [self.images[i], overlay(self.images[i], maps[i]),
                                                                 heat(maps[i])]) for i in range(n)]
        total = len(self.image_rows())
        more = f", the first {n} of {total}" if total > n else ""
        return {self.figure_name: image_grid(rows, ["image", "overlay", f"{self.config.method} map"],
                                             title=f"{self.config.backbone} (rows: the class explained{more})")}

    def write_files(self, folder: Path) -> None:
        if self._rows is None:
            self.write_images(folder)

    def write_images(self, folder: Path, part: int | None = None) -> None:
        """Each map as a PNG (and, for a chunk of a streamed run, the chunk's maps as `maps/part-k.npy`)."""
        from PIL import Image

        for i, m in enumerate(self._maps):
            with atomic_path(folder / self._map_file(self.positions[i])) as tmp:
                Image.fromarray((heat(m) * 255).astype(np.uint8)).save(tmp, format="PNG")
        if part is not None:
            with atomic_path(folder / "maps" / f"part-{part:05d}.npy") as tmp:
                np.save(tmp, self._maps.numpy().astype(np.float32))


@with_options(SaliencyConfig)
def saliency(model: ModelLike = None, images: ImagesLike | None = None, *, config: SaliencyConfig | None = None,
             out: str | Path | None = None, progress: bool = False, **options) -> SaliencyResult:
    """Saliency maps of `images` for their targets (`target="pred"`: each image's predicted class), optionally with
    deletion/insertion faithfulness (`metrics=True`). `layer` (Grad-CAM) is a named cut point or any module path.
    With `out`, the run is streamed into that folder chunk by chunk (results.jsonl, one PNG per map, the maps as
    arrays): bounded memory, resumable, shared out over torchrun processes."""
    cfg = configure(SaliencyConfig, config, options)
    if cfg.target == "none":
        raise CnnlabError("saliency needs a target: 'pred' or a class of the model ('none' is for explain fool)")
    backbone = load_backbone(model, cfg)
    cfg = recorded(cfg, backbone)
    if cfg.layer and "gradcam" in cfg.method:  # a wrong layer is said before any work
        backbone.check_layers(cfg.layer.split("+"))
    items, prepared = sources(images if images is not None else cfg.inputs)
    items = items[:cfg.limit] if cfg.limit else items
    if out is None:
        return _saliency_chunk(backbone, cfg, items, prepared, 0, progress)
    return stream_job(cfg, items, prepared, Path(out), backbone.device, progress,
                      lambda chunk, first: _saliency_chunk(backbone, cfg, chunk, prepared, first, False),
                      lambda *args: _saliency_from_rows(*args, backbone=backbone))


def _saliency_chunk(backbone: Backbone, cfg: SaliencyConfig, items: list, prepared: bool, first: int,
                    progress: bool) -> SaliencyResult:
    """The maps of some inputs (`first`: the place of the first among all inputs: file names, metric seeds)."""
    data = read_images(items, prepared=prepared)
    x = data.batch(backbone.preprocess)
    preds = _predict_all(backbone, x, cfg.batch_size)
    targets = resolve_targets(cfg.target, preds, backbone)
    maps, scores = [], []
    t0 = time.perf_counter()
    for i in tqdm(range(0, len(x), cfg.batch_size), desc=f"saliency {cfg.method}", disable=not progress):
        xb, tb = x[i:i + cfg.batch_size], targets[i:i + cfg.batch_size]
        m = attribute(backbone, xb, tb, cfg.method, cfg)
        maps.append(m.cpu())
        if cfg.metrics:  # faithfulness of the map for the predicted class
            scores.append(deletion_insertion(backbone, xb, m, preds[i:i + cfg.batch_size],
                                             n_random=cfg.random_orders, seed=first + i))
    merged = {k: torch.cat([s[k] for s in scores]) for k in METRIC_KEYS} if cfg.metrics else None
    return SaliencyResult(cfg, data.names, x, torch.cat(maps), targets, preds.tolist(), data.labels, merged,
                          [{"image": n, "error": e} for n, e in data.skipped], time.perf_counter() - t0,
                          backbone.labels, [first + p for p in data.positions])


def _saliency_from_rows(cfg: SaliencyConfig, rows: list[dict], skipped: list[dict], seconds: float, items: list,
                        prepared: bool, root: Path, backbone: Backbone) -> SaliencyResult:
    """The streamed run's result: its rows, and the first images and maps for the figure (read back)."""
    shown = rows[:SHOWN]
    by_name = {s.name: s for s in items}
    x = read_images([by_name[r["image"]] for r in shown], prepared=prepared).batch(backbone.preprocess)
    parts, have = [], 0
    for part in sorted((root / "maps").glob("part-*.npy")):  # the first chunks' maps, enough for the figure
        if have >= len(shown):
            break
        parts.append(np.load(part).astype(np.float32))
        have += len(parts[-1])
    maps = torch.from_numpy(np.concatenate(parts)[:len(shown)])
    return SaliencyResult(cfg, [r["image"] for r in shown], x, maps, [r["target"] for r in shown],
                          [r["pred"] for r in shown], [r.get("label") for r in shown], None, skipped, seconds,
                          backbone.labels, rows=rows)


# -------------------------------------------------------------------------------------------------------- classviz
def default_judge(backbones: list[str]) -> str:
    """A different model from the generator(s): Lite2, or Lite1 when Lite2 is one of them."""
    return "efficientnet_lite1" if "efficientnet_lite2" in backbones else "efficientnet_lite2"


class ClassVizResult(Result):
    """`.image` (3,H,W) (the first), `.images` and `.frames` keyed by (backbone, class index), `.results`."""

    kind, figure_name = "classviz", "classviz.png"

    def __init__(self, config: ClassVizConfig, backbones: list[str], indices: list[int], images: dict, frames: dict,
                 results: list[dict], seconds: float, class_names: Sequence[str]):
        super().__init__(config)
        self.backbones, self.indices, self.images, self.frames = backbones, indices, images, frames
        self.results, self.seconds, self.class_names = results, seconds, class_names

    @property
    def image(self) -> torch.Tensor:
        return self.images[(self.backbones[0], self.indices[0])]

    def _files(self, name: str, index: int) -> list[str]:
        stem = f"{_stem(name)}_{_stem(short_name(self.class_names, index))}"
        return [f"{stem}.png"] + [f"{stem}_iter{it:04d}.png" for it in sorted(self.frames[(name, index)])]

    def summary(self) -> dict:
        results = []
        for r in self.results:
            r = dict(r)
            if self.run_dir:
                r["images"] = [self.path(f) for f in self._files(r["backbone"], r["index"])]
            results.append(r)
        judged = [r for r in results if r["judge"]]
        s = {**results[0], "results": results, "seconds": self.seconds,
             "summary": {"n": len(results), "judge": judged[0]["judge"]["model"] if judged else None,
                         "judge_top5": sum(r["judge"]["target_rank"] <= 5 for r in judged),
                         "mean_target_prob": float(np.mean([r["target_prob"] for r in results]))}}
        if self.run_dir:
            s |= {"run_dir": str(self.run_dir), "figure": self.path(self.figure_name)}
            if self.config.frames:
                s["frames_figure"] = self.path("frames.png")
        return s

    def text(self) -> str:
        lines = [f"{r['backbone']}: {r['class'].split(',')[0]} p={r['target_prob']:.3f}"
                 + (f"; judge {r['judge']['model']} p={r['judge']['target_prob']:.3f} rank {r['judge']['target_rank']}"
                    if r["judge"] else "") for r in self.results]
        return "\n".join(lines + ([f"→ {self.path(self.figure_name)}"] if self.run_dir else []))

    def figures(self) -> dict:
        titles = []
        for i in self.indices:
            judged = [r for r in self.results if r["index"] == i and r["judge"]]
            titles.append(short_name(self.class_names, i) + (f" (judge rank {judged[0]['judge']['target_rank']})"
                                                         if len(self.backbones) == 1 and judged else ""))
        rows = [(name, [self.images[(name, i)] for i in self.indices]) for name in self.backbones]
        figs = {self.figure_name: image_grid(rows, titles, title="Class-model visualizations")}
        if self.config.frames:
            its = sorted(self.config.frames)
            frame_rows = [(f"{n}: {short_name(self.class_names, i)}", [self.frames[(n, i)][it] for it in its
                                                                   if it in self.frames[(n, i)]])
                          for n in self.backbones for i in self.indices]
            figs["frames.png"] = image_grid(frame_rows, [f"iteration {it}" for it in its], title="Over the iterations")
        return figs

    def write_files(self, folder: Path) -> None:
        for (name, index), image in self.images.items():
            files = self._files(name, index)
            save_png(image, folder / files[0])
            for f, (_, frame) in zip(files[1:], sorted(self.frames[(name, index)].items())):
                save_png(frame, folder / f)


def _generators(model, cfg: ClassVizConfig) -> list[Backbone]:
    if isinstance(model, (list, tuple)):
        return [load_backbone(m, cfg) for m in model]
    if model is not None:
        return [load_backbone(model, cfg)]
    return [load_model(n.strip(), cfg.weights, cfg.device, mean=cfg.mean, std=cfg.std, input_size=cfg.input_size)
            for n in cfg.backbone.split(",") if n.strip()]


@with_options(ClassVizConfig)
def classviz(model: ModelLike | Sequence[Backbone] = None, classes: str | int | Sequence[str | int] | None = None, *,
             config: ClassVizConfig | None = None, progress: bool = False, **options) -> ClassVizResult:
    """Class-model visualization: an image drawn from noise by gradient ascent on each class score, by each model,
    then judged by a different ImageNet model (`judge`; "none" to skip; skipped for non-ImageNet classes)."""
    if classes is not None:
        options["classes"] = [str(c) for c in ([classes] if isinstance(classes, (str, int)) else classes)]
    cfg = configure(ClassVizConfig, config, options)
    if not cfg.classes:
        raise CnnlabError("--class is required: a class index or name")
    models = _generators(model, cfg)
    names = [b.spec or b.name for b in models]
    cfg = cfg.replace(backbone=",".join(b.spec or f"<wrapped {b.name}>" for b in models))
    class_names = models[0].labels
    indices = [models[0].class_index(c) for c in cfg.classes]
    judge_model = _judge(cfg, names, class_names)
    images, frames, results = {}, {}, []
    bar = tqdm(total=len(indices) * len(models) * cfg.iters, desc="classviz", disable=not progress)
    t0 = time.perf_counter()
    for name, backbone in zip(names, models):
        for index in indices:
            image, kept = visualize_class(backbone, index, cfg, progress=bar)
            prob, _ = class_probability(backbone, image, index)
            judged = None
            if judge_model is not None:
                jprob, jrank = class_probability(judge_model, image, index)
                judged = {"model": judge_model.name, "target_prob": jprob, "target_rank": jrank}
            images[(name, index)], frames[(name, index)] = image, kept
            results.append({"class": class_names[index], "index": index, "backbone": name, "target_prob": prob,
                            "judge": judged})
    bar.close()
    return ClassVizResult(cfg, names, indices, images, frames, results, time.perf_counter() - t0, class_names)


def _judge(cfg: ClassVizConfig, names: list[str], class_names: Sequence[str]) -> Backbone | None:
    if cfg.judge == "none" or class_names != imagenet.labels():
        return None
    judge = cfg.judge or default_judge(names)
    if judge in names:
        raise CnnlabError(f"the judge ({judge}) must be a different model from the generator(s)")
    return load_model(judge, device=cfg.device)
