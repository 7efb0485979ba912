"""`cnnlab reproduce`: run the report's experiments (or some), each cached by its resolved config and isolated from
the others' failures, then write `REPORT_DIR/results.json` and `REPORT_DIR/index.html`."""
from __future__ import annotations

import platform
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .._version import __version__
from ..core.config import Config, cache_dir_option, data_root_option, option
from ..core.errors import CnnlabError, did_you_mean
from ..core.calls import configure
from ..core.results import Result
from ..core.runner import Chunk, RunDirSink
from ..core.runs import to_jsonable, write_json, write_text
# importing the parts registers their experiments, in the report's order
from . import lab_transfer  # noqa: F401,I001
from . import lab_explain  # noqa: F401
from . import lab_gan  # noqa: F401
from .experiment import MODES, REGISTRY, Context, Experiment, config_hash
from .html import render


def list_experiments() -> list[dict]:
    return [{"id": e.id, "title": e.title, "section": e.section} for e in REGISTRY.values()]


def select(only: str | list[str] | None) -> list[Experiment]:
    """Experiments by id, in the report's order; a part (`gan`, `explain/`) selects all of its ids."""
    if not only:
        return list(REGISTRY.values())
    wanted = [w.strip() for w in (only.split(",") if isinstance(only, str) else only) if w.strip()]
    chosen: set[str] = set()
    for w in wanted:
        hits = [i for i in REGISTRY if i == w or i.startswith(w.rstrip("/") + "/")]
        if not hits:
            hint = did_you_mean(w, REGISTRY, n=3, cutoff=0.5, fallback="; `cnnlab reproduce --list` lists them")
            raise CnnlabError(f"unknown experiment {w!r}{hint}")
        chosen.update(hits)
    return [e for i, e in REGISTRY.items() if i in chosen]


def _folder(report_dir: Path, exp_id: str) -> Path:
    return report_dir / exp_id.replace("/", "_")


def _run_one(exp: Experiment, ctx: Context, settings: dict, key: str) -> dict:
    """Run one experiment; any exception becomes a failed entry (the traceback is kept beside it)."""
    if ctx.dir.exists():
        shutil.rmtree(ctx.dir)
    ctx.dir.mkdir(parents=True)
    entry = {"id": exp.id, "title": exp.title, "section": exp.section, "claim": exp.claim, "settings": settings,
             "config_hash": key}
    t0 = time.perf_counter()
    try:
        out = exp.run(ctx, settings)
    except Exception as exc:  # isolate: one broken experiment must not stop the report
        message = str(exc) if isinstance(exc, CnnlabError) else f"{exc.__class__.__name__}: {exc}"
        write_text(ctx.dir / "error.txt", traceback.format_exc())
        return entry | {"status": "failed", "error": message.splitlines()[0] if message else repr(exc),
                        "wall_s": time.perf_counter() - t0}
    rel = lambda p: str(Path(p).resolve().relative_to(ctx.report_dir.resolve()))  # noqa: E731
    return entry | {
        "status": "ok", "wall_s": time.perf_counter() - t0, "result": out.result, "metrics": to_jsonable(out.metrics),
        "tables": [{"title": t.title, "columns": t.columns, "rows": to_jsonable(t.rows)} for t in out.tables],
        "figures": [{"path": rel(p), "caption": c} for p, c in out.figures], "notes": out.notes,
    }


def environment(device: str) -> dict:
    return {"cnnlab": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_threads": torch.get_num_threads(), "device": device,
            "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else None}


@dataclass
class ReproduceConfig(Config):
    """Runs the lab report's experiments (stable ids: `--list`) through cnnlab's Python API and writes
    REPORT_DIR/index.html (one section per experiment: the report's claim beside cnnlab's result, tables, figures,
    settings, wall time; a static page) and REPORT_DIR/results.json (every number).
    --quick (default) uses the offline backbones and short runs: about 30 minutes on 2 CPU cores; --full uses the
    report's settings (VGG16/SqueezeNet/ResNet50 where their weights are present, 7800 cDCGAN iterations; a GPU is
    advised). Finished experiments are not rerun unless their settings change; a failed experiment is reported
    (exit status 1) and the others still run.
    Data (--data-root or $CNNLAB_DATA): 15scene/, imagenet/imagenet_val_25.npz, MNIST/, celeba64/faces/."""

    command = "reproduce"
    list_only: bool = option(False, flag="--list", help="list the experiments (JSON: {experiments: [{id, title, section}]})")
    only: str | None = option(None, help="comma-separated ids or parts, e.g. transfer/Q1.1,gan (default: all)")
    mode: str = option("quick", choices=MODES, consts={"--quick": "quick", "--full": "full"},
                       help="settings of the experiments")
    data_root: str | None = data_root_option("folder holding the datasets")
    cache_dir: str | None = cache_dir_option("feature and classifier cache",
                                             default_help="$CNNLAB_CACHE or REPORT_DIR/cache")
    device: str = option("cpu", help="torch device")


class ReproduceResult(Result):
    """The report folder's summary: `.experiments` (id, status, cached, wall_s, error), `.index` (the page)."""

    kind = "report"

    def __init__(self, config: ReproduceConfig, summary: dict):
        super().__init__(config)
        self._summary = summary
        self.run_dir = Path(summary["report_dir"]) if summary.get("report_dir") else None

    @property
    def experiments(self) -> list[dict]:
        return self._summary["experiments"]

    @property
    def failed(self) -> list[str]:
        return [e["id"] for e in self.experiments if e.get("status", "ok") != "ok"]

    def summary(self) -> dict:
        return self._summary

    def text(self) -> str:
        if "summary" not in self._summary:  # --list
            return "\n".join(f"{e['id']:<18} {e['title']}" for e in self.experiments)
        sm = self._summary["summary"]
        lines = [f"{e['id']:<18} {e['status']}{' (cached)' if e['cached'] else ''}"
                 + (f": {e['error']}" if e["error"] else "") for e in self.experiments]
        lines.append(f"{sm['ok']} ok, {sm['failed']} failed, {sm['cached']} cached in {sm['wall_s']:.0f} s → "
                     f"{self._summary['index']}")
        return "\n".join(lines)

    def save(self, out=None, root="runs") -> Path:
        """The report folder is written as the experiments run; saving elsewhere is not supported."""
        return self.run_dir

    @property
    def exit_code(self) -> int:
        return 1 if "summary" in self._summary and self._summary["summary"]["failed"] else 0


def reproduce(out: str | Path | None = None, only: str | list[str] | None = None, *,
              config: ReproduceConfig | None = None, overrides: dict[str, dict] | None = None,
              progress: bool = False, **options) -> ReproduceResult:
    """Run the selected experiments into the report folder `out`; finished ones with the same resolved config are
    not rerun. `overrides` maps an experiment id to settings that replace the mode's (smaller runs, other backbones).
    With `list_only=True`, only lists the experiments."""
    if only is not None:
        options["only"] = ",".join(only) if isinstance(only, (list, tuple)) else only
    cfg = configure(ReproduceConfig, config, options)
    if cfg.list_only:
        return ReproduceResult(cfg, {"experiments": list_experiments()})
    if out is None:
        raise CnnlabError("--out REPORT_DIR is required (or --list)")
    return ReproduceResult(cfg, _reproduce(Path(out), cfg, overrides, progress))


def _reproduce(report_dir: Path, cfg: ReproduceConfig, overrides: dict | None, progress: bool) -> dict:
    mode, device = cfg.mode, cfg.device
    experiments = select(cfg.only)
    report_dir.mkdir(parents=True, exist_ok=True)
    data = Path(cfg.data_root) if cfg.data_root else None
    cache = Path(cfg.cache_dir) if cfg.cache_dir else report_dir / "cache"
    entries = _previous(report_dir)
    t0 = time.perf_counter()
    for k, exp in enumerate(experiments, 1):
        settings = exp.resolved(mode, (overrides or {}).get(exp.id))
        key = config_hash({"id": exp.id, "mode": mode, "settings": settings, "device": device, "cnnlab": __version__,
                           "data_root": str(data) if exp.uses_data else None})
        folder = _folder(report_dir, exp.id)
        done = _cached(folder, exp.id, key)
        if done is not None:
            entries[exp.id] = done | {"cached": True}
            _say(f"[{k}/{len(experiments)}] {exp.id}: cached ({done['wall_s']:.1f} s when run)", progress)
            continue
        _say(f"[{k}/{len(experiments)}] {exp.id}: {exp.title} ...", progress)
        ctx = Context(report_dir, folder, data, cache, device, progress)
        entry = _run_one(exp, ctx, settings, key) | {"mode": mode}
        _entry_sink(folder, exp.id).commit(0, Chunk([entry]))
        entries[exp.id] = entry | {"cached": False}
        status = "ok" if entry["status"] == "ok" else f"FAILED: {entry['error']}"
        _say(f"[{k}/{len(experiments)}] {exp.id}: {status} ({entry['wall_s']:.1f} s)", progress)
        _write_report(report_dir, entries, mode, device)  # a partial report is readable while the rest runs
    cfg.save(report_dir / "config.json")
    results = _write_report(report_dir, entries, mode, device)
    ran = [entries[e.id] for e in experiments]
    return {"report_dir": str(report_dir), "index": str(report_dir / "index.html"),
            "results": str(report_dir / "results.json"), "mode": mode,
            "experiments": [{k: e[k] for k in ("id", "status", "cached", "wall_s")} | {"error": e.get("error")}
                            for e in ran],
            "summary": {"n": len(ran), "ok": sum(e["status"] == "ok" for e in ran),
                        "failed": sum(e["status"] != "ok" for e in ran), "cached": sum(e["cached"] for e in ran),
                        "wall_s": time.perf_counter() - t0},
            "created": results["created"]}


def _say(line: str, progress: bool) -> None:
    if progress:  # on stderr, beside the progress bars: stdout is kept for --json
        tqdm.write(line, file=sys.stderr)


def _entry_sink(folder: Path, exp_id: str) -> RunDirSink:
    """An experiment's entry, committed as its folder's one runner part (written last, atomically)."""
    return RunDirSink(folder, exp_id)


def _entry(folder: Path, exp_id: str) -> dict | None:
    part = _entry_sink(folder, exp_id).read_part(0)
    return part.rows[0] if part is not None else None


def _cached(folder: Path, exp_id: str, key: str) -> dict | None:
    """The committed entry, when it was run with the same resolved config and succeeded."""
    entry = _entry(folder, exp_id)
    return entry if entry and entry.get("config_hash") == key and entry.get("status") == "ok" else None


def _previous(report_dir: Path) -> dict[str, dict]:
    """Entries already in the report folder (from earlier runs with other --only), so that the page shows them all."""
    found = {}
    for exp_id in REGISTRY:
        entry = _entry(_folder(report_dir, exp_id), exp_id)
        if entry is not None:
            found[exp_id] = entry | {"cached": True}
    return found


def _write_report(report_dir: Path, entries: dict[str, dict], mode: str, device: str) -> dict:
    ordered = [entries[i] for i in REGISTRY if i in entries]
    results = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "mode": mode, "environment": environment(device),
               "experiments": ordered}
    write_json(report_dir / "results.json", results)
    write_text(report_dir / "index.html", render(results))
    return results
