"""The `cnnlab` command, generated from the jobs' configs: each subcommand's options, choices, defaults and help
come from its config dataclass (the one the Python API uses); the command builds the config (defaults ← --config
file ← environment ← flags), makes one API call, saves the run directory and prints a summary (human-readable, or
JSON on stdout with --json). User errors become one line on stderr and exit status 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .core.config import Config, add_options, from_cli
from .core.errors import CnnlabError
from .core.runs import is_npz


@dataclass(frozen=True)
class Command:
    name: str  # "explain saliency"
    config: Callable[[], type[Config]]  # imported when the command runs (keeps `cnnlab --help` fast)
    run: Callable[[Config, str | None, bool, argparse.Namespace], Any]  # (config, --out, progress, args) → Result
    help: str
    out: str = "default"  # default: runs/<kind>-<time> | required | optional (only written when given) | managed
    out_help: str = "run directory"
    extra: tuple[tuple[str, str], ...] = ()  # flags of the call, not of the config (e.g. --resume)


# ---------------------------------------------------------------------------------------------- the API calls
def _models(): from .core.models import ModelsConfig; return ModelsConfig  # noqa: E702
def _classify(): from .jobs.classify import ClassifyConfig; return ClassifyConfig  # noqa: E702
def _features(): from .jobs.features import FeaturesConfig; return FeaturesConfig  # noqa: E702
def _transfer(): from .jobs.transfer import TransferConfig; return TransferConfig  # noqa: E702
def _saliency(): from .jobs.saliency import SaliencyConfig; return SaliencyConfig  # noqa: E702
def _evaluate_saliency(): from .jobs.evaluate import EvaluateSaliencyConfig; return EvaluateSaliencyConfig  # noqa: E702,E501
def _fool(): from .jobs.fool import FoolConfig; return FoolConfig  # noqa: E702
def _classviz(): from .jobs.classviz import ClassVizConfig; return ClassVizConfig  # noqa: E702
def _dream(): from .jobs.dream import DreamConfig; return DreamConfig  # noqa: E702
def _atlas(): from .jobs.atlas import AtlasConfig; return AtlasConfig  # noqa: E702
def _train(): from .gan.training import GanConfig; return GanConfig  # noqa: E702
def _sample(): from .gan.sampling import SampleConfig; return SampleConfig  # noqa: E702
def _evaluate(): from .gan.evaluation import EvaluateConfig; return EvaluateConfig  # noqa: E702
def _reproduce(): from .report.reproduce import ReproduceConfig; return ReproduceConfig  # noqa: E702
def _demo(): from .demo import DemoConfig; return DemoConfig  # noqa: E702
def _app(): from .app.server import AppConfig; return AppConfig  # noqa: E702


def _call(module: str, name: str) -> Callable:
    """(config, out, progress, args) → the API function `module.name` called with the config."""
    def run(config, out, progress, args):
        import importlib

        return getattr(importlib.import_module(module, __package__), name)(config=config, progress=progress)
    return run


def _run_models(config, out, progress, args):
    from .core.models import catalog

    return catalog(config)


def _streamed(module: str, name: str, kind: str) -> Callable:
    """A per-image job written into its run directory as it goes (bounded memory, resumable, torchrun-sharded)."""
    def run(config, out, progress, args):
        import importlib

        from .core.runs import RunDir

        from .core.runner import launched

        if out is None and launched()[1] > 1:
            raise CnnlabError("under torchrun, give --out: every process writes into the same folder")
        if out is None and kind != "classify":
            out = str(RunDir.create(None, kind).path)
        return getattr(importlib.import_module(module, __package__), name)(config=config, out=out, progress=progress)
    return run


def _run_transfer(config, out, progress, args):
    from .jobs.transfer import transfer

    return transfer(config=config, progress=progress, out=out)


def _run_atlas(config, out, progress, args):
    from .jobs.atlas import atlas

    if not out:
        raise CnnlabError("--out SITE is required: the folder the atlas page is written to")
    return atlas(config=config, out=out, progress=progress)


def _run_features(config, out, progress, args):
    from .jobs.features import features

    return features(config=config, out=None if is_npz(out) else out, progress=progress)


def _run_train(config, out, progress, args):
    from .gan.training import train

    return train(config=config, out=out, resume=args.resume, progress=progress)


def _run_sample(config, out, progress, args):
    from .gan.sampling import sample

    return sample(config=config)


def _run_reproduce(config, out, progress, args):
    from .report.reproduce import reproduce

    return reproduce(out, config=config, progress=progress)


def _run_app(config, out, progress, args):
    from .app.server import run_app

    return run_app(config)


def _run_demo(config, out, progress, args):
    from .demo import run_demo

    return run_demo(config, progress)


COMMANDS = [
    Command("demo", _demo, _run_demo, "offline tour: classify, explain, fool, dream, generate (and a quick transfer)"),
    Command("models", _models, _run_models, "list backbones, cut points, parameter counts", out="optional",
            out_help="also write the listing into this run directory"),
    Command("classify", _classify, _streamed(".jobs.classify", "classify", "classify"), "top-k classes of images",
            out="optional", out_help="also write the run directory there (results.jsonl as it goes, config.json, "
                                     "metrics.json, classify.png)"),
    Command("features", _features, _run_features, "extract features of an image folder", out="required",
            out_help="an .npz file, or a folder: a feature store streamed as it is computed (bounded memory, "
                     "resumable, shared out under torchrun; cnnlab.load_features reads both)"),
    Command("transfer", _transfer, _run_transfer, "features + linear SVM, layer × C ablation; or a trained head, "
            "fine-tuning"),
    Command("explain saliency", _saliency, _streamed(".jobs.saliency", "saliency", "saliency"),
            "saliency maps and their faithfulness"),
    Command("explain evaluate", _evaluate_saliency, _streamed(".jobs.evaluate", "evaluate_saliency", "evaluate"),
            "saliency methods × metrics: a leaderboard with bootstrap intervals, and the sanity checks"),
    Command("explain fool", _fool, _streamed(".jobs.fool", "fool", "fool"), "targeted adversarial (fooling) images"),
    Command("explain classviz", _classviz, _call(".jobs.classviz", "classviz"), "class-model visualization"),
    Command("explain dream", _dream, _call(".jobs.dream", "dream"),
            "feature visualization of a class, channel, neuron or direction; DeepDream"),
    Command("explain atlas", _atlas, _run_atlas, "a static HTML page of a layer's channels: visualizations and "
            "top dataset images", out="managed", out_help="SITE: the folder the page is written to (required)"),
    Command("gan train", _train, _run_train, "train a DCGAN / cDCGAN / cGAN", out="managed",
            extra=(("--resume", "continue the checkpoint in --out (refused if its settings differ)"),)),
    Command("gan sample", _sample, _run_sample, "sample images from a generator", out="required",
            out_help="output folder"),
    Command("gan evaluate", _evaluate, _call(".gan.evaluation", "evaluate"), "conditional accuracy and Fréchet distance",
            out="optional", out_help="also write config.json and metrics.json into this run directory"),
    Command("reproduce", _reproduce, _run_reproduce, "regenerate the lab report's tables and figures", out="managed",
            out_help="REPORT_DIR"),
    Command("app", _app, _run_app, "the browser app: explain, fool, dream, generate, transfer", out="none"),
]
GROUPS = {"explain": "saliency maps and how far to trust them, fooling images, feature visualization",
          "gan": "train, sample and evaluate GANs"}
GROUP_TEXT = {"explain": "Explain a classifier (the report's part 2).",
              "gan": "Generative adversarial networks (the report's part 3)."}


# ------------------------------------------------------------------------------------------------------ parser
def _add_command(sub, cmd: Command, config_cls: type[Config]) -> None:
    doc = (config_cls.description() or cmd.help).strip()
    p = sub.add_parser(cmd.name.split()[-1], help=cmd.help, description=_dedent(doc),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(command=cmd)
    add_options(p, config_cls)
    p.add_argument("--config", metavar="CONFIG_JSON", default=None,
                   help="read options from a config.json (e.g. RUN_DIR/config.json, which repeats that run); options "
                        "given here override it")
    if cmd.out != "none":
        p.add_argument("--out", default=None, help=cmd.out_help + (" (required)" if cmd.out == "required" else "")
                       + (f" (default: runs/{cmd.name.split()[-1]}-<time>)" if cmd.out == "default" else ""))
    for flag, text in cmd.extra:
        p.add_argument(flag, action="store_true", help=text)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a machine-readable JSON summary on stdout")


def _dedent(text: str) -> str:
    import textwrap

    first, _, rest = text.partition("\n")
    return first + ("\n" + textwrap.dedent(rest) if rest else "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnlab", description="Transfer, explain and generate with ImageNet CNNs.",
                                     epilog="Run `cnnlab COMMAND --help` for each command's options.")
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True)
    groups = {}
    for cmd in COMMANDS:
        words = cmd.name.split()
        if len(words) == 2 and words[0] not in groups:
            g = sub.add_parser(words[0], help=GROUPS[words[0]], description=GROUP_TEXT[words[0]])
            groups[words[0]] = g.add_subparsers(dest=f"{words[0]}_command", metavar=f"{words[0].upper()}_COMMAND",
                                                required=True)
        _add_command(groups[words[0]] if len(words) == 2 else sub, cmd, cmd.config())
    return parser


# -------------------------------------------------------------------------------------------------------- main
def _skipped(summary: dict) -> list[str]:
    items = summary.get("skipped") or summary.get("skipped_images") or []
    return [f"{s['image']}: {s['error']}" if isinstance(s, dict) else str(s) for s in items]


def run(args: argparse.Namespace, env: dict) -> int:
    cmd: Command = args.command
    config_cls = cmd.config()
    base = config_cls.load(args.config).to_dict() if args.config else None
    config = from_cli(config_cls, args, env, base)
    out = getattr(args, "out", None)
    if cmd.out == "required" and not out:
        raise CnnlabError("--out is required")
    if out and Path(out).is_file() and not is_npz(out):  # said before any work, not after it
        raise CnnlabError(f"--out {out} is a file, not a folder")
    from .core.runner import launched

    rank = launched(env)[0]  # under torchrun only rank 0 writes the run directory and speaks
    result = cmd.run(config, out, not args.quiet and rank == 0, args)
    if rank != 0:
        return 0
    if cmd.out == "default" or (cmd.out in ("optional", "required") and out):
        result.save(result.run_dir or out)
    summary = result.summary()
    skipped = _skipped(summary)
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable image(s):", file=sys.stderr)
        for s in skipped:
            print(f"  {s}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.text())
    code = getattr(result, "exit_code", 0)
    failed = getattr(result, "failed", None) if code else None
    if failed:
        print(f"cnnlab: error: {len(failed)} experiment(s) failed: {', '.join(failed)} (see {summary.get('index')})",
              file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None, env: dict | None = None) -> int:
    env = dict(os.environ) if env is None else env
    args = build_parser().parse_args(argv)
    try:
        return run(args, env)
    except CnnlabError as exc:
        print(f"cnnlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a read-only folder: said in one line (writes are atomic: nothing half-done)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"cnnlab: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2


def reference(width: int = 100) -> str:
    """docs/cli.md: every command's `--help`, at a fixed width (regenerate with `python -m cnnlab.cli > docs/cli.md`;
    a test checks that it is current)."""
    import functools

    parts = ["# Command-line reference\n\nGenerated from `cnnlab COMMAND --help` (`python -m cnnlab.cli > "
             "docs/cli.md`); a test keeps it current.\n"]
    def add(p: argparse.ArgumentParser) -> None:
        p.formatter_class = functools.partial(p.formatter_class, width=width)
        parts.append(f"\n## `{p.prog}`\n\n```text\n{p.format_help().rstrip()}\n```\n")
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for child in a.choices.values():
                    add(child)

    add(build_parser())
    return "".join(parts)


if __name__ == "__main__":
    print(reference(), end="")
