"""A trained head and a fine-tuned network are models: saved as a run directory that `load_model` and every command's
`--backbone` read, scoring what the run reported; a fine-tuning killed with SIGKILL resumes to the same weights."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.cli import main
from cnnlab.core.models import MODEL_WEIGHTS
from cnnlab.transfer.finetune import CHECKPOINT, param_groups
from cnnlab.transfer.recipe import Recipe, parse_finetune

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def strokes(tmp_path_factory):
    """3 classes × 10 noisy 28×28 grey 'digits' (a horizontal bar, a vertical bar, a ring) for the shipped
    `mnist_cnn` to be transferred to."""
    root = tmp_path_factory.mktemp("strokes")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:28, :28]
    for name in ("bar", "pole", "ring"):
        (root / name).mkdir()
        for i in range(10):
            cy, cx = 14 + rng.integers(-3, 4, 2)
            shape = {"bar": (abs(yy - cy) < 3) & (abs(xx - cx) < 9), "pole": (abs(xx - cx) < 3) & (abs(yy - cy) < 9),
                     "ring": abs(np.hypot(yy - cy, xx - cx) - 7) < 2}[name]
            img = shape * 220 + rng.normal(0, 15, (28, 28))
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def _accuracy(backbone, paths):
    truth = [backbone.labels.index(p.split("/")[-2]) for p in paths]
    pred = [r["top"][0]["index"] for r in cnnlab.classify(backbone, paths, topk=1).results]
    return float(np.mean(np.array(pred) == np.array(truth)))


@pytest.mark.parametrize("head,finetune", [("linear", "none"), ("mlp", "last:2")])
def test_a_trained_run_is_a_backbone_every_command_takes(strokes, tmp_path, capsys, head, finetune):
    run = tmp_path / "run"
    seen = []
    trained = {"epochs": 3} if (head, finetune) != ("linear", "none") else {}  # a logistic regression has none
    res = cnnlab.transfer(strokes, model="mnist_cnn", split="random:6", head=head, finetune=finetune, **trained,
                          workers=0, on_epoch=seen.append)
    assert seen == res.summary()["history"] == res.record.history  # the validation curve, each epoch as it was done
    res.save(run)
    model = cnnlab.load_model(str(run))
    assert model.labels == ("bar", "pole", "ring") and model.spec == str(run)
    # read back, the classifier scores on the test split what the run reported
    assert _accuracy(model, res.split["test"]) == pytest.approx(res.selected["test_accuracy"])
    image = res.split["test"][0]
    assert main(["classify", image, "--backbone", str(run), "--json", "--quiet"]) == 0
    top = json.loads(capsys.readouterr().out)["results"][0]["top"][0]
    assert top["label"] in model.labels
    assert main(["classify", image, "--model", str(run), "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["top"][0]["label"] == top["label"]
    assert main(["explain", "saliency", image, "--backbone", str(run), "--method", "gradcam", "--json", "--quiet",
                 "--out", str(tmp_path / "sal")]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["target"] == top["index"]


def test_fine_tuning_trains_only_what_it_says_with_lower_rates_below():
    model = cnnlab.load_model("mnist_cnn")
    assert parse_finetune("all", 4) == 4 and parse_finetune("none", 4) == 0
    with pytest.raises(cnnlab.CnnlabError, match="last:N with 1 ≤ N ≤ 4"):
        parse_finetune("last:9", 4)
    groups = param_groups(model, 1, Recipe(lr=1e-3, layer_decay=0.5))
    assert [(g["unit"], g["lr"]) for g in groups] == [("fc", 1e-3), ("hidden.1", 5e-4)]
    trainable = {n for n, p in model.net.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.net.named_parameters() if n.split(".")[0] in ("fc", "hidden")}


def test_fine_tuning_killed_with_sigkill_resumes_to_the_same_weights(strokes, tmp_path):
    args = ["transfer", "--data", str(strokes), "--backbone", "mnist_cnn", "--split", "random:6", "--head", "linear",
            "--finetune", "all", "--epochs", "6", "--workers", "0", "--quiet"]
    full = subprocess.run([sys.executable, "-m", "cnnlab", *args, "--out", str(tmp_path / "full")], env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-1500:]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", *args, "--out", str(killed)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / CHECKPOINT
    t0 = time.time()
    while not (ckpt.is_file() and torch.load(ckpt, weights_only=True)["state"]["epoch"] >= 2):
        assert proc.poll() is None and time.time() - t0 < 300, "finished (or timed out) before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped = torch.load(ckpt, weights_only=True)["state"]["epoch"]
    assert 2 <= stopped < 6
    resumed = subprocess.run([sys.executable, "-m", "cnnlab", *args, "--out", str(killed), "--resume"], env=ENV,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    a = torch.load(tmp_path / "full" / MODEL_WEIGHTS, weights_only=True)
    b = torch.load(killed / MODEL_WEIGHTS, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_torchrun_processes_fine_tune_the_same_model_as_one(strokes, tmp_path):
    """Each process takes its half of every global batch and DDP averages the gradients: in fp32 the weights agree
    to summation order (atol 1e-5; this network has no BatchNorm, whose batch statistics would differ; under bf16
    each process rounds its own partial gradient sums, and Adam magnifies that where gradients are near 0)."""
    from .conftest import one_and_two_processes

    one_and_two_processes(["transfer", "--data", str(strokes), "--backbone", "mnist_cnn", "--split", "random:6",
                           "--head", "linear", "--finetune", "last:3", "--epochs", "3", "--train-batch-size", "4",
                           "--precision", "fp32", "--workers", "0", "--quiet"], tmp_path, port=29587)
    a = torch.load(tmp_path / "one" / MODEL_WEIGHTS, weights_only=True)
    b = torch.load(tmp_path / "two" / MODEL_WEIGHTS, weights_only=True)
    assert a.keys() == b.keys()
    moved = torch.load(tmp_path / "one" / MODEL_WEIGHTS, weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    base = cnnlab.load_model("mnist_cnn").net.state_dict()
    assert any(not torch.equal(moved[k], base[k]) for k in base if k in moved and moved[k].shape == base[k].shape)


def _tiny_bn_backbone(seed: int = 0):
    """A 3-class conv net with BatchNorm, wrapped like any user's module: units body.0, body.1 (BatchNorm), mid.0,
    mid.1 (BatchNorm) and the head fc."""
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential()
    net.add_module("body", nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                         nn.AdaptiveAvgPool2d(4), nn.Flatten()))
    net.add_module("mid", nn.Sequential(nn.Linear(128, 16), nn.BatchNorm1d(16), nn.ReLU()))
    net.add_module("fc", nn.Linear(16, 3))
    return cnnlab.wrap(net.eval(), mean=[0.5] * 3, std=[0.25] * 3, input_size=28, labels=["bar", "pole", "ring"])


def _paths(strokes):
    paths = sorted(strokes.glob("*/*.png"))
    return paths, np.array([("bar", "pole", "ring").index(p.parent.name) for p in paths])


def test_the_kept_weights_are_the_last_trained_and_batchnorm_stays_frozen(strokes):
    from cnnlab.transfer.finetune import finetune

    paths, labels = _paths(strokes)
    val, train = np.arange(0, 30, 5), np.setdiff1d(np.arange(30), np.arange(0, 30, 5))
    model = _tiny_bn_backbone()
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    history, kept = finetune(model, paths, labels, train, val, 4, Recipe(epochs=4, lr=0.05, workers=0))
    after = model.net.state_dict()
    assert kept == 4 and [r["epoch"] for r in history] == [0, 1, 2, 3, 4]
    assert history[-1]["val_loss"] < history[0]["val_loss"]  # training improved the validation loss...
    assert not torch.equal(after["fc.weight"], before["fc.weight"])  # ...and its weights are the ones returned
    for k in ("body.1.running_mean", "body.1.running_var", "mid.1.running_mean"):  # ImageNet-style statistics kept
        assert torch.equal(after[k], before[k]), k
    assert not model.training and all(p.is_contiguous() for p in model.net.parameters())
    # the final weights score the last row's validation loss (they are that epoch's, not a copy of an earlier one)
    from cnnlab.transfer.finetune import Images, evaluate

    loader = torch.utils.data.DataLoader(Images([paths[i] for i in val], labels[val], model, False), batch_size=8)
    assert evaluate(model, loader)[0] == pytest.approx(history[-1]["val_loss"], rel=1e-5)
    trained = _tiny_bn_backbone()
    finetune(trained, paths, labels, train, val, 4, Recipe(epochs=1, lr=0.05, batchnorm="train", workers=0))
    assert not torch.equal(trained.net.state_dict()["body.1.running_mean"], before["body.1.running_mean"])


def test_select_best_takes_the_lowest_validation_loss_and_ties_go_to_the_later_epoch(strokes):
    from cnnlab.transfer.finetune import finetune

    paths, labels = _paths(strokes)
    val, train = np.arange(0, 30, 5), np.setdiff1d(np.arange(30), np.arange(0, 30, 5))
    # a learning rate too small to move any weight: every epoch ties the starting point, and the later one is kept
    history, kept = finetune(_tiny_bn_backbone(), paths, labels, train, val, 2,
                             Recipe(epochs=3, lr=1e-30, weight_decay=0, select="best", workers=0))
    assert len({r["val_loss"] for r in history}) == 1 and kept == 3
    model = _tiny_bn_backbone()
    history, kept = finetune(model, paths, labels, train, val, 2,
                             Recipe(epochs=4, lr=0.05, select="best", workers=0))
    best = min(r["val_loss"] for r in history)
    assert kept == max(r["epoch"] for r in history if r["val_loss"] == best) and kept > 0
    with pytest.raises(cnnlab.CnnlabError, match="needs --select best"):
        Recipe(patience=2)
    from cnnlab.transfer.heads import train_head

    with pytest.raises(cnnlab.CnnlabError, match="give --val-fraction > 0"):  # nothing to choose on: said
        train_head(np.zeros((6, 4), np.float32), np.arange(6) % 3, np.array([], int), 3, "mlp", Recipe(select="best"))


def test_a_linear_head_is_a_logistic_regression_fitted_to_convergence():
    """The head-only path equals scikit-learn's logistic regression at the C it chose by cross-validation."""
    from sklearn.linear_model import LogisticRegression

    from cnnlab.transfer.heads import train_head

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(90, 5)) + np.repeat(np.eye(3, 5) * 2, 30, axis=0)).astype(np.float32)
    y = np.repeat(np.arange(3), 30)
    val = np.arange(0, 90, 10)
    head, history, kept = train_head(X, y, val, 3, "linear", Recipe())
    C, train = history[0]["C"], np.setdiff1d(np.arange(90), val)
    ref = LogisticRegression(C=C, max_iter=2000, tol=1e-6).fit(X[train], y[train])
    with torch.no_grad():
        probs = torch.softmax(head(torch.from_numpy(X)), 1).numpy()
    np.testing.assert_allclose(probs, ref.predict_proba(X), atol=1e-5)
    assert kept == 1 and history[0]["val_accuracy"] == pytest.approx((ref.predict(X[val]) == y[val]).mean())


def test_ema_keeps_the_moving_average_of_each_steps_weights(strokes, monkeypatch):
    """--ema d keeps e_T, with e_1 = w_1 and e_t = d·e_(t-1) + (1-d)·w_t over the weights after each optimizer
    step (recorded here by wrapping the optimizer's step), and validates those weights."""
    from cnnlab.transfer.finetune import Images, evaluate, finetune

    paths, labels = _paths(strokes)
    val, train = np.arange(0, 30, 5), np.setdiff1d(np.arange(30), np.arange(0, 30, 5))
    model, steps = _tiny_bn_backbone(), []
    step = torch.optim.SGD.step

    def recording(self, *a, **k):
        out = step(self, *a, **k)
        steps.append({n: p.detach().clone() for n, p in model.net.named_parameters()})
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", recording)
    decay = 0.8
    history, kept = finetune(model, paths, labels, train, val, 4, Recipe(epochs=3, lr=0.05, ema=decay, workers=0))
    assert kept == 3 and len(steps) == 3 * (len(train) // 32 or 1)
    average = steps[0]
    for w in steps[1:]:
        average = {n: decay * average[n] + (1 - decay) * w[n] for n in w}
    for n, p in model.net.named_parameters():
        torch.testing.assert_close(p, average[n], atol=1e-6, rtol=1e-5)
        assert len(steps) == 1 or not torch.equal(p, steps[-1][n]) or n.startswith("body.1")  # not the last step's
    loader = torch.utils.data.DataLoader(Images([paths[i] for i in val], labels[val], model, False), batch_size=8)
    assert evaluate(model, loader)[0] == pytest.approx(history[-1]["val_loss"], rel=1e-5)
    with pytest.raises(cnnlab.CnnlabError, match="decay per step"):
        Recipe(ema=1.0)


def test_an_interrupted_ema_run_resumes_to_the_same_weights(strokes, tmp_path):
    """The checkpoint holds the moving average too: stopped after its first epoch and resumed, the run keeps the
    weights of the uninterrupted one."""
    from cnnlab.transfer.finetune import finetune

    paths, labels = _paths(strokes)
    val, train = np.arange(0, 30, 5), np.setdiff1d(np.arange(30), np.arange(0, 30, 5))
    recipe = Recipe(epochs=3, lr=0.05, ema=0.5, batch_size=8, workers=0)
    whole = _tiny_bn_backbone()
    finetune(whole, paths, labels, train, val, 4, recipe)

    class Stop(Exception):
        pass

    def stop_at_2(row):
        if row["epoch"] == 2:  # raised before epoch 2's checkpoint: epoch 1's is on disk
            raise Stop

    (tmp_path / "run").mkdir()
    with pytest.raises(Stop):
        finetune(_tiny_bn_backbone(), paths, labels, train, val, 4, recipe, run=tmp_path / "run", on_epoch=stop_at_2)
    resumed = _tiny_bn_backbone()
    history, _ = finetune(resumed, paths, labels, train, val, 4, recipe, run=tmp_path / "run", resume=True)
    assert [r["epoch"] for r in history] == [0, 1, 2, 3]
    a, b = whole.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_diverged_fine_tuning_says_so_in_one_line(strokes, capsys):
    """Kept weights that validate far worse than the fitted head they started from are named, not returned as a
    plausible result: one warning line on stderr and in the summary; a run that trained normally has none."""
    from cnnlab.transfer.finetune import diverged

    args = ["transfer", "--data", str(strokes), "--backbone", "mnist_cnn", "--split", "random:6", "--head", "linear",
            "--finetune", "all", "--epochs", "3", "--train-batch-size", "4", "--workers", "0", "--quiet", "--json"]
    assert main([*args, "--lr", "5"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out)
    lines = [line for line in out.err.splitlines() if line.startswith("warning: fine-tuning diverged")]
    assert len(lines) == 1 and summary["warnings"] == [lines[0].removeprefix("warning: ")]
    assert "lower --lr or --layer-decay" in lines[0]
    assert main([*args, "--lr", "0.05"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []
    start = {"epoch": 0, "val_loss": 0.4, "val_accuracy": 0.9}
    assert diverged([start, {"epoch": 1, "val_loss": 0.81, "val_accuracy": 0.89}], 1) is not None
    assert diverged([start, {"epoch": 1, "val_loss": 0.79, "val_accuracy": 0.5}], 1) is None  # loss not doubled
    assert diverged([start, {"epoch": 1, "val_loss": 2.0, "val_accuracy": 0.9}], 1) is None  # accuracy held
    assert diverged([start, {"epoch": 1, "val_loss": 5.0, "val_accuracy": 0.1}], 0) is None  # the head was kept
