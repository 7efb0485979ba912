"""The `models` job: `cnnlab models` / `cnnlab.describe_backbone`. Every registered backbone with its named cut
points (shapes and feature sizes), parameter counts and whether its weights are on this machine."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.backbones import Backbone, pool_features
from ..core.config import Config, option
from ..core.errors import CnnlabError
from ..core.hooks import CutPoint, capture, eval_mode
from ..core.models import no_inplace, weights_available
from ..core.table import generic_cut_points, list_backbones
from ..core.sources import get_entry
from ..core.results import Result


def describe_backbone(model: str | Backbone) -> dict:
    """Cut points with their shapes and feature sizes, and parameter counts. A name is built on the meta device (no
    weights, no memory); a model in hand runs one blank image. Generic models list every module path."""
    if isinstance(model, Backbone):
        net, prep, points, name = model.net, model.preprocess, model.cut_points, model.name
        info = {"description": f"{type(model.net).__name__} ({model.spec or 'wrapped module'})",
                "default_layer": model.default_layer, "weights_offline": True, "list_modules": True}
        device = model.device
    else:
        entry = get_entry(model)
        try:
            with torch.device("meta"):
                net = entry.build()
            device = torch.device("meta")
        except CnnlabError:
            raise
        except Exception:  # a user's factory that cannot run on the meta device
            net, device = entry.build(), torch.device("cpu")
        no_inplace(net)
        prep, name = entry.preprocess(net), model
        points = entry.cut_points(net) if not entry.own_weights else generic_cut_points(net)
        info = {"description": entry.description, "weights_offline": weights_available(model),
                "default_layer": entry.default_layer or ("pre_logits" if "pre_logits" in points else "logits"),
                "list_modules": entry.list_modules}
    listed = dict(points)
    if info["list_modules"]:
        listed.update({n: CutPoint(n) for n, _ in net.named_modules() if n and n not in listed})
    x = torch.zeros(1, len(prep.mean), prep.input_size, prep.input_size, device=device)
    with capture(net, listed, stop_early=False) as store, torch.no_grad(), eval_mode(net):
        net(x)
    linear = sum(p.numel() for m in net.modules() if isinstance(m, nn.Linear) for p in m.parameters())
    cuts = [{"name": n, "module": p.module, "read": p.kind, "shape": list(store[n].shape[1:]),
             "dim": {pool: int(pool_features(store[n], pool).shape[1]) for pool in ("avg", "flatten")}}
            for n, p in listed.items() if isinstance(store.get(n), torch.Tensor) and store[n].ndim >= 2]
    return {"name": name, "description": info["description"], "parameters": sum(p.numel() for p in net.parameters()),
            "fc_parameters": linear, "default_layer": info["default_layer"], "preprocess": prep.to_dict(),
            "weights_offline": info["weights_offline"], "cut_points": cuts}


@dataclass
class ModelsConfig(Config):
    """Lists every registered backbone with its named cut points (and their feature sizes), parameter counts
    (computed from the model) and whether its weights are available offline right now. Any timm:NAME,
    torchvision:NAME or path/to/file.py:factory may be named too: generic models list every module path, each
    a cut point (and a Grad-CAM layer)."""

    command = "models"
    backbone: list[str] | None = option(None, append=True, help="only this backbone (repeatable; also timm:NAME, "
                                                                "torchvision:NAME, path/to/file.py:factory)")


class ModelsResult(Result):
    kind = "models"

    def __init__(self, config: ModelsConfig, backbones: list[dict]):
        super().__init__(config)
        self.backbones = backbones

    def summary(self) -> dict:
        return {"backbones": self.backbones}

    def text(self) -> str:
        lines = []
        for d in self.backbones:
            avail = "offline" if d["weights_offline"] else "not on this machine (downloaded on first use)"
            lines.append(f"{d['name']}: {d['description']}\n  parameters {d['parameters']:,} "
                         f"(fully-connected layers {d['fc_parameters']:,}); weights: {avail}; "
                         f"input {d['preprocess']['input_size']}px; default layer {d['default_layer']}")
            for c in d["cut_points"]:
                lines.append(f"    {c['name']:<12} {c['module'] or '(output)':<16} {str(c['shape']):<16} → "
                             f"{c['dim']['avg']}-d (avg pooled)")
        return "\n".join(lines)


def catalog(config: ModelsConfig | None = None) -> ModelsResult:
    config = config or ModelsConfig()
    return ModelsResult(config, [describe_backbone(n) for n in (config.backbone or list_backbones())])
