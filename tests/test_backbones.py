import pytest
import torch
from torch import nn

from cnnlab.core import imagenet
from cnnlab.core.backbones import Backbone, pool_features
from cnnlab.core.models import create_backbone
from cnnlab.core.table import list_backbones
from cnnlab.jobs.models import describe_backbone
from cnnlab.core.errors import CnnlabError, WeightsUnavailable
from cnnlab.core.hooks import CutPoint
from cnnlab.core.preprocess import Preprocess
import cnnlab

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUP_CLASSES = {967, 968}  # espresso, cup


def tiny_backbone() -> Backbone:
    """1×1 conv whose output channel k is 2 × input channel k, then a classifier on the avg-pooled map."""
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(2 * torch.eye(3).view(3, 3, 1, 1))
    net = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    prep = Preprocess(4, 4, "bilinear", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    points = {"conv": CutPoint("0"), "pre_logits": CutPoint("3", "input"), "logits": CutPoint("3")}
    return Backbone("tiny", net, prep, points, "random", None, num_classes=2).eval()


def test_normalization_and_cut_points_exact_values():
    b = tiny_backbone()
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = 1.0  # channel 0 all ones → normalized (1 - .5)/.25 = 2 → conv doubles → 4
    feats = b.features(x, ["conv", "pre_logits"], pool="avg")
    assert feats["conv"].tolist() == [[4.0, -4.0, -4.0]]  # zeros normalize to -2, doubled
    assert torch.equal(feats["pre_logits"], feats["conv"])
    assert pool_features(torch.arange(8.).view(1, 2, 2, 2), "max").tolist() == [[3.0, 7.0]]
    assert pool_features(torch.arange(8.).view(1, 2, 2, 2), "flatten").shape == (1, 8)


def test_grayscale_input_is_replicated():
    b = tiny_backbone()
    gray = torch.rand(2, 1, 4, 4)
    assert torch.equal(b(gray), b(gray.expand(-1, 3, -1, -1)))


def test_features_stop_at_the_deepest_requested_layer():
    b = tiny_backbone()
    calls = []
    b.net[3].register_forward_hook(lambda *a: calls.append(1))
    b.features(torch.rand(1, 3, 4, 4), ["conv"])
    assert calls == []
    b.features(torch.rand(1, 3, 4, 4), ["logits"])
    assert calls == [1]


def test_default_backbone_recognizes_real_photos(lite0, photo_files):
    r = cnnlab.classify(lite0, [photo_files["chelsea"], photo_files["coffee"]], topk=5)
    results, skipped = r.results, r.skipped
    assert skipped == []
    assert results[0]["top"][0]["index"] in CAT_CLASSES
    assert results[1]["top"][0]["index"] in CUP_CLASSES
    probs = [t["prob"] for t in results[0]["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert results[1]["top"][0]["label"] == imagenet.labels()[results[1]["top"][0]["index"]]


def test_one_pass_equals_separate_passes(lite0):
    x = torch.rand(2, 3, 224, 224)
    layers = ["block5", "head", "pre_logits", "logits"]
    with torch.inference_mode():
        together = lite0.features(x, layers)
        for layer in layers:
            torch.testing.assert_close(lite0.features(x, [layer])[layer], together[layer])
        torch.testing.assert_close(together["logits"], lite0(x))


def test_vgg16_cut_points_do_not_alias_inplace_relu():
    vgg = create_backbone("vgg16", weights="random")
    with torch.inference_mode():
        f = vgg.features(torch.rand(1, 3, 224, 224), ["fc6", "relu6", "cut-4", "cut-2"])
    assert (f["fc6"] < 0).any()
    torch.testing.assert_close(f["relu6"], f["fc6"].clamp(min=0))
    assert torch.equal(f["cut-4"], f["fc6"]) and torch.equal(f["cut-2"], f["relu6"])


@pytest.mark.parametrize("name", list_backbones())
def test_registry_shapes_and_counts(name):
    d = describe_backbone(name)
    assert d["cut_points"] and d["default_layer"] in [c["name"] for c in d["cut_points"]]
    assert all(c["dim"]["avg"] > 0 for c in d["cut_points"])
    if name == "vgg16":  # the report's Q1.1
        assert d["fc_parameters"] == 7 * 7 * 512 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000
    if name.startswith("efficientnet_lite"):
        assert d["weights_offline"] and tuple(d["preprocess"]["mean"]) == (0.5, 0.5, 0.5)


def test_weights_from_a_path_roundtrip(tmp_path, lite0):
    path = tmp_path / "w.pth"
    torch.save(lite0.net.state_dict(), path)
    again = create_backbone("efficientnet_lite0", weights=str(path))
    x = torch.rand(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(again(x), lite0(x))
    assert again.weights_id and str(path.resolve()) in again.weights_id


def test_bad_weights_and_names(tmp_path, monkeypatch):
    corrupt = tmp_path / "bad.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CnnlabError, match="not a readable weights file"):
        create_backbone("efficientnet_lite0", weights=str(corrupt))
    with pytest.raises(CnnlabError, match="no such file"):
        create_backbone("efficientnet_lite0", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(CnnlabError, match="did you mean 'vgg16'"):
        create_backbone("vgg61")
    with pytest.raises(CnnlabError, match="unknown cut point 'pre_logit' .*did you mean 'pre_logits'"):
        tiny_backbone().features(torch.rand(1, 3, 4, 4), ["pre_logit"])


def test_missing_torchvision_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailable) as err:
        create_backbone("squeezenet1_1")
    message = str(err.value)
    assert "squeezenet1_1-" in message and str(tmp_path / "hub" / "checkpoints") in message and "\n" not in message


def test_class_name_lookup():
    assert imagenet.resolve_class("tarantula") == 76
    assert imagenet.resolve_class("School Bus") == 779
    assert imagenet.resolve_class("n01440764") == 0 and imagenet.resolve_class("7") == 7
    with pytest.raises(CnnlabError, match="did you mean.*tarantula"):
        imagenet.resolve_class("tarantola")


@pytest.mark.parametrize("name, asset, least, size", [("mnist_cnn", "mnist_cnn.pt", 0.985, 400_000),
                                                      ("mnist_vit", "mnist_vit.pt", 0.98, 2_500_000)])
def test_the_shipped_mnist_classifiers_are_backbones_with_their_test_accuracy(name, asset, least, size):
    from cnnlab.core.data import load_mnist
    from cnnlab.core.mnist import shipped_test_accuracy, shipped_weights

    from .conftest import SHARED_DATA, shared

    model = create_backbone(name)
    assert model.labels == tuple("0123456789") and model.in_channels == 1
    from cnnlab.core.probe import default_cam_layers

    assert default_cam_layers(model) == (["block2"] if name == "mnist_cnn" else ["blocks.5.norm1"])
    assert shipped_weights(asset).stat().st_size < size  # fp16 weights in the package
    shared("MNIST", "raw")
    X, y = load_mnist(SHARED_DATA, train=False)
    with torch.no_grad():
        pred = torch.cat([model(b.float() / 255).argmax(1) for b in X.split(2000)])
    accuracy = pred.eq(y).float().mean().item()
    assert accuracy > least and accuracy == pytest.approx(shipped_test_accuracy(asset), abs=3e-4)  # fp16 weights
    rgb = (X[:4].float() / 255).expand(-1, 3, -1, -1)  # an RGB digit is read as gray
    torch.testing.assert_close(model(rgb), model(X[:4].float() / 255))
