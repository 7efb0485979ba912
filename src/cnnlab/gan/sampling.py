"""Sampling from a trained generator: PNG files `{label}_{index}.png` (unconditional: `x_{index}.png`) and a grid."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
import os
from pathlib import Path

import torch

from ..core.checkpoints import restoring
from ..core.errors import CnnlabError
from ..core.images import make_grid, save_png
from ..core.config import SEED_MAX, Config, option
from ..core.calls import configure, with_options
from ..core.results import Result
from .models import build_gan, to_pixels
from .training import load_checkpoint

SHIPPED = "cdcgan_mnist_G.pt"  # a cDCGAN-MNIST generator trained by cnnlab (docs/benchmarks.md says how)


def shipped_checkpoint() -> Path:
    return Path(str(resources.files("cnnlab") / "assets" / SHIPPED))


def load_generator(checkpoint: str | Path | None = None) -> tuple[torch.nn.Module, dict]:
    """(generator in eval mode, its config); without a path, the cDCGAN-MNIST generator shipped in the package."""
    path = Path(checkpoint) if checkpoint else shipped_checkpoint()
    if checkpoint is None and not path.is_file():
        raise CnnlabError("no generator shipped with this install: pass --checkpoint RUN_DIR/checkpoint.pt")
    ck = load_checkpoint(path)
    with restoring(path, "cnnlab GAN checkpoint"):
        c = ck["config"]
        shape = ck.get("image_shape")
        nc, size = (shape[0], shape[-1]) if shape else ((3, 64) if c["model"] == "dcgan" else (1, 28))
        G, _ = build_gan(c["model"], c["nz"], c["ngf"], c["ndf"], nc, 10, c.get("label_in_d", True), size)
    try:
        G.load_state_dict(ck["generator"])
    except (RuntimeError, TypeError, AttributeError):
        raise CnnlabError(f"{path}: the generator weights do not match a {c['model']} with nz={c['nz']}") from None
    return G.eval(), c


def conditional(config: dict) -> bool:
    return config["model"] in ("cdcgan", "cgan")


def generate(G: torch.nn.Module, config: dict, labels: torch.Tensor, seed: int = 0,
             interpolate: bool = False, seed_to: int | None = None) -> torch.Tensor:
    """Images (N,C,H,W) in [0,1]; with `interpolate`, z moves linearly from one random point to another (from
    `seed`'s first point to `seed_to`'s, when given)."""
    n = len(labels)
    g = torch.Generator().manual_seed(seed)
    if interpolate:
        a, b = torch.randn(2, config["nz"], generator=g)
        if seed_to is not None:
            b = torch.randn(2, config["nz"], generator=torch.Generator().manual_seed(seed_to))[0]
        t = torch.linspace(0, 1, n).unsqueeze(1)
        z = (1 - t) * a + t * b
    else:
        z = torch.randn(n, config["nz"], generator=g)
    with torch.no_grad():
        return to_pixels(G(z, labels))


@dataclass
class SampleConfig(Config):
    """Writes {label}_{index}.png (unconditional: x_{index}.png), grid.png and samples.png (the grid with its
    labels). Without --checkpoint, uses the cDCGAN-MNIST generator shipped with cnnlab (works offline)."""

    command = "gan sample"
    checkpoint: str | None = option(None, help="RUN_DIR/checkpoint.pt (default: the shipped generator)")
    label: int | None = option(None, low=0, help="digit to draw (default: all labels in turn)")
    n: int = option(64, flag="-n", low=1, help="number of images")
    seed: int = option(0, low=0, high=SEED_MAX, help="noise seed")
    interpolate: bool = option(False, help="walk z linearly between two random points")
    seed_to: int | None = option(None, low=0, high=SEED_MAX, help="with --interpolate: walk from --seed's point to this seed's")


class SampleResult(Result):
    """`.images` (N,C,H,W) in [0,1] and `.labels` (N,)."""

    kind, figure_name = "sample", "samples.png"

    def __init__(self, config: SampleConfig, images: torch.Tensor, labels: torch.Tensor, model: str, conditional: bool):
        super().__init__(config)
        self.images, self.labels, self.model, self.conditional = images, labels, model, conditional

    def _names(self) -> list[str]:
        prefix = (lambda y: str(int(y))) if self.conditional else (lambda y: "x")
        return [f"{prefix(y)}_{i}.png" for i, y in enumerate(self.labels)]

    def summary(self) -> dict:
        c = self.config
        s = {"model": self.model, "n": c.n, "label": c.label, "seed": c.seed, "interpolate": c.interpolate,
             "checkpoint": str(c.checkpoint or shipped_checkpoint())}
        if self.run_dir:
            s |= {"files": [self.path(f) for f in self._names()], "grid": self.path("grid.png"),
                  "run_dir": str(self.run_dir)}
        return s

    def text(self) -> str:
        return f"{self.config.n} images from {self.model}" + (f" → {self.run_dir} (grid: {self.path('grid.png')})"
                                                              if self.run_dir else "")

    def _nrow(self) -> int:
        return len(self.images) if self.config.interpolate else 8

    def figures(self) -> dict:
        from ..core.figures import hwc, new_figure

        grid = make_grid(self.images, nrow=self._nrow())
        fig = new_figure(min(12, 1.2 * self._nrow()), min(12, 1.2 * -(-len(self.images) // self._nrow())) + 0.4)
        ax = fig.subplots()
        ax.imshow(hwc(grid), cmap="gray" if self.images.shape[1] == 1 else None)
        ax.axis("off")
        what = (f"digit {self.config.label}" if self.config.label is not None else "digits 0-9 in turn") \
            if self.conditional else "samples"
        ax.set_title(f"{self.model}: {len(self.images)} {what} (seed {self.config.seed}"
                     + (", interpolated" if self.config.interpolate else "") + ")", fontsize=9)
        return {self.figure_name: fig}

    def write_files(self, folder: Path) -> None:
        for img, name in zip(self.images, self._names()):
            save_png(img, folder / name)
        save_png(make_grid(self.images, nrow=self._nrow()), folder / "grid.png")


def sample_images(config: SampleConfig) -> SampleResult:
    G, gan = load_generator(config.checkpoint)
    n, label = config.n, config.label
    if conditional(gan):
        if label is not None and not 0 <= label < 10:
            raise CnnlabError(f"label {label} is out of range 0..9")
        labels = torch.full((n,), label) if label is not None else torch.arange(n) % 10
    else:
        if label is not None:
            raise CnnlabError(f"a {gan['model']} is unconditional: drop --label")
        labels = torch.zeros(n, dtype=torch.long)
    images = generate(G, gan, labels, config.seed, config.interpolate, config.seed_to)
    return SampleResult(config, images, labels, gan["model"], conditional(gan))


@with_options(SampleConfig)
def sample(checkpoint: str | os.PathLike | None = None, *, config: SampleConfig | None = None,
           **options) -> SampleResult:
    """Images from a generator checkpoint (default: the cDCGAN-MNIST generator shipped with cnnlab): `.images`
    (N,C,H,W) in [0,1]; `.save(dir)` writes the PNGs and the grid."""
    if checkpoint is not None:
        options["checkpoint"] = str(checkpoint)
    return sample_images(configure(SampleConfig, config, options))
