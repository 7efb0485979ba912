"""The classviz job: `cnnlab.classviz` / `cnnlab explain classviz` — class-model visualization by gradient ascent
(`explain/classviz.py`), judged by another model."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core import imagenet
from ..core.backbones import Backbone
from ..core.config import option
from ..core.errors import CnnlabError
from ..core.figures import image_grid
from ..core.images import save_png
from ..core.calls import ModelLike, ModelOptions, configure, load_backbones, with_options
from ..core.models import load_model
from ..core.table import DEFAULT_BACKBONE
from ..core.results import Result
from ..explain.classviz import ClassVizOptions, class_probability, visualize_class
from ..explain.targets import short_name


def _stem(name: str) -> str:
    """A model or class name as part of a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


@dataclass
class ClassVizConfig(ClassVizOptions, ModelOptions):
    """Gradient ascent on a class score from random noise with L2 regularization, jitter, periodic blur and
    clamping (the report's Q3.8-Q3.11). The result is classified by a different model (--judge) to tell whether
    the class is recognizable beyond the model that drew it."""

    command = "explain classviz"
    classes: list[str] = option(default_factory=list, flag="--class", append=True, required=True,
                                metavar="NAME|INDEX", help="class: index, synset or (part of a) name; repeatable")
    backbone: list[str] = option(default_factory=lambda: [DEFAULT_BACKBONE],
                                 help="generator backbone(s), comma-separated, shown side by side")
    judge: str | None = option(None, help="model that judges recognizability (default: efficientnet_lite2, or "
                                          "efficientnet_lite1 if lite2 draws)")


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


@with_options(ClassVizConfig)
def classviz(model: ModelLike | Sequence[Backbone] = None, classes: str | int | Sequence[str | int] | None = None, *,
             config: ClassVizConfig | None = None, progress: bool = False,
             on_frame: Callable[[int, torch.Tensor], None] | None = None, **options) -> ClassVizResult:
    """Class-model visualization: an image drawn from noise by gradient ascent on each class score, by each model,
    then judged by a different model of the same classes (`judge`: a spec or a Backbone; "none" to skip; by default
    another ImageNet model, skipped for other classes). `on_frame(iteration, image)` sees each of `frames` as it is
    made (to show the ascent while it runs)."""
    given_judge = options.get("judge") if isinstance(options.get("judge"), Backbone) else None
    if given_judge is not None:
        options["judge"] = given_judge.spec or given_judge.name
    if classes is not None:
        options["classes"] = [str(c) for c in ([classes] if isinstance(classes, (str, int)) else classes)]
    if isinstance(model, str):  # a spec, or several comma-separated: the config's to parse
        options["backbone"], model = model, None
    cfg = configure(ClassVizConfig, config, options)
    if not cfg.classes:
        raise CnnlabError("--class is required: a class index or name")
    models = load_backbones(model, cfg)
    names = [b.spec or b.name for b in models]
    cfg = cfg.replace(backbone=[b.spec or f"<wrapped {b.name}>" for b in models])
    class_names = models[0].labels
    indices = [models[0].class_index(c) for c in cfg.classes]
    judge_model = _judge(cfg, names, class_names) if given_judge is None else (
        given_judge if given_judge.labels == tuple(class_names) and given_judge not in models else None)
    images, frames, results = {}, {}, []
    bar = tqdm(total=len(indices) * len(models) * cfg.iters, desc="classviz", disable=not progress)
    t0 = time.perf_counter()
    for name, backbone in zip(names, models):
        for index in indices:
            image, kept = visualize_class(backbone, index, cfg, progress=bar, on_frame=on_frame)
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
