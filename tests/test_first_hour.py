"""A new user's first hour with their own data and model: every impossible request is one line before any work,
what comes back is what it claims (blocks counted as blocks, calibrated probabilities, seeded random weights), and
every file and `--json` cnnlab writes is strict JSON. Data and models are made here: no ../shared needed."""
import collections
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.cli import main
from cnnlab.core.errors import CnnlabError


def _colours(root: Path, per_class: int = 12, classes=("red", "green", "blue"), size: int = 28) -> Path:
    """`per_class` noisy squares of each colour: a dataset any network separates."""
    rng = np.random.default_rng(0)
    base = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200), "grey": (128, 128, 128)}
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.clip(np.array(base[name]) + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return _colours(tmp_path_factory.mktemp("small") / "data")


def _strict(text: str):
    """json.loads that refuses NaN and ±Infinity (what strict parsers do)."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")
    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------------------------ refused before any work
@pytest.fixture
def no_work(monkeypatch):
    """Loading a model or extracting a feature fails the test: what is refused must be refused before either."""
    import cnnlab.jobs.transfer as job
    from cnnlab.transfer import routes

    def boom(*a, **k):
        raise AssertionError("work started before the request was refused")
    monkeypatch.setattr(job, "load_backbones", boom)
    monkeypatch.setattr(routes, "extract_features", boom)


@pytest.mark.parametrize("argv, message", [
    ([], "class 'blue' has 12 images; --split random:100 takes 100 per class for training plus at least one for the "
         "test set: pass --split random:K with K < 12"),
    (["--split", "random:12"], "class 'blue' has 12 images"),
    (["--split", "random:1", "--head", "linear"], "class 'blue' keeps no training image once --val-fraction 0.1 "
                                                  "holds 1 of its 1 out"),
    (["--split", "random:1"], "the SVM's cross-validation (--folds) needs at least 2 per class"),
    (["--seed", "10000000000000"], "--seed must be in [0, 4294967295], got 10000000000000"),
    (["--seed", "-1"], "--seed must be in [0, 4294967295]"),
    (["--ema", "0.9", "--head", "mlp"], "--ema is read by --finetune last:N|all, not by the mlp head"),
    (["--layer-decay", "0.5", "--head", "mlp"], "--layer-decay is read by --finetune"),
    (["--epochs", "3"], "--epochs is read by --head mlp or --finetune last:N|all, not by the SVM grid"),
    (["--epochs", "3", "--head", "linear"], "--epochs is read by --head mlp or --finetune"),
    (["--C", "1", "--head", "linear"], "--C is read by the SVM grid (--head svm), not by the linear head"),
    (["--folds", "3", "--finetune", "all"], "--folds is read by the SVM grid"),
    (["--layers", "block5", "--head", "mlp"], "--layers is read by the SVM grid"),
    (["--resume", "--out", "OUT"], "--resume is read by --finetune last:N|all, not by the SVM grid"),
    (["--val-fraction", "0.2"], "--val-fraction is read by --head linear or --head mlp or --finetune"),
    (["--finetune", "last:x"], "--finetune must be none, all or last:N (N ≥ 1 blocks), not 'last:x'"),
    (["--finetune", "last:1", "--backbone", "efficientnet_lite0+efficientnet_lite1"],
     "--finetune trains one network: name a single --backbone"),
    (["--head", "mlp", "--backbone", "sift-bow"], "--head mlp trains a network; sift-bow has none"),
    (["--head", "mlp", "--select", "best", "--val-fraction", "0"], "--select best chooses on the validation split"),
    (["--finetune", "all", "--resume"], "--resume needs --out"),
    (["--head", "mlp", "--lr", "1e308"], "--lr must be in (0, 10], got 1e+308"),
    (["--head", "mlp", "--epochs", "100000000000"], "--epochs must be in [1, 10000]"),
    (["--C", "inf"], "--C must be a finite number, got inf"),
    (["--split", "random:5", "--folds", "50"], "--folds 50 needs 50 training images in every class; class 'blue' "
                                               "has 5: pass --folds 5 or fewer"),
    (["--layers", ""], "--layers needs at least one cut point"),
])
def test_an_impossible_transfer_is_one_line_before_any_work(small, tmp_path, capsys, no_work, argv, message):
    argv = [str(tmp_path / "o") if a == "OUT" else a for a in argv]
    assert main(["transfer", "--data", str(small), *argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error: ") and message in err and "\n" not in err, err


def test_finetune_with_the_default_backbone_fine_tunes_its_first(small, monkeypatch):
    import cnnlab.jobs.transfer as job

    seen = {}

    def record(model, cfg):
        seen["backbone"] = cfg.backbone
        raise CnnlabError("stop")
    monkeypatch.setattr(job, "load_backbones", record)
    with pytest.raises(CnnlabError, match="stop"):
        cnnlab.transfer(small, split="random:6", finetune="last:1")
    assert seen["backbone"] == ["efficientnet_lite0"]  # the default's first, not "a+b is for the SVM"


class _Code:  # a pickled object of a class: what weights_only=True must refuse
    pass


@pytest.mark.parametrize("kind", ["pickle", "garbage", "state_dict", "empty", "tampered"])
def test_a_tampered_finetune_checkpoint_is_one_line_before_any_work(small, tmp_path, capsys, no_work, kind):
    out = tmp_path / "run"
    out.mkdir()
    ckpt = out / "finetune.pt"
    if kind == "pickle":
        torch.save({"net": _Code()}, ckpt)
    elif kind == "garbage":
        ckpt.write_bytes(b"\x80\x04garbage" * 10)
    elif kind == "state_dict":
        torch.save(torch.nn.Linear(2, 2).state_dict(), ckpt)
    elif kind == "empty":
        ckpt.write_bytes(b"")
    else:  # every key, wrong contents
        torch.save({k: "x" for k in ("net", "optimizer", "scheduler", "state", "recipe", "n_unfrozen")}, ckpt)
    assert main(["transfer", "--data", str(small), "--split", "random:6", "--finetune", "all", "--resume",
                 "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"cnnlab: error: {ckpt}") and "\n" not in err and "fine-tuning checkpoint" in err, err


@pytest.mark.parametrize("content, message", [
    (None, "checkpoint not found"), ("dir", "is not a file"), (b"garbage", "not a readable checkpoint"),
    (_Code, "not a readable checkpoint"), ([1, 2], "it holds a list, not a dict"),
    ({"format": "other"}, "expected format 'cnnlab-x'"), ({"format": "cnnlab-x"}, "it lacks 'weights'"),
])
def test_the_one_loader_refuses_every_unreadable_file_in_one_line(tmp_path, content, message):
    from cnnlab.core.checkpoints import load_torch_file

    path = tmp_path / "f.pt"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is _Code:
        torch.save(_Code(), path)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(CnnlabError, match=message) as err:
        load_torch_file(path, "checkpoint", format="cnnlab-x", keys=("weights",))
    assert "\n" not in str(err.value)


def test_no_torch_load_outside_the_one_loader():
    src = Path(cnnlab.__file__).parent
    users = [p.relative_to(src).as_posix() for p in src.rglob("*.py") if "torch.load(" in p.read_text()]
    assert users == ["core/checkpoints.py"]


# ----------------------------------------------------------------------------------------------- strict JSON
def test_every_json_file_and_every_json_output_is_strict(small, tmp_path, capsys):
    """Each command once on tiny inputs, into a run directory; stdout (--json) and every .json / .jsonl file under
    the run directories parse with a parser that refuses NaN and Infinity."""
    digits = tmp_path / "digits"
    digits.mkdir()
    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((28, 28)) * 255).astype(np.uint8)).save(digits / f"{i}.png")
    runs = tmp_path / "runs"
    commands = [
        ["transfer", "--data", str(small), "--backbone", "mnist_cnn", "--split", "random:6", "--head", "mlp",
         "--epochs", "1", "--val-fraction", "0", "--no-cache"],  # no validation split: its numbers are null
        ["transfer", "--data", str(small), "--backbone", "mnist_cnn", "--split", "random:6", "--finetune", "all",
         "--epochs", "1", "--val-fraction", "0", "--workers", "0", "--no-cache"],
        ["transfer", "--data", str(small), "--backbone", "mnist_cnn", "--split", "random:6", "--layers",
         "pre_logits,block3", "--no-cache"],
        ["classify", str(digits), "--backbone", "mnist_cnn"],
        ["features", "--data", str(small), "--backbone", "mnist_cnn", "--layers", "pre_logits", "--no-cache"],
        ["explain", "saliency", str(digits), "--backbone", "mnist_cnn", "--metrics"],
        ["explain", "evaluate", str(digits), "--backbone", "mnist_cnn", "--methods", "gradcam,vanilla"],
        ["explain", "fool", str(digits), "--backbone", "mnist_cnn", "--target", "3", "--max-iters", "2"],
        ["explain", "classviz", "--backbone", "mnist_cnn", "--class", "3", "--iters", "2", "--judge", "mnist_cnn"],
        ["gan", "sample", "-n", "4"],
    ]
    for k, argv in enumerate(commands):
        out = runs / str(k)
        assert main([*argv, "--out", str(out), "--json", "--quiet"]) == 0, argv
        _strict(capsys.readouterr().out)
    assert main(["models", "--json"]) == 0
    _strict(capsys.readouterr().out)
    files = [p for p in runs.rglob("*") if p.suffix in (".json", ".jsonl")]
    assert len(files) >= 3 * len(commands)
    for p in files:
        text = p.read_text()
        for line in text.splitlines() if p.suffix == ".jsonl" else [text]:
            _strict(line)
    summary = _strict((runs / "0" / "metrics.json").read_text())
    assert summary["history"][-1]["val_loss"] is None and "--val-fraction 0" in summary["notes"][0]


def test_a_value_that_is_not_finite_is_written_as_null():
    from cnnlab.core.runs import dumps

    assert _strict(dumps({"a": float("nan"), "b": [np.float32("inf"), 1.5], "c": torch.tensor(float("-inf"))})) \
        == {"a": None, "b": [None, 1.5], "c": None}


# ------------------------------------------------------------------------------------------ blocks as units
def _trainable(model, n: int) -> set[str]:
    from cnnlab.transfer.finetune import param_groups
    from cnnlab.transfer.recipe import Recipe

    param_groups(model, n, Recipe())
    return {name for name, p in model.net.named_parameters() if p.requires_grad}


def _under(model, *prefixes) -> set[str]:
    return {n for n, _ in model.net.named_parameters() if any(n == p or n.startswith(p + ".") for p in prefixes)}


def test_finetune_last_n_trains_exactly_n_blocks_on_cnns_vits_and_hierarchical_models(lite0):
    import copy

    import timm
    import torchvision

    lite = cnnlab.wrap(copy.deepcopy(lite0.net), mean=(0.5,) * 3, std=(0.5,) * 3, input_size=224)
    assert _trainable(lite, 1) == _under(lite, "blocks.6", "conv_head", "bn2", "classifier")  # not bn2 alone
    assert _trainable(lite, 2) == _under(lite, "blocks.5", "blocks.6", "conv_head", "bn2", "classifier")
    vit = cnnlab.load_model("mnist_vit")
    assert _trainable(vit, 3) == _under(vit, "blocks.3", "blocks.4", "blocks.5", "norm", "head")  # three blocks
    torch.manual_seed(0)
    swin = cnnlab.wrap(timm.create_model("swin_tiny_patch4_window7_224", pretrained=False), mean=(0.5,) * 3,
                       std=(0.5,) * 3, input_size=224)
    assert _trainable(swin, 1) == _under(swin, "layers.3", "norm", "head")  # the last stage, its norm, the head
    resnet = cnnlab.wrap(torchvision.models.resnet18(), mean=(0.5,) * 3, std=(0.5,) * 3, input_size=64)
    assert _trainable(resnet, 2) == _under(resnet, "layer4.0", "layer4.1", "fc")
    every = _trainable(resnet, 8)  # all of them: the stem goes with the first block
    assert every == {n for n, _ in resnet.net.named_parameters()}


def test_a_fine_tuning_run_lists_what_it_trained(small):
    res = cnnlab.transfer(small, model="mnist_cnn", split="random:6", finetune="last:2", epochs=1, workers=0,
                          cache=False)
    trained = res.summary()["trained"]
    assert trained["head"] == "fc" and trained["blocks"] == ["hidden.1", "conv.6"]
    net = res.classifier.backbone_model.net
    assert trained["parameters"] == sum(p.numel() for n, p in net.named_parameters()
                                        if n.split(".")[0] == "fc" or n.startswith(("hidden.1.", "conv.6.")))


def test_a_class_token_cut_point_is_refused_for_a_cam_and_read_as_the_class_token_elsewhere():
    from .conftest import tiny_vit

    model = tiny_vit()
    torch.nn.init.normal_(model.net.head.weight, std=0.5)  # timm's zero head would make every map flat
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(CnnlabError, match="block1_cls reads the class token.*use block1_mean"):
        cnnlab.saliency(model, x, method="gradcam", layer="block1_cls")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # block 1's patch tokens feed block 2's attention: a map that is not flat
        patches = cnnlab.saliency(model, x, method="gradcam", layer="block1_mean").maps
    torch.testing.assert_close(patches, cnnlab.saliency(model, x, method="gradcam", layer="blocks.0").maps)
    feats = model.features(x, ["block2_cls", "block2_mean"])
    with torch.no_grad():
        tokens = model.net.blocks(model.net._pos_embed(model.net.patch_embed(model.normalize(x))))
    torch.testing.assert_close(feats["block2_cls"], tokens[:, 0])
    torch.testing.assert_close(feats["block2_mean"], tokens[:, 1:].mean(1))


# ---------------------------------------------------------------------------------- numbers that say what they are
def test_svm_probabilities_are_calibrated_on_the_training_split_and_keep_its_prediction(small, tmp_path):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import StratifiedKFold

    from cnnlab.transfer.svm import make_svm

    res = cnnlab.transfer(small, model="mnist_cnn", split="random:6", layers=["pre_logits"], Cs=[0.01], cache=False)
    res.save(tmp_path / "run")
    clf = cnnlab.load_classifier(tmp_path / "run")
    X, _, _ = clf.features(res.split["test"])
    train, _, _ = clf.features(res.split["train"])
    y = np.array([clf.classes.index(Path(p).parent.name) for p in res.split["train"]])
    ref = CalibratedClassifierCV(make_svm(0.01, "power-l2", 0), method="temperature", ensemble=False,
                                 cv=StratifiedKFold(5, shuffle=True, random_state=0)).fit(train, y)
    proba = clf.predict_proba(res.split["test"])
    np.testing.assert_allclose(proba, ref.predict_proba(X), rtol=1e-5, atol=1e-7)
    assert (proba.argmax(1) == clf.decision_function(res.split["test"]).argmax(1)).all()  # the SVM's prediction
    top = cnnlab.classify(clf, res.split["test"][:1]).summary()
    assert "temperature scaling" in top["probability"]
    assert top["results"][0]["top"][0]["prob"] == pytest.approx(proba[0].max(), rel=1e-5)


def test_an_svm_saved_before_calibration_gives_scores_not_percentages(small, tmp_path, capsys):
    res = cnnlab.transfer(small, model="mnist_cnn", split="random:6", layers=["pre_logits"], Cs=[0.01], cache=False)
    res.save(tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "classifier.json").read_text())
    for key in ("inverse_temperature", "probability"):
        meta.pop(key)
    (tmp_path / "run" / "classifier.json").write_text(json.dumps(meta))
    image = res.split["test"][0]
    assert main(["classify", image, "--model", str(tmp_path / "run"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "score" in out and "%" not in out
    with pytest.raises(CnnlabError, match="saved without calibration"):
        cnnlab.load_classifier(tmp_path / "run").predict_proba([image])


def test_random_weights_are_seeded_and_recorded(tmp_path):
    x = torch.rand(1, 3, 64, 64)
    nets = [cnnlab.load_model("timm:resnet18", weights=w, input_size=64) for w in ("random", "random:0", "random:1")]
    with torch.no_grad():
        a, b, c = (n(x) for n in nets)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert nets[0].weights == "random:0"
    with pytest.raises(CnnlabError, match="random:SEED needs a seed"):
        cnnlab.load_model("timm:resnet18", weights="random:-3")
    res = cnnlab.classify("timm:resnet18", x, weights="random", input_size=64)
    assert res.config.weights == "random:0"


def test_a_failed_fooling_run_says_what_to_raise():
    x = torch.rand(1, 1, 28, 28)
    with torch.no_grad():
        target = str((int(cnnlab.load_model("mnist_cnn")(x).argmax()) + 1) % 10)
    res = cnnlab.fool("mnist_cnn", x, target=target, max_iters=1)
    assert not bool(res.success[0]) and "raise --max-iters (now 1), or try --method pgd" in res.summary()["warnings"][0]
    pgd = cnnlab.fool("mnist_cnn", x, target=target, method="pgd", max_iters=1, eps=1 / 255)
    said = pgd.summary()["warnings"][0]
    assert not bool(pgd.success[0]) and "--max-iters (now 1)" in said and "--eps (now 0.00392" in said
    fine = cnnlab.fool("mnist_cnn", x, target="none", method="pgd", eps=0.5)
    assert bool(fine.success[0]) and "warnings" not in fine.summary()


def test_saliency_defaults_to_the_recommended_method():
    from cnnlab.explain.saliency import RECOMMENDED

    assert cnnlab.SaliencyConfig().method.name == RECOMMENDED == "gradcam"


def test_random_orders_without_metrics_is_refused():
    with pytest.raises(CnnlabError, match="--random-orders sets the baseline of --metrics"):
        cnnlab.saliency("mnist_cnn", torch.rand(1, 1, 28, 28), random_orders=8)


# --------------------------------------------------------------------------------------------------- pictures
def test_confusion_matrix_numbers_contrast_with_their_cells():
    from cnnlab.transfer.tables import confusion_figure

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(15), 20)
    pred = np.where(rng.random(300) < 0.6, y, rng.integers(0, 15, 300))
    fig = confusion_figure(y, pred, [f"class {k}" for k in range(15)])
    ax = fig.axes[0]
    im = ax.images[0]
    cm = im.get_array()
    shown = 0
    for t in ax.texts:
        if not t.get_text():
            continue
        j, i = (round(v) for v in t.get_position())
        cell = np.array(im.cmap(im.norm(cm[i, j]))[:3]) @ [0.2126, 0.7152, 0.0722]
        text = np.array(matplotlib_rgb(t.get_color())) @ [0.2126, 0.7152, 0.0722]
        assert abs(cell - text) > 0.45, (i, j, cm[i, j])
        shown += 1
    assert shown == int((cm > 0).sum())


def matplotlib_rgb(color):
    from matplotlib.colors import to_rgb

    return to_rgb(color)


def test_every_leaderboard_panel_shows_what_was_computed(tmp_path):
    from .conftest import tiny_model

    res = cnnlab.evaluate_saliency(tiny_model(), torch.rand(3, 3, 16, 16), methods=["gradcam", "vanilla"],
                                   metrics=["deletion", "insertion", "road"])
    fig = res.figures()["leaderboard.png"]
    for ax in fig.axes:
        lines = [ln for ln in ax.get_lines() if len(ln.get_xdata())]
        assert lines, ax.get_title()
        if "ROAD" in ax.get_title():  # the fast panel's ROAD is one point per method: drawn as a marker
            assert all(ln.get_marker() not in (None, "None", "") for ln in lines)


# ------------------------------------------------------------------------------------------------ and the rest
def test_a_warning_said_in_every_chunk_comes_out_once():
    from cnnlab.core.runner import Chunk, run_per_image

    def worker(chunk, first):
        warnings.warn(f"{len(chunk)} image(s) at {first} are odd", UserWarning)
        return Chunk([{"i": first + k} for k in range(len(chunk))])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_per_image(list(range(10)), worker, settings={}, out=None, chunk_size=2)
    said = [str(w.message) for w in caught]
    assert len(said) == 1 and "said 5 times" in said[0]


def test_a_lone_unreadable_image_ends_with_an_error_line(tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    assert main(["classify", str(bad), "--backbone", "mnist_cnn", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "cnnlab: error: none of the 1 input image(s) could be read" and "bad.jpg" in err[1]


def test_offline_hub_weights_fail_at_once_and_a_cached_copy_is_used(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE: no hub request at all, one line; with the file in the hub's cache, it is what loads."""
    import timm
    from safetensors.torch import save_file

    calls = collections.Counter()
    real = timm.create_model

    def counting(name, pretrained=False, **kw):
        calls[pretrained, "file" in (kw.get("pretrained_cfg_overlay") or {})] += 1
        return real(name, pretrained=pretrained, **kw)
    monkeypatch.setattr(timm, "create_model", counting)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(cnnlab.CnnlabError, match="not in the local cache and cannot be downloaded .HF_HUB_OFFLINE"):
        cnnlab.load_model("timm:resnet18")
    assert calls[True, False] == 0  # the hub client was never asked (no minute of retries)
    torch.manual_seed(3)
    weights = real("resnet18").state_dict()
    repo = tmp_path / "hub" / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc")
    (repo / "snapshots" / "abc").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(repo / "snapshots" / "abc" / "model.safetensors"))
    model = cnnlab.load_model("timm:resnet18")
    assert calls[True, True] == 1 and torch.equal(model.net.fc.weight, weights["fc.weight"])


def test_the_app_takes_the_weights_flag_its_messages_name_and_says_user_errors_in_one_line(capsys):
    import gradio as gr

    from cnnlab.app.server import AppConfig
    from cnnlab.app.state import friendly
    from cnnlab.cli import build_parser

    args = build_parser().parse_args(["app", "--backbone", "mnist_cnn", "--weights", "random:2"])
    assert "--weights" in build_parser()._subparsers._group_actions[0].choices["app"].format_help()
    assert AppConfig(weights=["random:2"]).weights == ["random:2"] and args

    @friendly
    def handler():
        raise CnnlabError("no such dataset\nsecond line")
    with pytest.raises(gr.Error) as err:
        handler()
    assert err.value.print_exception is False and str(err.value.message) == "no such dataset"
    assert capsys.readouterr().err == "cnnlab app: handler: no such dataset\n"

    @friendly
    def bug():
        raise KeyError("x")
    with pytest.raises(gr.Error) as err:  # a bug keeps its traceback in the server's log
        bug()
    assert err.value.print_exception is True


def test_the_demo_points_to_a_readme_section_and_files_that_exist():
    import re

    from cnnlab.demo import NEXT_STEPS

    repo = Path(__file__).resolve().parents[1]
    section = re.search(r'README\'s "([^"]+)"', NEXT_STEPS).group(1)
    assert f"\n## {section}\n" in (repo / "README.md").read_text()
    for path in re.findall(r"[\w/]+\.(?:md|ipynb)", NEXT_STEPS):
        assert (repo / path).is_file(), path


def test_a_dataset_of_one_class_is_one_line_before_any_work(small, tmp_path, capsys, no_work):
    import shutil

    one = tmp_path / "one"
    shutil.copytree(small / "blue", one / "blue")
    for route in ([], ["--head", "linear"], ["--finetune", "all"]):
        assert main(["transfer", "--data", str(one), "--split", "random:3", *route, "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == "cnnlab: error: transfer needs at least 2 classes (one subfolder per class); the data has only " \
                      "'blue'", err
