"""Fooling images that work as images: made at the photo's own size through the model's own preprocessing, judged
on the saved file; transfer to other models, ensembles, the transfer attack, and digits."""
import json

import pytest
import torch
from PIL import Image
from torch import nn

import cnnlab
from cnnlab.cli import main
from cnnlab.core.images import quantize
from cnnlab.core.inputs import batches, read_images
from cnnlab.explain.attacks import _diverse, _gaussian_kernel, attack
from cnnlab.explain.views import ImageModel

from .conftest import SHARED_DATA, shared


@pytest.fixture
def photos_of_many_sizes(tmp_path):
    """Real ImageNet photos (foolbox20) at their own 512×512, a 400×300 crop, a 640×480 resize, and a grayscale
    256×256 scene."""
    folder = shared("imagenet", "foolbox20")
    files = sorted(folder.glob("*.jpg"))
    out = [files[0]]
    Image.open(files[1]).crop((20, 40, 420, 340)).save(tmp_path / "crop.jpg", quality=95)
    Image.open(files[2]).resize((640, 480)).save(tmp_path / "wide.png")
    out += [tmp_path / "crop.jpg", tmp_path / "wide.png"]
    out.append(sorted((SHARED_DATA / "15scene" / "Coast").glob("*.jpg"))[0])
    return out


def test_the_attack_sees_exactly_what_classify_reads(lite0, photos_of_many_sizes):
    """The differentiable preprocessing equals the reading path on unperturbed images: the network's input is the
    same to the bit; the logits differ only by float summation order (a cropped view vs a copied batch)."""
    view = ImageModel([lite0])
    with torch.no_grad():
        for name, x, _ in batches(photos_of_many_sizes, lite0.preprocess, 1):
            native = read_images(name).pixels[0]
            assert torch.equal(quantize(native), native)  # decoded 8-bit images are already on the 1/255 grid
            assert torch.equal(lite0.preprocess(native[None]), x)
            assert (view(native[None]) - lite0(x)).abs().max().item() < 1e-4


def test_a_fooled_file_read_back_through_classify_hits_its_target(lite0, photos_of_many_sizes, tmp_path):
    res = cnnlab.fool(lite0, photos_of_many_sizes, target="random", seed=3, max_iters=150)
    run = res.save(tmp_path / "run")
    assert res.success.all(), res.summary()["results"]
    sizes = [r["size"] for r in res.summary()["results"]]
    assert sizes == [[512, 512], [300, 400], [480, 640], [256, 256]]  # each keeps its own size
    saved = [run / f"adversarial_{k:03d}.png" for k in range(len(sizes))]
    assert [list(Image.open(p).size[::-1]) for p in saved] == sizes
    back = cnnlab.classify(lite0, saved, topk=1)
    assert [r["top"][0]["index"] for r in back.results] == res.targets
    assert (res.linf <= 4 / 255 + 1e-6).all() and (res.linf > 0).all()
    # pixels outside the central crop never reach the network: the attack leaves them alone
    wide_before, wide_after = res.originals[2], res.adversarials[2]
    assert torch.equal(wide_before[..., :, :60], wide_after[..., :, :60])


def test_transfer_rates_on_a_tiny_pair_of_models_checked_by_hand():
    torch.manual_seed(0)
    a = cnnlab.wrap(nn.Sequential(nn.Flatten(), nn.Linear(48, 3)), mean=(0,) * 3, std=(1,) * 3, input_size=4)
    b = cnnlab.wrap(nn.Sequential(nn.Flatten(), nn.Linear(48, 3)), mean=(0,) * 3, std=(1,) * 3, input_size=4)
    x = torch.rand(6, 3, 4, 4)
    res = cnnlab.fool(a, x, target="2", method="fgsm", eps=0.2, eval_on=[b], batch_size=6)
    with torch.no_grad():
        before, after = b(quantize(x)).argmax(1), b(res.adversarial).argmax(1)
    rates = {"targeted_rate": (after == 2).float().mean().item(), "untargeted_rate": (after != before).float().mean().item()}
    (got,) = res.transfer.values()
    assert got["targeted_rate"] == pytest.approx(rates["targeted_rate"])
    assert got["untargeted_rate"] == pytest.approx(rates["untargeted_rate"])
    assert got["pred_before"] == before.tolist() and got["pred_after"] == after.tolist()


def test_eval_on_reports_transfer_per_model(lite0, photo_files, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["explain", "fool", str(photo_files["coffee"]), "--target", "tarantula", "--eval-on",
                 "efficientnet_lite1", "--out", str(out), "--quiet", "--json"], env={}) == 0
    s = json.loads(capsys.readouterr().out)
    assert set(s["transfer"]) == {"efficientnet_lite1"}
    assert set(s["transfer"]["efficientnet_lite1"]) == {"targeted_rate", "untargeted_rate"}
    assert set(s["results"][0]["transfer"]["efficientnet_lite1"]) == {"pred_before", "pred_after"}
    assert "| efficientnet_lite1 |" in (out / "transfer.md").read_text()
    # the rates, counted again independently: lite1 classifying the original and the saved file
    before, after = (r["top"][0]["index"] for r in cnnlab.classify(
        "efficientnet_lite1", [photo_files["coffee"], s["results"][0]["png"]], topk=1).results)
    target = s["results"][0]["target"]
    assert s["transfer"]["efficientnet_lite1"] == {"targeted_rate": float(after == target),
                                                   "untargeted_rate": float(after != before)}


def test_an_ensemble_is_the_mean_of_its_models_logits_each_through_its_own_preprocessing(lite0):
    lite1 = cnnlab.load_model("efficientnet_lite1")
    x = torch.rand(2, 3, 300, 280)
    with torch.no_grad():
        both = ImageModel([lite0, lite1])(x)
        each = [m(m.preprocess(x)) for m in (lite0, lite1)]
    torch.testing.assert_close(both, (each[0] + each[1]) / 2)
    with pytest.raises(cnnlab.CnnlabError, match="do not share their classes"):
        ImageModel([lite0, cnnlab.load_model("mnist_cnn")])


def test_the_transfer_attack_without_its_ingredients_is_plain_iterated_fgsm():
    torch.manual_seed(0)
    model = cnnlab.wrap(nn.Sequential(nn.Flatten(), nn.Linear(48, 3)), mean=(0,) * 3, std=(1,) * 3, input_size=4)
    x = quantize(torch.rand(2, 3, 4, 4))
    r = attack(model, x, [2, 2], "transfer", max_iters=3, eps=3 / 255, step=1 / 255, loss="ce", momentum=0,
               diversity=0, ti_kernel=0)
    expected = x.clone()
    for _ in range(3):
        xe = expected.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(model(xe), torch.tensor([2, 2]), reduction="sum").backward()
        expected = torch.min(torch.max(expected - xe.grad.sign() / 255, x - 3 / 255), x + 3 / 255).clamp(0, 1)
    torch.testing.assert_close(r.adversarial, quantize(expected))
    k = _gaussian_kernel(5, 3)
    assert k.shape == (3, 1, 5, 5) and torch.allclose(k.sum(dim=(1, 2, 3)), torch.ones(3))
    shrunk = _diverse(torch.Generator().manual_seed(1))(torch.ones(1, 3, 40, 50))
    assert shrunk.shape == (1, 3, 40, 50) and 0 < (shrunk == 0).float().mean() < 0.2  # padded borders


def test_digits_are_fooled_with_the_shipped_mnist_classifier():
    from cnnlab.core.data import load_mnist

    shared("MNIST", "raw")
    X, y = load_mnist(SHARED_DATA, train=False)
    digits = X[:6].float() / 255  # (6,1,28,28): the network's own input
    mnist = cnnlab.load_model("mnist_cnn")
    res = cnnlab.fool(mnist, digits, target="random", method="pgd", eps=0.5, step=0.02, max_iters=100)
    assert res.success.all() and res.adversarial.shape == (6, 1, 28, 28)  # gray stays gray
    assert [int(p) for p in res.pred_before] == y[:6].tolist()
    s = cnnlab.saliency(mnist, digits, method="gradcam")
    assert s.maps.shape == (6, 28, 28)


@pytest.mark.parametrize("argv, message", [
    (["--eval-on", "efficientnet_lite9"], "unknown backbone 'efficientnet_lite9'"),
    (["--eval-on", "mnist_cnn"], "do not share their classes"),
    (["--method", "pgd", "--eps", "-1"], "--eps must be > 0, got -1.0"),
    (["--method", "pgd", "--eps", "2"], "--eps must be in (0, 1] for the L∞ norm"),
    (["--method", "transfer", "--diversity", "1.5"], "--diversity must be in [0, 1], got 1.5"),
])
def test_bad_fool_options_are_one_line_errors(argv, message, photo_files, capsys):
    assert main(["explain", "fool", str(photo_files["coffee"]), "--target", "tarantula", *argv], env={}) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error:") and message in err and "\n" not in err
