"""The one loader of the torch files cnnlab reads — weights a user names, checkpoints it resumes, the models it
ships. Any of them may be missing, truncated, foreign or tampered with: each is read with `weights_only=True` (no
code runs) and checked for the shape cnnlab expects, and anything else is one line saying what the file is not."""
from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch

from .errors import CnnlabError


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return f"{exc.__class__.__name__}: {line[:160]}" if line else exc.__class__.__name__


def load_torch_file(path: str | os.PathLike, what: str, *, format: str | None = None, keys: Iterable[str] = (),
                    state_dict: bool = False) -> dict[str, Any]:
    """The dict saved in `path` (a `what`: "checkpoint", "weights file", …), read with weights_only=True.

    format: the value its "format" key must have; keys: keys it must hold; state_dict: every value a tensor (a
    `{"state_dict": ...}` wrapper, as Lightning and many repositories save, is unwrapped)."""
    path = Path(path)
    if not path.exists():
        raise CnnlabError(f"{what} not found: {path}")
    if not path.is_file():
        raise CnnlabError(f"{what} {path} is not a file")
    try:
        with warnings.catch_warnings():  # torch's notes on a foreign pickle protocol: the refusal below says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # code or objects, or bytes that only look like a pickle
        raise CnnlabError(f"{path} is not a readable {what}: weights_only=True refuses what it holds (not only "
                          "tensors and plain values, or not a torch file at all)") from None
    except (EOFError, RuntimeError, OSError) as exc:
        why = "it is empty" if path.stat().st_size == 0 else f"it is truncated or not a torch file ({_first_line(exc)})"
        raise CnnlabError(f"{path} is not a readable {what}: {why}") from None
    except Exception as exc:  # noqa: BLE001 — any other refusal by the loader is the same answer
        raise CnnlabError(f"{path} is not a readable {what} ({_first_line(exc)})") from None
    if state_dict and isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CnnlabError(f"{path} is not a {what}: it holds a {type(obj).__name__}, not a dict")
    if state_dict and not (obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())):
        raise CnnlabError(f"{path} does not hold a state dict (names → tensors)")
    if format is not None and obj.get("format") != format:
        found = obj.get("format")
        raise CnnlabError(f"{path} is not a {what} (expected format {format!r}, found "
                          f"{repr(found) if found is not None else 'none'})")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise CnnlabError(f"{path} is not a {what}: it lacks {', '.join(repr(k) for k in missing)}")
    return obj


class restoring:
    """`with restoring(path, what):` around the code that puts a loaded file's contents in place (state dicts,
    optimizer and RNG states, settings): a file that passed `load_torch_file` but whose contents were tampered with,
    or saved by another network, is one line instead of a traceback from deep inside torch."""

    def __init__(self, path: str | os.PathLike, what: str):
        self.path, self.what = Path(path), what

    def __enter__(self) -> "restoring":
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is not None and isinstance(exc, (KeyError, ValueError, RuntimeError, TypeError, IndexError,
                                                AttributeError)) and not isinstance(exc, CnnlabError):
            raise CnnlabError(f"{self.path} is not a {self.what} this run can continue ({_first_line(exc)})") from None
        return False
