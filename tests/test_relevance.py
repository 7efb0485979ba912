"""Relevance propagation: LRP for CNNs (zennit's composites, BatchNorm folded where the probe pass finds it feeding a
convolution) and AttnLRP for transformers (lxt's rules on timm's, torchvision's and Hugging Face's modules). Each
conserves the class score where the network has no bias (the relevance at the input sums to the logit, within
1e-4 of it), and each equals the peer's own output: zennit's canonizer on a Sequential network, lxt's own patches
on torchvision's ViT."""
import copy
import importlib.util
import re
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

import cnnlab
from cnnlab.explain.saliency import METHODS

zennit = pytest.importorskip("zennit")


def _no_bias(net: nn.Module) -> nn.Module:
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias") or name.rsplit(".", 1)[-1] in ("cls_token", "pos_embed", "class_token",
                                                                     "pos_embedding"):
                p.zero_()
    return net


def _cnn(bias: bool = True):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():  # a BatchNorm that is not the identity, so that folding it matters
        bn = net[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
    return cnnlab.wrap((net if bias else _no_bias(net)).eval(), mean=(0.5,) * 3, std=(0.25,) * 3, input_size=16)


def _logits(model, x, targets):
    with torch.no_grad():
        return model(x).gather(1, targets.view(-1, 1))[:, 0]


@pytest.mark.parametrize("composite", ["epsilon-plus", "epsilon-plus-flat"])
def test_lrp_conserves_the_class_score_without_biases(composite):
    model = _cnn(bias=False)
    with torch.no_grad():
        model.net[1].running_mean.zero_()  # a BatchNorm with no shift: folded, it adds no bias
        model.net[1].bias.zero_()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1, 2])
    relevance = METHODS["lrp"](lrp_composite=composite).relevance(model, x, targets)
    torch.testing.assert_close(relevance.sum((1, 2, 3)), _logits(model, x, targets), rtol=1e-4, atol=1e-5)


def test_lrp_folds_batchnorm_as_zenniths_own_canonizer_does():
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat

    model = _cnn()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([3, 1])
    ours = METHODS["lrp"]().relevance(model, x, targets)
    net = copy.deepcopy(model.net)
    onehot = torch.eye(4)[targets]
    xn = model.normalize(x).requires_grad_(True)
    with Gradient(model=net, composite=EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])) as attributor:
        _, theirs = attributor(xn, lambda out: onehot * out)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_lrp_is_refused_in_one_line_on_a_transformer_and_attnlrp_on_a_cnn():
    with pytest.raises(cnnlab.CnnlabError, match=r"has a LayerNorm .* use attnlrp \(it has attention\)"):
        cnnlab.saliency("mnist_vit", torch.rand(1, 1, 28, 28), method="lrp")
    with pytest.raises(cnnlab.CnnlabError, match=r"no attention module .*use lrp \(a CNN it has rules for\)"):
        cnnlab.saliency("mnist_cnn", torch.rand(1, 1, 28, 28), method="attnlrp")


def test_a_cnn_with_layernorm_is_sent_to_gradcam_by_both_relevance_methods():
    """A ConvNeXt-like CNN (LayerNorm, no attention) has neither method: each refusal names one that applies, never
    the other refusal."""
    from torch import nn

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(1, 4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3))
    model = cnnlab.wrap(net.eval(), mean=(0.5,) * 3, std=(0.25,) * 3, input_size=16)
    for name in ("lrp", "attnlrp"):
        with pytest.raises(cnnlab.CnnlabError, match="use gradcam$"):
            cnnlab.saliency(model, torch.rand(1, 3, 16, 16), method=name)


def _vit(bias: bool = True):
    import timm

    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=5).eval()
    with torch.no_grad():
        net.head.weight.normal_(0, 0.5)
    return cnnlab.wrap(net if bias else _no_bias(net), mean=(0.5,) * 3, std=(0.25,) * 3, input_size=32)


def test_attnlrp_cp_conserves_the_class_score_on_a_vit_without_biases():
    """CP-LRP holds the attention constant: the network is then linear in its input, and the relevance is
    conserved. (The full AttnLRP variant lets relevance through the softmax, whose Gradient×Input is not
    conservative: it is checked against lxt's own patches instead.)"""
    model = _vit(bias=False)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([1, 4])
    relevance = METHODS["attnlrp"]().relevance(model, x, targets)
    torch.testing.assert_close(relevance.sum((1, 2, 3)), _logits(model, x, targets), rtol=1e-4, atol=1e-5)
    assert model.net.blocks[0].attn.fused_attn == type(model.net.blocks[0].attn)(32).fused_attn  # restored


@contextmanager
def _forwards_restored(*classes):
    """lxt patches `forward` on the classes themselves (and leaves `original_forward` beside it): put both back."""
    saved = {cls: cls.forward for cls in classes}
    try:
        yield
    finally:
        for cls, forward in saved.items():
            cls.forward = forward
            if hasattr(cls, "original_forward"):
                del cls.original_forward


def _lxt_patches():
    """lxt's own efficient patches (lxt/efficient/patches.py), run from its file with its rules: its package's
    __init__ does not import under transformers 5."""
    from cnnlab.explain.saliency.relevance import _lxt_rules

    spec = importlib.util.find_spec("lxt")
    source = (Path(list(spec.submodule_search_locations)[0]) / "efficient" / "patches.py").read_text()
    source = re.sub(r"^from lxt\.efficient\.rules import .*$", "", source, flags=re.M)
    rules = _lxt_rules()
    space = {"stop_gradient": rules.stop_gradient, "divide_gradient": rules.divide_gradient,
             "identity_rule_implicit": rules.identity_rule_implicit, "__name__": "lxt_patches"}
    exec(compile(source, "lxt/efficient/patches.py", "exec"), space)  # noqa: S102 — the peer's code, as shipped
    return space


def test_attnlrp_cp_equals_lxts_own_patches_on_torchvisions_vit():
    pytest.importorskip("lxt")
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    net = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                            num_classes=5).eval()
    with torch.no_grad():
        net.heads.head.weight.normal_(0, 0.5)
    model = cnnlab.wrap(net, mean=(0.5,) * 3, std=(0.25,) * 3, input_size=32)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    targets = torch.tensor([2, 0])
    ours = METHODS["attnlrp"]().relevance(model, x, targets)
    lxt = _lxt_patches()  # lxt's vit_torch cp_LRP map: GELU, LayerNorm and MultiheadAttention, patched on the classes
    with _forwards_restored(nn.GELU, nn.LayerNorm, nn.MultiheadAttention):
        lxt["patch_method"](lxt["non_linear_forward"], nn.GELU, keep_original=True)
        lxt["patch_method"](lxt["layer_norm_forward"], nn.LayerNorm)
        lxt["patch_method"](lxt["cp_multi_head_attention_forward"], nn.MultiheadAttention, keep_original=True)
        xn = model.normalize(x).requires_grad_(True)
        score = net(xn).gather(1, targets.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, xn)
    torch.testing.assert_close(ours, xn.detach() * grad, rtol=1e-4, atol=1e-6)


def test_attnlrp_on_a_hugging_face_vit_conserves_without_biases():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    image_size=32, patch_size=8, num_labels=5)
    net = _no_bias(transformers.ViTForImageClassification(config).eval())
    with torch.no_grad():
        net.vit.embeddings.cls_token.zero_()
        net.vit.embeddings.position_embeddings.zero_()
    model = cnnlab.wrap(net)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    targets = torch.tensor([3, 1])
    relevance = METHODS["attnlrp"]().relevance(model, x, targets)
    torch.testing.assert_close(relevance.sum((1, 2, 3)), _logits(model, x, targets), rtol=1e-4, atol=1e-5)


def test_full_attnlrp_equals_lxts_own_patches_on_a_hugging_face_vit():
    """lxt's AttnLRP patches for transformers (the uniform rule inside every attention function of the module,
    LayerNorm's and GELU's identity rules on their classes), applied to a transformers ViT, give cnnlab's
    attnlrp_variant="attnlrp" relevance."""
    transformers = pytest.importorskip("transformers")
    import transformers.models.vit.modeling_vit as vit_module
    from transformers.activations import GELUActivation

    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    image_size=32, patch_size=8, num_labels=5)
    net = transformers.ViTForImageClassification(config).eval()
    model = cnnlab.wrap(net)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    targets = torch.tensor([0, 2])
    ours = METHODS["attnlrp"](attnlrp_variant="attnlrp").relevance(model, x, targets)
    lxt = _lxt_patches()
    saved_attention = vit_module.eager_attention_forward
    implementation = net.config._attn_implementation
    with _forwards_restored(nn.LayerNorm, GELUActivation):
        try:
            net.set_attn_implementation("eager")
            lxt["patch_method"](lxt["layer_norm_forward"], nn.LayerNorm)
            lxt["patch_method"](lxt["non_linear_forward"], GELUActivation, keep_original=True)
            vit_module.eager_attention_forward = lxt["wrap_attention_forward"](vit_module.eager_attention_forward)
            xn = model.normalize(x).requires_grad_(True)
            score = net(xn).logits.gather(1, targets.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, xn)
        finally:
            vit_module.eager_attention_forward = saved_attention
            net.set_attn_implementation(implementation)
    torch.testing.assert_close(ours, xn.detach() * grad, rtol=1e-4, atol=1e-6)


def test_relevance_maps_are_at_pixel_resolution_and_move_with_the_target():
    model = cnnlab.load_model("mnist_vit")
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(6))
    a = cnnlab.saliency(model, x, method="attnlrp", target="3").maps
    b = cnnlab.saliency(model, x, method="attnlrp", target="7").maps
    assert a.shape == (1, 28, 28) and not torch.allclose(a, b)
    blocks = a[0].reshape(7, 4, 7, 4)  # not constant over the 4×4 patches: finer than the token grid
    assert (blocks.std((1, 3)) > 0).float().mean() > 0.5


def _bright_blobs(n: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    x = torch.zeros(n, 3, 32, 32)
    for i in range(n):
        cy, cx = torch.randint(6, 26, (2,), generator=g)
        x[i] = (torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0) + 0.1 * torch.rand(32, 32, generator=g)).clamp(0, 1)
    return x


def test_a_leaderboard_where_the_image_alone_wins_crowns_no_method(tmp_path, capsys):
    """A network whose class score is the image's brightness (positive filters, a positive head): deleting the
    brightest pixels first is the best deletion there is, so no explanation can beat the input-only control, and the
    table, the ★ line and the JSON say so."""
    from cnnlab.explain.leaderboard import dominated, recommended

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.abs_()
        net[0].bias.zero_()
        net[4].weight.copy_(torch.tensor([[1.0, 1, 1, 1], [-1, -1, -1, -1]]))
        net[4].bias.zero_()
    model = cnnlab.wrap(net.eval(), mean=(0.0,) * 3, std=(1.0,) * 3, input_size=32)
    res = cnnlab.evaluate_saliency(model, _bright_blobs(), methods=["gradcam", "vanilla", "input-x-gradient"],
                                   metrics=["deletion", "insertion", "randomization"], target="0")
    s = res.summary()
    board = {r["method"]: r for r in s["leaderboard"]}
    assert board["brightness"]["control"] and board["edges"]["control"] and not board["vanilla"]["control"]
    assert "recommended" not in s and recommended(res.leaderboard) is None
    beaten = s["dominated_by_control"]
    assert beaten == dominated(res.leaderboard) and beaten["control"] == "brightness"
    assert beaten["control_aggregate_rank"] <= beaten["method_aggregate_rank"]
    assert "brightness (control)" in res.short_markdown() and "★" not in res.short_markdown().split("\n\n")[0]
    assert "no ★: no method beats the input-only control brightness" in res.short_markdown()
    assert "brightness (control)" in res.markdown()
    without = cnnlab.evaluate_saliency(model, _bright_blobs(), methods=["vanilla"], metrics=["deletion", "insertion"],
                                       target="0", controls=False)
    assert [r["method"] for r in without.leaderboard] == ["vanilla"]  # --no-controls: the methods alone


def test_attnlrp_gamma_is_zenniths_generalized_gamma_and_still_conserves():
    """--attnlrp-gamma: zennit's generalized γ rule on the linear layers (signed inputs allowed), in the
    Gradient×Input framework; on a network both take (linear layers and ReLUs, γ on the hidden ones, ε on the head)
    it equals zennit's own relevance, and on a ViT without biases the relevance still sums to the logit."""
    from zennit.attribution import Gradient
    from zennit.composites import NameMapComposite
    from zennit.rules import Epsilon, Gamma

    from cnnlab.explain.saliency.relevance import attnlrp_rules

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(4, 6)  # signed inputs: the generalized rule's case
    targets = torch.tensor([0, 1, 2, 1])
    onehot = torch.eye(3)[targets]
    composite = NameMapComposite([(["0", "2"], Gamma(gamma=0.5)), (["4"], Epsilon(epsilon=1e-9))])
    with Gradient(model=net, composite=composite) as attributor:
        _, theirs = attributor(x.clone().requires_grad_(True), lambda out: onehot * out)
    xr = x.clone().requires_grad_(True)
    with attnlrp_rules(net, gamma=0.5):
        (grad,) = torch.autograd.grad(net(xr).gather(1, targets.view(-1, 1)).sum(), xr)
    torch.testing.assert_close(xr.detach() * grad, theirs, rtol=1e-4, atol=1e-6)
    model = _vit(bias=False)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([1, 4])
    relevance = METHODS["attnlrp"](attnlrp_gamma=0.25).relevance(model, x, targets)
    torch.testing.assert_close(relevance.sum((1, 2, 3)), _logits(model, x, targets), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, options", [("lrp", {"lrp_gamma": 1e308}), ("lrp", {"lrp_epsilon": 1e300}),
                                           ("attnlrp", {"attnlrp_gamma": 1e308})])
def test_a_relevance_setting_past_its_range_is_refused_not_a_flat_map(name, options):
    with pytest.raises(cnnlab.CnnlabError, match=r"must be in .*100\]"):
        METHODS.build(name, options)
