"""Shared fixtures: the offline pretrained backbone, paths to ../shared/data, tiny datasets built from it."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a hub
# pytest-xdist's workers share the cores: each worker, and each process a test starts (CLI, torchrun, a notebook
# kernel), gets its share of threads; more would oversubscribe the cores (OpenMP threads spinning against each other)
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
if "PYTEST_XDIST_WORKER" in os.environ:  # a worker inherits the controller's environment: set, not setdefault
    os.environ["OMP_NUM_THREADS"] = str(max(1, _CORES // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", _CORES)))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CNNLAB_SHARED_DATA", REPO.parent / "shared" / "data"))


def tiny_model(seed: int = 0, input_size: int = 16):
    """A two-convolution RGB classifier of 5 classes, wrapped (seeded: the same weights on every call)."""
    import cnnlab
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    return cnnlab.wrap(net, mean=(0.5,) * 3, std=(0.25,) * 3, input_size=input_size,
                       labels=[f"c{k}" for k in range(5)])


def tiny_vit(input_size: int = 32):
    """A 2-block ViT (patch 8, a class token, 5 classes), wrapped like any user's module (seeded)."""
    import cnnlab
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    net = VisionTransformer(img_size=input_size, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)
    return cnnlab.wrap(net.eval(), mean=(0.5,) * 3, std=(0.25,) * 3, input_size=input_size,
                       labels=[f"c{k}" for k in range(5)])


def one_and_two_processes(args: list[str], tmp_path: Path, port: int) -> None:
    """`cnnlab ARGS --out tmp_path/one` alone, then under torchrun with 2 processes into tmp_path/two; both must
    succeed (one thread each, offline)."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    one = subprocess.run([sys.executable, "-m", "cnnlab", *args, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=600)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                          "-m", "cnnlab", *args, "--out", str(tmp_path / "two")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-1500:]
    assert two.returncode == 0, two.stderr[-1500:]


def shared(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


@pytest.fixture(scope="session")
def lite0():
    from cnnlab.core.models import create_backbone

    return create_backbone("efficientnet_lite0")


@pytest.fixture(scope="session")
def scene_root() -> Path:
    return shared("15scene")


@pytest.fixture
def tiny_scenes(tmp_path, scene_root) -> Path:
    """3 classes × 6 real 15-Scene images, copied so tests may add, touch or corrupt files."""
    root = tmp_path / "scenes"
    for cls in ("Coast", "Forest", "Kitchen"):
        (root / cls).mkdir(parents=True)
        for src in sorted((scene_root / cls).glob("*.jpg"))[:6]:
            shutil.copy2(src, root / cls / src.name)
    return root


@pytest.fixture
def photo_files(tmp_path) -> dict[str, Path]:
    """scikit-image's chelsea (a cat) and coffee (an espresso cup) saved as JPEG files."""
    import skimage.data
    from PIL import Image

    out = {}
    for name in ("chelsea", "coffee"):
        out[name] = tmp_path / f"{name}.jpg"
        Image.fromarray(getattr(skimage.data, name)()).save(out[name], quality=95)
    return out


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # a closed network refuses Chromium's calls home


def chromium_path() -> str | None:
    """Debian's chromium (installed by .ci/run), driven by playwright in the page tests."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def launch_chromium(pw):
    return pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)


# pytest-xdist gives a whole module to a worker, in collection order: the long end-to-end modules go first, so that
# the short ones fill the end of both workers' queues instead of one long module running alone at the end
LONG_FIRST = ("test_gan_metrics", "test_faults", "test_gan", "test_finetune", "test_transformers", "test_app", "test_explain",
              "test_notebook",
              "test_stream", "test_sanity", "test_reproduce", "test_evaluate", "test_features", "test_featureviz",
              "test_demo")


def pytest_collection_modifyitems(items):
    rank = {name: k for k, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).stem, len(rank)))  # stable: a module keeps its order
