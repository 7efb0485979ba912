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
