"""Named, registered parts: a `Registry` per kind (backbones, saliency methods, attacks, metrics,
parameterizations, objectives), and the `Part` base of those a config holds (a method, an attack, a metric, a
parameterization): its options are its dataclass fields, declared with `config.option()`."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

from .config import flag_of, part_fields, refuse_unknown, validate
from .errors import CnnlabError, did_you_mean


class Registry(dict):
    """Named parts of one kind (backbones, saliency methods, attacks, metrics, parameterizations, objectives):
    `@REG.register` on a class with a `name` (and, for a `Part`, its options as fields), `REG.lookup(name)` with a
    did-you-mean error, `REG.help()` for a command's --help, `REG.build(name, options)` to make one."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, cls: type) -> type:
        for f in part_fields(cls):  # one flag per option name: an option two parts share is one field (a mixin)
            other = self.options().get(f.name, (None,))[0]
            if other is not None and (flag_of(other), other.default) != (flag_of(f), f.default):
                raise TypeError(f"{cls.__name__}.{f.name} differs from the {self.kind} option of that name")
        self[cls.name] = cls
        return cls

    def unregister(self, name: str) -> None:
        del self[name]

    def lookup(self, name: str) -> Any:
        if name in self:
            return self[name]
        raise CnnlabError(f"unknown {self.kind} {name!r}{did_you_mean(name, self)} (choices: {', '.join(self)})")

    def help(self, width: int = 116) -> str:
        return registry_help(self, width)

    def options(self) -> dict[str, tuple[dataclasses.Field, type]]:
        """Every registered part's options by name → (field, a class that declares it): the union, what the command
        line offers."""
        out: dict[str, tuple[dataclasses.Field, type]] = {}
        for cls in self.values():
            for f in part_fields(cls):
                out.setdefault(f.name, (f, cls))
        return out

    def takes(self, name: str, key: str) -> bool:
        return any(f.name == key for f in part_fields(self.lookup(name)))

    def quick(self, names: Sequence[str]) -> dict:
        """The `quick` options of the parts named (for an interactive page)."""
        return {k: v for name in names for k, v in getattr(self.lookup(name), "quick", {}).items()}

    def build(self, name: str, options: Mapping[str, Any] | None = None) -> Any:
        """The part `name` with `options`: an option it does not take is refused with a suggestion, as everywhere
        (a caller holding the options of several parts passes `own(name, options)`)."""
        cls = self.lookup(name)
        refuse_unknown(options or {}, cls, self.kind, name)
        return cls(**(options or {}))

    def own(self, name: str, options: Mapping[str, Any]) -> dict:
        """Those of a set of options (shared by several parts) that part `name` takes."""
        mine = {f.name for f in part_fields(self.lookup(name))}
        return {k: v for k, v in options.items() if k in mine}


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
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in part_fields(type(self))}

    def to_dict(self) -> dict:
        return {"name": self.name, **self.options()}

    MEMORY_ONLY: ClassVar[tuple[str, ...]] = ()  # options that change the cost, not the results

    def settings(self) -> dict:
        """What its results depend on."""
        return {k: v for k, v in self.to_dict().items() if k not in self.MEMORY_ONLY}


def registry_help(registry: Mapping[str, Any], width: int = 116) -> str:
    """One wrapped paragraph per registered class (its `help`, or a text given instead): the choices' part of a
    command's --help."""
    import textwrap

    pad = max(len(name) for name in registry) + 4
    return "\n".join(textwrap.fill(f"  {name:<{pad - 2}}{getattr(entry, 'help', entry)}", width,
                                   subsequent_indent=" " * pad, break_on_hyphens=False)
                     for name, entry in registry.items())
