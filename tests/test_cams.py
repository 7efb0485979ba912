"""The CAM family, RISE, Input×Gradient and Guided Backprop on tiny models whose maps can be worked out by hand."""
import pytest
import torch
from torch import nn

import cnnlab
from cnnlab.explain.saliency import METHODS


def _cam_model():
    """A 1×1 convolution (2 maps: cut point "0"), global average pooling, a linear head: the gradient of class t's
    score with respect to map k is W[t, k] / 16 at every position of the 4×4 map."""
    conv = nn.Conv2d(3, 2, 1, bias=False)
    head = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 0.5, -0.2], [-0.3, 0.8, 0.4]]).view(2, 3, 1, 1))
        head.weight.copy_(torch.tensor([[2.0, -1.0], [0.5, 1.5]]))
    net = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    return cnnlab.wrap(net, mean=(0.0,) * 3, std=(1.0,) * 3, input_size=4), conv, head


def test_layercam_and_gradcam_plus_plus_by_hand():
    model, conv, head = _cam_model()
    x = torch.rand(2, 3, 4, 4)
    acts = conv(x).detach()  # (2,2,4,4)
    targets = [0, 1]
    grads = torch.stack([head.weight[t].detach() / 16 for t in targets])[..., None, None]  # (2,2,1,1)
    layercam = (grads.clamp(min=0) * acts).sum(1).clamp(min=0)
    torch.testing.assert_close(METHODS["layercam"](layer=["0"]).attribute(model, x, targets), layercam)
    g = grads.expand_as(acts)
    alpha = g ** 2 / (2 * g ** 2 + acts.sum((2, 3), keepdim=True) * g ** 3 + 1e-7)
    weights = (alpha * g.clamp(min=0)).sum((2, 3), keepdim=True)
    torch.testing.assert_close(METHODS["gradcam++"](layer=["0"]).attribute(model, x, targets),
                               (weights * acts).sum(1).clamp(min=0))


def test_scorecam_weights_each_map_by_the_probability_of_the_image_it_masks():
    model, conv, _ = _cam_model()
    x = torch.rand(1, 3, 4, 4)
    acts = conv(x).detach()
    masks = (acts - acts.amin((2, 3), keepdim=True)) / (acts.amax((2, 3), keepdim=True) - acts.amin((2, 3), keepdim=True))
    with torch.no_grad():
        w = torch.stack([model(x * masks[:, k:k + 1]).softmax(1)[0, 1] for k in range(2)])
    torch.testing.assert_close(METHODS["scorecam"](layer=["0"], internal_batch_size=1).attribute(model, x, [1]),
                               (w.view(1, 2, 1, 1) * acts).sum(1).clamp(min=0))


def test_input_x_gradient_of_a_linear_model():
    torch.manual_seed(0)
    lin = nn.Linear(48, 3)
    model = cnnlab.wrap(nn.Sequential(nn.Flatten(), lin), mean=(0.0,) * 3, std=(1.0,) * 3, input_size=4)
    x = torch.rand(2, 3, 4, 4)
    expected = torch.stack([(x[i] * lin.weight[t].detach().view(3, 4, 4)).sum(0).abs() for i, t in enumerate([2, 0])])
    torch.testing.assert_close(METHODS["input-x-gradient"]().attribute(model, x, [2, 0]), expected)


def test_guided_backprop_passes_only_positive_gradients_through_relu_and_relu6():
    torch.manual_seed(0)
    for act in (nn.ReLU(), nn.ReLU6()):
        a, b = nn.Linear(12, 5), nn.Linear(5, 2)
        model = cnnlab.wrap(nn.Sequential(nn.Flatten(), a, act, b), mean=(0.0,) * 3, std=(1.0,) * 3, input_size=2)
        x = torch.rand(1, 3, 2, 2)
        pre = a(x.flatten(1)).detach()[0]
        alive = (pre > 0) & (pre < 6) if isinstance(act, nn.ReLU6) else pre > 0
        grad_pre = b.weight[1].detach().clamp(min=0) * alive  # the guided rule at the activation
        expected = (a.weight.detach().T @ grad_pre).view(3, 2, 2).abs().amax(0)
        torch.testing.assert_close(METHODS["guided-backprop"]().attribute(model, x, [1])[0], expected)
        assert not any(m._backward_hooks for m in model.modules())  # hooks removed


def test_rise_is_the_probability_weighted_mean_of_its_masks():
    rise = METHODS["rise"](rise_masks=50, rise_cells=3, rise_p=0.5, noise_seed=4, internal_batch_size=16)
    constant = cnnlab.wrap(nn.Sequential(nn.Flatten(), nn.Linear(48, 2)), mean=(0.0,) * 3, std=(1.0,) * 3, input_size=4)
    with torch.no_grad():
        constant.net[1].weight.zero_()
        constant.net[1].bias.copy_(torch.tensor([0.0, 1.0]))  # p(class 1) = sigmoid(1) whatever the image
    g = torch.Generator().manual_seed(4)
    masks = torch.cat([rise.random_masks(n, (4, 4), g) for n in (16, 16, 16, 2)])
    expected = torch.sigmoid(torch.tensor(1.0)) * masks[:, 0].mean(0) / 0.5
    torch.testing.assert_close(rise.attribute(constant, torch.rand(1, 3, 4, 4), [1])[0], expected)
    assert masks.min() >= 0 and masks.max() <= 1


def test_rise_finds_the_region_the_model_reads():
    class TopLeft(nn.Module):  # class 1's logit: brightness of the top-left quadrant
        def forward(self, x):
            s = 20 * x[:, :, :8, :8].mean(dim=(1, 2, 3))
            return torch.stack([torch.zeros_like(s), s - 10], 1)

    model = cnnlab.wrap(TopLeft(), mean=(0.0,) * 3, std=(1.0,) * 3, input_size=16)
    rise = METHODS["rise"](rise_masks=400, rise_cells=4, internal_batch_size=100)
    m = rise.attribute(model, torch.ones(1, 3, 16, 16), [1])[0]
    assert m[:8, :8].mean() > m[8:, 8:].mean() + 0.1 and m[:8, :8].mean() > m[:8, 8:].mean() + 0.05


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_on_the_shipped_digit_classifier(method):
    """mnist_cnn: 1-channel 28×28 inputs, smaller than occlusion's default patch."""
    digits = torch.rand(2, 1, 28, 28)
    quick = {k: v for k, v in dict(rise_masks=64, smoothgrad_samples=2, ig_steps=4).items() if METHODS.takes(method, k)}
    if METHODS[method].transformers_only:  # said in one line, before any work
        with pytest.raises(cnnlab.CnnlabError, match="mnist_cnn has no attention module"):
            cnnlab.saliency("mnist_cnn", digits, method=method)
        return
    res = cnnlab.saliency("mnist_cnn", digits, method=method, **quick)
    assert res.maps.shape == (2, 28, 28) and (res.maps >= 0).all() and torch.isfinite(res.maps).all()


def test_iterated_gradcam_keeps_gradcams_order_when_patches_do_not_interact():
    """The 1×1-convolution model reads each pixel alone: blurring some patches leaves the others' Grad-CAM as it
    was, so re-reading it after each step must give Grad-CAM's own order (patches are pixels at 16×16)."""
    from cnnlab.explain.faithfulness import patch_order

    model, _, _ = _cam_model()
    x = torch.rand(2, 3, 16, 16)
    cam = METHODS["gradcam"](layer=["0"]).attribute(model, x, [0, 1])
    it = METHODS["iterated-gradcam"](layer=["0"], stages=5, candidates=0).attribute(model, x, [0, 1])
    for b in range(2):
        k = int((cam[b] > 0).sum())  # past the positive part, Grad-CAM's zeros tie
        assert k > 10 and torch.equal(patch_order(it[b:b + 1], 1)[0, :k], patch_order(cam[b:b + 1], 1)[0, :k])


def test_iterated_gradcam_values_follow_the_removal_steps():
    digits = torch.zeros(3, 1, 28, 28)
    for k in range(3):  # strokes, explained for the class the model sees in them
        digits[k, 0, 5 + 2 * k:22, 8:12 + 3 * k] = 1.0
    model = cnnlab.load_model("mnist_cnn")
    targets = model(digits).argmax(1)
    maps = METHODS["iterated-gradcam"](stages=7, candidates=0).attribute(model, digits, targets)
    cams = METHODS["gradcam"]().attribute(model, digits, targets)
    assert cams[0].max() == 0 and (maps[0] == 0).all()  # Grad-CAM sees nothing: every patch stays tied at 0
    patches = torch.nn.functional.avg_pool2d(maps[:, None], 2).flatten(1)  # the 14×14 grid
    for b in (1, 2):
        removed = patches[b] > 0  # a patch Grad-CAM never marked stays at 0 (no order by position)
        step = (7 - patches[b][removed].floor().clamp(max=7)).long()  # value in [7-k, 8-k] → step k
        counts = torch.bincount(step, minlength=7)
        # by step k, at most (k + 1)/7 of the 196 patches are gone (fewer where Grad-CAM marks fewer)
        assert removed.sum() > 0 and (torch.cumsum(counts, 0) <= torch.arange(1, 8) * 28).all()


def test_iterated_gradcam_with_candidates_removes_what_lowers_the_probability_first():
    """Grad-CAM (a 1×1 convolution's: pixel by pixel) proposes; the class probability decides. On a model whose class
    score is the top-left pixel alone, that pixel goes first even where Grad-CAM ranks others higher."""
    class Corner(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1, bias=False)
            nn.init.ones_(self.conv.weight)

        def forward(self, x):
            a = self.conv(x)  # "0": the map Grad-CAM reads; its average is what the gradient sees everywhere
            return torch.stack([a.mean((1, 2, 3)) + 5 * x[:, 0, 0, 0], torch.full((len(x),), 3.0)], 1)

    model = cnnlab.wrap(Corner(), mean=(0.0,), std=(1.0,), input_size=14)
    x = torch.full((1, 1, 14, 14), 0.5)
    x[0, 0, 0, 0], x[0, 0, 7, 7] = 0.6, 1.0  # Grad-CAM's top pixel is (7, 7); the score hangs on (0, 0)
    plain = METHODS["iterated-gradcam"](layer=["conv"], stages=4, blur_sigma=3.0, candidates=0).attribute(model, x, [0])[0]
    picked = METHODS["iterated-gradcam"](layer=["conv"], stages=4, blur_sigma=3.0, candidates=49).attribute(model, x, [0])[0]
    assert plain[7, 7] > plain[0, 0] and picked[0, 0] == picked.max()


def test_gradcam_plus_plus_keeps_to_layers_whose_activations_are_non_negative():
    """Its α weights assume activations ≥ 0: a default layer with negative ones (a linear bottleneck) is left out,
    and a layer the user names there gets a warning."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model = cnnlab.wrap(net, mean=(0.5,) * 3, std=(0.5,) * 3, input_size=4)
    model.cam_layers = ("1", "0")  # after the ReLU, and the convolution before it (negative values)
    x, targets = torch.rand(2, 3, 4, 4), [0, 2]
    torch.testing.assert_close(METHODS["gradcam++"]().attribute(model, x, targets),
                               METHODS["gradcam++"](layer=["1"]).attribute(model, x, targets))
    with pytest.warns(UserWarning, match="gradcam\\+\\+ assumes non-negative activations; .* of 0's are negative"):
        METHODS["gradcam++"](layer=["0"]).attribute(model, x, targets)
    # Grad-CAM, which makes no such assumption, reads both
    assert not torch.equal(METHODS["gradcam"]().attribute(model, x, targets),
                           METHODS["gradcam"](layer=["1"]).attribute(model, x, targets))
