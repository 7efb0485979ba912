"""Linear SVMs on features: the (layer × C) grid, with C and layer chosen by k-fold CV on the training split only."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..core.errors import CnnlabError

SCALINGS = ("power-l2", "l2", "standard", "none")


def normalize(X: np.ndarray, scaling: str) -> np.ndarray:
    """The stateless part of the scaling, applied per row (so it cannot leak test statistics)."""
    if scaling not in SCALINGS:
        raise CnnlabError(f"unknown scaling {scaling!r}; choose from {', '.join(SCALINGS)}")
    X = X.astype(np.float32, copy=False)
    if scaling == "power-l2":  # signed square root, then L2: tames bursty activations (Perronnin et al. 2010)
        X = np.sign(X) * np.sqrt(np.abs(X))
    if scaling in ("power-l2", "l2"):
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return X


def layer_matrix(features: dict[str, np.ndarray], layer: str | Sequence[str], scaling: str) -> np.ndarray:
    """Features for a cut point, or a group of them concatenated, each normalized on its own."""
    parts = group(layer)
    missing = [p for p in parts if p not in features]
    if missing:
        raise CnnlabError(f"no features for {', '.join(missing)}")
    mats = [normalize(features[p], scaling) for p in parts]
    X = np.hstack(mats) if len(mats) > 1 else mats[0]
    return X / np.sqrt(len(mats)) if scaling in ("power-l2", "l2") and len(mats) > 1 else X


def group(layer: str | Sequence[str]) -> list[str]:
    """A cut point's name, or a group of them, as a list."""
    return [layer] if isinstance(layer, str) else list(layer)


def make_svm(C: float, scaling: str, seed: int = 0):
    """LinearSVC, behind a StandardScaler (fit on the training data only) when scaling='standard'."""
    from sklearn.pipeline import make_pipeline  # scikit-learn loads when an SVM is fitted, not on import
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    svm = LinearSVC(C=C, dual="auto", max_iter=5000, random_state=seed)
    return make_pipeline(StandardScaler(), svm) if scaling == "standard" else svm


@dataclass
class GridResult:
    grid: list[dict]  # {"layer", "C", "cv_accuracy", "test_accuracy"}
    selected: dict
    model: object  # the selected classifier, refit on the whole training split
    test_pred: np.ndarray
    fit_s: float
    inverse_temperature: float  # softmax(β · the selected SVM's decision values): its calibrated probabilities


def cv_score(X: np.ndarray, y: np.ndarray, C: float, scaling: str, folds: int, seed: int, n_jobs: int) -> float:
    """Mean k-fold accuracy; it only ever sees the rows it is given (the training split)."""
    n_min = np.bincount(y).min() if len(y) else 0
    k = min(folds, int(n_min))
    if k < 2:
        raise CnnlabError("cross-validation needs at least 2 training images in every class")
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return float(cross_val_score(make_svm(C, scaling, seed), X, y, cv=cv, n_jobs=n_jobs).mean())


CALIBRATION = ("temperature scaling of the SVM's decision values (scikit-learn's CalibratedClassifierCV), fitted on "
               "out-of-fold decision values of the training split")


def calibrate(X: np.ndarray, y: np.ndarray, C: float, scaling: str, folds: int, seed: int) -> float:
    """The inverse temperature β that makes softmax(β · decision values) calibrated probabilities of the SVM (C,
    scaling) on these training rows: fitted, as scikit-learn's CalibratedClassifierCV(method="temperature",
    ensemble=False) does, on k-fold out-of-fold decision values. One scalar for every class, so the ranking — and
    the prediction — stays the SVM's."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import StratifiedKFold

    k = max(2, min(folds, int(np.bincount(y)[np.unique(y)].min())))
    cal = CalibratedClassifierCV(make_svm(C, scaling, seed), method="temperature", ensemble=False,
                                 cv=StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)).fit(X, y)
    return float(cal.calibrated_classifiers_[0].calibrators[0].beta_)  # the one calibrator temperature fits


def run_grid(features: dict[str, np.ndarray], y: np.ndarray, train: np.ndarray, test: np.ndarray,
             layers: Sequence[str | Sequence[str]], Cs: list[float], scaling: str = "power-l2", folds: int = 5,
             seed: int = 0, n_jobs: int = 1, names: Sequence[str] | None = None) -> GridResult:
    """Every (layer, C): CV accuracy on train and test accuracy; select by CV, report the selection's test score.
    A layer is a cut point or a group of them (concatenated); `names` are how rows name them (default 'a+b')."""
    t0 = time.perf_counter()
    names = list(names or ["+".join(group(layer)) for layer in layers])
    grid, models = [], {}
    for layer, name in zip(layers, names):
        X = layer_matrix(features, layer, scaling)
        for C in Cs:
            cv = cv_score(X[train], y[train], C, scaling, folds, seed, n_jobs)
            model = make_svm(C, scaling, seed).fit(X[train], y[train])
            acc = float((model.predict(X[test]) == y[test]).mean()) if len(test) else float("nan")
            grid.append({"layer": name, "C": C, "cv_accuracy": cv, "test_accuracy": acc})
            models[(name, C)] = model, layer
    # Ties go to the smaller C (stronger regularization), then to the earlier layer in the list.
    best = max(grid, key=lambda r: (round(r["cv_accuracy"], 10), -r["C"], -names.index(r["layer"])))
    model, layer = models[(best["layer"], best["C"])]
    X = layer_matrix(features, layer, scaling)
    pred = model.predict(X[test])
    beta = calibrate(X[train], y[train], best["C"], scaling, folds, seed)
    return GridResult(grid, dict(best), model, pred, time.perf_counter() - t0, beta)
