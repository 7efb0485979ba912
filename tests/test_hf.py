"""Hugging Face `transformers` image classifiers as first-class backbones, on small random configs and
`save_pretrained` folders (offline): `cnnlab.wrap` with no arguments and `hf:FOLDER` run every job; the default
Grad-CAM equals pytorch-grad-cam's with its documented Hugging Face wrapper; rollout and Chefer read the eager
attention and equal rollout and Chefer computed from the model's own `output_attentions`."""
import warnings

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.cli import main

transformers = pytest.importorskip("transformers")


def small_vit(labels: int = 5, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.ViTConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
                                    image_size=32, patch_size=8, num_labels=labels,
                                    id2label={i: f"kind {i}" for i in range(labels)},
                                    label2id={f"kind {i}": i for i in range(labels)})
    return transformers.ViTForImageClassification(config).eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "vit"
    small_vit().save_pretrained(path)
    return path


def _x(n=2, size=32, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_wrap_takes_a_transformers_model_as_it_is():
    net = small_vit()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its preprocessing is its own: no ImageNet-default note
        model = cnnlab.wrap(net)
    assert model.labels == tuple(f"kind {i}" for i in range(5))  # id2label
    assert model.preprocess.mean == (0.5, 0.5, 0.5) and model.preprocess.input_size == 32  # ViT's processor, config
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(pixel_values=(x - 0.5) / 0.5).logits)
    assert cnnlab.classify(model, x).results[0]["top"][0]["label"].startswith("kind ")


def test_hf_folder_loads_offline_with_its_own_files_and_equals_the_module(folder):
    model = cnnlab.load_model(f"hf:{folder}")
    assert model.spec == f"hf:{folder}" and model.labels[0] == "kind 0" and "hf-folder" in model.weights_id
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(model(x), cnnlab.wrap(small_vit())(x))
    assert cnnlab.load_model(f"hf:{folder}", weights="random:1").weights == "random:1"


def test_an_hf_name_neither_cached_nor_reachable_is_one_line_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(cnnlab.CnnlabError, match="hf:nobody/nothing are not in the local cache .*HF_HUB_OFFLINE"):
        cnnlab.load_model("hf:nobody/nothing")


def test_the_default_gradcam_is_the_last_layers_first_norm_and_equals_pytorch_grad_cam():
    cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net = small_vit()
    model = cnnlab.wrap(net)
    x = _x(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        res = cnnlab.saliency(model, x)  # the default method (Grad-CAM) at the default layer
    assert res.layer == "vit.layers.2.layernorm_before"  # the patch tokens that still feed attention

    class HuggingfaceToTensorModelWrapper(torch.nn.Module):  # pytorch-grad-cam's Hugging Face tutorial, verbatim
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x).logits

    def reshape_transform(tensor, height=4, width=4):  # its ViT example: drop the class token, lay out the grid
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    with cam.GradCAM(model=HuggingfaceToTensorModelWrapper(net), target_layers=[net.vit.layers[-1].layernorm_before],
                     reshape_transform=reshape_transform) as theirs:
        maps = theirs(input_tensor=(x - 0.5) / 0.5, targets=[ClassifierOutputTarget(int(t)) for t in res.targets])
    for a, b in zip(res.maps.numpy(), maps):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] >= 0.95


def _rollout(attentions):  # Abnar & Zuidema 2020, from the model's own output_attentions
    eye = torch.eye(attentions[0].shape[-1])
    r = eye.expand(len(attentions[0]), -1, -1)
    for a in attentions:
        a = 0.5 * a.mean(1) + 0.5 * eye
        r = (a / a.sum(-1, keepdim=True)) @ r
    return r[:, 0, 1:]


def test_rollout_and_chefer_read_transformers_attention_and_restore_its_implementation():
    net = small_vit()
    net.set_attn_implementation("sdpa")
    model = cnnlab.wrap(net)
    x = _x(2)
    ours = cnnlab.saliency(model, x, method="rollout").maps
    assert net.config._attn_implementation == "sdpa"  # put back
    net.set_attn_implementation("eager")
    with torch.no_grad():
        attentions = net((x - 0.5) / 0.5, output_attentions=True).attentions
    net.set_attn_implementation("sdpa")
    expected = torch.nn.functional.interpolate(_rollout(attentions).reshape(2, 1, 4, 4), size=(32, 32),
                                               mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)
    # Chefer: each block's attention times its gradient for the class, positive part averaged over heads
    targets = cnnlab.saliency(model, x, method="chefer").targets
    net.set_attn_implementation("eager")
    out = net((x - 0.5) / 0.5, output_attentions=True)
    for a in out.attentions:
        a.retain_grad()
    out.logits.gather(1, torch.tensor(targets).view(-1, 1)).sum().backward()
    n = out.attentions[0].shape[-1]
    relevance = torch.eye(n).expand(2, -1, -1)
    for a in out.attentions:
        relevance = relevance + (a.grad * a).clamp(min=0).mean(1) @ relevance
    net.set_attn_implementation("sdpa")
    expected = torch.nn.functional.interpolate(relevance[:, 0, 1:].reshape(2, 1, 4, 4).detach(), size=(32, 32),
                                               mode="bilinear", align_corners=False)[:, 0].clamp(min=0)
    torch.testing.assert_close(cnnlab.saliency(model, x, method="chefer").maps, expected, rtol=1e-4, atol=1e-6)


def test_every_job_runs_on_an_hf_folder_from_the_command_line(folder, tmp_path, capsys):
    from PIL import Image

    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for k, colour in enumerate(((200, 40, 40), (40, 200, 40), (40, 40, 200))):
        (data / f"c{k}").mkdir(parents=True)
        for i in range(6):
            img = np.clip(np.array(colour) + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(data / f"c{k}" / f"{i}.png")
    photo = str(data / "c0" / "0.png")
    spec = f"hf:{folder}"
    for argv in (["classify", photo], ["explain", "saliency", photo], ["explain", "saliency", photo, "--method", "rollout"],
                 ["explain", "saliency", photo, "--method", "chefer"],
                 ["explain", "evaluate", photo, "--methods", "gradcam,chefer", "--metrics", "deletion,insertion"],
                 ["explain", "fool", photo, "--target", "kind 3", "--max-iters", "3"],
                 ["explain", "classviz", "--class", "kind 1", "--iters", "2", "--judge", "none"],
                 ["features", "--data", str(data), "--layers", "pre_logits", "--no-cache"],
                 ["transfer", "--data", str(data), "--split", "random:4", "--finetune", "last:2", "--epochs", "1",
                  "--workers", "0", "--no-cache"]):
        out = tmp_path / argv[0] / str(len(argv))
        assert main([*argv, "--backbone", spec, "--out", str(out), "--json", "--quiet"]) == 0, argv
        capsys.readouterr()
    summary = cnnlab.transfer(data, spec, split="random:4", finetune="last:2", epochs=1, workers=0,
                              cache=False).summary()
    assert summary["trained"]["blocks"] == ["vit.layers.2", "vit.layers.1"]  # two transformer blocks, deepest first


def test_a_module_that_says_nothing_gets_imagenets_preprocessing_with_a_note():
    class Dict(torch.nn.Module):  # an output that carries its logits under a key
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            return {"logits": self.fc(self.conv(x).mean((2, 3))), "extra": 1}

    with pytest.warns(UserWarning, match="using ImageNet's mean and std at 224 pixels"):
        model = cnnlab.wrap(Dict())
    assert model.preprocess.input_size == 224 and model.num_classes == 3
    assert model(torch.rand(1, 3, 224, 224)).shape == (1, 3)


def test_attention_methods_refuse_models_without_a_read_class_token_before_any_forward_pass():
    import timm

    passes = []
    for net, size, why in [
        (timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, global_pool="avg"), 32,
         "it pools its patch tokens"),
        (timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, class_token=False,
                           reg_tokens=1, global_pool="avg"), 32, "it has no class token"),
        (timm.create_model("swin_tiny_patch4_window7_224", img_size=56, depths=(1, 1), num_heads=(1, 2),
                           embed_dim=16), 56, "it has no class token"),
    ]:
        model = cnnlab.wrap(net.eval(), mean=(0.5,) * 3, std=(0.5,) * 3, input_size=size)
        handle = model.register_forward_pre_hook(lambda *a: passes.append(1))
        with pytest.raises(cnnlab.CnnlabError, match=why):
            cnnlab.saliency(model, torch.rand(1, 3, model.preprocess.input_size, model.preprocess.input_size),
                            method="rollout")
        handle.remove()
    assert not passes


def test_patch_tokens_without_a_declared_prefix_are_laid_on_the_image():
    """CaiT's patch-only tokens (it declares a class token it adds later), a transformers ViT (it declares none)."""
    import timm

    from cnnlab.core.layout import Layout, layout_of

    cait = timm.create_model("cait_xxs24_224", img_size=32, patch_size=8, depth=2, depth_token_only=1)
    assert layout_of(torch.rand(1, 16, 8), (32, 32), cait) == Layout("tokens", (4, 4), 0)
    assert layout_of(torch.rand(1, 17, 8), (32, 32), cait) == Layout("tokens", (4, 4), 1)
    vit = small_vit()
    assert layout_of(torch.rand(1, 17, 8), (32, 32), vit) == Layout("tokens", (4, 4), 1)
    model = cnnlab.wrap(cait.eval(), mean=(0.5,) * 3, std=(0.5,) * 3, input_size=32)
    with torch.no_grad():
        for p in model.net.head.parameters():
            p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    assert model.last_spatial_layer().startswith("blocks_token_only.0")  # the head reads the class token there


def test_import_cnnlab_does_not_import_transformers():
    import subprocess
    import sys

    code = "import sys, cnnlab; cnnlab.load_model, cnnlab.wrap; print('transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
