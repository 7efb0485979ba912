"""Generative-model metrics on feature sets (N, D) — every one from one pass of features over the real and the
generated images:
- Fréchet distance and KID (unbiased, with its standard deviation over subsets of half the set, in features scaled
  to unit root mean square): torchmetrics, fed the features;
- precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020): k-nearest-neighbour balls
  in the same space, written here (torchmetrics has none of them);
- per-class Fréchet distance, for conditional generators;
- CAS (Ravuri & Vinyals 2019): a fresh classifier trained on generated images labelled by their conditioning, tested
  on real ones, beside the same training on real images.
"""
from __future__ import annotations

import torch
from torch import nn


class _Given(nn.Module):
    """torchmetrics' feature network when the features are already computed: they pass through as they are."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double()


def frechet(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between two feature sets (torchmetrics' FID on given features)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=_Given(), normalize=False, input_img_size=(real.shape[1],))
    fid.update(real.double(), real=True)
    fid.update(fake.double(), real=False)
    return float(fid.compute())


def kid_scale(real: torch.Tensor) -> float:
    """The scalar that KID divides both feature sets by: the real features' root mean square per dimension. The
    cubic kernel (x·y/d + 1)³ then sees values of order 1, as in the Inception pool features KID was defined on,
    whatever the feature space (unnormalized 128-d MNIST features reach tens, and cubed they swamp the estimate),
    and KID no longer changes when the features are scaled."""
    return float(real.double().pow(2).mean().sqrt().clamp_min(1e-12))


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int | None = None,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (unbiased MMD², cubic polynomial kernel; torchmetrics) in the features divided by
    `kid_scale(real)`: mean and standard deviation over `subsets` random subsets of each set. Subsets hold half
    the smaller set (or `subset_size`, at most that), as in Bińkowski et al. 2018: smaller than the sets, so
    the standard deviation measures the estimate's spread. Seeded."""
    import warnings

    from torchmetrics.image.kid import KernelInceptionDistance

    half = min(len(real), len(fake)) // 2
    if half < 2:
        raise ValueError(f"KID needs at least 4 features in each set, not {min(len(real), len(fake))}")
    size = min(subset_size or half, half)
    scale = kid_scale(real)
    metric = KernelInceptionDistance(feature=_Given(), normalize=False, subsets=subsets, subset_size=size)
    metric.update(real.double() / scale, real=True)
    metric.update(fake.double() / scale, real=False)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)  # its subsets are drawn from the global generator: seeded on a fork
        warnings.simplefilter("ignore", UserWarning)
        mean, std = metric.compute()
    return float(mean), float(std)


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Each point's distance to its k-th nearest neighbour in the same set (itself excluded): (N,)."""
    d = torch.cdist(x.double(), x.double())
    return d.kthvalue(k + 1, dim=1).values  # the 1st smallest is the point itself, at 0


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Kynkäänniemi et al. 2019: precision = share of generated points inside the k-NN ball of some real point;
    recall = share of real points inside the k-NN ball of some generated point."""
    d = torch.cdist(fake.double(), real.double())  # (M, N)
    precision = (d <= knn_radii(real, k)[None]).any(1).double().mean()
    recall = (d.T <= knn_radii(fake, k)[None]).any(1).double().mean()
    return float(precision), float(recall)


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> tuple[float, float]:
    """Naeem et al. 2020: density = how many real k-NN balls hold each generated point, over k (1 on average for
    two samples of one distribution; (k+1)/k for a set against itself); coverage = share of real balls holding at
    least one generated point."""
    inside = torch.cdist(real.double(), fake.double()) <= knn_radii(real, k)[:, None]  # (N, M)
    return float(inside.sum() / (k * fake.shape[0])), float(inside.any(1).double().mean())


def feature_metrics(real: torch.Tensor, fake: torch.Tensor, seed: int = 0) -> dict:
    """Every set-to-set metric of two feature sets."""
    kid_mean, kid_std = kid(real, fake, seed=seed)
    precision, recall = precision_recall(real, fake)
    density, coverage = density_coverage(real, fake)
    return {"fd": frechet(real, fake), "kid": kid_mean, "kid_std": kid_std, "precision": precision,
            "recall": recall, "density": density, "coverage": coverage}


def per_class_fd(real: torch.Tensor, real_y: torch.Tensor, fake: torch.Tensor, fake_y: torch.Tensor) -> dict:
    """The Fréchet distance within each class (intra-class FD), {label: fd}, for the labels both sets have twice."""
    out = {}
    for c in sorted(set(real_y.tolist()) & set(fake_y.tolist())):
        r, f = real[real_y == c], fake[fake_y == c]
        if len(r) > 1 and len(f) > 1:
            out[str(c)] = frechet(r, f)
    return out


# The CAS classifier's recipe: OneCycle learning rate and 2-pixel shifts take 10,000 real digits to the accuracy of
# the full 60,000-digit training (docs/benchmarks.md), so CAS's gap measures the data, not under-training.
CAS_EPOCHS = 6
CAS_SHIFT = 2


def cas(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
        epochs: int = CAS_EPOCHS, seed: int = 0) -> float:
    """Classification Accuracy Score: a fresh copy of the shipped MNIST classifier's architecture trained (seeded,
    the CAS recipe above) on `train_x` (uint8 or [0,1] float digits) labelled `train_y`, its accuracy on the real
    `test_x`."""
    from ..core.mnist import train_mnist_cnn

    def u8(x: torch.Tensor) -> torch.Tensor:
        return x if x.dtype == torch.uint8 else (x.clamp(0, 1) * 255).round().to(torch.uint8)

    return train_mnist_cnn(u8(train_x), train_y.long(), u8(test_x), test_y.long(), epochs=epochs, seed=seed,
                           schedule="onecycle", shift=CAS_SHIFT)[1]
