"""GAN metrics on hand-checkable feature sets: identical sets, disjoint sets, a few points on a line, and CAS with
labels that mean something or nothing."""
import numpy as np
import pytest
import torch

from cnnlab.gan.metrics import cas, density_coverage, feature_metrics, knn_radii, per_class_fd, precision_recall


def test_identical_sets_score_perfectly():
    x = torch.randn(300, 6, generator=torch.Generator().manual_seed(0))
    m = feature_metrics(x, x.clone())
    assert m["fd"] == pytest.approx(0, abs=1e-6)
    assert abs(m["kid"]) < 0.1  # the unbiased estimator is not exactly 0 on one set: O(1/n) (here ~0.07; disjoint: >100)
    other = feature_metrics(x, torch.randn(300, 6, generator=torch.Generator().manual_seed(9)))
    assert abs(other["kid"]) < 3 * other["kid_std"] + 0.1  # two samples of one distribution
    assert m["precision"] == m["recall"] == m["coverage"] == 1.0
    assert m["density"] == pytest.approx(6 / 5)  # each point lies in its own ball and in its 5 neighbours' (k = 5)


def test_disjoint_sets_score_zero_and_fd_is_the_squared_mean_shift():
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(400, 4, generator=g), torch.randn(400, 4, generator=g) + 100.0
    m = feature_metrics(real, fake)
    assert m["precision"] == m["recall"] == m["density"] == m["coverage"] == 0.0
    shift = float(((real.mean(0) - fake.mean(0)) ** 2).sum())
    assert m["fd"] == pytest.approx(shift, rel=0.01) and m["kid"] > 100


def test_precision_recall_density_coverage_by_hand():
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])  # k = 1: every real ball has radius 1
    fake = torch.tensor([[0.5], [10.0]])  # k = 1: every generated ball has radius 9.5
    assert knn_radii(real, 1).tolist() == [1.0, 1.0, 1.0, 1.0]
    assert precision_recall(real, fake, k=1) == (0.5, 1.0)  # 0.5 is near the data, 10 is not; 0.5's ball holds all
    assert density_coverage(real, fake, k=1) == (1.0, 0.5)  # 0.5 lies in the balls of 0 and 1: 2 / (1 × 2)


def test_per_class_fd_is_zero_for_matching_classes():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(120, 3, generator=g), torch.arange(120) % 3
    fds = per_class_fd(x, y, x.clone(), y.clone())
    assert set(fds) == {"0", "1", "2"} and all(abs(v) < 1e-6 for v in fds.values())
    moved = per_class_fd(x, y, torch.where((y == 1)[:, None], x + 5, x), y)
    assert moved["1"] > 70 and moved["0"] < 1e-6  # 3 dimensions × 5²


def _bars(n: int, seed: int):
    """Digit-sized images whose class is where a bright bar lies (10 places), with noise."""
    rng = np.random.default_rng(seed)
    y = torch.arange(n) % 10
    x = rng.integers(0, 30, (n, 1, 28, 28)).astype(np.uint8)
    for i, c in enumerate(y.tolist()):
        x[i, 0, 2 + 2 * c:5 + 2 * c, 2:26] = 255
    return torch.from_numpy(x), y


def test_cas_learns_from_meaningful_labels_and_not_from_shuffled_ones():
    train_x, train_y = _bars(600, 0)
    test_x, test_y = _bars(200, 1)
    assert cas(train_x, train_y, test_x, test_y, epochs=3) > 0.9
    shuffled = train_y[torch.randperm(600, generator=torch.Generator().manual_seed(0))]
    assert cas(train_x, shuffled, test_x, test_y, epochs=3) < 0.35
