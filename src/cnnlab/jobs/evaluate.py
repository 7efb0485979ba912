"""The saliency-evaluation job: `cnnlab.evaluate_saliency` / `cnnlab explain evaluate`. Methods × metrics over a
folder of images, on the runner (streamed, resumable, torchrun-sharded): one forward pass per batch for the targets,
the method-independent parts of a metric (the random baseline) computed once per image, each method's maps made
once and scored by every metric. The leaderboard (mean and 95 % bootstrap interval per cell, the rank of each method
per column) is computed from the per-image rows, so it is the same however the rows were computed."""
from __future__ import annotations

import copy
import csv
import io
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from ..core.backbones import Backbone
from ..core.config import SEED_MAX, option, part
from ..core.parts import registry_help
from ..core.errors import CnnlabError
from ..core.figures import heat, image_grid
from ..core.inputs import ImagesLike, batch_rows, check_sizes, sources
from ..core.calls import CHUNK_HELP, ModelLike, ModelOptions, PerImageOptions, configure, load_backbone, recorded, with_options
from ..core.results import PerImageResult
from ..core.runner import Chunk, run_per_image
from ..core.runs import write_text
from ..core.hooks import count_passes
from ..core.precision import PRECISIONS, autocast, resolve_precision
from ..explain.leaderboard import BoardRow, board_table, dominated, leaderboard, recommended
from ..explain.metrics import CONTROLS, METRICS, PANELS, Metric
from ..explain.verdicts import MIN_VERDICT_IMAGES
from ..explain.saliency import METHODS, SaliencyMethod, predicted, result_settings
from ..explain.targets import resolve_targets

# every method whose map costs no more than the panel's scoring of it (the sampling methods smoothgrad, ig and
# smoothgrad-gradcam, and iterated-gradcam, occlusion, scorecam and rise cost more; edges is a control): run when
# named. Passes per method: docs/benchmarks.md
DEFAULT_METHODS = ("vanilla", "gradcam", "gradcam++", "layercam", "input-x-gradient", "guided-backprop")
DEFAULT_METRICS = ("deletion", "insertion", "road", "randomization")
SHOWN_STEPS_IMAGES = 1  # images whose maps the randomization figure shows


@dataclass
class EvaluateSaliencyConfig(PerImageOptions, ModelOptions):
    """Saliency methods × metrics over a set of images: a leaderboard with 95 % bootstrap
intervals and each method's rank per column, per-image rows (results.jsonl), curves, and the model-randomization
figure. Metrics:
{metrics}
Prints a short table (aggregate rank, verdict, passes per image, where the ★ went and why); writes the full one to
leaderboard.md and leaderboard.csv, metrics.json, the curves in leaderboard.png and (with randomization and
--figure-steps) randomization.png."""

    command = "explain evaluate"
    methods: list[SaliencyMethod] = part(METHODS, DEFAULT_METHODS,
                                default_help="the methods that cost no more than their scoring: one forward and "
                                             "one backward pass (the sampling methods, iterated-gradcam, occlusion, "
                                             "scorecam and rise when named; the edges control)",
                                help="saliency methods, comma-separated")
    metrics: list[Metric] = part(METRICS, DEFAULT_METRICS,
                                help="metrics, comma-separated (the faithfulness panel: add deletion-black, "
                                     "insertion-black, deletion-pixel, insertion-pixel; aggregate_rank is the mean "
                                     "rank over the panel's columns)")
    panel: str = option("fast", choices=PANELS,
                        help="how finely the faithfulness metrics sample: 'fast' (7 curve steps, 1 random order, "
                             "ROAD at 50 %: the same method ranking as 'full' on two photo sets) or 'full' (28 "
                             "steps, 4 random orders, ROAD at 10…90 %: the published protocols)")
    precision: str = option("auto", choices=PRECISIONS,
                            help="the scoring passes of deletion, insertion and ROAD (not the maps, not the "
                                 "randomization check): 'auto' uses bf16 autocast where the hardware runs it natively")
    target: str = option("pred", help="'pred' (the model's prediction) or a class of the model (index or name)")
    bootstrap: int = option(1000, low=10, help="bootstrap resamples of the images for the 95 % intervals")
    seed: int = option(0, low=0, high=SEED_MAX, help="seed of the bootstrap resampling")
    figure_steps: bool = option(False, consts={"--figure-steps": True, "--no-figure-steps": False},
                                help="randomization: Adebayo et al.'s figure, the maps of the first image at every "
                                     "cascading step (one map per method and step: as many maps again as the check)")
    chunk_size: int = option(8, low=1, help=CHUNK_HELP)  # the progress bar moves once per chunk
    controls: bool = option(True, negate="--no-controls",
                            help="rank the input-only controls (brightness: the brightest pixels first; edges) "
                                 "beside the methods on every metric; one that ranks at or above the best method "
                                 "means the metric is dominated by the input on these images, and there is no ★")

    @classmethod
    def description(cls) -> str:
        return cls.__doc__.replace("{metrics}", registry_help(METRICS))


def part_names(parts) -> list[str]:
    return [p.name for p in parts]


def metric_objects(cfg: EvaluateSaliencyConfig) -> dict[str, Metric]:
    metrics = {m.name: copy.copy(m) for m in cfg.metrics}  # the panel set on copies: the config stays as given
    for m in metrics.values():
        m.use_panel(PANELS[cfg.panel])
    return metrics


class SaliencyEvaluation(PerImageResult):
    """`.leaderboard` (a `BoardRow` per method, read as a dict: each column's mean, `ci` its 95 % bootstrap interval, `rank` 1 = best,
    `seconds_per_image`), `.values(method, key)` (per-image numbers), `.curves(method, name)` (N, S), `.steps`
    (the randomization figure's data, or None). Streamed into a folder (`out=`), the rows and curves are read from
    it."""

    kind, figure_name = "evaluate", "leaderboard.png"
    precision = None  # the scoring passes' precision, resolved on the model's device

    def __init__(self, config, sink, items, prepared, seconds, metrics: dict[str, Metric], steps: dict | None):
        super().__init__(config, sink, items, prepared, seconds)
        self.metrics, self.steps = metrics, steps
        self.leaderboard = self._leaderboard()

    @property
    def columns(self) -> dict[str, bool]:
        """Leaderboard column → True where higher is better, in the order of the metrics asked."""
        cols = {c: up for m in self.metrics.values() for c, up in m.columns.items()}
        return cols | ({"aggregate_rank": False} if any("aggregate_rank" in r for r in self.leaderboard) else {})

    def values(self, method: str, key: str) -> np.ndarray:
        return np.array([r["scores"][method][key] for r in self.rows], dtype=float)

    def curves(self, method: str, name: str) -> np.ndarray:
        """A method's curves (N, S): deletion, insertion, road_morf, road_lerf (and _accuracy); `method="random"`:
        the random orders' deletion and insertion curves."""
        return np.asarray(self.sink.array(f"curves/{method}/{name}"))

    def _leaderboard(self) -> list[BoardRow]:
        return leaderboard(self.rows, part_names(self.config.methods), self.metrics, self.config.bootstrap, self.config.seed,
                           model=self.config.backbone)

    def summary(self) -> dict:
        s = {"backbone": self.config.backbone, "n": len(self), "methods": part_names(self.config.methods),
             "metrics": part_names(self.config.metrics), "columns": self.columns,
             "leaderboard": [r.summary() for r in self.leaderboard],
             "bootstrap": self.config.bootstrap, "seconds": self.seconds, "skipped": self.skipped,
             "panel": self.config.panel, "precision": self.precision}
        best = recommended(self.leaderboard)
        if best is not None:
            s["recommended"] = best
        beaten = dominated(self.leaderboard)
        if beaten is not None:  # no ★: the input alone ranks with the methods
            s["dominated_by_control"] = beaten
        if self.steps is not None:
            s["randomization_steps"] = {k: v for k, v in self.steps.items() if k not in ("maps", "input")}
        if self.run_dir:
            s |= {"run_dir": str(self.run_dir), "figure": self.path(self.figure_name)}
        return s

    def table(self) -> list[list[str]]:
        """The leaderboard as text cells: header, then one row per method (mean [low, high] #rank)."""
        return board_table(self.leaderboard, self.columns)

    def markdown(self) -> str:
        """The full leaderboard: every column's mean [95 % interval] #rank, controls marked and not ranked, then each
        method's randomization verdict."""
        rows = self.table()
        arrows = ["", *[("(control)" if c in CONTROLS else "↑" if up else "↓") for c, up in self.columns.items()],
                  "", "", ""]
        head = [f"{h} {a}".strip() for h, a in zip(rows[0], arrows)]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        note = (f"\n{self.config.backbone}, {len(self)} images; mean [95 % bootstrap interval over images, "
                f"{self.config.bootstrap} resamples] #rank (↓ lower is better, ↑ higher is better; a control is "
                f"not ranked); passes: forward + backward image-passes per image of the method's maps; scoring passes: the "
                f"forward passes of deletion, insertion and ROAD that scored them ({self.config.panel} panel)")
        if any(r.get("queries_panel") for r in self.leaderboard):
            note += "; † queries the model with the panel's own perturbation (blurred patches)"
        if any(r.get("sanity") == "fails" for r in self.leaderboard):
            note += "; ⚠ fails the model-randomization sanity check"
        verdicts = [f"- {r['method']}: {r['verdict']}" for r in self.leaderboard if r.get("verdict")]
        return "\n".join(lines) + note + "\n" + ("\nRandomization check:\n" + "\n".join(verdicts) + "\n"
                                                   if verdicts else "") + self._star_line()

    def short_markdown(self) -> str:
        """What a person reads first: per method (best first) the aggregate rank [95 % interval], the verdict,
        passes and seconds per image; then where the ★ went and why."""
        board = sorted(self.leaderboard, key=lambda r: r.get("aggregate_rank", float("inf")))
        ranked = any("aggregate_rank" in r for r in board)
        head = ["method", *(["aggregate rank ↓"] if ranked else []), "randomization check", "passes / image",
                "seconds / image"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        star = (self._star() or {}).get("method")
        for r in board:
            cells = [r["method"] + (" ★" if r["method"] == star else "") + (" (control)" if r.get("control") else "")]
            if ranked:
                cells.append(f"{r['aggregate_rank']:.2f} [{r['ci']['aggregate_rank'][0]:.2f}, "
                             f"{r['ci']['aggregate_rank'][1]:.2f}]" if "aggregate_rank" in r else "—")
            cells += [r.get("verdict", "not measured"),
                      "—" if r.get("passes_per_image") is None else f"{r['passes_per_image']:g}",
                      f"{r['seconds_per_image']:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n" + self._star_line()

    def _star(self) -> dict | None:
        return recommended(self.leaderboard)

    def _star_line(self) -> str:
        best, beaten = self._star(), dominated(self.leaderboard)
        if beaten is not None:
            return f"\nno ★: {beaten['why']}.\n"
        if best is not None:
            return f"\n★ {best['why']}.\n"
        if not any("aggregate_rank" in r for r in self.leaderboard):
            return "\nno ★: the recommendation needs at least two faithfulness-panel columns\n"
        if not any("randomization_rank_corr" in r for r in self.leaderboard):
            return "\nno ★: it needs the randomization check (--metrics …,randomization)\n"
        if len(self) < MIN_VERDICT_IMAGES:
            return (f"\nno ★ on {len(self)} images: the randomization check gives a verdict from "
                    f"{MIN_VERDICT_IMAGES} images on\n")
        return "\nno ★: no method passes the randomization check within the budget\n"

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        cols = list(self.columns)
        w.writerow(["method", *[x for c in cols for x in (c, f"{c}_low", f"{c}_high", f"{c}_rank")],
                    "seconds_per_image", "passes_per_image", "panel_passes_per_image"])
        for r in self.leaderboard:
            w.writerow([r["method"], *[x for c in cols for x in (r.get(c), *r["ci"].get(c, ["", ""]),
                                                                  r["rank"].get(c, ""))],
                        r["seconds_per_image"], r.get("passes_per_image"), r.get("panel_passes_per_image")])
        return buf.getvalue()

    def text(self) -> str:
        where = f" → {self.run_dir} (full table: leaderboard.md)" if self.run_dir else ""
        return (f"{len(self)} images × {len(self.config.methods)} methods × {len(self.config.metrics)} metrics in "
                f"{self.seconds:.1f} s{where}\n" + self.short_markdown())

    def figures(self) -> dict:
        figs = {self.figure_name: self._curves_figure()}
        if self.steps is not None and self.steps.get("maps") is not None:
            figs["randomization.png"] = self._steps_figure()
        return figs

    def _curves_figure(self):
        import matplotlib.figure

        names = [(k, "deletion", "blurred patches deleted") for k in ("deletion",) if k in self.metrics]
        names += [(k, "insertion", "patches inserted") for k in ("insertion",) if k in self.metrics]
        names += [("road", c, f"ROAD {c[5:].upper()}: pixels imputed") for c in ("road_morf", "road_lerf")
                  if "road" in self.metrics]
        fig = matplotlib.figure.Figure(figsize=(4 * max(1, len(names)), 3.4), layout="constrained")
        axes = fig.subplots(1, max(1, len(names)), squeeze=False)[0]
        for ax, (metric, curve, title) in zip(axes, names):
            for method in part_names(self.config.methods):
                y = self.curves(method, curve).mean(0)
                xs = np.array(self.metrics[metric].percentages) / 100 if metric == "road" else np.linspace(0, 1, len(y))
                ax.plot(xs, y, label=method, marker="o" if len(xs) < 6 else None)  # a one-point ROAD shows too
            if metric != "road":
                y = self.curves("random", curve).mean(0)
                ax.plot(np.linspace(0, 1, len(y)), y, "k--", label="random order")
            ax.set(title=title, xlabel="share removed" if metric != "insertion" else "share restored",
                   ylabel="class probability (mean)", xlim=(0, 1))
        if names:
            axes[0].legend(fontsize=7)
        fig.suptitle(f"{self.config.backbone}, {len(self)} images")
        return fig

    def _steps_figure(self):
        steps, maps = self.steps["steps"], self.steps["maps"]
        rows = [("image", [self.steps["input"]])]
        rows += [(m, [heat(mm) for mm in maps[i]]) for i, m in enumerate(part_names(self.config.methods))]
        return image_grid(rows, ["trained", *steps], cell=1.5, title="cascading model randomization (Adebayo et al. "
                          "2018): each column re-draws one more unit, from the logits down")

    def write_files(self, folder) -> None:
        write_text(folder / "leaderboard.md", self.markdown())
        write_text(folder / "leaderboard.csv", self.csv())


@with_options(EvaluateSaliencyConfig)
def evaluate_saliency(model: ModelLike = None, images: ImagesLike | None = None, *,
                      config: EvaluateSaliencyConfig | None = None, out=None, progress: bool = False,
                      **options) -> SaliencyEvaluation:
    """Evaluate saliency `methods` by `metrics` over `images`: a leaderboard (mean ± 95 % bootstrap interval and
    rank per cell), per-image rows and curves, and (with the randomization metric) the maps of the first image as
    the model is randomized step by step. With `out`, streamed into that folder chunk by chunk: bounded memory,
    resumable, shared out over torchrun processes."""
    cfg = configure(EvaluateSaliencyConfig, config, options)
    if not cfg.methods or not cfg.metrics:
        raise CnnlabError("name at least one method and one metric")
    if cfg.controls:  # ranked beside the methods: the input alone, on the same metrics
        named = set(part_names(cfg.methods))
        cfg = cfg.replace(methods=[*cfg.methods, *(cls() for name, cls in METHODS.items()
                                                   if cls.control and name not in named)])
    backbone = load_backbone(model, cfg)
    cfg = recorded(cfg, backbone)
    methods = {m.name: copy.copy(m) for m in cfg.methods}  # what a run caches in them stays in the run
    for m in methods.values():
        m.check(backbone)
        m.used_layers(backbone)  # a default layer's one probing pass, made now: not counted in any method's passes
    if cfg.target not in ("pred",):
        backbone.class_index(cfg.target)
    metrics = metric_objects(cfg)
    items, prepared = sources(images if images is not None else cfg.inputs)
    items = items[:cfg.limit] if cfg.limit else items
    check_sizes(items, prepared, backbone)
    settings = result_settings(cfg.to_dict(), [*methods.values(), *cfg.metrics],
                               drop=("methods", "metrics", "bootstrap", "seed", "figure_steps"))
    ran = run_per_image(items, _worker(backbone, methods, metrics, cfg, prepared), settings=settings, out=out,
                        chunk_size=max(cfg.batch_size, cfg.chunk_size // cfg.batch_size * cfg.batch_size),
                        device=backbone.device, progress=progress, desc="evaluate")
    if ran is None:
        return None
    sink, seconds = ran
    steps = _randomization_steps(backbone, methods, metrics, cfg, items, prepared, sink)
    res = SaliencyEvaluation(cfg, sink, items, prepared, seconds, metrics, steps)
    res.precision = resolve_precision(cfg.precision, backbone.device)
    return res


def _worker(backbone: Backbone, methods: dict, metrics: dict[str, Metric], cfg: EvaluateSaliencyConfig, prepared: bool):
    first_method = next(iter(methods))
    precision = resolve_precision(cfg.precision, backbone.device)

    def scoring(m: Metric):  # the forward-only metrics' passes in the chosen precision
        return autocast(precision, backbone.device) if m.forward_only else nullcontext()

    def work(chunk: list, first: int, advance=lambda n: None) -> Chunk:
        arrays: dict[str, list] = {}

        def rows(items, x, positions):
            preds = predicted(backbone, x).cpu()
            targets = torch.as_tensor(resolve_targets(cfg.target, preds, backbone, positions=positions))
            shared = {}
            for name, m in metrics.items():
                with scoring(m):
                    shared[name] = m.prepare(backbone, x, targets, positions)
            scores: list[dict] = [{} for _ in items]
            for name, method in methods.items():
                t = time.perf_counter()
                with count_passes(backbone.net) as passes:
                    maps = method.attribute(backbone, x, targets).float().cpu()
                per_image = (time.perf_counter() - t) / len(x)
                values = {"seconds": torch.full((len(x),), per_image),
                          "passes": torch.full((len(x),), passes.total / len(x))}
                panel = 0
                for mname, m in metrics.items():
                    with scoring(m), count_passes(backbone.net) as scored:
                        v, curves = m.score(backbone, x, targets, maps, method, shared[mname], positions)
                    panel += scored.forward if m.forward_only else 0
                    values |= v
                    for c, arr in curves.items():
                        if c.startswith("random_"):  # the same for every method: kept once
                            if name != first_method:
                                continue
                            key = f"curves/random/{c[len('random_'):]}"
                        else:
                            key = f"curves/{name}/{c}"
                        arrays.setdefault(key, []).append(arr.float().numpy())
                values["panel_passes"] = torch.full((len(x),), panel / len(x))
                for j in range(len(items)):
                    scores[j][name] = {k: float(v[j]) for k, v in values.items()}
                advance(len(items) / len(methods))  # the bar moves per method: its estimate comes early
            out = []
            for j, (source, p) in enumerate(zip(items, positions)):
                row = {"image": source.name, "target": int(targets[j]), "pred": int(preds[j]), "scores": scores[j]}
                if source.label is not None:
                    row["label"] = source.label
                out.append(row)
            return out

        all_rows = batch_rows(chunk, backbone.preprocess, prepared, cfg.batch_size, first, rows)
        return Chunk(all_rows, {k: np.concatenate(v) for k, v in arrays.items()})
    return work


def _randomization_steps(backbone, methods, metrics, cfg, items, prepared, sink) -> dict | None:
    """Each method's maps of the first readable image at every cascading step, and the mean rank correlation
    per step (for Adebayo et al.'s figure)."""
    if "randomization" not in metrics or not cfg.figure_steps:
        return None
    from ..explain.sanity import model_randomization

    every = sink.rows()
    shown = [p for p, r in enumerate(every) if "error" not in r][:SHOWN_STEPS_IMAGES]
    x = torch.stack([items[p].network_input(backbone.preprocess, prepared) for p in shown])
    targets = [every[p]["target"] for p in shown]
    out: dict = {"image": [every[p]["image"] for p in shown], "steps": None, "rank_corr": {}, "maps": [],
                 "input": x[0]}
    for name, method in methods.items():
        r = model_randomization(backbone, x, targets, method, seed=metrics["randomization"].randomization_seed)
        out["steps"] = r.steps
        out["rank_corr"][name] = r.summary()["rank_corr"]
        out["maps"].append(r.maps[:, 0].numpy())
    return out
