"""What a feature visualization maximizes: objectives that add and scale, as in lucid.

An objective reads the activations of one forward pass (layer name → (N,C,H,W) or (N,D); `logits` is the output)
and gives one value per image of the batch. Views made by the transform chain are copy-major (view k*B + b shows
image b), and each image's value is the mean over its copies.

    class_logit(i)          the pre-softmax score of class i
    channel(L, c)           the mean of channel c's map at layer L
    neuron(L, c, y, x)      channel c at one position (the centre by default)
    direction(L, v)         the mean cosine similarity between L's channel vector at each position and v
    deepdream(L)            the mean squared activation of L (DeepDream, usually from a photo)
    diversity(L)            minus the mean cosine similarity of each image's Gram matrix at L with the others'

`a + b`, `a - b`, `2 * a`, `-a` combine them; `parse("block5:12 - 0.5*block5:7", ...)` is the CLI's spelling.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..core.parts import Registry
from ..core.errors import CnnlabError

LOGITS = "logits"
Fn = Callable[[dict[str, torch.Tensor], int], torch.Tensor]  # (activations, batch size B) → (B,)


class Objective:
    """A weighted sum of terms; `obj(acts, batch)` → (B,)."""

    def __init__(self, terms: Sequence[tuple[float, str, Fn, str]]):
        self.terms = list(terms)  # (weight, description, fn, layer)

    @property
    def layers(self) -> list[str]:
        return sorted({layer for _, _, _, layer in self.terms})

    def __call__(self, acts: dict[str, torch.Tensor], batch: int) -> torch.Tensor:
        return sum(w * fn(acts, batch) for w, _, fn, _ in self.terms)

    def parts(self, acts: dict[str, torch.Tensor], batch: int) -> dict[str, torch.Tensor]:
        """Each term's own value (B,), unweighted, by description."""
        return {d: fn(acts, batch) for _, d, fn, _ in self.terms}

    def __add__(self, other: "Objective") -> "Objective":
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(self.terms + other.terms)

    def __mul__(self, k: float) -> "Objective":
        if not isinstance(k, (int, float)):
            return NotImplemented
        return Objective([(w * k, d, fn, layer) for w, d, fn, layer in self.terms])

    __rmul__ = __mul__

    def __neg__(self) -> "Objective":
        return self * -1

    def __sub__(self, other: "Objective") -> "Objective":
        return self + (-other)

    def __repr__(self) -> str:
        return " + ".join(f"{w:g}*{d}" if w != 1 else d for w, d, _, _ in self.terms) or "0"


def _per_image(values: torch.Tensor, batch: int) -> torch.Tensor:
    """(K*B,) copy-major → (B,) mean over the K copies."""
    return values.view(-1, batch).mean(0)


def _term(description: str, layer: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Objective:
    return Objective([(1.0, description, lambda acts, b: _per_image(fn(acts[layer]), b), layer)])


def class_logit(index: int, name: str | None = None) -> Objective:
    return _term(f"class:{name or index}", LOGITS, lambda t: t[:, index])


def channel(layer: str, c: int) -> Objective:
    return _term(f"{layer}:{c}", layer, lambda t: _channel(t, layer, c).flatten(1).mean(1))


def channels(layer: str, cs: Sequence[int]) -> Objective:
    """Image b of the batch ascends channel cs[b] (a layer atlas draws several channels in one batch)."""
    index = torch.as_tensor(list(cs))

    def fn(t: torch.Tensor) -> torch.Tensor:
        t = _spatial(t, layer)
        if int(index.max()) >= t.shape[1]:
            raise CnnlabError(f"channel {int(index.max())} is out of range: {layer} has {t.shape[1]} channels")
        k = index.repeat(len(t) // len(index)).to(t.device)  # copy-major views
        return t[torch.arange(len(t), device=t.device), k].flatten(1).mean(1)

    return _term(f"{layer}:{','.join(map(str, cs))}", layer, fn)


def neuron(layer: str, c: int, y: int | None = None, x: int | None = None) -> Objective:
    def fn(t: torch.Tensor) -> torch.Tensor:
        t = _channel(t, layer, c)
        h, w = t.shape[-2:]
        yy, xx = (h // 2 if y is None else y), (w // 2 if x is None else x)
        if not (0 <= yy < h and 0 <= xx < w):
            raise CnnlabError(f"neuron {layer}:{c}@{yy},{xx} is outside the {h}×{w} map")
        return t[:, yy, xx]

    return _term(f"{layer}:{c}@{'centre' if y is None else f'{y},{x}'}", layer, fn)


def direction(layer: str, vector: torch.Tensor, label: str = "vector") -> Objective:
    v = torch.as_tensor(vector, dtype=torch.float32).flatten()

    def fn(t: torch.Tensor) -> torch.Tensor:
        t = _spatial(t, layer)
        if t.shape[1] != v.numel():
            raise CnnlabError(f"the direction has {v.numel()} values but {layer} has {t.shape[1]} channels")
        return F.cosine_similarity(t, v.to(t).view(1, -1, 1, 1), dim=1).flatten(1).mean(1)

    return _term(f"direction:{layer}={label}", layer, fn)


def deepdream(layer: str) -> Objective:
    return _term(f"dream:{layer}", layer, lambda t: t.float().pow(2).flatten(1).mean(1))


def diversity(layer: str) -> Objective:
    def fn(acts: dict[str, torch.Tensor], batch: int) -> torch.Tensor:
        t = _spatial(acts[layer], layer)
        n, c = t.shape[:2]
        flat = t.reshape(n, c, -1)
        gram = F.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1).view(-1, batch, c * c)  # (K, B, C²)
        sim = gram @ gram.transpose(1, 2)  # (K, B, B)
        if batch < 2:
            return torch.zeros(batch, device=t.device)
        off = (sim.sum(2) - sim.diagonal(dim1=1, dim2=2)) / (batch - 1)
        return -off.mean(0)

    return Objective([(1.0, f"diversity:{layer}", fn, layer)])


def _spatial(t: torch.Tensor, layer: str) -> torch.Tensor:
    if t.ndim == 2:
        return t[:, :, None, None]
    if t.ndim != 4:
        raise CnnlabError(f"{layer} gives a {t.ndim}-d activation; an objective needs (N,C,H,W) or (N,C)")
    return t


def _channel(t: torch.Tensor, layer: str, c: int) -> torch.Tensor:
    t = _spatial(t, layer)
    if not 0 <= c < t.shape[1]:
        raise CnnlabError(f"channel {c} is out of range: {layer} has {t.shape[1]} channels (0..{t.shape[1] - 1})")
    return t[:, c]


# ------------------------------------------------------------------------------------------------- parsing
# The CLI's spellings, one registered function each: `fn(rest, context)` makes the objective of `KIND:REST`
# (`context`: class_index, direction_from). `LAYER` reads any other kind as a layer name.
SPELLINGS = Registry("objective")


def spelling(name: str, text: str) -> Callable:
    def register(fn: Callable) -> Callable:
        fn.name, fn.help = name, text
        return SPELLINGS.register(fn)
    return register


@spelling("class", "class:NAME|INDEX")
def _class(rest: str, context: dict) -> Objective:
    return class_logit(context["class_index"](rest) if context.get("class_index") else int(rest), rest)


@spelling("LAYER", "LAYER:CHANNEL, LAYER:CHANNEL@Y,X (or @centre)")
def _layer(rest: str, context: dict) -> Objective:
    m = re.fullmatch(r"(\d+)(?:@(centre|center|(\d+),(\d+)))?", rest)
    if not m:
        raise CnnlabError(f"cannot read objective term {context['item']!r}: expected {atom_help()}")
    c, layer = int(m.group(1)), context["kind"]
    if m.group(2) is None:
        return channel(layer, c)
    return neuron(layer, c) if m.group(3) is None else neuron(layer, c, int(m.group(3)), int(m.group(4)))


@spelling("dream", "dream:LAYER")
def _dream(rest: str, context: dict) -> Objective:
    return deepdream(rest)


@spelling("diversity", "diversity:LAYER")
def _diversity(rest: str, context: dict) -> Objective:
    return diversity(rest)


@spelling("direction", "direction:LAYER=FILE.npy|FOLDER")
def _direction(rest: str, context: dict) -> Objective:
    layer, _, source = rest.partition("=")
    if not source or context.get("direction_from") is None:
        raise CnnlabError(f"direction needs a source: direction:LAYER=FILE.npy|FOLDER, got {context['item']!r}")
    return direction(layer, context["direction_from"](layer, source), label=source)


def atom_help() -> str:
    return ", ".join(fn.help for fn in SPELLINGS.values())


SYNTAX = (f"terms {atom_help()}; combined with ' + ' and ' - ' (spaces around), each optionally scaled as "
          "'0.5*TERM'")


def parse(text: str, class_index: Callable[[str], int] | None = None,
          direction_from: Callable[[str, str], torch.Tensor] | None = None) -> Objective:
    """An objective from its CLI spelling, e.g. "block5:12 - 0.5*block5:7" or "class:goldfish + 0.1*diversity:head".
    `class_index` resolves class names; `direction_from(layer, source)` loads a direction (a file or a folder)."""
    text = text.strip()
    if not text:
        raise CnnlabError(f"an empty objective; give {atom_help()}")
    pieces = re.split(r"\s+([+-])\s+", " " + text if text[0] in "+-" else text)
    signs, items = [1.0], []
    if pieces[0].strip() == "":
        pieces = pieces[1:]
        signs = [-1.0 if pieces[0] == "-" else 1.0]
        pieces = pieces[1:]
    items.append(pieces[0])
    for op, item in zip(pieces[1::2], pieces[2::2]):
        signs.append(-1.0 if op == "-" else 1.0)
        items.append(item)
    context = {"class_index": class_index, "direction_from": direction_from}
    total = None
    for sign, item in zip(signs, items):
        term = _parse_term(item.strip(), context) * sign
        total = term if total is None else total + term
    return total


def _parse_term(item: str, context: dict) -> Objective:
    weight = 1.0
    m = re.fullmatch(r"(-?[0-9.]+(?:e-?\d+)?)\s*\*\s*(.+)", item)
    if m:
        weight, item = float(m.group(1)), m.group(2).strip()
    if item.startswith("-"):
        weight, item = -weight, item[1:].strip()
    kind, _, rest = item.partition(":")
    if not rest:
        raise CnnlabError(f"cannot read objective term {item!r}: expected {atom_help()}")
    fn = SPELLINGS.get(kind, SPELLINGS["LAYER"])
    return fn(rest, {**context, "item": item, "kind": kind}) * weight
