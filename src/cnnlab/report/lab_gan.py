"""Part 3 of the report: DCGAN on faces and the latent size, cDCGAN on MNIST (grids, without y in D), and the
fully-connected cGAN with the G/D update ratio."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..gan.evaluation import evaluate, evaluate_images, frechet_distance
from ..gan.training import train
from ..gan.training import GanConfig, load_training_data
from .experiment import Context, Outcome, Table, experiment, fmt, image_grid

SECTION = "Generative adversarial networks"


def _train(ctx: Context, **settings) -> tuple[Path, dict]:
    """A training run shared by every experiment that needs the same config (Q2-2.10's cDCGAN serves Q2-2.11 and
    Q2-3.12)."""
    config = GanConfig(data_root=str(ctx.data_root) if ctx.data_root else None, device=ctx.device, **settings)
    key = {k: v for k, v in asdict(config).items() if k != "device"}  # the same run on any device
    return ctx.shared("gan", key, lambda out: {
        **train(config=config, out=out, progress=ctx.progress).summary(), "config": asdict(config)})


def _grids(folder: Path) -> list[Path]:
    return sorted(folder.glob("grid_*.png"))


def _iteration(grid: Path) -> int:
    return int(grid.stem.split("_")[1])


# ----------------------------------------------------------------------------------------------------- DCGAN
def _faces(ctx: Context):
    """The face images as uint8 (N,3,64,64), decoded once per experiment."""
    ctx.data("celeba64", "faces")
    config = GanConfig(model="dcgan", data="celeba64", data_root=str(ctx.data_root))
    return ctx.memo("faces", lambda: load_training_data(config)[0])


def _face_fd(ctx: Context, folder: Path, s: dict) -> float:
    key = {"checkpoint": str(folder.relative_to(ctx.report_dir)), "n": s["fd_n"], "backbone": s["fd_backbone"]}
    _, r = ctx.shared("fd-faces", key, lambda out: evaluate_images(
        folder / "checkpoint.pt", _faces(ctx), n=s["fd_n"], backbone=s["fd_backbone"], progress=ctx.progress))
    return r["fd_backbone"]


def _real_fd(ctx: Context, s: dict) -> float:
    """Two disjoint sets of real faces: the distance a perfect generator would score with this n."""
    def run(out):
        faces = _faces(ctx).float() / 255
        return {"fd": frechet_distance(faces[:s["fd_n"]], faces[s["fd_n"]:2 * s["fd_n"]], s["fd_backbone"],
                                       progress=ctx.progress)}

    return ctx.shared("fd-real-faces", {"n": s["fd_n"], "backbone": s["fd_backbone"]}, run)[1]["fd"]


DCGAN_QUICK = {"nz": 100, "ngf": 32, "ndf": 32, "batch": 64, "iters": 300, "fd_n": 400,
               "fd_backbone": "efficientnet_lite0"}
DCGAN_FULL = {"nz": 100, "ngf": 64, "ndf": 64, "batch": 128, "iters": 5000, "fd_n": 2000,
              "fd_backbone": "efficientnet_lite0"}
_TRAIN_KEYS = ("nz", "ngf", "ndf", "batch", "iters")


def _dcgan(ctx: Context, s: dict, nz: int) -> tuple[Path, dict]:
    settings = {k: s[k] for k in _TRAIN_KEYS} | {"nz": nz}
    return _train(ctx, model="dcgan", data="celeba64", grid_at=sorted({max(1, s["iters"] // 3), max(1, 2 * s["iters"] // 3)}),
                  checkpoint_every=max(s["iters"] // 4, 1), **settings)


@experiment("gan/Q1-2.4", "DCGAN on faces, with the loss curves", SECTION,
            "The generated images have the expected shape, though low-resolution and blurry; shapes appear from the "
            "first iterations; the two losses are unstable.", quick=DCGAN_QUICK, full=DCGAN_FULL)
def dcgan_faces(ctx: Context, s: dict) -> Outcome:
    folder, r = _dcgan(ctx, s, s["nz"])
    fd, ref = _face_fd(ctx, folder, s), _real_fd(ctx, s)
    grids = _grids(folder)
    return Outcome(f"{s['iters']} iterations × {s['batch']} faces (ngf = ndf = {s['ngf']}, nz = {s['nz']}), "
                   f"{r['iters_per_s']:.2f} it/s: Fréchet distance to real faces in {s['fd_backbone']} features "
                   f"{fd:.1f} (two sets of real faces: {ref:.1f}).",
                   {"fd": fd, "fd_real_vs_real": ref, "iters_per_s": r["iters_per_s"], "final": r["final"]},
                   [Table("Training", ["iterations", "batch", "nz", "FD (generated vs real)", "FD (real vs real)",
                                       "final loss_D", "final loss_G"],
                          [[s["iters"], s["batch"], s["nz"], fmt(fd, 1), fmt(ref, 1), fmt(r["final"]["loss_D"]),
                            fmt(r["final"]["loss_G"])]])],
                   [(g, f"Fixed-noise samples, iteration {_iteration(g)}") for g in grids]
                   + [(folder / "loss_curves.png", "Losses and D outputs over the iterations")])


@experiment("gan/Q1-2.5", "DCGAN with a latent size of 100 vs 10", SECTION,
            "With nz = 10 the results are not very different to the eye (low resolution), though theoretically "
            "simpler: it should be hard to model the data with so small a vector.",
            quick=DCGAN_QUICK | {"nzs": [100, 10]}, full=DCGAN_FULL | {"nzs": [100, 10]})
def dcgan_latent(ctx: Context, s: dict) -> Outcome:
    ref = _real_fd(ctx, s)
    rows, metrics, finals = [], {}, []
    for nz in s["nzs"]:
        folder, r = _dcgan(ctx, s, nz)
        fd = _face_fd(ctx, folder, s)
        metrics[f"nz={nz}"] = {"fd": fd, "final": r["final"]}
        rows.append([nz, fmt(fd, 1), fmt(r["final"]["loss_D"]), fmt(r["final"]["loss_G"])])
        finals.append(_grids(folder)[-1])
    fig = image_grid(ctx.dir / "latent_sizes.png", [(f"nz = {nz}", [g]) for nz, g in zip(s["nzs"], finals)], [""])
    text = ", ".join(f"nz = {nz}: {metrics[f'nz={nz}']['fd']:.1f}" for nz in s["nzs"])
    return Outcome(f"Fréchet distance to real faces in {s['fd_backbone']} features after {s['iters']} iterations: "
                   f"{text} (real vs real: {ref:.1f}; lower is better).", metrics | {"fd_real_vs_real": ref},
                   [Table("Latent size", ["nz", "FD (generated vs real)", "final loss_D", "final loss_G"], rows)],
                   [(fig, "Final fixed-noise samples, one row per latent size")])


# ----------------------------------------------------------------------------------------------------- MNIST
METRIC_COLUMNS = ["conditional accuracy", "FD", "KID", "precision", "recall", "density", "coverage"]


def _metric_cells(ev: dict) -> list[str]:
    """A generator's row of METRIC_COLUMNS (MNIST classifier features; gan evaluate's metrics)."""
    return [fmt(ev["conditional_accuracy"]), fmt(ev["fd"], 1), fmt(ev["kid"], 3), fmt(ev["precision"], 2),
            fmt(ev["recall"], 2), fmt(ev["density"], 2), fmt(ev["coverage"], 2)]


def _evaluate(ctx: Context, checkpoint: Path | None, n: int) -> dict:
    key = {"checkpoint": str(checkpoint.relative_to(ctx.report_dir)) if checkpoint else "shipped", "n": n,
           "metrics": 2}  # 2: KID, precision/recall, density/coverage, per-class FD
    return ctx.shared("evaluate", key, lambda out: evaluate(  # CAS (two classifiers trained per call) left out here
        checkpoint, data_root=str(ctx.data_root), n=n, cas=False).summary())[1]


def _mnist(ctx: Context, s: dict, **changes) -> tuple[Path, dict, dict]:
    if ctx.data_root is None:  # with a root, torchvision downloads MNIST where it is absent and there is internet
        ctx.data("MNIST")
    settings = {"model": "cdcgan", "data": "mnist", "batch": s["batch"], "iters": s["iters"],
                "grid_at": s["grid_at"], "checkpoint_every": s["iters"]} | changes
    folder, r = _train(ctx, **settings)
    return folder, r, _evaluate(ctx, folder / "checkpoint.pt", s["eval_n"])


MNIST_QUICK = {"iters": 600, "batch": 64, "grid_at": [100, 300, 600], "eval_n": 1000}
MNIST_FULL = {"iters": 7800, "batch": 128, "grid_at": [1000, 3000, 5000, 7800], "eval_n": 2000}


@experiment("gan/Q2-2.10", "cDCGAN on MNIST: one row per digit, over the iterations", SECTION,
            "Each row conditioned on its digit: very convincing results (grids at 1000, 3000, 5000 and 7800 "
            "iterations); the two losses converge together.", quick=MNIST_QUICK, full=MNIST_FULL)
def cdcgan_grids(ctx: Context, s: dict) -> Outcome:
    folder, r, ev = _mnist(ctx, s)
    shipped = _evaluate(ctx, None, s["eval_n"])
    rows = [[f"cDCGAN, {s['iters']} it × {s['batch']} (this run)", *_metric_cells(ev)],
            ["cDCGAN shipped with cnnlab (8000 it × 128)", *_metric_cells(shipped)]]
    return Outcome(f"After {s['iters']} iterations the generated digits are the digit asked for "
                   f"{ev['conditional_accuracy']:.1%} of the time (judged by cnnlab's MNIST classifier, test accuracy "
                   f"{ev['classifier_test_accuracy']:.4f}); the shipped generator: {shipped['conditional_accuracy']:.1%}.",
                   {"run": ev, "shipped": shipped, "iters_per_s": r["iters_per_s"]},
                   [Table("Conditional accuracy and the field's metrics (MNIST classifier features)",
                          ["generator", *METRIC_COLUMNS], rows),
                    Table("Per digit (this run)", [str(k) for k in range(10)],
                          [[fmt(ev["per_label_accuracy"][str(k)], 2) for k in range(10)]])],
                   [(g, f"Iteration {_iteration(g)}: row k asks for digit k") for g in _grids(folder)]
                   + [(folder / "loss_curves.png", "Losses and D outputs")])


@experiment("gan/Q2-2.11", "cDCGAN without y in the discriminator", SECTION,
            "Without y in D, the generator makes digits other than the one asked for: D cannot penalize it, not "
            "knowing the condition.", quick=MNIST_QUICK, full=MNIST_FULL)
def cdcgan_no_label(ctx: Context, s: dict) -> Outcome:
    with_y, _, ev = _mnist(ctx, s)
    without_y, _, ev0 = _mnist(ctx, s, label_in_d=False)
    rows = [["y in G and D", *_metric_cells(ev)], ["y in G only", *_metric_cells(ev0)]]
    fig = image_grid(ctx.dir / "with_without_y.png", [("y in D", [_grids(with_y)[-1]]),
                                                        ("no y in D", [_grids(without_y)[-1]])], [""])
    return Outcome(f"Conditional accuracy {ev['conditional_accuracy']:.1%} with y in D, "
                   f"{ev0['conditional_accuracy']:.1%} without (chance: 10%); Fréchet distance to real digits "
                   f"{ev['fd_mnist']:.1f} with, {ev0['fd_mnist']:.1f} without.", {"with_y": ev, "without_y": ev0},
                   [Table(f"{s['iters']} iterations each (MNIST classifier features)",
                          ["discriminator input", *METRIC_COLUMNS], rows)],
                   [(fig, "Final grids (row k asks for digit k)")])


@experiment("gan/Q2-3.12", "Fully-connected cGAN vs cDCGAN, and the G/D update ratio", SECTION,
            "The cGAN is weaker than the cDCGAN: after a while D becomes so strong that G under-learns; the same "
            "happens when one network is updated much more than the other (nb_update_G/D).",
            quick=MNIST_QUICK | {"ratios": [[1, 1], [1, 3], [3, 1]]},
            full=MNIST_FULL | {"ratios": [[1, 1], [1, 5], [5, 1]]})
def cgan_ratio(ctx: Context, s: dict) -> Outcome:
    _, r, ev = _mnist(ctx, s)
    rows = [["cDCGAN", "1 / 1", *_metric_cells(ev), fmt(r["final"]["loss_D"]), fmt(r["final"]["loss_G"])]]
    metrics, figures = {"cdcgan g1 d1": ev}, []
    for g, d in s["ratios"]:
        folder, rg, e = _mnist(ctx, s, model="cgan", g_steps=g, d_steps=d)
        metrics[f"cgan g{g} d{d}"] = e | {"final": rg["final"]}
        rows.append(["cGAN (MLP)", f"{g} / {d}", *_metric_cells(e), fmt(rg["final"]["loss_D"]),
                     fmt(rg["final"]["loss_G"])])
        figures += [(_grids(folder)[-1], f"cGAN, G/D updates {g}/{d}: final grid"),
                    (folder / "loss_curves.png", f"cGAN, G/D updates {g}/{d}: losses")]
    c = metrics[f"cgan g{s['ratios'][0][0]} d{s['ratios'][0][1]}"]
    return Outcome(f"At {s['iters']} iterations: cDCGAN {ev['conditional_accuracy']:.1%} conditional accuracy "
                   f"(FD {ev['fd_mnist']:.1f}) vs cGAN {c['conditional_accuracy']:.1%} (FD {c['fd_mnist']:.1f}); "
                   "the G/D ratios are in the table.", metrics,
                   [Table("Models and update ratios (MNIST classifier features)",
                          ["model", "G / D updates", *METRIC_COLUMNS, "final loss_D", "final loss_G"], rows)],
                   figures)
