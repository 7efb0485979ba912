"""Methods that read the class probability of perturbed copies of the image: occlusion, RISE, and Grad-CAM
re-read as its evidence is blurred away."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...core.config import option
from .base import Batched, Blurs, Seeded, blurred, cam_layers, patch_size, register, unit
from .cams import GradCam, gradcam


@register
@dataclass
class Occlusion(Batched, Blurs):
    queries_panel = True  # it blurs patches and reads the class probability, as deletion does
    name = "occlusion"
    help = ("score drop when patches (32×32 at 224 pixels, scaled with the image) are replaced by a blurred copy "
            "(Zeiler & Fergus 2014)")
    cost = "slow"
    occlusion_window: int | None = option(None, low=1, default_help="32 at 224 pixels, scaled with the image",
                                          help="occlusion: patch side in pixels")
    occlusion_stride: int | None = option(None, low=1, default_help="half the patch",
                                          help="occlusion: patch stride in pixels")

    def _maps(self, backbone, x, targets):
        import captum.attr as ca

        side = min(x.shape[-2:])
        w = self.occlusion_window or max(2, round(32 * side / 224))
        w = min(w, max(1, side // 2))  # at least a 2×2 grid of patches: one patch over the image is a flat map
        s, c = min(self.occlusion_stride or max(1, w // 2), w), x.shape[1]
        attr = ca.Occlusion(backbone).attribute(x, sliding_window_shapes=(c, w, w), strides=(c, s, s),
                                                target=targets, baselines=blurred(x, self.blur_sigma),
                                                perturbations_per_eval=self.internal_batch_size)
        return attr.mean(dim=1).clamp(min=0)  # keep the evidence FOR the class


@register
@dataclass
class Rise(Batched, Seeded):
    name = "rise"
    help = ("RISE (Petsiuk et al. 2018): the class probability of the image under --masks random coarse masks "
            "(seeded), each mask weighted by it; model-agnostic, one forward pass per mask, batched")
    cost = "slow"
    quick = {"rise_masks": 200}
    rise_masks: int = option(1000, flag="--masks", low=1, help="RISE: random masks per image")
    rise_cells: int = option(7, low=2, help="RISE: side of the masks' coarse grid (cells per side)")
    rise_p: float = option(0.5, low=0, low_open=True, high=1, help="RISE: probability that a cell is kept")

    def random_masks(self, n: int, size: tuple[int, int], g: torch.Generator) -> torch.Tensor:
        """n smooth masks (n,1,H,W) in [0,1]: a coarse binary grid, upsampled bilinearly, shifted at random by up
        to one cell (the paper's construction)."""
        H, W = size
        ch, cw = -(-H // self.rise_cells), -(-W // self.rise_cells)
        grid = (torch.rand(n, 1, self.rise_cells, self.rise_cells, generator=g) < self.rise_p).float()
        up = F.interpolate(grid, size=((self.rise_cells + 1) * ch, (self.rise_cells + 1) * cw), mode="bilinear",
                           align_corners=False)
        dy, dx = torch.randint(0, ch, (n,), generator=g), torch.randint(0, cw, (n,), generator=g)
        return torch.stack([up[i, :, dy[i]:dy[i] + H, dx[i]:dx[i] + W] for i in range(n)])

    def _maps(self, backbone, x, targets):
        g = torch.Generator().manual_seed(self.noise_seed)  # the same masks for every image and every call
        out = torch.zeros(len(x), *x.shape[-2:], device=x.device)
        with torch.no_grad():
            for start in range(0, self.rise_masks, self.internal_batch_size):
                n = min(self.internal_batch_size, self.rise_masks - start)
                m = self.random_masks(n, x.shape[-2:], g).to(x.device)
                for b in range(len(x)):
                    probs = backbone(x[b:b + 1].detach() * m).softmax(dim=1)[:, targets[b]]
                    out[b] += (probs[:, None, None] * m[:, 0]).sum(dim=0)
        return out / (self.rise_masks * self.rise_p)



@register
@dataclass
class IteratedGradCam(GradCam, Batched, Blurs):
    queries_panel = True  # it blurs patches and reads the class probability, as deletion does
    name = "iterated-gradcam"
    help = ("Grad-CAM re-read as the evidence is removed: in --stages steps, the patches (a 14×14 grid) that a fresh "
            "Grad-CAM of what is left ranks highest are blurred away; a pixel's value is the step that removed its "
            "patch (earlier is higher) plus that step's Grad-CAM; patches Grad-CAM never marks stay at 0. A second "
            "object of the class, or a part the first read hid, comes up once the first is gone")
    cost = "slow"
    stages: int = option(14, low=1, help="iterated-gradcam: removal steps (each re-reads Grad-CAM of what is left)")
    # the default: the most faithful count on held-out photos (docs/benchmarks.md, Faithfulness)
    candidates: int = option(24, low=0, help="iterated-gradcam: at each step, blur each of Grad-CAM's top N patches "
                                             "alone and remove those whose loss lowers the class probability most "
                                             "(N forward passes per step; 0: Grad-CAM's order, much faster)")

    def _maps(self, backbone, x, targets):
        B, _, H, W = x.shape
        p = patch_size(x)
        gh, gw = H // p, W // p
        n = gh * gw
        base, layers = blurred(x.detach(), self.blur_sigma), self.layer or cam_layers(backbone)
        removed = torch.zeros(B, n, dtype=torch.bool, device=x.device)
        out = torch.zeros(B, H, W, device=x.device)
        cuts = [round(n * k / self.stages) for k in range(self.stages + 1)]
        for k in range(self.stages):
            need = (cuts[k + 1] - removed.sum(1)).clamp(min=0)  # this step's share, per image
            if int(need.max()) == 0:
                continue
            mask = _on_pixels(removed.float(), gh, gw, p, H, W)
            seen = (x.detach() * (1 - mask) + base * mask).requires_grad_(True)
            cam = unit(gradcam(backbone, seen, targets, layers).detach())
            score = F.avg_pool2d(cam[:, None], p).flatten(1).masked_fill(removed, -1.0)
            values, top = score.topk(max(int(need.max()), min(self.candidates, n)), dim=1)
            if self.candidates:  # Grad-CAM proposes, the class probability with each one blurred alone decides
                values, top = self._by_probability(backbone, seen.detach(), base, targets, values, top, (gh, gw, p))
            # only patches with evidence are removed: where Grad-CAM is 0 there is no order to give (an order by
            # position would not depend on the model); such patches stay tied at 0
            take = (torch.arange(top.shape[1], device=x.device)[None] < need[:, None]) & (values > 0)
            now = torch.zeros_like(removed).scatter_(1, top, take)
            if self.candidates:  # within the step, the order the probabilities gave
                rank = 1 - torch.arange(top.shape[1], device=x.device, dtype=out.dtype) / top.shape[1]
                within = torch.zeros(B, n, device=x.device).scatter_(1, top, rank.expand_as(top).contiguous())
                within = _on_pixels(within, gh, gw, p, H, W)[:, 0]
            else:
                within = cam
            # pixels of the patches removed now: (steps left) + the order within the step (this step's map, or the
            # probabilities' order), so a patch's mean keeps the order
            out += _on_pixels(now.float(), gh, gw, p, H, W)[:, 0] * (self.stages - k + within)
            removed |= now
        return out


    def _by_probability(self, backbone, seen, base, targets, values, top, grid):
        """The candidates (B, N) reordered by the class probability once each is blurred alone, lowest first;
        a candidate Grad-CAM gave no evidence (value ≤ 0) stays last and keeps its value."""
        gh, gw, p = grid
        B, N = top.shape
        H, W = seen.shape[-2:]
        probs = torch.empty(B, N, device=seen.device)
        with torch.no_grad():
            for b in range(B):
                one = torch.zeros(N, gh * gw, device=seen.device).scatter_(1, top[b][:, None], 1.0)
                for i in range(0, N, self.internal_batch_size):
                    m = _on_pixels(one[i:i + self.internal_batch_size], gh, gw, p, H, W)
                    probs[b, i:i + len(m)] = backbone(seen[b:b + 1] * (1 - m) + base[b:b + 1] * m).float() \
                        .softmax(1)[:, targets[b]]
        probs = probs.masked_fill(values <= 0, float("inf"))
        order = probs.argsort(dim=1)
        return values.gather(1, order), top.gather(1, order)


def _on_pixels(patches: torch.Tensor, gh: int, gw: int, p: int, H: int, W: int) -> torch.Tensor:
    """(B, gh·gw) patch values → (B,1,H,W), the pixels past the grid 0."""
    m = patches.view(-1, 1, gh, gw).repeat_interleave(p, 2).repeat_interleave(p, 3)
    return F.pad(m, (0, W - gw * p, 0, H - gh * p))
