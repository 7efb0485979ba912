import numpy as np
import pytest

from cnnlab.core.data import random_split
from cnnlab.core.errors import CnnlabError
from cnnlab.transfer.svm import layer_matrix, normalize, run_grid


def blobs(n_per_class=30, dim=20, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (classes, dim))
    y = np.repeat(np.arange(classes), n_per_class)
    return (centers[y] + rng.normal(0, 1, (len(y), dim))).astype(np.float32), y


def test_random_split_is_the_15scene_protocol():
    y = np.repeat(np.arange(4), [12, 15, 20, 11])
    s = random_split(y, 10, seed=3)
    assert all((y[s.train] == c).sum() == 10 for c in range(4))
    assert len(np.intersect1d(s.train, s.test)) == 0 and len(s.train) + len(s.test) == len(y)
    assert np.array_equal(s.train, random_split(y, 10, seed=3).train)
    assert not np.array_equal(s.train, random_split(y, 10, seed=4).train)
    with pytest.raises(CnnlabError, match="not enough"):
        random_split(y, 11, seed=0)


def test_cross_validation_never_sees_the_test_split():
    X, y = blobs()
    split = random_split(y, 20, seed=0)
    real = run_grid({"f": X}, y, split.train, split.test, ["f"], [1.0, 0.01], "l2", folds=3)
    noisy = X.copy()
    noisy[split.test] = np.random.default_rng(1).normal(0, 100, noisy[split.test].shape)
    garbled = run_grid({"f": noisy}, y, split.train, split.test, ["f"], [1.0, 0.01], "l2", folds=3)
    assert [r["cv_accuracy"] for r in real.grid] == [r["cv_accuracy"] for r in garbled.grid]
    assert (real.selected["layer"], real.selected["C"]) == (garbled.selected["layer"], garbled.selected["C"])
    assert real.selected["test_accuracy"] > 0.9


def test_grid_covers_every_layer_and_c_and_selects_by_cv():
    X, y = blobs()
    noise = np.random.default_rng(2).normal(size=X.shape).astype(np.float32)
    split = random_split(y, 20, seed=0)
    r = run_grid({"good": X, "noise": noise}, y, split.train, split.test, ["noise", "good"], [1.0, 0.1], "power-l2")
    assert [(g["layer"], g["C"]) for g in r.grid] == [("noise", 1.0), ("noise", 0.1), ("good", 1.0), ("good", 0.1)]
    assert r.selected["layer"] == "good"
    assert r.selected["cv_accuracy"] == max(g["cv_accuracy"] for g in r.grid)
    assert r.selected["test_accuracy"] == float((r.test_pred == y[split.test]).mean())


def test_normalizations_and_concatenation():
    X = np.array([[3.0, -4.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(normalize(X, "l2")[0], [0.6, -0.8])
    np.testing.assert_allclose(normalize(X, "power-l2")[0], np.array([np.sqrt(3), -2]) / np.sqrt(7), rtol=1e-6)
    assert np.all(normalize(X, "l2")[1] == 0)
    both = layer_matrix({"a": X, "b": X * 2}, ["a", "b"], "l2")
    assert both.shape == (2, 4)
    np.testing.assert_allclose(np.linalg.norm(both[0]), 1.0, rtol=1e-6)
    with pytest.raises(CnnlabError, match="no features for c"):
        layer_matrix({"a": X}, ["a", "c"], "l2")
