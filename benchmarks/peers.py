"""pytorch-grad-cam's CAM variants through cnnlab's own faithfulness panel, at the same layers as cnnlab's.

Each peer variant is registered at run time as a saliency method (one class, the registry's extension path), reading
the model's own Grad-CAM layers (`Backbone.cam_layers`; Lite0: head+block6), each layer's map upsampled and scaled to
max 1 before they are summed, exactly as cnnlab's CAM engine combines layers. So the only difference between a row
`pgc-X` and cnnlab's `X` is the implementation of the weights; both go through `explain evaluate` with the same
images, targets, random baselines and metrics.

    python benchmarks/peers.py --images ../shared/data/imagenet/imagenet_val_25.npz --limit 10 --out RUN
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import cnnlab
from cnnlab.explain.saliency import METHODS, SaliencyMethod, cam_layers, register, unit
from cnnlab.explain.saliency.base import Layered

VARIANTS = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "layercam": "LayerCAM", "xgradcam": "XGradCAM",
            "eigencam": "EigenCAM"}


def peer(ours: str, theirs: str) -> type[SaliencyMethod]:
    @dataclass
    class Peer(Layered):
        name, help = f"pgc-{ours}", f"pytorch-grad-cam's {theirs} at the model's Grad-CAM layers"

        def _maps(self, backbone, x, targets):
            import pytorch_grad_cam as pgc
            from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

            modules = dict(backbone.net.named_modules())
            maps = []
            for layer in self.layer or cam_layers(backbone):
                with getattr(pgc, theirs)(model=backbone, target_layers=[modules[backbone.resolve(layer).module]]) as c:
                    m = c(input_tensor=x.detach().clone().requires_grad_(True),  # the weights are frozen
                          targets=[ClassifierOutputTarget(int(t)) for t in targets])
                maps.append(F.interpolate(torch.from_numpy(m)[:, None], size=x.shape[-2:], mode="bilinear",
                                          align_corners=False)[:, 0].to(x.device))
            return maps[0] if len(maps) == 1 else sum(unit(m) for m in maps)

    return register(Peer)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True)
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--variants", default="gradcam,gradcam++,layercam,xgradcam,eigencam")
    ap.add_argument("--metrics", default="deletion,insertion,deletion-black,insertion-black,deletion-pixel,"
                                         "insertion-pixel,road,randomization")
    ap.add_argument("--with-ours", action="store_true", help="also run cnnlab's own variants in the same run")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    variants = args.variants.split(",")
    methods = [peer(v, VARIANTS[v]).name for v in variants]
    methods += [v for v in variants if args.with_ours and v in METHODS]
    ev = cnnlab.evaluate_saliency("efficientnet_lite0", [args.images], methods=methods, metrics=args.metrics.split(","),
                                  limit=args.limit, chunk_size=2, batch_size=2, figure_steps=False, out=args.out)
    ev.save(args.out)
    print(ev.markdown())
    print(json.dumps({"recommended": ev.summary().get("recommended")}))


if __name__ == "__main__":
    main()
