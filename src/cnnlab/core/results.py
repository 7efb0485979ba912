"""What every job returns: the numbers and tensors, `summary()` (the dict `--json` prints), `figure()` (a matplotlib
Figure; the backend is untouched), `save(dir)` (the run directory) and `_repr_html_` for Jupyter.

One run-directory contract, written here for every job: `config.json` (the resolved config; `cnnlab COMMAND
--config RUN_DIR/config.json` repeats the run), `metrics.json` (the summary), the figures, and the job's own files.
Nothing is written unless `save` is called.
"""
from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

from .config import Config
from .runs import RunDir, to_jsonable, write_json


class Result:
    kind = "run"  # the default run directory is runs/<kind>-<time>
    figure_name = "figure.png"

    def __init__(self, config: Config):
        self.config = config
        self.run_dir: Path | None = None

    # what each job defines ------------------------------------------------------------------------------------
    def summary(self) -> dict:
        raise NotImplementedError

    def text(self) -> str:
        """A human-readable account (what the CLI prints without --json)."""
        return str(self.summary())

    def figures(self) -> dict[str, Any]:
        """{file name: matplotlib Figure}; the first is `figure()`."""
        return {}

    def write_files(self, folder: Path) -> None:
        """The job's own files (PNGs, arrays, a classifier) into the run directory."""

    def resolved(self) -> dict:
        """Options the run resolved from a default, for config.json (e.g. the layer a CAM read)."""
        return {}

    # the same for every job -----------------------------------------------------------------------------------
    def figure(self):
        figures = self.figures()
        return next(iter(figures.values())) if figures else None

    def path(self, name: str) -> str | None:
        """A file of the saved run directory (None before `save`)."""
        return str(self.run_dir / name) if self.run_dir is not None else None

    def save(self, out: str | os.PathLike | None = None, root: str | os.PathLike = "runs") -> Path:
        """Write the run directory (`out`, or `root/<kind>-<time>`) and return it."""
        from .figures import save_figure

        run = RunDir.create(out, self.kind, root)
        self.run_dir = run.path
        self.config.save(run / "config.json", **self.resolved())
        self.write_files(run.path)
        for name, fig in self.figures().items():
            save_figure(fig, run / name)
        write_json(run / "metrics.json", self.summary())
        return run.path

    def to_json(self) -> Any:
        return to_jsonable(self.summary())

    def __repr__(self) -> str:
        first = self.text().splitlines()[0] if self.text() else ""
        return f"<{type(self).__name__}: {first}>"

    def _repr_html_(self) -> str:
        from .figures import png_bytes

        parts = [f"<pre style='white-space:pre-wrap'>{html.escape(self.text())}</pre>"]
        fig = self.figure()
        if fig is not None:
            data = base64.b64encode(png_bytes(fig)).decode()
            parts.append(f"<img src='data:image/png;base64,{data}' style='max-width:100%'/>")
        return "\n".join(parts)


class PerImageResult(Result):
    """A per-image job's result, always read from its sink (`core.runner`): held in memory or streamed into a run
    directory, every field has one entry per readable input. `.names`, `.positions` (each image's place among the
    inputs, unreadable ones counted), `.skipped` ([{"image", "error"}]), `.seconds`."""

    def __init__(self, config: Config, sink, items: list, prepared: bool, seconds: float):
        super().__init__(config)
        self.sink, self.items, self.prepared, self.seconds = sink, items, prepared, seconds
        every = sink.rows()
        self.positions = [p for p, r in enumerate(every) if "error" not in r]
        self.rows = [every[p] for p in self.positions]
        self.skipped = [{"image": r["image"], "error": r["error"]} for r in every if "error" in r]
        self.names = [r["image"] for r in self.rows]
        self.run_dir = getattr(sink, "root", None)

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, key: str) -> list:
        return [r[key] for r in self.rows]

    file_key: str | None = None  # the per-image file a row names (its path, once the run directory exists)

    def file_name(self, position: int) -> str:
        raise NotImplementedError

    def image_rows(self) -> list[dict]:
        """One dict per image: what the JSON's `results` lists (and results.jsonl, one line each)."""
        rows = [dict(r) for r in self.rows]
        if self.run_dir and self.file_key:
            for r, p in zip(rows, self.positions):
                r[self.file_key] = self.path(self.file_name(p))
        return rows

    def written(self, folder: Path) -> bool:
        """Whether the per-image files are in `folder` already (streamed there)."""
        return self.sink.on_disk and Path(folder).resolve() == Path(self.sink.root).resolve()
