"""The table of jobs: one row per command, naming the module that holds it (`module:function` for the call,
`module:Class` for its config) and the public names that module gives the Python API. The CLI (`cli.py`) builds
its parser and calls from these rows; `import cnnlab` takes its lazy names from them. A new job is its module plus
one row. Nothing here imports a job: the table stays as light as `import cnnlab`.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Command:
    name: str  # "explain saliency"
    call: str  # "jobs.saliency:saliency": the function the command calls, relative to the package
    config_at: str  # "jobs.saliency:SaliencyConfig": its config class
    help: str
    out: str = "default"  # default: runs/<kind>-<time> | required | optional (only written when given) | managed | none
    out_help: str = "run directory"
    extra: tuple[tuple[str, str], ...] = ()  # flags of the call, not of the config (e.g. --resume)
    streamed: bool = False  # a per-image job that writes its run directory as it goes (torchrun needs --out)
    api: tuple[str, ...] = ()  # the module's names that `cnnlab.NAME` gives (the function, its config, its result…)

    @property
    def module(self) -> str:
        return "." + self.call.partition(":")[0]

    def config(self) -> type:
        """The config class (imported now: `cnnlab --help` stays fast)."""
        module, _, name = self.config_at.partition(":")
        return getattr(importlib.import_module("." + module, __package__), name)

    def function(self) -> Callable:
        module, _, name = self.call.partition(":")
        return getattr(importlib.import_module("." + module, __package__), name)

    def invoke(self, config: Any, out: str | None, progress: bool, flags: dict[str, Any]) -> Any:
        """The call with what its function takes: the config, and `out`, `progress` and the extra flags where its
        signature names them."""
        fn = self.function()
        takes = inspect.signature(fn).parameters
        kwargs = {"config": config, "out": out, "progress": progress, **flags}
        return fn(**{k: v for k, v in kwargs.items() if k in takes})


COMMANDS = [
    Command("demo", "demo:run_demo", "demo:DemoConfig",
            "offline tour: classify, explain, fool, dream, generate (and a quick transfer)"),
    Command("models", "jobs.models:catalog", "jobs.models:ModelsConfig", "list backbones, cut points, parameter counts",
            out="optional", out_help="also write the listing into this run directory",
            api=("catalog", "ModelsConfig", "ModelsResult", "describe_backbone")),
    Command("classify", "jobs.classify:classify", "jobs.classify:ClassifyConfig", "top-k classes of images",
            out="optional", out_help="also write the run directory there (results.jsonl as it goes, config.json, "
                                     "metrics.json, classify.png)",
            streamed=True, api=("classify", "ClassifyConfig", "ClassifyResult")),
    Command("features", "jobs.features:features", "jobs.features:FeaturesConfig", "extract features of an image folder",
            out="required", out_help="an .npz file, or a folder: a feature store streamed as it is computed (bounded "
                                     "memory, resumable, shared out under torchrun; cnnlab.load_features reads both)",
            api=("features", "FeaturesConfig", "FeaturesResult")),
    Command("transfer", "jobs.transfer:transfer", "jobs.transfer:TransferConfig",
            "features + linear SVM, layer × C ablation; or a trained head, fine-tuning",
            api=("transfer", "TransferConfig", "TransferResult", "load_classifier")),
    Command("explain saliency", "jobs.saliency:saliency", "jobs.saliency:SaliencyConfig",
            "saliency maps and their faithfulness", streamed=True,
            api=("saliency", "SaliencyConfig", "SaliencyResult")),
    Command("explain evaluate", "jobs.evaluate:evaluate_saliency", "jobs.evaluate:EvaluateSaliencyConfig",
            "saliency methods × metrics: a leaderboard with bootstrap intervals, and the sanity checks", streamed=True,
            api=("evaluate_saliency", "EvaluateSaliencyConfig", "SaliencyEvaluation")),
    Command("explain fool", "jobs.fool:fool", "jobs.fool:FoolConfig", "targeted adversarial (fooling) images",
            streamed=True, api=("fool", "FoolConfig", "FoolResult")),
    Command("explain classviz", "jobs.classviz:classviz", "jobs.classviz:ClassVizConfig", "class-model visualization",
            api=("classviz", "ClassVizConfig", "ClassVizResult")),
    Command("explain dream", "jobs.dream:dream", "jobs.dream:DreamConfig",
            "feature visualization of a class, channel, neuron or direction; DeepDream",
            api=("dream", "DreamConfig", "DreamResult")),
    Command("explain atlas", "jobs.atlas:atlas", "jobs.atlas:AtlasConfig", "a static HTML page of a layer's channels: "
            "visualizations and top dataset images", out="required",
            out_help="SITE: the folder the page is written to", api=("atlas", "AtlasConfig", "AtlasResult")),
    Command("gan train", "gan.training:train", "gan.training:GanConfig", "train a DCGAN / cDCGAN / cGAN", out="managed",
            extra=(("--resume", "continue the checkpoint in --out (refused if its settings differ)"),)),
    Command("gan sample", "gan.sampling:sample", "gan.sampling:SampleConfig", "sample images from a generator",
            out="required", out_help="output folder"),
    Command("gan evaluate", "gan.evaluation:evaluate", "gan.evaluation:EvaluateConfig",
            "conditional accuracy and Fréchet distance", out="optional",
            out_help="also write config.json and metrics.json into this run directory"),
    Command("reproduce", "report.reproduce:reproduce", "report.reproduce:ReproduceConfig",
            "regenerate the lab report's tables and figures", out="managed", out_help="REPORT_DIR",
            api=("reproduce", "ReproduceConfig", "ReproduceResult")),
    Command("app", "app.server:run_app", "app.server:AppConfig",
            "the browser app: explain, fool, dream, generate, transfer", out="none"),
]


def api_names() -> dict[str, str]:
    """Public name → the module (relative to the package) that defines it, for every job's `api` names."""
    return {name: cmd.module for cmd in COMMANDS for name in cmd.api}
