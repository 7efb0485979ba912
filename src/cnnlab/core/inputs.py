"""Images as the API takes them: paths, folders, the labs' .npz, PIL images, numpy arrays, a float tensor, a list of
these, or a {name: image} dict.

`read_images` decodes them at their own size (float (3,H,W) in [0,1] each), lists what it could not read, and
`Images.batch(preprocess)` brings them to a network's input. A (B,C,H,W) tensor is taken as already prepared for
the network: it is used as it is.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch
from PIL import Image

from .errors import CnnlabError
from .images import collect_image_paths, load_image, pil_to_tensor, to_rgb
from .runs import is_npz
from .preprocess import Preprocess

ImagesLike = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor, Sequence[Any], Mapping[str, Any]]


@dataclass
class Images:
    names: list[str]  # a file path, "<file.npz>#<i>", "image[<i>]" or "tensor[<i>]"
    pixels: list[torch.Tensor]  # each float (C,H,W) in [0,1], at its own size
    labels: list[int | None] = field(default_factory=list)  # ground truth where the input says (the labs' .npz)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (input, why it was not read)
    prepared: bool = False  # True for a (B,C,H,W) tensor: already the network's input
    positions: list[int] = field(default_factory=list)  # each image's place among the inputs (skipped ones count)

    def __len__(self) -> int:
        return len(self.names)

    def batch(self, preprocess: Preprocess | None) -> torch.Tensor:
        """(N,C,S,S): each image through the network's own preprocessing (a prepared tensor passes as it is)."""
        if self.prepared or preprocess is None:
            return torch.stack(self.pixels)
        return torch.stack([preprocess(x) for x in self.pixels])



@dataclass
class Source:
    """One input image before decoding: a file, or pixels already in memory."""

    name: str
    path: Path | None = None
    pixels: torch.Tensor | None = None  # float (C,H,W) in [0,1]
    label: int | None = None

    def decode(self) -> torch.Tensor:
        """At its own size."""
        return self.pixels if self.pixels is not None else pil_to_tensor(load_image(self.path))

    def network_input(self, preprocess: Preprocess | None, prepared: bool = False) -> torch.Tensor:
        """Straight to the network's input: a file is decoded at the reduced scale its format allows."""
        if prepared or preprocess is None:
            return self.decode()
        if self.pixels is not None:
            return preprocess(self.pixels)
        return preprocess.read(self.path)


def check_sizes(items: Sequence[Source], prepared: bool, backbone) -> None:
    """A tensor is the network's input as it is: of another size than the input size, it is said in one line before
    any work where the network takes no other (a ViT's position embeddings, a Swin's windows, a flattening head)."""
    if not prepared:
        return
    side = backbone.preprocess.input_size
    odd = next((s for s in items if s.pixels is not None and tuple(s.pixels.shape[-2:]) != (side, side)), None)
    if odd is not None and backbone.fixed_input_size:
        h, w = odd.pixels.shape[-2:]
        raise CnnlabError(f"{backbone.name} takes {side}×{side} inputs only; {odd.name} is {h}×{w}: pass images as "
                          "files, PIL images or arrays (resized and cropped as the model's preprocessing says), or "
                          f"resize the tensor to {side}×{side}")


def sources(images: ImagesLike) -> tuple[list[Source], bool]:
    """Every input image, not yet decoded (folders expanded, sorted), and whether they are a prepared tensor."""
    if isinstance(images, torch.Tensor):
        prepared = _from_tensor(images)
        return [Source(n, pixels=x) for n, x in zip(prepared.names, prepared.pixels)], True
    if isinstance(images, Mapping):  # {name: image}: the names are kept
        named = [sources(image)[0] for image in images.values()]
        return [Source(str(name) if len(s) == 1 else f"{name}[{j}]", src.path, src.pixels, src.label)
                for name, s in zip(images, named) for j, src in enumerate(s)], False
    items = [images] if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)) else list(images)
    if not items:
        raise CnnlabError("no input images given")
    out: list[Source] = []
    for k, item in enumerate(items):
        if isinstance(item, Image.Image):
            out.append(Source(f"image[{k}]", pixels=pil_to_tensor(to_rgb(item))))
        elif isinstance(item, np.ndarray):
            xs = _from_array(item)
            out += [Source(f"array[{k}]" if len(xs) == 1 else f"array[{k}][{j}]", pixels=x) for j, x in enumerate(xs)]
        elif isinstance(item, torch.Tensor):
            xs = _from_tensor(item).pixels
            out += [Source(f"tensor[{k}]" if len(xs) == 1 else f"tensor[{k}][{j}]", pixels=x) for j, x in enumerate(xs)]
        elif is_npz(item):
            from .data import load_npz_images

            X, y, _ = load_npz_images(item)
            out += [Source(f"{item}#{i}", pixels=X[i], label=int(y[i]) if y is not None else None) for i in range(len(X))]
        else:
            out += [Source(str(p), path=p) for p in collect_image_paths([item])]
    return out, False


def read_images(images: ImagesLike | list[Source], limit: int | None = None, prepared: bool | None = None,
                workers: int = 4) -> Images:
    """Decode any accepted input (or sources already listed); unreadable files are listed in `skipped`, never fatal
    unless nothing is left. Files are decoded by `workers` threads (Pillow releases the GIL while decoding)."""
    from concurrent.futures import ThreadPoolExecutor

    if prepared is None:
        items, prepared = sources(images)
    else:
        items = list(images)
    if limit:
        items = items[:limit]

    def decode(src: Source):
        try:
            return src.decode(), None
        except CnnlabError as exc:
            return None, str(exc)

    out = Images([], [], [], [], prepared)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for k, (src, (x, error)) in enumerate(zip(items, pool.map(decode, items))):
            if error is not None:
                out.skipped.append((src.name, error))
                continue
            _add(out, src.name, x, src.label)
            out.positions.append(k)
    if not out.names:
        raise CnnlabError("no readable input images" + (f" ({out.skipped[0][1]})" if out.skipped else ""))
    return out


def decode_batch(items: Sequence[Source], preprocess: Preprocess | None, prepared: bool,
                 workers: int = 4) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    """(indices of the readable items, their network inputs (B,C,S,S) or None, [(index, why not)]). Each image is
    decoded straight to the network's input, by `workers` threads (Pillow releases the GIL while decoding)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(src: Source):
        try:
            return src.network_input(preprocess, prepared), None
        except CnnlabError as exc:
            return None, str(exc)

    with ThreadPoolExecutor(max(1, min(workers, len(items)))) as pool:
        done = list(pool.map(one, items))
    kept = [i for i, (x, _) in enumerate(done) if x is not None]
    errors = [(i, e) for i, (_, e) in enumerate(done) if e is not None]
    return kept, (torch.stack([done[i][0] for i in kept]) if kept else None), errors


def batch_rows(chunk: Sequence[Source], preprocess: Preprocess | None, prepared: bool, batch_size: int,
               first: int, work) -> list[dict]:
    """One row per input of a chunk, batch by batch: `work(sources, x, positions)` gives the rows of the readable
    images of a batch (their network inputs x (B,C,S,S), their places among all inputs); an unreadable one gets
    {"image", "error"}."""
    rows: list = []
    for b in range(0, len(chunk), batch_size):
        batch = chunk[b:b + batch_size]
        kept, x, errors = decode_batch(batch, preprocess, prepared)
        slots: list = [None] * len(batch)
        for i, e in errors:
            slots[i] = {"image": batch[i].name, "error": e}
        if x is not None:
            for i, row in zip(kept, work([batch[i] for i in kept], x, [first + b + i for i in kept])):
                slots[i] = row
        rows += slots
    return rows


class batches:
    """(names, (B,C,S,S) batch or None, skipped [(name, reason)]) per batch of inputs, each image decoded straight to
    the network's input; the inputs are listed (and a missing path reported) when this is built, before any work."""

    def __init__(self, images: ImagesLike | list[Source], preprocess: Preprocess | None, batch_size: int,
                 prepared: bool | None = None):
        self.items, self.prepared = sources(images) if prepared is None else (list(images), prepared)
        self.preprocess, self.batch_size = preprocess, batch_size

    def __len__(self) -> int:
        return -(-len(self.items) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.items), self.batch_size):
            chunk = self.items[start:start + self.batch_size]
            kept, x, errors = decode_batch(chunk, self.preprocess, self.prepared)
            yield [chunk[i].name for i in kept], x, [(chunk[i].name, e) for i, e in errors]


def _add(out: Images, name: str, x: torch.Tensor, label: int | None = None) -> None:
    out.names.append(name)
    out.pixels.append(x)
    out.labels.append(label)


def _from_tensor(x: torch.Tensor) -> Images:
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise CnnlabError(f"an image tensor must be (B,C,H,W) or (C,H,W) with C = 1 or 3, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise CnnlabError("an image tensor must be float in [0,1] (divide uint8 pixels by 255)")
    x = x.detach().float().cpu()
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise CnnlabError(f"an image tensor must hold values in [0,1], got [{x.min():.3g}, {x.max():.3g}]")
    return Images([f"tensor[{i}]" for i in range(len(x))], list(x), [None] * len(x), [], prepared=True)


def _from_array(a: np.ndarray) -> list[torch.Tensor]:
    """uint8 or float [0,1] arrays: (H,W), (H,W,C) or (N,H,W,C) → float (3,H,W) images."""
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (1, 3, 4) and a.shape[0] > 4):
        a = a[None]
    elif a.ndim == 3:  # (N,H,W) grayscale stack
        a = a[..., None]
    if a.ndim != 4 or a.shape[-1] not in (1, 3, 4):
        raise CnnlabError(f"an image array must be (H,W), (H,W,C) or (N,H,W,C) with C in 1, 3, 4; got {a.shape}")
    t = torch.from_numpy(np.array(a))  # a copy: the caller's array may be read-only
    t = t.float().div(255) if a.dtype == np.uint8 else t.float()
    if t.numel() and (t.min() < 0 or t.max() > 1):
        raise CnnlabError("a float image array must hold values in [0,1] (or pass uint8 pixels)")
    t = t.permute(0, 3, 1, 2)[:, :3]
    return list(t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t)
