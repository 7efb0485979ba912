"""Metrics of saliency maps, one registered class each: how faithful a map is to the model (deletion, insertion,
ROAD) and whether it depends on what the model learned at all (model randomization).

A metric scores a batch of maps: `score(backbone, x, targets, maps, method, prepared, seeds)` gives per-image values
(its `columns`, plus the per-image numbers their aggregate needs) and curves. What does not depend on the method (the
random patch orders' baseline) is `prepare`d once per batch and shared by every method; what does not depend on the
images (the randomized model) is made once per metric object. Every random draw is seeded by the image's place
among the inputs, so a result does not depend on how the inputs are cut into batches, chunks or processes.

`aggregate` turns per-image values into one leaderboard cell (a mean, or a ratio of means against the random
baseline); the leaderboard (jobs/evaluate.py) bootstraps it over images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from ..core.backbones import Backbone
from ..core.config import SEED_MAX, option
from ..core.parts import Part, Registry
from ..core.hooks import eval_mode
from .faithfulness import deletion_insertion, random_baseline
from .saliency import BLUR_SIGMA, SaliencyMethod
from .saliency.base import BatchedOption

METRICS = Registry("saliency metric")
register = METRICS.register
ROAD_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)  # share of pixels imputed at each point of a ROAD curve
# Rong et al. 2022's neighbour weights for noisy linear imputation: each imputed pixel is this weighted mean of its
# eight neighbours (direct 1/6, diagonal 1/12), as in their code and in Quantus
NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((0, -1), 1 / 6),
              ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


@dataclass(frozen=True)
class Panel:
    """How finely the faithfulness metrics sample what they measure: the points of a deletion or insertion curve,
    the random patch orders of its baseline (where `--random-orders` is not given) and ROAD's percentages. The
    full panel is the published protocols'; the fast one keeps a quarter of the curve points and one ROAD
    percentage per order, and ranks methods as the full one does on two photo sets (docs/benchmarks.md)."""

    steps: int
    random_orders: int
    road_percentages: tuple[int, ...]


PANELS = {"fast": Panel(steps=7, random_orders=1, road_percentages=(50,)),
          "full": Panel(steps=28, random_orders=4, road_percentages=ROAD_PERCENTAGES)}


@dataclass
class Metric(Part):
    """A saliency metric, its options its fields. `columns`: leaderboard column → True if higher is better;
    `forward_only`: its passes are forward passes of the model under evaluation (they may run in bf16)."""

    MEMORY_ONLY: ClassVar[tuple[str, ...]] = ("internal_batch_size",)

    columns: ClassVar[dict[str, bool]] = {}
    forward_only: ClassVar[bool] = True

    def use_panel(self, panel: Panel) -> None:
        """Sample as `panel` says (what the metric's own options leave open)."""

    def prepare(self, backbone: Backbone, x: torch.Tensor, targets: torch.Tensor, seeds: list[int]) -> dict:
        """What every method's score of this batch shares (computed once per batch)."""
        return {}

    def score(self, backbone: Backbone, x: torch.Tensor, targets: torch.Tensor, maps: torch.Tensor,
              method: SaliencyMethod, prepared: dict, seeds: list[int]) -> tuple[dict, dict]:
        """(per-image values {key: (B,)}, curves {name: (B, S)}) of `method`'s maps (B,H,W)."""
        raise NotImplementedError

    @staticmethod
    def aggregate(column: str, values: dict[str, np.ndarray]) -> np.ndarray:
        """Leaderboard cells from per-image values (each (R, n): R resamples of n images) → (R,). A mean by
        default."""
        return values[column].mean(axis=-1)

    def needs(self, column: str) -> list[str]:
        """The per-image keys `aggregate` reads for a column."""
        return [column]


@dataclass
class _PatchCurve(Metric, BatchedOption):
    """Deletion or insertion of patches (16×16 at 224 pixels; single pixels for the `-pixel` variants), most salient
    first, against a blurred copy (black for `-black`); the AUC is divided by that of random orders (averaged over
    `random_orders`, seeded per image), computed once per image. Its keys start with `key`."""

    kind: ClassVar[str] = ""
    key: ClassVar[str] = ""
    fill: ClassVar[str] = "blur"
    pixels: ClassVar[bool] = False

    random_orders: int | None = option(None, low=1, help="deletion/insertion: random patch orders averaged for the "
                                                          "baseline (default: the panel's: fast 1, full 4)")
    patch: int | None = None  # side of the removed squares (None: a 14×14 grid; the `-pixel` variants: 1)
    steps: int = PANELS["full"].steps
    blur_sigma: float = BLUR_SIGMA
    panel_orders: int = PANELS["full"].random_orders  # what random_orders=None means

    def __post_init__(self) -> None:
        super().__post_init__()
        self.patch = 1 if self.pixels else self.patch

    def use_panel(self, panel: Panel) -> None:
        self.steps, self.panel_orders = panel.steps, panel.random_orders

    @property
    def orders(self) -> int:
        return self.random_orders or self.panel_orders

    def prepare(self, backbone, x, targets, seeds):
        base = random_baseline(backbone, x, targets, self.patch, self.steps, self.blur_sigma, list(seeds),
                               self.internal_batch_size, self.orders, curves=True, kinds=(self.kind,), fill=self.fill,
                               return_ends=True)  # seeded per image: the same orders however images are batched
        return {k: base[f"random_{self.kind}_{k}"] for k in ("auc", "curve", "ends")}

    def score(self, backbone, x, targets, maps, method, prepared, seeds):
        s = deletion_insertion(backbone, x, maps, targets, self.patch, self.steps, self.blur_sigma,
                               batch_size=self.internal_batch_size, n_random=0, curves=True, kinds=(self.kind,),
                               fill=self.fill, ends={self.kind: prepared["ends"]})
        values = {f"{self.key}_auc": s[f"{self.kind}_auc"], f"random_{self.key}_auc": prepared["auc"]}
        return values, {self.key: s[f"{self.kind}_curve"], f"random_{self.key}": prepared["curve"]}

    def needs(self, column):
        return [f"{self.key}_auc", f"random_{self.key}_auc"] if column.endswith("_ratio") else [column]

    def aggregate(self, column, values):
        if column.endswith("_ratio"):  # a ratio of means: the mean AUC against the mean random AUC
            return values[f"{self.key}_auc"].mean(-1) / np.maximum(values[f"random_{self.key}_auc"].mean(-1),
                                                                    1e-12)
        return values[column].mean(-1)


@register
@dataclass
class Deletion(_PatchCurve):
    name, kind, key = "deletion", "deletion", "deletion"
    columns: ClassVar[dict[str, bool]] = {"deletion_ratio": False, "deletion_auc": False}
    help = ("the class probability as 16×16 patches are blurred away, most salient first: its AUC over that of "
            "random orders (deletion_ratio, lower is better; Petsiuk et al. 2018)")


@register
@dataclass
class Insertion(_PatchCurve):
    name, kind, key = "insertion", "insertion", "insertion"
    columns: ClassVar[dict[str, bool]] = {"insertion_ratio": True, "insertion_auc": True}
    help = ("the class probability as patches are restored into a blurred copy, most salient first: AUC over "
            "random orders' (insertion_ratio, higher is better)")


@register
@dataclass
class DeletionBlack(_PatchCurve):
    name, kind, key, fill = "deletion-black", "deletion", "deletion_black", "black"
    columns: ClassVar[dict[str, bool]] = {"deletion_black_ratio": False}
    help = "deletion with black patches instead of a blurred copy (deletion_black_ratio, lower is better)"


@register
@dataclass
class InsertionBlack(_PatchCurve):
    name, kind, key, fill = "insertion-black", "insertion", "insertion_black", "black"
    columns: ClassVar[dict[str, bool]] = {"insertion_black_ratio": True}
    help = "insertion of patches into a black canvas (insertion_black_ratio, higher is better)"


@register
@dataclass
class DeletionPixel(_PatchCurve):
    name, kind, key, pixels = "deletion-pixel", "deletion", "deletion_pixel", True
    columns: ClassVar[dict[str, bool]] = {"deletion_pixel_ratio": False}
    help = "deletion pixel by pixel into a blurred copy (deletion_pixel_ratio, lower is better)"


@register
@dataclass
class InsertionPixel(_PatchCurve):
    name, kind, key, pixels = "insertion-pixel", "insertion", "insertion_pixel", True
    columns: ClassVar[dict[str, bool]] = {"insertion_pixel_ratio": True}
    help = "insertion pixel by pixel into a blurred copy (insertion_pixel_ratio, higher is better)"


# The faithfulness panel: what is removed (patches, pixels) and how (blur, black, ROAD's imputation) differ, so that
# no single perturbation decides; `aggregate_rank` is each method's mean rank over the columns of it that were run.
# columns that are controls for another column (a null), shown but never ranked
CONTROLS = ("randomization_null",)
PANEL = ("deletion_ratio", "insertion_ratio", "deletion_black_ratio", "insertion_black_ratio",
         "deletion_pixel_ratio", "insertion_pixel_ratio", "road_morf", "road_lerf")


@register
@dataclass
class Road(Metric, BatchedOption):
    name = "road"
    help = ("ROAD (Rong et al. 2022): the class probability with 10…90 % of the pixels replaced by noisy linear "
            "imputation from their neighbours, most relevant first (road_morf, lower is better) and least relevant "
            "first (road_lerf, higher is better); the imputation does not leak the removed region's shape")
    columns: ClassVar[dict[str, bool]] = {"road_morf": False, "road_lerf": True}

    road_noise: float = option(0.01, low=0, help="ROAD: std of the noise added to imputed pixels ([0,1] units)")
    percentages: tuple[int, ...] = ROAD_PERCENTAGES

    def use_panel(self, panel: Panel) -> None:
        self.percentages = panel.road_percentages

    def score(self, backbone, x, targets, maps, method, prepared, seeds):
        values, curves = {}, {}
        for order in ("morf", "lerf"):
            probs, hits = road_curves(backbone, x, maps, targets, most_relevant_first=order == "morf",
                                      percentages=self.percentages, noise=self.road_noise, seeds=seeds,
                                      batch_size=self.internal_batch_size)
            values[f"road_{order}"], values[f"road_{order}_accuracy"] = probs.mean(1), hits.float().mean(1)
            curves[f"road_{order}"], curves[f"road_{order}_accuracy"] = probs, hits.float()
        return values, curves


@register
@dataclass
class Randomization(Metric):
    name = "randomization"
    help = ("the model-randomization sanity check (Adebayo et al. 2018): rank correlation (and SSIM) of each map "
            "with the map of the same method once every unit is re-drawn (`sanity.randomized_copy`, fresh samples "
            "for sampling methods), beside its null: the same trained map against the randomized map of the image "
            "turned by 180° (what a map keeps whatever the image, such as a centre bias; a control, not ranked). A "
            "method fails when the first exceeds the null by more than sanity.MARGIN (lower is better); no verdict "
            "below sanity.MIN_VERDICT_IMAGES images")
    columns: ClassVar[dict[str, bool]] = {"randomization_rank_corr": False, "randomization_ssim": False,
                                          "randomization_null": False}
    forward_only: ClassVar[bool] = False  # maps: gradients of a randomized copy

    randomization_seed: int = option(0, low=0, high=SEED_MAX, help="randomization: seed of the re-drawn weights")
    _random: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @staticmethod
    def aggregate(column: str, values: dict[str, np.ndarray]) -> np.ndarray:
        """The mean over the images whose maps are not constant (a constant map has no rank correlation)."""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample of constant maps only: NaN, as it should
            return np.nanmean(values[column], axis=-1)

    def random_model(self, backbone: Backbone, x: torch.Tensor) -> Backbone:
        """`sanity.randomized_copy(backbone, seed=self.randomization_seed)`, made once per model and checked alive on
        the first images it meets (`sanity.check_alive`)."""
        from .sanity import check_alive, randomized_copy

        if self._random is None or self._random[0] != id(backbone):
            model = randomized_copy(backbone, seed=self.randomization_seed)
            check_alive(backbone, model, x)
            self._random = (id(backbone), model)
        return self._random[1]

    def score(self, backbone, x, targets, maps, method, prepared, seeds):
        from .sanity import fresh_samples, map_ssim, rank_correlation

        import warnings

        from .saliency import FlatMapWarning

        model = self.random_model(backbone, x)
        fresh = fresh_samples(method)
        with warnings.catch_warnings():  # a randomized model's flat maps are what the check measures
            warnings.simplefilter("ignore", FlatMapWarning)
            random_maps = fresh.attribute(model, x, targets).float().cpu()
            turned = fresh.attribute(model, x.flip(-2, -1), targets).float().cpu()
        return {"randomization_rank_corr": rank_correlation(maps, random_maps),
                "randomization_ssim": map_ssim(maps, random_maps),
                "randomization_null": rank_correlation(maps, turned)}, {}


def metric(name: str, **options) -> Metric:
    """The registered metric `name` with the options it takes (others are ignored)."""
    return METRICS.build(name, options)


# ------------------------------------------------------------------------------------ ROAD: noisy linear imputation
def road_curves(backbone: Backbone, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor,
                most_relevant_first: bool = True, percentages=ROAD_PERCENTAGES, noise: float = 0.01,
                seeds: list[int] | None = None, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The class probability (B, P) and whether the prediction is still the target (B, P) as each percentage of
    the pixels, ranked by the map (ties broken by position), is imputed from the others."""
    x = x.detach().to(backbone.device)
    targets = torch.as_tensor(targets).long().view(-1)
    seeds = list(range(len(x))) if seeds is None else seeds
    B, _, H, W = x.shape
    probs, hits = torch.empty(B, len(percentages)), torch.empty(B, len(percentages), dtype=torch.bool)
    for b in range(B):
        flat = maps[b].detach().cpu().float().flatten().numpy()
        order = np.argsort(-flat if most_relevant_first else flat, kind="stable")
        rng = np.random.default_rng(seeds[b])
        image = x[b].cpu().double().numpy()
        imputed = []
        for p in percentages:
            removed = np.zeros(H * W, dtype=bool)
            removed[order[:int(H * W * p / 100)]] = True
            imputed.append(noisy_linear_imputation(image, removed.reshape(H, W), noise, rng))
        batch = torch.from_numpy(np.stack(imputed)).to(x.dtype)
        with torch.no_grad(), eval_mode(backbone):
            out = torch.cat([backbone(batch[i:i + batch_size].to(backbone.device)).float().cpu()
                             for i in range(0, len(batch), batch_size)])
        probs[b], hits[b] = out.softmax(1)[:, targets[b]], out.argmax(1) == targets[b].cpu()
    return probs, hits


def noisy_linear_imputation(image: np.ndarray, removed: np.ndarray, noise: float = 0.01,
                            rng: np.random.Generator | None = None) -> np.ndarray:
    """`image` (C,H,W) with the `removed` pixels (H,W bool) replaced by the solution of "each is the weighted mean of
    its neighbours" (Rong et al. 2022; weights renormalized at the border), plus Gaussian noise of std `noise`."""
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import splu

    C, H, W = image.shape
    flat, rem = image.reshape(C, -1), removed.reshape(-1)
    idx = np.flatnonzero(rem)
    n = len(idx)
    out = flat.copy()
    if n == 0:
        return out.reshape(C, H, W)
    var = np.full(H * W, -1)
    var[idx] = np.arange(n)
    yy, xx = idx // W, idx % W
    rows, cols, vals = [], [], []
    diag, rhs = np.zeros(n), np.zeros((n, C))
    for (dy, dx), w in NEIGHBOURS:  # (sum of the weights) · u_i − Σ w · u_unknown neighbour = Σ w · known neighbour
        y2, x2 = yy + dy, xx + dx
        inside = (y2 >= 0) & (y2 < H) & (x2 >= 0) & (x2 < W)
        diag[inside] += w
        i, j = np.flatnonzero(inside), (y2 * W + x2)[inside]
        unknown = rem[j]
        rows.append(i[unknown])
        cols.append(var[j[unknown]])
        vals.append(np.full(int(unknown.sum()), -w))
        rhs[i[~unknown]] += w * flat[:, j[~unknown]].T
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(diag)
    a = csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    # symmetric positive definite (the weights are symmetric; every hole touches a known pixel, unless all are
    # removed): a symmetric ordering and no pivoting factor it faster than the general default
    lu = splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    solved = lu.solve(rhs).reshape(n, C).T
    if noise:
        solved = solved + noise * (rng or np.random.default_rng(0)).standard_normal(solved.shape)
    out[:, idx] = solved
    return out.reshape(C, H, W)

