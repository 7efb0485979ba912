"""The classifier `transfer` trains, kept: backbone(s) + cut point + scaling + the fitted LinearSVC.

Saved in a run directory as `classifier.skops` (scikit-learn's estimator in skops' safe format: no pickle, only
allow-listed types are rebuilt) and `classifier.json` (the backbone specs, cut point, pooling, scaling, precision and
class names). `TransferClassifier.load(RUN_DIR)` rebuilds it; its features come from the same code as training.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..core.backbones import Backbone
from ..core.config import JOIN
from ..core.errors import CnnlabError
from ..core.inputs import ImagesLike, batches
from ..core.models import load_model
from ..core.runs import atomic_path, write_json
from . import bow
from .features import forward_features
from .svm import CALIBRATION, group, layer_matrix

FORMAT = "cnnlab-transfer-classifier-1"
ESTIMATOR_FILE, META_FILE, VOCABULARY_FILE = "classifier.skops", "classifier.json", "vocabulary.npy"


def expand_layer(parts: Sequence[str], names: Sequence[str]) -> list[str]:
    """With several backbones, a group of cut points means those of each backbone: ['a/pre_logits', 'b/pre_logits']."""
    if len(names) == 1:
        return list(parts)
    return [f"{n}/{part}" for n in names for part in parts]


class TransferClassifier:
    """`predict(images)` → class names; `decision_function` → (N, classes) SVM scores; `predict_proba` → (N,
    classes) probabilities calibrated on the training split (temperature scaling, `svm.calibrate`: the ranking and
    the prediction stay the SVM's). A classifier saved before calibration existed has no probabilities:
    `predict_proba` refuses, and `top` gives its decision values as `score`."""

    def __init__(self, estimator, classes: Sequence[str], layer: str | Sequence[str],
                 backbones: Sequence[Backbone | str], weights: str = "default", pool: str = "avg", flip: bool = False,
                 scaling: str = "power-l2", precision: str = "fp32", device: str = "cpu",
                 inverse_temperature: float | None = None):
        self.estimator = estimator
        self.inverse_temperature = inverse_temperature  # None: not calibrated (a run saved before 0.5)
        self.classes = list(classes)
        self.parts = group(layer)  # the cut points whose features, concatenated, the estimator reads
        self._backbones = list(backbones)
        self.weights, self.pool, self.flip, self.scaling = weights, pool, flip, scaling
        self.precision, self.device = precision, device

    @property
    def backbones(self) -> list[Backbone]:
        """The feature networks, built from their specs on first use."""
        self._backbones = [b if isinstance(b, Backbone) else load_model(b, self.weights, self.device)
                           for b in self._backbones]
        return self._backbones

    @property
    def layer(self) -> str:
        return JOIN.join(self.parts)

    @property
    def backbone_names(self) -> list[str]:
        return [b.name if isinstance(b, Backbone) else b for b in self._backbones]

    @property
    def backbone(self) -> str:
        return "+".join(self.backbone_names)

    # ---------------------------------------------------------------------------------------------- predicting
    def features(self, images: ImagesLike, batch_size: int = 32, prepared: bool | None = None,
                 empty_ok: bool = False) -> tuple[np.ndarray, list[str], list[tuple]]:
        """(scaled feature matrix (N,D), the names of the images read, the (name, reason) of those skipped).
        Each backbone sees the image through its own preprocessing, as in training."""
        parts = list(dict.fromkeys(self.parts))
        names_all = self.backbone_names
        names, skipped = [], []
        per_backbone: dict[str, np.ndarray] = {}
        for k, (b, name) in enumerate(zip(self.backbones, names_all)):
            seen = []
            for chunk, x, bad in batches(images, b.preprocess, batch_size, prepared):
                if k == 0:  # every backbone reads the same files: name them once
                    names += chunk
                    skipped += bad
                if x is None:
                    continue
                out = forward_features(b, x, parts, self.pool, self.flip, self.precision)
                seen.append({p: out[p].cpu().numpy() for p in parts})
            for p in parts:
                key = f"{name}/{p}" if len(names_all) > 1 else p
                per_backbone[key] = np.concatenate([s[p] for s in seen]) if seen else np.zeros((0, 0), np.float32)
        if not names:
            if empty_ok:
                return np.zeros((0, 0), np.float32), [], skipped
            raise CnnlabError("no readable input images" + (f" ({skipped[0][1]})" if skipped else ""))
        rows = layer_matrix(per_backbone, expand_layer(self.parts, names_all), self.scaling)
        return rows, names, skipped

    def decision_function(self, images: ImagesLike) -> np.ndarray:
        X, _, _ = self.features(images)
        return self._scores(X)

    def predict_proba(self, images: ImagesLike) -> np.ndarray:
        if self.inverse_temperature is None:
            raise CnnlabError("this classifier was saved without calibration: it has decision values "
                              "(decision_function), not probabilities; run `cnnlab transfer` again to calibrate it")
        return self._proba(self.decision_function(images) * self.inverse_temperature)

    def predict(self, images: ImagesLike) -> list[str]:
        return [self.classes[i] for i in self.decision_function(images).argmax(axis=1)]

    def _scores(self, X: np.ndarray) -> np.ndarray:
        expected = getattr(self.estimator, "n_features_in_", X.shape[1])
        if X.shape[1] != expected:
            raise CnnlabError(f"the classifier expects {expected} features at {self.layer} of {self.backbone}, the model "
                              f"gives {X.shape[1]}: not the backbone it was trained on")
        s = np.asarray(self.estimator.decision_function(X), dtype=np.float64)
        return np.stack([-s, s], axis=1) if s.ndim == 1 else s  # two classes: sklearn gives one column

    @staticmethod
    def _proba(scores: np.ndarray) -> np.ndarray:
        return torch.from_numpy(scores).softmax(dim=1).numpy()

    def top(self, images: ImagesLike, k: int = 5, batch_size: int = 32, prepared: bool | None = None,
            empty_ok: bool = False) -> tuple[list[dict], list[tuple]]:
        """classify's JSON for the learned classes: ({"image", "top": [{"index", "label", "prob"}]}, skipped);
        `empty_ok`: no readable image gives no rows instead of an error."""
        X, names, skipped = self.features(images, batch_size, prepared, empty_ok)
        if not names:
            return [], skipped
        scores = self._scores(X)
        beta = self.inverse_temperature
        proba = self._proba(scores * beta) if beta is not None else None
        results = []
        for j, (name, s) in enumerate(zip(names, scores)):
            order = np.argsort(-s)[:k]
            results.append({"image": name, "top": [
                {"index": int(i), "label": self.classes[i], "prob": float(proba[j, i]) if beta is not None else None,
                 "score": float(s[i])} for i in order]})
        return results, skipped

    @property
    def probability(self) -> str:
        """What `prob` in `top` is."""
        return CALIBRATION if self.inverse_temperature is not None else (
            "none: a classifier saved before calibration; `score` is the SVM's decision value")

    # ------------------------------------------------------------------------------------------------ storage
    def meta(self) -> dict:
        return {"format": FORMAT, "classes": self.classes, "layer": self.layer,
                "backbones": [b.spec if isinstance(b, Backbone) else b for b in self._backbones],
                "weights": self.weights, "pool": self.pool, "flip": self.flip, "scaling": self.scaling,
                "precision": self.precision, "inverse_temperature": self.inverse_temperature,
                "probability": self.probability}

    def save(self, folder: str | os.PathLike) -> Path:
        import skops.io as sio

        folder = Path(folder)
        if any(s is None for s in self.meta()["backbones"]):
            note = "a wrapped module: pass it again to TransferClassifier.load(folder, model=...)"
        else:
            note = None
        with atomic_path(folder / ESTIMATOR_FILE) as tmp:
            sio.dump(self.estimator, tmp)
        write_json(folder / META_FILE, self.meta() | ({"note": note} if note else {}))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, model: Backbone | Sequence[Backbone] | None = None,
             device: str = "cpu") -> "TransferClassifier":
        """From a `cnnlab transfer` run directory; `model` supplies a wrapped module that no spec can rebuild."""
        import skops.io as sio

        from ..core.models import is_model_dir

        folder = Path(folder)
        if is_model_dir(folder):  # a trained head or a fine-tuned network
            return NetworkClassifier(load_model(str(folder), device=device))
        meta_path, est_path = folder / META_FILE, folder / ESTIMATOR_FILE
        if not folder.exists():
            raise CnnlabError(f"no run directory {str(folder)!r}: --model takes what `cnnlab transfer` saved; to "
                              f"classify with a network by name, use --backbone {folder}")
        if not meta_path.is_file() or not est_path.is_file():
            raise CnnlabError(f"{folder} holds no saved classifier (expected {META_FILE} and {ESTIMATOR_FILE} from "
                              "`cnnlab transfer`)")
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as exc:
            raise CnnlabError(f"cannot read {meta_path}: {exc}") from None
        needed = {"format", "classes", "layer", "backbones", "weights", "pool", "flip", "scaling", "precision"}
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or not needed <= set(meta):
            raise CnnlabError(f"{meta_path} is not a cnnlab classifier (expected format {FORMAT} with keys "
                              f"{', '.join(sorted(needed))})")
        untrusted = sio.get_untrusted_types(file=est_path)
        if untrusted:  # only scikit-learn's and numpy's own types are rebuilt; anything else is refused
            raise CnnlabError(f"{est_path} holds types cnnlab does not load: {', '.join(untrusted)}")
        try:
            estimator = sio.load(est_path, trusted=[])
        except Exception as exc:
            raise CnnlabError(f"cannot read {est_path}: {exc.__class__.__name__}: {exc}") from None
        n_classes = len(getattr(estimator, "classes_", []))
        if n_classes != len(meta["classes"]) and not (n_classes == 2 and len(meta["classes"]) == 2):
            raise CnnlabError(f"{est_path} predicts {n_classes} classes but {meta_path} names {len(meta['classes'])}")
        beta = meta.get("inverse_temperature")
        if beta is not None and not (isinstance(beta, (int, float)) and beta > 0):
            raise CnnlabError(f"{meta_path}: inverse_temperature must be a positive number, got {beta!r}")
        backbones, layer = meta["backbones"], meta["layer"].split(JOIN)  # the file spells a group 'a+b'
        if model is not None:
            backbones = [model] if isinstance(model, Backbone) else list(model)
        elif any(b is None for b in backbones):
            raise CnnlabError(f"{folder} was trained on a wrapped module: pass it as model=")
        if backbones == [bow.NAME]:
            vocabulary = np.load(folder / VOCABULARY_FILE, allow_pickle=False)
            return BowClassifier(estimator, meta["classes"], layer, vocabulary,
                                 bow.BowSettings.from_dict(meta["bow"]), meta["scaling"], beta)
        return cls(estimator, meta["classes"], layer, backbones, meta["weights"], meta["pool"], meta["flip"],
                   meta["scaling"], meta["precision"], device, beta)


class BowClassifier(TransferClassifier):
    """The `sift-bow` classifier: its features are the SIFT pyramid over the vocabulary it was trained with
    (saved beside it as vocabulary.npy)."""

    def __init__(self, estimator, classes: Sequence[str], layer: str | Sequence[str], vocabulary: np.ndarray,
                 settings: bow.BowSettings, scaling: str = "power-l2", inverse_temperature: float | None = None):
        super().__init__(estimator, classes, layer, [bow.NAME], "none", "none", False, scaling, "fp32", "cpu",
                         inverse_temperature)
        self.vocabulary, self.settings = vocabulary, settings

    def features(self, images: ImagesLike, batch_size: int = 32, prepared: bool | None = None,
                 empty_ok: bool = False) -> tuple[np.ndarray, list[str], list[tuple]]:
        from ..core.inputs import sources

        names, skipped, described = [], [], []
        for src in sources(images)[0]:
            try:
                described.append(bow.describe(src.decode(), self.settings))
                names.append(src.name)
            except CnnlabError as exc:
                skipped.append((src.name, str(exc)))
        if not names:
            if empty_ok:
                return np.zeros((0, 0), np.float32), [], skipped
            raise CnnlabError("no readable input images" + (f" ({skipped[0][1]})" if skipped else ""))
        rows = layer_matrix(bow.features(described, self.vocabulary, self.settings), self.parts, self.scaling)
        return rows, names, skipped

    def meta(self) -> dict:
        return super().meta() | {"bow": self.settings.to_dict()}

    def save(self, folder: str | os.PathLike) -> Path:
        folder = super().save(folder)
        with atomic_path(folder / VOCABULARY_FILE) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, self.vocabulary, allow_pickle=False)
        return folder


class NetworkClassifier:
    """A trained head or fine-tuned network as the transfer run's classifier: the same calls as
    `TransferClassifier`, its scores the network's logits; saved as a model directory that `load_model` (and
    `--backbone RUN_DIR` in every command) reads."""

    def __init__(self, backbone: Backbone, meta: dict | None = None):
        self.backbone_model, self.meta_extra = backbone, dict(meta or {})
        self.classes, self.layer, self.backbone = list(backbone.labels), "logits", backbone.name

    def _logits(self, images: ImagesLike, batch_size: int = 32, prepared: bool | None = None):
        b, names, skipped, out = self.backbone_model, [], [], []
        for chunk, x, bad in batches(images, b.preprocess, batch_size, prepared):
            names += chunk
            skipped += bad
            if x is not None:
                with torch.inference_mode():
                    out.append(b(x.to(b.device)).float().cpu())
        return (torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), np.float32)), names, skipped

    probability = "softmax of the network's logits"

    def decision_function(self, images: ImagesLike) -> np.ndarray:
        return self._logits(images)[0]

    def predict_proba(self, images: ImagesLike) -> np.ndarray:
        return TransferClassifier._proba(self.decision_function(images).astype(np.float64))

    def predict(self, images: ImagesLike) -> list[str]:
        return [self.classes[i] for i in self.decision_function(images).argmax(axis=1)]

    def top(self, images: ImagesLike, k: int = 5, batch_size: int = 32, prepared: bool | None = None,
            empty_ok: bool = False) -> tuple[list[dict], list[tuple]]:
        logits, names, skipped = self._logits(images, batch_size, prepared)
        if not names and not empty_ok:
            raise CnnlabError("no readable input images" + (f" ({skipped[0][1]})" if skipped else ""))
        proba = TransferClassifier._proba(logits.astype(np.float64))
        return [{"image": n, "top": [{"index": int(i), "label": self.classes[i], "prob": float(p[i])}
                                     for i in np.argsort(-p)[:k]]} for n, p in zip(names, proba)], skipped

    def save(self, folder: str | os.PathLike) -> Path:
        from ..core.models import save_model

        return save_model(self.backbone_model, folder, **self.meta_extra)
