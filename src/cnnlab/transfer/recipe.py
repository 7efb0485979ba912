"""How a head is trained and a network fine-tuned: the recipe (a fixed schedule — warm-up, then cosine to 0 at the
last step — whose final weights are kept; each default measured, docs/benchmarks.md, transfer (f)), the spelling of
`--finetune`, the schedule and the optimizer. Shared by the head on features (`heads.py`) and fine-tuning
(`finetune.py`)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from ..core.errors import CnnlabError

HEADS = ("svm", "linear", "mlp")
SELECTIONS = ("last", "best")  # the final weights (the schedule's end), or the epoch of lowest validation loss
BATCHNORM = ("frozen", "train")
OPTIMIZERS = ("sgd", "adamw")
LR = {"sgd": 1e-2, "adamw": 1e-3}  # the head's peak learning rate when none is given




def finetune_spelling(spec: str) -> int | None:
    """'none' → 0, 'last:N' → N, 'all' → None (every block); anything else is one line (checked before a model is
    loaded: the number of blocks is checked by `parse_finetune`)."""
    if spec == "none":
        return 0
    if spec == "all":
        return None
    kind, _, n = spec.partition(":")
    if kind == "last" and n.isdigit() and int(n) >= 1:
        return int(n)
    raise CnnlabError(f"--finetune must be none, all or last:N (N ≥ 1 blocks), not {spec!r}")


def parse_finetune(spec: str, n_units: int) -> int:
    """'none' → 0 blocks unfrozen, 'last:N' → N, 'all' → every block (the head always trains)."""
    n = finetune_spelling(spec)
    if n is None:
        return n_units
    if n > n_units:
        raise CnnlabError(f"--finetune must be none, all or last:N with 1 ≤ N ≤ {n_units} (the model's blocks), "
                          f"not {spec!r}")
    return n


@dataclass(frozen=True)
class Recipe:  # its defaults are the transfer options' (TransferConfig reads them from DEFAULT_RECIPE)
    """How a head is trained and a network fine-tuned: a fixed schedule (warm-up, then cosine to 0 at the last step)
    whose final weights are kept. Each default was kept by trying its alternative on two datasets; those
    measurements, and the recipe against the former one and the plain one, are in docs/benchmarks.md, transfer (f)."""
    epochs: int = 8
    lr: float | None = None  # the head's peak rate (None: the optimizer's, LR); unit k below gets lr × layer_decay^k
    layer_decay: float = 0.7
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    batch_size: int = 32
    optimizer: str = "sgd"  # SGD with Nesterov momentum 0.9, or AdamW
    batchnorm: str = "frozen"  # frozen: BatchNorm keeps ImageNet's statistics and runs in eval mode
    augment: bool = True  # random resized crops and flips; off: the model's center crop
    ema: float = 0.0  # decay per optimizer step of a moving average of the weights, validated and kept; 0: off
    select: str = "last"
    patience: int | None = None  # with select='best': stop after this many epochs without a lower validation loss
    seed: int = 0
    precision: str = "auto"
    workers: int = 2

    def __post_init__(self):
        if self.select not in SELECTIONS or self.batchnorm not in BATCHNORM or self.optimizer not in OPTIMIZERS:
            raise CnnlabError(f"select must be one of {SELECTIONS}, batchnorm of {BATCHNORM}, optimizer of "
                              f"{OPTIMIZERS}")
        if not 0 <= self.ema < 1:
            raise CnnlabError(f"--ema is a decay per step in [0, 1), not {self.ema}")
        if self.patience is not None and self.select != "best":
            raise CnnlabError("--patience stops on the validation loss: it needs --select best (the default, "
                              "'last', runs the whole schedule)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, config) -> "Recipe":
        """The recipe a job's config asks for: each field read from the config's option of the same name (the
        batch from `train_batch_size`: `batch_size` is the extraction's); one the config lacks keeps its default."""
        names = {f.name: CONFIG_NAMES.get(f.name, f.name) for f in fields(cls)}
        return cls(**{mine: getattr(config, theirs) for mine, theirs in names.items() if hasattr(config, theirs)})

    def peak_lr(self, optimizer: str | None = None) -> float:
        return self.lr if self.lr is not None else LR[optimizer or self.optimizer]


DEFAULT_RECIPE = Recipe()
CONFIG_NAMES = {"batch_size": "train_batch_size"}  # a recipe field → the config option that sets it, where they differ


def schedule(opt: torch.optim.Optimizer, warmup: int, total: int):
    """Linear warm-up over `warmup` steps, then cosine to exactly 0 at step `total` (stepped per optimizer step)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step + 1 - warmup) / max(1, total - warmup))))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def make_optimizer(groups: list[dict], recipe: Recipe) -> torch.optim.Optimizer:
    groups = [{k: v for k, v in g.items() if k in ("params", "lr")} for g in groups]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=recipe.weight_decay)
    return torch.optim.AdamW(groups, weight_decay=recipe.weight_decay)


def check_validation(recipe: Recipe, val: np.ndarray) -> None:
    if recipe.select == "best" and not len(val):
        raise CnnlabError("--select best chooses on the validation split: give --val-fraction > 0")


def better(candidate: dict, best: dict | None) -> bool:
    """The selection among epochs when asked (select='best'): the lower validation loss, ties to the later epoch."""
    return best is None or candidate["val_loss"] <= best["val_loss"]
