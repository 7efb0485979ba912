"""A property of every saliency method's map, on models where the answer is known (not only its shape):

- a CNN method's map moves with the target: on a network whose class 0 sees red and class 1 green (1×1 detectors
  behind a ReLU, then global pooling), the map of 'red' lies on the red square and the map of 'green' on the green
  one, and neither is on the square its class cannot see;
- an input-only control is the same whatever the target (it reads the image alone);
- rollout is class-agnostic (the attention flow does not depend on the class), while Chefer's relevance and AttnLRP
  move with the target on the shipped digit ViT and lie on the strokes rather than the black background.
"""
import pytest
import torch
from torch import nn

import cnnlab
from cnnlab.explain.saliency import METHODS

QUICK = dict(smoothgrad_samples=4, ig_steps=8, occlusion_window=4, occlusion_stride=4, rise_masks=400, rise_cells=4)
RED, GREEN = (slice(4, 12), slice(4, 12)), (slice(20, 28), slice(20, 28))


def colour_model():
    det = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        det.weight.copy_(torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0]]).view(2, 3, 1, 1))
    head = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2) * 100)  # logits of a few units: probabilities that move
    net = nn.Sequential(det, nn.ReLU(), nn.Conv2d(2, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    with torch.no_grad():
        net[2].weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        net[2].bias.zero_()
    return cnnlab.wrap(net.eval(), mean=(0.0,) * 3, std=(1.0,) * 3, input_size=32, labels=["red", "green"])


def squares() -> torch.Tensor:
    x = torch.zeros(1, 3, 32, 32)
    x[0, 0][RED] = 1.0
    x[0, 1][GREEN] = 1.0
    return x


def mass(m: torch.Tensor, where) -> float:
    """A map's mass in a square above its floor (RISE's map is an expected score: never 0)."""
    return float((m - m.min())[where].sum())


CNN_METHODS = [n for n, cls in METHODS.items() if not cls.transformers_only and not cls.control]


@pytest.mark.parametrize("name", CNN_METHODS)
def test_a_cnn_methods_map_moves_with_the_target(name):
    model, x = colour_model(), squares()
    method = METHODS.build(name, {k: v for k, v in QUICK.items() if METHODS.takes(name, k)})
    red, green = method.attribute(model, x.expand(2, -1, -1, -1).clone(), [0, 1])
    assert mass(red, RED) > 2 * mass(red, GREEN) and mass(green, GREEN) > 2 * mass(green, RED), \
        (mass(red, RED), mass(red, GREEN), mass(green, GREEN), mass(green, RED))


@pytest.mark.parametrize("name", [n for n, cls in METHODS.items() if cls.control])
def test_an_input_only_control_ignores_the_target(name):
    model, x = colour_model(), squares()
    red, green = METHODS.build(name, {}).attribute(model, x.expand(2, -1, -1, -1).clone(), [0, 1])
    assert torch.equal(red, green) and red.sum() > 0


@pytest.fixture(scope="module")
def digit_vit():
    model = cnnlab.load_model("mnist_vit")
    x = torch.zeros(2, 1, 28, 28)
    x[0, 0, 5:23, 12:16] = 1.0  # a vertical stroke: a one
    x[1, 0, 5:9, 7:21], x[1, 0, 5:23, 17:21] = 1.0, 1.0  # a seven
    return model, x


def test_rollout_is_class_agnostic(digit_vit):
    model, x = digit_vit
    a = METHODS.build("rollout", {}).attribute(model, x, [0, 0])
    b = METHODS.build("rollout", {}).attribute(model, x, [1, 7])
    assert torch.allclose(a, b)


@pytest.mark.parametrize("name", ["chefer", "attnlrp"])
def test_a_transformer_relevance_moves_with_the_target_and_lies_on_the_strokes(name, digit_vit):
    model, x = digit_vit
    preds = model(x).argmax(1)
    method = METHODS.build(name, {})
    own = method.attribute(model, x, preds)
    other = method.attribute(model, x, (preds + 3) % 10)
    assert not torch.allclose(own, other, rtol=1e-3, atol=1e-6)  # it depends on the class asked
    strokes = x[:, 0] > 0
    for b in range(2):  # the share of relevance on the strokes is above their share of the image
        share = float(own[b][strokes[b]].sum() / own[b].sum())
        assert share > 2 * float(strokes[b].float().mean()), (b, share)
