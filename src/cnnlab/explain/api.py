"""The explain capability, one call per job: `saliency`, `fool`, `classviz`. Each returns a result object holding the
tensors (maps, adversarial images, visualizations) and numbers; nothing is written until its `save()`."""
from __future__ import annotations

import re
import statistics
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
from ..core.hooks import eval_mode
from ..core.images import quantize, save_png
from ..core.inputs import ImagesLike, read_images
from ..core.jobs import ModelLike, configure, load_backbone, recorded, with_options
from ..core.models import load_model
from ..core.results import Result
from ..core.runs import atomic_path, write_text
from .attacks import attack
from .classviz import class_probability, visualize_class
from .configs import ClassVizConfig, FoolConfig, SaliencyConfig
from .faithfulness import deletion_insertion
from .saliency import attribute, predicted
from .views import ImageModel, same_classes

SHOWN = 12  # images in an overview figure (every image keeps its own PNG)
METRIC_KEYS = ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc")


def resolve_targets(spec: str | None, preds: torch.Tensor, backbone: Backbone, seed: int = 0) -> list[int] | None:
    """'pred' → the model's predictions; 'random' → random classes ≠ the prediction (seeded); 'none' → untargeted;
    otherwise one class of the model (index or name) for every image."""
    if spec is None or spec == "none":
        return None
    if spec == "pred":
        return [int(p) for p in preds]
    if spec == "random":
        g = torch.Generator().manual_seed(seed)
        draws = torch.randint(0, backbone.num_classes - 1, (len(preds),), generator=g)
        return [int(t + (t >= p)) for t, p in zip(draws, preds.cpu())]  # never the predicted class
    return [backbone.class_index(spec)] * len(preds)


def _short(labels: Sequence[str], index: int) -> str:
    return labels[index].split(",")[0].strip()


def _stem(name: str) -> str:
    """A model or class name as part of a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def _predict_all(backbone: Backbone, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([predicted(backbone, x[i:i + batch_size]).cpu() for i in range(0, len(x), batch_size)])


# -------------------------------------------------------------------------------------------------------- saliency
class SaliencyResult(Result):
    """`.maps` (N,H,W) ≥ 0, `.images` (N,3,H,W) as the network saw them, `.targets`, `.preds`, `.scores`
    (per-image deletion/insertion AUCs when asked), `.names`."""

    kind, figure_name = "saliency", "saliency.png"

    def __init__(self, config: SaliencyConfig, names: list[str], images: torch.Tensor, maps: torch.Tensor,
                 targets: list[int], preds: list[int], labels: list, scores: dict[str, torch.Tensor] | None,
                 skipped: list[str], seconds: float, class_names: Sequence[str]):
        super().__init__(config)
        self.names, self.images, self.maps, self.targets, self.preds = names, images, maps, targets, preds
        self.labels, self.scores, self.skipped, self.seconds = labels, scores, skipped, seconds
        self.class_names = class_names

    def summary(self) -> dict:
        per_image = []
        for i, name in enumerate(self.names):
            entry = {"image": name, "target": self.targets[i], "target_label": self.class_names[self.targets[i]],
                     "pred": self.preds[i]}
            if self.run_dir:
                entry["map"] = self.path(f"saliency_{i:03d}.png")
            if self.labels[i] is not None:
                entry["label"] = self.labels[i]
            if self.scores:
                entry.update({k: float(self.scores[k][i]) for k in METRIC_KEYS})
            per_image.append(entry)
        s = {"backbone": self.config.backbone, "method": self.config.method, "results": per_image,
             "seconds": self.seconds, "skipped": self.skipped}
        if self.scores:
            m = {"n": len(per_image), **{k: float(self.scores[k].mean()) for k in METRIC_KEYS}}
            m["deletion_ratio"] = m["deletion_auc"] / max(m["random_deletion_auc"], 1e-12)
            s["summary"] = m
        if self.run_dir:
            s |= {"run_dir": str(self.run_dir), "figure": self.path(self.figure_name)}
        return s

    def text(self) -> str:
        text = f"{len(self.names)} {self.config.method} saliency maps in {self.seconds:.1f} s" + (
            f" → {self.path(self.figure_name)}" if self.run_dir else "")
        if self.scores:
            m = self.summary()["summary"]
            text += (f"\ndeletion AUC {m['deletion_auc']:.3f} (random {m['random_deletion_auc']:.3f}, ratio "
                     f"{m['deletion_ratio']:.2f}); insertion AUC {m['insertion_auc']:.3f} "
                     f"(random {m['random_insertion_auc']:.3f})")
        return text

    def figures(self) -> dict:
        n = min(len(self.names), SHOWN)  # one row per image: the image beside its map
        rows = [(_short(self.class_names, self.targets[i]), [self.images[i], overlay(self.images[i], self.maps[i]),
                                                             heat(self.maps[i])]) for i in range(n)]
        more = f", the first {n} of {len(self.names)}" if len(self.names) > n else ""
        return {self.figure_name: image_grid(rows, ["image", "overlay", f"{self.config.method} map"],
                                             title=f"{self.config.backbone} (rows: the class explained{more})")}

    def write_files(self, folder: Path) -> None:
        from PIL import Image

        for i, m in enumerate(self.maps):
            with atomic_path(folder / f"saliency_{i:03d}.png") as tmp:
                Image.fromarray((heat(m) * 255).astype(np.uint8)).save(tmp, format="PNG")


@with_options(SaliencyConfig)
def saliency(model: ModelLike = None, images: ImagesLike | None = None, *, config: SaliencyConfig | None = None,
             progress: bool = False, **options) -> SaliencyResult:
    """Saliency maps of `images` for their targets (`target="pred"`: each image's predicted class), optionally with
    deletion/insertion faithfulness (`metrics=True`). `layer` (Grad-CAM) is a named cut point or any module path."""
    cfg = configure(SaliencyConfig, config, options)
    if cfg.target == "none":
        raise CnnlabError("saliency needs a target: 'pred' or a class of the model ('none' is for explain fool)")
    backbone = load_backbone(model, cfg)
    cfg = recorded(cfg, backbone)
    data = read_images(images if images is not None else cfg.inputs, cfg.limit)
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
                                             n_random=cfg.random_orders, seed=i))
    merged = {k: torch.cat([s[k] for s in scores]) for k in METRIC_KEYS} if cfg.metrics else None
    return SaliencyResult(cfg, data.names, x, torch.cat(maps), targets, preds.tolist(), data.labels, merged,
                          [e for _, e in data.skipped], time.perf_counter() - t0, backbone.labels)


# ------------------------------------------------------------------------------------------------------------ fool
class FoolResult(Result):
    """`.adversarial` (N,3,H,W) in [0,1] with 8-bit values (a list when the inputs' sizes differ: each keeps its own),
    `.original`, `.success` (judged on the image as saved and read back), `.targets`, `.pred_before`, `.pred_after`,
    `.iterations`, `.linf`, `.l2` (in the image's own pixels), `.transfer` (per --eval-on model)."""

    kind, figure_name = "fool", "fooling.png"

    def __init__(self, config: FoolConfig, names: list[str], original: list[torch.Tensor],
                 adversarial: list[torch.Tensor], targets: list[int] | None, pred_before: torch.Tensor,
                 pred_after: torch.Tensor, success: torch.Tensor, iterations: torch.Tensor, skipped: list[str],
                 seconds: float, class_names: Sequence[str], transfer: dict[str, dict] | None = None):
        super().__init__(config)
        self.names, self.originals, self.adversarials, self.targets = names, original, adversarial, targets
        self.pred_before, self.pred_after, self.success, self.iterations = pred_before, pred_after, success, iterations
        self.skipped, self.seconds, self.class_names = skipped, seconds, class_names
        self.transfer = transfer or {}
        delta = [(a - o).flatten() for a, o in zip(adversarial, original)]
        self.linf = torch.stack([d.abs().max() for d in delta])
        self.l2 = torch.stack([d.norm() for d in delta])

    @property
    def adversarial(self) -> torch.Tensor | list[torch.Tensor]:
        return _stacked(self.adversarials)

    @property
    def original(self) -> torch.Tensor | list[torch.Tensor]:
        return _stacked(self.originals)

    def summary(self) -> dict:
        results = []
        for k, name in enumerate(self.names):
            r = {"image": name, "target": None if self.targets is None else self.targets[k],
                 "pred_before": int(self.pred_before[k]), "pred_after": int(self.pred_after[k]),
                 "success": bool(self.success[k]), "iterations": int(self.iterations[k]),
                 "linf": float(self.linf[k]), "l2": float(self.l2[k]), "size": list(self.adversarials[k].shape[-2:])}
            if self.transfer:
                r["transfer"] = {m: {"pred_before": t["pred_before"][k], "pred_after": t["pred_after"][k]}
                                 for m, t in self.transfer.items()}
            if self.run_dir:
                r["png"] = self.path(f"adversarial_{k:03d}.png")
            results.append(r)
        ok = [r for r in results if r["success"]] or results
        s = {"backbone": self.config.backbone, "method": self.config.method, "results": results,
             "seconds": self.seconds,
             "summary": {"n": len(results), "success_rate": sum(r["success"] for r in results) / len(results),
                         "median_linf": statistics.median(r["linf"] for r in ok),
                         "median_l2": statistics.median(r["l2"] for r in ok),
                         "median_iterations": statistics.median(r["iterations"] for r in ok)},
             "skipped": self.skipped}
        if self.transfer:
            s["transfer"] = {m: {"targeted_rate": t["targeted_rate"], "untargeted_rate": t["untargeted_rate"]}
                             for m, t in self.transfer.items()}
        if self.run_dir:
            s |= {"run_dir": str(self.run_dir), "figure": self.path(self.figure_name)}
        return s

    def transfer_table(self) -> str:
        lines = [f"Transfer of {len(self.names)} {self.config.method} images made on {self.config.backbone}:", "",
                 "| model | targeted rate (target is top-1) | untargeted rate (top-1 changed) |", "|---|---|---|"]
        lines += [f"| {m} | {t['targeted_rate']:.2f} | {t['untargeted_rate']:.2f} |" for m, t in self.transfer.items()]
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        m = self.summary()["summary"]
        text = (f"{m['n']} images, success rate {m['success_rate']:.2f}, median L∞ {m['median_linf'] * 255:.2f}/255, "
                f"median L2 {m['median_l2']:.3f}, median {m['median_iterations']:g} iterations"
                + (f" → {self.path(self.figure_name)}" if self.run_dir else ""))
        return text + ("\n" + self.transfer_table() if self.transfer else "")

    def figures(self) -> dict:
        n = min(len(self.names), SHOWN)
        mag = self.config.magnify
        diff = [(0.5 + mag * (self.adversarials[i] - self.originals[i])).clamp(0, 1) for i in range(n)]
        rows = [(f"{_short(self.class_names, int(self.pred_before[i]))} → "
                 f"{_short(self.class_names, int(self.pred_after[i]))}" + ("" if self.success[i] else " (failed)"),
                 [self.originals[i], self.adversarials[i], diff[i]]) for i in range(n)]
        more = f", the first {n} of {len(self.names)}" if len(self.names) > n else ""
        return {self.figure_name: image_grid(rows, ["original", "adversarial", f"difference ×{mag:g}"],
                                             title=f"{self.config.method}, {self.config.backbone} "
                                                   f"(rows: prediction before → after{more})")}

    def write_files(self, folder: Path) -> None:
        for k, a in enumerate(self.adversarials):
            save_png(a, folder / f"adversarial_{k:03d}.png")
        if self.transfer:
            write_text(folder / "transfer.md", self.transfer_table())


def _stacked(images: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    return torch.stack(images) if len({tuple(x.shape) for x in images}) == 1 else images


def _groups(images: list[torch.Tensor], batch_size: int, pixel_budget: int = 2 ** 24) -> list[list[int]]:
    """Indices of same-size images, in batches of at most `batch_size` (fewer for large photos: memory)."""
    by_size: dict[tuple, list[int]] = {}
    for i, x in enumerate(images):
        by_size.setdefault(tuple(x.shape), []).append(i)
    out = []
    for shape, idx in by_size.items():
        n = max(1, min(batch_size, pixel_budget // (shape[-1] * shape[-2])))
        out += [idx[k:k + n] for k in range(0, len(idx), n)]
    return out


def _predict_groups(model: ImageModel, images: list[torch.Tensor], groups: list[list[int]]) -> torch.Tensor:
    pred = torch.empty(len(images), dtype=torch.long)
    with torch.no_grad(), eval_mode(model):
        for idx in groups:
            pred[idx] = model(torch.stack([images[i] for i in idx]).to(model.device)).argmax(1).cpu()
    return pred


def png_roundtrip(x: torch.Tensor) -> torch.Tensor:
    """The image as a saved 8-bit PNG gives it back to cnnlab's reading path (`load_image`): what a user opens."""
    import io

    from PIL import Image

    from ..core.images import load_image, pil_to_tensor, tensor_to_uint8

    buf = io.BytesIO()
    arr = tensor_to_uint8(x)
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(buf, format="PNG")
    buf.seek(0)
    back = pil_to_tensor(load_image(buf))
    return back[:1] if x.shape[0] == 1 else back


def _attacked(model, cfg: FoolConfig) -> list[Backbone]:
    """The model(s) attacked: given ones, or specs ('a+b': an ensemble)."""
    if isinstance(model, str):
        model = model.split("+")
    if isinstance(model, (list, tuple)):
        return [load_backbone(m, cfg) for m in model]
    if model is not None:
        return [load_backbone(model, cfg)]
    return [load_model(n, cfg.weights, cfg.device, mean=cfg.mean, std=cfg.std, input_size=cfg.input_size)
            for n in cfg.backbone.split("+")]


@with_options(FoolConfig)
def fool(model: ModelLike | Sequence[Backbone] = None, images: ImagesLike | None = None, *,
         config: FoolConfig | None = None, progress: bool = False, **options) -> FoolResult:
    """Targeted (or, with `target="none"`, untargeted) adversarial images. A photo is attacked at its own size
    through the model's own preprocessing, and success is judged on the image as saved (8-bit PNG) and read back;
    a (B,C,H,W) tensor is attacked as the network's input. `model` may be several models (an ensemble); `eval_on`
    names models that read the results (transfer rates)."""
    cfg = configure(FoolConfig, config, options)
    if cfg.target is None:
        raise CnnlabError("--target is required: a class, 'random' or 'none'")
    if cfg.method in ("fgsm", "pgd", "transfer") and cfg.norm == "linf" and cfg.eps is not None and cfg.eps > 1:
        raise CnnlabError(f"--eps must be in (0, 1] for the L∞ norm (pixel units), got {cfg.eps}")
    models = _attacked(model, cfg)
    if model is not None:
        cfg = cfg.replace(backbone="+".join(b.spec or f"<wrapped {b.name}>" for b in models))
    judges = {n: load_model(n, device=models[0].device) for n in cfg.eval_on}  # bad names fail before any work
    same_classes(models + list(judges.values()))
    data = read_images(images if images is not None else cfg.inputs, cfg.limit)
    view = ImageModel(models, through_preprocess=not data.prepared)
    judge_views = {n: ImageModel([j], through_preprocess=not data.prepared) for n, j in judges.items()}
    originals = [quantize(x) for x in data.pixels]
    groups = _groups(originals, cfg.batch_size)
    pred_before = _predict_groups(view, originals, groups)
    targets = resolve_targets(cfg.target, pred_before, models[0], cfg.seed)
    adversarial, iterations = list(originals), torch.zeros(len(originals), dtype=torch.long)
    t0 = time.perf_counter()
    for idx in tqdm(groups, desc=f"fool {cfg.method}", disable=not progress):
        r = attack(view, torch.stack([originals[i] for i in idx]), None if targets is None else [targets[i] for i in idx],
                   cfg.method, max_iters=cfg.max_iters, lr=cfg.lr, eps=cfg.eps, norm=cfg.norm, step=cfg.step,
                   loss=cfg.loss, momentum=cfg.momentum, diversity=cfg.diversity, ti_kernel=cfg.ti_kernel,
                   seed=cfg.seed + idx[0])
        for k, i in enumerate(idx):
            adversarial[i] = png_roundtrip(r.adversarial[k].cpu())
            iterations[i] = r.iterations[k]
    seconds = time.perf_counter() - t0
    pred_after = _predict_groups(view, adversarial, groups)  # of the image as read back from its PNG
    success = pred_after == torch.tensor(targets) if targets is not None else pred_after != pred_before
    transfer = {n: _transfer_rates(v, originals, adversarial, groups, targets) for n, v in judge_views.items()}
    return FoolResult(cfg, data.names, originals, adversarial, targets, pred_before, pred_after, success, iterations,
                      [e for _, e in data.skipped], seconds, models[0].labels, transfer)


def _transfer_rates(judge: ImageModel, originals, adversarial, groups, targets) -> dict:
    """Another model's reading of the saved images: how often the target is its top-1, how often its top-1 moved."""
    before = _predict_groups(judge, originals, groups)
    after = _predict_groups(judge, adversarial, groups)
    hit = (after == torch.tensor(targets)) if targets is not None else torch.zeros(len(after), dtype=torch.bool)
    return {"targeted_rate": float(hit.float().mean()), "untargeted_rate": float((after != before).float().mean()),
            "pred_before": before.tolist(), "pred_after": after.tolist()}


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
        stem = f"{_stem(name)}_{_stem(_short(self.class_names, index))}"
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
            titles.append(_short(self.class_names, i) + (f" (judge rank {judged[0]['judge']['target_rank']})"
                                                         if len(self.backbones) == 1 and judged else ""))
        rows = [(name, [self.images[(name, i)] for i in self.indices]) for name in self.backbones]
        figs = {self.figure_name: image_grid(rows, titles, title="Class-model visualizations")}
        if self.config.frames:
            its = sorted(self.config.frames)
            frame_rows = [(f"{n}: {_short(self.class_names, i)}", [self.frames[(n, i)][it] for it in its
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
