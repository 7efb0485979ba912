"""The one runner of every per-image job, and the one place where chunks are committed.

The inputs (sorted, as listed) are cut into chunks; the job's worker turns the inputs of a chunk into its `Chunk`
of output: one row per input (JSON-able; an unreadable input is a row with an "error"), arrays with one entry per
readable input, and per-image files (bytes, e.g. PNGs). The chunk is committed to a sink (as its part files):

- `MemorySink`: kept in memory (a call without `out=`);
- `RunDirSink`: a run directory — arrays as `<name>/part-00000.npy`, files under their names, then the rows as
  `parts/part-00000.jsonl` (a header with the settings tag, then one line per input). The rows are written last, by
  an atomic rename: a part whose rows are there is whole. A rerun skips committed parts whose tag matches; under
  torchrun each process takes every world-th chunk and rank 0 writes `results.jsonl` once all are done.

Results are always built from the sink (`rows()`, `array(name)`, `read(name)`), so a run held in memory and one
streamed into a folder (or shared out over processes) give the same object. Rank, world size and barriers come from
`distributed()` / `barrier()` here, for the runner and for `gan train` alike.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .errors import CnnlabError
from .runs import atomic_path, dumps


# ------------------------------------------------------------------------------------------------ processes
def distributed(device: Any = "cpu") -> tuple[int, int]:
    """(rank, world size). Under torchrun (WORLD_SIZE > 1) a process group is started once (gloo on CPU, nccl on
    CUDA); alone: (0, 1)."""
    import torch
    import torch.distributed as dist

    if launched()[1] > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(rank, world size) as torchrun announces them in the environment (its contract; SLURM's srun sets the same),
    readable before any process group exists."""
    env = os.environ if env is None else env
    return int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1"))


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def chunk_ranges(n: int, size: int) -> list[range]:
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def settings_tag(*parts: Any) -> str:
    """A short hash of settings (JSON-able): what a committed part must match to be reused."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def files_tag(paths: Iterable[Any]) -> list:
    """Names, sizes and modification times of input files (None for inputs held in memory)."""
    out = []
    for p in paths:
        try:
            st = Path(p).stat() if p is not None else None
        except OSError:
            st = None
        out.append([str(p), st.st_size if st else None, st.st_mtime_ns if st else None])
    return out


# ------------------------------------------------------------------------------------------------------ parts
@dataclass
class Chunk:
    """What a worker returns for one chunk."""

    rows: list[dict]  # one per input of the chunk, in order; an unreadable one has "error" and no array entry
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # each (number of readable inputs, ...)
    files: dict[str, bytes] = field(default_factory=dict)  # per-image files, by name inside the run
    seconds: float = 0.0  # the time its worker took (recorded with it, so a resumed run counts the work it reuses)


class Sink:
    """Where committed parts go; what results read."""

    on_disk = False

    def done(self, k: int) -> bool:
        raise NotImplementedError

    def commit(self, k: int, part: Chunk) -> None:
        raise NotImplementedError

    def finish(self, n_parts: int, rank: int) -> bool:
        """Called by every process once its parts are committed; True where the whole result can be read."""
        return True

    def read_part(self, k: int) -> Chunk | None:
        """A committed part (arrays memory-mapped where on disk), or None."""
        raise NotImplementedError

    def seconds(self, k: int) -> float:
        """The time the worker took to make committed part k (0 where not recorded)."""
        part = self.read_part(k)
        return part.seconds if part is not None else 0.0

    def rows(self) -> list[dict]:
        raise NotImplementedError

    def array(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.zeros((0,), np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class MemorySink(Sink):
    def __init__(self) -> None:
        self.parts: dict[int, Chunk] = {}

    def done(self, k: int) -> bool:
        return k in self.parts

    def commit(self, k: int, part: Chunk) -> None:
        self.parts[k] = part

    def read_part(self, k: int) -> Chunk | None:
        return self.parts.get(k)

    def _ordered(self) -> list[Chunk]:
        return [self.parts[k] for k in sorted(self.parts)]

    def rows(self) -> list[dict]:
        return [r for p in self._ordered() for r in p.rows]

    def array(self, name: str) -> np.ndarray:
        return _concat([p.arrays[name] for p in self._ordered() if name in p.arrays])

    def read(self, name: str) -> bytes:
        for p in self.parts.values():
            if name in p.files:
                return p.files[name]
        raise CnnlabError(f"no file {name} in this result")


class RunDirSink(Sink):
    """A run directory that parts are committed into (see the module's text for the layout)."""

    on_disk = True

    def __init__(self, root: str | os.PathLike, tag: str):
        self.root, self.tag = Path(root), tag
        if self.root.exists() and not self.root.is_dir():
            raise CnnlabError(f"--out {self.root} is a file, not a folder")
        self._rows: list[dict] | None = None

    def _rows_file(self, k: int) -> Path:
        return self.root / "parts" / f"part-{k:05d}.jsonl"

    def _read_part(self, k: int) -> tuple[dict, list[dict]] | None:
        try:
            lines = self._rows_file(k).read_text().splitlines()
            header = json.loads(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        if header.get("settings") != self.tag or header.get("part") != k:
            return None
        return header, [json.loads(line) for line in lines[1:]]

    def done(self, k: int) -> bool:
        return self._read_part(k) is not None

    def read_part(self, k: int) -> Chunk | None:
        part = self._read_part(k)
        if part is None:
            return None
        header, rows = part
        try:
            arrays = {name: np.load(self.root / name / f"part-{k:05d}.npy", mmap_mode="r") for name in header["arrays"]}
        except (OSError, ValueError):  # an array removed or damaged after the commit: the part is redone
            return None
        return Chunk(rows, arrays, seconds=header.get("seconds", 0.0))

    def commit(self, k: int, part: Chunk) -> None:
        for name, a in part.arrays.items():
            with atomic_path(self.root / name / f"part-{k:05d}.npy") as tmp:
                np.save(tmp, np.ascontiguousarray(a))
        for name, data in part.files.items():
            with atomic_path(self.root / name) as tmp:
                tmp.write_bytes(data)
        header = {"settings": self.tag, "part": k, "arrays": sorted(part.arrays), "seconds": part.seconds}
        text = "".join(dumps(r, default=str) + "\n" for r in [header] + part.rows)
        with atomic_path(self._rows_file(k)) as tmp:  # last: the part's commit mark
            tmp.write_text(text)

    def finish(self, n_parts: int, rank: int) -> bool:
        barrier()
        self.n_parts = n_parts
        if rank != 0:
            return False
        missing = [k for k in range(n_parts) if not self.done(k)]
        if missing:
            raise CnnlabError(f"part {missing[0]} of {self.root} is missing: run the command again to complete it")
        with atomic_path(self.root / "results.jsonl") as tmp:
            tmp.write_text("".join(dumps(r, default=str) + "\n" for r in self.rows()))
        return True

    def _parts(self) -> list[tuple[dict, list[dict]]]:
        n = getattr(self, "n_parts", None)
        ks = range(n) if n is not None else sorted(int(p.stem.split("-")[1]) for p in
                                                    (self.root / "parts").glob("part-*.jsonl"))
        out = []
        for k in ks:
            part = self._read_part(k)
            if part is None:
                raise CnnlabError(f"part {k} of {self.root} is missing or was made with other settings")
            out.append(part)
        return out

    def rows(self) -> list[dict]:
        if self._rows is None:
            self._rows = [r for _, rows in self._parts() for r in rows]
        return self._rows

    def array(self, name: str) -> np.ndarray:
        """All parts of an array, memory-mapped (a single part) or concatenated."""
        parts = [np.load(self.root / name / f"part-{k:05d}.npy", mmap_mode="r")
                 for k, (header, _) in enumerate(self._parts()) if name in header["arrays"]]
        return _concat(parts)

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()


# ----------------------------------------------------------------------------------------------------- runner
class Runner:
    """Chunks of `n` inputs, this process's share of them, committed to `sink` as they are done."""

    def __init__(self, sink: Sink, n: int, chunk_size: int, device: Any = "cpu"):
        self.sink = sink
        self.rank, self.world = distributed(device) if sink.on_disk else (0, 1)
        self.chunks = chunk_ranges(n, max(1, chunk_size))

    def todo(self) -> list[tuple[int, range]]:
        """This process's chunks that are not committed yet."""
        mine = list(enumerate(self.chunks))[self.rank::self.world]
        return [(k, r) for k, r in mine if not self.sink.done(k)]

    def run(self, items: Sequence, worker: Callable[[Sequence, int], Chunk], progress: bool = False,
            desc: str = "chunks") -> bool:
        """`worker(chunk_items, first_index)` for every chunk to do; True where the whole result can be read."""
        from tqdm.auto import tqdm

        todo = self.todo()
        waiting = {k for k, _ in todo}
        self.reused_seconds = sum(self.sink.seconds(k) for k, _ in list(enumerate(self.chunks))[self.rank::self.world]
                                  if k not in waiting)
        total = sum(len(r) for _, r in todo)
        # a worker that takes `advance` moves the bar inside a chunk (by fractions of images): its time estimate
        # shows after the first step rather than after the first chunk
        fine = "advance" in inspect.signature(worker).parameters
        fmt = "{l_bar}{bar}| {n:.0f}/{total} img [{elapsed}<{remaining}]" if fine else None
        with tqdm(total=total, desc=desc, unit="img", bar_format=fmt,
                  disable=not progress or self.rank != 0) as bar:
            done = 0
            for k, r in todo:
                t0, moved = time.perf_counter(), [0.0]

                def advance(n: float) -> None:
                    moved[0] = min(moved[0] + n, len(r))
                    bar.n = done + moved[0]
                    bar.refresh()

                chunk = items[r.start:r.stop]
                part = worker(chunk, r.start, advance=advance) if fine else worker(chunk, r.start)
                part.seconds = time.perf_counter() - t0
                self.sink.commit(k, part)
                done += len(r)
                bar.n = done  # whole images at a chunk's end, whatever fractions moved it
                bar.refresh()
        return self.sink.finish(len(self.chunks), self.rank)


def run_per_image(items: Sequence, worker: Callable[[Sequence, int], Chunk], *, settings: Any, out: Any,
                  chunk_size: int, device: Any = "cpu", progress: bool = False, desc: str = "images",
                  readable: bool = True) -> tuple[Sink, float] | None:
    """The one path of every per-image job: its worker over the inputs, chunk by chunk, into memory (`out` None) or
    streamed into the run directory `out` (resumable: a rerun with the same `settings` and files skips what is
    committed; under torchrun each process takes its share). Returns (sink, seconds), or None in the torchrun
    processes that do not assemble the result; the seconds count the work of the parts a resumed run reused.
    `readable`: refuse a run in which no input could be read."""
    inputs = files_tag(s.path or s.name for s in items) if items and hasattr(items[0], "name") else list(items)
    tag = settings_tag(settings, inputs)
    sink: Sink = MemorySink() if out is None else RunDirSink(out, tag)
    t0 = time.perf_counter()
    runner = Runner(sink, len(items), chunk_size, device)
    with warned_once():
        ran = runner.run(items, worker, progress, desc)
    if not ran:
        return None
    if readable:
        rows = sink.rows()
        if not any("error" not in r for r in rows):
            first = next((r["error"] for r in rows if "error" in r), None)
            raise CnnlabError("no readable input images" + (f" ({first})" if first else ""))
    return sink, time.perf_counter() - t0 + runner.reused_seconds


@contextmanager
def warned_once() -> Iterator[None]:
    """Warnings raised inside the block (say, once per chunk) come out at its end, each kind once: messages that
    differ only in their numbers are one, with how many times it was said."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    groups: dict[tuple, list] = {}
    for w in caught:
        groups.setdefault((w.category, re.sub(r"\d+(\.\d+)?", "#", str(w.message))), []).append(w)
    for ws in groups.values():
        more = f" (said {len(ws)} times in this run: once per chunk or batch)" if len(ws) > 1 else ""
        warnings.warn_explicit(f"{ws[0].message}{more}", ws[0].category, ws[0].filename, ws[0].lineno)
