"""Model-randomization sanity checks (Adebayo et al. 2018) on hand-checkable cases."""
import numpy as np
import torch

import cnnlab
from cnnlab.explain.saliency import SaliencyMethod
from cnnlab.explain.sanity import map_ssim, model_randomization, randomization_steps, rank_correlation


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
