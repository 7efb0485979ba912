"""The atlas job: `cnnlab.atlas` / `cnnlab explain atlas` — a static HTML page (no server, no request outside its
folder) with one card per channel of a layer: the channel's feature visualization, `diverse` more made different by
a diversity term, and with `data`, the dataset's top images for the channel with the patch where it fires most.

Both halves run on the one runner: the channels (in chunks of `channel_batch`, drawn together) and the dataset's
images (streamed), each resumable and shared out over torchrun processes, in `SITE/channels/` and `SITE/data/`. The
top images are chosen from the assembled per-image arrays, so a streamed, in-memory or sharded run gives the same
page.
"""
from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.backbones import Backbone
from ..core.config import option
from ..core.errors import CnnlabError
from ..core.figures import image_grid
from ..core.images import save_png, tensor_to_uint8
from ..core.inputs import ImagesLike, batch_rows, sources
from ..core.calls import CHUNK_HELP, ModelLike, ModelOptions, configure, load_backbone, recorded, with_options
from ..core.results import Result
from ..core.runner import Chunk, launched, run_per_image
from ..core.runs import atomic_path
from ..explain import objectives
from ..explain.dream import RenderOptions, activations, objective_values, render


@dataclass
class AtlasConfig(RenderOptions, ModelOptions):
    """A layer atlas: one card per channel with its feature visualization (the mean of the channel's map,
    maximized), `--diverse` more, and with --data the dataset's top images for that channel. Writes SITE/index.html,
    a static page that opens without a server."""

    command = "explain atlas"
    layer: str = option("", required=True, help="the layer: a cut point (see `cnnlab models`) or a module path")
    channels: str | None = option(None, metavar="A:B|LIST",
                                  help="channels shown: a range such as 0:64 or a list such as 3,7,12 (default: all)")
    data: str | None = option(None, metavar="DIR|NPZ", help="images whose top activating ones each card shows "
                                                            "(streamed, resumable, torchrun-shared)")
    top: int = option(9, low=1, help="dataset images per channel")
    diverse: int = option(4, low=0, help="more visualizations per channel, made different by a diversity term "
                                         "(0: none)")
    diversity: float = option(1.0, low=0, help="weight of the diversity term (Gram-matrix dissimilarity)")
    iters: int = option(256, low=0, help="ascent steps per visualization")
    channel_batch: int = option(8, low=1, help="channels drawn at once (the unit a rerun skips)")
    batch_size: int = option(32, low=1, help="dataset images per forward pass")
    chunk_size: int = option(256, low=1, help=CHUNK_HELP)


def parse_channels(spec: str | None, n: int) -> list[int]:
    """None → every channel; "A:B" → A..B-1; "3,7,12" → those. Out of range is an error."""
    if spec is None or spec == "":
        return list(range(n))
    try:
        if ":" in spec:
            a, b = spec.split(":")
            chans = list(range(int(a or 0), int(b) if b else n))
        else:
            chans = [int(c) for c in spec.split(",") if c.strip()]
    except ValueError:
        raise CnnlabError(f"cannot read --channels {spec!r}: give a range such as 0:64 or a list such as 3,7,12")
    bad = [c for c in chans if not 0 <= c < n]
    if bad or not chans:
        raise CnnlabError(f"--channels {spec}: the layer has {n} channels (0..{n - 1})")
    return chans


class AtlasResult(Result):
    """`.channels`, `.images` (n,C,H,W) and `.diverse` (n,K,C,H,W) in [0,1] (8-bit, as the page shows them),
    `.values` (n,) each visualization's objective; with data: `.top` (n, top) indices into `.names`, `.top_values`,
    `.patches` (n, top) list of (C,h,w) crops, `.beats` (n,) whether the visualization's objective is above all of
    its channel's top images'."""

    kind, figure_name = "atlas", "atlas.png"

    def __init__(self, config: AtlasConfig, model: str, channels: list[int], vis, data, seconds: float):
        super().__init__(config)
        self.model, self.channels, self.seconds = model, channels, seconds
        self.images, self.diverse, self.values = vis
        self.names, self.skipped, self.top, self.top_values, self.patches = data
        self.beats = None if self.top is None else self.values > self.top_values.max(1)

    def summary(self) -> dict:
        s = {"model": self.model, "layer": self.config.layer, "channels": self.channels,
             "objective": self.values.tolist(), "param": self.config.param.name, "iters": self.config.iters,
             "seconds": self.seconds}
        if self.top is not None:
            s |= {"data": {"n_images": len(self.names), "skipped": self.skipped},
                  "top_objective": self.top_values.max(1).tolist(),
                  "beats_top": float(self.beats.mean()), "beats": self.beats.tolist()}
        if self.run_dir:
            s |= {"run_dir": str(self.run_dir), "page": self.path("index.html"), "figure": self.path(self.figure_name)}
        return s

    def text(self) -> str:
        line = f"{self.model} {self.config.layer}: {len(self.channels)} channels"
        if self.top is not None:
            line += (f"; the visualization beats every one of its top-{self.config.top} images on "
                     f"{int(self.beats.sum())} of {len(self.channels)} channels")
        return line + (f"\n→ {self.path('index.html')}" if self.run_dir else "")

    def figures(self) -> dict:
        shown = list(range(min(16, len(self.channels))))
        rows = [(f"{self.config.layer}", [self.images[i] for i in shown])]
        return {self.figure_name: image_grid(rows, [f"channel {self.channels[i]}" for i in shown],
                                             title=f"{self.model}: {self.config.layer}")}

    def write_files(self, folder: Path) -> None:
        img = Path(folder) / "img"
        for i, c in enumerate(self.channels):
            save_png(self.images[i], img / f"c{c}.png")
            for k, d in enumerate(self.diverse[i] if self.diverse is not None else []):
                save_png(d, img / f"c{c}_d{k}.png")
            for r, patch in enumerate(self.patches[i] if self.patches is not None else []):
                save_png(patch, img / f"c{c}_top{r}.png")
        with atomic_path(Path(folder) / "index.html") as tmp:
            tmp.write_text(self.page(), encoding="utf-8")

    def page(self) -> str:
        e = html.escape
        cards = []
        for i, c in enumerate(self.channels):
            parts = [f"<h2>channel {c}</h2>", f"<img class='main' src='img/c{c}.png' alt='channel {c}'>",
                     f"<p>objective {self.values[i]:.3g}</p>"]
            if self.diverse is not None and len(self.diverse[i]):
                parts.append("<div class='row'>" + "".join(f"<img src='img/c{c}_d{k}.png' alt='diverse {k}'>"
                                                           for k in range(len(self.diverse[i]))) + "</div>")
            if self.top is not None:
                tops = "".join(f"<figure><img src='img/c{c}_top{r}.png' alt='top {r}'><figcaption title='"
                               f"{e(self.names[j])}'>{self.top_values[i, r]:.3g}</figcaption></figure>"
                               for r, j in enumerate(self.top[i]))
                mark = "beats" if self.beats[i] else "below"
                parts.append(f"<p class='{mark}'>dataset top {len(self.top[i])} (objective of each; the visualization "
                             f"{'beats them all' if self.beats[i] else 'does not beat them all'})</p>"
                             f"<div class='grid'>{tops}</div>")
            cards.append(f"<section class='card' data-channel='{c}'>{''.join(parts)}</section>")
        title = f"{e(self.model)} · {e(self.config.layer)}"
        note = (f"{self.config.param.name} parameterization, {self.config.iters} steps"
                + (f"; top images from {len(self.names)} images" if self.top is not None else ""))
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>cnnlab atlas: {title}</title>"
                f"<style>{_CSS}</style></head><body><h1>{title}</h1><p>{e(note)}</p>"
                f"<main>{''.join(cards)}</main></body></html>")


_CSS = ("body{font-family:sans-serif;margin:1em;background:#fafafa}main{display:flex;flex-wrap:wrap;gap:12px}"
        ".card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;width:300px}"
        ".card h2{font-size:1em;margin:0 0 4px}.main{width:100%;image-rendering:pixelated}"
        ".row img{width:25%}.grid{display:grid;grid-template-columns:repeat(3,1fr);gap:2px}"
        ".grid img{width:100%;image-rendering:pixelated}figure{margin:0}figcaption{font-size:.7em;text-align:center}"
        ".below{color:#a33}p{font-size:.8em;margin:2px 0}")


@with_options(AtlasConfig)
def atlas(model: ModelLike = None, layer: str | None = None, *, data: ImagesLike | None = None,
          config: AtlasConfig | None = None, out: str | Path | None = None, progress: bool = False,
          **options) -> AtlasResult:
    """A layer atlas of `layer`'s channels; with `data`, each channel's top images. With `out`, both halves are
    streamed into that folder (resumable, torchrun-shared) and the page is written there."""
    if layer is not None:
        options["layer"] = layer
    if isinstance(data, (str, Path)):
        options["data"] = str(data)
    cfg = configure(AtlasConfig, config, options)
    if not cfg.layer:
        raise CnnlabError("--layer is required: a cut point or module path")
    if out is None and launched()[1] > 1:
        raise CnnlabError("under torchrun, give --out: every process writes into the same folder")
    backbone = load_backbone(model, cfg)
    cfg = recorded(cfg, backbone)
    backbone.check_layers([cfg.layer])
    channels = parse_channels(cfg.channels, _width(backbone, cfg.layer))
    t0 = time.perf_counter()
    vis = _draw(backbone, cfg, channels, out, progress)
    inputs = data if data is not None and not isinstance(data, (str, Path)) else cfg.data
    tops = _top_images(backbone, cfg, channels, inputs, out, progress) if inputs is not None else (
        None, None, None, None, None)
    if vis is None or (inputs is not None and tops is None):
        return None  # another torchrun process assembles
    result = AtlasResult(cfg, backbone.spec or backbone.name, channels, vis, tops, time.perf_counter() - t0)
    if out is not None:
        result.save(out)
    return result


def _width(backbone: Backbone, layer: str) -> int:
    size = backbone.preprocess.input_size
    with torch.no_grad():
        t = activations(backbone, torch.zeros(1, backbone.in_channels, size, size, device=backbone.device), [layer])
    return t[layer].shape[1]


def _folder(out, sub: str) -> Path | None:
    return None if out is None else Path(out) / sub


def _draw(backbone: Backbone, cfg: AtlasConfig, channels: list[int], out, progress: bool):
    """(images, diverse, values) of every channel, drawn chunk by chunk on the runner."""
    render_keys = {k: v for k, v in cfg.to_dict().items() if k not in ("data", "top", "batch_size", "chunk_size")}

    def work(chunk: list[int], first: int) -> Chunk:
        opts = cfg.replace(seed=cfg.seed + first)  # a chunk's drawing does not depend on who draws it
        images, _ = render(backbone, objectives.channels(cfg.layer, chunk), opts, batch=len(chunk))
        images = _quantized(images)
        values = objective_values(backbone, objectives.channels(cfg.layer, chunk), images).numpy()
        arrays = {"images": _uint8(images), "values": values}
        if cfg.diverse:
            arrays["diverse"] = np.stack([_uint8(_quantized(render(
                backbone, objectives.channel(cfg.layer, c) + cfg.diversity * objectives.diversity(cfg.layer),
                opts, batch=cfg.diverse)[0])) for c in chunk])
        return Chunk([{"channel": c, "objective": float(v)} for c, v in zip(chunk, values)], arrays)

    ran = run_per_image(channels, work, settings=render_keys, out=_folder(out, "channels"),
                        chunk_size=cfg.channel_batch, device=backbone.device, progress=progress, desc="channels",
                        readable=False)
    if ran is None:
        return None
    sink = ran[0]
    diverse = _floats(sink.array("diverse")) if cfg.diverse else None
    return _floats(sink.array("images")), diverse, np.asarray(sink.array("values"), np.float64)


def _top_images(backbone: Backbone, cfg: AtlasConfig, channels: list[int], inputs, out, progress: bool):
    """(names, skipped, top (n, k), top values (n, k), patches) from one streamed pass over the dataset."""
    items, prepared = sources(inputs)
    index = torch.as_tensor(channels)

    def work(chunk: list, first: int) -> Chunk:
        means, peaks = [], []

        def rows(batch, x, positions):
            with torch.no_grad():
                t = objectives._spatial(activations(backbone, x.to(backbone.device), [cfg.layer])[cfg.layer],
                                        cfg.layer)[:, index.to(x.device)].float().cpu()
            h, w = t.shape[-2:]
            at = t.flatten(2).argmax(2).numpy()  # where each channel fires most: (y, x) of an h×w map
            means.append(t.flatten(2).mean(2).numpy())
            peaks.append(np.stack([at // w, at % w, np.full_like(at, h), np.full_like(at, w)], axis=-1).astype(np.int32))
            return [{"image": s.name} for s in batch]

        all_rows = batch_rows(chunk, backbone.preprocess, prepared, cfg.batch_size, first, rows)
        return Chunk(all_rows, {"means": np.concatenate(means), "peaks": np.concatenate(peaks)} if means else {})

    ran = run_per_image(items, work, settings=[backbone.spec, backbone.weights_id, cfg.layer, channels, cfg.batch_size],
                        out=_folder(out, "data"), chunk_size=cfg.chunk_size, device=backbone.device,
                        progress=progress, desc="images")
    if ran is None:
        return None
    sink = ran[0]
    every = sink.rows()
    positions = [p for p, r in enumerate(every) if "error" not in r]
    means, peaks = np.asarray(sink.array("means")), np.asarray(sink.array("peaks"))
    k = min(cfg.top, len(positions))
    top = np.argsort(-means, axis=0, kind="stable")[:k].T  # (n, k)
    values = np.take_along_axis(means.T, top, axis=1)
    inputs = {j: items[positions[j]].network_input(backbone.preprocess, prepared) for j in np.unique(top)}  # each once
    patches = [[_patch(inputs[j], peaks[j, i]) for j in top[i]] for i in range(len(channels))]
    names = [every[p]["image"] for p in positions]
    skipped = [{"image": r["image"], "error": r["error"]} for r in every if "error" in r]
    return names, skipped, top, values, patches


def _patch(x: torch.Tensor, peak: np.ndarray) -> torch.Tensor:
    """The part of the network input (C,S,S) around a map cell (y, x of an h×w map): three cells wide, at least a
    quarter of the image."""
    y, xx, h, w = (int(v) for v in peak)
    side_y, side_x = x.shape[-2:]
    half = max(side_y // 8, round(1.5 * side_y / h)), max(side_x // 8, round(1.5 * side_x / w))
    cy, cx = round((y + 0.5) * side_y / h), round((xx + 0.5) * side_x / w)
    top, left = min(max(cy - half[0], 0), max(side_y - 2 * half[0], 0)), min(max(cx - half[1], 0),
                                                                              max(side_x - 2 * half[1], 0))
    return x[:, top:top + 2 * half[0], left:left + 2 * half[1]]


def _quantized(x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.stack([tensor_to_uint8(i) for i in x])).permute(0, 3, 1, 2).float() / 255


def _uint8(x: torch.Tensor) -> np.ndarray:
    return (x * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def _floats(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float32) / 255)
