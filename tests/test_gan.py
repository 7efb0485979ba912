import json
import os
import subprocess
import sys

import pytest
import torch

import cnnlab

from cnnlab.cli import main
from cnnlab.core.errors import CnnlabError
from cnnlab.gan.models import build_gan
from cnnlab.gan.sampling import load_generator
from cnnlab.gan.training import BatchStream, GanConfig, load_checkpoint

from .conftest import SHARED_DATA, shared


def train(config, out, resume=False, progress=False) -> dict:
    return cnnlab.gan.train(config=config, out=out, resume=resume, progress=progress).summary()


def sample(checkpoint, out, **options) -> dict:
    result = cnnlab.gan.sample(checkpoint, **options)
    result.save(out)
    return result.summary()


@pytest.mark.parametrize("model, nc, size", [("dcgan", 3, 64), ("cdcgan", 1, 28), ("cgan", 1, 28)])
def test_shapes_and_conditioning(model, nc, size):
    G, D = build_gan(model, nz=16, ngf=8, ndf=8, nc=nc, image_size=size)
    z, y = torch.randn(4, 16), torch.tensor([0, 1, 2, 3])
    x = G(z, y)
    assert x.shape == (4, nc, size, size) and x.min() >= -1 and x.max() <= 1
    assert D(x, y).shape == (4,)
    if model != "dcgan":  # the label changes both networks' outputs
        G.eval(), D.eval()
        assert not torch.allclose(G(z, y), G(z, y.flip(0)))
        assert not torch.allclose(D(x, y), D(x, y.flip(0)))
        _, D_blind = build_gan(model, nz=16, ngf=8, ndf=8, nc=nc, image_size=size, label_in_d=False)
        D_blind.eval()
        assert torch.equal(D_blind(x, y), D_blind(x, y.flip(0)))
    w = [m.weight for m in G.modules() if isinstance(m, (torch.nn.Linear, torch.nn.ConvTranspose2d))]
    assert abs(torch.cat([t.flatten() for t in w]).std().item() - 0.02) < 0.004


def test_batch_stream_is_a_pure_function_of_the_step_and_shards_cover_the_batch():
    a, b = BatchStream(10, 4, seed=3), BatchStream(10, 4, seed=3)
    assert [a.indices(k).tolist() for k in range(5)] == [b.indices(k).tolist() for k in reversed(range(5))][::-1]
    first_epoch = torch.cat([a.indices(k) for k in range(2)]).tolist() + a.indices(2).tolist()[:2]
    assert sorted(first_epoch) == list(range(10))
    shards = [BatchStream(10, 4, 3, rank=r, world=2).indices(1) for r in range(2)]
    assert sorted(torch.cat(shards).tolist()) == sorted(a.indices(1).tolist())


def tiny(**kw) -> GanConfig:
    base = dict(model="cdcgan", data="mnist", data_root=str(SHARED_DATA), nz=8, ngf=8, ndf=8, batch=16, iters=6,
                checkpoint_every=3, limit=256, seed=1)
    base.update(kw)
    return GanConfig(**base)


def test_resume_equals_uninterrupted(tmp_path):
    shared("MNIST", "raw")
    train(tiny(model="cgan"), tmp_path / "full", progress=False)
    train(tiny(model="cgan", iters=3), tmp_path / "part", progress=False)
    s = train(tiny(model="cgan"), tmp_path / "part", resume=True, progress=False)
    assert s["resumed_from"] == 3
    full, part = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    for key in ("generator", "discriminator"):
        for name, tensor in full[key].items():
            assert torch.equal(tensor, part[key][name]), name
    assert full["history"] == part["history"]


def test_bf16_autocast_trains_fp32_weights(tmp_path):
    shared("MNIST", "raw")
    train(tiny(model="cgan", iters=4, precision="fp32"), tmp_path / "fp32", progress=False)
    s = train(tiny(model="cgan", iters=4, precision="bf16"), tmp_path / "bf16", progress=False)
    a, b = (load_checkpoint(tmp_path / r / "checkpoint.pt")["generator"] for r in ("fp32", "bf16"))
    assert all(t.dtype == torch.float32 for t in b.values() if t.is_floating_point())
    assert not all(torch.equal(a[k], b[k]) for k in a)  # the forward passes really ran in bf16
    assert max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point()) < 1e-2  # …close to fp32
    assert all(v == v for v in s["final"].values())  # no NaN
    with pytest.raises(CnnlabError, match="precision"):
        train(tiny(precision="fp16"), tmp_path / "bad", progress=False)


def test_precision_auto_is_bf16_only_where_it_is_native(tmp_path):
    from cnnlab.core.precision import native_bf16

    assert native_bf16("cpu", {"avx2", "avx512_bf16"}) and native_bf16("cpu", {"amx_bf16", "avx2"})
    assert not native_bf16("cpu", {"avx2", "avx512f"}) and not native_bf16("meta")
    shared("MNIST", "raw")
    s = train(tiny(model="cgan", iters=2, precision="auto"), tmp_path / "auto", progress=False)
    ran = json.loads((tmp_path / "auto" / "config.json").read_text())["precision"]
    assert ran == ("bf16" if native_bf16("cpu") else "fp32") == s["precision"]  # the run says what ran


def test_a_few_iterations_lower_the_discriminator_loss(tmp_path):
    shared("MNIST", "raw")
    s = train(tiny(iters=30, checkpoint_every=30, limit=512), tmp_path / "run", progress=False)
    h = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["history"]["loss_D"]
    assert sum(h[-5:]) / 5 < sum(h[:3]) / 3
    for name in ("loss_curves.png", "metrics.json", "config.json", "grid_000030.png"):
        assert (tmp_path / "run" / name).is_file()
    assert s["final"]["D_x"] > s["final"]["D_G_z"]


def test_ddp_two_cpu_processes(tmp_path):
    shared("MNIST", "raw")
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", "-m", "cnnlab",
           "gan", "train", "--model", "cdcgan", "--data", "mnist", "--data-root", str(SHARED_DATA), "--nz", "8",
           "--ngf", "8", "--ndf", "8", "--batch", "16", "--iters", "4", "--limit", "128", "--checkpoint-every", "2",
           "--grid-at", "2", "--out", str(out), "--quiet", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)  # only rank 0 prints
    assert summary["world_size"] == 2 and summary["iterations"] == 4
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["iteration"] == 4 and len(ck["rng"]["noise"]) == 2


def test_sampling_file_names_and_the_shipped_generator(tmp_path):
    sample(None, tmp_path / "s", label=7, n=5)
    assert sorted(os.listdir(tmp_path / "s")) == sorted([f"7_{i}.png" for i in range(5)]
                                                        + ["grid.png", "samples.png", "metrics.json", "config.json"])
    G, config = load_generator(None)
    assert config["model"] == "cdcgan"
    with pytest.raises(CnnlabError, match="out of range"):
        sample(None, tmp_path / "x", label=12)


def test_unconditional_sampling_names(tmp_path):
    shared("celeba64", "faces")
    train(GanConfig(model="dcgan", data="celeba64", data_root=str(SHARED_DATA), nz=8, ngf=8, ndf=8, batch=8,
                    iters=2, limit=32), tmp_path / "d", progress=False)
    s = sample(tmp_path / "d" / "checkpoint.pt", tmp_path / "s", n=3)
    assert [os.path.basename(f) for f in s["files"]] == ["x_0.png", "x_1.png", "x_2.png"]
    with pytest.raises(CnnlabError, match="unconditional"):
        sample(tmp_path / "d" / "checkpoint.pt", tmp_path / "s2", label=1, n=2)


def test_evaluate_the_shipped_generator(tmp_path, capsys, monkeypatch):
    shared("MNIST", "raw")
    assert main(["gan", "evaluate", "-n", "200", "--cas-n", "1000", "--cas-epochs", "2", "--data-root", str(SHARED_DATA),
                 "--json"],
                env={}) == 0
    s = json.loads(capsys.readouterr().out)
    keys = {"conditional_accuracy", "per_label_accuracy", "fd", "fd_mnist", "kid", "kid_std", "precision", "recall",
            "density", "coverage", "per_class_fd", "cas", "cas_real", "n"}
    assert keys <= set(s) and s["n"] == 200 and s["fd"] == s["fd_mnist"] > 0
    assert s["classifier_test_accuracy"] > 0.985 and s["conditional_accuracy"] > 0.9
    assert set(s["per_class_fd"]) == {str(k) for k in range(10)} and 0 < s["precision"] <= 1 and 0 < s["coverage"] <= 1
    assert s["cas"] > 0.5 and s["cas_real"] > 0.5  # 1,000 digits, 2 epochs: far above chance (0.1) for both
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", lambda self: (_ for _ in ()).throw(OSError("offline")))
    (tmp_path / "empty").mkdir()
    assert main(["gan", "evaluate", "-n", "50", "--no-cas", "--json", "--data-root", str(tmp_path / "empty")],
                env={}) == 0
    s = json.loads(capsys.readouterr().out)  # no real digits: what needs them is skipped, and said
    assert "conditional_accuracy" in s and "fd" not in s and "MNIST" in s["skipped"]
    with pytest.raises(SystemExit):  # gone: it did nothing
        main(["gan", "evaluate", "--cache-dir", str(tmp_path)], env={})


@pytest.mark.parametrize("argv, message", [
    (["gan", "train", "--model", "cdcgan", "--data", "celeba64", "--data-root", "ROOT"], "conditional"),
    (["gan", "sample", "--checkpoint", "CORRUPT", "--out", "OUT"], "not a readable cnnlab GAN checkpoint"),
    (["gan", "sample", "--checkpoint", "FOREIGN", "--out", "OUT"], "not a cnnlab GAN checkpoint"),
    (["gan", "sample", "--label", "11", "--out", "OUT"], "out of range"),
    (["gan", "train", "--model", "cdcgan", "--data", "mnist", "--data-root", "EMPTY", "--out", "OUT"],
     "could not be downloaded"),
    (["gan", "train", "--model", "cgan", "--data", "mnist", "--out", "OUT", "--resume", "--data-root", "ROOT"],
     "nothing to resume"),
])
def test_gan_bad_input(argv, message, tmp_path, capsys, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", lambda self: (_ for _ in ()).throw(OSError("offline")))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00" * 10)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    (tmp_path / "empty").mkdir()
    subst = {"ROOT": str(SHARED_DATA), "CORRUPT": str(corrupt), "FOREIGN": str(foreign), "OUT": str(tmp_path / "o"),
             "EMPTY": str(tmp_path / "empty")}
    assert main([subst.get(a, a) for a in argv] + ["--json"], env={}) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error:") and message in err and "\n" not in err


def test_evaluate_an_image_generator_in_backbone_features(tmp_path, capsys):
    shared("celeba64")
    run = tmp_path / "dcgan"
    train(GanConfig(model="dcgan", data="celeba64", data_root=str(SHARED_DATA), nz=8, ngf=8, ndf=8, batch=8, iters=2,
                    limit=24, checkpoint_every=2), run, progress=False)
    assert main(["gan", "evaluate", "--checkpoint", str(run / "checkpoint.pt"), "-n", "12", "--json", "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["backbone"] == "efficientnet_lite0" and s["layer"] == "pre_logits" and s["n"] == 12
    assert s["model"] == "dcgan" and s["nz"] == 8 and s["fd_backbone"] == s["fd"] > 0
    assert {"kid", "kid_std", "precision", "recall", "density", "coverage"} <= set(s) and "cas" not in s


def test_resume_refuses_a_checkpoint_trained_with_other_settings(tmp_path, capsys):
    shared("MNIST", "raw")
    train(tiny(model="cgan", iters=3), tmp_path / "run")
    with pytest.raises(CnnlabError, match="trained with batch=16, not 32"):
        train(tiny(model="cgan", batch=32), tmp_path / "run", resume=True)
    with pytest.raises(CnnlabError, match="past --iters 2"):
        train(tiny(model="cgan", iters=2), tmp_path / "run", resume=True)
    argv = ["gan", "train", "--model", "cdcgan", "--data", "mnist", "--data-root", str(SHARED_DATA), "--batch", "16",
            "--out", str(tmp_path / "run"), "--resume"]
    assert main(argv, env={}) == 2
    err = capsys.readouterr().err.strip()
    assert "model='cgan', not 'cdcgan'" in err and "\n" not in err
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ck["iteration"] == 3  # nothing was overwritten
