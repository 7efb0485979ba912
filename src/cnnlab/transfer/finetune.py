"""A neural-network head, and fine-tuning: the report's "replace the SVM by a neural network" (Q2-3.11) and "fine-tune
the weights" (Q2-1.7), with the recipe the field uses (timm's train.py, fastai's fine_tune): a head fitted first on the
frozen features, then a fixed schedule — linear warm-up, cosine to 0 at the last optimizer step — whose final weights
are kept; SGD with Nesterov momentum, a learning rate per depth (lower for early units), BatchNorm frozen at ImageNet's
statistics, random resized crops and flips, label smoothing, channels-last tensors, bf16 autocast where it is native,
a checkpoint every epoch (`resume` continues it to the same weights), TensorBoard scalars. A validation share of the
training split draws the curve; it chooses among epochs (lowest loss, ties to the later) only when asked.

`finetune` trains in place a `Backbone` whose head `core.models.set_head` replaced; `train_head` fits a head on frozen
features (a matrix), which is the fast path of `--finetune none`.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..core.backbones import Backbone
from ..core.blocks import Block, blocks
from ..core.checkpoints import load_torch_file, restoring
from ..core.errors import CnnlabError
from ..core.hooks import eval_mode
from ..core.models import head_of
from ..core.precision import bf16_kernels, resolve_precision
from .recipe import Recipe, better, check_validation, make_optimizer, schedule

CHECKPOINT = "finetune.pt"
CHECKPOINT_KEYS = ("net", "optimizer", "scheduler", "state", "recipe", "n_unfrozen")


# --------------------------------------------------------------------------------------------- fine-tuning
class Images(torch.utils.data.Dataset):
    """Files → float (3,S,S) in [0,1]: random resized crops and flips for training, the model's own resize and
    center crop otherwise. Decoded at the network's scale (JPEG draft mode, then an 8-bit resize of the shorter
    side to the model's resize size) before any float tensor exists. Image i's crop in epoch e is drawn from seed
    (seed, e, i): the same whichever process or worker reads it, so a resumed run or one shared out over processes
    sees the same images."""

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
        from PIL import Image

        from ..core.images import load_image

        img = load_image(self.paths[i], min_side=self.prep.resize_size)
        scale = self.prep.resize_size / min(img.size)
        if scale < 1:
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                             Image.Resampling.BILINEAR, reducing_gap=2.0)
        x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)  # uint8 (3,H,W)
        aug = v2.Compose([v2.RandomResizedCrop(self.prep.input_size, scale=(0.35, 1.0), antialias=True),
                          v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True)])
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


def steps_per_epoch(n: int, batch: int) -> int:
    """The optimizer steps `_shards` makes of n images: what the schedule counts."""
    return max(1, n // batch)


def trained_blocks(net: nn.Module, n_unfrozen: int) -> list[Block]:
    """The last `n_unfrozen` blocks below the head (`core.blocks`: a stage or a transformer block, with the stem,
    tokens or final norm beside it), from the deepest up."""
    found = blocks(net, head_of(net))
    return found[len(found) - n_unfrozen:][::-1] if n_unfrozen else []


def param_groups(backbone: Backbone, n_unfrozen: int, recipe: Recipe) -> list[dict]:
    """The head at the peak rate, and the last `n_unfrozen` blocks below it at lr × layer_decay^depth (a block
    takes the parameters beside it that belong to no block: the stem and a transformer's class token go with the
    first, a final norm with the last); everything else is frozen (no gradient, and kept in eval mode so that its
    BatchNorm statistics stay the pretrained ones). Each group names its `unit` and the `modules` it trains."""
    net = backbone.net
    head = head_of(net)
    for p in net.parameters():
        p.requires_grad_(False)
    lr = recipe.peak_lr()
    params = dict(net.named_parameters())
    groups = [{"params": list(net.get_submodule(head).parameters()), "lr": lr, "unit": head, "modules": [head]}]
    for depth, block in enumerate(trained_blocks(net, n_unfrozen), 1):
        groups.append({"params": [params[n] for n in block.params], "lr": lr * recipe.layer_decay ** depth,
                       "unit": block.name, "modules": block.modules, "glue": block.glue})
    for g in groups:
        for p in g["params"]:
            p.requires_grad_(True)
    return groups


def _train_mode(backbone: Backbone, groups: list[dict], batchnorm: str) -> None:
    """The trained blocks in train mode (dropout on); their BatchNorm layers too only with batchnorm='train'."""
    backbone.eval()
    for g in groups:
        for name in g["modules"]:
            unit = backbone.net.get_submodule(name)
            unit.train()
            if batchnorm == "frozen":
                for m in unit.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()


def evaluate(backbone: Backbone, loader) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `backbone` over a loader of (images, labels)."""
    loss = correct = total = 0
    with torch.inference_mode(), eval_mode(backbone):
        for x, y in loader:
            logits = backbone(x.to(backbone.device)).float().cpu()
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
    return loss / max(total, 1), correct / max(total, 1)


def check_checkpoint(path: Path) -> dict | None:
    """The fine-tuning checkpoint at `path` (None when there is none yet: a resume then starts afresh), or the one
    line that says why it cannot be continued."""
    if not path.is_file():
        return None
    saved = load_torch_file(path, "cnnlab fine-tuning checkpoint", keys=CHECKPOINT_KEYS)
    if not isinstance(saved["recipe"], dict) or not isinstance(saved["state"], dict) or not isinstance(
            saved["net"], dict):
        raise CnnlabError(f"{path} is not a cnnlab fine-tuning checkpoint: its recipe, state or weights are not "
                          "what one holds")
    return saved


def _snapshot(net: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@contextmanager
def _holding(net: nn.Module, state: dict | None):
    """`net` with the weights `state` for the block (None: its own), its own weights back after."""
    if state is None:
        yield
        return
    own = _snapshot(net)
    net.load_state_dict(state)
    try:
        yield
    finally:
        net.load_state_dict(own)


def diverged(history: list[dict], kept: int) -> str | None:
    """One line when the kept weights validate far worse than the fitted head fine-tuning started from (loss more
    than doubled and accuracy lower, or not a number): the sign of a learning rate too high, not of noise."""
    start = history[0]
    end = next(r for r in history if r["epoch"] == kept)
    if kept == 0 or start["val_loss"] is None:  # no validation split: nothing to compare
        return None
    if end["val_loss"] <= 2 * start["val_loss"] or end["val_accuracy"] >= start["val_accuracy"]:
        return None
    return (f"fine-tuning diverged: the kept weights (epoch {kept}) validate at loss {end['val_loss']:.3f}, "
            f"accuracy {end['val_accuracy']:.3f}, against {start['val_loss']:.3f}, {start['val_accuracy']:.3f} for "
            f"the fitted head it started from; lower --lr or --layer-decay (--select best keeps the best epoch)")


def _ema(net: nn.Module, decay: float):
    """An exponential moving average of `net`'s weights (and buffers), updated after each optimizer step; None when
    decay is 0."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _fresh() -> dict:
    """A run's state before its first epoch (a new dict each time: the history grows in place)."""
    return {"epoch": 0, "history": [], "best": None, "best_state": None, "stale": 0}


def finetune(backbone: Backbone, paths: Sequence[Path], labels: np.ndarray, train: np.ndarray, val: np.ndarray,
             n_unfrozen: int, recipe: Recipe, run: Path | None = None, resume: bool = False,
             progress: bool = False, on_epoch: Callable[[dict], None] | None = None) -> tuple[list[dict], int]:
    """Train `backbone` (its head already replaced, and best already trained) in place on `paths[train]` over the
    recipe's fixed schedule. Kept: the final weights (select='last'), or with select='best' the epoch of lowest
    loss on `paths[val]` (ties to the later; epoch 0 is the weights as they came in). With `run`, a checkpoint
    after each epoch (`resume` continues it) and TensorBoard scalars. Returns the history (one dict per epoch) and
    the epoch whose weights the backbone now holds; `on_epoch` sees each row as it is done (in rank 0)."""
    from tqdm.auto import tqdm

    from ..core.runner import barrier, distributed

    device = backbone.device
    rank, world = distributed(device)
    if recipe.batch_size % world:
        raise CnnlabError(f"--train-batch-size {recipe.batch_size} must be a multiple of the {world} processes")
    check_validation(recipe, val)
    groups = param_groups(backbone, n_unfrozen, recipe)
    opt = make_optimizer(groups, recipe)
    paths = [Path(p) for p in paths]
    steps = steps_per_epoch(len(train), recipe.batch_size)
    sched = schedule(opt, round(steps * recipe.warmup_epochs), steps * recipe.epochs)
    ema = _ema(backbone.net, recipe.ema)
    ckpt = run / CHECKPOINT if run else None
    trainer = {"net": backbone.net, "optimizer": opt, "scheduler": sched, "ema": ema}
    state = _fresh()
    if resume and ckpt is not None and ckpt.is_file():
        state = _resumed(ckpt, trainer, recipe, n_unfrozen)

    def kept() -> dict | None:  # the weights validated and kept: the moving average's, with --ema
        return None if ema is None else ema.module.state_dict()

    def validate() -> tuple[float | None, float | None]:
        with _holding(backbone.net, kept()):
            return evaluate(backbone, val_loader) if len(val) else (None, None)

    def record(row: dict) -> None:
        state["history"].append(row)
        if recipe.select == "best":
            if better(row, state["best"]):
                with _holding(backbone.net, kept()):
                    state.update(best=row, stale=0, best_state=_snapshot(backbone.net))
            else:
                state["stale"] += 1
        if on_epoch is not None and rank == 0:
            on_epoch(row)

    val_loader = torch.utils.data.DataLoader(Images([paths[i] for i in val], labels[val], backbone, False),
                                             batch_size=recipe.batch_size, num_workers=recipe.workers)
    backbone.net.to(memory_format=torch.channels_last)  # convolutions' fast layout on CPUs and GPUs alike
    net = _parallel(backbone, world)
    writer = _tensorboard(run) if run is not None and rank == 0 else None
    if state["epoch"] == 0 and not state["history"]:  # the starting point: epoch 0 of the curve (and a candidate)
        val_loss, acc = validate()
        record({"epoch": 0, "loss": None, "val_loss": val_loss, "val_accuracy": acc, "seconds": 0.0})
    bar = tqdm(range(state["epoch"], recipe.epochs), initial=state["epoch"], total=recipe.epochs, desc="fine-tune",
               unit="epoch", disable=not progress or rank != 0)
    for epoch in bar:
        if recipe.patience is not None and state["stale"] >= recipe.patience:
            break
        _train_mode(backbone, groups, recipe.batchnorm)
        loader = _epoch_loader(backbone, [paths[i] for i in train], labels[train], recipe, epoch, rank, world)
        loss, seconds = _train_epoch(net, backbone, loader, trainer, recipe, epoch)
        val_loss, acc = validate()
        row = {"epoch": epoch + 1, "loss": loss, "val_loss": val_loss, "val_accuracy": acc, "seconds": seconds,
               "lr": sched.get_last_lr()[0]}
        state["epoch"] = epoch + 1
        record(row)
        if val_loss is not None:
            bar.set_postfix(val_loss=f"{val_loss:.3f}", val_accuracy=f"{acc:.3f}")
        if writer is not None:
            _log(writer, row, opt)
        if ckpt is not None and rank == 0:
            _save(ckpt, trainer, state, recipe, n_unfrozen)
        barrier()
    if writer is not None:
        writer.close()
    if state["best_state"] is not None:
        backbone.net.load_state_dict(state["best_state"])
    elif ema is not None:
        backbone.net.load_state_dict(kept())
    selected = state["best"]["epoch"] if state["best"] is not None else state["history"][-1]["epoch"]
    backbone.net.to(memory_format=torch.contiguous_format)
    for p in backbone.net.parameters():
        p.requires_grad_(True)
    backbone.eval()
    return state["history"], selected


# ------------------------------------------------------------------------ the loop's pieces, one purpose each
def _epoch_loader(backbone: Backbone, paths: list[Path], labels: np.ndarray, recipe: Recipe, epoch: int, rank: int,
                  world: int):
    """This epoch's batches of this process: augmented images, shuffled by (seed, epoch), one shard per process."""
    gen = torch.Generator().manual_seed(recipe.seed * 1_000_003 + epoch)
    images = Images(paths, labels, backbone, recipe.augment, recipe.seed, epoch)
    return torch.utils.data.DataLoader(images, batch_sampler=_shards(len(paths), recipe.batch_size, gen, rank, world),
                                       num_workers=recipe.workers)


def _train_epoch(net, backbone: Backbone, loader, trainer: dict, recipe: Recipe, epoch: int) -> tuple[float, float]:
    """One pass over `loader`: (mean training loss, seconds). Dropout is seeded per epoch; bf16 where the recipe
    resolves to it on this device."""
    device, opt, sched, ema = backbone.device, trainer["optimizer"], trainer["scheduler"], trainer["ema"]
    precision = resolve_precision(recipe.precision, device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    t0, total, seen = time.perf_counter(), 0.0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed * 1_000_003 + epoch)
        for x, y in loader:
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            with bf16_kernels(precision, device):
                with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                    loss = loss_fn(net(x).float(), y.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(backbone.net)
            total, seen = total + float(loss.detach()) * len(y), seen + len(y)
    return total / max(seen, 1), time.perf_counter() - t0


def _parallel(backbone: Backbone, world: int):
    """The module the loop calls: DDP over the processes (gradients averaged over each global batch's shards)."""
    if world == 1:
        return backbone
    from torch.nn.parallel import DistributedDataParallel as DDP

    device = backbone.device
    return DDP(backbone, device_ids=[device.index] if device.type == "cuda" else None)


def _tensorboard(run: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run / "tensorboard"))


def _log(writer, row: dict, opt) -> None:
    """An epoch's row as TensorBoard scalars."""
    epoch = row["epoch"]
    writer.add_scalar("loss/train", row["loss"], epoch)
    if row["val_loss"] is not None:
        writer.add_scalar("loss/val", row["val_loss"], epoch)
        writer.add_scalar("accuracy/val", row["val_accuracy"], epoch)
    writer.add_scalar("lr/head", opt.param_groups[0]["lr"], epoch)


def _save(ckpt: Path, trainer: dict, state: dict, recipe: Recipe, n_unfrozen: int) -> None:
    """The checkpoint after an epoch, written atomically: everything `_resumed` needs to continue."""
    from ..core.runs import atomic_path

    ema = trainer["ema"]
    with atomic_path(ckpt) as tmp:
        torch.save({"net": trainer["net"].state_dict(), "optimizer": trainer["optimizer"].state_dict(),
                    "scheduler": trainer["scheduler"].state_dict(), "state": state, "recipe": recipe.to_dict(),
                    "n_unfrozen": n_unfrozen, "ema": None if ema is None else ema.state_dict()}, tmp)


def _resumed(ckpt: Path, trainer: dict, recipe: Recipe, n_unfrozen: int) -> dict:
    """The state a checkpoint continues from, its weights, optimizer, schedule and average loaded into `trainer`;
    one line where it was trained with other settings or is not one."""
    saved = check_checkpoint(ckpt)
    with restoring(ckpt, "cnnlab fine-tuning checkpoint"):
        # a setting the checkpoint predates ran at its default
        if Recipe().to_dict() | saved["recipe"] != recipe.to_dict() or saved["n_unfrozen"] != n_unfrozen:
            raise CnnlabError(f"{ckpt} was trained with other settings: start a new run, or drop --resume")
        trainer["net"].load_state_dict(saved["net"])
        trainer["optimizer"].load_state_dict(saved["optimizer"])
        trainer["scheduler"].load_state_dict(saved["scheduler"])
        if trainer["ema"] is not None:
            trainer["ema"].load_state_dict(saved["ema"])
        state = dict(saved["state"])
        if not set(_fresh()) <= set(state):
            raise KeyError("state")
    return state
