"""Sanity checks for saliency maps (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"): does a map explain the
model, or only the image? The model's parameters are randomized — cascading, from the logits down to the input one
unit at a time, or independently, one unit at a time — and each map is compared with the trained model's by the
Spearman rank correlation of the absolute maps and by SSIM. A map that stays alike once every layer is random does
not depend on what the model learned. The model given is never modified: a copy is randomized.
"""
from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from ..core.backbones import Backbone
from ..core.models import units
from .saliency import FlatMapWarning, SaliencyMethod, method as make_method
from .verdicts import FAILS_ABOVE, MARGIN


@dataclass
class Randomization:
    """`steps[s]`: the unit randomized at step s (cascading: it and every step before it); `rank_corr` and `ssim`
    (S,B) against the trained model's maps (NaN where a map is constant: undefined); `null_rank_corr` (S,B): the
    randomized map of image i against the trained maps of the other images (`mismatched_null`); `maps`
    (S+1,B,H,W): the trained model's, then one per step."""

    steps: list[str]
    rank_corr: torch.Tensor
    ssim: torch.Tensor
    maps: torch.Tensor
    cascading: bool
    null_rank_corr: torch.Tensor | None = None

    @property
    def final_rank_corr(self) -> float:
        """Mean rank correlation at the last step (every unit random, when cascading), over the defined maps."""
        return _nanmean(self.rank_corr[-1])

    @property
    def final_null(self) -> float:
        return _nanmean(self.null_rank_corr[-1]) if self.null_rank_corr is not None else float("nan")

    @property
    def excess(self) -> torch.Tensor:
        """Per image at the last step: same-image rank correlation minus the mismatched-image null."""
        if self.null_rank_corr is None:
            return torch.full_like(self.rank_corr[-1], float("nan"))
        return self.rank_corr[-1] - self.null_rank_corr[-1]

    @property
    def undefined(self) -> int:
        """How many maps of the last step are constant (no rank correlation)."""
        return int(self.rank_corr[-1].isnan().sum())

    @property
    def passes(self) -> bool | None:
        """Against the null when there is one (two images or more), else against FAILS_ABOVE; None (no verdict)
        when every map of the last step is constant."""
        excess = _nanmean(self.excess)
        if excess == excess:
            return excess <= MARGIN
        final = self.final_rank_corr
        return None if final != final else final <= FAILS_ABOVE

    def summary(self) -> dict:
        return {"steps": self.steps, "rank_corr": _nanmean_rows(self.rank_corr), "ssim": _nanmean_rows(self.ssim),
                "final_rank_corr": self.final_rank_corr, "final_rank_corr_ci": interval(self.rank_corr[-1]),
                "null_rank_corr": self.final_null,
                "null_rank_corr_ci": interval(self.null_rank_corr[-1]) if self.null_rank_corr is not None else None,
                "excess_ci": interval(self.excess), "undefined": self.undefined, "margin": MARGIN,
                "passes": self.passes, "cascading": self.cascading}


def interval(values: torch.Tensor) -> list[float]:
    """The 95 % interval of the mean of the defined values (normal approximation; [nan, nan] below two)."""
    v = values[~values.isnan()].double()
    if len(v) < 2:
        return [float("nan"), float("nan")]
    half = 1.96 * float(v.std()) / len(v) ** 0.5
    return [float(v.mean()) - half, float(v.mean()) + half]


def _nanmean(v: torch.Tensor) -> float:
    v = v[~v.isnan()]
    return float(v.mean()) if len(v) else float("nan")


def _nanmean_rows(m: torch.Tensor) -> list[float]:
    return [_nanmean(row) for row in m]


def randomization_steps(backbone: Backbone) -> list[str]:
    """The units randomized, from the output back to the input (`core.models.units`, reversed)."""
    return units(backbone.net)[::-1]


_TRUNC = 0.8796  # the standard deviation of a unit normal truncated to ±2: dividing by it keeps the variance


def randomize(module: nn.Module, seed: int) -> None:
    """Re-draw a module's parameters, seeded, so that the network stays alive: convolution and linear weights from
    a normal truncated at ±2 sd (Adebayo et al.'s draw) scaled to He's variance for the fan-in (activations keep
    their scale through depth instead of shrinking by ~3x per layer, as torch's `reset_parameters` does), biases 0,
    normalization layers the identity (weight 1, bias 0, running mean 0 and variance 1). Nothing is estimated from
    data: the randomized model is the same whatever images it is later shown."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in module.modules():
            own = dict(m.named_parameters(recurse=False))
            if not own:
                continue
            if isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
                m.reset_parameters()  # weight 1, bias 0 and, for BatchNorm, running mean 0 / variance 1
                continue
            for name, p in own.items():
                if name == "weight" and p.dim() >= 2:
                    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)  # weight (in, out, k…)
                    fan_in = p.shape[0] * p[0, 0].numel() if transposed else p[0].numel()
                    std = (2.0 / fan_in) ** 0.5 / _TRUNC
                    nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)
                elif name == "bias":
                    nn.init.zeros_(p)
                else:
                    nn.init.normal_(p, std=0.02)


def randomized_copy(backbone: Backbone, upto: str | None = None, seed: int = 0) -> Backbone:
    """A copy of `backbone` whose units are re-drawn (`randomize`) from the logits down, as the cascading check does
    (unit k with seed + k), stopping after the unit `upto` (one of `randomization_steps`; None: every unit, and
    the parameters the network holds itself, such as a transformer's class token and position embeddings)."""
    from ..core.errors import CnnlabError, did_you_mean

    steps = randomization_steps(backbone)
    if upto is not None and upto not in steps:
        raise CnnlabError(f"unknown unit {upto!r}{did_you_mean(upto, steps)}; the units, from the logits down: "
                          f"{', '.join(steps)}")
    model = copy.deepcopy(backbone)
    for k, name in enumerate(steps):
        randomize(model.net.get_submodule(name), seed + k)
        if k == len(steps) - 1:  # the input unit: a transformer's class token and position embeddings with it
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + k)
                for p in model.net.parameters(recurse=False):
                    nn.init.normal_(p, std=0.02)
        if name == upto:
            break
    return model


ALIVE_AT_LEAST = 0.01  # the randomized logits' spread over images, as a share of the trained model's


def output_spread(backbone: Backbone, x: torch.Tensor) -> float:
    """How much the logits vary across the images x (B ≥ 2): the standard deviation over images, averaged over
    classes."""
    with torch.no_grad():
        logits = backbone(x.to(backbone.device)).float()
    return float(logits.std(0).mean())


def check_alive(trained: Backbone, randomized: Backbone, x: torch.Tensor) -> float:
    """The randomized copy's output spread over the images x as a share of the trained model's; a copy whose
    output does not depend on its input (below ALIVE_AT_LEAST) makes every map look model-independent, so no
    verdict is given: a one-line error."""
    from ..core.errors import CnnlabError

    if len(x) < 2:  # one image: its upside-down copy is a second input
        x = torch.cat([x, x.flip(-2)])
    base = output_spread(trained, x)
    share = output_spread(randomized, x) / max(base, 1e-12)
    if share < ALIVE_AT_LEAST:
        raise CnnlabError(f"the randomized model's logits do not vary with the input ({share:.2g} of the trained "
                          "model's spread): no sanity verdict")
    return share


def fresh_samples(method: SaliencyMethod) -> SaliencyMethod:
    """The method with other random draws (a sampling method's `noise_seed` moved on by one), so that the randomized
    model is not explained with the very masks or noise of the trained one: shared masks make RISE's randomized map
    its masks' coverage, as alike as the masks are. Methods without a seed come back as they are."""
    if not hasattr(method, "noise_seed"):
        return method
    return dataclasses.replace(method, noise_seed=method.noise_seed + 1)


def model_randomization(backbone: Backbone, x: torch.Tensor, targets, saliency: SaliencyMethod | str,
                        cascading: bool = True, steps: list[str] | None = None, seed: int = 0,
                        check: bool = True, final_only: bool = False) -> Randomization:
    """Maps of `saliency` for images x (B,C,H,W) in [0,1] and their targets as the model is randomized step by step
    (`cascading`: each step adds one unit; otherwise each step randomizes its unit alone), each randomized map also
    set against the other images' trained maps (the null). `final_only`: the cascade's last step alone (the same
    fully randomized copy, `randomized_copy`; one map per image instead of one per unit: the verdict of the slow
    methods; `steps` and `cascading` do not apply). `check`: refuse (CnnlabError) when the fully randomized copy's
    logits do not vary with the input."""
    attributor = make_method(saliency) if isinstance(saliency, str) else saliency
    steps = ["every unit"] if final_only else steps or randomization_steps(backbone)
    trained = attributor.attribute(backbone, x, targets).float().cpu()
    maps, corr, null, ssim = [trained], [], [], []
    fresh = fresh_samples(attributor)
    model = randomized_copy(backbone, seed=seed) if final_only else copy.deepcopy(backbone)
    for k, name in enumerate(steps):
        if not final_only:
            if not cascading:
                model = copy.deepcopy(backbone)
            randomize(model.net.get_submodule(name), seed + k)
        if check and (cascading or final_only) and k == len(steps) - 1:
            check_alive(backbone, model, x)
        with warnings.catch_warnings():  # a randomized model's flat maps are what the check measures
            warnings.simplefilter("ignore", FlatMapWarning)
            m = fresh.attribute(model, x, targets).float().cpu()
        maps.append(m)
        corr.append(rank_correlation(trained, m))
        null.append(mismatched_null(trained, m))
        ssim.append(map_ssim(trained, m))
    return Randomization(steps, torch.stack(corr), torch.stack(ssim), torch.stack(maps), cascading or final_only,
                         torch.stack(null))


def mismatched_null(trained: torch.Tensor, randomized: torch.Tensor) -> torch.Tensor:
    """Per image i: the mean over every other image j of the rank correlation of j's trained map with i's randomized
    map (B-1 pairings, so the null's noise shrinks with the batch instead of resting on one neighbour); NaN with one
    image."""
    every = _centred_ranks(trained) @ _centred_ranks(randomized).T  # [j, i]: trained map j against randomized map i
    every.fill_diagonal_(float("nan"))
    defined = ~every.isnan()
    return torch.where(defined.any(0), every.nan_to_num().sum(0) / defined.sum(0).clamp(min=1),
                       torch.full((len(trained),), float("nan")))


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of the absolute maps, per image: (B,H,W), (B,H,W) → (B,); NaN where either map is
    constant (no ranking: undefined, not 0)."""
    return (_centred_ranks(a) * _centred_ranks(b)).sum(1)


def _centred_ranks(m: torch.Tensor) -> torch.Tensor:
    """The absolute maps' ranks, centred and scaled to unit norm per image (B, H·W), so that a dot product is a
    Spearman correlation; NaN rows for constant maps."""
    r = _ranks(m.abs().flatten(1).double())
    r = r - r.mean(1, keepdim=True)
    norm = r.norm(dim=1, keepdim=True)
    return torch.where(norm > 1e-9, r / norm.clamp(min=1e-12), torch.full_like(r, float("nan"))).float()


def map_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM of the maps, each scaled to [0,1], per image (torchmetrics): (B,H,W), (B,H,W) → (B,)."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    return ssim(_unit_range(b)[:, None], _unit_range(a)[:, None], data_range=1.0, reduction="none")


def _ranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks along the last dimension, ties given their mean rank (SciPy's `rankdata`, as `spearmanr` ranks)."""
    from scipy.stats import rankdata

    return torch.from_numpy(rankdata(v.cpu().numpy(), axis=1)).to(v.dtype)


def _unit_range(m: torch.Tensor) -> torch.Tensor:
    low, high = m.flatten(1).amin(1), m.flatten(1).amax(1)
    return (m - low[:, None, None]) / (high - low).clamp(min=1e-12)[:, None, None]
