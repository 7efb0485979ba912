"""GAN networks. Generators output tanh images in [-1,1] internally; `to_pixels` maps them to [0,1].

dcgan  — Radford et al. 2016, 64×64 RGB, the pytorch/examples layout (nz 100, ngf = ndf = 64).
cdcgan — conditional DCGAN for 28×28 MNIST: the label enters G's input and D's input as one-hot maps.
cgan   — Mirza & Osindero 2014: fully connected G and D, the one-hot label concatenated to their inputs.
All weights are initialized N(0, 0.02) (batch-norm scales N(1, 0.02)).
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.errors import CnnlabError

MODELS = ("dcgan", "cdcgan", "cgan")


def init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(-1, 1) + 1) / 2


def one_hot(y: torch.Tensor, n: int) -> torch.Tensor:
    return nn.functional.one_hot(y.long(), n).float()


class DCGANGenerator(nn.Module):
    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3):
        super().__init__()
        self.nz, self.num_classes = nz, 0

        def up(i, o):
            return [nn.ConvTranspose2d(i, o, 4, 2, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(True)]

        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),  # 4×4
            *up(ngf * 8, ngf * 4), *up(ngf * 4, ngf * 2), *up(ngf * 2, ngf),  # 8, 16, 32
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh(),  # 64×64
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.main(z.view(len(z), self.nz, 1, 1))


class DCGANDiscriminator(nn.Module):
    def __init__(self, ndf: int = 64, nc: int = 3):
        super().__init__()

        def down(i, o):
            return [nn.Conv2d(i, o, 4, 2, 1, bias=False), nn.BatchNorm2d(o), nn.LeakyReLU(0.2, True)]

        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),  # 32
            *down(ndf, ndf * 2), *down(ndf * 2, ndf * 4), *down(ndf * 4, ndf * 8),  # 16, 8, 4
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),  # logit
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.main(x).view(-1)


class CDCGANGenerator(nn.Module):
    """z (nz) and the one-hot label (as 1×1 maps) → 28×28."""

    def __init__(self, nz: int = 100, ngf: int = 64, num_classes: int = 10, nc: int = 1):
        super().__init__()
        self.nz, self.num_classes = nz, num_classes
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz + num_classes, ngf * 4, 7, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),  # 14
            nn.ConvTranspose2d(ngf * 2, nc, 4, 2, 1, bias=False), nn.Tanh(),  # 28
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.cat([z.view(len(z), self.nz), one_hot(y, self.num_classes)], dim=1)
        return self.main(h.view(len(z), -1, 1, 1))


class CDCGANDiscriminator(nn.Module):
    """28×28 image and the one-hot label as constant maps (unless label_in_d=False: the report's Q2-2.11)."""

    def __init__(self, ndf: int = 64, num_classes: int = 10, nc: int = 1, label_in_d: bool = True):
        super().__init__()
        self.num_classes, self.label_in_d = num_classes, label_in_d
        c_in = nc + (num_classes if label_in_d else 0)
        self.main = nn.Sequential(
            nn.Conv2d(c_in, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),  # 14
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, True),  # 7
            nn.Conv2d(ndf * 2, 1, 7, 1, 0, bias=False),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.label_in_d:
            maps = one_hot(y, self.num_classes)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
            x = torch.cat([x, maps], dim=1)
        return self.main(x).view(-1)


class CGANGenerator(nn.Module):
    def __init__(self, nz: int = 100, hidden: int = 256, num_classes: int = 10, out_shape=(1, 28, 28)):
        super().__init__()
        self.nz, self.num_classes, self.out_shape = nz, num_classes, tuple(out_shape)
        n_out = int(torch.tensor(out_shape).prod())
        self.main = nn.Sequential(
            nn.Linear(nz + num_classes, hidden), nn.LeakyReLU(0.2, True),
            nn.Linear(hidden, hidden * 2), nn.BatchNorm1d(hidden * 2), nn.LeakyReLU(0.2, True),
            nn.Linear(hidden * 2, hidden * 4), nn.BatchNorm1d(hidden * 4), nn.LeakyReLU(0.2, True),
            nn.Linear(hidden * 4, n_out), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.cat([z.view(len(z), self.nz), one_hot(y, self.num_classes)], dim=1)
        return self.main(h).view(len(z), *self.out_shape)


class CGANDiscriminator(nn.Module):
    def __init__(self, hidden: int = 256, num_classes: int = 10, in_shape=(1, 28, 28), label_in_d: bool = True):
        super().__init__()
        self.num_classes, self.label_in_d = num_classes, label_in_d
        n_in = int(torch.tensor(in_shape).prod()) + (num_classes if label_in_d else 0)
        self.main = nn.Sequential(
            nn.Linear(n_in, hidden * 4), nn.LeakyReLU(0.2, True), nn.Dropout(0.3),
            nn.Linear(hidden * 4, hidden * 2), nn.LeakyReLU(0.2, True), nn.Dropout(0.3),
            nn.Linear(hidden * 2, 1),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        if self.label_in_d:
            h = torch.cat([h, one_hot(y, self.num_classes)], dim=1)
        return self.main(h).view(-1)


def build_gan(model: str, nz: int = 100, ngf: int = 64, ndf: int = 64, nc: int = 3, num_classes: int = 10,
              label_in_d: bool = True, image_size: int = 64) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator), initialized N(0, 0.02)."""
    if model == "dcgan":
        if image_size != 64:
            raise CnnlabError("dcgan makes 64×64 images")
        g, d = DCGANGenerator(nz, ngf, nc), DCGANDiscriminator(ndf, nc)
    elif model == "cdcgan":
        if image_size != 28:
            raise CnnlabError("cdcgan makes 28×28 images (MNIST)")
        g, d = CDCGANGenerator(nz, ngf, num_classes, nc), CDCGANDiscriminator(ndf, num_classes, nc, label_in_d)
    elif model == "cgan":
        shape = (nc, image_size, image_size)
        g, d = CGANGenerator(nz, 256, num_classes, shape), CGANDiscriminator(256, num_classes, shape, label_in_d)
    else:
        raise CnnlabError(f"unknown GAN model {model!r}; choose from {', '.join(MODELS)}")
    g.apply(init_weights)
    d.apply(init_weights)
    return g, d
