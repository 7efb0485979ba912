"""SIFT + bag of words (`--backbone sift-bow`): the transfer pipeline's hand-made baseline, on textures whose classes
a gradient histogram tells apart, its vocabulary fitted on training images only, its classifier kept."""
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("cv2")

import cnnlab  # noqa: E402
from cnnlab.core.images import load_image, pil_to_tensor  # noqa: E402
from cnnlab.transfer import bow  # noqa: E402


@pytest.fixture(scope="module")
def textures(tmp_path_factory):
    """3 classes × 8 noisy 64×64 textures: horizontal stripes, vertical stripes, a checkerboard."""
    root = tmp_path_factory.mktemp("textures")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    for name, pattern in {"horizontal": lambda p: (yy + p) // 4 % 2, "vertical": lambda p: (xx + p) // 4 % 2,
                          "checker": lambda p: ((xx + p) // 6 + (yy + p) // 6) % 2}.items():
        (root / name).mkdir()
        for i in range(8):
            img = pattern(int(rng.integers(8))) * 160 + 40 + rng.normal(0, 12, (64, 64))
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).convert("RGB").save(root / name / f"{i}.png")
    return root


def test_pyramid_weights_and_cells_by_hand():
    vocabulary = np.array([[0.0] * 128, [10.0] * 128], np.float32)
    xy = np.array([[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]], np.float32)  # top-left, top-right, bottom-right
    desc = np.array([[0] * 128, [10] * 128, [10] * 128], np.uint8)  # words 0, 1, 1
    v = bow.pyramid(xy, desc, vocabulary, levels=1)
    # level 0 (weight 1/2): counts (1, 2) / 3; level 1 (weight 1/2): cells TL (1,0), TR (0,1), BL (0,0), BR (0,1)
    np.testing.assert_allclose(v, np.array([1, 2, 1, 0, 0, 1, 0, 0, 0, 1]) / 6, rtol=1e-6)


def test_sift_bow_transfer_learns_and_its_classifier_reads_back(textures, tmp_path):
    res = cnnlab.transfer(textures, model="sift-bow", split="random:4", Cs=[1.0], folds=2)
    assert [r["layer"] for r in res.grid] == ["spm"] and res.summary()["backbone"] == "sift-bow"
    assert res.selected["test_accuracy"] == 1.0
    res.save(tmp_path / "run")
    clf = cnnlab.load_classifier(tmp_path / "run")
    test = res.split["test"]
    truth = [p.split("/")[-2] for p in test]
    assert clf.predict(test) == truth  # read back, the kept classifier scores what the run reported
    np.testing.assert_allclose(clf.decision_function(test), res.classifier.decision_function(test), rtol=1e-5)


def test_the_vocabulary_never_sees_a_test_image(textures, monkeypatch):
    seen = []
    fit = bow.fit_vocabulary
    monkeypatch.setattr(bow, "fit_vocabulary", lambda d, *a, **k: seen.extend(d) or fit(d, *a, **k))
    res = cnnlab.transfer(textures, model="sift-bow", split="random:4", Cs=[1.0], folds=2, layers=["bow", "spm"])
    describe = lambda p: bow.describe(pil_to_tensor(load_image(p)), bow.BowSettings())[1]  # noqa: E731
    assert len(seen) == len(res.split["train"]) == 12
    for p in res.split["train"]:
        assert any(np.array_equal(describe(p), d) for d in seen)
    for p in res.split["test"]:
        assert not any(np.array_equal(describe(p), d) for d in seen)


def test_sift_bow_refuses_cut_points_it_lacks(textures):
    with pytest.raises(cnnlab.CnnlabError, match="sift-bow has no cut point 'block5'"):
        cnnlab.transfer(textures, model="sift-bow", layers=["block5"], split="random:4")
