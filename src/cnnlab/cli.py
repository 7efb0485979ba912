"""The `cnnlab` command, generated from the jobs' configs: each subcommand's options, choices, defaults and help
come from its config dataclass (the one the Python API uses); the command builds the config (defaults ← --config
file ← environment ← flags), makes one API call, saves the run directory and prints a summary (human-readable, or
JSON on stdout with --json). User errors become one line on stderr and exit status 2."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from ._version import __version__
from .commands import COMMANDS, Command
from .core.config import JOIN, Config, flag_of, listed, option_meta, split_at, type_hints, unwrap
from .core.errors import CnnlabError
from .core.runs import dumps, is_npz


def _invoke(cmd: Command, config: Config, out: str | None, progress: bool, args: argparse.Namespace) -> Any:
    """The command's one API call. A streamed job gets a run directory by default (runs/<kind>-<time>), and
    under torchrun every process must be told the same one."""
    from .core.runner import launched

    if cmd.streamed and out is None:
        if launched()[1] > 1:
            raise CnnlabError("under torchrun, give --out: every process writes into the same folder")
        if cmd.out == "default":
            from .core.runs import RunDir

            out = str(RunDir.create(None, cmd.name.split()[-1]).path)
    flags = {flag.lstrip("-").replace("-", "_"): getattr(args, flag.lstrip("-").replace("-", "_"))
             for flag, _ in cmd.extra}
    return cmd.invoke(config, out, progress, flags)


# ----------------------------------------------------------------------------------- options from the configs
def check_required(config: Config) -> None:
    """Options the CLI cannot run without (the API checks its own inputs where it takes them as arguments)."""
    for f in fields(config):
        m, value = option_meta(f), getattr(config, f.name)
        if m.get("required") and (value is None or value == [] or value == ""):
            what = (m.get("metavar") or f.name.upper()) if m.get("positional") else flag_of(f)
            raise CnnlabError(f"{what} is required")


def _default_text(f: dataclasses.Field, m: dict) -> str | None:
    if m.get("default_help"):
        return m["default_help"]
    default = f.default_factory() if f.default_factory is not MISSING else f.default
    if default is MISSING or default is None or default is False or default == []:
        return None
    if isinstance(default, list):
        return m.get("sep", ",").join(f"{v:g}" if isinstance(v, float) else JOIN.join(v) if isinstance(v, list)
                                      else str(v) for v in default)
    return f"{default:g}" if isinstance(default, float) else str(default)


def _parser_for(elem, is_list: bool, sep: str | None):
    def one(text: str):
        try:
            return elem(text) if elem in (int, float) else text
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {elem.__name__}, got {text!r}") from None

    if is_list and sep:
        def many(text: str):
            return [one(t) for t in split_at(text, sep)]
        return many
    return one


def add_options(parser: argparse.ArgumentParser, cls: type[Config]) -> None:
    """One argparse option per CLI field, then one per option of the parts the config chooses from (their
    registries as they are now); every default is SUPPRESS so that only what was typed is read."""
    hints = type_hints(cls)
    entries = [(f, hints[f.name]) for f in fields(cls)]
    entries += [(f, type_hints(owner)[key]) for key, (f, owner) in cls.part_options().items()]
    for f, tp in entries:
        m = option_meta(f)
        if m.get("cli"):
            _add_option(parser, f, m, tp)


def _add_option(parser: argparse.ArgumentParser, f: dataclasses.Field, m: dict, tp) -> None:
    elem, is_list, _ = unwrap(tp)
    default = _default_text(f, m)
    help_ = m["help"] + (f" (default: {default})" if default and not m.get("negate") else "")
    help_ = help_.replace("%", "%%")
    metavar = m.get("metavar") or ("{" + "|".join(map(str, m["choices"])) + "}" if m.get("choices") else None)
    kw: dict[str, Any] = dict(default=argparse.SUPPRESS, help=help_)
    if m.get("positional"):
        parser.add_argument(f.name, nargs="*", metavar=metavar or f.name.upper(), type=_parser_for(elem, False, None),
                            **kw)
    elif m.get("consts"):
        group = parser.add_mutually_exclusive_group()
        for flag, value in m["consts"].items():
            shown = ("on" if value else "off") if isinstance(value, bool) else value
            group.add_argument(flag, dest=f.name, action="store_const", const=value,
                               help=f"{m['help']}: {shown}" + (" (the default)" if value == f.default else ""),
                               default=argparse.SUPPRESS)
    elif elem is bool:
        action = "store_false" if m.get("negate") else "store_true"
        parser.add_argument(flag_of(f), dest=f.name, action=action, **kw)
    else:
        flags = [flag_of(f)] + ([m["short"]] if m.get("short") else [])
        sep = None if m.get("append") else m.get("sep", ",")
        parser.add_argument(*flags, dest=f.name, type=_parser_for(elem, is_list, sep),
                            action="append" if m.get("append") else "store", metavar=metavar, **kw)


def from_cli(cls: type[Config], namespace: argparse.Namespace, env: Mapping[str, str],
             base: Mapping[str, Any] | None = None) -> Config:
    """The config: its defaults, then `base` (a --config file), then the environment for options not given,
    then the options typed on the command line (a part named again keeps the file's options for it)."""
    names = [f.name for f in fields(cls)] + list(cls.part_options())
    given = {name: getattr(namespace, name) for name in names if hasattr(namespace, name)}
    values = dict(base or {})
    for f in fields(cls):
        var = option_meta(f).get("env")
        if var and f.name not in given and f.name not in values and env.get(var):
            values[f.name] = env[var]
        if option_meta(f).get("part") and f.name in given:
            old = {o["name"]: o for o in listed(values.get(f.name)) if isinstance(o, Mapping)}
            new = given[f.name]
            given[f.name] = [old.get(n, n) for n in new] if isinstance(new, list) else old.get(new, new)
    config = cls.from_dict({**values, **given})
    check_required(config)
    return config


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
    result = _invoke(cmd, config, out, not args.quiet and rank == 0, args)
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
    for warning in summary.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(dumps(result.to_json(), indent=2))
    else:
        print(result.text())
    code = getattr(result, "exit_code", 0)
    failed = getattr(result, "failed", None) if code else None
    if failed:
        print(f"cnnlab: error: {len(failed)} experiment(s) failed: {', '.join(failed)} (see {summary.get('index')})",
              file=sys.stderr)
    elif code and getattr(result, "error", None):
        print(f"cnnlab: error: {result.error}", file=sys.stderr)
    return code


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning on the command line: one line, as the errors are (not a source line from inside the package)."""
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def main(argv: Sequence[str] | None = None, env: dict | None = None) -> int:
    import warnings

    env = dict(os.environ) if env is None else env
    args = build_parser().parse_args(argv)
    shown, warnings.showwarning = warnings.showwarning, _warning_line  # put back when the command ends
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
    finally:
        warnings.showwarning = shown


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
