"""GAN training: the two-phase loop (D then G), fixed-noise grids, TensorBoard, atomic checkpoints, exact resume,
and DistributedDataParallel when launched by torchrun (gloo on CPU, nccl on GPU; rank 0 writes)."""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.config import Config, SEED_MAX, data_root_option, option
from ..core.calls import configure, with_options
from ..core.precision import PRECISIONS, bf16_kernels, resolve_precision
from ..core.checkpoints import load_torch_file, restoring
from ..core.data import load_image_dir, load_mnist
from ..core.errors import DATA_ROOT_HINT, CnnlabError
from ..core.images import make_grid, save_png, skip_reasons
from ..core.results import Result
from ..core.runner import distributed
from ..core.runs import RunDir, atomic_path
from .models import MODELS, build_gan, to_pixels

CHECKPOINT = "checkpoint.pt"
# What a resumed run must share with its checkpoint for "resume equals an uninterrupted run" to hold; the rest
# (iters, grid_at, checkpoint_every, device, data_root) may change.
RESUME_KEYS = ("model", "data", "nz", "ngf", "ndf", "batch", "g_steps", "d_steps", "lr", "beta1", "seed",
               "label_in_d", "limit", "precision")


@dataclass
class GanConfig(Config):
    """Two-phase GAN training (D then G, non-saturating loss, Adam), N(0, 0.02) init.
      dcgan   64×64 RGB (faces: --data celeba64 or a folder of images)
      cdcgan  conditional DCGAN on MNIST: the label enters G and D as one-hot maps
      cgan    fully connected conditional GAN on MNIST
    Writes fixed-noise grids (one row per label for conditional models), TensorBoard scalars (loss_D, loss_G, D_x,
    D_G_z) and images, loss_curves.png, and RUN_DIR/checkpoint.pt (atomic, every --checkpoint-every iterations and
    at the end). --resume continues RUN_DIR up to --iters with exactly the weights of an uninterrupted run (and
    refuses a checkpoint trained with other settings). Multi-process: torchrun --nproc_per_node=N -m cnnlab gan
    train ... (DistributedDataParallel, gloo on CPU / nccl on GPU; rank 0 writes)."""

    command = "gan train"
    model: str = option("cdcgan", choices=MODELS, required=True, help="network family")
    data: str = option("mnist", required=True, help="mnist, celeba64, or a folder of images")
    data_root: str | None = data_root_option("folder holding MNIST/ and celeba64/")
    nz: int = option(100, low=1, help="latent size")
    ngf: int = option(64, low=1, help="generator width")
    ndf: int = option(64, low=1, help="discriminator width")
    batch: int = option(128, low=1, help="global batch size")
    iters: int = option(1000, low=1, help="training iterations")
    g_steps: int = option(1, low=1, help="generator updates per iteration")
    d_steps: int = option(1, low=1, help="discriminator updates per iteration")
    lr: float = option(2e-4, low=0, low_open=True, help="Adam learning rate")
    beta1: float = option(0.5, low=0, high=0.999, help="Adam beta1")
    seed: int = option(0, low=0, high=SEED_MAX, help="seed")
    grid_at: list[int] = option(default_factory=lambda: [1000, 3000, 5000], low=1,
                                help="iterations with a sample grid (and always the last)")
    checkpoint_every: int = option(500, low=1, help="checkpoint period")
    label_in_d: bool = option(True, negate="--no-label-in-d", help="conditional models: D does not see the label "
                                                                   "(the report's Q2-2.11)")
    limit: int | None = option(None, low=1, help="use only the first N training images")
    # auto: bf16 where native, fp32 elsewhere — adopted at equal iterations (docs/benchmarks.md, "bf16")
    precision: str = option("auto", choices=PRECISIONS,
                            help="bf16 autocasts the forward passes (fast on GPUs and AMX CPUs; other CPUs emulate its "
                                 "numerics at fp32 speed; weights and optimizer stay fp32); auto: bf16 where the device runs it "
                                 "natively (CUDA with bf16; a CPU with AVX512-BF16 or AMX), fp32 elsewhere — the "
                                 "run's config.json records which")
    device: str = option("cpu", help="torch device")


def load_training_data(config: GanConfig, skipped: list | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """All training images in memory as uint8 (N,C,H,W), labels (N,), number of classes (0: unconditional); the
    unreadable files of an image folder are added to `skipped` ({"image", "error"})."""
    if config.model in ("cdcgan", "cgan") and config.data != "mnist":  # said before any image is read
        raise CnnlabError(f"{config.model} is conditional: it needs a labelled dataset (mnist)")
    if config.data == "mnist":
        X, y = load_mnist(config.data_root)
        classes = 10
    else:
        folder = Path(config.data)
        if config.data == "celeba64":
            if config.data_root is None:
                raise CnnlabError(f"celeba64 needs a data root: {DATA_ROOT_HINT}")
            folder = Path(config.data_root) / "celeba64" / "faces"
        X, bad = load_image_dir(folder, 64 if config.model == "dcgan" else 28)
        if skipped is not None:
            skipped += skip_reasons(bad)
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


class TrainResult(Result):
    """The finished run: `.history` (loss_D, loss_G, D_x, D_G_z per iteration), `.checkpoint`, `.summary()`."""

    kind, figure_name = "gan", "loss_curves.png"

    def __init__(self, config: GanConfig, history: dict, start: int, seconds: float, checkpoint: Path, world: int,
                 skipped: list[dict] | None = None):
        super().__init__(config)
        self.history, self.start, self.seconds, self.checkpoint, self.world = history, start, seconds, checkpoint, world
        self.skipped = skipped or []

    def summary(self) -> dict:
        c = self.config
        return {"model": c.model, "iterations": c.iters, "precision": c.precision, "resumed_from": self.start,
                "seconds": self.seconds,
                "iters_per_s": (c.iters - self.start) / self.seconds if self.seconds > 0 else None,
                "final": {k: v[-1] for k, v in self.history.items() if v}, "checkpoint": str(self.checkpoint),
                "run_dir": str(self.run_dir or self.checkpoint.parent), "world_size": self.world,
                "skipped": self.skipped}

    def text(self) -> str:
        s = self.summary()
        rate = f" ({s['iters_per_s']:.1f}/s)" if s["iters_per_s"] else ""
        return (f"{s['model']}: {s['iterations']} iterations{rate}, final "
                + ", ".join(f"{k} {v:.3f}" for k, v in s["final"].items()) + f" → {s['run_dir']}")

    def figures(self) -> dict:
        from ..core.figures import new_figure

        fig = new_figure(10, 3.5)
        a, b = fig.subplots(1, 2)
        for ax, keys in ((a, [("loss_D", "loss_D"), ("loss_G", "loss_G")]), (b, [("D_x", "D(x)"), ("D_G_z", "D(G(z))")])):
            for key, label in keys:
                ax.plot(self.history[key], label=label, lw=0.8)
            ax.set_xlabel("iteration")
            ax.legend()
        return {self.figure_name: fig}


class _Loop:
    """One training run's state, and its steps: a discriminator update, a generator update, a record, a checkpoint."""

    def __init__(self, config: GanConfig, run: RunDir, rank: int, world: int):
        self.c, self.run, self.rank, self.world = config, run, rank, world
        self.device = torch.device(config.device)
        self.skipped: list[dict] = []
        self.X, self.Y, self.classes = load_training_data(config, self.skipped)
        torch.manual_seed(config.seed + rank)  # inside train()'s fork_rng: the caller's RNG is left alone
        G, D = build_gan(config.model, config.nz, config.ngf, config.ndf, self.X.shape[1], self.classes or 10,
                         config.label_in_d, self.X.shape[-1])
        # channels_last lets oneDNN/cuDNN run the convolutions without layout conversions
        self.memory_format = torch.channels_last if config.model in ("dcgan", "cdcgan") else torch.contiguous_format
        self.G = G.to(self.device, memory_format=self.memory_format)
        self.D = D.to(self.device, memory_format=self.memory_format)
        self.opt_g, self.opt_d = _adam(self.G.parameters(), config), _adam(self.D.parameters(), config)
        self.noise = torch.Generator().manual_seed(config.seed * 7919 + rank)
        self.start, self.history = 0, {"loss_D": [], "loss_G": [], "D_x": [], "D_G_z": []}
        self.stream = BatchStream(len(self.X), config.batch, config.seed, rank, world)
        self.fixed_z, self.fixed_y = _fixed_inputs(config, self.classes, self.device)
        self.bs = config.batch // world

    def resume(self, ck: dict) -> None:
        self.G.load_state_dict(ck["generator"])
        self.D.load_state_dict(ck["discriminator"])
        self.opt_g.load_state_dict(ck["opt_g"])
        self.opt_d.load_state_dict(ck["opt_d"])
        self.noise.set_state(ck["rng"]["noise"][self.rank] if self.world > 1 else ck["rng"]["noise"][0])
        torch.set_rng_state(ck["rng"]["torch"])
        self.start, self.history = ck["iteration"], ck["history"]

    def distribute(self) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.G, self.D = DDP(self.G), DDP(self.D)

    def amp(self):  # a fresh context per use: forward passes under autocast, backward outside it
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.c.precision == "bf16")

    def _fakes(self):
        z = torch.randn(self.bs, self.c.nz, generator=self.noise).to(self.device)
        y = torch.randint(0, self.classes or 1, (self.bs,), generator=self.noise).to(self.device)
        return z, y

    def d_step(self, k: int) -> dict:
        """D on real → 1 and fake → 0; returns what the G step and the record need."""
        idx = self.stream.indices(k)
        real = self.X[idx].to(self.device).float().div_(127.5).sub_(1).contiguous(memory_format=self.memory_format)
        y_real = self.Y[idx].to(self.device)
        z, y_fake = self._fakes()
        self.opt_d.zero_grad(set_to_none=True)
        with self.amp():
            out_real = self.D(real, y_real).float()
        loss_real = F.binary_cross_entropy_with_logits(out_real, torch.ones_like(out_real))
        loss_real.backward()
        with self.amp():
            fake = self.G(z, y_fake)
            out_fake = self.D(fake.detach(), y_fake).float()
        loss_fake = F.binary_cross_entropy_with_logits(out_fake, torch.zeros_like(out_fake))
        loss_fake.backward()
        self.opt_d.step()
        return {"fake": fake, "y_fake": y_fake, "loss_D": loss_real + loss_fake, "out_real": out_real,
                "out_fake": out_fake}

    def g_step(self, fake: torch.Tensor | None, y_fake: torch.Tensor | None) -> torch.Tensor:
        """G makes D say 1 (the non-saturating loss); given fakes (the D step's) are reused: one G forward saved,
        as pytorch/examples does."""
        if fake is None:
            z, y_fake = self._fakes()
            with self.amp():
                fake = self.G(z, y_fake)
        self.opt_g.zero_grad(set_to_none=True)
        with self.amp():
            out = self.D(fake, y_fake).float()
        loss_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        loss_g.backward()
        self.opt_g.step()
        return loss_g

    def iteration(self, it: int) -> dict:
        for s in range(self.c.d_steps):
            d = self.d_step(it * self.c.d_steps + s)
        for s in range(self.c.g_steps):
            loss_g = self.g_step(d["fake"] if s == 0 else None, d["y_fake"] if s == 0 else None)
        stats = {"loss_D": float(d["loss_D"].detach()), "loss_G": float(loss_g.detach()),
                 "D_x": float(torch.sigmoid(d["out_real"].detach()).mean()),
                 "D_G_z": float(torch.sigmoid(d["out_fake"].detach()).mean())}
        for k, v in stats.items():
            self.history[k].append(v)
        return stats

    def grid(self, n: int, writer) -> None:
        G = _module(self.G)
        was = G.training
        G.eval()
        with torch.no_grad():
            grid = make_grid(to_pixels(G(self.fixed_z, self.fixed_y)).cpu(), nrow=8)
        G.train(was)
        save_png(grid, self.run / f"grid_{n:06d}.png")
        writer.add_image("samples", grid, n)

    def checkpoint(self, n: int) -> None:
        states = [self.noise.get_state()]
        if self.world > 1:  # every rank's noise state, so that a resumed DDP run draws the same numbers
            states = [torch.empty_like(states[0]) for _ in range(self.world)]
            torch.distributed.all_gather_object(states, self.noise.get_state())
        if self.rank != 0:
            return
        ck = {"generator": _module(self.G).state_dict(), "discriminator": _module(self.D).state_dict(),
              "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
              "rng": {"noise": states, "torch": torch.get_rng_state()},
              "iteration": n, "config": asdict(self.c), "history": self.history, "format": "cnnlab-gan-1",
              "image_shape": list(self.X.shape[1:])}
        with atomic_path(self.run / CHECKPOINT) as tmp:
            torch.save(ck, tmp)


def check_resumable(ck: dict, config: GanConfig, path: Path) -> None:
    """Refuse a checkpoint trained with other settings (naming the first difference), or one that lacks what a
    resume needs."""
    missing = [k for k in ("generator", "discriminator", "opt_g", "opt_d", "rng", "iteration", "config", "history")
               if k not in ck]
    if missing:
        raise CnnlabError(f"cannot resume {path}: it has no {', '.join(missing)} (a generator-only file cannot resume)")
    old = ck.get("config", {})
    for key in RESUME_KEYS:
        if key in old and old[key] != getattr(config, key):
            raise CnnlabError(f"cannot resume {path}: it was trained with {key}={old[key]!r}, not {getattr(config, key)!r}"
                              f" (same settings are needed for an exact resume; use another --out to start afresh)")
    if ck["iteration"] > config.iters:
        raise CnnlabError(f"cannot resume {path}: it is at iteration {ck['iteration']}, past --iters {config.iters}")


@contextmanager
def _own_rng(device: torch.device):
    """Training seeds the global RNG (weight init, dropout): do it on a fork, so the caller's stream is untouched."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def train_run(config: GanConfig, out: str | Path, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train to `config.iters` iterations into the run directory `out`; with `resume`, continue its checkpoint."""
    from ..core.models import check_device

    check_device(config.device)
    # resolved once: the checkpoint and config.json say what ran
    config = config.replace(precision=resolve_precision(config.precision, config.device))
    rank, world = distributed(config.device)
    if config.batch % world:
        raise CnnlabError(f"--batch {config.batch} is not divisible by the {world} processes")
    run = RunDir.create(out, "gan")
    ckpt = None
    if resume:
        if not (run / CHECKPOINT).is_file():
            raise CnnlabError(f"nothing to resume: {run / CHECKPOINT} does not exist")
        ckpt = load_checkpoint(run / CHECKPOINT)
        with restoring(run / CHECKPOINT, "cnnlab GAN checkpoint"):
            check_resumable(ckpt, config, run / CHECKPOINT)
    with _own_rng(torch.device(config.device)):
        loop = _Loop(config, run, rank, world)
        if ckpt is not None:
            with restoring(run / CHECKPOINT, "cnnlab GAN checkpoint"):
                loop.resume(ckpt)
        if world > 1:
            loop.distribute()
        return _run_loop(loop, progress)


def _run_loop(loop: _Loop, progress: bool) -> TrainResult:
    c, rank = loop.c, loop.rank
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        c.save(loop.run / "config.json")
        writer = SummaryWriter(str(loop.run / "tensorboard"))
    bar = tqdm(range(loop.start, c.iters), initial=loop.start, total=c.iters, desc=f"gan {c.model}",
               disable=not progress or rank != 0)
    t0 = time.perf_counter()
    for it in bar:
        with bf16_kernels(c.precision, loop.device):  # backward passes included
            stats = loop.iteration(it)
        n = it + 1
        if rank == 0:
            for k, v in stats.items():
                writer.add_scalar(k, v, n)
            bar.set_postfix(loss_D=f"{stats['loss_D']:.3f}", loss_G=f"{stats['loss_G']:.3f}")
            if n in c.grid_at or n == c.iters:
                loop.grid(n, writer)
        if n % c.checkpoint_every == 0 or n == c.iters:
            loop.checkpoint(n)
    result = TrainResult(c, loop.history, loop.start, time.perf_counter() - t0, loop.run / CHECKPOINT, loop.world,
                         loop.skipped)
    if rank == 0:
        writer.close()
        result.save(loop.run.path)
    return result


def _module(m):
    return m.module if hasattr(m, "module") else m


def load_checkpoint(path: str | Path) -> dict:
    """A cnnlab GAN checkpoint, loaded with weights_only=True; a clear error for anything else."""
    return load_torch_file(path, "cnnlab GAN checkpoint", format="cnnlab-gan-1", keys=("generator",))


@with_options(GanConfig)
def train(*, config: GanConfig | None = None, out: str | os.PathLike | None = None, resume: bool = False,
          progress: bool = False, **options) -> TrainResult:
    """Train a DCGAN, cDCGAN or cGAN into the run directory `out` (default runs/gan-<time>), writing checkpoints,
    grids, TensorBoard logs, config.json and metrics.json as it goes. `resume=True` continues the checkpoint in
    `out` and ends with exactly the weights of an uninterrupted run; it refuses a checkpoint trained otherwise.
    Under torchrun, DistributedDataParallel (rank and world from `core.runner.distributed`)."""
    cfg = configure(GanConfig, config, options)
    run = Path(out) if out is not None else RunDir.create(None, "gan").path
    return train_run(cfg, run, resume=resume, progress=progress)
