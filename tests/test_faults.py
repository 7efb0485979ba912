"""Faults survived, nothing lost: a kill -9 in GAN training or feature extraction, two processes on one cache, a full
disk and a read-only folder."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.core.data import ImageFolder
from cnnlab.gan.training import load_checkpoint
from cnnlab.transfer.features import extract_features

from .conftest import SHARED_DATA, shared

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _wait_for(condition, proc, timeout=120.0):
    t0 = time.time()
    while not condition():
        assert proc.poll() is None, "finished before it could be killed"
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.05)


def test_gan_training_killed_at_any_moment_resumes_to_the_same_weights(tmp_path):
    shared("MNIST", "raw")
    args = ["gan", "train", "--model", "cgan", "--data", "mnist", "--data-root", str(SHARED_DATA), "--limit", "512",
            "--batch", "16", "--iters", "150", "--checkpoint-every", "10", "--nz", "8", "--quiet"]
    # the uninterrupted run alongside the one to be killed (two processes: each core busy)
    log = open(tmp_path / "full.log", "w")
    full = subprocess.Popen([sys.executable, "-m", "cnnlab", *args, "--out", str(tmp_path / "full")], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=log)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", *args, "--out", str(killed)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "checkpoint.pt"
    _wait_for(lambda: ckpt.is_file() and load_checkpoint(ckpt)["iteration"] >= 20, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log.close()
    assert full.wait(timeout=600) == 0, (tmp_path / "full.log").read_text()[-1000:]
    stopped_at = load_checkpoint(ckpt)["iteration"]
    assert 20 <= stopped_at < 150
    resumed = subprocess.run([sys.executable, "-m", "cnnlab", *args, "--out", str(killed), "--resume"], env=ENV,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-1000:]
    a, b = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(ckpt)
    assert b["iteration"] == 150
    for key in ("generator", "discriminator"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), name
    assert not [p for p in killed.iterdir() if p.name.startswith(".")]  # no temporary file left behind


EXTRACT = """
import sys
from cnnlab.core.data import ImageFolder
from cnnlab.core.models import load_model
from cnnlab.transfer.features import extract_features
ds = ImageFolder.scan(sys.argv[1])
fs = extract_features(load_model("efficientnet_lite0"), ds.paths, ["pre_logits"], cache_dir=sys.argv[2], workers=0,
                      batch_size=2, chunk_size=int(sys.argv[3]), progress=False)
print(fs.timing["computed_images"])
"""


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/*/parts/part-00000.jsonl"))  # one committed runner part per chunk


def test_feature_extraction_killed_mid_way_keeps_its_finished_chunks(tiny_scenes, tmp_path, lite0):
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", EXTRACT, str(tiny_scenes), str(cache), "4"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: len(_entries(cache)) >= 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = len(_entries(cache))
    assert 2 <= kept < 5  # 18 images in chunks of 4: five entries when finished
    ds = ImageFolder.scan(tiny_scenes)
    again = extract_features(lite0, ds.paths, ["pre_logits"], cache_dir=cache, workers=0, chunk_size=4, progress=False)
    assert again.timing["computed_images"] == 18 - 4 * kept  # finished chunks are not computed again
    fresh = extract_features(lite0, ds.paths, ["pre_logits"], workers=0, chunk_size=4, progress=False)
    np.testing.assert_allclose(again.features["pre_logits"], fresh.features["pre_logits"], rtol=1e-4, atol=1e-5)
    assert len(_entries(cache)) == 5 and not list(cache.rglob(".*"))


def test_two_processes_filling_one_cache_are_both_right(tiny_scenes, tmp_path, lite0):
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", EXTRACT, str(tiny_scenes), str(cache), "6"], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    assert len(_entries(cache)) == 3 and not list(cache.rglob(".*"))
    ds = ImageFolder.scan(tiny_scenes)
    cached = extract_features(lite0, ds.paths, ["pre_logits"], cache_dir=cache, workers=0, chunk_size=6,
                              progress=False)
    fresh = extract_features(lite0, ds.paths, ["pre_logits"], workers=0, chunk_size=6, progress=False)
    assert cached.timing["computed_images"] == 0
    np.testing.assert_allclose(cached.features["pre_logits"], fresh.features["pre_logits"], rtol=1e-4, atol=1e-5)


@pytest.fixture
def small_mount(tmp_path):
    """A 150 kB tmpfs (root only; skipped where mounting is not allowed)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a small tmpfs")
    point = tmp_path / "mnt"
    point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=150k", "tmpfs", str(point)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not allowed here")
    yield point
    subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_a_full_disk_or_a_read_only_folder_is_one_line_and_leaves_no_corrupt_file(small_mount, photo_files):
    argv = [sys.executable, "-m", "cnnlab", "explain", "saliency", str(photo_files["chelsea"]),
            str(photo_files["coffee"]), "--quiet", "--out"]
    full = subprocess.run(argv + [str(small_mount / "run")], env=ENV, capture_output=True, text=True, timeout=300)
    assert full.returncode == 2 and "Traceback" not in full.stderr
    assert full.stderr.strip().count("\n") == 0 and "No space left on device" in full.stderr
    from PIL import Image

    for f in (small_mount / "run").iterdir():  # whatever was written is whole; no temporary file stays
        assert not f.name.startswith(".")
        if f.suffix == ".png":
            Image.open(f).load()
    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    ro = subprocess.run(argv + [str(small_mount / "other")], env=ENV, capture_output=True, text=True, timeout=300)
    assert ro.returncode == 2 and "Read-only file system" in ro.stderr and "Traceback" not in ro.stderr
    assert ro.stderr.strip().count("\n") == 0
