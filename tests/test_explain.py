import json

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.cli import main
from cnnlab.core.backbones import Backbone
from cnnlab.core.errors import CnnlabError
from cnnlab.core.hooks import CutPoint
from cnnlab.core.preprocess import Preprocess
from cnnlab.explain.attacks import attack
from cnnlab.explain.targets import resolve_targets
from cnnlab.explain.classviz import ClassVizOptions, class_probability, visualize_class
from cnnlab.explain.faithfulness import auc, deletion_insertion, random_orders
from cnnlab.core.inputs import read_images
from cnnlab.explain.saliency import BLUR_SIGMA, attribute, blurred, predicted

from .conftest import shared


def linear_backbone(seed=0) -> Backbone:
    """logits = W · flatten(x) on 3×4×4 images, identity normalization: ∂score_k/∂x = W[k] exactly."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(48, 2, bias=False))
    prep = Preprocess(4, 4, "bilinear", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    return Backbone("linear", net, prep, {"logits": CutPoint("1")}, "random", None, num_classes=2).eval()


def test_vanilla_saliency_of_a_linear_model_is_abs_weight_max_over_channels():
    b = linear_backbone()
    x = torch.rand(2, 3, 4, 4)
    maps = attribute(b, x, [1, 0], "vanilla")
    W = b.net[1].weight.detach().view(2, 3, 4, 4)
    torch.testing.assert_close(maps[0], W[1].abs().amax(dim=0))
    torch.testing.assert_close(maps[1], W[0].abs().amax(dim=0))


def test_fgsm_moves_each_pixel_by_eps_sign_then_clamps():
    b = linear_backbone()
    x = torch.full((1, 3, 4, 4), 128 / 255)
    x[0, 0, 0, 0] = 1.0  # a saturated pixel: any upward step is clamped away
    eps = 4 / 255
    r = attack(b, x, [1], "fgsm", eps=eps)
    W = b.net[1].weight.detach().view(2, 3, 4, 4)
    expected = (x + eps * (W[1] - W[0]).sign()).clamp(0, 1)  # targeted: climb toward class 1
    torch.testing.assert_close(r.adversarial, expected.mul(255).round().div(255))
    assert r.iterations.tolist() == [1]


def test_vanilla_equals_max_over_channels_of_abs_gradient_and_restores_state(lite0):
    x = torch.rand(2, 3, 224, 224)
    x_before = x.clone()
    lite0.train()
    flags = [p.requires_grad for p in lite0.parameters()]
    try:
        maps = attribute(lite0, x, [281, 967], "vanilla")
        assert lite0.training and [p.requires_grad for p in lite0.parameters()] == flags
    finally:
        lite0.eval()
    xg = x.clone().requires_grad_(True)
    lite0(xg).gather(1, torch.tensor([[281], [967]])).sum().backward()
    torch.testing.assert_close(maps, xg.grad.abs().amax(dim=1))
    assert torch.equal(x, x_before)


@pytest.fixture(scope="module")
def lab_images(lite0):
    return read_images([str(shared("imagenet", "imagenet_val_25.npz"))]).batch(lite0.preprocess)


def test_fooling_succeeds_on_the_lab_images_after_quantization(lite0, lab_images):
    x = lab_images[:5]
    targets = resolve_targets("random", predicted(lite0, x), lite0, seed=0)
    r = attack(lite0, x, targets, "minimal", max_iters=200)
    assert r.success.all()
    assert torch.equal(r.adversarial, r.adversarial.mul(255).round().div(255))  # already 8-bit values
    with torch.no_grad():
        assert predicted(lite0, r.adversarial).tolist() == targets
    assert r.norms()["linf"].max() <= 4 / 255 + 1e-6


def test_deletion_of_salient_patches_beats_random_order(lite0, lab_images):
    x = lab_images[:4]
    pred = predicted(lite0, x)
    scores = deletion_insertion(lite0, x, attribute(lite0, x, pred, "gradcam"), pred, steps=14, n_random=1)
    assert scores["deletion_auc"].mean() < scores["random_deletion_auc"].mean()
    assert scores["insertion_auc"].mean() > scores["random_insertion_auc"].mean()


def test_multi_layer_gradcam_is_the_sum_of_max_scaled_maps(lite0, lab_images):
    x = lab_images[:2]
    target = predicted(lite0, x)
    single = [attribute(lite0, x, target, "gradcam", dict(layer=l)) for l in ("head", "block6")]
    both = attribute(lite0, x, target, "gradcam", dict(layer="head+block6"))
    expected = sum(m / m.flatten(1).amax(1).view(-1, 1, 1) for m in single)
    torch.testing.assert_close(both, expected)
    assert both.flatten(1).amax(1).max() <= 2 + 1e-5


def test_smoothgrad_gradcam_is_the_product_of_max_scaled_maps(lite0, lab_images):
    x = lab_images[:2]
    target = predicted(lite0, x)
    o = dict(smoothgrad_samples=4)
    sg = attribute(lite0, x, target, "smoothgrad", o)  # SmoothGrad's noise is seeded (noise_seed)
    cam = attribute(lite0, x, target, "gradcam")  # an option a method does not take is refused: none given
    state = torch.get_rng_state()
    both = attribute(lite0, x, target, "smoothgrad-gradcam", o)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    unit = lambda m: m / m.flatten(1).amax(1).view(-1, 1, 1)  # noqa: E731
    torch.testing.assert_close(both, unit(sg) * unit(cam))
    assert both.min() >= 0 and both.flatten(1).amax(1).max() <= 1 + 1e-5


def test_ig_of_a_linear_model_is_input_minus_baseline_times_weight():
    """Exact for a linear score: IG = (x − baseline) · W[target]; the default baseline is the blurred image."""
    b = linear_backbone()
    x = torch.rand(2, 3, 4, 4)
    W = b.net[1].weight.detach().view(2, 3, 4, 4)
    o = {}
    expected = ((x - blurred(x, BLUR_SIGMA)) * W[[1, 0]]).sum(dim=1).abs()
    torch.testing.assert_close(attribute(b, x, [1, 0], "ig", o), expected)
    black = attribute(b, x, [1, 0], "ig", dict(ig_baseline="black"))
    torch.testing.assert_close(black, (x * W[[1, 0]]).sum(dim=1).abs())
    with pytest.raises(CnnlabError, match="--ig-baseline 'white' is not one of: blur, black"):
        attribute(b, x, [1, 0], "ig", dict(ig_baseline="white"))


def test_random_baseline_is_the_mean_over_random_orders_computed_by_hand():
    b = linear_backbone()
    x, maps, target = torch.rand(2, 3, 4, 4), torch.rand(2, 4, 4), [1, 0]
    s = deletion_insertion(b, x, maps, target, patch=2, steps=4, blur_sigma=1.0, seed=5, n_random=3)
    assert set(deletion_insertion(b, x, maps, target, patch=2, steps=4, n_random=0)) == {"deletion_auc",
                                                                                          "insertion_auc"}
    base = blurred(x, 1.0)
    orders = random_orders(2, 4, 3, seed=5)
    assert orders.shape == (3, 2, 4) and not torch.equal(orders[0], orders[1])

    def prob(img, i):
        return torch.softmax(b.net(img[None]), dim=1)[0, target[i]].item()

    for key, start, end in (("random_deletion_auc", x, base), ("random_insertion_auc", base, x)):
        for i in range(2):
            areas = []
            for k in range(3):
                rank = torch.empty(4, dtype=torch.long)
                rank[orders[k, i]] = torch.arange(4)
                curve = []
                for removed in range(5):  # 4 steps over 4 patches: one patch per step
                    m = (rank.view(2, 2) < removed).float().repeat_interleave(2, 0).repeat_interleave(2, 1)
                    curve.append(prob(start[i] * (1 - m) + end[i] * m, i))
                areas.append(sum((a + c) / 2 for a, c in zip(curve, curve[1:])) / 4)
            assert s[key][i].item() == pytest.approx(sum(areas) / 3, abs=1e-6)


def test_auc_is_the_trapezoid_area():
    assert auc(torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.5)
    assert auc(torch.tensor([[1.0, 1.0, 1.0]])).item() == pytest.approx(1.0)


def test_classviz_raises_the_target_probability(lite0):
    target = 76  # tarantula
    start, _ = visualize_class(lite0, target, ClassVizOptions(iters=0), size=160)
    image, frames = visualize_class(lite0, target, ClassVizOptions(iters=15, frames=[5, 15]), size=160)
    assert class_probability(lite0, image, target)[0] > 3 * class_probability(lite0, start, target)[0]
    assert sorted(frames) == [5, 15] and image.min() >= 0 and image.max() <= 1


def test_explain_cli_json(tmp_path, capsys, photo_files):
    npz = str(shared("imagenet", "imagenet_val_25.npz"))
    assert main(["explain", "saliency", npz, "--limit", "2", "--method", "gradcam", "--out", str(tmp_path / "s"),
                 "--quiet", "--json"]) == 0  # --metrics' keys: test_evaluate (a small model makes them quick)
    s = json.loads(capsys.readouterr().out)
    assert len(s["results"]) == 2 and "deletion_auc" not in s["results"][0] and "summary" not in s
    assert (tmp_path / "s" / "saliency.png").is_file() and (tmp_path / "s" / "saliency_001.png").is_file()

    assert main(["explain", "fool", str(photo_files["coffee"]), "--target", "tarantula", "--out", str(tmp_path / "f"),
                 "--quiet", "--json"]) == 0
    f = json.loads(capsys.readouterr().out)
    (r,) = f["results"]
    assert set(r) >= {"image", "target", "pred_before", "pred_after", "success", "iterations", "linf", "l2"}
    assert r["success"] and r["pred_after"] == r["target"] == 76
    assert set(f["summary"]) == {"n", "success_rate", "median_linf", "median_l2", "median_iterations"}
    # the saved PNG, at the photo's own size, fools `cnnlab classify`
    from PIL import Image

    assert Image.open(r["png"]).size == Image.open(photo_files["coffee"]).size
    assert main(["classify", r["png"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["top"][0]["index"] == 76

    assert main(["explain", "classviz", "--class", "tick", "--iters", "3", "--judge", "efficientnet_lite1",
                 "--out", str(tmp_path / "c"), "--quiet", "--json"]) == 0
    c = json.loads(capsys.readouterr().out)
    assert {"class", "index", "backbone", "target_prob", "judge", "images"} <= set(c) and c["index"] == 78
    assert set(c["judge"]) == {"model", "target_prob", "target_rank"} and c["judge"]["target_rank"] >= 1


@pytest.mark.parametrize("argv, message", [
    (["explain", "classviz", "--class", "tarantola"], "did you mean"),
    (["explain", "classviz", "--class", "tick", "--judge", "efficientnet_lite0"], "must be a different model"),
    (["explain", "fool", "IMG", "--target", "not-a-class-at-all"], "unknown ImageNet class"),
    (["explain", "saliency", "BADNPZ"], "has no array 'X'"),
    (["explain", "saliency", "IMG", "--metrics", "--random-orders", "0"], "--random-orders must be ≥ 1, got 0"),
])
def test_explain_bad_input(argv, message, photo_files, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, Y=np.zeros(3))
    argv = [str(photo_files["coffee"]) if a == "IMG" else str(bad) if a == "BADNPZ" else a for a in argv]
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error:") and message in err and "\n" not in err


def test_maps_are_shown_on_a_scale_that_keeps_sparse_maps_visible():
    """Display scaling: the top 1 % of a map's values at full colour (as Captum scales), so a map whose mass is a few
    pixels (vanilla gradients) is not a black image; a constant map shows as 0."""
    from cnnlab.core.figures import scaled

    m = torch.zeros(100, 100)
    m[:50] = torch.linspace(0, 1, 50).view(-1, 1)  # the bulk
    m[99, :10] = 100.0  # ten outliers: min-max scaling would put the bulk below 1 %
    v = scaled(m)
    assert v.max() == 1 and v[99, :10].min() == 1 and v[:50].mean() > 0.3
    assert scaled(torch.full((4, 4), 3.0)).max() == 0


def test_a_batch_with_one_seed_per_image_scores_as_its_images_one_by_one():
    """The random baseline's orders are seeded per image: one batched call equals the images' own calls."""
    from cnnlab.explain.faithfulness import random_baseline

    b = linear_backbone()
    x, target = torch.rand(3, 3, 4, 4), [1, 0, 1]
    batched = random_baseline(b, x, target, patch=2, steps=4, blur_sigma=1.0, seed=[5, 9, 2], n_random=2,
                              curves=True)
    for i, seed in enumerate((5, 9, 2)):
        alone = random_baseline(b, x[i:i + 1], target[i:i + 1], patch=2, steps=4, blur_sigma=1.0, seed=seed,
                                n_random=2, curves=True)
        for key, value in alone.items():
            torch.testing.assert_close(batched[key][i:i + 1], value)
    assert not torch.equal(batched["random_deletion_auc"], random_baseline(
        b, x, target, patch=2, steps=4, blur_sigma=1.0, seed=5, n_random=2)["random_deletion_auc"])
