"""GAN training: the two-phase loop (D then G), fixed-noise grids, TensorBoard, atomic checkpoints, exact resume,
and DistributedDataParallel when launched by torchrun (gloo on CPU, nccl on GPU; rank 0 writes)."""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.data import load_image_dir, load_mnist
from ..core.errors import CnnlabError
from ..core.images import make_grid, save_png
from ..core.runs import RunDir, atomic_path, write_json
from .models import MODELS, build_gan, to_pixels

CHECKPOINT = "checkpoint.pt"


@dataclass
class GanConfig:
    model: str = "cdcgan"  # dcgan | cdcgan | cgan
    data: str = "mnist"  # mnist | celeba64 | a folder of images
    data_root: str | None = None  # holds MNIST/ and celeba64/
    nz: int = 100
    ngf: int = 64
    ndf: int = 64
    batch: int = 128
    iters: int = 1000
    g_steps: int = 1  # generator updates per iteration
    d_steps: int = 1  # discriminator updates per iteration
    lr: float = 2e-4
    beta1: float = 0.5
    seed: int = 0
    grid_at: list[int] = field(default_factory=list)
    checkpoint_every: int = 500
    label_in_d: bool = True  # False: the report's Q2-2.11 ablation
    limit: int | None = None  # use only the first N training images (tests, quick runs)
    # bf16 autocast for the forward passes (weights, optimizer and losses stay fp32); opt-in until its effect on
    # sample quality is measured on hardware that runs bf16 natively (a GPU, AVX512-BF16/AMX)
    precision: str = "fp32"  # fp32 | bf16


def load_training_data(config: GanConfig) -> tuple[torch.Tensor, torch.Tensor, int]:
    """All training images in memory as uint8 (N,C,H,W), labels (N,), number of classes (0: unconditional)."""
    if config.data == "mnist":
        X, y = load_mnist(config.data_root)
        classes = 10
    else:
        folder = Path(config.data)
        if config.data == "celeba64":
            if config.data_root is None:
                raise CnnlabError("celeba64 needs a data root: pass --data-root ROOT or set CNNLAB_DATA")
            folder = Path(config.data_root) / "celeba64" / "faces"
        X, _ = load_image_dir(folder, 64 if config.model == "dcgan" else 28)
        y, classes = torch.zeros(len(X), dtype=torch.long), 0
    if config.limit:
        X, y = X[:config.limit], y[:config.limit]
    if config.model in ("cdcgan", "cgan") and classes == 0:
        raise CnnlabError(f"{config.model} is conditional: it needs a labelled dataset (mnist)")
    if config.model == "dcgan" and X.shape[-1] != 64:
        raise CnnlabError("dcgan makes 64×64 images: use celeba64 or a folder of images")
    return X, y, classes


class BatchStream:
    """The k-th batch is a pure function of (seed, k): a resumed run reads exactly the same data."""

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self._epoch, self._perm = -1, None

    def indices(self, k: int) -> torch.Tensor:
        start = k * self.batch
        out = []
        while len(out) < self.batch:
            epoch, pos = divmod(start + len(out), self.n)
            if epoch != self._epoch:
                g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
                self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
            out += self._perm[pos:pos + self.batch - len(out)].tolist()
        return torch.tensor(out[self.rank::self.world])  # this process's shard of the global batch


def _dist() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _fixed_inputs(config: GanConfig, classes: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid noise: 8 columns; conditional models get one row per label."""
    g = torch.Generator().manual_seed(config.seed + 12345)
    rows = classes or 8
    z = torch.randn(rows * 8, config.nz, generator=g).to(device)
    y = torch.arange(rows).repeat_interleave(8).to(device) if classes else torch.zeros(rows * 8, dtype=torch.long,
                                                                                         device=device)
    return z, y


def _adam(params, config: GanConfig):
    """Adam with the fused kernel (one op for all parameters) where this torch build has it for the device."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=config.lr, betas=(config.beta1, 0.999), fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=config.lr, betas=(config.beta1, 0.999), foreach=True)


def train(config: GanConfig, out: str | Path, resume: bool = False, device: str = "cpu", progress: bool = True) -> dict:
    """Train to `config.iters` iterations; with `resume`, continue the checkpoint in `out`."""
    if config.model not in MODELS:
        raise CnnlabError(f"unknown GAN model {config.model!r}; choose from {', '.join(MODELS)}")
    rank, world = _dist()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if config.precision not in ("fp32", "bf16"):
        raise CnnlabError(f"unknown precision {config.precision!r}; choose fp32 or bf16")
    if config.batch % world:
        raise CnnlabError(f"--batch {config.batch} is not divisible by the {world} processes")
    run = RunDir(out)
    ckpt_path = run / CHECKPOINT
    X, Y, classes = load_training_data(config)
    torch.manual_seed(config.seed + rank)
    G, D = build_gan(config.model, config.nz, config.ngf, config.ndf, X.shape[1], classes or 10, config.label_in_d,
                     X.shape[-1])
    # channels_last lets oneDNN/cuDNN run the convolutions without layout conversions
    memory_format = torch.channels_last if config.model in ("dcgan", "cdcgan") else torch.contiguous_format
    G, D = G.to(device, memory_format=memory_format), D.to(device, memory_format=memory_format)
    opt_g, opt_d = _adam(G.parameters(), config), _adam(D.parameters(), config)
    noise = torch.Generator().manual_seed(config.seed * 7919 + rank)
    start, history = 0, {"loss_D": [], "loss_G": [], "D_x": [], "D_G_z": []}
    if resume:
        if not ckpt_path.is_file():
            raise CnnlabError(f"nothing to resume: {ckpt_path} does not exist")
        ck = load_checkpoint(ckpt_path)
        G.load_state_dict(ck["generator"])
        D.load_state_dict(ck["discriminator"])
        opt_g.load_state_dict(ck["opt_g"])
        opt_d.load_state_dict(ck["opt_d"])
        noise.set_state(ck["rng"]["noise"][rank] if world > 1 else ck["rng"]["noise"][0])
        torch.set_rng_state(ck["rng"]["torch"])
        start, history = ck["iteration"], ck["history"]
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        G, D = DDP(G), DDP(D)
    stream = BatchStream(len(X), config.batch, config.seed, rank, world)
    fixed_z, fixed_y = _fixed_inputs(config, classes, device)
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        run.write_config(asdict(config))
        writer = SummaryWriter(str(run / "tensorboard"))
    bar = tqdm(range(start, config.iters), initial=start, total=config.iters, desc=f"gan {config.model}",
               disable=not progress or rank != 0)
    bs = config.batch // world
    dev_type = torch.device(device).type

    def amp():  # a fresh context per use: forward passes under autocast, backward outside it
        return torch.autocast(dev_type, dtype=torch.bfloat16, enabled=config.precision == "bf16")

    t0 = time.perf_counter()
    for it in bar:
        for s in range(config.d_steps):  # ---- discriminator: real → 1, fake → 0
            idx = stream.indices(it * config.d_steps + s)
            real = X[idx].to(device).float().div_(127.5).sub_(1).contiguous(memory_format=memory_format)
            y_real = Y[idx].to(device)
            z = torch.randn(bs, config.nz, generator=noise).to(device)
            y_fake = torch.randint(0, classes or 1, (bs,), generator=noise).to(device)
            opt_d.zero_grad(set_to_none=True)
            with amp():
                out_real = D(real, y_real).float()
            loss_real = F.binary_cross_entropy_with_logits(out_real, torch.ones_like(out_real))
            loss_real.backward()
            with amp():
                fake = G(z, y_fake)
                out_fake = D(fake.detach(), y_fake).float()
            loss_fake = F.binary_cross_entropy_with_logits(out_fake, torch.zeros_like(out_fake))
            loss_fake.backward()
            opt_d.step()
        for s in range(config.g_steps):  # ---- generator: make D say 1 (the non-saturating loss)
            if s > 0:  # the first G step reuses the D step's fakes (as pytorch/examples does): one G forward saved
                z = torch.randn(bs, config.nz, generator=noise).to(device)
                y_fake = torch.randint(0, classes or 1, (bs,), generator=noise).to(device)
                with amp():
                    fake = G(z, y_fake)
            opt_g.zero_grad(set_to_none=True)
            with amp():
                out = D(fake, y_fake).float()
            loss_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
            loss_g.backward()
            opt_g.step()
        n = it + 1
        stats = {"loss_D": float((loss_real + loss_fake).detach()), "loss_G": float(loss_g.detach()),
                 "D_x": float(torch.sigmoid(out_real.detach()).mean()), "D_G_z": float(torch.sigmoid(out_fake.detach()).mean())}
        for k, v in stats.items():
            history[k].append(v)
        if rank == 0:
            for k, v in stats.items():
                writer.add_scalar(k, v, n)
            bar.set_postfix(loss_D=f"{stats['loss_D']:.3f}", loss_G=f"{stats['loss_G']:.3f}")
            if n in config.grid_at or n == config.iters:
                _write_grid(run, G, fixed_z, fixed_y, n, writer)
        if n % config.checkpoint_every == 0 or n == config.iters:
            _save(run, ckpt_path, G, D, opt_g, opt_d, noise, n, config, history, rank, world)
    seconds = time.perf_counter() - t0
    summary = {"model": config.model, "iterations": config.iters, "resumed_from": start, "seconds": seconds,
               "iters_per_s": (config.iters - start) / seconds if seconds > 0 else None,
               "final": {k: v[-1] for k, v in history.items() if v}, "checkpoint": str(ckpt_path),
               "run_dir": str(run.path), "world_size": world}
    if rank == 0:
        writer.close()
        _loss_curves(run, history)
        write_json(run / "metrics.json", summary)
    return summary


def _module(m):
    return m.module if hasattr(m, "module") else m


def _write_grid(run: RunDir, G, z, y, n: int, writer) -> None:
    G = _module(G)
    was = G.training
    G.eval()
    with torch.no_grad():
        grid = make_grid(to_pixels(G(z, y)).cpu(), nrow=8)
    G.train(was)
    save_png(grid, run / f"grid_{n:06d}.png")
    writer.add_image("samples", grid, n)


def _save(run, path, G, D, opt_g, opt_d, noise, n, config, history, rank, world) -> None:
    states = [noise.get_state()]
    if world > 1:  # every rank's noise state, so that a resumed DDP run draws the same numbers
        states = [torch.empty_like(states[0]) for _ in range(world)]
        torch.distributed.all_gather_object(states, noise.get_state())
    if rank != 0:
        return
    ck = {"generator": _module(G).state_dict(), "discriminator": _module(D).state_dict(),
          "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
          "rng": {"noise": states, "torch": torch.get_rng_state()},
          "iteration": n, "config": asdict(config), "history": history, "format": "cnnlab-gan-1"}
    with atomic_path(path) as tmp:
        torch.save(ck, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """A cnnlab GAN checkpoint, loaded with weights_only=True; a clear error for anything else."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CnnlabError(f"checkpoint not found: {path}") from None
    except Exception as exc:
        raise CnnlabError(f"cannot read checkpoint {path}: {exc.__class__.__name__}") from None
    if not isinstance(ck, dict) or ck.get("format") != "cnnlab-gan-1" or "generator" not in ck:
        raise CnnlabError(f"{path} is not a cnnlab GAN checkpoint")
    return ck


def _loss_curves(run: RunDir, history: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(history["loss_D"], label="loss_D", lw=0.8)
    a.plot(history["loss_G"], label="loss_G", lw=0.8)
    a.set_xlabel("iteration")
    a.legend()
    b.plot(history["D_x"], label="D(x)", lw=0.8)
    b.plot(history["D_G_z"], label="D(G(z))", lw=0.8)
    b.set_xlabel("iteration")
    b.legend()
    run.save_figure(fig, "loss_curves.png")
