"""Feature visualization: the Fourier parameterization, colour decorrelation, the objective algebra, the renderer,
`cnnlab.dream` / `explain dream` and the layer atlas (`explain atlas`), on hand-checkable cases and small models."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import cnnlab
from cnnlab.cli import main
from cnnlab.core.errors import CnnlabError
from cnnlab.explain import objectives as O
from cnnlab.explain.dream import RenderOptions, activations, objective_values, render
from cnnlab.explain.params import (COLOR_CORRELATION, FourierParam, PixelParam, correlate, decorrelate, frequency_scale,
                                   image_to_spectrum, spectrum_to_image)

from .conftest import chromium_path, launch_chromium, one_and_two_processes, tiny_model


def test_a_known_spectrum_gives_the_known_image():
    h = w = 8
    spectrum = torch.zeros(1, 1, h, w // 2 + 1, dtype=torch.complex64)
    spectrum[0, 0, 0, 2] = 0.5  # a cosine of 2 periods along x
    image = spectrum_to_image(spectrum, (h, w), colour=False)
    # irfft2 (orthonormal) of one coefficient a at (0, k): 2a/sqrt(HW) cos(2πkx/W); scaled by 1/frequency = W/k, /4
    x = torch.arange(w, dtype=torch.float64)
    spatial = 2 * 0.5 / math.sqrt(h * w) * torch.cos(2 * math.pi * 2 * x / w) * (w / 2) / 4
    expected = torch.sigmoid(spatial).expand(h, w)
    assert torch.allclose(image[0, 0].double(), expected, atol=1e-6)
    assert frequency_scale(h, w)[0, 0] == max(h, w)  # the constant term: floored at 1/max(H,W)


def test_colour_decorrelation_is_invertible_and_the_spectrum_round_trips():
    x = torch.randn(2, 3, 5, 7)
    assert torch.allclose(correlate(decorrelate(x)), x, atol=1e-5)
    assert torch.allclose(COLOR_CORRELATION.norm(dim=0).max(), torch.tensor(1.0))
    image = torch.rand(2, 3, 12, 10) * 0.9 + 0.05
    back = spectrum_to_image(image_to_spectrum(image), (12, 10))
    assert torch.allclose(back, image, atol=1e-4)


def _acts():
    torch.manual_seed(0)
    return {"a": torch.randn(6, 4, 3, 3), "logits": torch.randn(6, 5)}  # 3 copies × batch of 2


def test_the_objective_algebra_gives_the_sum_of_its_parts():
    acts, b = _acts(), 2
    a3, a1, cls = O.channel("a", 3), O.neuron("a", 1, 0, 2), O.class_logit(4)
    total = a3 - 0.5 * a1 + 2 * cls
    expect = a3(acts, b) - 0.5 * a1(acts, b) + 2 * cls(acts, b)
    assert torch.allclose(total(acts, b), expect)
    # each term by hand: copy-major views, averaged over the 3 copies
    assert torch.allclose(a3(acts, b), acts["a"][:, 3].mean((1, 2)).view(3, 2).mean(0))
    assert torch.allclose(a1(acts, b), acts["a"][:, 1, 0, 2].view(3, 2).mean(0))
    assert torch.allclose(O.neuron("a", 1)(acts, b), acts["a"][:, 1, 1, 1].view(3, 2).mean(0))  # the centre
    parsed = O.parse("a:3 - 0.5*a:1@0,2 + 2*class:4")
    assert torch.allclose(parsed(acts, b), expect) and parsed.layers == ["a", "logits"]
    assert torch.allclose(O.parse("-a:3")(acts, b), -a3(acts, b))
    per = O.channels("a", [2, 0])(acts, b)
    assert torch.allclose(per, torch.stack([O.channel("a", 2)(acts, b)[0], O.channel("a", 0)(acts, b)[1]]))


def test_diversity_direction_and_deepdream_terms_by_hand():
    same = {"a": torch.rand(1, 4, 3, 3).repeat(2, 1, 1, 1)}
    assert torch.allclose(O.diversity("a")(same, 2), torch.tensor([-1.0, -1.0]), atol=1e-6)
    v = torch.tensor([1.0, 0, 0, 0])
    along = {"a": torch.zeros(1, 4, 2, 2)}
    along["a"][:, 0] = 3.0
    assert torch.allclose(O.direction("a", v)(along, 1), torch.tensor([1.0]))
    assert torch.allclose(O.deepdream("a")(along, 1), torch.tensor([9.0 / 4]))


def test_objective_spelling_errors_are_one_line():
    with pytest.raises(CnnlabError, match="cannot read objective term"):
        O.parse("block5")
    with pytest.raises(CnnlabError, match="out of range"):
        O.channel("a", 9)(_acts(), 2)


@pytest.mark.parametrize("param", ["pixel", "fourier"])
def test_rendering_ascends_the_objective_and_restores_the_model(param):
    model = tiny_model(input_size=16).train()
    obj = O.channel("0", 2)  # the first convolution's channel 2
    # a part's options beside its name, as the API and config files spell them (the pixel L2 penalty outweighs a tiny net)
    opts = RenderOptions.from_dict(dict(param=param, iters=30, frames=[10]) | ({"l2": 0.0} if param == "pixel" else {}))
    start = objective_values(model, obj, render(model, obj, opts.replace(iters=0), batch=2)[0])
    images, frames = render(model, obj, opts, batch=2)
    assert images.shape == (2, 3, 16, 16) and 0 <= images.min() and images.max() <= 1 and list(frames) == [10]
    assert (objective_values(model, obj, images) > start + 0.1).all()
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_pixel_rendering_with_no_transform_is_plain_gradient_ascent():
    """One pixel step by hand: x + lr·g/‖g‖ − with the L2 term's gradient − clamped."""
    model = tiny_model(input_size=8)
    obj = O.class_logit(1)
    opts = RenderOptions(param=PixelParam(blur_every=0, l2=0.0), iters=1, pad=0, jitter=0, augment=0)
    x0 = render(model, obj, opts.replace(iters=0))[0].requires_grad_(True)
    (g,) = torch.autograd.grad(model(x0)[:, 1].sum(), x0)
    expected = (x0 + g / g.norm()).clamp(0, 1)
    assert torch.allclose(render(model, obj, opts)[0], expected.detach(), atol=1e-6)


def test_dream_api_from_a_photo_and_cli_json(tmp_path, photo_files, capsys):
    r = cnnlab.dream("mnist_cnn", "dream:block1", image=photo_files["chelsea"], iters=10, size=32)  # 451×300 → 32×21
    assert r.images.shape == (1, 1, 21, 32) and r.summary()["terms"]["dream:block1"][0] > 0
    start = cnnlab.dream("mnist_cnn", "dream:block1", image=photo_files["chelsea"], iters=0, size=32)
    assert r.total[0] > start.total[0]  # DeepDream raised the activation of the photo
    code = main(["explain", "dream", "--backbone", "mnist_cnn", "--objective", "block2:3 - 0.5*block2:5", "--iters",
                 "5", "--batch", "2", "--out", str(tmp_path / "d"), "--json", "--quiet"], env={})
    s = json.loads(capsys.readouterr().out)
    assert code == 0 and set(s["terms"]) == {"block2:3", "block2:5"} and len(s["objective_value"]) == 2
    assert np.allclose(s["objective_value"], np.array(s["terms"]["block2:3"]) - 0.5 * np.array(s["terms"]["block2:5"]),
                       atol=1e-5)
    assert (tmp_path / "d" / "dream_1.png").is_file() and (tmp_path / "d" / "config.json").is_file()
    assert main(["explain", "dream", "--backbone", "mnist_cnn", "--objective", "blok2:3", "--iters", "1"],
                env={}) == 2
    assert "did you mean 'block2'" in capsys.readouterr().err


def test_a_direction_from_a_folder_is_the_mean_activation(tmp_path, photo_files):
    from cnnlab.explain.dream import direction_from

    model = cnnlab.load_model("mnist_cnn")
    v = direction_from(model, "block2", str(tmp_path))
    x = torch.stack([model.preprocess.read(p) for p in sorted(photo_files.values())])
    assert torch.allclose(v, model.features(x, ["block2"], pool="avg")["block2"].mean(0), atol=1e-5)
    r = cnnlab.dream(model, f"direction:block2={tmp_path}", iters=20)
    assert r.total[0] > cnnlab.dream(model, f"direction:block2={tmp_path}", iters=0).total[0]
    np.save(tmp_path / "v.npy", v.numpy())  # the same direction from a file draws the same image
    assert torch.allclose(cnnlab.dream(model, f"direction:block2={tmp_path / 'v.npy'}", iters=20).images, r.images,
                          atol=1e-5)


def _digits(tmp_path):
    """12 small grayscale images that differ (no shared data needed)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(12, 28, 28, 1, generator=g) > 0.7).numpy().astype(np.uint8) * 255
    path = tmp_path / "digits.npz"
    np.savez(path, X=np.repeat(x, 3, axis=3), y=np.arange(12) % 10)
    return path


ATLAS = ["--backbone", "mnist_cnn", "--layer", "block1", "--channels", "0:4", "--channel-batch", "2", "--iters", "16",
         "--diverse", "2", "--top", "3", "--chunk-size", "5", "--batch-size", "5", "--quiet"]


def test_atlas_streamed_equals_in_memory_and_the_channels_beat_their_top_images(tmp_path, capsys):
    data = _digits(tmp_path)
    assert main(["explain", "atlas", *ATLAS, "--data", str(data), "--out", str(tmp_path / "site"), "--json"],
                env={}) == 0
    s = json.loads(capsys.readouterr().out)
    parts = {p: p.stat().st_mtime_ns for p in (tmp_path / "site").glob("*/parts/part-*.jsonl")}
    assert len(parts) == 2 + 3  # 4 channels in chunks of 2, 12 images in chunks of 5
    assert main(["explain", "atlas", *ATLAS, "--data", str(data), "--out", str(tmp_path / "site"), "--json"],
                env={}) == 0  # a rerun: every part is reused, nothing is drawn again
    assert json.loads(capsys.readouterr().out)["objective"] == s["objective"]
    assert all(p.stat().st_mtime_ns == t for p, t in parts.items())
    mem = cnnlab.atlas("mnist_cnn", "block1", data=data, channels="0:4", channel_batch=2, iters=16, diverse=2, top=3,
                       chunk_size=5, batch_size=5)
    assert s["channels"] == [0, 1, 2, 3] and np.allclose(s["objective"], mem.values)
    assert np.array_equal(json.loads((tmp_path / "site" / "metrics.json").read_text())["beats"], mem.beats)
    assert mem.diverse.shape == (4, 2, 1, 28, 28) and mem.top.shape == (4, 3)
    # the top images are the dataset's highest channel means, in order
    model = cnnlab.load_model("mnist_cnn")
    X = torch.from_numpy(np.load(data)["X"]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        means = activations(model, X, ["block1"])["block1"][:, :4].flatten(2).mean(2)
    assert np.array_equal(mem.top, means.argsort(0, descending=True)[:3].T.numpy())
    assert np.allclose(mem.top_values, means.sort(0, descending=True).values[:3].T.numpy(), atol=1e-6)
    assert s["beats_top"] == float(np.mean(mem.values > mem.top_values.max(1)))
    assert main(["explain", "atlas", *ATLAS, "--out", str(tmp_path / "nodata"), "--channels", "0:99"], env={}) == 2
    assert "the layer has 32 channels" in capsys.readouterr().err


def test_two_torchrun_processes_draw_the_same_atlas_as_one(tmp_path):
    data = _digits(tmp_path)
    one_and_two_processes(["explain", "atlas", *ATLAS, "--data", str(data), "--diverse", "0"], tmp_path, 29579)
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert a["objective"] == b["objective"] and a["top_objective"] == b["top_objective"]
    for k in range(2):
        assert np.array_equal(*(np.load(tmp_path / d / "channels" / "images" / f"part-{k:05d}.npy")
                                for d in ("one", "two")))


@pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium (installed by .ci/run)")
def test_the_atlas_page_opens_offline_and_its_images_load(tmp_path):
    from playwright.sync_api import sync_playwright

    site = tmp_path / "site"
    cnnlab.atlas("mnist_cnn", "block1", data=_digits(tmp_path), channels="0:2", iters=5, diverse=1, top=2, out=site)
    outside = []
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page()
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(site.as_uri()) else None)
            page.goto((site / "index.html").as_uri(), wait_until="load")
            widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
            cards = page.eval_on_selector_all("section.card", "els => els.map(e => e.dataset.channel)")
        finally:
            browser.close()
    assert cards == ["0", "1"] and len(widths) == 2 * (1 + 1 + 2) and all(w > 0 for w in widths)
    assert outside == []


def test_classviz_keeps_the_reports_pixel_method_and_defaults_to_fourier():
    model = tiny_model(input_size=16)
    pixel = cnnlab.classviz(model, 1, param="pixel", iters=5, pad=0, jitter=16, augment=0, judge="none")
    fourier = cnnlab.classviz(model, 1, iters=5, judge="none")
    assert fourier.config.param == FourierParam() and pixel.config.param == PixelParam()
    assert pixel.image.shape == fourier.image.shape == (3, 16, 16)


def test_a_unit_dead_on_the_grey_start_is_still_drawn_and_relus_are_restored():
    """lucid's redirected ReLU gradient: the unit is 0 on grey (its ordinary gradient is 0), yet the image lifts it."""
    conv = nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.fill_(-2.0)
    relu = nn.ReLU(inplace=True)
    model = cnnlab.wrap(nn.Sequential(conv, relu, nn.AdaptiveAvgPool2d(1), nn.Flatten()), mean=(0.5,) * 3,
                        std=(0.25,) * 3, input_size=8, labels=["a"])
    obj, inplace = O.channel("1", 0), relu.inplace  # (wrap turns in-place activations off)
    grey = torch.full((1, 3, 8, 8), 0.5)
    assert objective_values(model, obj, grey).item() == 0
    images, _ = render(model, obj, RenderOptions(iters=60, pad=0, jitter=0, augment=0))
    assert objective_values(model, obj, images).item() > 0.1
    assert relu.inplace == inplace and not relu._forward_hooks
