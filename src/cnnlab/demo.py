"""`cnnlab demo`: a short offline tour of what cnnlab does, on embedded defaults."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .core.data import ImageFolder
from .core.backbones import DEFAULT_BACKBONE, create_backbone
from .core.runs import RunDir
from .core.images import sample_photos
from .transfer.classify import classification_figure, classify_tensor
from .transfer.pipeline import TransferConfig, run_transfer



def _explain_and_generate(run: RunDir, backbone, names, x, summary: dict) -> list[str]:
    """A saliency map, a fooling image, a class visualization, and digits from the shipped cDCGAN."""
    from .explain.attacks import attack
    from .explain.classviz import ClassVizConfig, class_probability, visualize_class
    from .explain.saliency import attribute, predicted
    from .core import imagenet
    from .core.images import save_png
    from .gan.sample import sample

    lines = []
    cat = x[:1]
    pred = predicted(backbone, cat)
    sal = attribute(backbone, cat, pred, "gradcam")[0]
    overlay = cat[0] * 0.4 + 0.6 * (sal / sal.max().clamp(min=1e-12)).unsqueeze(0) * torch.tensor([1.0, 0.3, 0.0]).view(3, 1, 1)
    lines.append(f"[saliency] Grad-CAM of {names[0]} for '{imagenet.short_name(int(pred))}' → "
                 f"{save_png(overlay.clamp(0, 1), run / 'saliency.png')}")
    target = imagenet.resolve_class("tarantula")
    r = attack(backbone, cat, [target], "minimal", max_iters=100)
    linf = float(r.norms()["linf"][0]) * 255
    lines.append(f"[fool] {names[0]} → '{imagenet.short_name(int(r.pred_after[0]))}' with an L∞ change of "
                 f"{linf:.0f}/255 (success: {bool(r.success[0])}) → {save_png(r.adversarial[0], run / 'fooled.png')}")
    img, _ = visualize_class(backbone, target, ClassVizConfig(iters=60), size=160)
    prob, _ = class_probability(backbone, img, target)
    lines.append(f"[classviz] 'tarantula' drawn by gradient ascent (60 iterations, p={prob:.2f}) → "
                 f"{save_png(img, run / 'classviz.png')}")
    digits = sample(None, run / "digits", n=40, seed=0)
    lines.append(f"[gan] 40 digits from the shipped cDCGAN-MNIST generator → {digits['grid']}")
    summary["explain"] = {"saliency_target": int(pred), "fool_success": bool(r.success[0]), "fool_linf": linf / 255,
                          "classviz_prob": prob}
    return lines


def run_demo(out: str | None = None, data: str | None = None, cache_dir: str | None = None,
             progress: bool = True) -> dict:
    run = RunDir.create(out, "demo")
    report, summary = [], {"run_dir": str(run.path)}
    t0 = time.perf_counter()
    backbone = create_backbone(DEFAULT_BACKBONE)
    names, x = sample_photos(backbone.preprocess)
    tops = classify_tensor(backbone, x, topk=5)
    fig = run.save_figure(classification_figure(names, x, tops), "classify.png")
    summary["classify"] = [{"image": n, "top": t} for n, t in zip(names, tops)]
    report.append(f"[classify] {DEFAULT_BACKBONE} on scikit-image's photos → {fig}")
    report += [f"  {n:<10} {t[0]['label'].split(',')[0]} ({t[0]['prob']:.0%})" for n, t in zip(names, tops)]

    if data is not None and Path(data).is_dir():
        smallest = int(np.bincount(ImageFolder.scan(data).labels).min())
        k = max(2, min(10, smallest // 2))  # 10 training images per class, fewer on a tiny dataset
        config = TransferConfig(data=data, split=f"random:{k}", backbone=DEFAULT_BACKBONE, layers=["pre_logits"],
                                Cs=[1.0, 0.1], folds=min(3, k), limit_per_class=3 * k, cache_dir=cache_dir,
                                progress=progress)
        t = run_transfer(config, run / "transfer")
        sel = t["selected"]
        summary["transfer"] = {k: t[k] for k in ("n_train", "n_test", "selected", "timing", "run_dir")}
        report.append(f"[transfer] {DEFAULT_BACKBONE} + LinearSVC on {data} (10 train / 20 test images per class): "
                      f"test accuracy {sel['test_accuracy']:.3f} → {t['run_dir']}")
    else:
        report.append("[transfer] skipped: pass --data DIR (one subfolder per class) or set CNNLAB_DATA")
    report += _explain_and_generate(run, backbone, names, x, summary)
    summary["seconds"] = time.perf_counter() - t0
    report.append(f"done in {summary['seconds']:.1f} s; everything is in {run.path}")
    summary["report"] = report
    run.write_metrics({k: v for k, v in summary.items() if k != "report"})
    return summary
