"""Per-image jobs (classify, saliency, fool) over inputs of any number, written as they go.

The inputs (sorted, as listed) are cut into chunks; each chunk is done in memory by the job's own code, its
per-image files are written into the run directory, then its results are committed atomically as
`RUN/parts/part-00000.jsonl` (a header line with the settings, then one line per image). Memory is bounded by a
chunk; a rerun after a crash or a preemption skips the committed chunks; under torchrun each process takes every
world-th chunk and rank 0 assembles `RUN/results.jsonl` (one line per image, in input order) once all are done.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import CnnlabError
from .inputs import Source
from .runs import atomic_path
from .shards import barrier, chunk_ranges, distributed, mine

def settings_tag(config: dict, sources: list[Source]) -> str:
    """What a committed chunk must match to be reused: the resolved config and the inputs' names and sizes."""
    names = []
    for s in sources:
        try:
            stat = s.path.stat() if s.path is not None else None
        except OSError:
            stat = None
        names.append([s.name, stat.st_size if stat else None, stat.st_mtime_ns if stat else None])
    blob = json.dumps({"config": config, "inputs": names}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class ChunkedRun:
    """The chunks of one run directory: which are still to do (this process's share), commit, assemble."""

    def __init__(self, root: str | Path, n: int, chunk_size: int, tag: str, rank: int = 0, world: int = 1):
        self.root, self.tag, self.rank, self.world = Path(root), tag, rank, world
        self.chunks = chunk_ranges(n, chunk_size)

    def _part(self, k: int) -> Path:
        return self.root / "parts" / f"part-{k:05d}.jsonl"

    def _read(self, k: int) -> list[dict] | None:
        try:
            lines = self._part(k).read_text().splitlines()
            header = json.loads(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        if header.get("settings") != self.tag or header.get("chunk") != k:
            return None
        return [json.loads(line) for line in lines[1:]]

    def todo(self) -> Iterator[tuple[int, range]]:
        """This process's chunks that are not committed yet."""
        for k, r in mine(list(enumerate(self.chunks)), self.rank, self.world):
            if self._read(k) is None:
                yield k, r

    def commit(self, k: int, rows: list[dict]) -> None:
        header = {"settings": self.tag, "chunk": k, "start": self.chunks[k].start, "end": self.chunks[k].stop}
        text = "\n".join(json.dumps(row, default=_plain) for row in [header] + rows) + "\n"
        with atomic_path(self._part(k)) as tmp:
            tmp.write_text(text)

    def assemble(self) -> list[dict] | None:
        """After every process is done: rank 0 reads all chunks in order and writes results.jsonl; others get None."""
        barrier()
        if self.rank != 0:
            return None
        rows = []
        for k in range(len(self.chunks)):
            part = self._read(k)
            if part is None:
                raise CnnlabError(f"chunk {k} of {self.root} is missing: run the command again to complete it")
            rows += part
        with atomic_path(self.root / "results.jsonl") as tmp:
            tmp.write_text("".join(json.dumps(row, default=_plain) + "\n" for row in rows))
        return rows


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def run_chunks(sources: list[Source], run: ChunkedRun, work: Callable[[list[Source], int], list[dict]],
               progress: bool = False) -> list[dict] | None:
    """`work(chunk_sources, first_index)` does one chunk (writing its per-image files) and returns its rows; each is
    committed, and rank 0 gets all rows once every process is done."""
    from tqdm.auto import tqdm

    todo = list(run.todo())
    for k, r in tqdm(todo, desc="chunks", unit="chunk", disable=not progress or len(todo) < 2):
        run.commit(k, work(sources[r.start:r.stop], r.start))
    return run.assemble()


def _why(source) -> str:
    try:
        source.decode()
        return "unreadable"
    except CnnlabError as exc:
        return str(exc)


def stream_job(cfg, items: list[Source], prepared: bool, out: Path, device, progress: bool, chunk_job, assemble):
    """A per-image job run chunk by chunk into `out`: `chunk_job(chunk_sources, first)` returns the chunk's result
    (with `image_rows()`, `skipped`, `write_images(folder, part)`); `assemble(cfg, rows, skipped, seconds, items,
    prepared, out)` makes the run's result from all rows. Rank 0 gets it; other processes get None."""
    rank, world = distributed(device)
    # whole batches in every chunk: the batches are those of a run in memory, so are the numbers
    size = max(cfg.batch_size, cfg.chunk_size // cfg.batch_size * cfg.batch_size)
    run = ChunkedRun(out, len(items), size, settings_tag(cfg.to_dict(), items), rank, world)
    t0 = time.perf_counter()

    def work(chunk: list, first: int) -> list[dict]:
        try:
            res = chunk_job(chunk, first)
        except CnnlabError as exc:
            if not str(exc).startswith("no readable input images"):
                raise
            return [{"image": s.name, "error": _why(s), "skipped": True} for s in chunk]  # not one readable
        res.run_dir = out
        res.write_images(out, part=first // size)
        return res.image_rows() + [s | {"skipped": True} for s in res.skipped]

    rows = run_chunks(items, run, work, progress and rank == 0)
    if rows is None:  # another process assembles
        return None
    kept, skipped = [r for r in rows if not r.get("skipped")], [r for r in rows if r.get("skipped")]
    if not kept:
        raise CnnlabError("no readable input images")
    result = assemble(cfg, kept, [{"image": r["image"], "error": r["error"]} for r in skipped],
                      time.perf_counter() - t0, items, prepared, out)
    result.run_dir = out
    return result
