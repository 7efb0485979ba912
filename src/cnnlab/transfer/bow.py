"""SIFT + bag of words with a spatial pyramid (Lazebnik, Schmid & Ponce 2006): the hand-made baseline the report
compares CNN features with (Q2-3.10). Dense SIFT descriptors (OpenCV's) on a regular grid of each grey image, a
vocabulary by k-means fitted on descriptors of the training split only, and per image the word histograms of the
whole image and of its 2×2, 4×4, … cells, weighted as the paper says. In the transfer pipeline it is the extractor
`--backbone sift-bow`, with two cut points: `bow` (the whole-image histogram) and `spm` (the pyramid)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

from ..core.errors import CnnlabError

NAME = "sift-bow"
LAYERS = ("spm", "bow")


@dataclass(frozen=True)
class BowSettings:
    """Lazebnik et al.'s 200 words, pyramid levels 0-2, patches every 8 pixels of images at most 300 px; patches of
    16 and 32 pixels quantized into one vocabulary (16 alone, Lazebnik's, measured 3 points lower on 15-Scene:
    docs/benchmarks.md)."""

    words: int = 200
    levels: int = 2
    step: int = 8
    patches: tuple[int, ...] = (16, 32)
    max_side: int = 300
    sample: int = 100_000  # training descriptors the k-means sees (a seeded subset)

    def to_dict(self) -> dict:
        return asdict(self) | {"patches": list(self.patches)}

    @classmethod
    def from_dict(cls, d: dict) -> "BowSettings":
        return cls(**{**d, "patches": tuple(d["patches"])})


def _sift():
    try:
        import cv2
    except ImportError:
        raise CnnlabError("--backbone sift-bow needs OpenCV's SIFT: pip install opencv-python-headless") from None
    return cv2, cv2.SIFT_create()


def grey(image: np.ndarray | "torch.Tensor", max_side: int) -> np.ndarray:
    """A float (3,H,W) image in [0,1] (or uint8 (H,W)) → uint8 (H,W) grey, the longer side at most `max_side`."""
    from PIL import Image

    a = np.asarray(image)
    if a.ndim == 3:
        a = (a.mean(axis=0) * 255).round().clip(0, 255).astype(np.uint8)
    im = Image.fromarray(a)
    if max(im.size) > max_side:
        s = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.LANCZOS)
    return np.asarray(im)


def dense_sift(img: np.ndarray, s: BowSettings) -> tuple[np.ndarray, np.ndarray]:
    """(positions (n,2) in [0,1) as (x, y) fractions of the image, descriptors (n,128) uint8) on a grid of patches
    of each size. OpenCV's descriptor spans 6 × the keypoint size, so size = patch / 6 describes a patch-wide
    square; upright (angle 0), as dense SIFT is."""
    cv2, sift = _sift()
    h, w = img.shape
    kps = []
    for patch in s.patches:
        half = patch // 2
        ys = np.arange(half, max(h - half, half) + 1, s.step)
        xs = np.arange(half, max(w - half, half) + 1, s.step)
        kps += [cv2.KeyPoint(float(x), float(y), patch / 6, 0) for y in ys for x in xs]
    kps, desc = sift.compute(img, kps)
    xy = np.array([kp.pt for kp in kps], np.float32).reshape(-1, 2) / np.array([w, h], np.float32)
    return xy.clip(0, 1 - 1e-6), np.asarray(desc, np.float32).reshape(-1, 128).round().clip(0, 255).astype(np.uint8)


def describe(image, s: BowSettings) -> tuple[np.ndarray, np.ndarray]:
    """Dense SIFT of one float (3,H,W) image in [0,1], read as grey at most `max_side` pixels."""
    return dense_sift(grey(image, s.max_side), s)


def fit_vocabulary(descriptors: Sequence[np.ndarray], s: BowSettings, seed: int = 0) -> np.ndarray:
    """(words, 128) float32 centres: k-means on a seeded subset of these (the training images') descriptors."""
    from sklearn.cluster import KMeans

    allx = np.concatenate([d for d in descriptors if len(d)])
    if len(allx) < s.words:
        raise CnnlabError(f"sift-bow: {len(allx)} training descriptors, fewer than the {s.words} words asked")
    rng = np.random.default_rng(seed)
    sample = allx[rng.choice(len(allx), size=min(s.sample, len(allx)), replace=False)].astype(np.float32)
    return KMeans(s.words, n_init=1, random_state=seed).fit(sample).cluster_centers_.astype(np.float32)


def pyramid(xy: np.ndarray, desc: np.ndarray, vocabulary: np.ndarray, levels: int) -> np.ndarray:
    """The spatial pyramid of one image: for each level l, the word histogram of each of its 2^l × 2^l cells,
    weighted 1/2^L at level 0 and 1/2^(L-l+1) above (the pyramid match kernel's weights), over the image's
    descriptor count; level 0 comes first, so its K values are the plain bag of words."""
    from sklearn.metrics import pairwise_distances_argmin

    K = len(vocabulary)
    out = np.zeros(K * sum(4 ** l for l in range(levels + 1)), np.float32)
    if not len(desc):
        return out
    words = pairwise_distances_argmin(desc.astype(np.float32), vocabulary)
    at = 0
    for level in range(levels + 1):
        cells = 2 ** level
        cell = (xy[:, 1] * cells).astype(int) * cells + (xy[:, 0] * cells).astype(int)
        hist = np.bincount(cell * K + words, minlength=cells * cells * K).astype(np.float32)
        weight = 1 / 2 ** levels if level == 0 else 1 / 2 ** (levels - level + 1)
        out[at:at + hist.size] = hist * weight / len(desc)
        at += hist.size
    return out


def features(described: Iterable[tuple[np.ndarray, np.ndarray]], vocabulary: np.ndarray,
             s: BowSettings) -> dict[str, np.ndarray]:
    """The two cut points of each image: `spm` (the pyramid) and `bow` (its level 0)."""
    rows = np.stack([pyramid(xy, d, vocabulary, s.levels) for xy, d in described])
    return {"spm": rows, "bow": rows[:, :len(vocabulary)] * 2 ** s.levels}
