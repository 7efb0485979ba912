"""A neural-network head, and fine-tuning: the report's "replace the SVM by a neural network" (Q2-3.11) and "fine-tune
the weights" (Q2-1.7), with the recipe practitioners use (timm's train.py, fastai's fine_tune): AdamW, a warm-up then
cosine schedule, a learning rate per depth (lower for early units), random resized crops and flips, label smoothing,
a validation split carved from the training split for model selection and early stopping, bf16 autocast where it is
native, a checkpoint every epoch (`resume` continues it to the same weights), TensorBoard scalars.

`finetune` trains in place a `Backbone` whose head `core.models.set_head` replaced; `train_head` fits a head on frozen
features (a matrix), which is the fast path of `--finetune none`.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..core.backbones import Backbone
from ..core.errors import CnnlabError
from ..core.hooks import eval_mode
from ..core.models import head_of, units
from ..core.precision import bf16_kernels, resolve_precision

HEADS = ("svm", "linear", "mlp")
CHECKPOINT = "finetune.pt"


def parse_finetune(spec: str, n_units: int) -> int:
    """'none' → 0 units unfrozen, 'last:N' → N, 'all' → every unit (the head always trains)."""
    if spec == "none":
        return 0
    if spec == "all":
        return n_units
    kind, _, n = spec.partition(":")
    if kind == "last" and n.isdigit() and 1 <= int(n) <= n_units:
        return int(n)
    raise CnnlabError(f"--finetune must be none, all or last:N with 1 ≤ N ≤ {n_units}, not {spec!r}")


@dataclass(frozen=True)
class Recipe:
    epochs: int = 8
    lr: float = 1e-3  # the head's; unit k below the head gets lr × layer_decay^k
    layer_decay: float = 0.7
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    batch_size: int = 32
    patience: int = 3  # epochs without a better validation accuracy before stopping
    seed: int = 0
    precision: str = "auto"
    workers: int = 2

    def to_dict(self) -> dict:
        return asdict(self)


def _schedule(opt: torch.optim.Optimizer, warmup: int, total: int):
    """Linear warm-up, then cosine to 0, per step."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


# -------------------------------------------------------------------------------------------- head on features
def train_head(X: np.ndarray, y: np.ndarray, val: np.ndarray, n_classes: int, kind: str, recipe: Recipe,
               hidden: int = 512, on_epoch: Callable[[dict], None] | None = None) -> tuple[nn.Module, list[dict]]:
    """A `linear` or `mlp` head fitted by AdamW on frozen features X (N,D) (rows `val` held out for selection):
    the epoch with the best validation accuracy is kept. Returns the head (eval mode) and the history; `on_epoch`
    sees each epoch's row as it is done."""
    train = np.setdiff1d(np.arange(len(X)), val)
    Xt, yt = torch.from_numpy(np.asarray(X, np.float32)), torch.from_numpy(np.asarray(y)).long()
    g = torch.Generator().manual_seed(recipe.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        head = (nn.Linear(X.shape[1], n_classes) if kind == "linear" else
                nn.Sequential(nn.Linear(X.shape[1], hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, n_classes)))
    epochs = recipe.epochs * 10  # a head on cached features costs little per epoch: more of them
    steps = math.ceil(len(train) / recipe.batch_size)
    opt = torch.optim.AdamW(head.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = _schedule(opt, steps * max(1, round(recipe.warmup_epochs)), steps * epochs)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    best, best_state, history = -1.0, None, []
    for epoch in range(epochs):
        head.train()
        order = torch.from_numpy(train)[torch.randperm(len(train), generator=g)]
        for idx in order.split(recipe.batch_size):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(recipe.seed * 100_003 + epoch * 1009 + int(idx[0]))  # dropout, seeded
                loss = loss_fn(head(Xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        head.eval()
        with torch.no_grad():
            acc = float((head(Xt[val]).argmax(1) == yt[val]).float().mean()) if len(val) else float("nan")
        history.append({"epoch": epoch + 1, "loss": float(loss.detach()), "val_accuracy": acc})
        if on_epoch is not None:
            on_epoch(history[-1])
        if acc > best:
            best, best_state = acc, copy.deepcopy(head.state_dict())
    head.load_state_dict(best_state)
    return head.eval(), history


# --------------------------------------------------------------------------------------------- fine-tuning
class _Images(torch.utils.data.Dataset):
    """Files → float (3,S,S) in [0,1]: random resized crops and flips for training, the model's own resize and
    center crop otherwise. Image i's crop in epoch e is drawn from seed (seed, e, i): the same whichever process or
    worker reads it, so a resumed run or one shared out over processes sees the same images."""

    def __init__(self, paths: Sequence[Path], labels: np.ndarray, backbone: Backbone, train: bool, seed: int = 0,
                 epoch: int = 0):
        self.paths, self.labels, self.prep, self.train = list(paths), np.asarray(labels), backbone.preprocess, train
        self.seed, self.epoch = seed, epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from torchvision.transforms import v2

        if not self.train:
            return self.prep.read(self.paths[i]), int(self.labels[i])
        from ..core.images import load_image, pil_to_tensor

        x = pil_to_tensor(load_image(self.paths[i], min_side=self.prep.resize_size))
        aug = v2.Compose([v2.RandomResizedCrop(self.prep.input_size, scale=(0.35, 1.0), antialias=True),
                          v2.RandomHorizontalFlip()])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_033 + i)
            return aug(x), int(self.labels[i])


def _shards(n: int, batch: int, gen: torch.Generator, rank: int, world: int) -> list[list[int]]:
    """This process's share of each global batch of a seeded permutation (every process draws the same one), full
    batches only when there is more than one."""
    order = torch.randperm(n, generator=gen).tolist()
    batches = [order[i:i + batch] for i in range(0, n, batch)]
    if len(batches) > 1 and len(batches[-1]) < batch:
        batches.pop()
    return [b[rank::world] for b in batches]


def param_groups(backbone: Backbone, n_unfrozen: int, recipe: Recipe) -> list[dict]:
    """The head at `lr`, and the last `n_unfrozen` units below it at lr × layer_decay^depth; everything else is
    frozen (no gradient, and kept in eval mode so that its BatchNorm statistics stay the pretrained ones)."""
    head = head_of(backbone.net)
    body = [u for u in units(backbone.net) if u != head and not u.startswith(head + ".")
            and not head.startswith(u + ".")]
    trainable = body[len(body) - n_unfrozen:] if n_unfrozen else []
    for p in backbone.net.parameters():
        p.requires_grad_(False)
    groups = [{"params": list(backbone.net.get_submodule(head).parameters()), "lr": recipe.lr, "unit": head}]
    for depth, unit in enumerate(reversed(trainable), 1):
        groups.append({"params": list(backbone.net.get_submodule(unit).parameters()),
                       "lr": recipe.lr * recipe.layer_decay ** depth, "unit": unit})
    for g in groups:
        for p in g["params"]:
            p.requires_grad_(True)
    return groups


def _train_mode(backbone: Backbone, groups: list[dict]) -> None:
    backbone.eval()
    for g in groups:
        backbone.net.get_submodule(g["unit"]).train()


def accuracy(backbone: Backbone, loader) -> float:
    correct = total = 0
    with torch.inference_mode(), eval_mode(backbone):
        for x, y in loader:
            correct += int((backbone(x.to(backbone.device)).argmax(1).cpu() == y).sum())
            total += len(y)
    return correct / max(total, 1)


def finetune(backbone: Backbone, paths: Sequence[Path], labels: np.ndarray, train: np.ndarray, val: np.ndarray,
             n_unfrozen: int, recipe: Recipe, run: Path | None = None, resume: bool = False,
             progress: bool = False, on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train `backbone` (its head already replaced, and best already trained) in place on `paths[train]`; the
    weights of the epoch with the best accuracy on `paths[val]` are kept (epoch 0: as they came in). With `run`, a
    checkpoint after each epoch (`resume` continues it) and TensorBoard scalars. Returns the history (one dict per
    epoch); `on_epoch` sees each row as it is done (in the process of rank 0)."""
    from tqdm.auto import tqdm

    from ..core.runner import barrier, distributed

    device = backbone.device
    rank, world = distributed(device)
    if recipe.batch_size % world:
        raise CnnlabError(f"--batch-size {recipe.batch_size} must be a multiple of the {world} processes")
    precision = resolve_precision(recipe.precision, device)
    groups = param_groups(backbone, n_unfrozen, recipe)
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "unit"} for g in groups],
                            weight_decay=recipe.weight_decay)
    paths = [Path(p) for p in paths]
    steps = math.ceil(len(train) / recipe.batch_size)
    sched = _schedule(opt, steps * max(1, round(recipe.warmup_epochs)), steps * recipe.epochs)
    state = {"epoch": 0, "history": [], "best": -1.0, "best_state": None, "stale": 0}
    ckpt = run / CHECKPOINT if run else None
    if resume and ckpt is not None and ckpt.is_file():
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        if saved["recipe"] != recipe.to_dict() or saved["n_unfrozen"] != n_unfrozen:
            raise CnnlabError(f"{ckpt} was trained with other settings: start a new run, or drop --resume")
        backbone.net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        state = saved["state"]
    val_loader = torch.utils.data.DataLoader(_Images([paths[i] for i in val], labels[val], backbone, False),
                                             batch_size=recipe.batch_size, num_workers=recipe.workers)
    net = backbone
    if world > 1:  # gradients averaged over the processes' shards of each global batch
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(backbone, device_ids=[device.index] if device.type == "cuda" else None)
    writer = None
    if run is not None and rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run / "tensorboard"))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    if state["epoch"] == 0 and state["best_state"] is None:  # the starting point is a candidate too (epoch 0)
        acc = accuracy(backbone, val_loader)
        state.update(best=acc, best_state={k: v.detach().clone() for k, v in backbone.net.state_dict().items()})
        state["history"].append({"epoch": 0, "loss": None, "val_accuracy": acc, "seconds": 0.0})
        if on_epoch is not None and rank == 0:
            on_epoch(state["history"][-1])
    bar = tqdm(range(state["epoch"], recipe.epochs), initial=state["epoch"], total=recipe.epochs, desc="fine-tune",
               unit="epoch", disable=not progress or rank != 0)
    for epoch in bar:
        if state["stale"] >= recipe.patience:
            break
        gen = torch.Generator().manual_seed(recipe.seed * 1_000_003 + epoch)  # the batches: (seed, epoch)
        images = _Images([paths[i] for i in train], labels[train], backbone, True, recipe.seed, epoch)
        loader = torch.utils.data.DataLoader(images, batch_sampler=_shards(len(train), recipe.batch_size, gen, rank,
                                                                           world), num_workers=recipe.workers)
        _train_mode(backbone, groups)
        t0, total = time.perf_counter(), 0.0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed * 1_000_003 + epoch)  # dropout, seeded per epoch
            for x, y in loader:
                with bf16_kernels(precision, device):
                    with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                        loss = loss_fn(net(x.to(device)).float(), y.to(device))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(y)
        acc = accuracy(backbone, val_loader)
        row = {"epoch": epoch + 1, "loss": total * world / len(train), "val_accuracy": acc,
               "seconds": time.perf_counter() - t0}
        state["history"].append(row)
        if acc > state["best"]:
            state.update(best=acc, stale=0, best_state={k: v.detach().clone() for k, v in
                                                        backbone.net.state_dict().items()})
        else:
            state["stale"] += 1
        state["epoch"] = epoch + 1
        bar.set_postfix(val_accuracy=f"{acc:.3f}", best=f"{state['best']:.3f}")
        if on_epoch is not None and rank == 0:
            on_epoch(row)
        if writer is not None:
            writer.add_scalar("loss/train", row["loss"], epoch + 1)
            writer.add_scalar("accuracy/val", acc, epoch + 1)
            writer.add_scalar("lr/head", opt.param_groups[0]["lr"], epoch + 1)
        if ckpt is not None and rank == 0:
            from ..core.runs import atomic_path

            with atomic_path(ckpt) as tmp:
                torch.save({"net": backbone.net.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "state": state, "recipe": recipe.to_dict(),
                            "n_unfrozen": n_unfrozen}, tmp)
        barrier()
    if writer is not None:
        writer.close()
    if state["best_state"] is not None:
        backbone.net.load_state_dict(state["best_state"])
    for p in backbone.net.parameters():
        p.requires_grad_(True)
    backbone.eval()
    return state["history"]
