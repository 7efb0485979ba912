import os
from pathlib import Path

import numpy as np
import pytest

from cnnlab.core.data import ImageFolder
from cnnlab.core.errors import CnnlabError
from cnnlab.transfer.features import extract_features


def _extract(backbone, root, cache, layers=("pre_logits",), **kw):
    ds = ImageFolder.scan(root)
    return ds, extract_features(backbone, ds.paths, list(layers), cache_dir=cache, progress=False, workers=0,
                                batch_size=8, **kw)


def _entries(cache):
    """Committed cache entries: one runner part per (cut point and settings, chunk of files)."""
    return sorted(cache.glob("*/*/parts/part-00000.jsonl"))


def test_cache_hit_and_invalidation(lite0, tiny_scenes, tmp_path):
    cache = tmp_path / "cache"
    _, first = _extract(lite0, tiny_scenes, cache, ("block6", "pre_logits"))
    assert first.timing["computed_layers"] == ["block6", "pre_logits"]
    assert len(_entries(cache)) == 2 and not list(cache.rglob(".*"))  # no temp files left behind

    _, again = _extract(lite0, tiny_scenes, cache, ("pre_logits", "block6"))
    assert again.timing["computed_layers"] == [] and again.timing["images_per_s"] is None
    for layer in ("block6", "pre_logits"):
        np.testing.assert_array_equal(again.features[layer], first.features[layer])

    # another pooling is another feature: computed, while the cached layer is reused
    _, pooled = _extract(lite0, tiny_scenes, cache, ("block6",), pool="max")
    assert pooled.timing["computed_layers"] == ["block6"]

    # touching one image invalidates every entry for this dataset
    some = next((tiny_scenes / "Coast").glob("*.jpg"))
    os.utime(some, ns=(some.stat().st_atime_ns, some.stat().st_mtime_ns + 10**9))
    _, touched = _extract(lite0, tiny_scenes, cache, ("pre_logits",))
    assert touched.timing["computed_layers"] == ["pre_logits"]
    np.testing.assert_allclose(touched.features["pre_logits"], first.features["pre_logits"], rtol=1e-4, atol=1e-5)


def test_a_corrupt_cache_entry_is_recomputed(lite0, tiny_scenes, tmp_path):
    cache = tmp_path / "cache"
    _, first = _extract(lite0, tiny_scenes, cache)
    entry = next(cache.glob("*/*/features/part-00000.npy"))
    entry.write_bytes(entry.read_bytes()[:100])  # a damaged file
    _, again = _extract(lite0, tiny_scenes, cache)
    assert again.timing["computed_layers"] == ["pre_logits"]
    np.testing.assert_allclose(again.features["pre_logits"], first.features["pre_logits"], rtol=1e-5, atol=1e-6)


def test_unreadable_images_are_listed_and_skipped(lite0, tiny_scenes, tmp_path):
    bad = tiny_scenes / "Forest" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (tiny_scenes / "Forest" / "notes.txt").write_text("ignored: not an image extension")
    ds, fs = _extract(lite0, tiny_scenes, None)
    assert fs.failed == [bad]
    assert len(fs.keep) == len(ds.paths) - 1 and fs.features["pre_logits"].shape == (len(ds.paths) - 1, 1280)
    assert ds.paths.index(bad) not in set(fs.keep.tolist())


def test_empty_class_and_empty_folder_errors(tmp_path, tiny_scenes):
    (tiny_scenes / "Empty").mkdir()
    with pytest.raises(CnnlabError, match="class folder .*Empty has no images"):
        ImageFolder.scan(tiny_scenes)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(CnnlabError, match="no class subfolders"):
        ImageFolder.scan(tmp_path / "nothing")
    with pytest.raises(CnnlabError, match="not found"):
        ImageFolder.scan(tmp_path / "missing")


def test_flip_averaging_is_mirror_invariant(lite0, tiny_scenes):
    import torch

    from cnnlab.transfer.features import forward_features

    x = torch.rand(2, 3, 224, 224)
    a = forward_features(lite0, x, ["pre_logits"], "avg", True, "fp32")["pre_logits"]
    b = forward_features(lite0, x.flip(-1), ["pre_logits"], "avg", True, "fp32")["pre_logits"]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_several_backbones_concatenate_each_ones_cut_points(tiny_scenes, tmp_path):
    from cnnlab.core.models import create_backbone
    from cnnlab.jobs.transfer import transfer
    from cnnlab.transfer.routes import _extract
    from cnnlab.transfer.svm import layer_matrix

    (tiny_scenes / "Coast" / "broken.jpg").write_bytes(b"not a jpeg")  # skipped once, rows stay aligned
    names = ["efficientnet_lite0", "efficientnet_lite1"]
    cache = tmp_path / "cache"
    result = transfer(tiny_scenes, split="random:3", backbone="+".join(names), layers=["pre_logits"], Cs=[1.0],
                      folds=2, cache_dir=str(cache))
    s = result.summary()
    assert s["backbone"] == "efficientnet_lite0+efficientnet_lite1" and s["selected"]["layer"] == "pre_logits"
    assert s["n_train"] + s["n_test"] == 18 and len(s["skipped_images"]) == 1
    # the same features as each backbone's own, concatenated (each normalized on its own)
    paths = ImageFolder.scan(tiny_scenes).paths
    own = {n: extract_features(create_backbone(n), paths, ["pre_logits"], cache_dir=cache, progress=False)
           for n in names}
    assert all(f.timing["cached_layers"] == ["pre_logits"] for f in own.values())  # the run filled the cache
    merged = _extract(result.config, [create_backbone(n) for n in names], paths, progress=False)
    X = layer_matrix(merged.features, ["efficientnet_lite0/pre_logits", "efficientnet_lite1/pre_logits"], "power-l2")
    parts = {f"{n}/pre_logits": own[n].features["pre_logits"] for n in names}
    assert np.allclose(X, layer_matrix(parts, list(parts), "power-l2"))
    assert X.shape == (18, 1280 * 2)


def test_a_feature_store_round_trips_and_feeds_transfer(tiny_scenes, tmp_path, capsys):
    import json

    import cnnlab
    from cnnlab.cli import main

    store = tmp_path / "store"
    assert main(["features", "--data", str(tiny_scenes), "--layers", "block7,pre_logits", "--out", str(store),
                 "--workers", "0", "--chunk-size", "5", "--precision", "fp32", "--quiet", "--json"], env={}) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["n_images"] == 18 and s["dims"] == {"block7": 320, "pre_logits": 1280}
    assert sorted(p.name for p in (store / "pre_logits").iterdir()) == [f"part-{k:05d}.npy" for k in range(4)]
    loaded = cnnlab.load_features(store)
    assert isinstance(loaded.parts["pre_logits"][0], np.memmap) and loaded.classes == ["Coast", "Forest", "Kitchen"]
    ds = ImageFolder.scan(tiny_scenes)
    fresh = cnnlab.features("efficientnet_lite0", tiny_scenes, layers=["block7", "pre_logits"], precision="fp32",
                            cache=False, workers=0)
    assert loaded.paths == [str(p) for p in ds.paths] and loaded.labels.tolist() == ds.labels.tolist()
    np.testing.assert_allclose(loaded["pre_logits"], fresh.features["pre_logits"], rtol=1e-4, atol=1e-5)  # other batches
    fresh.save(tmp_path / "small.npz")  # the .npz reads the same way
    np.testing.assert_array_equal(cnnlab.load_features(tmp_path / "small.npz")["block7"], fresh.features["block7"])
    again = cnnlab.features("efficientnet_lite0", tiny_scenes, layers=["block7", "pre_logits"], precision="fp32",
                            out=store, workers=0, chunk_size=5)
    assert again.timing["computed_images"] == 0  # every chunk was committed: nothing recomputed
    t = cnnlab.transfer(features=str(store), split="random:3", layers=["pre_logits+block7"], Cs=[1.0], folds=2)
    assert t.summary()["n_train"] == 9 and t.config.backbone == ["efficientnet_lite0"]
    assert t.classifier.predict(t.split["test"][:3]) == [Path(p).parent.name for p in t.split["test"][:3]]


def test_two_torchrun_processes_write_the_same_store_as_one(tiny_scenes, tmp_path):
    import subprocess
    import sys

    import cnnlab

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    args = ["-m", "cnnlab", "features", "--data", str(tiny_scenes), "--workers", "0", "--chunk-size", "5",
            "--precision", "fp32", "--quiet", "--out"]
    one = subprocess.run([sys.executable, *args, str(tmp_path / "one")], env=env, capture_output=True, text=True)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29561",
                          *args, str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-1500:]
    a, b = cnnlab.load_features(tmp_path / "one"), cnnlab.load_features(tmp_path / "two")
    assert a.paths == b.paths and a.labels.tolist() == b.labels.tolist()
    assert np.array_equal(a["pre_logits"], b["pre_logits"])  # bit for bit: batches never span two chunks
