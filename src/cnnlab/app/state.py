"""What every tab of the app shares: the models (loaded once per process), how an upload is read (size and pixel
caps; a decompression bomb is a message), and how any failure becomes a message in the page, never a traceback."""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..core.backbones import Backbone
from ..core.errors import CnnlabError
from ..core.images import load_image, pil_to_tensor
from ..core.models import load_model


@dataclass
class AppModels:
    """Models by spec, each built on first use and kept for the life of the process (not per click)."""

    specs: list[str]
    device: str = "cpu"
    weights: dict[str, str] = field(default_factory=dict)  # spec → its --weights (default: "default")
    _cache: dict[str, Backbone] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, spec: str | None) -> Backbone:
        spec = spec or self.specs[0]
        if spec not in self.specs:
            raise CnnlabError(f"unknown model {spec!r}; this app serves: {', '.join(self.specs)}")
        with self._lock:
            if spec not in self._cache:
                self._cache[spec] = load_model(spec, self.weights.get(spec, "default"), device=self.device)
            return self._cache[spec]

    def judge_for(self, spec: str) -> Backbone:
        """Another model than `spec`: the next one served, else Lite2 (Lite1 when spec is Lite2)."""
        others = [s for s in self.specs if s != spec]
        if others:
            return self.get(others[0])
        name = "efficientnet_lite1" if spec == "efficientnet_lite2" else "efficientnet_lite2"
        with self._lock:
            if name not in self._cache:
                self._cache[name] = load_model(name, device=self.device)
            return self._cache[name]


def read_upload(payload: Any, max_pixels: int) -> torch.Tensor:
    """An uploaded image (Gradio's file payload, a path, or an array) as float (3,H,W) in [0,1], through cnnlab's
    own decoder: an image of more than `max_pixels` pixels (a decompression bomb) is refused with a message."""
    if payload is None:
        raise CnnlabError("no image: upload one or pick a sample photo")
    if isinstance(payload, np.ndarray):
        return torch.from_numpy(payload.copy()).permute(2, 0, 1).float().div(255)[:3]
    path = payload.get("path") if isinstance(payload, dict) else payload
    if not path:
        raise CnnlabError("the upload did not arrive: try again")
    return pil_to_tensor(load_image(Path(path), max_pixels=max_pixels))


def friendly(fn: Callable) -> Callable:
    """Run a handler; any error is one line in the page (gr.Error), never a traceback. A user's error (a
    CnnlabError) is one line in the server's terminal too; anything else is a bug, whose traceback the terminal
    keeps."""
    import inspect
    import sys

    import gradio as gr

    def message(exc: Exception) -> gr.Error:
        text = str(exc) if isinstance(exc, CnnlabError) else f"{exc.__class__.__name__}: {exc}"
        line = text.splitlines()[0] if text else exc.__class__.__name__
        if isinstance(exc, CnnlabError):
            print(f"cnnlab app: {fn.__name__}: {line}", file=sys.stderr, flush=True)
        return gr.Error(line, print_exception=not isinstance(exc, CnnlabError))

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:  # noqa: BLE001 — the page shows one line; the server log keeps the rest
                raise message(exc) from None
        return gen

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001
            raise message(exc) from None
    return call


def to_image(x: torch.Tensor) -> np.ndarray:
    """(C,H,W) [0,1] tensor → (H,W,3) uint8 for Gradio."""
    a = x.detach().float().cpu().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def inside(root: Path | None, name: str, what: str, purpose: str) -> Path:
    """The folder or file under --data-root that a name from the page says, or a one-line refusal (nothing outside
    the root is reachable from the page)."""
    if root is None:
        raise CnnlabError(f"no --data-root: start the app with one {purpose}")
    path = (root / str(name)).resolve()
    if not path.is_relative_to(root.resolve()) or not path.exists():
        raise CnnlabError(f"{name!r} is not {what} under the data root")
    return path
