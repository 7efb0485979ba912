"""The transfer summary as a type: what every route reports (metrics.json and `--json` write its `summary()`, with
the keys they have always had). The SVM routes fill the grid; a trained head or fine-tuning fills its own fields
(the validation curve, what was trained), which the SVM routes leave out of the JSON."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

from ..core.config import JOIN


@dataclass
class TransferSummary:
    backbone: str  # the backbones, joined by '+'
    weights: str
    split: str  # the split's description
    seed: int
    n_train: int
    n_test: int
    grid: list[dict]  # the (layer × C) grid's rows; [] for a trained head
    selected: dict  # the selected layer and C (or epoch) with its test accuracy
    timing: dict  # extract_s, images_per_s, fit_s
    scaling: str | None  # None for a trained head (its features are not scaled)
    classes: list[str]
    per_class_accuracy: dict[str, float]
    skipped: list[dict]  # unreadable images and why
    skipped_images: list[str]
    cached_layers: list[str]
    precision: str | None
    # a trained head or fine-tuning only (left out of the JSON where None)
    n_val: int | None = None
    history: list[dict] | None = None  # the validation curve, one row per epoch
    head: str | None = None
    finetune: str | None = None
    warnings: list[str] | None = None
    trained: dict | None = None  # the head, the blocks and the parameters trained
    notes: list[str] | None = None
    NETWORK_ONLY: ClassVar[tuple[str, ...]] = ("n_val", "history", "head", "finetune", "warnings", "trained", "notes")

    @classmethod
    def of(cls, cfg, split, y_test: np.ndarray, test_pred: np.ndarray, classes: list[str], timing: dict,
           skipped: list[dict], grid: list[dict], selected: dict, **route) -> "TransferSummary":
        """From a route's pieces: the split, the grid and the selection, the test split's per-class accuracy,
        timing and what was skipped; `route` sets a route's own fields (or overrides, as a trained head's
        `scaling=None` and `n_train` without the validation images)."""
        base = dict(
            backbone=JOIN.join(cfg.backbone), weights=cfg.weights, split=split.description, seed=cfg.seed,
            n_train=int(len(split.train)), n_test=int(len(split.test)), grid=grid, selected=selected,
            timing={k: timing[k] for k in ("extract_s", "images_per_s", "fit_s")}, scaling=cfg.scaling,
            classes=classes, per_class_accuracy={c: float((test_pred[y_test == i] == i).mean())
                                                 for i, c in enumerate(classes) if (y_test == i).any()},
            skipped=skipped, skipped_images=[s["image"] for s in skipped],
            cached_layers=timing["cached_layers"], precision=timing["precision"])
        return cls(**(base | route))

    def summary(self) -> dict:
        """Today's JSON keys, in their order; a trained head's fields only where it set them."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in values.items() if not (k in self.NETWORK_ONLY and v is None)}
