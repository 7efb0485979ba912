"""One experiment of the lab report: a stable id, the report's claim, settings per mode, and a run function that
composes the capabilities' Python APIs and returns an `Outcome` (a sentence, numbers, tables, figures)."""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..core.errors import DATA_ROOT_HINT, CnnlabError
from ..core.runner import Chunk, RunDirSink
from ..core.runs import to_jsonable

MODES = ("quick", "full")


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Outcome:
    result: str  # one or two sentences: what cnnlab measured, to set beside the report's claim
    metrics: dict[str, Any] = field(default_factory=dict)  # every number, for results.json
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[Path, str]] = field(default_factory=list)  # (file inside the report folder, caption)
    notes: list[str] = field(default_factory=list)  # e.g. a backbone left out for lack of weights


@dataclass
class Context:
    """What a run function may use: its own folder, the data root, a cache, and runs shared between experiments."""

    report_dir: Path
    dir: Path  # this experiment's folder (emptied before each run)
    data_root: Path | None
    cache_dir: Path
    device: str = "cpu"
    progress: bool = True
    _memo: dict = field(default_factory=dict, repr=False)

    def memo(self, key: str, fn: Callable[[], Any]) -> Any:
        """`fn()` once per key for this experiment (e.g. 12,000 decoded faces read by several measurements)."""
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]

    def data(self, *parts: str) -> Path:
        """A path under the data root; a one-line error naming what is missing and how to provide it."""
        rel = "/".join(parts)
        if self.data_root is None:
            raise CnnlabError(f"needs {rel} under a data root: {DATA_ROOT_HINT}")
        path = self.data_root.joinpath(*parts)
        if not path.exists():
            raise CnnlabError(f"needs {path} (not found under the data root {self.data_root})")
        return path

    def shared(self, kind: str, config: dict, fn: Callable[[Path], dict]) -> tuple[Path, dict]:
        """Run `fn(folder)` once per (kind, config) for the whole report: a GAN trained for one experiment is reused
        by the next one that needs the same run. The result is committed as the folder's one runner part (written
        last, atomically); a folder without it is a half-finished run: redone."""
        folder = self.report_dir / "runs" / f"{kind}-{config_hash(config)[:12]}"
        sink = RunDirSink(folder, config_hash({"kind": kind, "config": config})[:20])
        done = sink.read_part(0)
        if done is not None:
            return folder, done.rows[0]["result"]
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        result = to_jsonable(fn(folder))
        sink.commit(0, Chunk([{"kind": kind, "config": config, "result": result}]))
        return folder, result


@dataclass(frozen=True)
class Experiment:
    id: str  # stable: scripts and --only rely on it
    title: str
    section: str  # the report's part
    claim: str  # what the report says or measured
    settings: dict[str, dict]  # mode -> settings given to `run`
    run: Callable[[Context, dict], Outcome]
    uses_data: bool = True  # False: the data root is not part of its cache key

    def resolved(self, mode: str, overrides: dict | None = None) -> dict:
        return {**self.settings[mode], **(overrides or {})}


REGISTRY: dict[str, Experiment] = {}


def experiment(id: str, title: str, section: str, claim: str, quick: dict, full: dict, uses_data: bool = True):
    """Register a run function under a stable id."""

    def register(fn: Callable[[Context, dict], Outcome]):
        if id in REGISTRY:
            raise ValueError(f"experiment {id} registered twice")
        REGISTRY[id] = Experiment(id, title, section, claim, {"quick": quick, "full": full}, fn, uses_data)
        return fn

    return register


def config_hash(config: Any) -> str:
    return hashlib.sha256(json.dumps(to_jsonable(config), sort_keys=True).encode()).hexdigest()


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def mean_sd(values: list[float], digits: int = 3) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.{digits}f}"


def image_grid(path: Path, rows: list[tuple[str, list[Path]]], titles: list[str]) -> Path:
    """A figure of image files: one row per (name, files), one column per title."""
    from PIL import Image

    from ..core.figures import image_grid as grid, save_figure

    arrays = [(name, [np.asarray(Image.open(f).convert("RGB")) for f in files]) for name, files in rows]
    return save_figure(grid(arrays, titles, cell=2.1), path)
