"""Model-randomization sanity checks (Adebayo et al. 2018) on hand-checkable cases."""
import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.core.errors import CnnlabError
from cnnlab.core.table import REGISTRY
from cnnlab.explain.saliency import SaliencyMethod, method
from cnnlab.explain.sanity import (ALIVE_AT_LEAST, MARGIN, check_alive, fresh_samples, map_ssim, model_randomization,
                                   output_spread, randomization_steps, randomized_copy, rank_correlation)


class ImageOnly(SaliencyMethod):
    """A 'map' that reads the image and ignores the model: the check must catch it."""

    def _maps(self, backbone, x, targets):
        return x.detach().mean(dim=1)


def test_rank_correlation_is_spearmans_with_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, (3, 6, 6)).astype(np.float32)  # many ties
    b = a + rng.normal(0, 1.5, a.shape).astype(np.float32)
    got = rank_correlation(torch.from_numpy(a), torch.from_numpy(-b))  # absolute values are compared
    expected = [spearmanr(np.abs(x).ravel(), np.abs(y).ravel())[0] for x, y in zip(a, -b)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    m = torch.rand(2, 8, 8)
    torch.testing.assert_close(rank_correlation(m, m), torch.ones(2))
    torch.testing.assert_close(map_ssim(m, m), torch.ones(2))


def test_steps_go_from_the_logits_down_to_the_input():
    assert randomization_steps(cnnlab.load_model("mnist_cnn")) == ["fc", "hidden", "conv.6", "conv.3", "conv.0"]
    lite = randomization_steps(cnnlab.load_model("efficientnet_lite0"))
    assert lite[0] == "classifier" and lite[-1] == "conv_stem" and lite.index("blocks.6") < lite.index("blocks.0")


def test_cascading_randomization_leaves_the_model_alone_and_catches_a_map_of_the_image():
    model = cnnlab.load_model("mnist_cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(3, 1, 28, 28)
    fake = model_randomization(model, x, [1, 2, 3], ImageOnly())
    assert fake.steps == randomization_steps(model) and fake.maps.shape == (6, 3, 28, 28)
    torch.testing.assert_close(fake.rank_corr, torch.ones(5, 3))
    assert not fake.passes
    real = model_randomization(model, x, [1, 2, 3], "gradcam")
    assert real.rank_corr.shape == (5, 3) and real.final_rank_corr < 0.9
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # a copy was randomized
    one = model_randomization(model, x, [1, 2, 3], "vanilla", cascading=False)
    assert not one.cascading and one.rank_corr.shape == (5, 3)
    final = model_randomization(model, x, [1, 2, 3], "gradcam", final_only=True)  # the cascade's end alone
    assert final.steps == ["every unit"] and final.maps.shape == (2, 3, 28, 28)
    torch.testing.assert_close(final.maps[-1], real.maps[-1], rtol=0, atol=0)
    for key in ("rank_corr", "null_rank_corr"):  # NaN where a map is constant (random digits can kill the ReLUs)
        torch.testing.assert_close(getattr(final, key)[-1], getattr(real, key)[-1], rtol=0, atol=0, equal_nan=True)
    assert final.passes == real.passes


PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "hubble_deep_field", "immunohistochemistry", "retina")


def photos(size: int, n: int = 8) -> torch.Tensor:
    """scikit-image's colour photos, (n,3,size,size) in [0,1]."""
    import skimage.data
    import torch.nn.functional as F

    xs = [torch.from_numpy(np.ascontiguousarray(getattr(skimage.data, p)()[..., :3])).permute(2, 0, 1)[None].float()
          / 255 for p in PHOTOS[:n]]
    return torch.cat([F.interpolate(x, size=(size, size), mode="bilinear", antialias=True) for x in xs])


@pytest.mark.parametrize("name", list(REGISTRY))
def test_the_randomized_copy_of_every_registry_model_still_depends_on_its_input(name):
    from cnnlab.core.models import load_model

    model = load_model(name, weights="default" if name.startswith(("efficientnet", "mnist")) else "random")
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0)) if name.startswith("mnist") else photos(64)
    random = randomized_copy(model)
    assert output_spread(random, x) >= ALIVE_AT_LEAST * output_spread(model, x)  # std over 8 inputs ≥ 1 % of trained
    assert check_alive(model, random, x) >= ALIVE_AT_LEAST
    assert all(p.requires_grad == q.requires_grad for p, q in zip(model.parameters(), random.parameters()))


def test_randomized_copy_stops_at_a_unit_and_refuses_unknown_ones_and_dead_copies():
    model = cnnlab.load_model("mnist_cnn")
    steps = randomization_steps(model)
    top = randomized_copy(model, upto=steps[0], seed=3)
    changed = {k for k, v in top.state_dict().items() if not torch.equal(v, model.state_dict()[k])}
    assert changed == {"net.fc.weight", "net.fc.bias"}
    assert torch.equal(randomized_copy(model, seed=3).net.fc.weight, top.net.fc.weight)  # the same draw per unit
    with pytest.raises(CnnlabError, match="did you mean 'hidden'"):
        randomized_copy(model, upto="hiden")
    dead = randomized_copy(model)
    torch.nn.init.zeros_(dead.net.fc.weight)  # logits = the bias, whatever the input
    with pytest.raises(CnnlabError, match="do not vary with the input"):
        check_alive(model, dead, torch.rand(4, 1, 28, 28))


def test_a_constant_map_has_no_rank_correlation():
    a, flat = torch.rand(2, 5, 5), torch.ones(2, 5, 5)
    assert rank_correlation(a, flat).isnan().all() and not rank_correlation(a, a).isnan().any()


def test_sampling_methods_draw_fresh_samples_for_the_randomized_model():
    rise = method("rise")
    assert fresh_samples(rise).noise_seed == rise.noise_seed + 1 and rise.noise_seed == 0  # a copy: unchanged
    both = method("smoothgrad-gradcam")  # a sampling method inside another one draws fresh samples too
    assert fresh_samples(both).noise_seed == 1 and fresh_samples(both).layer == both.layer
    gradcam = method("gradcam")
    assert fresh_samples(gradcam) is gradcam


def _verdicts(model, x):
    with torch.no_grad():
        targets = model(x).argmax(1).tolist()
    return {m: model_randomization(model, x, targets, m).summary() for m in ("edges", "gradcam")}


def test_the_edge_map_control_fails_and_gradcam_passes_against_the_null():
    """On the offline Lite0 (6 photos) and on mnist_cnn (8 real test digits): the check can fail and can pass."""
    from cnnlab.core.data import load_mnist

    from .conftest import SHARED_DATA

    cases = [(cnnlab.load_model("efficientnet_lite0"), photos(224, 6))]
    if (SHARED_DATA / "MNIST" / "raw").exists():
        Xt, _ = load_mnist(str(SHARED_DATA), train=False)
        cases.append((cnnlab.load_model("mnist_cnn"), Xt[:8].float() / 255))
    for model, x in cases:
        v = _verdicts(model, x)
        edges, cam = v["edges"], v["gradcam"]
        assert edges["final_rank_corr"] == pytest.approx(1.0, abs=1e-4) and not edges["passes"], model.name
        assert edges["excess_ci"][0] > MARGIN  # the whole interval above the margin
        assert cam["passes"] and cam["final_rank_corr"] - cam["null_rank_corr"] <= MARGIN, (model.name, cam)
        assert cam["undefined"] < len(x)  # a constant map (a dead ReLU CAM) is counted, not scored
        assert cam["null_rank_corr_ci"][0] <= cam["null_rank_corr"] <= cam["null_rank_corr_ci"][1]
