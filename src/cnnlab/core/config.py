"""One typed config per job: a dataclass whose fields carry their help, choices and allowed range.

The library validates a config when it is built (API and CLI alike), the CLI is generated from the fields
(`add_options` / `from_cli`), and `RUN_DIR/config.json` round-trips it (`to_dict` / `from_dict`). A default, a
choice list or a range is written once: in the field.
"""
from __future__ import annotations

import argparse
import contextvars
import copy
import dataclasses
import difflib
import functools
import json
import os
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from .errors import CnnlabError

_KEY = "cnnlab"
META_KEYS = ("command", "cnnlab_version")  # written beside the fields in config.json


def option(default: Any = MISSING, *, help: str, default_factory: Any = MISSING, choices: Sequence[str] | None = None,
           flag: str | None = None, short: str | None = None, low: float | None = None, high: float | None = None,
           low_open: bool = False, positional: bool = False, append: bool = False, negate: str | None = None,
           consts: Mapping[str, Any] | None = None, env: str | None = None, required: bool = False,
           metavar: str | None = None, default_help: str | None = None, cli: bool = True, sep: str = ","):
    """A config field and how it appears on the command line.

    choices   allowed values (each element, for lists); low/high an inclusive range (`low_open`: > low).
    flag      the option's name when it is not `--field-name`; `short` an extra one such as `-n`.
    append    a list given by repeating the flag (otherwise separated by `sep`, a comma by default; a string given
              for such a list, in the API or a config file, is split there too).
    negate    a bool that defaults to True, switched off by this flag (e.g. `--no-cache`).
    consts    flags that each set a constant value (e.g. `{"--quick": "quick", "--full": "full"}`).
    env       an environment variable the CLI reads when the option is not given.
    required  the CLI refuses to run without it (the API checks its own inputs).
    """
    choices = choices if isinstance(choices, Registry) or choices is None else tuple(choices)
    meta = {_KEY: dict(help=help, choices=choices, flag=flag, short=short,
                       low=low, high=high, low_open=low_open, positional=positional, append=append, negate=negate,
                       consts=dict(consts) if consts else None, env=env, required=required, metavar=metavar,
                       default_help=default_help, cli=cli, sep=sep)}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


class Registry(dict):
    """Named parts of one kind (backbones, saliency methods, attacks, metrics, parameterizations, objectives):
    `@REG.register` on a class with a `name` (and, for a `Part`, its options as fields), `REG.lookup(name)` with a
    did-you-mean error, `REG.help()` for a command's --help, `REG.build(name, options)` to make one."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self._watchers: list = []  # called after each registration (e.g. to refresh a job's signature)
        self._options: tuple[dict, dict] | None = None  # (option fields, takers), made once per registration

    def register(self, cls: type) -> type:
        for f in part_fields(cls):  # an option two parts share is one field (a mixin), so its default is one
            other = self.option_fields().get(f.name, (None,))[0]
            if other is not None and (flag_of(other), other.default) != (flag_of(f), f.default):
                raise TypeError(f"{cls.__name__}.{f.name} differs from the {self.kind} option of that name")
        self[cls.name] = cls
        self._changed()
        return cls

    def _changed(self) -> None:
        self._options = None
        for watch in self._watchers:
            watch()

    def unregister(self, name: str) -> None:
        del self[name]
        self._changed()

    def lookup(self, name: str) -> Any:
        if name in self:
            return self[name]
        close = difflib.get_close_matches(name, list(self), n=1)
        raise CnnlabError(f"unknown {self.kind} {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                          + f" (choices: {', '.join(self)})")

    def help(self, width: int = 116) -> str:
        return registry_help(self, width)

    # ------------------------------------------------------------------------------------------ parts' options
    def option_fields(self) -> dict[str, tuple[dataclasses.Field, Any]]:
        """Every registered part's options, by config key → (field, type): the union, what the CLI offers."""
        return self._index()[0]

    def takers(self, key: str) -> list[str]:
        """The parts that take the option `key`."""
        return self._index()[1].get(key, [])

    def _index(self) -> tuple[dict, dict]:
        if self._options is None:
            found: dict[str, tuple[dataclasses.Field, Any]] = {}
            takers: dict[str, list[str]] = {}
            for name, cls in self.items():
                hints = type_hints(cls) if part_fields(cls) else {}
                for f in part_fields(cls):
                    found.setdefault(f.name, (f, hints[f.name]))
                    takers.setdefault(f.name, []).append(name)
            self._options = (found, takers)
        return self._options

    def quick(self, names: Sequence[str]) -> dict:
        """The `quick` options of the parts named (for an interactive page)."""
        return {k: v for name in names for k, v in getattr(self.lookup(name), "quick", {}).items()}

    def build(self, name: str, options: Mapping[str, Any] | None = None) -> Any:
        """The part `name` with the options it takes (`options` may hold other parts' too: whether those apply is
        the config's policy, `WithParts`)."""
        cls = self.lookup(name)
        mine = {f.name for f in part_fields(cls)}
        return cls(**{k: v for k, v in (options or {}).items() if k in mine})


@dataclass
class Part:
    """A named, registered piece of a job (a saliency method, an attack, a metric, ...): its options are its
    dataclass fields, declared with `option()` like a config's, validated on construction. `cost` says whether it
    is quick enough for interactive defaults ("fast") or not ("slow")."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    cost: ClassVar[str] = "fast"
    quick: ClassVar[dict] = {}  # options that make it quick enough for an interactive page (the app)

    def __post_init__(self) -> None:
        validate(self)

    def options(self) -> dict:
        return {f.name: getattr(self, f.name) for f in part_fields(type(self))}


def part_fields(cls: type) -> list[dataclasses.Field]:
    """A part's options: its dataclass fields declared with `option()`."""
    return [f for f in fields(cls) if _KEY in f.metadata] if dataclasses.is_dataclass(cls) else []


def field_default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def registry_help(registry: Mapping[str, Any], width: int = 116) -> str:
    """One wrapped paragraph per registered class (its `help`, or a text given instead): the choices' part of a
    command's --help."""
    import textwrap

    pad = max(len(name) for name in registry) + 4
    return "\n".join(textwrap.fill(f"  {name:<{pad - 2}}{getattr(entry, 'help', entry)}", width,
                                   subsequent_indent=" " * pad, break_on_hyphens=False)
                     for name, entry in registry.items())


@functools.lru_cache(maxsize=None)
def type_hints(cls: type) -> dict:
    """A class's resolved annotations (read once: configs and parts are validated often)."""
    return typing.get_type_hints(cls)


def option_meta(f: dataclasses.Field) -> dict:
    return f.metadata.get(_KEY, {"help": "", "cli": False})


def _unwrap(tp) -> tuple[type, bool, bool]:
    """(element type, is a list, may be None) of an annotation such as `list[float] | None`."""
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional, tp = True, args[0]
    if typing.get_origin(tp) in (list, tuple):
        return typing.get_args(tp)[0], True, optional
    return tp, False, optional


def flag_of(f: dataclasses.Field) -> str:
    m = option_meta(f)
    return m.get("negate") or m.get("flag") or "--" + f.name.replace("_", "-")


@dataclass
class Config:
    """Base of every job's config: validated on construction, serializable, buildable from the CLI."""

    command = ""  # the CLI command this config drives, e.g. "explain saliency" (a class attribute)

    def __post_init__(self) -> None:
        validate(self)

    # ------------------------------------------------------------------------------------------ round trip
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Config":
        """From a dict such as RUN_DIR/config.json; unknown keys are an error with a suggestion."""
        values = dict(values)
        command = values.pop("command", None)
        values.pop("cnnlab_version", None)
        if command and cls.command and command != cls.command:
            raise CnnlabError(f"this config is for `cnnlab {command}`, not `cnnlab {cls.command}`")
        names = [f.name for f in fields(cls)]
        unknown = [k for k in values if k not in names]
        if unknown:
            close = difflib.get_close_matches(unknown[0], names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CnnlabError(f"unknown option {unknown[0]!r} for {cls.command or cls.__name__}{hint}")
        hints = type_hints(cls)
        seps = {f.name: option_meta(f).get("sep", ",") for f in fields(cls)}
        return cls(**{k: _coerce(v, hints[k], k, seps[k]) for k, v in values.items()})

    def replace(self, **changes) -> "Config":
        return type(self).from_dict({**self.to_dict(), **changes})

    def save(self, path: str | os.PathLike, **resolved) -> Path:
        """config.json: the command and every option; `resolved` fills in what a run resolved (a default layer)."""
        from .runs import write_json

        return write_json(path, {"command": self.command, **self.to_dict(), **resolved})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Config":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise CnnlabError(f"config file not found: {path}") from None
        except (OSError, ValueError) as exc:
            raise CnnlabError(f"cannot read config {path}: {exc}") from None
        if not isinstance(values, dict):
            raise CnnlabError(f"{path} does not hold a config (a JSON object)")
        return cls.from_dict(values)

    @classmethod
    def options(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def description(cls) -> str | None:
        """The command's --help text (a config whose text lists registered parts builds it when asked)."""
        return cls.__doc__


# the built parts a `WithParts.replace` hands to the config it makes (set only for the length of that call)
_INHERITED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("cnnlab_inherited_parts", default=None)


@dataclass
class WithParts(Config):
    """A job config that chooses registered parts: `parts` maps the field that names them (one name, or a list) to
    their registry. The chosen parts' options live in `part_options`; in config.json, the CLI and the API's keyword
    arguments they are spelled flat, as the parts' own fields (`--samples`, `smoothgrad_samples=`), and read back
    as attributes (`config.smoothgrad_samples`)."""

    parts: ClassVar[dict[str, Registry]] = {}
    part_options: dict = option(default_factory=dict, cli=False, help="the chosen parts' options (spelled flat)")

    def __post_init__(self) -> None:
        super().__post_init__()
        known = self.part_option_fields()
        for key, value in list(self.part_options.items()):
            if key not in known:
                close = difflib.get_close_matches(key, list(known) + [f.name for f in fields(self)], n=1)
                raise CnnlabError(f"unknown option {key!r} for {self.command or type(self).__name__}"
                                  + (f" (did you mean {close[0]!r}?)" if close else ""))
            f, tp = known[key]
            value = self.part_options[key] = _coerce(value, tp, key, option_meta(f).get("sep", ","))
            elem, is_list, _ = _unwrap(tp)
            for v in (value if is_list else [value]) if value is not None else []:
                _check_value(f, option_meta(f), v, elem)  # a value no part could take is said first
        for key, value in self.part_options.items():  # one policy: an option no chosen part takes is refused
            takers = {n for reg in self.parts.values() for n in reg.takers(key)}
            if value != field_default(known[key][0]) and not takers & set(self.chosen()):
                raise CnnlabError(f"{flag_of(known[key][0])} is an option of {', '.join(sorted(takers))}, not of "
                                  f"{', '.join(self.chosen())}")
        self.__dict__["_built"] = dict(_INHERITED.get() or {})  # parts a `replace` left as they were
        for field_name in self.parts:  # each chosen part checks its own values (types, ranges): built once here
            for name in self._names(field_name):
                self._part(field_name, name)

    @classmethod
    def part_option_fields(cls) -> dict[str, tuple[dataclasses.Field, Any]]:
        out: dict[str, tuple[dataclasses.Field, Any]] = {}
        for reg in cls.parts.values():
            out.update({k: v for k, v in reg.option_fields().items() if k not in out})
        return out

    def _names(self, field_name: str) -> list[str]:
        value = getattr(self, field_name)
        return list(value) if isinstance(value, (list, tuple)) else [value]

    def chosen(self) -> list[str]:
        return [n for f in self.parts for n in self._names(f)]

    def _part(self, field_name: str, name: str) -> Any:
        """The part as this config built it (once: construction validates it)."""
        built = self.__dict__.setdefault("_built", {})
        if (field_name, name) not in built:
            built[field_name, name] = self.parts[field_name].build(name, self.part_options)
        return built[field_name, name]

    def build(self, field_name: str, name: str | None = None) -> Any:
        """The chosen part of `field_name` (or the part `name` among those chosen), made with its options: a fresh
        copy of the one the config built (no second construction; what a run caches in it stays in the run)."""
        return copy.copy(self._part(field_name, name or getattr(self, field_name)))

    def resolved_options(self) -> dict:
        """The chosen parts' options as they run (defaults filled in), then any other given."""
        out = {}
        for field_name, reg in self.parts.items():
            for name in self._names(field_name):
                out.update(self._part(field_name, name).options())
        return {**self.part_options, **out}

    def replace(self, **changes) -> "Config":
        """As `Config.replace`; the parts are kept as built when no change touches them (their names or options)."""
        if set(changes) & (set(self.parts) | set(self.part_option_fields()) | {"part_options"}):
            return super().replace(**changes)
        token = _INHERITED.set(self.__dict__.get("_built"))
        try:
            return super().replace(**changes)
        finally:
            _INHERITED.reset(token)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_") or key == "part_options":
            raise AttributeError(key)
        known = type(self).part_option_fields()
        if key not in known:
            raise AttributeError(f"{type(self).__name__} has no option {key!r}")
        return self.part_options.get(key, field_default(known[key][0]))

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values.pop("part_options")
        return {**values, **self.resolved_options()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Config":
        values = dict(values)
        parts = {k: values.pop(k) for k in list(values) if k in cls.part_option_fields()}
        parts.update(values.pop("part_options", None) or {})
        if parts:  # constructed once, with them (each construction builds and checks the chosen parts)
            values["part_options"] = parts
        return super().from_dict(values)


def parts_dataclass(cls: type) -> type:
    """`@dataclass` for a `WithParts` config whose constructor also takes its parts' options by name, as the API's
    keyword arguments and config.json spell them (`SaliencyConfig(method="smoothgrad", smoothgrad_samples=8)`)."""
    cls = dataclass(cls)
    init, own = cls.__init__, {f.name for f in fields(cls)}

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        parts = {k: kwargs.pop(k) for k in list(kwargs) if k not in own}
        if parts:
            kwargs["part_options"] = {**kwargs.get("part_options", {}), **parts}
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def _coerce(value: Any, tp, name: str, sep: str = ",") -> Any:
    """JSON and Python values to the annotated type (ints for floats, lists for tuples; a string for a list is split
    at `sep`)."""
    elem, is_list, optional = _unwrap(tp)
    if value is None:
        return None
    try:
        if is_list:
            if isinstance(value, str) and sep != ",":
                value = [v.strip() for v in value.split(sep) if v.strip()]
            elif isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                value = [value]
            return [_scalar(v, elem) for v in value]
        return _scalar(value, elem)
    except (TypeError, ValueError):
        raise CnnlabError(f"option {name!r} expects {getattr(elem, '__name__', elem)}"
                          f"{' values' if is_list else ''}, got {value!r}") from None


def _scalar(value: Any, tp) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp is str and isinstance(value, (str, os.PathLike)):
        return str(value)
    if tp in (int, float, str):
        raise TypeError(value)
    return value


# ----------------------------------------------------------------------------------------------------- checks
def validate(config: Config) -> None:
    """Types, choices and ranges of every field: one line naming the option and what it allows."""
    hints = type_hints(type(config))
    for f in fields(config):
        m, value = option_meta(f), getattr(config, f.name)
        elem, is_list, optional = _unwrap(hints[f.name])
        if value is None:
            if not optional:
                raise CnnlabError(f"{flag_of(f)} must be given")
            continue
        if is_list and not isinstance(value, list):
            value = _coerce(value, hints[f.name], f.name, m.get("sep", ","))
            setattr(config, f.name, value)
        values = value if is_list else [value]
        for v in values:
            _check_value(f, m, v, elem)


def _check_value(f: dataclasses.Field, m: dict, v: Any, elem) -> None:
    name = flag_of(f)
    if elem in (int, float) and (isinstance(v, bool) or not isinstance(v, (int, float))):
        raise CnnlabError(f"{name} must be a number, got {v!r}")
    if elem is float and v != v:
        raise CnnlabError(f"{name} must be a number, got NaN")
    if m.get("choices") is not None and v not in m["choices"]:
        close = difflib.get_close_matches(str(v), [str(c) for c in m["choices"]], n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise CnnlabError(f"{name} {v!r} is not one of: {', '.join(map(str, m['choices']))}{hint}")
    low, high = m.get("low"), m.get("high")
    if low is not None and (v <= low if m.get("low_open") else v < low) or high is not None and v > high:
        raise CnnlabError(f"{name} must be {_range_text(m)}, got {v!r}")


def _range_text(m: dict) -> str:
    low, high = m.get("low"), m.get("high")
    if high is None:
        return f"{'>' if m.get('low_open') else '≥'} {low:g}"
    if low is None:
        return f"≤ {high:g}"
    return f"in {'(' if m.get('low_open') else '['}{low:g}, {high:g}]"


def check_required(config: Config) -> None:
    """Options the CLI cannot run without (the API checks its own inputs where it takes them as arguments)."""
    for f in fields(config):
        m, value = option_meta(f), getattr(config, f.name)
        if m.get("required") and (value is None or value == [] or value == ""):
            what = (m.get("metavar") or f.name.upper()) if m.get("positional") else flag_of(f)
            raise CnnlabError(f"{what} is required")


# -------------------------------------------------------------------------------------------------------- CLI
def _default_text(f: dataclasses.Field, m: dict) -> str | None:
    if m.get("default_help"):
        return m["default_help"]
    default = f.default_factory() if f.default_factory is not MISSING else f.default
    if default is MISSING or default is None or default is False or default == []:
        return None
    if isinstance(default, list):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
    return f"{default:g}" if isinstance(default, float) else str(default)


def _parser_for(elem, is_list: bool, sep: str | None):
    def one(text: str):
        try:
            return elem(text) if elem in (int, float) else text
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {elem.__name__}, got {text!r}") from None

    if is_list and sep:
        def many(text: str):
            return [one(t.strip()) for t in text.split(sep) if t.strip()]
        return many
    return one


def add_options(parser: argparse.ArgumentParser, cls: type[Config]) -> None:
    """One argparse option per CLI field, then one per option of the parts the config chooses from (their
    registries as they are now); every default is SUPPRESS so that only what was typed is read."""
    hints = type_hints(cls)
    entries = [(f, hints[f.name]) for f in fields(cls)]
    if issubclass(cls, WithParts):
        entries += list(cls.part_option_fields().values())
    for f, tp in entries:
        m = option_meta(f)
        if m.get("cli"):
            _add_option(parser, f, m, tp)


def _add_option(parser: argparse.ArgumentParser, f: dataclasses.Field, m: dict, tp) -> None:
    elem, is_list, _ = _unwrap(tp)
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
    then the options typed on the command line."""
    names = [f.name for f in fields(cls)] + (list(cls.part_option_fields()) if issubclass(cls, WithParts) else [])
    given = {name: getattr(namespace, name) for name in names if hasattr(namespace, name)}
    values = dict(base or {})
    for f in fields(cls):
        var = option_meta(f).get("env")
        if var and f.name not in given and f.name not in values and env.get(var):
            values[f.name] = env[var]
    for name, value in given.items():  # repeated flags of an append list add to, not replace, the base
        values[name] = value
    if issubclass(cls, WithParts) and base:  # the file's options of parts no longer chosen went with those parts
        chosen = set()
        for name, reg in cls.parts.items():
            value = values.get(name, field_default(next(f for f in fields(cls) if f.name == name)))
            chosen |= set(value.split(",") if isinstance(value, str) else value)
        for key in set(values) & set(cls.part_option_fields()) - set(given):
            if not {n for reg in cls.parts.values() for n in reg.takers(key)} & chosen:
                del values[key]
    config = cls.from_dict(values)
    check_required(config)
    return config
