"""Which faithfulness panel does `cnnlab explain evaluate` need by default?

    python benchmarks/evaluate_panel.py --images ../shared/data/imagenet/foolbox20 --n 10 --panels full --variants
    python benchmarks/evaluate_panel.py --images ../shared/data/imagenet/foolbox20 --n 10 --panels fast,full --former

`--panels`: run `explain evaluate` with the default methods and metrics under each panel (the last is the
reference), in one process, and print each method's aggregate rank with its 95 % bootstrap interval, how many of
a panel's ranks lie inside the reference's intervals, the rank correlation of the two orderings, the ★ of each,
and seconds and counted passes per image. `--former` also runs the former default (the full panel with the
sampling methods and iterated-gradcam) on the first `--former-n` images: the speed-up in the same run.

A panel may name the scoring passes' precision: `--panels fast@bf16,fast@fp32` compares bf16 with fp32 on the
same images (the largest per-image change of each score, the ranks inside the fp32 run's intervals); on a CPU
without native bf16 the bf16 run is emulated (`core.precision.emulated_bf16`: the same numbers, not the speed).

`--variants` derives cheaper panels from the reference run without running the model again: a deletion or
insertion curve of 7 or 14 steps is the 28-step curve's every 4th or 2nd point (`faithfulness._curves` removes
round(k·196/steps) patches at step k, so the points are the same), ROAD at fewer percentages is the mean over
those columns (its noise draws differ from a real run's: an approximation), and one random order instead of four
only rescales every method's ratio on an image alike (the ranking is the same by construction).

Lite0 (offline), CPU. Prints markdown tables and one JSON line per panel.
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
from scipy.stats import spearmanr

import cnnlab
from cnnlab.explain.faithfulness import auc
from cnnlab.explain.metrics import METRICS, ROAD_PERCENTAGES
from cnnlab.explain.leaderboard import leaderboard, recommended
from cnnlab.jobs.evaluate import DEFAULT_METHODS, DEFAULT_METRICS

FORMER_METHODS = ["vanilla", "smoothgrad", "ig", "gradcam", "smoothgrad-gradcam", "gradcam++", "layercam",
                  "input-x-gradient", "guided-backprop", "iterated-gradcam"]
VARIANTS = {  # label → (curve steps, ROAD percentages; () drops ROAD)
    "steps 14, ROAD 20/50/80": (14, (20, 50, 80)), "steps 7, ROAD 20/50/80": (7, (20, 50, 80)),
    "steps 7, ROAD 30/70": (7, (30, 70)), "steps 7, ROAD 50": (7, (50,)), "steps 7, no ROAD": (7, ()),
    "steps 4, ROAD 50": (4, (50,)),
}


def board_of(res, methods, metrics, rows=None) -> dict:
    board = leaderboard(rows or res.rows, methods, metrics, res.config.bootstrap, res.config.seed,
                        model=res.config.backbone)
    best = recommended(board)
    return {"rank": {r["method"]: r.get("aggregate_rank") for r in board},
            "ci": {r["method"]: r["ci"].get("aggregate_rank") for r in board},
            "sanity": {r["method"]: r.get("sanity") for r in board}, "star": best["method"] if best else None,
            "passes_per_image": {r["method"]: r.get("passes_per_image") for r in board}}


def run(model, images, methods, panel, n) -> tuple[dict, object]:
    """`panel`: a panel's name, optionally with a precision for the scoring passes (`fast@bf16`)."""
    name, _, precision = panel.partition("@")
    t0 = time.perf_counter()
    res = cnnlab.evaluate_saliency(model, images, methods=methods, panel=name, limit=n, progress=True,
                                   precision=precision or "auto")
    seconds = time.perf_counter() - t0
    out = board_of(res, methods, res.metrics) | {"panel": panel, "n": len(res), "seconds_per_image": seconds / len(res)}
    out["total_passes_per_image"] = sum(v or 0 for v in out.pop("passes_per_image").values())
    out["panel_passes_per_image"] = sum(r.get("panel_passes_per_image") or 0 for r in res.leaderboard)
    return out, res


SCORES = ("deletion_auc", "insertion_auc", "road_morf", "road_lerf", "randomization_rank_corr")


def score_change(res, ref, methods) -> dict:
    """The largest per-image change of each score between two runs of the same images (e.g. bf16 against fp32)."""
    return {k: round(max(float(np.max(np.abs(res.values(m, k) - ref.values(m, k)))) for m in methods), 4)
            for k in SCORES if all(k in r["scores"][methods[0]] for r in res.rows)}


def variant(res, methods, steps: int, road: tuple[int, ...]) -> dict:
    """The reference run's board as a cheaper panel would have scored it (see the module's docstring)."""
    rows = copy.deepcopy(res.rows)
    every = 28 // steps
    cols = [ROAD_PERCENTAGES.index(p) for p in road]
    for kind in ("deletion", "insertion"):
        base = auc(torch.as_tensor(res.curves("random", kind))[:, ::every]).numpy()
        for m in methods:
            a = auc(torch.as_tensor(res.curves(m, kind))[:, ::every]).numpy()
            for i, r in enumerate(rows):
                r["scores"][m][f"{kind}_auc"], r["scores"][m][f"random_{kind}_auc"] = float(a[i]), float(base[i])
    for m in methods:
        for order in ("morf", "lerf"):
            if cols:
                v = np.asarray(res.curves(m, f"road_{order}"))[:, cols].mean(1)
                for i, r in enumerate(rows):
                    r["scores"][m][f"road_{order}"] = float(v[i])
    names = [k for k in res.config.metrics if k != "road" or cols]
    return board_of(res, methods, {k: METRICS.build(k, {}) for k in names}, rows)


def compare(out: dict, ref: dict, methods) -> dict:
    shared = [m for m in methods if out["rank"].get(m) is not None and ref["rank"].get(m) is not None]
    inside = [m for m in shared if ref["ci"][m][0] <= out["rank"][m] <= ref["ci"][m][1]]
    rho = spearmanr([out["rank"][m] for m in shared], [ref["rank"][m] for m in shared])[0]
    return {"inside_ref_interval": f"{len(inside)}/{len(shared)}", "spearman_vs_ref": round(float(rho), 3),
            "same_star": out["star"] == ref["star"]}


def table(rows: list[tuple[str, dict]], methods) -> None:
    print(f"\n| method | {' | '.join(label for label, _ in rows)} |\n|---|{'---|' * len(rows)}")
    for m in methods:
        print(f"| {m} | " + " | ".join(
            f"{o['rank'][m]:.2f} [{o['ci'][m][0]:.2f}, {o['ci'][m][1]:.2f}]" if o["rank"].get(m) is not None else "—"
            for _, o in rows) + " |")
    print("| ★ | " + " | ".join(str(o["star"]) for _, o in rows) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--panels", default="fast,full", help="comma-separated; the last is the reference")
    ap.add_argument("--variants", action="store_true", help="cheaper panels derived from the reference run")
    ap.add_argument("--former", action="store_true", help="also time the former default")
    ap.add_argument("--former-n", type=int, default=3)
    args = ap.parse_args()
    assert tuple(DEFAULT_METRICS) == ("deletion", "insertion", "road", "randomization")
    model = cnnlab.load_model("efficientnet_lite0")
    methods = list(DEFAULT_METHODS)
    runs = [run(model, args.images, methods, p, args.n) for p in args.panels.split(",")]
    ref, ref_res = runs[-1]
    shown = [(o["panel"], o) for o, _ in runs]
    if args.variants:
        shown += [(label, variant(ref_res, methods, *v)) for label, v in VARIANTS.items()]
    table(shown, methods)
    for label, o in shown:
        print(json.dumps({"panel": label, **{k: v for k, v in o.items() if k not in ("rank", "ci", "sanity")},
                          **compare(o, ref, methods), "rank": o["rank"]}))
    for (o, res), (o2, res2) in zip(runs, runs[1:]):
        if o["panel"].partition("@")[0] == o2["panel"].partition("@")[0]:  # one panel in two precisions
            print(json.dumps({"scores_moved": f"{o['panel']} → {o2['panel']}", **score_change(res, res2, methods)}))
    if args.former:
        former, _ = run(model, args.images, FORMER_METHODS, "full", args.former_n)
        print(json.dumps({"panel": "former default: full panel, sampling methods and iterated-gradcam",
                          **{k: v for k, v in former.items() if k not in ("rank", "ci", "sanity")}}))
        for o, _ in runs:
            print(f"{o['panel']}: {former['seconds_per_image'] / o['seconds_per_image']:.1f}× faster per image than "
                  "the former default")


if __name__ == "__main__":
    main()
