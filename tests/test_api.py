"""The Python API as a user meets it: their own model (wrapped, from torchvision, from a file), every job from the
package top, result objects, run directories, and the CLI as a thin face on the same configs."""
import dataclasses
import inspect
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

import cnnlab
from cnnlab.cli import COMMANDS, build_parser, main
from cnnlab.cli import from_cli
from cnnlab.explain.saliency import METHODS



@pytest.fixture(scope="module")
def resnet():
    """A user's own network: torchvision's ResNet-18, random weights, at 64 pixels (fast on 2 cores)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=1000).eval()
    return cnnlab.wrap(net, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), input_size=64, resize=72)


def test_wrap_gives_module_paths_labels_and_the_same_logits(resnet):
    assert resnet.spec is None and resnet.labels == cnnlab.load_model("efficientnet_lite0").labels  # 1000 → ImageNet
    assert {"logits", "pre_logits"} <= set(resnet.cut_points) and resnet.cut_points["pre_logits"].module == "fc"
    x = torch.rand(2, 3, 64, 64)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(resnet(x), resnet.net((x - mean) / std))
        f = resnet.features(x, ["layer4", "pre_logits", "logits"])
    assert f["layer4"].shape == (2, 512) and f["pre_logits"].shape == (2, 512) and f["logits"].shape == (2, 1000)
    assert resnet.last_spatial_layer() == "layer4"
    small = cnnlab.wrap(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), mean=(0.5,), std=(0.5,), input_size=2)
    assert small.labels == ("class 0", "class 1", "class 2") and small.in_channels == 1
    assert small.class_index("class 2") == 2 and small.class_index("1") == 1
    with pytest.raises(cnnlab.CnnlabError, match="3 labels for a model with 1000 outputs"):
        cnnlab.wrap(resnet.net, mean=(0.5,) * 3, std=(0.5,) * 3, input_size=64, labels=["a", "b", "c"])
    with pytest.raises(cnnlab.CnnlabError, match="unknown cut point 'layer5'.*did you mean 'layer4'"):
        resnet.features(x, ["layer5"])


def test_describe_lists_every_module_path_of_a_generic_model(resnet):
    d = cnnlab.describe(resnet)
    names = {c["name"]: c for c in d["cut_points"]}
    assert names["layer4"]["shape"] == [512, 2, 2] and names["fc"]["shape"] == [1000]
    assert d["default_layer"] == "pre_logits" and d["parameters"] == sum(p.numel() for p in resnet.parameters())
    tv = cnnlab.describe("torchvision:resnet18")
    assert {"layer4", "fc", "logits", "pre_logits"} <= {c["name"] for c in tv["cut_points"]}
    assert tv["preprocess"]["input_size"] == 224 and tv["preprocess"]["resize_size"] == 256


def test_a_wrapped_model_through_every_job(resnet, photo_files, tiny_scenes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written unless asked
    before = sorted(os.listdir(tmp_path))
    resnet.train()  # the user's mode comes back as it went in
    photos = [photo_files["chelsea"], photo_files["coffee"]]

    c = cnnlab.classify(resnet, photos, topk=3)
    assert [r["image"] for r in c.results] == [str(p) for p in photos] and len(c.results[0]["top"]) == 3

    f = cnnlab.features(resnet, photos, layers=["layer4", "pre_logits"])
    assert f.features["layer4"].shape == (2, 512) and f.paths == [str(p) for p in photos]

    s = cnnlab.saliency(resnet, photos, method="gradcam", layer="layer3")
    assert s.maps.shape == (2, 64, 64) and s.images.shape == (2, 3, 64, 64) and (s.maps >= 0).all()
    default_cam = cnnlab.saliency(resnet, photos, method="gradcam")  # the last spatial map: layer4
    torch.testing.assert_close(default_cam.maps, cnnlab.saliency(resnet, photos, method="gradcam", layer="layer4").maps)
    assert not torch.allclose(default_cam.maps, s.maps)

    fooled = cnnlab.fool(resnet, photos[:1], target="random", max_iters=10)
    assert fooled.adversarial.shape == (1, 3, 300, 451) and fooled.adversarial.min() >= 0  # the photo's own size
    assert torch.equal(fooled.adversarial, fooled.adversarial.mul(255).round().div(255))
    assert bool(fooled.success[0]) == (int(fooled.pred_after[0]) == fooled.targets[0])

    v = cnnlab.classviz(resnet, "tarantula", iters=3, judge="none")
    assert v.image.shape == (3, 64, 64) and v.results[0]["judge"] is None and v.results[0]["index"] == 76

    t = cnnlab.transfer(tiny_scenes, resnet, split="random:3", layers=["layer4+pre_logits"], Cs=[1.0], folds=2,
                        workers=0)
    assert t.summary()["n_train"] == 9 and t.classifier.predict(photos[:1])[0] in ("Coast", "Forest", "Kitchen")
    assert t.config.backbone == ["<wrapped ResNet>"] and t.config.layers == [["layer4", "pre_logits"]]  # parsed once
    with pytest.raises(cnnlab.CnnlabError, match="wrapped in Python .* no command can rebuild it"):
        cnnlab.transfer(tiny_scenes, config=t.config)  # its config.json, rerun without the module

    assert resnet.training and all(m.training for m in resnet.modules())
    resnet.eval()
    assert sorted(os.listdir(tmp_path)) == before


def test_torchvision_models_load_offline_with_random_weights():
    m = cnnlab.load_model("torchvision:mobilenet_v3_small", weights="random")
    assert m.spec == "torchvision:mobilenet_v3_small" and m.preprocess.input_size == 224 and m.num_classes == 1000
    assert m.cut_points["pre_logits"].module == "classifier.3"
    with pytest.raises(cnnlab.CnnlabError, match="did you mean 'resnet18'"):
        cnnlab.load_model("torchvision:resnet81")


FACTORY = '''
import torch
from torch import nn


def tiny():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))
'''


def test_backbone_from_a_file_and_a_weights_file_through_the_cli(tmp_path, photo_files, capsys):
    (tmp_path / "mynet.py").write_text(FACTORY)
    spec = f"{tmp_path / 'mynet.py'}:tiny"
    model = cnnlab.load_model(spec, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], input_size=32)
    assert model.labels == ("class 0", "class 1", "class 2") and model.preprocess.resize_size == 32
    weights = tmp_path / "w.pth"
    state = {k: torch.full_like(v, 0.01 * i) for i, (k, v) in enumerate(model.net.state_dict().items())}
    torch.save(state, weights)
    common = ["--backbone", spec, "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--input-size", "32"]
    assert main(["classify", str(photo_files["chelsea"]), *common, "--weights", str(weights), "--json"], env={}) == 0
    top = json.loads(capsys.readouterr().out)["results"][0]["top"]
    model.net.load_state_dict(state)
    x = cnnlab.read_images(photo_files["chelsea"]).batch(model.preprocess)
    with torch.no_grad():
        expected = model(x).softmax(1)[0]
    assert top[0]["label"] == f"class {int(expected.argmax())}"
    assert top[0]["prob"] == pytest.approx(float(expected.max()), abs=1e-6)

    out = tmp_path / "sal"
    assert main(["explain", "saliency", str(photo_files["chelsea"]), *common, "--method", "gradcam", "--layer", "0",
                 "--out", str(out), "--quiet", "--json"], env={}) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["results"][0]["target_label"].startswith("class ") and (out / "saliency_000.png").is_file()
    for bad, message in ((f"{tmp_path / 'mynet.py'}:tine", "no callable 'tine'; did you mean 'tiny'"),
                         (f"{tmp_path / 'nothere.py'}:tiny", "no such Python file")):
        assert main(["classify", str(photo_files["chelsea"]), "--backbone", bad], env={}) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err


def test_config_round_trip_repeats_the_run_exactly(photo_files, tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["explain", "saliency", str(photo_files["chelsea"]), str(photo_files["coffee"]), "--method",
                 "smoothgrad", "--samples", "3", "--target", "tabby", "--out", str(first), "--quiet"], env={}) == 0
    config = json.loads((first / "config.json").read_text())
    assert config["command"] == "explain saliency" and config["target"] == "tabby"
    assert config["method"] == {"name": "smoothgrad", "smoothgrad_samples": 3, "smoothgrad_sigma": 0.15,
                                "noise_seed": 0, "internal_batch_size": 32}  # the part, nested
    again = tmp_path / "again"
    assert main(["explain", "saliency", "--config", str(first / "config.json"), "--out", str(again), "--quiet"],
                env={}) == 0
    capsys.readouterr()
    for name in ("saliency_000.png", "saliency_001.png"):
        assert np.array_equal(np.asarray(Image.open(first / name)), np.asarray(Image.open(again / name)))
    assert json.loads((again / "config.json").read_text()) == config
    # the API reads the same file, and a flag given beside --config wins
    res = cnnlab.saliency(config=cnnlab.SaliencyConfig.load(first))
    assert res.config.method.smoothgrad_samples == 3 and res.maps.shape == (2, 224, 224)
    assert main(["explain", "saliency", "--config", str(first), "--method", "vanilla", "--out",
                 str(tmp_path / "third"), "--quiet"], env={}) == 0
    assert json.loads((tmp_path / "third" / "config.json").read_text())["method"] == {"name": "vanilla"}
    # a file written before parts nested (their options flat beside the job's) reruns the same run
    flat = {k: v for k, v in config.items() if k != "method"} | {"method": "smoothgrad"} | {
        k: v for k, v in config["method"].items() if k != "name"}
    (tmp_path / "old.json").write_text(json.dumps(flat))
    assert main(["explain", "saliency", "--config", str(tmp_path / "old.json"), "--out", str(tmp_path / "old"),
                 "--quiet"], env={}) == 0
    assert json.loads((tmp_path / "old" / "config.json").read_text()) == config
    for name in ("saliency_000.png", "saliency_001.png"):
        assert np.array_equal(np.asarray(Image.open(first / name)), np.asarray(Image.open(tmp_path / "old" / name)))
    capsys.readouterr()
    assert main(["explain", "fool", "--config", str(first / "config.json")], env={}) == 2
    assert "this config is for `cnnlab explain saliency`" in capsys.readouterr().err


def test_transfer_classifier_is_saved_and_classify_model_agrees_with_the_test_accuracy(tiny_scenes, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["transfer", "--data", str(tiny_scenes), "--split", "random:3", "--backbone", "efficientnet_lite0",
                 "--layers", "pre_logits,block5", "--C", "1,0.01", "--folds", "3", "--workers", "0", "--precision",
                 "fp32", "--no-cache", "--out", str(run), "--quiet", "--json"], env={}) == 0
    summary = json.loads(capsys.readouterr().out)
    split = json.loads((run / "split.json").read_text())
    assert len(split["test"]) == summary["n_test"] == 9
    assert (run / "classifier.skops").is_file() and "pickle" not in (run / "classifier.json").read_text()
    truth = {p: Path(p).parent.name for p in split["test"]}
    assert main(["classify", *split["test"], "--model", str(run), "--topk", "2", "--json"], env={}) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == str(run) and len(out["results"]) == 9
    assert {t["label"] for r in out["results"] for t in r["top"]} <= set(summary["classes"])
    accuracy = np.mean([r["top"][0]["label"] == truth[r["image"]] for r in out["results"]])
    assert accuracy == pytest.approx(summary["selected"]["test_accuracy"])
    clf = cnnlab.load_classifier(run)
    assert clf.predict(split["test"][:2]) == [r["top"][0]["label"] for r in out["results"][:2]]
    assert clf.predict_proba(split["test"][:2]).shape == (2, 3)


def test_a_tampered_classifier_is_refused(tiny_scenes, tmp_path):
    import skops.io as sio

    result = cnnlab.transfer(tiny_scenes, "efficientnet_lite0", split="random:3", layers=["pre_logits"], Cs=[1.0],
                             folds=2, workers=0, cache=False)
    # the summary is typed: the SVM route's record leaves a trained head's fields out of its JSON
    from cnnlab.transfer.summary import TransferSummary

    assert isinstance(result.record, TransferSummary) and result.record.n_test == 9 and result.record.history is None
    assert result.summary() == result.record.summary() and "history" not in result.summary()
    run = result.save(tmp_path / "run")
    sio.dump({"estimator": result.classifier.estimator, "surprise": Path("x")}, run / "classifier.skops")
    with pytest.raises(cnnlab.CnnlabError, match="holds types cnnlab does not load"):
        cnnlab.load_classifier(run)
    (run / "classifier.json").write_text("{}")
    with pytest.raises(cnnlab.CnnlabError, match="is not a cnnlab classifier"):
        cnnlab.load_classifier(run)


def test_inputs_of_every_kind(lite0, photo_files):
    pil = Image.open(photo_files["coffee"]).convert("RGB")
    arr = np.asarray(pil)
    tensor = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255
    r = cnnlab.classify(lite0, {"cup": pil, "as array": arr, "as tensor": tensor, "file": photo_files["coffee"]})
    assert [x["image"] for x in r.results] == ["cup", "as array", "as tensor", "file"]
    assert len({x["top"][0]["index"] for x in r.results}) == 1  # the same picture, however it came
    prepared = cnnlab.read_images(photo_files["coffee"]).batch(lite0.preprocess)
    assert cnnlab.classify(lite0, prepared).results[0]["top"][0]["index"] == r.results[0]["top"][0]["index"]
    with pytest.raises(cnnlab.CnnlabError, match=r"values in \[0,1\]"):
        cnnlab.classify(lite0, prepared * 255)


def test_results_leave_matplotlib_alone_and_render_in_a_notebook(lite0, photo_files, tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    s = cnnlab.saliency(lite0, photo_files["chelsea"], method="gradcam")
    fig = s.figure()
    html = s._repr_html_()
    s.save(tmp_path / "run")
    assert matplotlib.get_backend() == backend and plt.get_fignums() == []
    assert type(fig).__name__ == "Figure" and "data:image/png;base64," in html and "gradcam" in html
    assert {"config.json", "metrics.json", "saliency.png", "saliency_000.png"} == set(os.listdir(tmp_path / "run"))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == json.loads(json.dumps(s.to_json()))


def test_every_job_is_one_call_from_the_package_top():
    for name in ("load_model", "wrap", "classify", "features", "transfer", "saliency", "fool", "classviz",
                 "dream", "atlas", "evaluate_saliency", "reproduce", "load_classifier"):
        assert callable(getattr(cnnlab, name)), name
    for name in ("train", "sample", "evaluate"):
        assert callable(getattr(cnnlab.gan, name)), name
    params = inspect.signature(cnnlab.saliency).parameters
    assert params["method"].default == "gradcam" and params["batch_size"].default == 8  # the config's own defaults
    assert "method:" in cnnlab.saliency.__doc__
    with pytest.raises(cnnlab.CnnlabError, match="unknown option 'metod'.*did you mean 'method'"):
        cnnlab.saliency("efficientnet_lite0", torch.rand(1, 3, 8, 8), metod="vanilla")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_cli_defaults_are_the_configs_own(command):
    """Parsing a command with no options gives exactly the library's default config: the CLI keeps no copy."""
    words = command.name.split()
    args = build_parser().parse_args(words)
    config_cls = command.config()
    parsed = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls) if hasattr(args, f.name)}
    assert parsed == {}  # nothing is filled in by argparse: every value comes from the dataclass
    if not any(f.metadata["cnnlab"]["required"] for f in dataclasses.fields(config_cls)):
        assert from_cli(config_cls, args, {}, None) == config_cls()


def test_cli_module_holds_no_choice_list_or_default():
    source = Path(cnnlab.cli.__file__).read_text()
    assert "choices=" not in source and "type=int" not in source and "type=float" not in source
    import re

    # the parser it generates from the configs reads only what was typed (SUPPRESS): defaults are the configs'
    assert set(re.findall(r"default=([^,)\s]+)", source)) <= {"None", "argparse.SUPPRESS"}


@pytest.mark.parametrize("method", METHODS)
def test_every_saliency_method_on_a_wrapped_model(method):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    model = cnnlab.wrap(net, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=32)
    images = torch.rand(2, 3, 32, 32)
    quick = dict(smoothgrad_samples=2, ig_steps=4, occlusion_window=8, occlusion_stride=8, rise_masks=64)
    if METHODS[method].transformers_only:  # a CNN: said in one line, before any work
        with pytest.raises(cnnlab.CnnlabError, match="has no attention module"):
            cnnlab.saliency(model, images, method=method)
        return
    res = cnnlab.saliency(model, images, method=method, metrics=True, random_orders=1,
                          **{k: v for k, v in quick.items() if METHODS.takes(method, k)})
    assert res.maps.shape == (2, 32, 32) and (res.maps >= 0).all() and torch.isfinite(res.maps).all()
    assert set(res.summary()["summary"]) >= {"deletion_auc", "insertion_auc", "deletion_ratio"}
    if "gradcam" in method:  # the last spatial map of the forward pass, found by itself
        torch.testing.assert_close(cnnlab.saliency(model, images, method="gradcam").maps,
                                   cnnlab.saliency(model, images, method="gradcam", layer="3").maps)
