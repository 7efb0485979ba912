import os

import numpy as np
import pytest

from cnnlab.core.data import ImageFolder
from cnnlab.core.errors import CnnlabError
from cnnlab.transfer.features import extract_features


def _extract(backbone, root, cache, layers=("pre_logits",), **kw):
    ds = ImageFolder.scan(root)
    return ds, extract_features(backbone, ds.paths, list(layers), cache_dir=cache, progress=False, workers=0,
                                batch_size=8, **kw)


def test_cache_hit_and_invalidation(lite0, tiny_scenes, tmp_path):
    cache = tmp_path / "cache"
    _, first = _extract(lite0, tiny_scenes, cache, ("block6", "pre_logits"))
    assert first.timing["computed_layers"] == ["block6", "pre_logits"]
    assert len(list(cache.glob("*.npz"))) == 2 and not list(cache.glob(".*"))  # no temp files left behind

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
    entry = next(cache.glob("*.npz"))
    entry.write_bytes(entry.read_bytes()[:100])  # a half-written file
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
    from cnnlab.transfer.api import _extract, transfer
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
    X = layer_matrix(merged.features, "efficientnet_lite0/pre_logits+efficientnet_lite1/pre_logits", "power-l2")
    parts = {f"{n}/pre_logits": own[n].features["pre_logits"] for n in names}
    assert np.allclose(X, layer_matrix(parts, "+".join(parts), "power-l2"))
    assert X.shape == (18, 1280 * 2)
