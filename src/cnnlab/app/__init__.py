"""`cnnlab app`: the browser explorer (Gradio), one module per tab, each on the same Python API."""
from .server import AppConfig, build_app, serve

__all__ = ["AppConfig", "build_app", "serve"]
