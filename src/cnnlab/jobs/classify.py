"""The classify job: `cnnlab.classify` / `cnnlab classify` — top-k classes of images, the model's own or those a
transfer run learned (`--model RUN_DIR`)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..core.backbones import Backbone
from ..core.config import option
from ..core.errors import CnnlabError
from ..core.hooks import eval_mode
from ..core.inputs import ImagesLike, batch_rows, check_sizes, sources
from ..core.calls import CHUNK_HELP, ModelLike, ModelOptions, configure, load_backbone, recorded, with_options
from ..core.results import PerImageResult
from ..core.runner import Chunk, run_per_image
from ..transfer.classifier import TransferClassifier

PREVIEW = 8  # images shown in the figure (every image is in the JSON)
MODEL_OPTIONS = ("backbone", "weights", "mean", "std", "input_size")  # what --model RUN_DIR decides itself


@dataclass
class ClassifyConfig(ModelOptions):
    """Classifies image files (or every image in folders) into the 1000 ImageNet classes, or the model's own.
    With --model RUN_DIR, into the classes that `cnnlab transfer` learned there (its backbone, cut point and SVM).
    JSON: {"results": [{"image", "top": [{"index", "label", "prob"}]}], "skipped": [{"image", "error"}]}; index is
    the standard ImageNet-1k index (synsets in sorted order). Unreadable images are listed and skipped."""

    command = "classify"
    inputs: list[str] = option(default_factory=list, positional=True, required=True, metavar="IMAGES_OR_DIRS",
                               help="image files or folders")
    topk: int = option(5, low=1, help="classes per image")
    model: str | None = option(None, metavar="RUN_DIR", help="a `cnnlab transfer` run directory: classify into its "
                                                             "learned classes with its saved classifier")
    batch_size: int = option(32, low=1, help="images per forward pass")
    chunk_size: int = option(256, low=1, help=CHUNK_HELP)


class ClassifyResult(PerImageResult):
    """`.results` ([{"image", "top": [{"index", "label", "prob"}]}]), `.skipped`, `.names`."""

    kind, figure_name = "classify", "classify.png"

    def __init__(self, config, sink, items, prepared, seconds, backbone: str, preprocess=None,
                 model: str | None = None, probability: str | None = None):
        super().__init__(config, sink, items, prepared, seconds)
        self.backbone, self.model, self._preprocess = backbone, model, preprocess
        self.probability = probability  # what "prob" is, for a learned classifier
        self.results = self.rows

    def summary(self) -> dict:
        s = {"backbone": self.backbone, "results": self.results, "skipped": self.skipped}
        if self.model:
            s["model"] = self.model
        if self.probability:
            s["probability"] = self.probability
        return s | ({"run_dir": str(self.run_dir)} if self.run_dir else {})

    def text(self) -> str:
        lines = []
        for r in self.results:
            lines.append(r["image"])
            lines += [f"  {t['prob']:6.1%}  {t['label']} ({t['index']})" if t.get("prob") is not None else
                      f"  score {t['score']:+.3f}  {t['label']} ({t['index']})" for t in r.get("top", [])]
        return "\n".join(lines)

    def figures(self) -> dict:
        if self._preprocess is None or not self.results:
            return {}
        shown = self.results[:PREVIEW]
        images = [self.items[p].network_input(self._preprocess, self.prepared) for p in self.positions[:PREVIEW]]
        fig = classification_figure([Path(r["image"]).name for r in shown], images, [r["top"] for r in shown],
                                    f"Top-{self.config.topk} classes, {self.backbone}"
                                    + (f" (the first {len(shown)} of {len(self.results)} images)"
                                       if len(self.results) > len(shown) else ""))
        return {self.figure_name: fig}

    @property
    def exit_code(self) -> int:
        return 0 if any("top" in r for r in self.results) else 2

    @property
    def error(self) -> str | None:
        """The one line a failed run ends with (the skipped files are listed above it)."""
        n = len(self.results) + len(self.skipped)
        return None if self.exit_code == 0 else f"none of the {n} input image(s) could be read"


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
        _refuse_ignored(cfg)
    items, prepared = sources(inputs)
    if isinstance(model, TransferClassifier) or cfg.model:
        clf = model if isinstance(model, TransferClassifier) else TransferClassifier.load(
            cfg.model, model if isinstance(model, Backbone) else None, cfg.device)
        name, label, device = clf.backbone, cfg.model or "TransferClassifier", torch.device(cfg.device)
        worker, preprocess, probability = _learned_worker(clf, cfg, prepared), None, clf.probability
    else:
        backbone = load_backbone(model, cfg)
        check_sizes(items, prepared, backbone)
        cfg = recorded(cfg, backbone)
        name, label, device = cfg.backbone, None, backbone.device
        worker, preprocess, probability = _worker(backbone, cfg, prepared), backbone.preprocess, None
    ran = run_per_image(items, worker, settings=cfg.to_dict(), out=out, chunk_size=cfg.chunk_size, device=device,
                        progress=progress, desc="classify", readable=False)
    return None if ran is None else ClassifyResult(cfg, ran[0], items, prepared, ran[1], name, preprocess, label,
                                                   probability)


def _refuse_ignored(cfg: ClassifyConfig) -> None:
    """--model RUN_DIR brings its own backbone and preprocessing: an option that would be ignored is refused."""
    default = ClassifyConfig()
    given = [o for o in MODEL_OPTIONS if getattr(cfg, o) != getattr(default, o)]
    if given:
        raise CnnlabError(f"--model {cfg.model or ''} brings its own backbone and preprocessing: "
                          f"--{given[0].replace('_', '-')} would be ignored (leave it out)")


def top_k(backbone: Backbone, x: torch.Tensor, topk: int = 5) -> list[list[dict]]:
    """Top-k of a batch of [0,1] images: [{"index", "label", "prob"}, ...] per image; labels are the model's."""
    with torch.inference_mode(), eval_mode(backbone):
        probs = backbone(x.to(backbone.device)).float().softmax(dim=1)
    values, indices = probs.topk(min(topk, probs.shape[1]), dim=1)
    return [[{"index": int(i), "label": backbone.labels[int(i)], "prob": float(v)} for v, i in zip(vs, ix)]
            for vs, ix in zip(values.tolist(), indices.tolist())]


def _worker(backbone: Backbone, cfg: ClassifyConfig, prepared: bool):
    def rows(items, x, positions):
        return [{"image": s.name, "top": top} for s, top in zip(items, top_k(backbone, x, cfg.topk))]

    return lambda chunk, first: Chunk(batch_rows(chunk, backbone.preprocess, prepared, cfg.batch_size, first, rows))


def _learned_worker(clf: TransferClassifier, cfg: ClassifyConfig, prepared: bool):
    def work(chunk: list, first: int) -> Chunk:
        results, skipped = clf.top(chunk, cfg.topk, cfg.batch_size, prepared, empty_ok=True)
        found = iter(results)  # the readable ones, in order
        errors = dict(skipped)
        return Chunk([{"image": s.name, "error": errors[s.name]} if s.name in errors else next(found) for s in chunk])
    return work


def classification_figure(names: Sequence[str], x: Sequence[torch.Tensor], tops: list[list[dict]],
                          title: str = "Top-5 classes"):
    """Images above bar charts of their top-k classes (the report's Q1.3 figure)."""
    from ..core.figures import hwc, new_figure

    n = len(names)
    fig = new_figure(3.2 * n, 5.6)
    axes = fig.subplots(2, n, squeeze=False, gridspec_kw={"height_ratios": [3, 2]})
    for j, (name, top) in enumerate(zip(names, tops)):
        axes[0, j].imshow(hwc(x[j]), cmap="gray" if x[j].shape[0] == 1 else None)
        axes[0, j].set_title(str(name)[-28:], fontsize=9)
        axes[0, j].axis("off")
        labels = [t["label"].split(",")[0][:22] for t in top][::-1]
        axes[1, j].barh(labels, [t["prob"] for t in top][::-1], color="tab:blue")
        axes[1, j].set_xlim(0, 1)
        axes[1, j].tick_params(labelsize=7)
    fig.suptitle(title)
    return fig
