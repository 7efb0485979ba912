"""The saliency job: `cnnlab.saliency` / `cnnlab explain saliency`. Methods live in `explain/saliency/` (one class
each), the faithfulness metrics in `explain/metrics.py` (the same registered deletion and insertion as `explain
evaluate`)."""
from __future__ import annotations

import copy
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..core.backbones import Backbone
from ..core.config import JOIN, option, part
from ..core.errors import CnnlabError
from ..core.figures import heat, image_grid, overlay
from ..core.inputs import ImagesLike, batch_rows, check_sizes, sources
from ..core.calls import ModelLike, ModelOptions, PerImageOptions, configure, load_backbone, recorded, with_options
from ..core.results import PerImageResult
from ..core.runner import Chunk, run_per_image
from ..core.runs import atomic_path
from ..explain.metrics import METRICS, PANELS
from ..explain.saliency import METHODS, RECOMMENDED, SaliencyMethod, methods_help, predicted, result_settings
from ..explain.targets import SHOWN, check_target_classes, per_image_targets, resolve_targets, short_name

METRIC_KEYS = ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc")


@dataclass
class SaliencyConfig(PerImageOptions, ModelOptions):
    """Saliency maps for one target per image, through Captum:
{methods}
--metrics adds deletion/insertion AUC (Petsiuk et al. 2018) with 16×16 patches and a blurred baseline, plus the
same for random patch orders (--random-orders). Writes saliency.png (image, overlay, map) and one PNG per map."""

    command = "explain saliency"
    method: SaliencyMethod = part(METHODS, RECOMMENDED, help="attribution method (default: the ★ method)")
    target: str = option("pred", help="'pred' (the model's prediction) or a class of the model (index or name)")
    targets: list[str] | None = option(None, cli=False, help="one class per input image (the API's target=[...])")
    metrics: bool = option(False, help="deletion/insertion AUC vs a random patch order")
    # one default with explain evaluate's: the full panel's (None means it, so the two cannot drift apart)
    random_orders: int | None = option(None, low=1, default_help=str(PANELS["full"].random_orders),
                                       help="--metrics: random patch orders averaged for the baseline")

    @classmethod
    def description(cls) -> str:
        return cls.__doc__.replace("{methods}", methods_help())


class SaliencyResult(PerImageResult):
    """`.maps` (N,H,W) ≥ 0, `.images` (N,C,H,W) as the network saw them, `.targets`, `.preds`, `.labels`, `.scores`
    (per-image deletion/insertion AUCs with `metrics=True`), `.names`. Streamed into a folder (`out=`), the maps
    are read from its arrays."""

    kind, figure_name = "saliency", "saliency.png"

    def __init__(self, config, sink, items, prepared, seconds, backbone: Backbone, layers: Sequence[str] = ()):
        super().__init__(config, sink, items, prepared, seconds)
        self.layers = list(layers)  # the layer(s) the method read, defaults resolved: kept once
        self.class_names, self._preprocess = backbone.labels, backbone.preprocess
        self.targets, self.preds = self.column("target"), self.column("pred")
        self.labels = [r.get("label") for r in self.rows]
        self.scores = ({k: torch.tensor(self.column(k)) for k in METRIC_KEYS} if config.metrics else None)

    @property
    def maps(self) -> torch.Tensor:
        with warnings.catch_warnings():  # a memory map of the run's arrays: read-only
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(np.ascontiguousarray(self.sink.array("maps")))

    def image(self, i: int) -> torch.Tensor:
        """The i-th image as the network saw it (decoded again from its input)."""
        source = self.items[self.positions[i]]
        return source.network_input(self._preprocess, self.prepared)

    @property
    def images(self) -> torch.Tensor:
        return torch.stack([self.image(i) for i in range(len(self))])

    file_key = "map"

    @property
    def layer(self) -> str | None:
        """The layers as one name ('a+b'), as summary(), the caption and config.json write it; None for none."""
        return JOIN.join(self.layers) or None

    def resolved(self) -> dict:
        """config.json names what a default resolved to: the layer (`--config` reruns the same layer) and, with
        --metrics, the random orders of the baseline (the full panel's)."""
        out, method = {}, self.config.method
        if self.layer and hasattr(method, "layer") and not method.layer:
            out["method"] = {**method.to_dict(), "layer": self.layers}
        if self.config.metrics and self.config.random_orders is None:
            out["random_orders"] = PANELS["full"].random_orders
        return out

    def file_name(self, position: int) -> str:
        return map_file(position)

    def summary(self) -> dict:
        per_image = self.image_rows()
        s = {"backbone": self.config.backbone, "method": self.config.method.name, "layer": self.layer,
             "results": per_image, "seconds": self.seconds, "skipped": self.skipped}
        if self.config.metrics and per_image:
            m = {"n": len(per_image), **{k: float(np.mean([r[k] for r in per_image])) for k in METRIC_KEYS}}
            m["deletion_ratio"] = m["deletion_auc"] / max(m["random_deletion_auc"], 1e-12)
            s["summary"] = m
        if self.run_dir:
            s |= {"run_dir": str(self.run_dir), "figure": self.path(self.figure_name)}
        return s

    def text(self) -> str:
        text = f"{len(self)} {self.config.method.name} saliency maps in {self.seconds:.1f} s" + (
            f" → {self.path(self.figure_name)}" if self.run_dir else "")
        if self.config.metrics:
            m = self.summary()["summary"]
            text += (f"\ndeletion AUC {m['deletion_auc']:.3f} (random {m['random_deletion_auc']:.3f}, ratio "
                     f"{m['deletion_ratio']:.2f}); insertion AUC {m['insertion_auc']:.3f} "
                     f"(random {m['random_insertion_auc']:.3f})")
        return text

    def figures(self) -> dict:
        n = min(len(self), SHOWN)  # one row per image: the image beside its map
        maps = self.sink.array("maps")[:n]
        rows = []
        for i in range(n):
            x, m = self.image(i), torch.from_numpy(np.array(maps[i]))
            rows.append((short_name(self.class_names, self.targets[i]), [x, overlay(x, m), heat(m)]))
        more = f", the first {n} of {len(self)}" if len(self) > n else ""
        at = f" at {self.layer}" if self.layer else ""
        return {self.figure_name: image_grid(rows, ["image", "overlay", f"{self.config.method.name} map"],
                                             title=f"{self.config.backbone}, {self.config.method.name}{at} (rows: the class "
                                                   f"explained{more})")}

    def write_files(self, folder: Path) -> None:
        if self.written(folder):
            return
        maps = self.sink.array("maps")
        for i, p in enumerate(self.positions):
            with atomic_path(folder / map_file(p)) as tmp:
                tmp.write_bytes(map_png(maps[i]))


def map_file(position: int) -> str:
    return f"saliency_{position:03d}.png"


def map_png(m) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((heat(np.asarray(m)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@with_options(SaliencyConfig)
def saliency(model: ModelLike = None, images: ImagesLike | None = None, *, config: SaliencyConfig | None = None,
             out: str | Path | None = None, progress: bool = False, **options) -> SaliencyResult:
    """Saliency maps of `images` for their targets (`target="pred"`: each image's predicted class; a class; or one
    class per image, as a list or a tensor), optionally with deletion/insertion faithfulness (`metrics=True`).
    `layer` (Grad-CAM) is a cut point or module path, or a list of them (their maps summed). With `out`, the run is
    streamed into that folder chunk by chunk (results.jsonl, one PNG per map, the maps as arrays): bounded memory,
    resumable, shared out over torchrun processes."""
    cfg = configure(SaliencyConfig, config, per_image_targets(options))
    if cfg.random_orders is not None and not cfg.metrics:
        raise CnnlabError("--random-orders sets the baseline of --metrics: add --metrics, or leave it out")
    if cfg.target == "none" and cfg.targets is None:
        raise CnnlabError("saliency needs a target: 'pred' or a class of the model ('none' is for explain fool)")
    backbone = load_backbone(model, cfg)
    cfg = recorded(cfg, backbone)
    attributor = copy.copy(cfg.method)  # what a run caches in it stays in the run
    attributor.check(backbone)  # a wrong layer, or a model the method cannot take, is said before any work
    used = attributor.used_layers(backbone)
    items, prepared = sources(images if images is not None else cfg.inputs)
    items = items[:cfg.limit] if cfg.limit else items
    check_target_classes(backbone, cfg.target, cfg.targets, len(items))
    check_sizes(items, prepared, backbone)
    ran = run_per_image(items, _worker(backbone, attributor, cfg, prepared, out is not None),
                        settings=result_settings(cfg.to_dict(), [attributor], drop=("method",)), out=out, chunk_size=_chunk_size(cfg),
                        device=backbone.device, progress=progress, desc=f"saliency {cfg.method.name}")
    return None if ran is None else SaliencyResult(cfg, ran[0], items, prepared, ran[1], backbone, used)


def _chunk_size(cfg) -> int:
    """Whole batches in every chunk: a chunk's numbers do not depend on how the inputs are cut."""
    return max(cfg.batch_size, cfg.chunk_size // cfg.batch_size * cfg.batch_size)


def _worker(backbone: Backbone, attributor: SaliencyMethod, cfg: SaliencyConfig, prepared: bool, files: bool):
    metrics = [METRICS.build(name, {"random_orders": cfg.random_orders}) for name in ("deletion", "insertion")]

    def work(chunk: list, first: int) -> Chunk:
        maps, pngs = [], {}

        def rows(items, x, positions):
            preds = predicted(backbone, x).cpu()
            targets = resolve_targets(cfg.target, preds, backbone, positions=positions, per_image=cfg.targets)
            m = attributor.attribute(backbone, x, targets).float().cpu()
            scores = {}
            for metric in metrics if cfg.metrics else ():  # scored for each map's own target
                t = torch.as_tensor(targets)
                shared = metric.prepare(backbone, x, t, positions)
                scores |= metric.score(backbone, x, t, m, attributor, shared, positions)[0]
            maps.append(m.numpy())
            out = []
            for j, (source, p) in enumerate(zip(items, positions)):
                row = {"image": source.name, "target": targets[j], "pred": int(preds[j]),
                       "target_label": backbone.labels[targets[j]]}
                if source.label is not None:
                    row["label"] = source.label
                if scores:
                    row.update({k: float(scores[k][j]) for k in METRIC_KEYS})
                if files:
                    pngs[map_file(p)] = map_png(m[j])
                out.append(row)
            return out

        all_rows = batch_rows(chunk, backbone.preprocess, prepared, cfg.batch_size, first, rows)
        return Chunk(all_rows, {"maps": np.concatenate(maps)} if maps else {}, pngs)
    return work
