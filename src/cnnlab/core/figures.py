"""Figures built on matplotlib's object API (`matplotlib.figure.Figure`): no pyplot, so the caller's backend, its
open figures and a notebook's inline plots are left alone."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def hwc(x: torch.Tensor) -> np.ndarray:
    """(C,H,W) [0,1] tensor → (H,W,C) array for imshow (grayscale → (H,W))."""
    a = x.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
    return a[..., 0] if a.shape[-1] == 1 else a


def scaled(m: torch.Tensor | np.ndarray, outlier: float = 1.0) -> np.ndarray:
    """A map (H,W) to [0,1] for display: its minimum at 0 and its top `outlier` % of values at 1 (as Captum's
    visualization scales), so that a map whose mass sits in a few pixels (vanilla gradients) stays visible."""
    v = np.asarray(m.detach().float().cpu() if isinstance(m, torch.Tensor) else m, dtype=np.float64)
    v = v - v.min()
    top = float(np.percentile(v, 100 - outlier))
    return np.clip(v / top, 0, 1) if top > 0 else v / max(float(v.max()), 1e-12)


def heat(m: torch.Tensor | np.ndarray, cmap: str = "hot") -> np.ndarray:
    """A map (H,W), `scaled`, through a colormap: (H,W,3) floats in [0,1]."""
    import matplotlib

    return matplotlib.colormaps[cmap](scaled(m))[..., :3]


def overlay(image: torch.Tensor, m: torch.Tensor, alpha: float = 0.55, cmap: str = "jet") -> np.ndarray:
    """A saliency map over its image: (H,W,3) floats, the map's colours (`scaled`) weighted by its own strength."""
    img = hwc(image)
    img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img
    v = scaled(m)
    w = alpha * v[..., None]
    return (1 - w) * img + w * heat(v, cmap)


def image_grid(rows: Sequence[tuple[str, Sequence]], titles: Sequence[str] = (), cmaps: Sequence[str | None] = (),
               title: str | None = None, cell: float = 2.2):
    """A figure with one row per (name, images) and one column per image; images are (H,W[,3]) arrays or
    (C,H,W) tensors; each column may have a title."""
    n = max(len(images) for _, images in rows)
    fig = new_figure(cell * n, (cell + 0.25) * len(rows) + (0.3 if title else 0))
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (name, images) in enumerate(rows):
        cmap = cmaps[r] if r < len(cmaps) else None
        for j in range(n):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(images):
                img = hwc(images[j]) if isinstance(images[j], torch.Tensor) else images[j]
                gray = img.ndim == 2 and cmap is None  # a grayscale image, shown as one
                ax.imshow(img, cmap="gray" if gray else cmap if img.ndim == 2 else None,
                          vmin=0 if gray else None, vmax=1 if gray else None)
            else:
                ax.axis("off")
            if r == 0 and j < len(titles):
                ax.set_title(titles[j], fontsize=8)
        axes[r, 0].set_ylabel(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write a figure atomically; its format comes from the suffix."""
    from .runs import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path


def png_bytes(fig, dpi: int = 90) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    return buf.getvalue()
