"""GAN metrics on hand-checkable feature sets: identical sets, disjoint sets, a few points on a line, and CAS with
labels that mean something or nothing."""
import numpy as np
import pytest
import torch

from cnnlab.gan.metrics import cas, density_coverage, feature_metrics, kid, knn_radii, per_class_fd, precision_recall


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
    """Digit-sized images whose class is where a bright bar lies (10 places, 5 rows × 2 halves, far enough apart
    that CAS's 2-pixel shifts keep them apart), with noise."""
    rng = np.random.default_rng(seed)
    y = torch.arange(n) % 10
    x = rng.integers(0, 30, (n, 1, 28, 28)).astype(np.uint8)
    for i, c in enumerate(y.tolist()):
        row, col = 3 + 5 * (c % 5), 2 if c < 5 else 15
        x[i, 0, row:row + 2, col:col + 11] = 255
    return torch.from_numpy(x), y


def test_cas_learns_from_meaningful_labels_and_not_from_shuffled_ones():
    train_x, train_y = _bars(600, 0)
    test_x, test_y = _bars(200, 1)
    assert cas(train_x, train_y, test_x, test_y, epochs=3) > 0.9
    shuffled = train_y[torch.randperm(600, generator=torch.Generator().manual_seed(0))]
    assert cas(train_x, shuffled, test_x, test_y, epochs=3) < 0.35


def test_kid_subsets_are_half_the_sets_and_the_scale_of_the_features_does_not_matter():
    g = torch.Generator().manual_seed(3)
    real, fake = torch.randn(40, 5, generator=g).abs(), torch.randn(40, 5, generator=g).abs() + 0.5
    mean, sd = kid(real, fake)
    assert sd > 0  # subsets of 20 out of 40: a real spread, not the same whole set 100 times
    assert kid(real * 30, fake * 30) == pytest.approx((mean, sd), rel=1e-6)  # features divided by kid_scale(real)
    assert kid(real, fake, subset_size=1000) == (mean, sd)  # never larger than half the smaller set
    with pytest.raises(ValueError, match="at least 4"):
        kid(real[:3], fake)


class _ModeDropping(torch.nn.Module):
    """The shipped generator, asked for digit d, draws d mod 5: digits 5-9 are never drawn (mode dropping)."""

    def __init__(self, G):
        super().__init__()
        self.G = G

    def forward(self, z, y):
        return self.G(z, y % 5)


def test_known_answers_real_digits_a_mode_dropping_generator_and_the_shipped_one_between():
    from cnnlab.core.data import load_mnist
    from cnnlab.core.models import load_model
    from cnnlab.gan.evaluation import EvaluateConfig, _conditional_scores, features
    from cnnlab.gan.metrics import frechet
    from cnnlab.gan.sampling import load_generator

    from .conftest import SHARED_DATA, shared

    shared("MNIST", "raw")
    n = 2000  # FD tells the shipped generator from real digits from about here on (docs/benchmarks.md)
    config = EvaluateConfig(n=n, cas_n=1000, cas_epochs=3, data_root=str(SHARED_DATA))
    G, gan = load_generator()
    shipped, dropped = _conditional_scores(G, gan, config), _conditional_scores(_ModeDropping(G), gan, config)
    # real against held-out real: training digits against the same real test digits evaluate compares with
    judge = load_model("mnist_cnn")
    Xt, _ = load_mnist(str(SHARED_DATA), train=False)
    Xtr, _ = load_mnist(str(SHARED_DATA), train=True)
    order = torch.randperm(len(Xt), generator=torch.Generator().manual_seed(0))
    test_f = features(Xt[order[:2 * n]].float() / 255, judge, "pre_logits")
    train_f = features(Xtr[torch.randperm(len(Xtr), generator=torch.Generator().manual_seed(0))[:n]].float() / 255,
                       judge, "pre_logits")
    real = feature_metrics(test_f[:n], train_f)
    floor = frechet(test_f[:n], test_f[n:])  # two disjoint samples of the test digits: FD's small-sample floor
    assert abs(real["kid"]) <= 2 * real["kid_std"]
    assert real["fd"] <= 2 * floor
    assert real["precision"] > 0.85 and real["recall"] > 0.85  # k = 3 balls in 128-d: ~0.9 for one distribution
    assert dropped["kid"] > 3 * dropped["kid_std"]
    assert dropped["recall"] < real["recall"] - 0.25 and dropped["coverage"] < real["coverage"] - 0.25
    assert dropped["cas"] < shipped["cas_real"] - 0.3  # digits 5-9 were learnt from images of 0-4
    assert real["fd"] < shipped["fd"] < dropped["fd"]
    for key in ("recall", "coverage"):
        assert real[key] > shipped[key] > dropped[key], key
    assert shipped["cas"] > dropped["cas"] + 0.3  # (cas against cas_real needs the full recipe: docs/benchmarks.md)
    assert shipped["kid"] < dropped["kid"] - 3 * dropped["kid_std"]
