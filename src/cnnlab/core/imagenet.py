"""ImageNet-1k class names: index (synsets in sorted order) ⇄ synset ⇄ human names, with suggestions."""
from __future__ import annotations

from functools import lru_cache

from .errors import CnnlabError, did_you_mean


@lru_cache(maxsize=1)
def _info():
    from timm.data import ImageNetInfo  # ships the synset list and descriptions offline

    return ImageNetInfo()


@lru_cache(maxsize=1)
def labels() -> tuple[str, ...]:
    """Full descriptions, e.g. 'tabby, tabby cat', indexed by the standard class index."""
    info = _info()
    return tuple(info.index_to_description(i) for i in range(info.num_classes()))


@lru_cache(maxsize=1)
def synsets() -> tuple[str, ...]:
    info = _info()
    return tuple(info.index_to_label_name(i) for i in range(info.num_classes()))


def short_name(index: int) -> str:
    """The first name of a class: 'tabby' for 'tabby, tabby cat'."""
    return labels()[index].split(",")[0].strip()


def resolve_class(query: str | int) -> int:
    """ImageNet index from an index, a synset id or a case-insensitive name or substring.

    Exact names win over substrings; an ambiguous substring or an unknown name raises with suggestions.
    """
    if isinstance(query, int) or str(query).strip().isdigit():
        index = int(query)
        if not 0 <= index < len(labels()):
            raise CnnlabError(f"class index {index} is out of range 0..{len(labels()) - 1}")
        return index
    q = str(query).strip().lower()
    if q in synsets():
        return synsets().index(q)
    names = [[n.strip().lower() for n in label.split(",")] for label in labels()]
    exact = [i for i, ns in enumerate(names) if q in ns or q == labels()[i].lower()]
    if exact:
        return exact[0]
    partial = [i for i, label in enumerate(labels()) if q in label.lower()]
    if len(partial) == 1:
        return partial[0]
    if len(partial) > 1:
        shown = "; ".join(f"{labels()[i]} ({i})" for i in partial[:5])
        raise CnnlabError(f"class name {query!r} is ambiguous: {shown}{' ...' if len(partial) > 5 else ''}")
    flat = {n: i for i, ns in enumerate(names) for n in ns}
    raise CnnlabError(f"unknown ImageNet class {query!r}{did_you_mean(q, flat, n=4, cutoff=0.5)}")
