"""cnnlab's CAM maps against an independent implementation, pytorch-grad-cam (the `grad-cam` dev extra; skipped
without it): the same model, layer, photos and classes give maps of rank correlation ≥ 0.99."""
import pytest
import torch

import cnnlab
from cnnlab.core.images import pil_to_tensor, sample_photos
from cnnlab.explain.saliency import METHODS

cam = pytest.importorskip("pytorch_grad_cam")
stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("ours, theirs", [("gradcam", "GradCAM"), ("gradcam++", "GradCAMPlusPlus"),
                                          ("layercam", "LayerCAM")])
def test_cam_maps_agree_with_pytorch_grad_cam(lite0, ours, theirs):
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
