"""`cnnlab app`: the browser app on the Python API — look inside a CNN, fool it, watch it dream, generate digits,
train a classifier. Gradio, local and offline (no CDN, no analytics, no share link), one process, models loaded once."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..core.config import Config, data_root_option, option
from ..core.errors import CnnlabError
from ..core.table import DEFAULT_BACKBONE
from ..core.results import Result


@dataclass
class AppConfig(Config):
    """Starts a local web app (Gradio, offline: no CDN fonts or scripts, no analytics, no share link) on the Python
    API. Tabs: Explain (top-5 and saliency maps over the image, deletion/insertion curves), Fool (a fooling image for
    a chosen class, before/after, the PNG to download), Dream (class visualization, shown as it runs, judged by a
    second model), Generate (digits from the shipped cDCGAN, a latent walk between two seeds), Transfer (train the
    SVM pipeline on a dataset under --data-root, then classify a photo). Every tab is also an API endpoint for
    gradio_client: /classify, /saliency, /fool, /dream, /generate, /transfer (and /transfer_predict)."""

    command = "app"
    backbone: list[str] = option(default_factory=lambda: [DEFAULT_BACKBONE], append=True,
                                 help="a model to serve (repeatable; the first is the default)")
    weights: list[str] = option(default_factory=list, append=True, metavar="WEIGHTS",
                                help="the weights of each --backbone, in the same order (repeatable): 'default', "
                                     "'random[:SEED]' or a state dict file; a model without one gets its default")
    checkpoint: str | None = option(None, help="a GAN checkpoint for the Generate tab (default: the shipped cDCGAN)")
    data_root: str | None = data_root_option("the folder whose datasets the Transfer tab may read (nothing outside it)")
    host: str = option("127.0.0.1", help="address to bind (0.0.0.0 makes the app reachable from the network)")
    port: int = option(7860, low=1, high=65535, help="port")
    max_upload_mb: float = option(20.0, low=0, low_open=True, help="largest upload accepted")
    max_pixels: int = option(40_000_000, low=1, help="largest image accepted, in pixels (a decompression bomb is "
                                                     "refused with a message)")
    queue_size: int = option(32, low=1, help="requests waiting at most; the rest are turned away with a message")
    device: str = option("cpu", help="torch device")


class AppResult(Result):
    kind = "app"

    def __init__(self, config: AppConfig, url: str):
        super().__init__(config)
        self.url = url

    def summary(self) -> dict:
        return {"url": self.url, "backbones": self.config.backbone}

    def text(self) -> str:
        return f"cnnlab app stopped (it served {self.url})"


def sample_files() -> dict[str, str]:
    """scikit-image's photos as files the page can show as examples."""
    from ..core.images import sample_photos

    folder = Path(tempfile.mkdtemp(prefix="cnnlab-app-"))
    out = {}
    for name, image in sample_photos().items():
        out[name] = str(folder / f"{name}.png")
        image.save(out[name])
    return out


def build_app(config: AppConfig):
    """The Gradio Blocks of the app (not started)."""
    try:
        import gradio as gr
    except ImportError:
        raise CnnlabError("the app needs Gradio: pip install 'cnnlab[app]'") from None
    from . import dream_tab, explain_tab, fool_tab, generate_tab, transfer_tab
    from .state import AppModels

    if len(config.weights) > len(config.backbone):
        raise CnnlabError(f"{len(config.weights)} --weights for {len(config.backbone)} --backbone: give one per "
                          "backbone, in the same order")
    weights = dict(zip(config.backbone, config.weights))
    models = AppModels(list(dict.fromkeys(config.backbone)), config.device, weights)
    models.get(None)  # load the default model now: the first click is not the slow one
    samples = sample_files()
    root = Path(config.data_root) if config.data_root else None
    with gr.Blocks(title="cnnlab", analytics_enabled=False) as demo:
        gr.Markdown("# cnnlab\nLook inside a CNN, fool it, watch it dream, generate digits, train a classifier. "
                    f"Models: {', '.join(models.specs)}.")
        with gr.Tabs():
            explain_tab.build(models, config.max_pixels, samples, root)
            fool_tab.build(models, config.max_pixels, samples)
            dream_tab.build(models, config.max_pixels)
            generate_tab.build(config.checkpoint)
            transfer_tab.build(models, config.max_pixels, root)
    demo.queue(default_concurrency_limit=1, max_size=config.queue_size)
    return demo


def serve(config: AppConfig | None = None, block: bool = True):
    """Start the app; with `block=False` return (demo, url) at once (tests, notebooks)."""
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # this process is the app's: no call home
    config = config or AppConfig()
    demo = build_app(config)
    url = f"http://{config.host}:{config.port}/"
    if block:
        print(f"cnnlab app on {url} (Ctrl-C stops it)", flush=True)
    try:
        launched = demo.launch(server_name=config.host, server_port=config.port, share=False, inbrowser=False,
                               max_file_size=int(config.max_upload_mb * 1024 * 1024), prevent_thread_lock=not block,
                               quiet=True, show_error=True, footer_links=["api"])
    except OSError as exc:
        raise CnnlabError(f"cannot serve on {config.host}:{config.port}: {exc}") from None
    if launched:
        url = launched[1] or url
    return demo, url


def run_app(config: AppConfig, progress: bool = False) -> AppResult:
    _, url = serve(config, block=True)
    return AppResult(config, url)
