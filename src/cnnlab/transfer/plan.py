"""What a transfer run will do, checked before any image is read or any model loaded: which route the options
choose (the SVM grid, a trained head on frozen features, fine-tuning), that every option given is one that route
reads, and that each class has the images the split, the validation share and cross-validation need — each
impossible request one line that names the class, the count and the flag that fixes it."""
from __future__ import annotations

from typing import Mapping, Sequence

from ..core.errors import CnnlabError

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
