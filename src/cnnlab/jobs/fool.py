"""The fool job: `cnnlab.fool` / `cnnlab explain fool` — fooling images that work as images. A photo is attacked at
its own size through the model's own preprocessing (`explain/views.py`), success is judged on the PNG as read back,
and other models can read the results (`eval_on`: transfer rates). Attacks live in `explain/attacks.py`, one class
each."""
from __future__ import annotations

import copy
import io
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..core.backbones import Backbone
from ..core.config import SEED_MAX, JOIN, option, part
from ..core.parts import registry_help
from ..core.errors import CnnlabError
from ..core.figures import image_grid
from ..core.hooks import eval_mode
from ..core.images import load_image, pil_to_tensor, quantize, tensor_to_uint8
from ..core.inputs import ImagesLike, Source, sources
from ..core.calls import ModelLike, ModelOptions, PerImageOptions, configure, load_backbones, with_options
from ..core.models import load_model
from ..core.table import DEFAULT_BACKBONE
from ..core.results import PerImageResult
from ..core.runner import Chunk, run_per_image
from ..core.runs import atomic_path, write_text
from ..explain.attacks import ATTACKS, Attack, fooled
from ..explain.targets import SHOWN, check_target_classes, per_image_targets, resolve_targets, short_name
from ..explain.views import ImageModel, same_classes

PIXEL_BUDGET = 2 ** 24  # pixels of the images held at once (at their own size) by one process


@dataclass
class FoolConfig(PerImageOptions, ModelOptions):
    """Adversarial images in [0,1] pixel space, made on the image itself: the perturbation lives at the
input's own size and the model sees it through its own preprocessing (the resize and crop that classify reads files
with). Success is judged on the saved file: the 8-bit PNG, read back by the normal reading path, must give the target.
{attacks}
--backbone a+b attacks the ensemble (mean of logits, each model through its own preprocessing); --eval-on B2,B3
reads every saved image through other models and reports the targeted and untargeted transfer rates.
Writes fooling.png (original | adversarial | magnified difference), the adversarial PNGs (at the input's size)
and, with --eval-on, transfer.md."""

    command = "explain fool"
    backbone: list[str] = option(default_factory=lambda: [DEFAULT_BACKBONE], sep=JOIN,
                                 help="the model attacked, or several joined by '+' (an ensemble)")
    target: str | None = option(None, required=True,
                                help="a class of the model (index or name), 'random' (seeded), or 'none' (untargeted)")
    targets: list[str] | None = option(None, cli=False, help="one class per input image (the API's target=[...])")
    seed: int = option(0, low=0, high=SEED_MAX, help="seed for random targets and input diversity")
    method: Attack = part(ATTACKS, "minimal", help="attack")
    eval_on: list[str] = option(default_factory=list, metavar="B2[,B3]",
                                help="models (not attacked) that read every saved image: targeted and untargeted "
                                     "transfer rates")
    magnify: float = option(10.0, low=0, low_open=True, help="how much the figure magnifies the difference")

    @classmethod
    def description(cls) -> str:
        return cls.__doc__.replace("{attacks}", registry_help(ATTACKS))


class FoolResult(PerImageResult):
    """`.adversarials` / `.adversarial` (the saved 8-bit images, each at its input's size: a (N,C,H,W) tensor when
    all sizes agree, else a list), `.originals` / `.original`, `.success` (judged on the image as saved and read
    back), `.targets`, `.pred_before`, `.pred_after`, `.iterations`, `.linf`, `.l2` (in the image's own pixels),
    `.transfer` (per --eval-on model)."""

    kind, figure_name = "fool", "fooling.png"

    def __init__(self, config, sink, items, prepared, seconds, class_names: Sequence[str]):
        super().__init__(config, sink, items, prepared, seconds)
        self.class_names = class_names
        self.targets = None if not self.rows or self.rows[0]["target"] is None else self.column("target")
        col = lambda key, dtype=None: torch.tensor(self.column(key), dtype=dtype)  # noqa: E731
        self.pred_before, self.pred_after = col("pred_before", torch.long), col("pred_after", torch.long)
        self.success, self.iterations = col("success", torch.bool), col("iterations", torch.long)
        self.linf, self.l2 = col("linf", torch.float32), col("l2", torch.float32)

    def adversarial_image(self, i: int) -> torch.Tensor:
        """The i-th saved image, read back as a user opens it."""
        from PIL import Image

        data = io.BytesIO(self.sink.read(png_file(self.positions[i])))
        with Image.open(data) as img:
            gray = img.mode == "L"  # a 1-channel input was saved as a grayscale PNG
        x = pil_to_tensor(load_image(data))
        return x[:1] if gray else x

    def original_image(self, i: int) -> torch.Tensor:
        return quantize(self.items[self.positions[i]].decode())

    @property
    def adversarials(self) -> list[torch.Tensor]:
        return [self.adversarial_image(i) for i in range(len(self))]

    @property
    def originals(self) -> list[torch.Tensor]:
        return [self.original_image(i) for i in range(len(self))]

    @property
    def adversarial(self) -> torch.Tensor | list[torch.Tensor]:
        return _stacked(self.adversarials)

    @property
    def original(self) -> torch.Tensor | list[torch.Tensor]:
        return _stacked(self.originals)

    @property
    def transfer(self) -> dict[str, dict]:
        """Per --eval-on model: its rates and its predictions before and after."""
        return {m: {**rate, "pred_before": [r["transfer"][m]["pred_before"] for r in self.rows],
                    "pred_after": [r["transfer"][m]["pred_after"] for r in self.rows]}
                for m, rate in self.transfer_rates().items()}

    file_key = "png"

    def file_name(self, position: int) -> str:
        return png_file(position)

    def transfer_rates(self) -> dict[str, dict]:
        """Per --eval-on model: how often the target is its top-1, how often its top-1 moved."""
        rows = self.rows
        models = list(rows[0].get("transfer", {})) if rows else []
        return {m: {"targeted_rate": float(np.mean([r["transfer"][m]["pred_after"] == r["target"] for r in rows])),
                    "untargeted_rate": float(np.mean([r["transfer"][m]["pred_after"] != r["transfer"][m]["pred_before"]
                                                      for r in rows]))} for m in models}

    def summary(self) -> dict:
        results = self.image_rows()
        ok = [r for r in results if r["success"]] or results
        s = {"backbone": JOIN.join(self.config.backbone), "method": self.config.method.name, "results": results,
             "seconds": self.seconds,
             "summary": {"n": len(results), "success_rate": sum(r["success"] for r in results) / len(results),
                         "median_linf": statistics.median(r["linf"] for r in ok),
                         "median_l2": statistics.median(r["l2"] for r in ok),
                         "median_iterations": statistics.median(r["iterations"] for r in ok)},
             "skipped": self.skipped}
        rates = self.transfer_rates()
        if rates:
            s["transfer"] = rates
        failed = sum(not r["success"] for r in results)
        if failed:
            s["warnings"] = [f"{failed} of {len(results)} image(s) not fooled by {self.config.method.name}: "
                             f"{self.config.method.advice()}"]
        if self.run_dir:
            s |= {"run_dir": str(self.run_dir), "figure": self.path(self.figure_name)}
        return s

    def transfer_table(self) -> str:
        lines = [f"Transfer of {len(self)} {self.config.method.name} images made on {JOIN.join(self.config.backbone)}:",
                 "", "| model | targeted rate (target is top-1) | untargeted rate (top-1 changed) |", "|---|---|---|"]
        lines += [f"| {m} | {t['targeted_rate']:.2f} | {t['untargeted_rate']:.2f} |"
                  for m, t in self.transfer_rates().items()]
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        m = self.summary()["summary"]
        text = (f"{m['n']} images, success rate {m['success_rate']:.2f}, median L∞ {m['median_linf'] * 255:.2f}/255, "
                f"median L2 {m['median_l2']:.3f}, median {m['median_iterations']:g} iterations"
                + (f" → {self.path(self.figure_name)}" if self.run_dir else ""))
        return text + ("\n" + self.transfer_table() if self.transfer_rates() else "")

    def figures(self) -> dict:
        n, mag = min(len(self), SHOWN), self.config.magnify
        rows = []
        for i in range(n):
            o, a = self.original_image(i), self.adversarial_image(i)
            name = (f"{short_name(self.class_names, int(self.pred_before[i]))} → "
                    f"{short_name(self.class_names, int(self.pred_after[i]))}" + ("" if self.success[i] else " (failed)"))
            rows.append((name, [o, a, (0.5 + mag * (a - o)).clamp(0, 1)]))
        more = f", the first {n} of {len(self)}" if len(self) > n else ""
        return {self.figure_name: image_grid(rows, ["original", "adversarial", f"difference ×{mag:g}"],
                                             title=f"{self.config.method.name}, {JOIN.join(self.config.backbone)} "
                                                   f"(rows: prediction before → after{more})")}

    def write_files(self, folder: Path) -> None:
        if not self.written(folder):
            for p in self.positions:
                with atomic_path(folder / png_file(p)) as tmp:
                    tmp.write_bytes(self.sink.read(png_file(p)))
        if self.transfer_rates():
            write_text(folder / "transfer.md", self.transfer_table())


def png_file(position: int) -> str:
    return f"adversarial_{position:03d}.png"


def _stacked(images: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    return torch.stack(images) if len({tuple(x.shape) for x in images}) == 1 else images


def png_bytes(x: torch.Tensor) -> bytes:
    """A (C,H,W) [0,1] image as an 8-bit PNG file's bytes."""
    from PIL import Image

    buf = io.BytesIO()
    arr = tensor_to_uint8(x)
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(buf, format="PNG")
    return buf.getvalue()


@with_options(FoolConfig)
def fool(model: ModelLike | Sequence[Backbone] = None, images: ImagesLike | None = None, *,
         config: FoolConfig | None = None, out: str | Path | None = None, progress: bool = False,
         **options) -> FoolResult:
    """Targeted (or, with `target="none"`, untargeted) adversarial images; `target` may also be one class per image
    (a list or a tensor). A photo is attacked at its own size through the model's own preprocessing, and success is
    judged on the image as saved (8-bit PNG) and read back; a (B,C,H,W) tensor is attacked as the network's input.
    `model` may be a list of models (an ensemble: their logits averaged); `eval_on` lists models (specs or Backbones)
    that read the results (transfer rates). With `out`, the run is streamed into that folder chunk by chunk (results.jsonl, the
    PNGs): bounded memory, resumable, shared out over torchrun processes."""
    given_judges = {}
    if any(not isinstance(m, str) for m in options.get("eval_on") or []):  # Backbones: named by their spec or name
        given_judges = {m.spec or m.name if isinstance(m, Backbone) else m: m for m in options["eval_on"]}
        options["eval_on"] = list(given_judges)
    if isinstance(model, str):  # a spec, or several joined by '+': the config's to parse
        options["backbone"], model = model, None
    cfg = configure(FoolConfig, config, per_image_targets(options))
    if cfg.target is None and cfg.targets is None:
        raise CnnlabError("--target is required: a class, 'random' or 'none'")
    attacker = copy.copy(cfg.method)
    models = load_backbones(model, cfg)
    if model is not None:
        cfg = cfg.replace(backbone=[b.spec or f"<wrapped {b.name}>" for b in models])
    judges = {n: given_judges[n] if isinstance(given_judges.get(n), Backbone) else load_model(n, device=models[0].device)
              for n in cfg.eval_on}  # bad names fail before any work
    same_classes(models + list(judges.values()))
    items, prepared = sources(images if images is not None else cfg.inputs)
    items = items[:cfg.limit] if cfg.limit else items
    check_target_classes(models[0], cfg.target, cfg.targets, len(items))
    ran = run_per_image(items, _worker(models, judges, attacker, cfg, prepared), settings=cfg.to_dict(), out=out,
                        chunk_size=cfg.chunk_size, device=models[0].device, progress=progress,
                        desc=f"fool {cfg.method.name}")
    return None if ran is None else FoolResult(cfg, ran[0], items, prepared, ran[1], models[0].labels)


def _windows(chunk: list[Source], batch_size: int) -> list[list[int]]:
    """Consecutive inputs of a chunk to hold at once: at most 4 batches, and at most PIXEL_BUDGET pixels (known
    from the files' headers) — memory is bounded by pixels, not by the number of images."""
    from PIL import Image

    out, cur, pixels = [], [], 0
    for i, s in enumerate(chunk):
        n = s.pixels[0].numel() if s.pixels is not None else _header_pixels(s.path, Image)
        if cur and (len(cur) >= 4 * batch_size or pixels + n > PIXEL_BUDGET):
            out.append(cur)
            cur, pixels = [], 0
        cur.append(i)
        pixels += n
    return out + ([cur] if cur else [])


def _header_pixels(path, Image) -> int:
    try:
        with Image.open(path) as img:
            return img.width * img.height
    except Exception:  # unreadable: said when it is decoded
        return 0


def _groups(images: list[torch.Tensor], batch_size: int) -> list[list[int]]:
    """Indices of same-size images, in batches of at most `batch_size` (fewer for large photos: memory)."""
    by_size: dict[tuple, list[int]] = {}
    for i, x in enumerate(images):
        by_size.setdefault(tuple(x.shape), []).append(i)
    out = []
    for shape, idx in by_size.items():
        n = max(1, min(batch_size, PIXEL_BUDGET // (shape[-1] * shape[-2])))
        out += [idx[k:k + n] for k in range(0, len(idx), n)]
    return out


def _predict(model: ImageModel, images: list[torch.Tensor], groups: list[list[int]]) -> torch.Tensor:
    pred = torch.empty(len(images), dtype=torch.long)
    with torch.no_grad(), eval_mode(model):
        for idx in groups:
            pred[idx] = model(torch.stack([images[i] for i in idx]).to(model.device)).argmax(1).cpu()
    return pred


def _worker(models: list[Backbone], judges: dict[str, Backbone], attacker: Attack, cfg: FoolConfig, prepared: bool):
    view = ImageModel(models, through_preprocess=not prepared)
    judge_views = {n: ImageModel([j], through_preprocess=not prepared) for n, j in judges.items()}

    def work(chunk: list[Source], first: int) -> Chunk:
        rows: list = [None] * len(chunk)
        files = {}
        for window in _windows(chunk, cfg.batch_size):
            originals, kept = [], []
            for i in window:
                try:
                    originals.append(quantize(chunk[i].decode()))
                    kept.append(i)
                except CnnlabError as exc:
                    rows[i] = {"image": chunk[i].name, "error": str(exc)}
            if not kept:
                continue
            positions = [first + i for i in kept]
            groups = _groups(originals, cfg.batch_size)
            before = _predict(view, originals, groups)
            targets = resolve_targets(cfg.target, before, models[0], cfg.seed, positions, cfg.targets)
            adversarial, iterations, pngs = list(originals), [0] * len(kept), [b""] * len(kept)
            for idx in groups:
                r = attacker(view, torch.stack([originals[i] for i in idx]),
                             None if targets is None else [targets[i] for i in idx], seed=cfg.seed + positions[idx[0]])
                for k, i in enumerate(idx):
                    pngs[i] = png_bytes(r.adversarial[k].cpu())
                    back = pil_to_tensor(load_image(io.BytesIO(pngs[i])))
                    adversarial[i] = back[:1] if originals[i].shape[0] == 1 else back
                    iterations[i] = int(r.iterations[k])
            after = _predict(view, adversarial, groups)  # of the image as read back from its PNG
            transfer = {n: (_predict(v, originals, groups), _predict(v, adversarial, groups))
                        for n, v in judge_views.items()}
            for j, i in enumerate(kept):
                target = None if targets is None else targets[j]
                delta = (adversarial[j] - originals[j]).flatten()
                row = {"image": chunk[i].name, "target": target, "pred_before": int(before[j]),
                       "pred_after": int(after[j]),
                       "success": bool(fooled(after[j], target, before[j])),
                       "iterations": iterations[j], "linf": float(delta.abs().max()), "l2": float(delta.norm()),
                       "size": list(adversarial[j].shape[-2:])}
                if transfer:
                    row["transfer"] = {n: {"pred_before": int(b[j]), "pred_after": int(a[j])}
                                       for n, (b, a) in transfer.items()}
                rows[i] = row
                files[png_file(positions[j])] = pngs[j]
        return Chunk(rows, {}, files)
    return work
