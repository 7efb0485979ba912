"""Evaluating generators, the way the field does (metrics in `gan/metrics.py`): one pass of features over the
generated and the real images gives the Fréchet distance, KID, precision / recall and density / coverage.
Conditional MNIST generators are judged by the small MNIST classifier shipped with cnnlab (the `mnist_cnn`
backbone): conditional accuracy (is a generated digit the one asked for?), its features for the metrics, the
per-class Fréchet distance, and CAS (a fresh classifier trained on generated digits, tested on real ones). Image
generators (dcgan): the metrics in an ImageNet backbone's features (default Lite0 pre_logits)."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dataclasses import dataclass

from ..core.backbones import Backbone
from ..core.config import Config, SEED_MAX, data_root_option, option
from ..core.data import load_mnist
from ..core.calls import configure, with_options
from ..core.mnist import shipped_test_accuracy
from ..core.models import load_model
from ..core.table import DEFAULT_BACKBONE
from ..core.results import Result
from ..core.errors import CnnlabError
from .metrics import CAS_EPOCHS, cas, feature_metrics, per_class_fd
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


def _image_fd(G, config: dict, real: torch.Tensor, n: int, seed: int, backbone: str | None, layer: str | None,
              progress: bool) -> dict:
    fake = torch.cat([generate(G, config, torch.zeros(len(c), dtype=torch.long), seed + i)
                      for i, c in enumerate(torch.arange(n).split(500))])
    idx = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:n]
    real = real[idx]
    real = real.float() / 255 if real.dtype == torch.uint8 else real
    backbone = backbone or DEFAULT_BACKBONE
    model = load_model(backbone)
    layer = layer or _default_layer(model)
    scores = feature_metrics(features(real, model, layer, progress), features(fake, model, layer, progress), seed)
    return scores | {"fd_backbone": scores["fd"], "backbone": backbone, "layer": layer, "n": n, "n_real": len(real),
                     "model": config["model"], "nz": config["nz"]}


def features(images: torch.Tensor, model: Backbone, layer: str, progress: bool = False,
             batch_size: int = 250) -> torch.Tensor:
    """Pooled features (N, D) of images (float [0,1] or uint8, any size and channel count) at one cut point."""
    from tqdm.auto import tqdm

    net = _BackboneFeatures(model, layer)
    with torch.inference_mode():
        return torch.cat([net(b) for b in tqdm(images.split(batch_size), desc="features", disable=not progress)])


@dataclass
class EvaluateConfig(Config):
    """Judges a generator against real images in a feature space, in one pass: Fréchet distance, KID (unbiased,
    with its standard deviation over subsets), precision / recall (k = 3) and density / coverage (k = 5).
    Conditional MNIST generators: the small MNIST classifier shipped with cnnlab (`mnist_cnn`) gives the conditional
    accuracy (per label and mean) and, by default, the features (its 128-d pre_logits; --backbone names another
    model); real test digits are the reference, and per_class_fd and CAS (a fresh classifier of the same architecture
    trained on the generated digits, tested on the real test set; cas_real: the same training on as many real
    training digits) are added. Without MNIST under --data-root, what needs real digits is skipped, and said.
    JSON: {conditional_accuracy, per_label_accuracy, fd, kid, kid_std, precision, recall, density, coverage,
    per_class_fd, cas, cas_real, fd_mnist (= fd), n, classifier_test_accuracy}.
    An image generator (dcgan) is compared with its training images in an ImageNet backbone's features (--backbone,
    default Lite0 pre_logits, images resized to its input size).
    JSON: {fd, kid, kid_std, precision, recall, density, coverage, fd_backbone (= fd), backbone, layer, n, n_real,
    model, nz}."""

    command = "gan evaluate"
    checkpoint: str | None = option(None, help="RUN_DIR/checkpoint.pt (default: the shipped generator)")
    n: int = option(2000, flag="-n", low=4, help="generated images (and as many real test digits or training images)")
    seed: int = option(0, low=0, high=SEED_MAX, help="seed")
    data_root: str | None = data_root_option("folder holding MNIST/")
    backbone: str | None = option(None, help="the network whose features the metrics compare (default: the MNIST "
                                             f"classifier for digits, {DEFAULT_BACKBONE} for images)")
    cas: bool = option(True, negate="--no-cas", help="conditional generators: train a classifier on generated digits "
                                                     "and test it on real ones (and the same on real digits)")
    cas_n: int = option(10000, low=10, help="CAS: generated digits (and as many real training digits) each "
                                            "classifier trains on")
    cas_epochs: int = option(CAS_EPOCHS, low=1, help="CAS: training epochs of each classifier (the default takes real "
                                                    "digits to the shipped classifier's accuracy)")


class EvaluateResult(Result):
    kind = "evaluate"

    def __init__(self, config: EvaluateConfig, scores: dict):
        super().__init__(config)
        self.scores = scores

    def summary(self) -> dict:
        return self.scores | ({"run_dir": str(self.run_dir)} if self.run_dir else {})

    def text(self) -> str:
        s = self.scores
        text = ""
        if "conditional_accuracy" in s:
            text = (f"conditional accuracy {s['conditional_accuracy']:.3f} (classifier test accuracy "
                    f"{s['classifier_test_accuracy']:.4f}); n={s['n']}")
        if "fd" in s:
            where = s.get("features") or f"{s['backbone']} {s['layer']}"
            text += (("\n" if text else "") + f"in {where} features: FD {s['fd']:.2f}, KID {s['kid']:.4f} ± "
                     f"{s['kid_std']:.4f}, precision {s['precision']:.3f}, recall {s['recall']:.3f}, density "
                     f"{s['density']:.3f}, coverage {s['coverage']:.3f}; n={s['n']}")
        if "cas" in s:
            text += f"\nCAS {s['cas']:.4f} (trained on as many real digits: {s['cas_real']:.4f})"
        if "skipped" in s:
            text += f"\nskipped {s['skipped']}"
        return text


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
        scores = _conditional_scores(G, gan, config)
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


def _conditional_scores(G, gan: dict, config: EvaluateConfig) -> dict:
    judge = load_model("mnist_cnn")
    n, seed = config.n, config.seed
    labels = torch.arange(n) % 10
    fake = torch.cat([generate(G, gan, lab, seed + i) for i, lab in enumerate(labels.split(500))])
    with torch.no_grad():
        pred = torch.cat([judge(b).argmax(1) for b in fake.split(500)])
    correct = pred.eq(labels)
    scores = {"conditional_accuracy": float(correct.float().mean()), "n": n, "model": gan["model"],
              "per_label_accuracy": {str(k): float(correct[labels == k].float().mean()) for k in range(10)},
              "classifier_test_accuracy": shipped_test_accuracy()}
    try:
        Xt, yt = load_mnist(config.data_root, train=False)
    except CnnlabError as exc:
        return scores | {"skipped": f"fd, kid, precision, recall, density, coverage, per_class_fd, cas: {exc}"}
    idx = torch.randperm(len(Xt), generator=torch.Generator().manual_seed(seed))[:n]
    real, real_y = Xt[idx].float() / 255, yt[idx]
    model = load_model(config.backbone) if config.backbone else judge
    layer = _default_layer(model) if config.backbone else "pre_logits"
    fake_f, real_f = features(fake, model, layer), features(real, model, layer)
    scores |= feature_metrics(real_f, fake_f, seed) | {"per_class_fd": per_class_fd(real_f, real_y, fake_f, labels),
                                                       "features": f"{config.backbone or 'mnist_cnn'} {layer}"}
    scores["fd_mnist"] = scores["fd"]
    if config.cas:
        cas_labels = torch.arange(config.cas_n) % 10
        generated = torch.cat([generate(G, gan, lab, seed + 1000 + i) for i, lab in enumerate(cas_labels.split(500))])
        scores["cas"] = cas(generated, cas_labels, Xt, yt, config.cas_epochs, seed)
        scores["cas_real"] = _cas_real(config.data_root, config.cas_n, config.cas_epochs, seed)
        scores["cas_n"] = config.cas_n
    return scores


@functools.lru_cache(maxsize=8)
def _cas_real(data_root: str | None, n: int, epochs: int, seed: int) -> float:
    """CAS's reference: the same recipe trained on `n` real training digits (seeded, so one training serves every
    generator evaluated with these settings)."""
    Xt, yt = load_mnist(data_root, train=False)
    Xtr, ytr = load_mnist(data_root, train=True)
    pick = torch.randperm(len(Xtr), generator=torch.Generator().manual_seed(seed + 1))[:n]
    return cas(Xtr[pick], ytr[pick], Xt, yt, epochs, seed)
