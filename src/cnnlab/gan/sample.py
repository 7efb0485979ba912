"""Sampling from a trained generator: PNG files `{label}_{index}.png` (unconditional: `x_{index}.png`) and a grid."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from ..core.errors import CnnlabError
from ..core.images import make_grid, save_png
from ..core.runs import RunDir
from .models import build_gan, to_pixels
from .train import load_checkpoint

SHIPPED = "cdcgan_mnist_G.pt"  # a cDCGAN-MNIST generator trained by cnnlab (docs/benchmarks.md says how)


def shipped_checkpoint() -> Path:
    return Path(str(resources.files("cnnlab") / "assets" / SHIPPED))


def load_generator(checkpoint: str | Path | None = None) -> tuple[torch.nn.Module, dict]:
    """(generator in eval mode, its config); without a path, the cDCGAN-MNIST generator shipped in the package."""
    path = Path(checkpoint) if checkpoint else shipped_checkpoint()
    if checkpoint is None and not path.is_file():
        raise CnnlabError("no generator shipped with this install: pass --checkpoint RUN_DIR/checkpoint.pt")
    ck = load_checkpoint(path)
    c = ck["config"]
    shape = ck.get("image_shape")
    nc, size = (shape[0], shape[-1]) if shape else ((3, 64) if c["model"] == "dcgan" else (1, 28))
    G, _ = build_gan(c["model"], c["nz"], c["ngf"], c["ndf"], nc, 10, c.get("label_in_d", True), size)
    try:
        G.load_state_dict(ck["generator"])
    except RuntimeError:
        raise CnnlabError(f"{path}: the generator weights do not match a {c['model']} with nz={c['nz']}") from None
    return G.eval(), c


def conditional(config: dict) -> bool:
    return config["model"] in ("cdcgan", "cgan")


def generate(G: torch.nn.Module, config: dict, labels: torch.Tensor, seed: int = 0,
             interpolate: bool = False) -> torch.Tensor:
    """Images (N,C,H,W) in [0,1]; with `interpolate`, z moves linearly from one random point to another."""
    n = len(labels)
    g = torch.Generator().manual_seed(seed)
    if interpolate:
        a, b = torch.randn(2, config["nz"], generator=g)
        t = torch.linspace(0, 1, n).unsqueeze(1)
        z = (1 - t) * a + t * b
    else:
        z = torch.randn(n, config["nz"], generator=g)
    with torch.no_grad():
        return to_pixels(G(z, labels))


def sample(checkpoint: str | Path | None, out: str | Path, label: int | None = None, n: int = 64, seed: int = 0,
           interpolate: bool = False) -> dict:
    G, config = load_generator(checkpoint)
    if conditional(config):
        if label is not None and not 0 <= label < 10:
            raise CnnlabError(f"label {label} is out of range 0..9")
        labels = torch.full((n,), label) if label is not None else torch.arange(n) % 10
    else:
        if label is not None:
            raise CnnlabError(f"a {config['model']} is unconditional: drop --label")
        labels = torch.zeros(n, dtype=torch.long)
    images = generate(G, config, labels, seed, interpolate)
    run = RunDir(out)
    files = []
    for i, (img, y) in enumerate(zip(images, labels)):
        prefix = str(int(y)) if conditional(config) else "x"
        files.append(str(save_png(img, run / f"{prefix}_{i}.png")))
    grid = save_png(make_grid(images, nrow=8 if not interpolate else n), run / "grid.png")
    summary = {"model": config["model"], "n": n, "label": label, "seed": seed, "interpolate": interpolate,
               "files": files, "grid": str(grid), "checkpoint": str(checkpoint or shipped_checkpoint())}
    run.write_metrics(summary)
    return summary
