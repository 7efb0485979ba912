"""The small MNIST classifiers shipped with cnnlab: `mnist_cnn` (explain works on digits; the judge of `gan
evaluate`: conditional accuracy, and the Fréchet distance in its 128-d features) and `mnist_vit`, a small vision
transformer (patch 4, a class token) to check the transformer explanations against, offline.

Their weights live in the package (`assets/mnist_cnn.pt`, `assets/mnist_vit.pt`, fp16; sizes: docs/benchmarks.md)
with their MNIST test accuracy; they were made by `train_mnist_cnn` and `train_mnist_vit` (`python -m
cnnlab.core.mnist vit ROOT` rebuilds the second; the commands are in docs/benchmarks.md). Normalization (MNIST's mean
and std) is the Backbone's job, as for every model, so the networks themselves take normalized 1-channel 28×28
images.
"""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import load_torch_file
from .errors import CnnlabError

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
ASSET = "mnist_cnn.pt"
VIT_ASSET = "mnist_vit.pt"
FORMAT = "cnnlab-mnist-1"


class MnistNet(nn.Module):
    """Three 3×3 conv blocks and two linear layers (131k parameters, ~99% test accuracy)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 7
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 3
        )
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(64 * 3 * 3, 128), nn.ReLU())
        self.fc = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.hidden(self.conv(x)))


def mnist_vit() -> nn.Module:
    """timm's VisionTransformer at MNIST's size: 28×28 gray in 4×4 patches (a 7×7 grid and a class token), width
    128, 6 blocks of 4 heads, MLP ratio 3: about 1.0 M parameters."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=128, depth=6,
                             num_heads=4, mlp_ratio=3.0)


def shipped_weights(asset: str = ASSET) -> Path:
    return Path(str(resources.files("cnnlab") / "assets" / asset))


def shipped_test_accuracy(asset: str = ASSET) -> float:
    ck = _read(shipped_weights(asset))
    return float(ck["test_accuracy"])


def _read(path: Path) -> dict:
    if not path.is_file():
        raise CnnlabError(f"the MNIST classifier is not shipped with this install ({path})")
    return load_torch_file(path, "cnnlab MNIST classifier", format=FORMAT)


def train_mnist_cnn(X: torch.Tensor, y: torch.Tensor, X_test: torch.Tensor, y_test: torch.Tensor, epochs: int = 3,
                    seed: int = 0, out: str | Path | None = None, schedule: str = "constant",
                    shift: int = 0) -> tuple[MnistNet, float]:
    """Train on uint8 (N,1,28,28) digits (seeded, Adam at 1e-3), measure the test accuracy, and optionally write the
    asset (fp16 weights + accuracy, atomically). `schedule="onecycle"` runs the learning rate up to 3e-3 and down
    (torch's OneCycleLR) and `shift` moves each batch by up to that many pixels: the recipe that converges on a
    few thousand digits (CAS). The caller's RNG is left alone."""
    if schedule not in ("constant", "onecycle"):
        raise ValueError(f"schedule must be 'constant' or 'onecycle', not {schedule!r}")
    steps = epochs * ((len(X) + 127) // 128)

    def optimizer(net: nn.Module):
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        return opt, (torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps) if schedule == "onecycle"
                     else None)

    return _train(MnistNet, optimizer, X, y, X_test, y_test, epochs, seed, out, shift)


def train_mnist_vit(X: torch.Tensor, y: torch.Tensor, X_test: torch.Tensor, y_test: torch.Tensor, epochs: int = 5,
                    seed: int = 0, out: str | Path | None = None, shift: int = 1, lr: float = 1e-3,
                    warmup: bool = True, init: str | Path | None = None,
                    progress: bool = False) -> tuple[nn.Module, float]:
    """`mnist_vit` trained as ViTs are (DeiT's recipe, scaled down): AdamW at `lr` with weight decay 0.05 off the
    norms, biases and embeddings, one warm-up epoch (`warmup`) then a cosine to 0 per step, label smoothing 0.1,
    batches of 128 shifted by up to `shift` pixels. `init`: start from these weights (a second, lower-rate cycle).
    Same contract as `train_mnist_cnn`."""
    batches = (len(X) + 127) // 128

    def optimizer(net: nn.Module):
        decay = [p for n, p in net.named_parameters() if p.ndim > 1 and "embed" not in n and "token" not in n]
        rest = [p for n, p in net.named_parameters() if not (p.ndim > 1 and "embed" not in n and "token" not in n)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                                lr=lr)
        warm, total = batches if warmup else 0, epochs * batches

        def factor(step: int) -> float:
            return (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))

        return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)

    def build() -> nn.Module:
        net = mnist_vit()
        if init is not None:
            net.load_state_dict({k: v.float() for k, v in _read(Path(init))["state_dict"].items()})
        return net

    return _train(build, optimizer, X, y, X_test, y_test, epochs, seed, out, shift, label_smoothing=0.1,
                  arch="vit", progress=progress, meta={"lr": lr, "init": None if init is None else Path(init).name})


def _train(build, optimizer, X, y, X_test, y_test, epochs: int, seed: int, out, shift: int,
           label_smoothing: float = 0.0, arch: str = "cnn", progress: bool = False,
           meta: dict | None = None) -> tuple[nn.Module, float]:
    """The loop both recipes share: seeded, in batches of 128, the caller's RNG left alone."""
    from tqdm.auto import tqdm

    from .runs import atomic_path

    mean, std = MNIST_MEAN[0], MNIST_STD[0]
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build()
        opt, lr = optimizer(net)
        net.train()
        bar = tqdm(total=epochs * ((len(X) + 127) // 128), disable=not progress, desc=f"mnist_{arch}")
        for _ in range(epochs):
            for idx in torch.randperm(len(X), generator=g).split(128):
                loss = F.cross_entropy(net((_shifted(X[idx], shift, g).float() / 255 - mean) / std), y[idx],
                                       label_smoothing=label_smoothing)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if lr is not None:
                    lr.step()
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        bar.close()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net((b.float() / 255 - mean) / std).argmax(1) for b in X_test.split(1000)])
    accuracy = float(pred.eq(y_test).float().mean())
    if out is not None:
        with atomic_path(out) as tmp:
            torch.save({"format": FORMAT, "arch": arch, "state_dict": {k: v.half() for k, v in net.state_dict().items()},
                        "test_accuracy": accuracy, "epochs": epochs, "seed": seed, **(meta or {})}, tmp)
    return net, accuracy


def _shifted(x: torch.Tensor, shift: int, g: torch.Generator) -> torch.Tensor:
    """The batch moved by a random offset of up to `shift` pixels each way (zero fill)."""
    if shift == 0:
        return x
    dx, dy = torch.randint(0, 2 * shift + 1, (2,), generator=g).tolist()
    return F.pad(x, (shift,) * 4)[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]


if __name__ == "__main__":  # python -m cnnlab.core.mnist {cnn,vit} DATA_ROOT [--epochs N] [--out FILE]
    import argparse

    from .data import load_mnist

    ap = argparse.ArgumentParser(description="train a shipped MNIST classifier on the 60,000 training digits")
    ap.add_argument("arch", choices=("cnn", "vit"))
    ap.add_argument("root", help="a data root holding MNIST/raw/")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="where to write the weights (default: the package's asset)")
    ap.add_argument("--lr", type=float, default=1e-3, help="vit: the peak learning rate")
    ap.add_argument("--init", default=None, help="vit: start from these weights, without warm-up (a second cycle)")
    a = ap.parse_args()
    (X, y), (Xt, yt) = load_mnist(a.root, train=True), load_mnist(a.root, train=False)
    X, Xt = X.view(-1, 1, 28, 28), Xt.view(-1, 1, 28, 28)
    if a.arch == "vit":
        _, acc = train_mnist_vit(X, y.long(), Xt, yt.long(), epochs=a.epochs or 5, seed=a.seed, lr=a.lr,
                                 warmup=a.init is None, init=a.init, out=a.out or shipped_weights(VIT_ASSET),
                                 progress=True)
    else:
        _, acc = train_mnist_cnn(X, y.long(), Xt, yt.long(), epochs=a.epochs or 3, seed=a.seed,
                                 out=a.out or shipped_weights(ASSET))
    print(f"test accuracy {acc:.4f}")
