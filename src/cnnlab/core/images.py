"""Image I/O and conversions. Tensors at every API boundary are float (B,C,H,W) or (C,H,W) in [0,1]."""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import CnnlabError
from .runs import atomic_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def load_image(path, max_pixels: int | None = None, min_side: int | None = None) -> Image.Image:
    """Open and fully decode an image as 8-bit RGB; a one-line error (CnnlabError) if it cannot be read.

    `min_side`: the caller will shrink the shorter side to this many pixels; a JPEG at least four times that size
    is then decoded at a reduced scale (Pillow's draft mode, in the DCT) that keeps the shorter side at least twice
    `min_side` — so a phone photo going to a 224-pixel network is never held at full resolution, and the
    antialiased resize that follows still starts from twice its output.

    EXIF orientation is applied; grayscale and palette images become RGB; 16-bit images are rescaled (not clipped);
    CMYK is converted; transparent images are composited on white; an animated file gives its first frame. An image
    of more than `max_pixels` pixels (default: Pillow's decompression-bomb limit) is refused before it is decoded."""
    limit = max_pixels or Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():  # Pillow warns between 1× and 2× its limit: here that is a refusal
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if limit and img.width * img.height > limit:
                    raise CnnlabError(f"cannot read image {path}: {img.width}×{img.height} pixels, more than the "
                                      f"limit of {limit:,}")
                if min_side and img.format == "JPEG" and min(img.size) >= 4 * min_side:
                    scale = 2 * min_side / min(img.size)
                    img.draft("RGB", (math.ceil(img.width * scale), math.ceil(img.height * scale)))
                img.load()
                return to_rgb(img)
    except CnnlabError:
        raise
    except FileNotFoundError:
        what = "a dangling link" if isinstance(path, (str, os.PathLike)) and os.path.islink(path) else "no such file"
        raise CnnlabError(f"cannot read image {path}: {what}") from None
    except (IsADirectoryError, PermissionError) as exc:
        what = "it is a folder" if isinstance(exc, IsADirectoryError) else "permission denied"
        raise CnnlabError(f"cannot read image {path}: {what}") from None
    except Image.DecompressionBombError as exc:
        raise CnnlabError(f"cannot read image {path}: too many pixels ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CnnlabError(f"cannot read image {path}: {exc}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB, the way a viewer shows it."""
    from PIL import ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / scale * 255 + 0.5, 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("RGB")


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL → float (C,H,W) in [0,1]."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)


def array_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 (N,H,W,3) or (H,W,3) → float (N,3,H,W) in [0,1]."""
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.ndim == 3:
        t = t.unsqueeze(0)
    return t.permute(0, 3, 1, 2).float().div_(255)


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (C,H,W) in [0,1] → uint8 (H,W,C), rounded as an 8-bit file would store it."""
    x = x.detach().float().cpu().clamp(0, 1)
    return (x.mul(255).round().byte().permute(1, 2, 0).numpy())


def quantize(x: torch.Tensor) -> torch.Tensor:
    """What a saved 8-bit PNG really holds: values rounded to multiples of 1/255."""
    return x.clamp(0, 1).mul(255).round().div(255)


def save_png(x: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save a (C,H,W) [0,1] tensor as an 8-bit PNG, atomically."""
    arr = tensor_to_uint8(x)
    img = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def make_grid(x: torch.Tensor, nrow: int = 8, padding: int = 2) -> torch.Tensor:
    """(B,C,H,W) → one (C,H',W') image, via torchvision."""
    from torchvision.utils import make_grid as tv_make_grid

    return tv_make_grid(x.detach().cpu(), nrow=nrow, padding=padding, pad_value=1.0)


def image_entries(folder: Path) -> list[Path]:
    """Everything under `folder` named like an image, sorted: files, and also dangling links and folders with an
    image's name — so that they are listed as skipped, not silently left out."""
    return sorted(q for q in folder.rglob("*") if is_image_file(q) and (q.is_file() or q.is_dir() or q.is_symlink()))


def collect_image_paths(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into image paths; a missing path is an error."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = image_entries(p)
            if not found:
                raise CnnlabError(f"no images found in folder {p}")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise CnnlabError(f"no such file or folder: {p}")
    return paths


def skip_reasons(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """{"image", "error"} for files that could not be read (the reason, found again by reading them)."""
    out = []
    for p in paths:
        try:
            load_image(p)
            reason = "unreadable when it was read (it reads now: changed since?)"
        except CnnlabError as exc:
            reason = str(exc)
        out.append({"image": str(p), "error": reason})
    return out


SAMPLE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")  # scikit-image's bundled photos: offline defaults


def sample_photos() -> dict[str, Image.Image]:
    """scikit-image's bundled photos (a cat, a coffee cup, an astronaut, a rocket), by name: offline inputs."""
    import skimage.data

    return {name: Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in SAMPLE_PHOTOS}
