"""Saliency methods, one registered class each (Captum's shape): a method is a dataclass whose fields are its
options, and `attribute(backbone, x, targets) -> maps (B,H,W) ≥ 0` per call. `METHODS` (the registry) is what the
CLI's choices and flags, the app's list, the report and `--help` read: adding a method is one class in one file.

- `gradients.py`: vanilla, SmoothGrad, Integrated Gradients, input × gradient, Guided Backprop, the edges control;
- `cams.py`: one CAM engine — Grad-CAM, Grad-CAM++, LayerCAM, Score-CAM, SmoothGrad × Grad-CAM;
- `perturbation.py`: occlusion, RISE, iterated Grad-CAM;
- `attention.py`: attention rollout, Chefer's relevance;
- `relevance.py`: LRP for CNNs (zennit), AttnLRP for transformers (lxt's rules).

Measured faithfulness and sanity of each: docs/benchmarks.md ("Explanations").
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from ...core.backbones import Backbone
from ...core.parts import Part, registry_help
from .base import (BLUR_SIGMA, METHODS, FlatMapWarning, SaliencyMethod, blurred, cam_layers, patch_size, predicted, register, unit,
                   upsampled)
from .gradients import IG_BASELINES, guided_relus
from .cams import activations_and_gradients, gradcam
from . import perturbation  # noqa: F401  (registers its methods)
from . import attention  # noqa: F401  (registers its methods)
from . import relevance  # noqa: F401  (registers its methods)

# the method a user is offered first: what `jobs.evaluate.recommended` chose over the faithfulness panel on the tuning
# photos (docs/benchmarks.md, "The faithfulness panel and the recommended method")
RECOMMENDED = "gradcam"

__all__ = ["METHODS", "RECOMMENDED", "FlatMapWarning", "SaliencyMethod", "register", "method", "attribute", "methods_help",
           "result_settings", "blurred", "cam_layers", "patch_size", "predicted", "unit", "upsampled", "gradcam",
           "guided_relus", "activations_and_gradients", "IG_BASELINES", "BLUR_SIGMA"]


def method(name: str, options: Mapping[str, Any] | None = None, **kw) -> SaliencyMethod:
    """The registered method `name`, made with the options it takes (`options` may hold other methods' too)."""
    return METHODS.build(name, {**(options or {}), **kw})


def attribute(backbone: Backbone, x: torch.Tensor, target, name: str = "vanilla",
              options: Mapping[str, Any] | None = None, **kw) -> torch.Tensor:
    """Saliency maps (B,H,W) of images x (B,C,H,W) in [0,1], one target class per image."""
    return method(name, options, **kw).attribute(backbone, x, target)


def result_settings(job: Mapping[str, Any], parts: Sequence[Part], drop: Sequence[str] = ()) -> dict:
    """A job's settings as far as its results depend on them: the parts' own settings (without the options that
    change only the cost) instead of the fields that hold them, and without the options `drop` names."""
    return {"job": {k: v for k, v in job.items() if k not in drop}, "parts": [p.settings() for p in parts]}


def methods_help() -> str:
    """Each method's help, with the measured outcome of its sanity check (docs/benchmarks.md)."""
    from ..verdicts import verdict

    def text(name: str, cls) -> str:
        star = ("★ RECOMMENDED (the best faithfulness-panel rank among the methods that pass the sanity check and cost "
                "at most 16 forward + backward passes per image; docs/benchmarks.md). " if name == RECOMMENDED else "")
        return f"{star}{cls.help}{'. ' + verdict(name) if verdict(name) else ''}"

    return registry_help({name: text(name, cls) for name, cls in METHODS.items()})
