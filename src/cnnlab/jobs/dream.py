"""The dream job: `cnnlab.dream` / `cnnlab explain dream` — feature visualization of any objective of any model
(a class, a channel, a neuron, a direction, DeepDream on a photo, with a diversity term), by `explain/dream.py`."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.config import option
from ..core.errors import CnnlabError
from ..core.hooks import eval_mode
from ..core.figures import image_grid
from ..core.images import save_png
from ..core.inputs import ImagesLike, read_images
from ..core.calls import ModelLike, ModelOptions, configure, load_backbone, recorded, with_options
from ..core.results import Result
from ..explain import objectives
from ..explain.dream import RenderOptions, activations, build_objective, render
from ..core.backbones import Backbone


@dataclass
class DreamConfig(RenderOptions, ModelOptions):
    """Draws what a model's unit, class or direction responds to, by optimizing an image (lucid's feature
    visualization). With --image, starts from a photo (DeepDream)."""

    command = "explain dream"
    objective: str = option("", required=True, metavar="OBJECTIVE", help=objectives.SYNTAX)
    image: str | None = option(None, help="start from this photo instead of noise (e.g. with dream:LAYER)")
    batch: int = option(1, low=1, help="images drawn at once (a diversity term makes them differ)")


class DreamResult(Result):
    """`.images` (B,C,H,W) in [0,1], `.frames` {step: (B,C,H,W)}, `.values` {term: (B,) final values}."""

    kind, figure_name = "dream", "dream.png"

    def __init__(self, config: DreamConfig, images: torch.Tensor, frames: dict[int, torch.Tensor],
                 values: dict[str, np.ndarray], total: np.ndarray, model: str, seconds: float):
        super().__init__(config)
        self.images, self.frames, self.values, self.total = images, frames, values, total
        self.model, self.seconds = model, seconds

    @property
    def image(self) -> torch.Tensor:
        return self.images[0]

    def _files(self) -> list[str]:
        return [f"dream_{b}.png" for b in range(len(self.images))]

    def summary(self) -> dict:
        s = {"objective": self.config.objective, "model": self.model, "param": self.config.param.name,
             "iters": self.config.iters, "objective_value": self.total.tolist(),
             "terms": {k: v.tolist() for k, v in self.values.items()}, "seconds": self.seconds,
             "size": list(self.images.shape[-2:])}
        if self.run_dir:
            s |= {"run_dir": str(self.run_dir), "figure": self.path(self.figure_name),
                  "images": [self.path(f) for f in self._files()]}
        return s

    def text(self) -> str:
        values = ", ".join(f"{v:.3g}" for v in self.total)
        return f"{self.config.objective} ({self.model}, {self.config.param.name}, {self.config.iters} steps): " \
               f"objective {values}" + (f"\n→ {self.path(self.figure_name)}" if self.run_dir else "")

    def figures(self) -> dict:
        titles = [f"{v:.3g}" for v in self.total]
        figs = {self.figure_name: image_grid([(self.config.objective, list(self.images))], titles,
                                             title=f"{self.model}: {self.config.objective}")}
        if self.frames:
            rows = [(f"image {b}", [self.frames[it][b] for it in sorted(self.frames)]) for b in range(len(self.images))]
            figs["frames.png"] = image_grid(rows, [f"step {it}" for it in sorted(self.frames)], title="Over the steps")
        return figs

    def write_files(self, folder: Path) -> None:
        for f, image in zip(self._files(), self.images):
            save_png(image, folder / f)


@with_options(DreamConfig)
def dream(model: ModelLike = None, objective: str | objectives.Objective | None = None, *,
          image: ImagesLike | None = None, config: DreamConfig | None = None, progress: bool = False,
          on_frame: Callable[[int, torch.Tensor], None] | None = None, **options) -> DreamResult:
    """Feature visualization: images that maximize `objective` ("class:goldfish", "block5:12 - 0.5*block5:7",
    "dream:block4", or an `Objective`), from noise or, with `image`, from a photo. `on_frame(step, images)` sees each
    of `frames` as it is made."""
    if isinstance(objective, str):
        options["objective"] = objective
    elif objective is not None:
        options["objective"] = repr(objective)
    if isinstance(image, (str, Path)):
        options["image"] = str(image)
    cfg = configure(DreamConfig, config, options)
    if not cfg.objective:
        raise CnnlabError("--objective is required, e.g. class:goldfish, block5:12 or dream:block4")
    backbone = load_backbone(model, cfg)
    cfg = recorded(cfg, backbone)
    obj = build_objective(backbone, objective if isinstance(objective, objectives.Objective) else cfg.objective)
    init = _start(image if image is not None and not isinstance(image, (str, Path)) else cfg.image, cfg, backbone)
    bar = tqdm(total=cfg.iters, desc="dream", disable=not progress)
    t0 = time.perf_counter()
    images, frames = render(backbone, obj, cfg, batch=cfg.batch, init=init, progress=bar, on_frame=on_frame)
    bar.close()
    with torch.no_grad(), eval_mode(backbone):  # one pass gives every term and the total
        acts = activations(backbone, images.to(backbone.device), obj.layers)
        parts = {k: v.float().cpu().numpy() for k, v in obj.parts(acts, len(images)).items()}
        total = obj(acts, len(images)).float().cpu().numpy()
    return DreamResult(cfg, images, frames, parts, total, backbone.spec or backbone.name, time.perf_counter() - t0)


def _start(image, cfg: DreamConfig, backbone: Backbone) -> torch.Tensor | None:
    """The starting images (batch copies of one photo) at --size (longest side; default: the model's input size)."""
    if image is None:
        return None
    import torch.nn.functional as F

    x = read_images(image).pixels[0]
    if x.shape[0] != backbone.in_channels:
        x = x.mean(0, keepdim=True) if backbone.in_channels == 1 else x.expand(3, -1, -1)
    side = cfg.size or backbone.preprocess.input_size
    h, w = x.shape[-2:]
    k = side / max(h, w)
    x = F.interpolate(x[None], size=(max(8, round(h * k)), max(8, round(w * k))), mode="bilinear",
                      antialias=True, align_corners=False)
    return x.expand(cfg.batch, -1, -1, -1).clone()
