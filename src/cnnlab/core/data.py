"""Datasets: class-per-folder image collections (with bad-file reporting), 15-Scene style splits, npz inputs."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import DATA_ROOT_HINT, CnnlabError
from .images import image_entries, load_image


@dataclass(frozen=True)
class ImageFolder:
    """Images in `root/<class>/...`: sorted class names, file paths and integer labels."""

    root: Path
    classes: tuple[str, ...]
    paths: tuple[Path, ...]
    labels: np.ndarray  # (N,) int64

    @classmethod
    def scan(cls, root: str | os.PathLike) -> "ImageFolder":
        root = Path(root)
        if not root.is_dir():
            raise CnnlabError(f"data folder not found: {root}")
        class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not class_dirs:
            raise CnnlabError(f"{root} has no class subfolders (expected {root}/<class>/<image files>)")
        paths, labels = [], []
        for label, d in enumerate(class_dirs):
            files = image_entries(d)
            if not files:
                raise CnnlabError(f"class folder {d} has no images")
            paths += files
            labels += [label] * len(files)
        return cls(root, tuple(d.name for d in class_dirs), tuple(paths), np.asarray(labels, dtype=np.int64))

    def subset(self, keep: Sequence[int]) -> "ImageFolder":
        keep = list(keep)
        return ImageFolder(self.root, self.classes, tuple(self.paths[i] for i in keep), self.labels[keep])


class ImageFiles(torch.utils.data.Dataset):
    """Decodes files straight to a network's input (`read`, e.g. `Preprocess.read`); an unreadable file yields the
    reason (a string) instead of killing the whole run."""

    def __init__(self, paths: Sequence[Path], read: Callable[[Path], torch.Tensor]):
        self.paths = list(paths)
        self.read = read

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return self.read(self.paths[i]), i
        except CnnlabError as exc:  # corrupt, truncated or not an image at all: its reason goes to the caller
            return str(exc), i


def collate_skipping_bad(batch):
    """(images (B,3,H,W), indices (B,), [(index, why not)] of the unreadable files)."""
    good = [(x, i) for x, i in batch if isinstance(x, torch.Tensor)]
    bad = [(i, x) for x, i in batch if not isinstance(x, torch.Tensor)]
    if not good:
        return None, torch.empty(0, dtype=torch.long), bad
    return torch.stack([x for x, _ in good]), torch.tensor([i for _, i in good]), bad


# ------------------------------------------------------------------------------------------------------ splits
@dataclass(frozen=True)
class Split:
    train: np.ndarray  # indices into the dataset
    test: np.ndarray
    description: str


SPLIT_HELP = ("random:K = K random training images per class, the rest for testing (the 15-Scene protocol is "
              "random:100); folders = DATA/train and DATA/test")


def parse_split(spec: str) -> tuple[str, int | None]:
    if spec == "folders":
        return "folders", None
    if spec.startswith("random:"):
        try:
            k = int(spec.split(":", 1)[1])
        except ValueError:
            k = 0
        if k > 0:
            return "random", k
    raise CnnlabError(f"bad split {spec!r}: use random:K (K training images per class) or folders")


def random_split(labels: np.ndarray, per_class: int, seed: int) -> Split:
    """The 15-Scene protocol: `per_class` random training images per class, all others for testing."""
    rng = np.random.default_rng(seed)
    train = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= per_class:
            raise CnnlabError(f"class {c} has {len(idx)} images: not enough for {per_class} training images plus a test set")
        train.append(rng.choice(idx, size=per_class, replace=False))
    train = np.sort(np.concatenate(train))
    test = np.setdiff1d(np.arange(len(labels)), train)
    return Split(train, test, f"random:{per_class}")


def folder_split(root: Path) -> tuple[ImageFolder, Split]:
    """`root/train/<class>` and `root/test/<class>`, merged into one dataset with the same class list."""
    train, test = ImageFolder.scan(root / "train"), ImageFolder.scan(root / "test")
    if train.classes != test.classes:
        raise CnnlabError(f"train/ and test/ in {root} have different class folders")
    merged = ImageFolder(root, train.classes, train.paths + test.paths, np.concatenate([train.labels, test.labels]))
    n = len(train.paths)
    return merged, Split(np.arange(n), np.arange(n, n + len(test.paths)), "folders")


# ------------------------------------------------------------------------------------------------- npz inputs
def load_npz_images(path: str | os.PathLike) -> tuple[torch.Tensor, np.ndarray | None, dict | None]:
    """The labs' format: X (N,H,W,3) uint8, optional y (N,) and label_map → float (N,3,H,W) in [0,1]."""
    from .images import array_to_tensor

    try:
        data = np.load(path, allow_pickle=True)
    except Exception as exc:
        raise CnnlabError(f"cannot read {path}: {exc}") from None
    if "X" not in data:
        raise CnnlabError(f"{path} has no array 'X' (expected X (N,H,W,3) uint8 and optionally y)")
    X = data["X"]
    if X.ndim != 4 or X.shape[-1] != 3:
        raise CnnlabError(f"{path}: X must be (N,H,W,3), got {X.shape}")
    y = data["y"] if "y" in data else None
    label_map = data["label_map"].item() if "label_map" in data else None
    return array_to_tensor(X.astype(np.uint8)), y, label_map


# --------------------------------------------------------------------------------------------- GAN datasets
def load_mnist(root: str | os.PathLike | None, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST through torchvision: (N,1,28,28) uint8 images and (N,) labels. Downloads where there is internet."""
    from torchvision.datasets import MNIST

    if root is None:
        raise CnnlabError(f"MNIST needs a data root holding MNIST/raw/: {DATA_ROOT_HINT}")
    try:
        ds = MNIST(str(root), train=train, download=False)
    except RuntimeError:
        try:
            ds = MNIST(str(root), train=train, download=True)
        except Exception:
            raise CnnlabError(f"MNIST is not in {root}/MNIST/raw and could not be downloaded (offline?): "
                              f"place the four IDX files there") from None
    return ds.data.unsqueeze(1).clone(), ds.targets.clone()


def load_image_dir(folder: str | os.PathLike, size: int) -> tuple[torch.Tensor, list[Path]]:
    """Every image under `folder`, resized/cropped to size×size RGB: (N,3,size,size) uint8, and skipped files."""
    from torchvision.transforms import v2

    folder = Path(folder)
    if not folder.is_dir():
        raise CnnlabError(f"image folder not found: {folder}")
    files = image_entries(folder)
    if not files:
        raise CnnlabError(f"no images found in {folder}")
    tf = v2.Compose([v2.ToImage(), v2.Resize(size, antialias=True), v2.CenterCrop(size)])
    images, bad = [], []
    for f in files:
        try:
            images.append(tf(load_image(f)))
        except CnnlabError:
            bad.append(f)
    if not images:
        raise CnnlabError(f"no readable images in {folder}")
    return torch.stack(images), bad
