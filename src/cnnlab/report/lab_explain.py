"""Part 2 of the report: saliency maps, fooling images and class-model visualization."""
from __future__ import annotations

import statistics
from pathlib import Path

from ..core.models import weights_available
from ..jobs.classviz import classviz
from ..jobs.fool import fool
from ..jobs.saliency import saliency
from ..jobs.classify import classify
from ..jobs.evaluate import evaluate_saliency
from ..explain.classviz import REPORT_METHOD, ClassVizOptions
from .experiment import Context, Outcome, Table, experiment, fmt, image_grid

SECTION = "Visualizing neural networks"
LAB_IMAGES = ("imagenet", "imagenet_val_25.npz")
REPORT_CLASSES = ["tick", "tarantula", "gorilla"]


def _saved(result, folder: Path) -> dict:
    """Save a job's run directory inside the experiment's folder; its summary (with the file paths)."""
    result.save(folder)
    return result.summary()


def _available(names: list[str], notes: list[str]) -> list[str]:
    ok = [n for n in names if weights_available(n)]
    notes += [f"{n} left out: its weights are not on this machine (cnnlab models says where to put them)"
              for n in names if n not in ok]
    if not ok:
        raise RuntimeError("no backbone with weights available")
    return ok


# ---------------------------------------------------------------------------------------------------- saliency
@experiment("explain/Q1.1", "Saliency maps of the 25 lab images", SECTION,
            "Saliency maps (Simonyan et al.) show which pixels weigh in the decision, but imperfectly: some "
            "important pixels are dark, and context (the bed for 'pyjama', the ice for 'bear') lights up.",
            quick={"backbone": "efficientnet_lite0", "methods": ["vanilla", "gradcam"], "metrics": False},
            full={"backbone": "efficientnet_lite0", "methods": ["vanilla", "smoothgrad", "ig", "gradcam",
                                                                "smoothgrad-gradcam"],
                  "metrics": True})
def saliency_maps(ctx: Context, s: dict) -> Outcome:
    npz = str(ctx.data(*LAB_IMAGES))
    rows, metrics, figures = [], {}, []
    for method in s["methods"]:
        r = _saved(saliency(s["backbone"], [npz], method=method, metrics=s["metrics"], limit=s.get("limit"),
                            device=ctx.device, progress=ctx.progress), ctx.dir / method)
        figures.append((Path(r["figure"]), f"{method} saliency, {s['backbone']} (titles: the predicted class)"))
        metrics[method] = {"seconds": r["seconds"], "n": len(r["results"]), **r.get("summary", {})}
        m = r.get("summary")
        rows.append([method, len(r["results"]), fmt(r["seconds"] / len(r["results"]), 3)]
                    + ([fmt(m["deletion_auc"]), fmt(m["deletion_ratio"], 2), fmt(m["insertion_auc"])] if m else []))
    cols = ["method", "images", "seconds per image"]
    if s["metrics"]:
        cols += ["deletion AUC", "deletion / random", "insertion AUC"]
    n = metrics[s["methods"][0]]["n"]
    result = f"{n} maps per method ({', '.join(s['methods'])}) with {s['backbone']}."
    if s["metrics"]:
        best = min(metrics, key=lambda k: metrics[k]["deletion_ratio"])
        result += (" Faithfulness (deletion AUC / random order, lower is better): "
                   + ", ".join(f"{k} {metrics[k]['deletion_ratio']:.2f}" for k in metrics) + f"; best: {best}.")
    return Outcome(result, metrics, [Table("Methods", cols, rows)], figures)


@experiment("explain/Q1.4", "Saliency maps across backbones", SECTION,
            "VGG16's maps are much sharper in their contours than SqueezeNet's (the four hay bales are clearly "
            "visible).",
            quick={"backbones": ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"], "limit": 6,
                   "method": "vanilla", "metrics": False},
            full={"backbones": ["squeezenet1_1", "vgg16", "resnet50", "efficientnet_lite0", "efficientnet_lite2"],
                  "limit": 10, "method": "vanilla", "metrics": True})
def saliency_backbones(ctx: Context, s: dict) -> Outcome:
    npz = str(ctx.data(*LAB_IMAGES))
    notes: list[str] = []
    rows, table, metrics, titles = [], [], {}, []
    for name in _available(s["backbones"], notes):
        r = _saved(saliency(name, [npz], method=s["method"], metrics=s["metrics"], limit=s["limit"],
                            device=ctx.device, progress=ctx.progress), ctx.dir / name)
        rows.append((name, [Path(e["map"]) for e in r["results"]]))
        titles = titles or [e["target_label"].split(",")[0][:18] for e in r["results"]]
        metrics[name] = {"seconds": r["seconds"], "predictions": [e["target_label"] for e in r["results"]],
                         **r.get("summary", {})}
        m = r.get("summary")
        table.append([name, fmt(r["seconds"] / len(r["results"]), 3)] + ([fmt(m["deletion_ratio"], 2)] if m else []))
    fig = image_grid(ctx.dir / "saliency_backbones.png", rows, titles)
    cols = ["backbone", "seconds per image"] + (["deletion / random"] if s["metrics"] else [])
    return Outcome(f"{s['method']} saliency of the first {s['limit']} lab images for {', '.join(metrics)} "
                   "(each backbone explains its own predicted class).", metrics,
                   [Table("Backbones", cols, table)],
                   [(fig, f"{s['method']} saliency, one row per backbone (titles: the first backbone's prediction)")],
                   notes)


PANEL = ["deletion", "insertion", "deletion-black", "insertion-black", "deletion-pixel", "insertion-pixel", "road",
         "randomization"]


@experiment("explain/trust", "Beyond the report: can these maps be trusted?", SECTION,
            "(Not in the report.) Adebayo et al. (2018): several popular methods give nearly the same map once the "
            "model's weights are random — they explain the image, not the model. Rong et al. (2022): deletion "
            "metrics leak the shape of what is removed; ROAD imputes it from its neighbours instead.",
            quick={"backbone": "efficientnet_lite0", "limit": 4, "random_orders": 1, "panel": "fast",
                   "methods": ["vanilla", "gradcam", "layercam", "guided-backprop", "edges"],
                   "metrics": ["deletion", "insertion", "randomization"]},
            full={"backbone": "efficientnet_lite0", "limit": None, "random_orders": 4, "panel": "full",
                  "methods": ["vanilla", "smoothgrad", "ig", "gradcam", "smoothgrad-gradcam", "gradcam++", "layercam",
                              "input-x-gradient", "guided-backprop", "iterated-gradcam", "scorecam", "rise", "edges"],
                  "metrics": PANEL})
def trust(ctx: Context, s: dict) -> Outcome:
    """The methods × metrics leaderboard on the lab images (the image's edge map as the control the randomization
    check must fail), the method it recommends, and the maps of one image as the model is randomized."""
    from ..explain.verdicts import MARGIN
    from ..explain.leaderboard import recommended

    npz = str(ctx.data(*LAB_IMAGES))
    r = evaluate_saliency(s["backbone"], [npz], methods=s["methods"], metrics=s["metrics"], limit=s["limit"],
                          random_orders=s["random_orders"], panel=s["panel"], device=ctx.device,
                          progress=ctx.progress, figure_steps=True)
    r.save(ctx.dir)
    table = r.table()
    text = f"{len(r)} lab images, {s['backbone']}: {len(s['methods'])} methods × {len(s['metrics'])} metrics."
    ranked = [row for row in r.leaderboard if "aggregate_rank" in row]
    if ranked:
        best = min(ranked, key=lambda row: row["aggregate_rank"])
        text += f" Best mean rank over the faithfulness panel: {best['method']} ({best['aggregate_rank']:.2f})."
    if "randomization" in s["metrics"]:
        failing = [row["method"] for row in r.leaderboard if row.get("sanity") == "fails"]
        text += (f" Fail the randomization check (the same-image rank correlation above the mismatched-image null by "
                 f"more than {MARGIN}): " + (", ".join(failing) if failing else "none") + ".")
    pick = recommended(r.leaderboard)
    if pick:
        text += f" Recommended here: {pick['why']}."
    figures = [(ctx.dir / "leaderboard.png", "mean curves per method (the dashed line: random patch orders)")]
    if (ctx.dir / "randomization.png").is_file():
        figures.append((ctx.dir / "randomization.png", "one image's maps as the model is randomized, from the "
                        "logits down (Adebayo et al.'s figure)"))
    return Outcome(text, r.summary(), [Table("Leaderboard: mean [95 % bootstrap interval] #rank", table[0],
                                             table[1:])], figures)


# ------------------------------------------------------------------------------------------------------ fooling
PHOTOS = ("imagenet", "foolbox20")  # ImageNet photos at their own sizes (512×512 and 1024×683)


@experiment("explain/Q2.5", "Fooling images (targeted adversarial examples)", SECTION,
            "The target class is reached after only a few iterations; the changes fool the network and are "
            "invisible to the naked eye.",
            quick={"backbones": ["efficientnet_lite0"], "methods": ["minimal", "ascent"], "limit": 10, "seed": 0},
            full={"backbones": ["efficientnet_lite0", "vgg16", "squeezenet1_1"], "methods": ["minimal", "ascent",
                                                                                              "pgd"],
                  "limit": 20, "seed": 0})
def fooling(ctx: Context, s: dict) -> Outcome:
    """Photos at their own sizes; the saved PNGs are then read back by `classify`, as a user would."""
    photos = str(ctx.data(*PHOTOS))
    notes: list[str] = []
    rows, metrics, figures = [], {}, []
    for name in _available(s["backbones"], notes):
        for method in s["methods"]:
            result = fool(name, [photos], target="random", seed=s["seed"], method=method, limit=s["limit"],
                          device=ctx.device, progress=ctx.progress)
            r = _saved(result, ctx.dir / f"{name}-{method}")
            back = classify(name, [e["png"] for e in r["results"]], topk=1, device=ctx.device).results
            hits = sum(b["top"][0]["index"] == e["target"] for b, e in zip(back, r["results"]))
            m = r["summary"] | {"classify_on_target": hits / len(back)}
            metrics[f"{name}/{method}"] = {**m, "seconds": r["seconds"]}
            rows.append([name, method, fmt(m["success_rate"], 2), f"{hits}/{len(back)}",
                         f"{m['median_linf'] * 255:.2f}/255", fmt(m["median_l2"]), f"{m['median_iterations']:g}",
                         fmt(r["seconds"] / m["n"], 2)])
            figures.append((Path(r["figure"]), f"{method}, {name}: original, adversarial, difference ×10 "
                                                "(rows: prediction before → after)"))
    key = next(iter(metrics))
    first = metrics[key]
    return Outcome(f"Random targets on photos at their own sizes; each saved 8-bit PNG read back by `cnnlab classify`: "
                   f"{first['classify_on_target']:.0%} on the target, median L∞ {first['median_linf'] * 255:.2f}/255 "
                   f"after a median {first['median_iterations']:g} iterations ({key}).", metrics,
                   [Table("Fooling (success: the saved file, read back, gives the target)",
                          ["backbone", "method", "success", "classify on the saved PNGs", "median L∞", "median L2",
                           "median iterations", "seconds per image"], rows)], figures, notes)


@experiment("explain/Q2.7", "Do fooling images transfer to another model? And on MNIST?", SECTION,
            "Fooling images are specific to the network they were made on (transfer: Liu et al. 2016); on MNIST the "
            "changes would be visible to the naked eye.",
            quick={"limit": 6, "eps": 16 / 255, "iters": 50, "to": "efficientnet_lite2", "seed": 0,
                   "attacks": [["efficientnet_lite0", "pgd"], ["efficientnet_lite0+efficientnet_lite1", "pgd"],
                               ["efficientnet_lite0+efficientnet_lite1", "transfer"]],
                   "mnist_n": 10, "mnist_iters": 3000},
            full={"limit": 20, "eps": 16 / 255, "iters": 100, "to": "efficientnet_lite2", "seed": 0,
                  "attacks": [["efficientnet_lite0", "pgd"], ["efficientnet_lite0", "transfer"],
                              ["efficientnet_lite0+efficientnet_lite1", "pgd"],
                              ["efficientnet_lite0+efficientnet_lite1", "transfer"]],
                  "mnist_n": 20, "mnist_iters": 3000})
def transfer_and_mnist(ctx: Context, s: dict) -> Outcome:
    photos = str(ctx.data(*PHOTOS))
    rows, metrics, figures = [], {}, []
    for spec, method in s["attacks"]:
        r = _saved(fool(spec, [photos], target="random", seed=s["seed"], method=method, eps=s["eps"],
                        max_iters=s["iters"], limit=s["limit"], eval_on=[s["to"]], device=ctx.device,
                        progress=ctx.progress), ctx.dir / f"{spec}-{method}")
        t = r["transfer"][s["to"]]
        metrics[f"{spec}/{method}"] = {"white_box_success": r["summary"]["success_rate"], **t,
                                       "seconds_per_image": r["seconds"] / r["summary"]["n"]}
        rows.append([spec, method, fmt(r["summary"]["success_rate"], 2), fmt(t["targeted_rate"], 2),
                     fmt(t["untargeted_rate"], 2), fmt(r["seconds"] / r["summary"]["n"], 1)])
    best = max(metrics, key=lambda k: metrics[k]["targeted_rate"])
    digits, mnist_rows = _mnist_fooling(ctx, s, metrics)
    figures.append((Path(digits["figure"]), "MNIST digits fooled by the smallest change (mnist_cnn): original, "
                                            "adversarial, difference ×10 — here the change shows"))
    return Outcome(f"At ε = {s['eps'] * 255:.0f}/255, targeted transfer to {s['to']} (not attacked): best "
                   f"{metrics[best]['targeted_rate']:.0%} ({best}); untargeted {metrics[best]['untargeted_rate']:.0%}. "
                   f"The smallest fooling change is {mnist_rows[0][2]} on digits vs {mnist_rows[1][2]} on photos.",
                   metrics, [Table(f"Transfer to {s['to']} of targeted fooling images ({s['limit']} photos, random "
                                   f"targets, ε = {s['eps'] * 255:.0f}/255)",
                                   ["attacked", "method", "white-box success", "targeted transfer",
                                    "untargeted transfer", "seconds per image"], rows),
                             Table("The smallest fooling change (minimal method, random targets)",
                                   ["images", "model", "median L∞", "median RMS change"], mnist_rows)], figures)


def _mnist_fooling(ctx: Context, s: dict, metrics: dict):
    """Minimal fooling on MNIST test digits (the shipped mnist_cnn) and on the photos (Lite0), side by side."""
    from ..core.data import load_mnist

    X, _ = load_mnist(ctx.data("MNIST").parent, train=False)
    rows = []
    digits = None
    for label, model, images, iters in (("MNIST digits", "mnist_cnn", X[:s["mnist_n"]].float() / 255,
                                         s["mnist_iters"]),
                                        ("ImageNet photos", "efficientnet_lite0", [str(ctx.data(*PHOTOS))], 200)):
        res = fool(model, images, target="random", seed=s["seed"], max_iters=iters, limit=s["mnist_n"],
                   device=ctx.device, progress=ctx.progress)
        r = _saved(res, ctx.dir / f"minimal-{model}")
        ok = res.success
        rms = [255 * float(res.l2[k]) / res.adversarials[k].numel() ** 0.5 for k in range(len(ok)) if ok[k]]
        linf = statistics.median((res.linf[ok] * 255).tolist())
        metrics[f"minimal/{model}"] = {"success_rate": float(ok.float().mean()), "median_linf_255": linf,
                                       "median_rms_255": statistics.median(rms)}
        rows.append([label, model, f"{linf:.0f}/255", f"{statistics.median(rms):.2f}/255"])
        digits = digits or r
    return digits, rows


# ----------------------------------------------------------------------------------------------------- classviz
# Q3's experiments keep the report's method (pixels, L2, blur, jitter 16) with the 4 scaled and rotated copies of
# cnnlab 0.3; "the report's (no augmentation)" takes them off.
PIXEL_METHOD = {**ClassVizOptions().to_dict(), **REPORT_METHOD, "augment": 4}


def _classviz(ctx: Context, classes: list[str], backbone: str, config: dict, judge: str) -> dict:
    """A classviz run shared across experiments (Q3.8 and Q3.11 draw the same Lite0 images)."""
    key = {"classes": classes, "backbone": backbone, "config": config, "judge": judge}
    _, summary = ctx.shared("classviz", key, lambda out: _saved(classviz(
        backbone, classes, judge=judge, device=ctx.device, progress=ctx.progress, **config), out))
    return summary


def _ranks(summary: dict) -> list[int]:
    return [r["judge"]["target_rank"] for r in summary["results"]]


@experiment("explain/Q3.8", "Class-model visualization", SECTION,
            "From noise, after 200 iterations, the contours of the target class's objects can be made out: the "
            "images represent the classes fairly honestly.",
            quick={"classes": REPORT_CLASSES, "backbone": "efficientnet_lite0", "judge": "efficientnet_lite2",
                   "config": {}},
            full={"classes": REPORT_CLASSES + ["goldfish", "school bus", "pizza", "volcano", "flamingo", "lemon",
                                               "zebra"],
                  "backbone": "efficientnet_lite0", "judge": "efficientnet_lite2", "config": {}})
def class_visualization(ctx: Context, s: dict) -> Outcome:
    config = {**PIXEL_METHOD, **s["config"]}
    r = _classviz(ctx, s["classes"], s["backbone"], config, s["judge"])
    rows = [[x["class"].split(",")[0], fmt(x["target_prob"]), fmt(x["judge"]["target_prob"]), x["judge"]["target_rank"]]
            for x in r["results"]]
    top5 = sum(k <= 5 for k in _ranks(r))
    return Outcome(f"{s['backbone']}, {config['iters']} iterations: a different model ({s['judge']}) ranks the class "
                   f"in its top 5 for {top5} of {len(rows)} classes (ranks {', '.join(map(str, _ranks(r)))}).",
                   {"results": r["results"], "judge_top5": top5, "config": config},
                   [Table("Recognizability", ["class", f"p ({s['backbone']})", f"p ({s['judge']})",
                                              f"rank ({s['judge']})"], rows)],
                   [(Path(r["figure"]), f"Class visualizations, {s['backbone']}")])


@experiment("explain/Q3.9", "Learning rate 1 vs 10, and the regularization knobs", SECTION,
            "A larger learning rate enriches the colours and amplifies the contours; beyond 200 iterations the "
            "images change little (lr 1 and 10, 500 iterations, L2 0.1).",
            quick={"class": "gorilla", "backbone": "efficientnet_lite0", "judge": "efficientnet_lite2", "iters": 200,
                   "variants": {"lr 1 (default)": {}, "lr 10": {"lr": 10.0}, "no L2": {"l2": 0.0},
                                "the report's (no augmentation)": {"augment": 0}}},
            full={"class": "gorilla", "backbone": "efficientnet_lite0", "judge": "efficientnet_lite2", "iters": 500,
                  "variants": {"lr 1 (default)": {}, "lr 10": {"lr": 10.0}, "no L2": {"l2": 0.0},
                               "L2 1": {"l2": 1.0}, "no blur": {"blur_every": 0}, "no jitter": {"jitter": 0},
                               "the report's (no augmentation)": {"augment": 0}}})
def classviz_knobs(ctx: Context, s: dict) -> Outcome:
    rows, files, metrics = [], [], {}
    for name, change in s["variants"].items():
        config = {**PIXEL_METHOD, **s.get("config", {}), "iters": s["iters"], **change}
        r = _classviz(ctx, [s["class"]], s["backbone"], config, s["judge"])["results"][0]
        metrics[name] = {"config": change, "target_prob": r["target_prob"], "judge": r["judge"]}
        rows.append([name, fmt(r["target_prob"]), fmt(r["judge"]["target_prob"]), r["judge"]["target_rank"]])
        files.append(Path(r["images"][0]))
    fig = image_grid(ctx.dir / "knobs.png", [(s["class"], files)], list(s["variants"]))
    best = min(metrics, key=lambda k: metrics[k]["judge"]["target_rank"])
    return Outcome(f"'{s['class']}', {s['iters']} iterations: the judge ({s['judge']}) recognizes it best with "
                   f"{best} (rank {metrics[best]['judge']['target_rank']}).", metrics,
                   [Table("Settings", ["setting", f"p ({s['backbone']})", f"p ({s['judge']})",
                                       f"rank ({s['judge']})"], rows)], [(fig, "One image per setting")])


@experiment("explain/Q3.10", "Class visualization over the iterations", SECTION,
            "Features such as bears' heads, eyes and snouts appear progressively over the iterations.",
            quick={"class": "brown bear", "backbone": "efficientnet_lite0", "judge": "efficientnet_lite2",
                   "frames": [10, 25, 50, 100, 200]},
            full={"class": "brown bear", "backbone": "efficientnet_lite0", "judge": "efficientnet_lite2",
                  "frames": [10, 25, 50, 100, 200, 300, 500]})
def classviz_frames(ctx: Context, s: dict) -> Outcome:
    config = {**PIXEL_METHOD, **s.get("config", {}), "iters": max(s["frames"]), "frames": s["frames"]}
    r = _classviz(ctx, [s["class"]], s["backbone"], config, s["judge"])
    x = r["results"][0]
    return Outcome(f"'{s['class']}' with {s['backbone']}: frames at iterations {', '.join(map(str, s['frames']))}; "
                   f"final probability {x['target_prob']:.3f}, judge rank {x['judge']['target_rank']}.",
                   {"result": x}, [], [(Path(r["frames_figure"]), "Frames over the iterations")])


@experiment("explain/Q3.11", "The same classes across backbones", SECTION,
            "tick, tarantula, gorilla with SqueezeNet, VGG16 and ResNet50: VGG16 close to SqueezeNet but more "
            "representative; ResNet50 gives sharp, non-psychedelic images where the classes are easy to see.",
            quick={"classes": REPORT_CLASSES, "backbones": ["efficientnet_lite0", "efficientnet_lite1"],
                   "judge": "efficientnet_lite2", "config": {}},
            full={"classes": REPORT_CLASSES, "backbones": ["squeezenet1_1", "vgg16", "resnet50", "efficientnet_lite0"],
                  "judge": "efficientnet_lite2", "config": {}})
def classviz_backbones(ctx: Context, s: dict) -> Outcome:
    notes: list[str] = []
    config = {**PIXEL_METHOD, **s["config"]}
    rows, grid, metrics = [], [], {}
    for name in _available(s["backbones"], notes):
        r = _classviz(ctx, s["classes"], name, config, s["judge"])
        ranks = _ranks(r)
        metrics[name] = {"judge_ranks": ranks, "target_probs": [x["target_prob"] for x in r["results"]]}
        rows.append([name] + [str(k) for k in ranks])
        grid.append((name, [Path(x["images"][0]) for x in r["results"]]))
    fig = image_grid(ctx.dir / "backbones.png", grid, s["classes"])
    return Outcome(f"Judge ({s['judge']}) ranks of {', '.join(s['classes'])}: "
                   + "; ".join(f"{n} {', '.join(map(str, m['judge_ranks']))}" for n, m in metrics.items()) + ".",
                   metrics, [Table(f"Rank of the class for the judge ({s['judge']}; 1 = its top class)",
                                   ["backbone"] + s["classes"], rows)],
                   [(fig, "One row per backbone")], notes)
