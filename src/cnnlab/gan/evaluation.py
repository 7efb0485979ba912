"""Evaluating generators. Conditional MNIST generators: a small MNIST classifier trained (and cached) by cnnlab
gives conditional accuracy (is a generated digit the one asked for?) and a Fréchet distance in that classifier's
feature space. Image generators (dcgan): a Fréchet distance in an ImageNet backbone's feature space (default
Lite0 pre_logits). Both through torchmetrics' FrechetInceptionDistance with a custom feature network."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dataclasses import dataclass

from ..core.backbones import Backbone
from ..core.config import Config, option
from ..core.data import load_mnist
from ..core.models import DEFAULT_BACKBONE, load_model
from ..core.results import Result
from ..core.runs import atomic_path, default_cache_dir
from .sampling import conditional, generate, load_generator


class MnistNet(nn.Module):
    """A small CNN (~99% test accuracy); `features` (128-d) feed the Fréchet distance."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 7
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
        )
        self.fc = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:  # torchmetrics probes the network with uint8 images
            x = x.float() / 255
        return self.conv((x - 0.1307) / 0.3081)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class _Features(nn.Module):
    """What torchmetrics calls: images [0,1] → (N,128)."""

    def __init__(self, net: MnistNet):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.features(x)


def mnist_classifier(data_root: str | None, cache_dir: str | Path, epochs: int = 2, seed: int = 0,
                     progress: bool = False) -> tuple[MnistNet, float]:
    """The judge network and its MNIST test accuracy; trained once (seeded) and cached atomically."""
    path = Path(cache_dir) / f"mnist_classifier_e{epochs}_s{seed}.pt"
    net = MnistNet()
    if path.is_file():
        ck = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(ck["state_dict"])
        return net.eval(), float(ck["test_accuracy"])
    X, y = load_mnist(data_root, train=True)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        net = MnistNet()
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        for _ in range(epochs):
            for idx in torch.randperm(len(X), generator=g).split(128):
                loss = F.cross_entropy(net(X[idx].float() / 255), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    Xt, yt = load_mnist(data_root, train=False)
    net.eval()
    with torch.no_grad():
        acc = float(torch.cat([net(b.float() / 255).argmax(1) for b in Xt.split(1000)]).eq(yt).float().mean())
    with atomic_path(path) as tmp:
        torch.save({"state_dict": net.state_dict(), "test_accuracy": acc}, tmp)
    return net, acc


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
    """Judges a conditional MNIST generator with a small MNIST classifier trained and cached by cnnlab:
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
    cache_dir: str | None = option(None, env="CNNLAB_CACHE", default_help="$CNNLAB_CACHE or ~/.cache/cnnlab",
                                   help="where the classifier is cached")
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
    cache = config.cache_dir or default_cache_dir()
    if not conditional(gan):
        from .training import GanConfig, load_training_data

        known = {k: v for k, v in gan.items() if k in GanConfig.options()}
        real, _, _ = load_training_data(GanConfig.from_dict(known | {"data_root": config.data_root or known.get("data_root")}))
        scores = _image_fd(G, gan, real, config.n, config.seed, config.backbone, None, progress)
    else:
        scores = _conditional_scores(G, gan, config.data_root, cache, config.n, config.seed)
    return EvaluateResult(config, scores | {"checkpoint": checkpoint})


def evaluate(checkpoint: str | Path | None, data_root: str | None, cache_dir: str | Path, n: int = 1000,
             seed: int = 0, backbone: str = DEFAULT_BACKBONE, progress: bool = False) -> dict:
    """The scores as a dict (the summary of `evaluate_generator`)."""
    config = EvaluateConfig(checkpoint=str(checkpoint) if checkpoint else None, n=n, seed=seed, data_root=data_root,
                            cache_dir=str(cache_dir) if cache_dir else None, backbone=backbone)
    return evaluate_generator(config, progress).summary()


def _conditional_scores(G, config: dict, data_root: str | None, cache_dir: str | Path, n: int, seed: int) -> dict:
    from torchmetrics.image.fid import FrechetInceptionDistance

    net, test_acc = mnist_classifier(data_root, cache_dir)
    labels = torch.arange(n) % 10
    fake = torch.cat([generate(G, config, lab, seed + i) for i, lab in enumerate(labels.split(500))])
    with torch.no_grad():
        pred = torch.cat([net(b).argmax(1) for b in fake.split(500)])
    correct = pred.eq(labels)
    per_label = {str(k): float(correct[labels == k].float().mean()) for k in range(10)}
    Xt, _ = load_mnist(data_root, train=False)
    real = Xt[torch.randperm(len(Xt), generator=torch.Generator().manual_seed(seed))[:n]].float() / 255
    fid = FrechetInceptionDistance(feature=_Features(net), normalize=True, input_img_size=(1, 28, 28))
    fid.update(real, real=True)
    fid.update(fake, real=False)
    return {"conditional_accuracy": float(correct.float().mean()), "per_label_accuracy": per_label,
            "fd_mnist": float(fid.compute()), "n": n, "classifier_test_accuracy": test_acc, "model": config["model"]}
