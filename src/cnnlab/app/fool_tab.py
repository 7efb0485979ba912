"""The Fool tab: a fooling image of an upload for a chosen target class; original | adversarial | magnified
difference, the top-5 before and after, the change in 1/255 units, and the 8-bit PNG to download (it fools
`cnnlab classify` too: the attack works on the image itself). Endpoint: /fool."""
from __future__ import annotations

import tempfile
from pathlib import Path


from ..core.images import save_png
from ..jobs.classify import classify
from ..jobs.fool import fool
from ..explain.attacks import ATTACKS
from .state import AppModels, friendly, read_upload, to_image

APP_ATTACKS = [m for m in ATTACKS if m != "transfer"]  # the transfer attack runs for minutes: the CLI's job


def build(models: AppModels, max_pixels: int, samples: dict[str, str]) -> None:
    import gradio as gr

    labels = list(models.get(None).labels)
    with gr.Tab("Fool", id="fool"):
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", label="image", elem_id="fool-image", sources=["upload", "clipboard"])
                gr.Examples(list(samples.values()), inputs=image, label="sample photos")
                model = gr.Dropdown(models.specs, value=models.specs[0], label="model")
                target = gr.Dropdown(labels, value=labels[76], label="target class (type to search)", filterable=True,
                                     elem_id="fool-target")
                method = gr.Radio(APP_ATTACKS, value="minimal", label="method")
                bound = gr.Slider(1, 32, value=8, step=1, label="fgsm / pgd bound ε (in 1/255)")
                go = gr.Button("Fool", variant="primary", elem_id="fool-go")
            with gr.Column(scale=2):
                with gr.Row():
                    original = gr.Image(label="original", interactive=False, format="png")
                    adversarial = gr.Image(label="adversarial", interactive=False, elem_id="fool-adversarial", format="png")
                    difference = gr.Image(label="difference ×10", interactive=False, format="png")
                with gr.Row():
                    before = gr.Label(num_top_classes=5, label="top-5 before")
                    after = gr.Label(num_top_classes=5, label="top-5 after")
                text = gr.Markdown(elem_id="fool-text")
                download = gr.File(label="the adversarial image (8-bit PNG)")

    @friendly
    def fool_fn(image, spec, target_name, how, eps, progress=gr.Progress(track_tqdm=True)):
        backbone = models.get(spec)
        x = read_upload(image, max_pixels)
        bound = {"eps": float(eps) / 255} if ATTACKS.takes(how, "eps") else {}  # the slider is for fgsm / pgd
        r = fool(backbone, {"image": x}, target=target_name, method=how, progress=True, **bound)
        a, o = r.adversarials[0], r.originals[0]
        png = Path(tempfile.mkdtemp(prefix="cnnlab-fool-")) / "adversarial.png"
        save_png(a, png)
        tops = classify(backbone, {"original": o, "adversarial": str(png)}, topk=5).results  # the file as saved
        p_before, p_after = ({t["label"].split(",")[0]: t["prob"] for t in row["top"]} for row in tops)
        row = r.image_rows()[0]
        verdict = "succeeded" if row["success"] else "did not succeed"
        text = (f"**The attack {verdict}**: {r.class_names[row['pred_before']].split(',')[0]} → "
                f"{r.class_names[row['pred_after']].split(',')[0]} (target {r.class_names[row['target']].split(',')[0]}) "
                f"after {row['iterations']} steps; change L∞ {row['linf'] * 255:.1f}/255, L2 {row['l2'] * 255:.1f}/255 "
                f"(in the image's own pixels, {o.shape[-1]}×{o.shape[-2]}).")
        diff = (0.5 + 10 * (a - o)).clamp(0, 1)
        return to_image(o), to_image(a), to_image(diff), p_before, p_after, text, str(png)

    go.click(fool_fn, [image, model, target, method, bound],
             [original, adversarial, difference, before, after, text, download], api_name="fool", preprocess=False)
