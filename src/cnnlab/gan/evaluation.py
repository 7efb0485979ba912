"""Evaluating generators. Conditional MNIST generators: the small MNIST classifier shipped with cnnlab (the
`mnist_cnn` backbone) gives conditional accuracy (is a generated digit the one asked for?) and a Fréchet distance in that classifier's
feature space. Image generators (dcgan): a Fréchet distance in an ImageNet backbone's feature space (default
Lite0 pre_logits). Both through torchmetrics' FrechetInceptionDistance with a custom feature network."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dataclasses import dataclass

from ..core.backbones import Backbone
from ..core.config import Config, option
from ..core.data import load_mnist
from ..core.jobs import configure, with_options
from ..core.mnist import shipped_test_accuracy
from ..core.models import DEFAULT_BACKBONE, load_model
from ..core.results import Result
from .sampling import conditional, generate, load_generator


class _BackboneFeatures(nn.Module):
    """What torchmetrics calls: images [0,1] at any size → pooled features of one cut point, at the backbone's size."""

    def __init__(self, backbone: Backbone, layer: str):
        super().__init__()
        self.backbone, self.layer = backbone, layer
        self.size = backbone.preprocess.input_size

    def forward(self, x):
        if x.dtype == torch.uint8:
            x = x.float() / 255
        x = x.to(self.backbone.device)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-1] != self.size:  # e.g. 64×64 faces → 224×224, as the ImageNet network expects
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return self.backbone.features(x, [self.layer])[self.layer].float().cpu()


def frechet_distance(fake: torch.Tensor, real: torch.Tensor, backbone: Backbone | str = DEFAULT_BACKBONE,
                     layer: str | None = None, batch_size: int = 100, progress: bool = False) -> float:
    """Fréchet distance between two image sets (float (N,C,H,W) in [0,1]) in a backbone's feature space."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from tqdm.auto import tqdm

    model = load_model(backbone) if isinstance(backbone, str) else backbone
    layer = layer or _default_layer(model)
    net = _BackboneFeatures(model, layer).eval()
    fid = FrechetInceptionDistance(feature=net, normalize=True, input_img_size=tuple(real.shape[1:]))
    with torch.inference_mode():
        for images, is_real in ((real, True), (fake, False)):
            for b in tqdm(images.split(batch_size), desc="Fréchet features", disable=not progress):
                fid.update(b, real=is_real)
    return float(fid.compute())


def _default_layer(model: Backbone) -> str:
    return model.default_layer


def evaluate_images(checkpoint: str | Path, real: torch.Tensor, n: int = 1000, seed: int = 0,
                    backbone: str = DEFAULT_BACKBONE, layer: str | None = None, progress: bool = False) -> dict:
    """An unconditional generator against real images (uint8 or float): the Fréchet distance in a backbone's space."""
    G, config = load_generator(checkpoint)
    return _image_fd(G, config, real, n, seed, backbone, layer, progress) | {"checkpoint": str(checkpoint)}


def _image_fd(G, config: dict, real: torch.Tensor, n: int, seed: int, backbone: str, layer: str | None,
              progress: bool) -> dict:
    fake = torch.cat([generate(G, config, torch.zeros(len(c), dtype=torch.long), seed + i)
                      for i, c in enumerate(torch.arange(n).split(500))])
    idx = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:n]
    real = real[idx]
    real = real.float() / 255 if real.dtype == torch.uint8 else real
    model = load_model(backbone)
    layer = layer or _default_layer(model)
    fd = frechet_distance(fake, real, model, layer, progress=progress)
    return {"fd_backbone": fd, "backbone": backbone, "layer": layer, "n": n, "n_real": len(real),
            "model": config["model"], "nz": config["nz"]}


@dataclass
class EvaluateConfig(Config):
    """Judges a conditional MNIST generator with the small MNIST classifier shipped with cnnlab (`mnist_cnn`):
    conditional accuracy (per label and mean) and the Fréchet distance between generated and real test digits in the
    classifier's 128-d feature space (torchmetrics FID with a custom network).
    JSON: {conditional_accuracy, per_label_accuracy, fd_mnist, n, classifier_test_accuracy}.
    An image generator (dcgan) is compared with its training images in an ImageNet backbone's feature space
    (--backbone, default Lite0 pre_logits, images resized to its input size).
    JSON: {fd_backbone, backbone, layer, n, n_real, model, nz}."""

    command = "gan evaluate"
    checkpoint: str | None = option(None, help="RUN_DIR/checkpoint.pt (default: the shipped generator)")
    n: int = option(1000, flag="-n", low=2, help="generated images")
    seed: int = option(0, help="seed")
    data_root: str | None = option(None, env="CNNLAB_DATA", default_help="$CNNLAB_DATA", help="folder holding MNIST/")
    backbone: str = option(DEFAULT_BACKBONE, help="image generators: the network whose features the Fréchet "
                                                  "distance compares")


class EvaluateResult(Result):
    kind = "evaluate"

    def __init__(self, config: EvaluateConfig, scores: dict):
        super().__init__(config)
        self.scores = scores

    def summary(self) -> dict:
        return self.scores | ({"run_dir": str(self.run_dir)} if self.run_dir else {})

    def text(self) -> str:
        s = self.scores
        if "conditional_accuracy" in s:
            return (f"conditional accuracy {s['conditional_accuracy']:.3f} (classifier test accuracy "
                    f"{s['classifier_test_accuracy']:.4f}); Fréchet distance (MNIST classifier features) "
                    f"{s['fd_mnist']:.2f}; n={s['n']}")
        return (f"Fréchet distance to the training images ({s['backbone']} {s['layer']} features) "
                f"{s['fd_backbone']:.2f}; n={s['n']}")


def evaluate_generator(config: EvaluateConfig, progress: bool = False) -> EvaluateResult:
    """Any cnnlab generator. Conditional (cdcgan, cgan): conditional accuracy and the Fréchet distance in the MNIST
    judge's features. Unconditional (dcgan): the Fréchet distance to its training images in `backbone`'s features."""
    G, gan = load_generator(config.checkpoint)
    checkpoint = str(config.checkpoint) if config.checkpoint else "shipped"
    if not conditional(gan):
        from .training import GanConfig, load_training_data

        known = {k: v for k, v in gan.items() if k in GanConfig.options()}
        real, _, _ = load_training_data(GanConfig.from_dict(known | {"data_root": config.data_root or known.get("data_root")}))
        scores = _image_fd(G, gan, real, config.n, config.seed, config.backbone, None, progress)
    else:
        scores = _conditional_scores(G, gan, config.data_root, config.n, config.seed)
    return EvaluateResult(config, scores | {"checkpoint": checkpoint})


@with_options(EvaluateConfig)
def evaluate(checkpoint: str | os.PathLike | None = None, *, config: EvaluateConfig | None = None,
             progress: bool = False, **options) -> EvaluateResult:
    """Conditional accuracy and Fréchet distance of a conditional MNIST generator (judged by the MNIST classifier
    shipped with cnnlab); for an image generator, the Fréchet distance to its training images in an ImageNet
    backbone's features. Real MNIST digits come from `data_root` (the CLI: --data-root or $CNNLAB_DATA)."""
    if checkpoint is not None:
        options["checkpoint"] = str(checkpoint)
    return evaluate_generator(configure(EvaluateConfig, config, options), progress)


def _conditional_scores(G, config: dict, data_root: str | None, n: int, seed: int) -> dict:
    from torchmetrics.image.fid import FrechetInceptionDistance

    judge = load_model("mnist_cnn")
    test_acc = shipped_test_accuracy()
    labels = torch.arange(n) % 10
    fake = torch.cat([generate(G, config, lab, seed + i) for i, lab in enumerate(labels.split(500))])
    with torch.no_grad():
        pred = torch.cat([judge(b).argmax(1) for b in fake.split(500)])
    correct = pred.eq(labels)
    per_label = {str(k): float(correct[labels == k].float().mean()) for k in range(10)}
    Xt, _ = load_mnist(data_root, train=False)
    real = Xt[torch.randperm(len(Xt), generator=torch.Generator().manual_seed(seed))[:n]].float() / 255
    fid = FrechetInceptionDistance(feature=_BackboneFeatures(judge, "pre_logits").eval(), normalize=True,
                                   input_img_size=(1, 28, 28))
    fid.update(real, real=True)
    fid.update(fake, real=False)
    return {"conditional_accuracy": float(correct.float().mean()), "per_label_accuracy": per_label,
            "fd_mnist": float(fid.compute()), "n": n, "classifier_test_accuracy": test_acc, "model": config["model"]}
