"""The Dream tab: class-model visualization, the image shown while the ascent runs, and a second model's verdict
at the end. Endpoint: /dream (it streams: each yield is a newer image)."""
from __future__ import annotations

import queue
import threading

from ..jobs.classviz import classviz
from .state import AppModels, friendly, to_image


def build(models: AppModels) -> None:
    import gradio as gr

    labels = list(models.get(None).labels)
    with gr.Tab("Dream", id="dream"):
        with gr.Row():
            with gr.Column(scale=1):
                target = gr.Dropdown(labels, value=labels[76], label="class (type to search)", filterable=True)
                model = gr.Dropdown(models.specs, value=models.specs[0], label="model")
                iters = gr.Slider(10, 400, value=100, step=10, label="iterations")
                lr = gr.Slider(0.1, 10, value=1.0, step=0.1, label="learning rate (L2 norm of a step)")
                l2 = gr.Slider(0, 1, value=0.1, step=0.01, label="L2 regularization")
                augment = gr.Slider(0, 8, value=4, step=1, label="augmented copies per step (0: the report's)")
                go = gr.Button("Dream", variant="primary", elem_id="dream-go")
            with gr.Column(scale=2):
                image = gr.Image(label="the class, drawn from noise", interactive=False, elem_id="dream-image", format="png")
                text = gr.Markdown(elem_id="dream-text")

    @friendly
    def dream_fn(target_name, spec, n_iters, step, weight, copies):
        backbone = models.get(spec)
        index = backbone.class_index(target_name)
        n_iters = int(n_iters)
        frames: queue.Queue = queue.Queue()
        done: dict = {}

        def run():
            try:
                done["result"] = classviz(backbone, index, iters=n_iters, lr=float(step), l2=float(weight),
                                          augment=int(copies), frames=list(range(10, n_iters + 1, 10)),
                                          size=min(backbone.preprocess.input_size, 224), judge=models.judge_for(spec),
                                          on_frame=lambda it, f: frames.put((it, f)))
            except Exception as exc:  # noqa: BLE001 — handed to the page below
                done["error"] = exc
            frames.put(None)

        threading.Thread(target=run, daemon=True).start()
        while (item := frames.get()) is not None:
            it, frame = item
            yield to_image(frame), f"iteration {it} / {n_iters}"
        if "error" in done:
            raise done["error"]
        result = done["result"]
        r, judged = result.results[0], result.results[0]["judge"]
        verdict = "" if judged is None else (
            f"; a second model, **{judged['model']}**, ranks it **{judged['target_rank']}** "
            f"(p = {judged['target_prob']:.3f}: {'recognized' if judged['target_rank'] <= 5 else 'not in its top 5'})")
        yield to_image(result.image), (f"**{labels[index].split(',')[0]}** after {n_iters} iterations: "
                                       f"p = {r['target_prob']:.3f} for {spec}{verdict}.")

    go.click(dream_fn, [target, model, iters, lr, l2, augment], [image, text], api_name="dream", preprocess=False)
