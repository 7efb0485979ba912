"""A head on frozen features (a matrix): the fast path of `--finetune none` — a logistic regression fitted to
convergence (`linear`), or an MLP trained over the recipe's schedule (`mlp`)."""
from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..core.models import make_head
from .recipe import Recipe, better, check_validation, schedule

LINEAR_CS = (0.01, 0.1, 1.0, 10.0)  # the logistic-regression head's C, chosen by cross-validation on the training split


def _fit_logistic(X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> tuple[nn.Linear, dict]:
    """A multinomial logistic regression fitted to convergence (L-BFGS), its C chosen by cross-validation on these
    rows; returned as the linear layer it is."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    folds = int(min(5, np.bincount(y, minlength=n_classes)[np.unique(y)].min()))
    base = LogisticRegression(max_iter=2000, tol=1e-6)
    if folds >= 2:
        search = GridSearchCV(base, {"C": list(LINEAR_CS)}, cv=StratifiedKFold(folds, shuffle=True,
                                                                                random_state=seed))
        model = search.fit(X, y).best_estimator_
        C = float(search.best_params_["C"])
    else:  # one image of some class: nothing to cross-validate
        C, model = 1.0, base.fit(X, y)
    layer = nn.Linear(X.shape[1], n_classes)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.fill_(-1e4)  # a class absent from the training rows is never predicted
        coef = torch.from_numpy(np.asarray(model.coef_, np.float32))
        icpt = torch.from_numpy(np.asarray(model.intercept_, np.float32))
        if coef.shape[0] == 1:  # two classes: scikit-learn keeps one row (the second class's log-odds)
            coef, icpt = torch.cat([-coef / 2, coef / 2]), torch.cat([-icpt / 2, icpt / 2])
        layer.weight[model.classes_] = coef
        layer.bias[model.classes_] = icpt
    return layer, {"C": C, "iterations": int(np.max(model.n_iter_))}


def _evaluate_rows(head: nn.Module, X: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        logits = head(X)
        return float(nn.functional.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


def train_head(X: np.ndarray, y: np.ndarray, val: np.ndarray, n_classes: int, kind: str, recipe: Recipe,
               hidden: int = 512, on_epoch: Callable[[dict], None] | None = None) -> tuple[nn.Module, list[dict], int]:
    """A head on frozen features X (N,D), rows `val` held out to report (and, with select='best', choose):
    `linear` is a logistic regression fitted to convergence (one row of history); `mlp` is trained by the
    recipe's optimizer over a warm-up + cosine schedule, its final weights kept unless select='best'. Returns the
    head (eval mode), the history and the selected epoch; `on_epoch` sees each row as it is done."""
    check_validation(recipe, val)
    train = np.setdiff1d(np.arange(len(X)), val)
    Xt, yt = torch.from_numpy(np.asarray(X, np.float32)), torch.from_numpy(np.asarray(y)).long()
    has_val = len(val) > 0
    if kind == "linear":
        head, info = _fit_logistic(np.asarray(X, np.float32)[train], np.asarray(y)[train], n_classes, recipe.seed)
        loss, _ = _evaluate_rows(head, Xt[train], yt[train])
        val_loss, acc = _evaluate_rows(head, Xt[val], yt[val]) if has_val else (None, None)
        row = {"epoch": 1, "loss": loss, "val_loss": val_loss, "val_accuracy": acc, **info}
        if on_epoch is not None:
            on_epoch(row)
        return head.eval(), [row], 1
    g = torch.Generator().manual_seed(recipe.seed)
    head = make_head("mlp", X.shape[1], n_classes, hidden, recipe.seed)
    epochs = recipe.epochs * 10  # a head on cached features costs little per epoch: more of them
    steps = math.ceil(len(train) / recipe.batch_size)
    opt = torch.optim.AdamW(head.parameters(), lr=recipe.peak_lr("adamw"), weight_decay=0.05)
    sched = schedule(opt, steps * max(1, round(recipe.warmup_epochs)), steps * epochs)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    best, best_state, history = None, None, []
    for epoch in range(epochs):
        head.train()
        order = torch.from_numpy(train)[torch.randperm(len(train), generator=g)]
        total = 0.0
        for idx in order.split(recipe.batch_size):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(recipe.seed * 100_003 + epoch * 1009 + int(idx[0]))  # dropout, seeded
                loss = loss_fn(head(Xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        head.eval()
        val_loss, acc = _evaluate_rows(head, Xt[val], yt[val]) if has_val else (None, None)
        history.append({"epoch": epoch + 1, "loss": total / len(train), "val_loss": val_loss, "val_accuracy": acc})
        if on_epoch is not None:
            on_epoch(history[-1])
        if recipe.select == "best" and better(history[-1], best):
            best, best_state = history[-1], copy.deepcopy(head.state_dict())
    if best_state is not None:
        head.load_state_dict(best_state)
    return head.eval(), history, (best or history[-1])["epoch"]
