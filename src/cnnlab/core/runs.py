"""Run directories and atomic writes: nothing half-written is ever read back."""
from __future__ import annotations

from collections.abc import Mapping

import json
import math
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import CnnlabError


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    except OSError as exc:
        raise CnnlabError(f"cannot write {path}: {_why_not(exc, path)}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 is for the temporary file, not for the user's result
        os.replace(tmp, path)
    except OSError as exc:
        raise CnnlabError(f"cannot write {path}: {_why_not(exc, path)}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _why_not(exc: OSError, path: Path) -> str:
    """The reason a write failed, in words (numpy reports a full disk as "N requested and M written", no errno)."""
    if exc.strerror:
        return exc.strerror
    try:
        if shutil.disk_usage(path.parent).free < 1 << 20:
            return "No space left on device"
    except OSError:
        pass
    return str(exc)


def _umask() -> int:
    """The process's umask, read without changing it (os.umask can only be read by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def to_jsonable(obj: Any) -> Any:
    """Numbers from numpy/torch and paths become plain JSON values; a number that is not finite (NaN, ±inf: not
    JSON) becomes null (the key beside it, or the summary's text, says why it is missing)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):  # dicts, and typed rows read as mappings
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return to_jsonable(obj.item())
    if hasattr(obj, "tolist"):
        return to_jsonable(obj.tolist())
    return obj


def dumps(obj: Any, **kw) -> str:
    """Strict JSON text of `obj` (what every file cnnlab writes and `--json` prints): `to_jsonable` first, then
    `allow_nan=False`, so that a value no strict parser reads can never be written."""
    return json.dumps(to_jsonable(obj), allow_nan=False, **kw)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, dumps(obj, indent=2) + "\n")


class RunDir:
    """A folder holding one command's config, metrics and figures."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def create(cls, out: str | os.PathLike | None, command: str, root: str | os.PathLike = "runs") -> "RunDir":
        """`out` if given, else `root/<command>-<timestamp>` (never reusing an existing folder)."""
        if out is not None:
            if Path(out).exists() and not Path(out).is_dir():
                raise CnnlabError(f"--out {out} is a file, not a folder")
            return cls(out)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(root) / f"{command}-{stamp}"
        n = 1
        while path.exists():
            n += 1
            path = Path(root) / f"{command}-{stamp}-{n}"
        return cls(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name


def is_npz(path: str | os.PathLike | None) -> bool:
    """Whether a path names an .npz file (the labs' image arrays, or features in one file), not a folder."""
    return path is not None and str(path).lower().endswith(".npz")


def default_cache_dir() -> Path:
    """Where caches go when no folder is named (the CLI names $CNNLAB_CACHE when it is set)."""
    return Path.home() / ".cache" / "cnnlab"
