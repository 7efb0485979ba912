"""Transformers and channels-last models (random weights: the structure is what is checked): the default Grad-CAM
layer is the one rule's (`core.probe`: the deepest output laid on the image through which the class score's gradient
flows — a class-token ViT's last norm1, as pytorch-grad-cam's examples; a pooling Swin's final norm, the classic CAM
layer), its map is not flat, the result names the layer, and at that layer cnnlab's Grad-CAM equals
pytorch-grad-cam's with its documented reshape_transform."""
import warnings

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.core.layout import Layout, layout_of

pytest.importorskip("timm")

# model → (the default layer, pytorch-grad-cam's reshape_transform for it: tokens without their prefix, or NHWC)
MODELS = {
    "timm:vit_tiny_patch16_224": ("blocks.11.norm1", 1),
    "timm:deit_tiny_distilled_patch16_224": ("blocks.11.norm1", 2),
    "timm:swin_tiny_patch4_window7_224": ("norm", "nhwc"),  # its head pools the final norm: the gradient flows
    "torchvision:vit_b_16": ("encoder.layers.encoder_layer_11.ln_1", 1),
    "torchvision:swin_t": ("permute", None),  # the final norm's output, channels first, read by the pooling head
    "timm:convnext_atto": ("norm_pre", None),
    # architectures no test was tuned on
    "timm:eva02_tiny_patch14_224": ("norm", 1),  # it averages its patch tokens: the last ones are read
    "timm:vit_small_patch14_reg4_dinov2": ("blocks.11.norm1", 5),
}


def _theirs_reshape(kind):
    if kind is None:
        return None
    if kind == "nhwc":
        return lambda t: t.permute(0, 3, 1, 2)

    def tokens(t):  # pytorch-grad-cam's vit_example.py, with the prefix tokens the model has
        n = t.shape[1] - kind
        side = int(n ** 0.5)
        return t[:, kind:, :].reshape(t.size(0), side, side, t.size(2)).permute(0, 3, 1, 2)
    return tokens


@pytest.mark.parametrize("spec", list(MODELS))
def test_default_gradcam_reads_the_peers_layer_is_not_flat_and_equals_pytorch_grad_cam(spec):
    cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer, kind = MODELS[spec]
    model = cnnlab.load_model(spec, weights="random")
    size = model.preprocess.input_size
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    if spec == "torchvision:vit_b_16":  # its head starts at zero: every gradient is 0, and cnnlab says the map is flat
        with pytest.warns(UserWarning, match="class score does not depend on the input"):  # the true cause
            cnnlab.saliency(model, x[:1], method="gradcam")
        with torch.no_grad():  # a trained head is not zero
            model.net.heads.head.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a flat map would warn: here that fails the test
        res = cnnlab.saliency(model, x, method="gradcam")
    assert res.summary()["layer"] == layer
    maps = res.maps
    assert (maps.flatten(1).amax(1) - maps.flatten(1).amin(1) > 0).all()
    targets = res.targets
    with cam.GradCAM(model=model, target_layers=[model.net.get_submodule(layer)],
                     reshape_transform=_theirs_reshape(kind)) as other:
        theirs = other(input_tensor=x.clone(), targets=[ClassifierOutputTarget(int(t)) for t in targets])
    for a, b in zip(maps.numpy(), theirs):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] >= 0.95


def test_layouts_read_tokens_and_channels_last_and_refuse_attention_internals():
    net = torch.nn.Module()
    net.num_prefix_tokens = 2
    tokens = torch.arange(2 * 6 * 3, dtype=torch.float).view(2, 6, 3)  # 2 prefix tokens + a 2×2 grid, 3 channels
    lay = layout_of(tokens, (32, 32), net, batch=2)
    assert lay == Layout("tokens", (2, 2), 2)
    torch.testing.assert_close(lay.to_nchw(tokens)[1, :, 1, 0], tokens[1, 2 + 2])  # row 1, column 0: token 2+2
    nhwc = torch.rand(1, 7, 7, 96)
    norm = torch.nn.LayerNorm(96)
    assert layout_of(nhwc, (224, 224), net, norm).kind == "nhwc"
    assert layout_of(torch.rand(1, 96, 7, 7), (224, 224), net).kind == "nchw"
    # a (B, heads, N, head_dim) query and a (B, heads, N, N) attention matrix are not laid on the image
    assert layout_of(torch.rand(1, 3, 197, 64), (224, 224), net) is None
    assert layout_of(torch.rand(4, 96, 7, 7), (224, 224), net, batch=1) is None  # windows stacked on the batch


def test_a_layer_with_no_image_layout_is_refused_in_one_line():
    model = cnnlab.load_model("timm:vit_tiny_patch16_224", weights="random")
    with pytest.raises(cnnlab.CnnlabError, match=r"head gives \(1, 1000\): pass --layer .* blocks.11.norm1"):
        cnnlab.saliency(model, torch.rand(1, 3, 224, 224), method="gradcam", layer="head")
    # a token layer a user names is read on its grid (it was refused as 'not spatial')
    res = cnnlab.saliency(model, torch.rand(1, 3, 224, 224), method="gradcam", layer="blocks.5.norm1")
    assert res.summary()["layer"] == "blocks.5.norm1" and float(res.maps.max()) > 0


def _small_vit():
    from .conftest import tiny_vit

    return tiny_vit()


@pytest.mark.parametrize("kind", ["vit", "cnn"])
def test_every_method_gives_a_map_that_varies_or_a_one_line_refusal(kind):
    from cnnlab.core.config import part_fields
    from cnnlab.explain.saliency import METHODS, FlatMapWarning

    from .conftest import tiny_model

    model = _small_vit() if kind == "vit" else tiny_model(input_size=32)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    fast = {"smoothgrad_samples": 2, "ig_steps": 4, "rise_masks": 16, "stages": 2, "candidates": 2}
    refused, flat = {}, {}
    for name in METHODS:
        mine = {f.name for f in part_fields(METHODS[name])}
        try:
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always")
                res = cnnlab.saliency(model, x, method=name, **{k: v for k, v in fast.items() if k in mine})
        except cnnlab.CnnlabError as exc:
            assert "\n" not in str(exc), name
            refused[name] = str(exc)
            continue
        maps = res.maps
        spread = maps.flatten(1).amax(1) - maps.flatten(1).amin(1)
        assert maps.shape == (2, 32, 32), name
        if not (spread > 0).all():  # a flat map is only ever returned with a warning that names it
            flat[name] = [str(w.message) for w in said if issubclass(w.category, FlatMapWarning)]
            assert flat[name] and flat[name][0].startswith(f"{name}: the map of"), name
    # each family's own methods refuse the other: LRP's rules are for CNNs, the attention maps for transformers
    assert set(refused) == ({"lrp"} if kind == "vit" else {"rollout", "chefer", "attnlrp"}), refused
    assert len(flat) <= 2, flat  # a random model may give no patch evidence for its class: said, and rare


def test_classviz_draws_for_a_vit_at_its_input_size(tmp_path):
    from cnnlab.cli import main

    assert main(["explain", "classviz", "--backbone", "timm:vit_tiny_patch16_224", "--weights", "random", "--iters",
                 "2", "--class", "1", "--quiet", "--out", str(tmp_path)]) == 0


def test_rollout_of_uniform_attention_is_the_known_constant_and_said_to_be_flat():
    """Queries and keys at zero: every attention row is uniform (1/N), so one block's rollout of the class token over
    a patch is 0.5/N (half the residual, half the uniform attention) — the same everywhere, a flat map, said."""
    from cnnlab.explain.saliency import FlatMapWarning
    from cnnlab.explain.saliency.attention import Rollout

    model = _small_vit()
    for block in model.net.blocks:
        with torch.no_grad():
            block.attn.qkv.weight[:64].zero_()  # q and k rows (the first 2 × embed_dim)
            block.attn.qkv.bias[:64].zero_()
    model.net.blocks = model.net.blocks[:1]
    x = torch.rand(1, 3, 32, 32)
    with pytest.warns(FlatMapWarning, match="rollout: the map of 1 of 1"):
        maps = Rollout().attribute(model, x, [0])
    torch.testing.assert_close(maps, torch.full_like(maps, 0.5 / 17))  # 16 patches + the class token


@pytest.mark.parametrize("kind", ["timm", "torchvision"])
def test_attention_matrices_leave_the_logits_and_the_fused_path_as_they_were(kind):
    from torchvision.models.vision_transformer import VisionTransformer

    from cnnlab.explain.saliency.attention import attention_matrices

    torch.manual_seed(0)
    net = _small_vit().net if kind == "timm" else VisionTransformer(32, 8, 2, 2, 32, 64, num_classes=5).eval()
    x = torch.rand(2, 3, 32, 32)
    flags = [getattr(m, "fused_attn", None) for m in net.modules()]
    with torch.no_grad():
        before = net(x)
        with attention_matrices(net) as attns:
            inside = net(x)
    assert len(attns) == 2 and attns[0].shape == (2, 2, 17, 17)
    torch.testing.assert_close(attns[0].sum(-1), torch.ones(2, 2, 17))  # rows of a softmax
    torch.testing.assert_close(inside, before, atol=1e-5, rtol=1e-5)
    assert [getattr(m, "fused_attn", None) for m in net.modules()] == flags
    assert all("forward" not in vars(m) for m in net.modules())


def test_features_read_class_tokens_patch_means_and_channels_last_maps_by_their_layout():
    from .conftest import tiny_vit

    model = tiny_vit()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert {"block1_cls", "block1_mean", "block2_cls", "block2_mean"} <= set(model.cut_points)
    with torch.no_grad():
        tokens = model.net.blocks(model.net.norm_pre(model.net._pos_embed(model.net.patch_embed(model.normalize(x)))))
    got = model.features(x, ["block2_cls", "block2_mean", "blocks.1"])
    torch.testing.assert_close(got["block2_cls"], tokens[:, 0])
    torch.testing.assert_close(got["block2_mean"], tokens[:, 1:].mean(1))  # the class token left out, as timm's avg
    torch.testing.assert_close(got["blocks.1"], tokens[:, 1:].mean(1))
    swin = cnnlab.load_model("timm:swin_tiny_patch4_window7_224", weights="random")
    img = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    from cnnlab.core.hooks import capture, run_until_captured

    with torch.no_grad(), capture(swin.net, {"s": swin.resolve("stage3")}) as store:
        run_until_captured(swin.net, swin.normalize(img))
    assert store["s"].shape == (1, 7, 7, 768)  # channels last: pooled over the 7×7 grid, not over (7, 768)
    torch.testing.assert_close(swin.features(img, ["stage3"])["stage3"], store["s"].mean((1, 2)))


def test_fine_tuning_a_vit_over_blocks_trains_its_tokens_only_with_every_unit():
    from cnnlab.transfer.finetune import param_groups
    from cnnlab.transfer.recipe import Recipe

    from .conftest import tiny_vit

    model = tiny_vit()
    last = param_groups(model, 1, Recipe(lr=1e-3, layer_decay=0.5))
    assert [g["unit"] for g in last] == ["head", "blocks.1"] and last[1]["glue"] == ["norm"]  # the final norm too
    assert not model.net.cls_token.requires_grad and not model.net.pos_embed.requires_grad
    every = param_groups(model, 2, Recipe(lr=1e-3, layer_decay=0.5))
    assert [g["unit"] for g in every][-1] == "blocks.0" and every[-1]["glue"] == ["patch_embed.proj"]
    assert all(p.requires_grad for p in model.net.parameters())  # the class token and position embeddings too


def test_fool_atlas_and_dream_run_on_a_vit_reading_tokens_on_their_grid():
    from cnnlab.explain.dream import activations
    from cnnlab.explain.objectives import channel

    from .conftest import tiny_vit

    model = tiny_vit()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    acts = activations(model, x, ["blocks.1", "block2_cls"])
    assert acts["blocks.1"].shape == (3, 32, 4, 4) and acts["block2_cls"].shape == (3, 32)  # 16 patches, no cls
    with torch.no_grad():
        tokens = model.net.blocks(model.net.norm_pre(model.net._pos_embed(model.net.patch_embed(model.normalize(x)))))
    torch.testing.assert_close(channel("blocks.1", 5)(acts, 3), tokens[:, 1:, 5].mean(1))
    fooled = cnnlab.fool(model, x[:2], target=1, max_iters=3)
    assert fooled.summary()["summary"]["n"] == 2 and fooled.summary()["summary"]["median_linf"] > 0
    for layer in ("blocks.1", "block2_cls"):
        board = cnnlab.atlas(model, layer, data=x, iters=3, channels="0,1", top=2, size=32)
        assert board.summary()["layer"] == layer
    assert cnnlab.dream(model, "dream:blocks.1", image=x[:1], iters=2).summary()


def test_the_fully_randomized_copy_of_a_vit_redraws_its_class_token_and_position_embeddings():
    from cnnlab.explain.sanity import randomization_steps, randomized_copy

    from .conftest import tiny_vit

    model = tiny_vit()
    every = randomized_copy(model)
    assert not torch.equal(every.net.cls_token, model.net.cls_token)
    assert not torch.equal(every.net.pos_embed, model.net.pos_embed)
    top = randomized_copy(model, upto=randomization_steps(model)[0])  # the head alone
    assert torch.equal(top.net.pos_embed, model.net.pos_embed)


def test_transfer_fits_on_a_vits_class_token_and_patch_mean_cut_points(tiny_scenes):
    from .conftest import tiny_vit

    model = tiny_vit()
    t = cnnlab.transfer(tiny_scenes, model, split="random:3", layers=["block2_cls+block1_mean"], Cs=[1.0], folds=2,
                        workers=0)
    assert t.summary()["n_train"] == 9 and t.selected["layer"] == "block2_cls+block1_mean"
    feats = model.features(torch.rand(2, 3, 32, 32), ["block2_cls", "block1_mean"])
    assert feats["block2_cls"].shape == feats["block1_mean"].shape == (2, 32)  # one token, one mean: the width each
