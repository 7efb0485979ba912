"""One typed config per job: a dataclass whose fields carry their help, choices and allowed range.

The library validates a config when it is built (API and CLI alike), the CLI is generated from the fields (in
`cli.py`), and `RUN_DIR/config.json` round-trips it (`to_dict` / `from_dict`). A default, a
choice list or a range is written once: in the field. A field made with `part()` holds a registered part (a
saliency method, an attack, a metric, a parameterization) as an object, written nested in config.json
(`{"method": {"name": "smoothgrad", "smoothgrad_samples": 8}}`); each part's options keep their own flags on the
command line and their flat names in the API's keyword arguments (and in config files written before parts nested).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import CnnlabError, did_you_mean

_KEY = "cnnlab"
SEED_MAX = 2**32 - 1  # the largest seed every generator cnnlab seeds takes (numpy's legacy one, scikit-learn's)
JOIN = "+"  # how the command line spells a group (cut points or backbones concatenated, CAM layers summed)


def option(default: Any = MISSING, *, help: str, default_factory: Any = MISSING, choices: Sequence[str] | None = None,
           flag: str | None = None, short: str | None = None, low: float | None = None, high: float | None = None,
           low_open: bool = False, positional: bool = False, append: bool = False, negate: str | None = None,
           consts: Mapping[str, Any] | None = None, env: str | None = None, required: bool = False,
           metavar: str | None = None, default_help: str | None = None, cli: bool = True, sep: str = ",",
           part: bool = False):
    """A config field and how it appears on the command line.

    choices   allowed values (each element, for lists); low/high an inclusive range (`low_open`: > low).
    flag      the option's name when it is not `--field-name`; `short` an extra one such as `-n`.
    append    a list given by repeating the flag (otherwise separated by `sep`, a comma by default; a string given
              for such a list, in the API or a config file, is split there too).
    negate    a bool that defaults to True, switched off by this flag (e.g. `--no-cache`).
    consts    flags that each set a constant value (e.g. `{"--quick": "quick", "--full": "full"}`).
    env       an environment variable the CLI reads when the option is not given.
    required  the CLI refuses to run without it (the API checks its own inputs).
    part      the field holds parts of the registry `choices` (see `part()`; `core.parts`).
    """
    choices = choices if isinstance(choices, dict) or choices is None else tuple(choices)  # a registry stays live
    meta = {_KEY: dict(help=help, choices=choices, flag=flag, short=short, low=low, high=high, low_open=low_open,
                       positional=positional, append=append, negate=negate, consts=dict(consts) if consts else None,
                       env=env, required=required, metavar=metavar, default_help=default_help, cli=cli, sep=sep,
                       part=part)}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def part(registry: Mapping[str, type], default: str | Sequence[str], *, help: str, **kw):
    """A field holding a part of `registry` (a list of parts when `default` is a list), given as the object, its
    name, or `{"name": NAME, OPTION: value, ...}`; built once, when the config is."""
    if isinstance(default, str):
        return option(default, choices=registry, part=True, help=help, **kw)
    return option(default_factory=lambda: list(default), choices=registry, part=True, help=help, **kw)


def part_fields(cls: type) -> list[dataclasses.Field]:
    """A part's options: its dataclass fields declared with `option()`."""
    return [f for f in fields(cls) if _KEY in f.metadata] if dataclasses.is_dataclass(cls) else []


def field_default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


@functools.lru_cache(maxsize=None)
def type_hints(cls: type) -> dict:
    """A class's resolved annotations (read once: configs and parts are validated often)."""
    return typing.get_type_hints(cls)


def option_meta(f: dataclasses.Field) -> dict:
    return f.metadata.get(_KEY, {"help": "", "cli": False})


def unwrap(tp) -> tuple[type, bool, bool]:
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
    """Base of every job's config: validated on construction (each part built once), serializable, buildable from
    the CLI."""

    command = ""  # the CLI command this config drives, e.g. "explain saliency" (a class attribute)

    def __post_init__(self) -> None:
        validate(self)

    # ------------------------------------------------------------------------------------------ round trip
    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def part_options(cls) -> dict[str, tuple[dataclasses.Field, type]]:
        """The options of every part this config can hold, by their flat names (the CLI's and the API's)."""
        out: dict[str, tuple[dataclasses.Field, type]] = {}
        for f in fields(cls):
            for key, entry in option_meta(f)["choices"].options().items() if option_meta(f).get("part") else ():
                out.setdefault(key, entry)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Config":
        """From a dict such as RUN_DIR/config.json (parts nested, or spelled flat as the API's keyword arguments and
        older files spell them); unknown keys are an error with a suggestion."""
        values = dict(values)
        command = values.pop("command", None)
        values.pop("cnnlab_version", None)
        if command and cls.command and command != cls.command:
            raise CnnlabError(f"this config is for `cnnlab {command}`, not `cnnlab {cls.command}`")
        names, known = [f.name for f in fields(cls)], cls.part_options()
        unknown = [k for k in values if k not in names and k not in known]
        if unknown:
            raise CnnlabError(f"unknown option {unknown[0]!r} for {cls.command or cls.__name__}"
                              f"{did_you_mean(unknown[0], names + list(known))}")
        flat = {k: _checked(k, values.pop(k), *known[k]) for k in list(values) if k not in names}
        hints, out = type_hints(cls), {}
        for f in fields(cls):
            m = option_meta(f)
            if m.get("part"):  # built here with the flat options it takes, once
                value = values.get(f.name, field_default(f))
                out[f.name] = ([_build(f, v, flat) for v in listed(value)] if unwrap(hints[f.name])[1]
                               else _build(f, value, flat))
            elif f.name in values:
                out[f.name] = _coerce(values[f.name], hints[f.name], f.name, _sep(m))
        config = cls(**out)
        chosen = config.parts()
        for key, value in flat.items():  # one policy: an option no chosen part takes is refused
            if value != field_default(known[key][0]) and not any(key in p.options() for p in chosen):
                takers = sorted({n for f in fields(cls) if option_meta(f).get("part")
                                 for n, c in option_meta(f)["choices"].items() if key in {g.name for g in part_fields(c)}})
                raise CnnlabError(f"{flag_of(known[key][0])} is an option of {', '.join(takers)}, not of "
                                  f"{', '.join(p.name for p in chosen)}")
        return config

    def parts(self) -> list:
        """Every part the config holds, in field order."""
        return [p for f in fields(self) if option_meta(f).get("part") for p in listed(getattr(self, f.name))]

    def replace(self, **changes) -> "Config":
        """A copy with `changes` (the parts it holds are kept as built unless a change names them or their options)."""
        return type(self).from_dict({**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})

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


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and hasattr(value, "to_dict"):  # a part
        return value.to_dict()
    return [_plain(v) for v in value] if isinstance(value, list) else copy.deepcopy(value)


def listed(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _checked(key: str, value: Any, f: dataclasses.Field, owner: type) -> Any:
    """A part's option spelled flat, typed and checked against its field (before knowing which part takes it)."""
    tp = type_hints(owner)[key]
    value = _coerce(value, tp, key, _sep(option_meta(f)))
    elem, is_list, _ = unwrap(tp)
    for v in (value if is_list else [value]) if value is not None else []:
        _check_value(f, option_meta(f), v, elem)
    return value


def _build(f: dataclasses.Field, value: Any, flat: Mapping[str, Any]) -> Any:
    """The part a field's value names (an object, a name, or {"name": ..., options}), with the flat options it
    takes; an object without such options is kept as it is."""
    reg = option_meta(f)["choices"]
    if not isinstance(value, (str, Mapping)):  # a part made by the caller
        if reg.get(getattr(value, "name", None)) is not type(value):
            raise CnnlabError(f"{flag_of(f)}: {type(value).__name__} is not a registered {reg.kind}")
        mine = {k: v for k, v in flat.items() if k in value.options()}
        return dataclasses.replace(value, **mine) if mine else value
    spec = dict(value) if isinstance(value, Mapping) else {"name": value}
    name = spec.pop("name", None)
    if not isinstance(name, str):
        raise CnnlabError(f"{flag_of(f)} expects a {reg.kind}'s name, got {value!r}")
    _check_value(f, option_meta(f), name, str)
    own = {g.name: g for g in part_fields(reg[name])}
    refuse_unknown(spec, reg[name], reg.kind, name)
    spec |= {k: v for k, v in flat.items() if k in own}
    hints = type_hints(reg[name])
    return reg[name](**{k: _coerce(v, hints[k], k, _sep(option_meta(own[k]))) for k, v in spec.items()})


def refuse_unknown(options: Mapping[str, Any], cls: type, kind: str, name: str) -> None:
    """The one policy for an option a part does not take: a one-line error naming it, with a suggestion."""
    fields_ = part_fields(cls)
    spelled = {f.name: f.name for f in fields_} | {flag_of(f).lstrip("-").replace("-", "_"): f.name for f in fields_}
    for key in options:
        if key not in {f.name for f in fields_}:
            import difflib

            close = difflib.get_close_matches(key, list(spelled), n=1)  # a field's name or its flag's
            hint = did_you_mean(spelled[close[0]], [spelled[close[0]]]) if close else ""
            raise CnnlabError(f"unknown option {key!r} for the {kind} {name}{hint}")


def _sep(m: dict) -> str | None:
    """Where a string given for a list splits: as its flag does (not for inputs, repeated flags or API-only lists,
    whose values may hold commas)."""
    return None if m.get("positional") or m.get("append") or not m.get("cli", True) else m.get("sep", ",")


DATA_ENV, CACHE_ENV = "CNNLAB_DATA", "CNNLAB_CACHE"  # the environment variables every job reads the same way


def data_root_option(help: str) -> Any:
    """`--data-root`, else $CNNLAB_DATA: the one spelling of a job's data root (`help` says what it must hold)."""
    return option(None, env=DATA_ENV, default_help=f"${DATA_ENV}", help=help)


def cache_dir_option(help: str, default_help: str = f"${CACHE_ENV} or ~/.cache/cnnlab") -> Any:
    """`--cache-dir`, else $CNNLAB_CACHE, else the job's own default (`default_help` says which)."""
    return option(None, env=CACHE_ENV, default_help=default_help, help=help)


def split_at(text: str, sep: str) -> list[str]:
    """A list option's text split at its separator, blanks dropped: the one rule the CLI and config values share."""
    return [v.strip() for v in text.split(sep) if v.strip()]


def _coerce(value: Any, tp, name: str, sep: str | None = None) -> Any:
    """JSON and Python values to the annotated type (ints for floats, lists for tuples; a string for a list is split
    at `sep`)."""
    elem, is_list, optional = unwrap(tp)
    if value is None:
        return None
    try:
        if is_list:
            if isinstance(value, str) and sep:
                value = split_at(value, sep)
            elif isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                value = [value]
            if typing.get_origin(elem) is list:  # groups such as layer specs: 'a+b' is the group [a, b]
                return [[str(p) for p in (v.split(JOIN) if isinstance(v, str) else v)] for v in value]
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
        elem, is_list, optional = unwrap(hints[f.name])
        if m.get("part"):  # a name or {"name": ...} becomes the part (an object given is kept)
            setattr(config, f.name, [_build(f, v, {}) for v in listed(value)] if is_list else _build(f, value, {}))
            continue
        if value is None:
            if not optional:
                raise CnnlabError(f"{flag_of(f)} must be given")
            continue
        if is_list and (not isinstance(value, list) or typing.get_origin(elem) is list):
            value = _coerce(value, hints[f.name], f.name, _sep(m))
            setattr(config, f.name, value)
        values = value if is_list else [value]
        for v in values:
            _check_value(f, m, v, elem)


def _check_value(f: dataclasses.Field, m: dict, v: Any, elem) -> None:
    name = flag_of(f)
    if elem in (int, float) and (isinstance(v, bool) or not isinstance(v, (int, float))):
        raise CnnlabError(f"{name} must be a number, got {v!r}")
    if elem is float and (v != v or v in (float("inf"), float("-inf"))):
        raise CnnlabError(f"{name} must be a finite number, got {v}")
    if m.get("choices") is not None and v not in m["choices"]:
        raise CnnlabError(f"{name} {v!r} is not one of: {', '.join(map(str, m['choices']))}"
                          f"{did_you_mean(v, m['choices'], cutoff=0.5)}")
    low, high = m.get("low"), m.get("high")
    if low is not None and (v <= low if m.get("low_open") else v < low) or high is not None and v > high:
        raise CnnlabError(f"{name} must be {_range_text(m)}, got {v!r}")


def _number(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _range_text(m: dict) -> str:
    low, high = m.get("low"), m.get("high")
    if high is None:
        return f"{'>' if m.get('low_open') else '≥'} {_number(low)}"
    if low is None:
        return f"≤ {_number(high)}"
    return f"in {'(' if m.get('low_open') else '['}{_number(low)}, {_number(high)}]"
