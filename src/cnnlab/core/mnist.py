"""The small MNIST classifier shipped with cnnlab: the `mnist_cnn` backbone (explain works on digits) and the judge of
`gan evaluate` (conditional accuracy, and the Fréchet distance in its 128-d features).

Its weights live in the package (`assets/mnist_cnn.pt`, fp16; its size: docs/benchmarks.md) with their MNIST test
accuracy; they were made by `train_mnist_cnn` (the command is in docs/benchmarks.md). Normalization (MNIST's mean
and std) is the Backbone's job, as for every model, so the network itself takes normalized 1-channel 28×28 images.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CnnlabError

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
ASSET = "mnist_cnn.pt"
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


def shipped_weights() -> Path:
    return Path(str(resources.files("cnnlab") / "assets" / ASSET))


def shipped_test_accuracy() -> float:
    ck = _read(shipped_weights())
    return float(ck["test_accuracy"])


def _read(path: Path) -> dict:
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CnnlabError(f"the MNIST classifier is not shipped with this install ({path})") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CnnlabError(f"{path} is not cnnlab's MNIST classifier")
    return ck


def train_mnist_cnn(X: torch.Tensor, y: torch.Tensor, X_test: torch.Tensor, y_test: torch.Tensor, epochs: int = 3,
                    seed: int = 0, out: str | Path | None = None, schedule: str = "constant",
                    shift: int = 0) -> tuple[MnistNet, float]:
    """Train on uint8 (N,1,28,28) digits (seeded, Adam at 1e-3), measure the test accuracy, and optionally write the
    asset (fp16 weights + accuracy, atomically). `schedule="onecycle"` runs the learning rate up to 3e-3 and down
    (torch's OneCycleLR) and `shift` moves each batch by up to that many pixels: the recipe that converges on a
    few thousand digits (CAS). The caller's RNG is left alone."""
    from .runs import atomic_path

    if schedule not in ("constant", "onecycle"):
        raise ValueError(f"schedule must be 'constant' or 'onecycle', not {schedule!r}")
    mean, std = MNIST_MEAN[0], MNIST_STD[0]
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = MnistNet()
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        batches = (len(X) + 127) // 128
        lr = (torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * batches)
              if schedule == "onecycle" else None)
        for _ in range(epochs):
            for idx in torch.randperm(len(X), generator=g).split(128):
                loss = F.cross_entropy(net((_shifted(X[idx], shift, g).float() / 255 - mean) / std), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                if lr is not None:
                    lr.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net((b.float() / 255 - mean) / std).argmax(1) for b in X_test.split(1000)])
    accuracy = float(pred.eq(y_test).float().mean())
    if out is not None:
        with atomic_path(out) as tmp:
            torch.save({"format": FORMAT, "state_dict": {k: v.half() for k, v in net.state_dict().items()},
                        "test_accuracy": accuracy, "epochs": epochs, "seed": seed}, tmp)
    return net, accuracy


def _shifted(x: torch.Tensor, shift: int, g: torch.Generator) -> torch.Tensor:
    """The batch moved by a random offset of up to `shift` pixels each way (zero fill)."""
    if shift == 0:
        return x
    dx, dy = torch.randint(0, 2 * shift + 1, (2,), generator=g).tolist()
    return F.pad(x, (shift,) * 4)[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]
