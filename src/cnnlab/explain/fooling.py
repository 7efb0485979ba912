"""The fool job: fooling images that work as images. A photo is attacked at its own size through the model's own
preprocessing (`views.ImageModel`), success is judged on the PNG as read back, and other models can read the results
(`eval_on`: transfer rates)."""
from __future__ import annotations

import io
import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.backbones import Backbone
from ..core.errors import CnnlabError
from ..core.figures import image_grid
from ..core.hooks import eval_mode
from ..core.images import load_image, pil_to_tensor, quantize, save_png, tensor_to_uint8
from ..core.inputs import ImagesLike, read_images, sources
from ..core.jobs import ModelLike, configure, load_backbone, with_options
from ..core.models import load_model
from ..core.results import Result
from ..core.runs import write_text
from ..core.stream import stream_job
from .attacks import attack
from .configs import FoolConfig
from .targets import SHOWN, resolve_targets, short_name
from .views import ImageModel, same_classes


class FoolResult(Result):
    """`.adversarial` (N,3,H,W) in [0,1] with 8-bit values (a list when the inputs' sizes differ: each keeps its own),
    `.original`, `.success` (judged on the image as saved and read back), `.targets`, `.pred_before`, `.pred_after`,
    `.iterations`, `.linf`, `.l2` (in the image's own pixels), `.transfer` (per --eval-on model). A run streamed into
    a folder (`out=`) keeps its rows, and the first images for the figure."""

    kind, figure_name = "fool", "fooling.png"

    def __init__(self, config: FoolConfig, names: list[str], original: list[torch.Tensor],
                 adversarial: list[torch.Tensor], targets: list[int] | None, pred_before: torch.Tensor,
                 pred_after: torch.Tensor, success: torch.Tensor, iterations: torch.Tensor, skipped: list[dict],
                 seconds: float, class_names: Sequence[str], transfer: dict[str, dict] | None = None,
                 positions: list[int] | None = None, rows: list[dict] | None = None):
        super().__init__(config)
        self.names, self.originals, self.adversarials, self.targets = names, original, adversarial, targets
        self.pred_before, self.pred_after, self.success, self.iterations = pred_before, pred_after, success, iterations
        self.skipped, self.seconds, self.class_names = skipped, seconds, class_names
        self.transfer = transfer or {}
        self.positions = positions if positions is not None else list(range(len(names)))
        self._rows = rows
        delta = [(a - o).flatten() for a, o in zip(adversarial, original)]
        self.linf = torch.stack([d.abs().max() for d in delta]) if delta else torch.zeros(0)
        self.l2 = torch.stack([d.norm() for d in delta]) if delta else torch.zeros(0)

    @property
    def adversarial(self) -> torch.Tensor | list[torch.Tensor]:
        return _stacked(self.adversarials)

    @property
    def original(self) -> torch.Tensor | list[torch.Tensor]:
        return _stacked(self.originals)

    def _png(self, position: int) -> str:
        return f"adversarial_{position:03d}.png"

    def image_rows(self) -> list[dict]:
        """One dict per image: what the JSON's `results` lists (and results.jsonl, one line each)."""
        if self._rows is not None:
            return self._rows
        rows = []
        for k, name in enumerate(self.names):
            r = {"image": name, "target": None if self.targets is None else self.targets[k],
                 "pred_before": int(self.pred_before[k]), "pred_after": int(self.pred_after[k]),
                 "success": bool(self.success[k]), "iterations": int(self.iterations[k]),
                 "linf": float(self.linf[k]), "l2": float(self.l2[k]), "size": list(self.adversarials[k].shape[-2:])}
            if self.transfer:
                r["transfer"] = {m: {"pred_before": t["pred_before"][k], "pred_after": t["pred_after"][k]}
                                 for m, t in self.transfer.items()}
            if self.run_dir:
                r["png"] = self.path(self._png(self.positions[k]))
            rows.append(r)
        return rows

    def transfer_rates(self) -> dict[str, dict]:
        """Per --eval-on model: how often the target is its top-1, how often its top-1 moved."""
        rows = self.image_rows()
        models = list(rows[0].get("transfer", {})) if rows else []
        return {m: {"targeted_rate": float(np.mean([r["transfer"][m]["pred_after"] == r["target"] for r in rows])),
                    "untargeted_rate": float(np.mean([r["transfer"][m]["pred_after"] != r["transfer"][m]["pred_before"]
                                                      for r in rows]))} for m in models}

    def summary(self) -> dict:
        results = self.image_rows()
        ok = [r for r in results if r["success"]] or results
        s = {"backbone": self.config.backbone, "method": self.config.method, "results": results,
             "seconds": self.seconds,
             "summary": {"n": len(results), "success_rate": sum(r["success"] for r in results) / len(results),
                         "median_linf": statistics.median(r["linf"] for r in ok),
                         "median_l2": statistics.median(r["l2"] for r in ok),
                         "median_iterations": statistics.median(r["iterations"] for r in ok)},
             "skipped": self.skipped}
        rates = self.transfer_rates()
        if rates:
            s["transfer"] = rates
        if self.run_dir:
            s |= {"run_dir": str(self.run_dir), "figure": self.path(self.figure_name)}
        return s

    def transfer_table(self) -> str:
        rates = self.transfer_rates()
        lines = [f"Transfer of {len(self.image_rows())} {self.config.method} images made on {self.config.backbone}:",
                 "", "| model | targeted rate (target is top-1) | untargeted rate (top-1 changed) |", "|---|---|---|"]
        lines += [f"| {m} | {t['targeted_rate']:.2f} | {t['untargeted_rate']:.2f} |" for m, t in rates.items()]
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        m = self.summary()["summary"]
        text = (f"{m['n']} images, success rate {m['success_rate']:.2f}, median L∞ {m['median_linf'] * 255:.2f}/255, "
                f"median L2 {m['median_l2']:.3f}, median {m['median_iterations']:g} iterations"
                + (f" → {self.path(self.figure_name)}" if self.run_dir else ""))
        return text + ("\n" + self.transfer_table() if self.transfer_rates() else "")

    def figures(self) -> dict:
        n = min(len(self.names), SHOWN)
        mag = self.config.magnify
        diff = [(0.5 + mag * (self.adversarials[i] - self.originals[i])).clamp(0, 1) for i in range(n)]
        rows = [(f"{short_name(self.class_names, int(self.pred_before[i]))} → "
                 f"{short_name(self.class_names, int(self.pred_after[i]))}" + ("" if self.success[i] else " (failed)"),
                 [self.originals[i], self.adversarials[i], diff[i]]) for i in range(n)]
        total = len(self.image_rows())
        more = f", the first {n} of {total}" if total > n else ""
        return {self.figure_name: image_grid(rows, ["original", "adversarial", f"difference ×{mag:g}"],
                                             title=f"{self.config.method}, {self.config.backbone} "
                                                   f"(rows: prediction before → after{more})")}

    def write_files(self, folder: Path) -> None:
        if self._rows is None:
            self.write_images(folder)
        if self.transfer_rates():
            write_text(folder / "transfer.md", self.transfer_table())

    def write_images(self, folder: Path, part: int | None = None) -> None:
        """The adversarial images as 8-bit PNGs, at their own size, named by their place among the inputs."""
        for k, a in enumerate(self.adversarials):
            save_png(a, folder / self._png(self.positions[k]))


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
    from PIL import Image

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
         config: FoolConfig | None = None, out: str | Path | None = None, progress: bool = False,
         **options) -> FoolResult:
    """Targeted (or, with `target="none"`, untargeted) adversarial images. A photo is attacked at its own size
    through the model's own preprocessing, and success is judged on the image as saved (8-bit PNG) and read back;
    a (B,C,H,W) tensor is attacked as the network's input. `model` may be several models (an ensemble); `eval_on`
    names models that read the results (transfer rates). With `out`, the run is streamed into that folder chunk by
    chunk (results.jsonl, the PNGs): bounded memory, resumable, shared out over torchrun processes."""
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
    items, prepared = sources(images if images is not None else cfg.inputs)
    items = items[:cfg.limit] if cfg.limit else items
    if out is None:
        return _fool_chunk(models, judges, cfg, items, prepared, 0, progress)
    return stream_job(cfg, items, prepared, Path(out), models[0].device, progress,
                      lambda chunk, first: _fool_chunk(models, judges, cfg, chunk, prepared, first, False),
                      lambda *args: _fool_from_rows(*args, models=models))


def _fool_chunk(models: list[Backbone], judges: dict[str, Backbone], cfg: FoolConfig, items: list, prepared: bool,
                first: int, progress: bool) -> FoolResult:
    """The attack on some inputs (`first`: the place of the first among all inputs: file names, random targets)."""
    data = read_images(items, prepared=prepared)
    view = ImageModel(models, through_preprocess=not prepared)
    judge_views = {n: ImageModel([j], through_preprocess=not prepared) for n, j in judges.items()}
    positions = [first + p for p in data.positions]
    originals = [quantize(x) for x in data.pixels]
    groups = _groups(originals, cfg.batch_size)
    pred_before = _predict_groups(view, originals, groups)
    targets = resolve_targets(cfg.target, pred_before, models[0], cfg.seed, positions)
    adversarial, iterations = list(originals), torch.zeros(len(originals), dtype=torch.long)
    t0 = time.perf_counter()
    for idx in tqdm(groups, desc=f"fool {cfg.method}", disable=not progress):
        r = attack(view, torch.stack([originals[i] for i in idx]), None if targets is None else [targets[i] for i in idx],
                   cfg.method, max_iters=cfg.max_iters, lr=cfg.lr, eps=cfg.eps, norm=cfg.norm, step=cfg.step,
                   loss=cfg.loss, momentum=cfg.momentum, diversity=cfg.diversity, ti_kernel=cfg.ti_kernel,
                   seed=cfg.seed + positions[idx[0]])
        for k, i in enumerate(idx):
            adversarial[i] = png_roundtrip(r.adversarial[k].cpu())
            iterations[i] = r.iterations[k]
    seconds = time.perf_counter() - t0
    pred_after = _predict_groups(view, adversarial, groups)  # of the image as read back from its PNG
    success = pred_after == torch.tensor(targets) if targets is not None else pred_after != pred_before
    transfer = {n: _transfer_rates(v, originals, adversarial, groups, targets) for n, v in judge_views.items()}
    return FoolResult(cfg, data.names, originals, adversarial, targets, pred_before, pred_after, success, iterations,
                      [{"image": n, "error": e} for n, e in data.skipped], seconds, models[0].labels, transfer,
                      positions)


def _fool_from_rows(cfg: FoolConfig, rows: list[dict], skipped: list[dict], seconds: float, items: list,
                    prepared: bool, root: Path, models: list[Backbone]) -> FoolResult:
    """The streamed run's result: its rows, and the first originals and saved images for the figure (read back)."""
    shown = rows[:SHOWN]
    by_name = {s.name: s for s in items}
    originals = [quantize(x) for x in read_images([by_name[r["image"]] for r in shown], prepared=prepared).pixels]
    adversarial = [pil_to_tensor(load_image(r["png"]))[:o.shape[0]] for r, o in zip(shown, originals)]
    col = lambda key: torch.tensor([r[key] for r in shown])  # noqa: E731
    return FoolResult(cfg, [r["image"] for r in shown], originals, adversarial,
                      None if shown[0]["target"] is None else [r["target"] for r in shown], col("pred_before"),
                      col("pred_after"), col("success"), col("iterations"), skipped, seconds, models[0].labels,
                      rows=rows)


def _transfer_rates(judge: ImageModel, originals, adversarial, groups, targets) -> dict:
    """Another model's reading of the saved images: how often the target is its top-1, how often its top-1 moved."""
    before = _predict_groups(judge, originals, groups)
    after = _predict_groups(judge, adversarial, groups)
    hit = (after == torch.tensor(targets)) if targets is not None else torch.zeros(len(after), dtype=torch.bool)
    return {"targeted_rate": float(hit.float().mean()), "untargeted_rate": float((after != before).float().mean()),
            "pred_before": before.tolist(), "pred_after": after.tolist()}
