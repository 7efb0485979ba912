"""What a transfer run will do, checked before any image is read or any model loaded: which route the options
choose (the SVM grid, a trained head on frozen features, fine-tuning), that every option given is one that route
reads, and that each class has the images the split, the validation share and cross-validation need — each
impossible request one line that names the class, the count and the flag that fixes it."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from ..core.data import parse_split
from ..core.errors import CnnlabError
from ..core.table import DEFAULT_BACKBONE

ROUTES = ("svm", "linear", "mlp", "finetune")
_HEADS = ("linear", "mlp", "finetune")
_TRAINED = ("mlp", "finetune")
# option → the routes that read it (any other option is read by every route)
READ_BY: dict[str, tuple[str, ...]] = {
    "Cs": ("svm",), "scaling": ("svm",), "folds": ("svm",), "layers": ("svm",),
    "val_fraction": _HEADS, "epochs": _TRAINED, "lr": _TRAINED, "train_batch_size": _TRAINED,
    "label_smoothing": _TRAINED, "select": _TRAINED, "patience": _TRAINED,
    "layer_decay": ("finetune",), "optimizer": ("finetune",), "batchnorm": ("finetune",),
    "weight_decay": ("finetune",), "augment": ("finetune",), "ema": ("finetune",), "resume": ("finetune",),
}
_SAYS = {"svm": "the SVM grid (--head svm, --finetune none)", "linear": "the linear head on frozen features",
         "mlp": "the mlp head on frozen features", "finetune": "fine-tuning (--finetune last:N|all)"}
_WANTS = {"svm": "the SVM grid (--head svm)", "linear": "--head linear", "mlp": "--head mlp",
          "finetune": "--finetune last:N|all"}


def route(head: str, finetune: str) -> str:
    return "finetune" if finetune != "none" else head


def refuse_ignored(config, defaults: Mapping[str, object], flag) -> None:
    """A one-line error for the first option set away from its default that this run's route does not read
    (`flag(name)` spells it as the command line does)."""
    r = route(config.head, config.finetune)
    for name, readers in READ_BY.items():
        if r not in readers and getattr(config, name) != defaults[name]:
            wanted = " or ".join(_WANTS[k] for k in readers)
            raise CnnlabError(f"{flag(name)} is read by {wanted}, not by {_SAYS[r]}: leave it out, or choose that "
                              "route")


def check_counts(classes: Sequence[str], counts: Sequence[int], split: tuple[str, int | None], r: str,
                 val_fraction: float, test_counts: Sequence[int] | None = None, folds: int | None = None) -> None:
    """Each class holds enough images for the split (random:K: K for training and one more for the test set),
    the validation share (a trained head: at least one training image left), and cross-validation (the SVM grid and
    its C: two training images per class)."""
    kind, k = split
    if len(classes) < 2:  # a classifier tells classes apart: one is not a task (scikit-learn's solvers refuse it late)
        found = f"only {classes[0]!r}" if classes else "none"
        raise CnnlabError(f"transfer needs at least 2 classes (one subfolder per class); the data has {found}")
    for name, n, t in zip(classes, counts, test_counts if test_counts is not None else [None] * len(classes)):
        n, train = int(n), k if kind == "random" else int(n)
        if kind == "random" and n <= k:
            raise CnnlabError(f"class {name!r} has {n} image{'s' * (n != 1)}; --split random:{k} takes {k} per class "
                              f"for training plus at least one for the test set: pass --split random:K with K < {n} "
                              "(K training images per class)")
        if t == 0:
            raise CnnlabError(f"class {name!r} has no image in test/: --split folders scores every class on test/")
        held = max(1, round(val_fraction * train)) if r in _HEADS and val_fraction else 0
        if r in _HEADS and train - held < 1:
            raise CnnlabError(f"class {name!r} keeps no training image once --val-fraction {val_fraction:g} holds "
                              f"{held} of its {train} out for validation: pass --val-fraction 0, or more training "
                              "images per class (--split random:K)")
        if r == "svm" and train < 2:
            raise CnnlabError(f"class {name!r} has {train} training image{'s' * (train != 1)}: the SVM's "
                              "cross-validation (--folds) needs at least 2 per class: pass --split random:K with K ≥ 2")
        if r == "svm" and folds is not None and folds > train:
            raise CnnlabError(f"--folds {folds} needs {folds} training images in every class; class {name!r} has "
                              f"{train}: pass --folds {train} or fewer, or more training images (--split random:K)")


def check_options(cfg, model, defaults: Mapping[str, object], flag: Callable[[str], str],
                  default_backbones: Sequence[str]) -> None:
    """What can be refused from the options alone: an option the route does not read, a --finetune spelling, a
    trained head over several backbones or on a source that has no network."""
    from . import bow
    from .recipe import finetune_spelling

    refuse_ignored(cfg, defaults, flag)
    if not cfg.layers or not all(cfg.layers):
        raise CnnlabError("--layers needs at least one cut point (e.g. pre_logits)")
    if not cfg.Cs:
        raise CnnlabError("--C needs at least one value (e.g. 1)")
    finetune_spelling(cfg.finetune)
    r = route(cfg.head, cfg.finetune)
    if r == "svm":
        return
    what = "--finetune" if r == "finetune" else f"--head {cfg.head}"
    if cfg.features:
        raise CnnlabError(f"{what} trains a network on images; --features holds features only (the SVM grid): "
                          "pass --data instead")
    if bow.NAME in cfg.backbone:
        raise CnnlabError(f"{what} trains a network; {bow.NAME} has none (it takes the SVM grid)")
    several = len(model) if isinstance(model, (list, tuple)) else 1 if model is not None else len(cfg.backbone)
    if several > 1 and (model is not None or cfg.backbone != list(default_backbones)):
        raise CnnlabError(f"{what} trains one network: name a single --backbone (e.g. {DEFAULT_BACKBONE}); "
                          "backbones joined with '+' are for the SVM grid")
    if cfg.select == "best" and not cfg.val_fraction:
        raise CnnlabError("--select best chooses on the validation split: give --val-fraction > 0")
    if cfg.resume and cfg.finetune == "none":
        raise CnnlabError("--resume continues a fine-tuning checkpoint: it needs --finetune last:N|all")


def check_data(cfg, data, r: str, folds: int | None) -> None:
    """The dataset's counts against the split, the route and `folds` (None: the default, lowered to fit)."""
    ds, split = data
    if split is None:  # random:K, drawn later
        counts = np.bincount(ds.labels, minlength=len(ds.classes))
        check_counts(ds.classes, counts, parse_split(cfg.split), r, cfg.val_fraction, folds=folds)
    else:
        train = np.bincount(ds.labels[split.train], minlength=len(ds.classes))
        test = np.bincount(ds.labels[split.test], minlength=len(ds.classes))
        check_counts(ds.classes, train, ("folders", None), r, cfg.val_fraction, test, folds=folds)
