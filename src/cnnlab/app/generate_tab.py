"""The Generate tab: digits from the shipped cDCGAN (or --checkpoint), a grid for one digit or all, and a slider that
walks the latent space from one seed to another. An image generator (DCGAN) shows its grid. Endpoint: /generate."""
from __future__ import annotations

from ..core.images import make_grid
from ..gan.sampling import sample
from .state import friendly, to_image

WALK_STEPS = 21


def build(checkpoint: str | None) -> None:
    import gradio as gr

    first = sample(checkpoint, n=1)  # a missing or foreign checkpoint is said at start
    is_conditional, model = first.conditional, first.model
    with gr.Tab("Generate", id="generate"):
        with gr.Row():
            with gr.Column(scale=1):
                digit = gr.Dropdown(["all"] + [str(d) for d in range(10)], value="all", label="digit",
                                    visible=is_conditional)
                count = gr.Slider(1, 100, value=64, step=1, label="how many")
                seed = gr.Number(0, precision=0, label="seed")
                seed_to = gr.Number(1, precision=0, label="walk to seed")
                walk = gr.Slider(0, 1, value=0, step=1 / (WALK_STEPS - 1), label="walk the latent space")
                go = gr.Button("Generate", variant="primary", elem_id="generate-go")
            with gr.Column(scale=2):
                grid = gr.Image(label=f"{model} samples", interactive=False, elem_id="generate-grid", format="png")
                walked = gr.Image(label="a point on the walk", interactive=False, height=160, format="png")

    @friendly
    def generate_fn(which, n, first_seed, second, t):
        n = int(n)
        if not 1 <= n <= 256:
            raise ValueError("how many: 1 to 256")
        label = None if which in (None, "all") or not is_conditional else int(which)
        images = sample(checkpoint, n=n, label=label, seed=int(first_seed)).images
        path = sample(checkpoint, n=WALK_STEPS, label=label if label is not None else (0 if is_conditional else None),
                      seed=int(first_seed), interpolate=True, seed_to=int(second)).images
        return to_image(make_grid(images, nrow=min(8, n))), to_image(path[round(float(t) * (WALK_STEPS - 1))])

    inputs = [digit, count, seed, seed_to, walk]
    go.click(generate_fn, inputs, [grid, walked], api_name="generate", preprocess=False)
    walk.release(generate_fn, inputs, [grid, walked], api_name=False, preprocess=False)
