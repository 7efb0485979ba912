"""The zoo sweep's fast subset: one small model of each layout kind — channels-first maps, channels-last maps, tokens
after a class token, patch-only tokens, a Hugging Face ViT — through every job the sweep runs (benchmarks/zoo.py;
the whole sweep's table is in docs/benchmarks.md). No crash, no flat map without a warning saying why, rollout and
Chefer a map where a class token reads global attention and a one-line refusal elsewhere."""
import importlib.util
from pathlib import Path

import pytest
import torch

import cnnlab

timm = pytest.importorskip("timm")
ZOO = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo.py"


@pytest.fixture(scope="module")
def zoo():
    spec = importlib.util.spec_from_file_location("zoo", ZOO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _small(name: str, size: int, **kw):
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, num_classes=10, **kw).eval()
    return net, size


def _models():
    yield "nchw", _small("resnet18", 64), False
    yield "nhwc", _small("swin_tiny_patch4_window7_224", 56, img_size=56, depths=(1, 1), num_heads=(1, 2),
                         embed_dim=16), False
    yield "tokens after a class token", _small("vit_tiny_patch16_224", 32, img_size=32, patch_size=8, depth=2), True
    yield "patch-only tokens", _small("cait_xxs24_224", 32, img_size=32, patch_size=8, depth=2,
                                      depth_token_only=1), True
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    image_size=32, patch_size=8, num_labels=10)
    yield "hugging face", (transformers.ViTForImageClassification(config).eval(), None), True


@pytest.mark.parametrize("kind", ["nchw", "nhwc", "tokens after a class token", "patch-only tokens", "hugging face"])
def test_one_model_of_each_layout_kind_through_every_job(zoo, kind):
    _, (net, size), class_token = next(m for m in _models() if m[0] == kind)
    zoo.redraw_zeros(net)
    model = cnnlab.wrap(net) if size is None else cnnlab.wrap(net, mean=(0.5,) * 3, std=(0.5,) * 3, input_size=size)
    rows = zoo.jobs_on(model)
    for job, row in rows.items():
        assert row["status"] not in ("crash", "flat-silent"), (job, row)
        if row["status"] == "refused":
            assert job in ("rollout", "chefer") and "\n" not in row["why"], (job, row)
    assert rows["gradcam"]["status"] in ("ok", "flat") and rows["gradcam"]["layer"]
    for job in ("rollout", "chefer"):
        assert (rows[job]["status"] != "refused") == class_token, (job, rows[job])


def test_a_flat_map_from_never_measured_batchnorm_statistics_says_so_and_measuring_them_fixes_it(zoo):
    """The true cause of a flat late map on a random network: BatchNorm still at mean 0, variance 1 does not center a
    channel's offset (here a conv bias of 1000), so the map is that offset plus a trace. Once the statistics are
    measured (the sweep's own `measure_norms`: one train-mode pass over other photos) the same layer gives a map, and
    the cause is not claimed; the network comes back in eval mode with its momentum."""
    import warnings

    from torch import nn

    from cnnlab.explain.saliency import FlatMapWarning

    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 5, padding=2)
    with torch.no_grad():
        conv.bias.fill_(1000.0)
    net = nn.Sequential(conv, nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model = cnnlab.wrap(net.eval(), mean=(0.5,) * 3, std=(0.25,) * 3, input_size=32, name="offset")
    x = torch.zeros(1, 3, 32, 32)
    x[..., 8:16, 8:16] = 1.0
    with pytest.warns(FlatMapWarning, match="BatchNorm layer.* initial statistics"):
        cnnlab.saliency(model, x, method="gradcam", target=0, layer=["2"])

    assert zoo.measure_norms(model) == 1 and zoo.measure_norms(model) == 0  # measured once: then it is data's
    assert not net.training and net[1].momentum == 0.1 and net[1].num_batches_tracked == 1
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        r = cnnlab.saliency(model, x, method="gradcam", target=0, layer=["2"])
    assert not [w for w in said if "initial statistics" in str(w.message)]
    m = r.maps.flatten(1)
    assert float(m.std() / m.abs().mean()) > 0.05
