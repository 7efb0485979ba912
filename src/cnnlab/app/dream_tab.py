"""The Dream tab: feature visualization of any objective — a class (judged by a second model at the end), a
channel or a neuron of any layer, DeepDream on an uploaded photo, or any objective in the CLI's spelling — with the
image shown while it forms. Endpoint: /dream (it streams: each yield is a newer image)."""
from __future__ import annotations

import queue
import threading

from ..explain.objectives import SYNTAX
from ..explain.params import PARAMS
from ..jobs.classviz import classviz
from ..jobs.dream import DreamConfig, dream
from .state import AppModels, friendly, read_upload, to_image

KINDS = ("class", "channel", "neuron", "DeepDream on the photo", "objective")


def objective_text(kind: str, target: str, layer: str, channel: int, text: str) -> str:
    """The CLI spelling of what the widgets say."""
    if kind == "channel":
        return f"{layer}:{int(channel)}"
    if kind == "neuron":
        return f"{layer}:{int(channel)}@centre"
    if kind == "DeepDream on the photo":
        return f"dream:{layer}"
    if kind == "objective":
        return text
    return f"class:{target}"


def build(models: AppModels, max_pixels: int) -> None:
    import gradio as gr

    first = models.get(None)
    labels, layers = list(first.labels), [p for p in first.cut_points if p not in ("logits", "pre_logits")]
    with gr.Tab("Dream", id="dream"):
        with gr.Row():
            with gr.Column(scale=1):
                kind = gr.Radio(list(KINDS), value="class", label="what to draw")
                target = gr.Dropdown(labels, value=labels[76], label="class (type to search)", filterable=True)
                layer = gr.Dropdown(layers, value=layers[len(layers) // 2], label="layer (channel, neuron, DeepDream)",
                                    allow_custom_value=True)
                channel = gr.Number(value=0, precision=0, minimum=0, label="channel")
                text = gr.Textbox(label="objective", placeholder="block5:12 - 0.5*block5:7", info=SYNTAX)
                photo = gr.Image(type="filepath", label="photo (DeepDream)", sources=["upload", "clipboard"])
                model = gr.Dropdown(models.specs, value=models.specs[0], label="model")
                param = gr.Radio(list(PARAMS), value=DreamConfig().param.name, label="parameterization")
                iters = gr.Slider(10, 512, value=100, step=10, label="steps")
                go = gr.Button("Dream", variant="primary", elem_id="dream-go")
            with gr.Column(scale=2):
                image = gr.Image(label="the image forming", interactive=False, elem_id="dream-image", format="png")
                verdict = gr.Markdown(elem_id="dream-text")

    @friendly
    def dream_fn(what, target_name, layer_name, ch, objective, upload, spec, parameterization, n_iters):
        backbone = models.get(spec)
        n_iters = int(n_iters)
        text_ = objective_text(what, target_name, layer_name, ch, objective)
        start = read_upload(upload, max_pixels) if what == "DeepDream on the photo" else None
        frames: queue.Queue = queue.Queue()
        done: dict = {}
        common = dict(iters=n_iters, param=parameterization, frames=list(range(10, n_iters + 1, 10)),
                      size=min(backbone.preprocess.input_size, 224))

        def run():
            try:
                if what == "class":
                    done["result"] = classviz(backbone, backbone.class_index(target_name), judge=models.judge_for(spec),
                                              on_frame=lambda it, f: frames.put((it, f)), **common)
                else:
                    done["result"] = dream(backbone, text_, image=start, **common,
                                           on_frame=lambda it, f: frames.put((it, f[0])))
            except Exception as exc:  # noqa: BLE001 — handed to the page below
                done["error"] = exc
            frames.put(None)

        threading.Thread(target=run, daemon=True).start()
        while (item := frames.get()) is not None:
            it, frame = item
            yield to_image(frame), f"step {it} / {n_iters}"
        if "error" in done:
            raise done["error"]
        yield to_image(done["result"].image), _verdict(done["result"], what, spec, n_iters)

    go.click(dream_fn, [kind, target, layer, channel, text, photo, model, param, iters], [image, verdict],
             api_name="dream", preprocess=False)


def _verdict(result, what: str, spec: str, n_iters: int) -> str:
    if what != "class":
        return (f"**{result.config.objective}** after {n_iters} steps ({result.config.param.name}): objective "
                f"{result.total[0]:.3g} for {spec}.")
    r, judged = result.results[0], result.results[0]["judge"]
    verdict = "" if judged is None else (
        f"; a second model, **{judged['model']}**, ranks it **{judged['target_rank']}** "
        f"(p = {judged['target_prob']:.3f}: {'recognized' if judged['target_rank'] <= 5 else 'not in its top 5'})")
    return f"**{r['class'].split(',')[0]}** after {n_iters} steps: p = {r['target_prob']:.3f} for {spec}{verdict}."
