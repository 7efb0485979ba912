"""The Explain tab: top-5 of an image, saliency maps of the chosen methods over it, and on request the deletion /
insertion curves against random orders. Endpoints: /classify, /saliency."""
from __future__ import annotations

from ..core.figures import new_figure, overlay
from ..jobs.saliency import saliency
from ..explain.faithfulness import deletion_insertion
from ..explain.saliency import METHODS
from ..explain.sanity import verdict
from ..jobs.classify import classify
from .state import AppModels, friendly, read_upload


def build(models: AppModels, max_pixels: int, samples: dict[str, str]) -> None:
    import gradio as gr

    with gr.Tab("Explain", id="explain"):
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", label="image (upload, or pick a sample below)", elem_id="explain-image",
                                 sources=["upload", "clipboard"])
                gr.Examples(list(samples.values()), inputs=image, label="sample photos")
                model = gr.Dropdown(models.specs, value=models.specs[0], label="model", elem_id="explain-model")
                methods = gr.CheckboxGroup([(_label(m), m) for m in METHODS], value=["vanilla", "gradcam"],
                                           label="methods (⚠: fails the model-randomization sanity check)")
                curves = gr.Checkbox(False, label="deletion / insertion curves vs random (slower)")
                go = gr.Button("Explain", variant="primary", elem_id="explain-go")
            with gr.Column(scale=2):
                top = gr.Label(num_top_classes=5, label="top-5", elem_id="explain-top")
                gallery = gr.Gallery(label="saliency over the image (the predicted class)", columns=3,
                                     elem_id="explain-maps", height="auto")
                text = gr.Markdown(elem_id="explain-text")
                plot = gr.Plot(label="deletion / insertion curves")

    @friendly
    def classify_fn(image, spec):
        x = read_upload(image, max_pixels)
        result = classify(models.get(spec), {"image": x}, topk=5)
        return {t["label"].split(",")[0]: t["prob"] for t in result.results[0]["top"]}

    @friendly
    def saliency_fn(image, spec, chosen, with_curves):
        if not chosen:
            raise ValueError("choose at least one method")
        backbone = models.get(spec)
        x = read_upload(image, max_pixels)
        maps, lines, curves = [], [], {}
        for method in chosen:
            r = saliency(backbone, {"image": x}, method=method, smoothgrad_samples=8)
            label = r.class_names[r.targets[0]].split(",")[0]
            maps.append((to_image_array(overlay(r.images[0], r.maps[0])), f"{method}: {label}"))
            if with_curves:
                s = deletion_insertion(backbone, r.images, r.maps, r.targets, n_random=2, curves=True)
                curves[method] = s
                lines.append(f"- **{method}**: deletion AUC {float(s['deletion_auc'][0]):.3f} (random "
                             f"{float(s['random_deletion_auc'][0]):.3f}), insertion AUC "
                             f"{float(s['insertion_auc'][0]):.3f} (random {float(s['random_insertion_auc'][0]):.3f})")
        return maps, "\n".join(lines), (_curves_figure(curves) if curves else None)

    go.click(classify_fn, [image, model], top, api_name="classify", preprocess=False).then(
        saliency_fn, [image, model, methods, curves], [gallery, text, plot], api_name="saliency", preprocess=False)


def _label(method: str) -> str:
    """A method's name, marked where its measured sanity check failed (docs/benchmarks.md)."""
    return f"{method} ⚠" if verdict(method).startswith("FAILS") else method


def to_image_array(a):
    import numpy as np

    return (np.clip(a, 0, 1) * 255).round().astype("uint8")


def _curves_figure(curves: dict):
    fig = new_figure(8, 3.2)
    ax_del, ax_ins = fig.subplots(1, 2)
    for method, s in curves.items():
        steps = s["deletion_curve"].shape[-1]
        t = [k / (steps - 1) for k in range(steps)]
        ax_del.plot(t, s["deletion_curve"][0].numpy(), label=method)
        ax_ins.plot(t, s["insertion_curve"][0].numpy(), label=method)
    first = next(iter(curves.values()))
    steps = first["random_deletion_curve"].shape[-1]
    t = [k / (steps - 1) for k in range(steps)]
    ax_del.plot(t, first["random_deletion_curve"][0].numpy(), "k--", label="random order")
    ax_ins.plot(t, first["random_insertion_curve"][0].numpy(), "k--", label="random order")
    for ax, title in ((ax_del, "deletion (lower is better)"), (ax_ins, "insertion (higher is better)")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("fraction of patches")
        ax.set_ylabel("probability of the class")
        ax.legend(fontsize=7)
    return fig
