"""cnnlab against independent implementations (dev extras; each test is skipped without its library):
- the CAM maps against pytorch-grad-cam's (`grad-cam`): the same model, layer, photos and classes give maps of rank
  correlation ≥ 0.99;
- ROAD and the cascading model-randomization score against Quantus's on the same maps and model."""
import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.core.images import pil_to_tensor, sample_photos
from cnnlab.explain.metrics import ROAD_PERCENTAGES, noisy_linear_imputation, road_curves
from cnnlab.explain.saliency import METHODS
from cnnlab.explain.sanity import model_randomization


@pytest.mark.parametrize("ours, theirs", [("gradcam", "GradCAM"), ("gradcam++", "GradCAMPlusPlus"),
                                          ("layercam", "LayerCAM")])
def test_cam_maps_agree_with_pytorch_grad_cam(lite0, ours, theirs):
    cam = pytest.importorskip("pytorch_grad_cam")
    stats = pytest.importorskip("scipy.stats")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = torch.stack([lite0.preprocess(pil_to_tensor(p)) for p in list(sample_photos().values())[:3]])
    with torch.no_grad():
        targets = lite0(x).argmax(1).tolist()
    mine = METHODS[ours](["head"]).attribute(lite0, x, targets).numpy()
    module = dict(lite0.net.named_modules())[lite0.resolve("head").module]
    with getattr(cam, theirs)(model=lite0, target_layers=[module]) as other:
        their = other(input_tensor=x.clone(), targets=[ClassifierOutputTarget(t) for t in targets])
    for a, b in zip(mine, their):
        assert stats.spearmanr(a.ravel(), b.ravel())[0] >= 0.99


def _strokes() -> torch.Tensor:
    """8 digit-sized images of strokes (no data needed), for the shipped MNIST classifier."""
    x = torch.zeros(8, 1, 28, 28)
    for k in range(8):
        x[k, 0, 5 + k:22, 8:12 + k] = 1.0
        x[k, 0, 5:8, 6:20 - k] = 1.0
    return x


def test_road_agrees_with_quantus():
    quantus = pytest.importorskip("quantus")
    from quantus.functions.perturb_func import noisy_linear_imputation as theirs

    rng = np.random.default_rng(0)  # the imputation itself, on a colour image with holes: the same to rounding
    image, removed = rng.random((3, 20, 24)), rng.random((20, 24)) < 0.6
    np.testing.assert_allclose(noisy_linear_imputation(image, removed, noise=0.0),
                               theirs(image, np.flatnonzero(removed), noise=0.0), atol=1e-12)
    model, x = cnnlab.load_model("mnist_cnn"), _strokes()
    targets = model(x).argmax(1)
    maps = METHODS["vanilla"]().attribute(model, x, targets)
    maps = maps + 1e-6 * torch.rand(maps.shape, generator=torch.Generator().manual_seed(0))  # no ties to order
    _, hits = road_curves(model, x, maps, targets, noise=0.0)  # without noise both are deterministic: equal
    q = quantus.ROAD(percentages=list(ROAD_PERCENTAGES), noise=0.0, abs=False, normalise=False,
                     disable_warnings=True, display_progressbar=False)(
        model=model, x_batch=x.numpy(), y_batch=targets.numpy(), a_batch=maps[:, None].numpy(), device="cpu")
    np.testing.assert_allclose(hits.float().mean(0).numpy(), [q[p] for p in ROAD_PERCENTAGES])


@pytest.mark.parametrize("name", ["vanilla", "input-x-gradient", "guided-backprop"])
def test_cascading_randomization_agrees_with_quantus_mprt(name):
    """The last step of both (every layer re-drawn) from different random draws: cnnlab's mean over 3 seeds and
    Quantus's MPRT within 0.1. The spread between seeds is ~0.03 (guided-backprop's sd on these images; the
    others' is smaller), so 0.1 is about 3 sd: a real difference in what is randomized or compared (a layer left
    trained, signed instead of absolute maps, Pearson instead of Spearman) moves the score by more."""
    quantus = pytest.importorskip("quantus")
    model, x = cnnlab.load_model("mnist_cnn"), _strokes()
    targets = model(x).argmax(1)
    method = METHODS[name]()

    def explain(model, inputs, targets, **_):
        return method.attribute(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()[:, None]

    q = quantus.MPRT(similarity_func=quantus.similarity_func.correlation_spearman, layer_order="top_down", seed=0,
                     return_last_correlation=True, abs=True, normalise=True, disable_warnings=True,
                     display_progressbar=False)(model=model, x_batch=x.numpy(), y_batch=targets.numpy(), a_batch=None,
                                                explain_func=explain, device="cpu")
    ours = np.mean([float(model_randomization(model, x, targets, method, seed=s).rank_corr[-1].mean())
                    for s in range(3)])
    assert abs(float(np.mean(q)) - ours) <= 0.1, (float(np.mean(q)), ours)
