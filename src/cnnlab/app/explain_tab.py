"""The Explain tab: top-5 of an image, saliency maps of the chosen methods over it, and on request the deletion /
insertion curves against random orders; then "can these maps be trusted?": the chosen methods' maps of the upload
as the model is randomized step by step, and the methods × metrics leaderboard over an image folder under
--data-root. Endpoints: /classify, /saliency, /sanity, /leaderboard."""
from __future__ import annotations

from pathlib import Path

from ..core.figures import overlay
from ..core.images import IMAGE_EXTENSIONS
from ..explain.metrics import METRICS
from ..explain.saliency import METHODS, RECOMMENDED
from ..explain.verdicts import verdict
from ..jobs.classify import classify
from ..jobs.evaluate import DEFAULT_METHODS, evaluate_saliency
from ..jobs.saliency import saliency
from .state import AppModels, friendly, inside, read_upload

CHEAP_METRICS = ["deletion", "insertion", "randomization"]  # ROAD solves a sparse system per image and percentage


def build(models: AppModels, max_pixels: int, samples: dict[str, str], root: Path | None = None) -> None:
    import gradio as gr

    with gr.Tab("Explain", id="explain"):
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", label="image (upload, or pick a sample below)", elem_id="explain-image",
                                 sources=["upload", "clipboard"])
                gr.Examples(list(samples.values()), inputs=image, label="sample photos")
                model = gr.Dropdown(models.specs, value=models.specs[0], label="model", elem_id="explain-model")
                methods = gr.CheckboxGroup(method_choices(), value=["vanilla", RECOMMENDED],
                                           label="methods (★ recommended: the best faithfulness-panel rank among "
                                                 "cheap methods that pass the sanity check; ⚠ MODEL: fails the "
                                                 "shipped model-randomization check on MODEL — the leaderboard "
                                                 "below gives the verdict on your own images)")
                curves = gr.Checkbox(False, label="deletion / insertion curves vs random (slower)")
                go = gr.Button("Explain", variant="primary", elem_id="explain-go")
            with gr.Column(scale=2):
                top = gr.Label(num_top_classes=5, label="top-5", elem_id="explain-top")
                gallery = gr.Gallery(label="saliency over the image (the predicted class)", columns=3,
                                     elem_id="explain-maps", height="auto")
                text = gr.Markdown(elem_id="explain-text")
                plot = gr.Plot(label="deletion / insertion curves")
        with gr.Accordion("Can these maps be trusted?", open=False):
            gr.Markdown("**Sanity check** (Adebayo et al. 2018): the chosen methods' maps of the image above as the "
                        "model's layers are re-drawn at random, from the logits down. A map that stays alike does "
                        "not depend on what the model learned.")
            sanity_go = gr.Button("Randomize the model step by step", elem_id="explain-sanity-go")
            sanity_text = gr.Markdown(elem_id="explain-sanity-text")
            sanity_plot = gr.Plot(label="maps as the model is randomized")
            gr.Markdown("**Leaderboard**: methods × metrics over an image folder under --data-root (mean, 95 % "
                        "bootstrap interval, rank).")
            with gr.Row():
                found = image_sets(root)
                folder = gr.Dropdown(found, value=found[0] if found else None, label="images (under --data-root)")
                board_methods = gr.CheckboxGroup(list(METHODS), value=list(DEFAULT_METHODS)[:5], label="methods")
                board_metrics = gr.CheckboxGroup(list(METRICS), value=CHEAP_METRICS, label="metrics")
                limit = gr.Slider(1, 100, value=8, step=1, label="images (the first N)")
            board_go = gr.Button("Evaluate", elem_id="explain-board-go")
            board = gr.Markdown(elem_id="explain-board")
            board_plot = gr.Plot(label="curves")

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
        maps = []
        for method in chosen:
            r = saliency(backbone, {"image": x}, method=method, **METHODS.quick([method]))
            label = r.class_names[r.targets[0]].split(",")[0]
            maps.append((to_image_array(overlay(r.images[0], r.maps[0])), f"{method}: {label}"))
        if not with_curves:
            return maps, "", None
        ev = evaluate_saliency(backbone, {"image": x}, methods=chosen, metrics=["deletion", "insertion"],
                               random_orders=2, **METHODS.quick(chosen))
        lines = [f"- **{r['method']}**: deletion ratio {r['deletion_ratio']:.2f}, insertion ratio "
                 f"{r['insertion_ratio']:.2f} (against random patch orders)" for r in ev.leaderboard]
        return maps, "\n".join(lines), ev.figure()

    @friendly
    def sanity_fn(image, spec, chosen, progress=gr.Progress(track_tqdm=True)):
        if not chosen:
            raise ValueError("choose at least one method")
        ev = evaluate_saliency(models.get(spec), {"image": read_upload(image, max_pixels)}, methods=chosen,
                               metrics=["randomization"], figure_steps=True, controls=False, **METHODS.quick(chosen))
        lines = [f"- **{r['method']}**: rank correlation with the trained model's map once every layer is random "
                 f"{r['randomization_rank_corr']:.2f} — {r['verdict']}" for r in ev.leaderboard]
        return "\n".join(lines), ev.figures()["randomization.png"]

    @friendly
    def board_fn(name, spec, chosen, metrics, n, progress=gr.Progress(track_tqdm=True)):
        if not chosen or not metrics:
            raise ValueError("choose at least one method and one metric")
        folder = str(inside(root, name, "an image folder", "to evaluate over a folder"))
        ev = evaluate_saliency(models.get(spec), [folder], methods=chosen, metrics=metrics, limit=int(n),
                               figure_steps=False, progress=True, **METHODS.quick(chosen))
        return ev.short_markdown() + "\n**Every column**\n\n" + ev.markdown(), ev.figure()

    go.click(classify_fn, [image, model], top, api_name="classify", preprocess=False).then(
        saliency_fn, [image, model, methods, curves], [gallery, text, plot], api_name="saliency", preprocess=False)
    sanity_go.click(sanity_fn, [image, model, methods], [sanity_text, sanity_plot], api_name="sanity",
                    preprocess=False)
    board_go.click(board_fn, [folder, model, board_methods, board_metrics, limit], [board, board_plot],
                   api_name="leaderboard", preprocess=False)


def image_sets(root: Path | None) -> list[str]:
    """Image folders and .npz image arrays at most two levels under the root (their paths relative to it)."""
    if root is None or not root.is_dir():
        return []
    found = []
    for p in sorted(p for p in root.rglob("*") if len(p.relative_to(root).parts) <= 2):
        if p.is_file() and p.suffix.lower() == ".npz" or p.is_dir() and any(
                f.suffix.lower() in IMAGE_EXTENSIONS for f in p.iterdir()):
            found.append(str(p.relative_to(root)))
    return found


def method_choices() -> list[tuple[str, str]]:
    """(label, name) of every registered method, as the tab lists them."""
    return [(_label(m), m) for m in METHODS]


def _label(method: str) -> str:
    """A method's name, marked with the models on which its shipped sanity check failed (sanity.json)."""
    star = " ★" if method == RECOMMENDED else ""
    star += " (transformers)" if METHODS[method].transformers_only else ""
    star += " (CNNs)" if METHODS[method].cnns_only else ""
    star += " (control)" if METHODS[method].control else ""
    said = verdict(method)
    return f"{method}{star} ⚠ {said.rsplit(' on ', 1)[1]}" if said.startswith("FAILS") else f"{method}{star}"


def to_image_array(a):
    import numpy as np

    return (np.clip(a, 0, 1) * 255).round().astype("uint8")
