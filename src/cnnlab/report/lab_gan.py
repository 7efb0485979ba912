"""Part 3 of the report: DCGAN on faces and the latent size, cDCGAN on MNIST (grids, without y in D), and the
fully-connected cGAN with the G/D update ratio."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..gan.evaluation import evaluate, evaluate_images, frechet_distance
from ..gan.training import train
from ..gan.training import GanConfig, load_training_data
from .experiment import Context, Outcome, Table, experiment, fmt, image_grid, mean_sd

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


def _face_scores(ctx: Context, folder: Path, s: dict) -> dict:
    """Every metric of `gan evaluate` for a face generator, in the ImageNet backbone's features."""
    key = {"checkpoint": str(folder.relative_to(ctx.report_dir)), "n": s["fd_n"], "backbone": s["fd_backbone"]}
    return ctx.shared("fd-faces", key, lambda out: evaluate_images(
        folder / "checkpoint.pt", _faces(ctx), n=s["fd_n"], backbone=s["fd_backbone"], progress=ctx.progress))[1]


def _real_fd(ctx: Context, s: dict) -> float:
    """Two disjoint sets of real faces: the distance a perfect generator would score with this n."""
    def run(out):
        faces = _faces(ctx).float() / 255
        return {"fd": frechet_distance(faces[:s["fd_n"]], faces[s["fd_n"]:2 * s["fd_n"]], s["fd_backbone"],
                                       progress=ctx.progress)}

    return ctx.shared("fd-real-faces", {"n": s["fd_n"], "backbone": s["fd_backbone"]}, run)[1]["fd"]


# seeds: each comparison is trained once per seed and shown as mean ± sd (one seed: the quick mode's 30-minute budget)
DCGAN_QUICK = {"nz": 100, "ngf": 32, "ndf": 32, "batch": 64, "iters": 300, "fd_n": 400,
               "fd_backbone": "efficientnet_lite0", "seeds": [0]}
DCGAN_FULL = {"nz": 100, "ngf": 64, "ndf": 64, "batch": 128, "iters": 5000, "fd_n": 2000,
              "fd_backbone": "efficientnet_lite0", "seeds": [0, 1, 2]}
_TRAIN_KEYS = ("nz", "ngf", "ndf", "batch", "iters")


def _dcgan(ctx: Context, s: dict, nz: int, seed: int = 0) -> tuple[Path, dict]:
    settings = {k: s[k] for k in _TRAIN_KEYS} | {"nz": nz, "seed": seed}
    return _train(ctx, model="dcgan", data="celeba64", grid_at=sorted({max(1, s["iters"] // 3), max(1, 2 * s["iters"] // 3)}),
                  checkpoint_every=max(s["iters"] // 4, 1), **settings)


@experiment("gan/Q1-2.4", "DCGAN on faces, with the loss curves", SECTION,
            "The generated images have the expected shape, though low-resolution and blurry; shapes appear from the "
            "first iterations; the two losses are unstable.", quick=DCGAN_QUICK, full=DCGAN_FULL)
def dcgan_faces(ctx: Context, s: dict) -> Outcome:
    folder, r = _dcgan(ctx, s, s["nz"])
    fd, ref = _face_scores(ctx, folder, s)["fd_backbone"], _real_fd(ctx, s)
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
        runs = [_dcgan(ctx, s, nz, seed) for seed in s["seeds"]]
        ev = over_seeds([_face_scores(ctx, folder, s) | {"final": r["final"]} for folder, r in runs])
        metrics[f"nz={nz}"] = ev
        rows.append([nz, *_metric_cells(ev, FACE_KEYS), _cell(ev, "final.loss_D"), _cell(ev, "final.loss_G")])
        finals.append(_grids(runs[0][0])[-1])
    fig = image_grid(ctx.dir / "latent_sizes.png", [(f"nz = {nz}", [g]) for nz, g in zip(s["nzs"], finals)], [""])
    text = ", ".join(f"nz = {nz}: {_cell(metrics[f'nz={nz}'], 'fd', 1)}" for nz in s["nzs"])
    return Outcome(f"Fréchet distance to real faces in {s['fd_backbone']} features after {s['iters']} iterations"
                   f"{_seed_words(s)}: {text} (real vs real: {ref:.1f}; lower is better).",
                   metrics | {"fd_real_vs_real": ref},
                   [Table(f"Latent size ({s['fd_backbone']} features{_seed_words(s)})",
                          ["nz", *[c for _, c, _ in FACE_KEYS], "final loss_D", "final loss_G"], rows)],
                   [(fig, f"Final fixed-noise samples, one row per latent size (seed {s['seeds'][0]})")])


# ----------------------------------------------------------------------------------------------------- seeds
def over_seeds(runs: list[dict]) -> dict:
    """One seed's scores as they are; several seeds' as their mean, with `sd` (sample standard deviation, by the
    same keys) and `per_seed` (every run's scores). Nested numbers (per-label accuracy, final losses) are averaged
    too."""
    if len(runs) == 1:
        return runs[0]

    def mean(values: list):
        if isinstance(values[0], dict):
            return {k: mean([v[k] for v in values]) for k in values[0] if all(k in v for v in values)}
        if isinstance(values[0], (int, float)) and not isinstance(values[0], bool):
            return float(np.mean(values))
        return values[0]

    def sd(values: list):
        if isinstance(values[0], dict):
            out = {k: sd([v[k] for v in values]) for k in values[0] if all(k in v for v in values)}
            return {k: v for k, v in out.items() if v is not None and v != {}}
        numbers = isinstance(values[0], (int, float)) and not isinstance(values[0], bool)
        return float(np.std(values, ddof=1)) if numbers else None

    return {**mean(runs), "sd": sd(runs), "per_seed": runs}


def _get(d: dict, key: str):
    for part in key.split("."):
        d = d[part]
    return d


def _cell(ev: dict, key: str, digits: int = 3) -> str:
    """'mean ± sd' over the seeds (a plain number for one seed)."""
    if "per_seed" in ev:
        return mean_sd([_get(r, key) for r in ev["per_seed"]], digits)
    return fmt(_get(ev, key), digits)


def _seed_words(s: dict) -> str:
    n = len(s["seeds"])
    return f", mean ± sd over {n} seeds" if n > 1 else ""


# ----------------------------------------------------------------------------------------------------- MNIST
# (key, column, digits) of gan evaluate's metrics, as the tables show them
FACE_KEYS = [("fd", "FD", 1), ("kid", "KID", 3), ("precision", "precision", 2), ("recall", "recall", 2),
             ("density", "density", 2), ("coverage", "coverage", 2)]
DIGIT_KEYS = [("conditional_accuracy", "conditional accuracy", 3), *FACE_KEYS]
CAS_KEYS = [("cas", "CAS", 3), ("cas_real", "CAS, real digits", 3)]


def _metric_cells(ev: dict, keys=DIGIT_KEYS) -> list[str]:
    """A generator's row of the metrics in `keys` (mean ± sd where it was trained with several seeds)."""
    return [_cell(ev, k, d) if k in ev else "—" for k, _, d in keys]


def _digit_keys(s: dict) -> list:
    return DIGIT_KEYS + (CAS_KEYS if s["cas"] else [])


def _evaluate(ctx: Context, checkpoint: Path | None, n: int, with_cas: bool = False) -> dict:
    key = {"checkpoint": str(checkpoint.relative_to(ctx.report_dir)) if checkpoint else "shipped", "n": n,
           "metrics": 2, "cas": with_cas}  # 2: KID, precision/recall, density/coverage, per-class FD
    return ctx.shared("evaluate", key, lambda out: evaluate(  # CAS trains two classifiers per call: full mode only
        checkpoint, data_root=str(ctx.data_root), n=n, cas=with_cas).summary())[1]


def _mnist(ctx: Context, s: dict, seed: int = 0, **changes) -> tuple[Path, dict, dict]:
    if ctx.data_root is None:  # with a root, torchvision downloads MNIST where it is absent and there is internet
        ctx.data("MNIST")
    settings = {"model": "cdcgan", "data": "mnist", "batch": s["batch"], "iters": s["iters"], "seed": seed,
                "grid_at": s["grid_at"], "checkpoint_every": s["iters"]} | changes
    folder, r = _train(ctx, **settings)
    return folder, r, _evaluate(ctx, folder / "checkpoint.pt", s["eval_n"], s["cas"]) | {"final": r["final"]}


def _mnist_seeds(ctx: Context, s: dict, **changes) -> tuple[list[Path], dict, dict]:
    """The same training once per seed: (folders, the first run's summary, the scores over the seeds)."""
    runs = [_mnist(ctx, s, seed, **changes) for seed in s["seeds"]]
    return [f for f, _, _ in runs], runs[0][1], over_seeds([ev for _, _, ev in runs])


MNIST_QUICK = {"iters": 600, "batch": 64, "grid_at": [100, 300, 600], "eval_n": 1000, "seeds": [0], "cas": False}
MNIST_FULL = {"iters": 7800, "batch": 128, "grid_at": [1000, 3000, 5000, 7800], "eval_n": 2000, "seeds": [0, 1, 2],
              "cas": True}


@experiment("gan/Q2-2.10", "cDCGAN on MNIST: one row per digit, over the iterations", SECTION,
            "Each row conditioned on its digit: very convincing results (grids at 1000, 3000, 5000 and 7800 "
            "iterations); the two losses converge together.", quick=MNIST_QUICK, full=MNIST_FULL)
def cdcgan_grids(ctx: Context, s: dict) -> Outcome:
    folders, r, ev = _mnist_seeds(ctx, s)
    shipped = _evaluate(ctx, None, s["eval_n"], s["cas"])
    keys = _digit_keys(s)
    rows = [[f"cDCGAN, {s['iters']} it × {s['batch']} (this run{_seed_words(s)})", *_metric_cells(ev, keys)],
            ["cDCGAN shipped with cnnlab (8000 it × 128)", *_metric_cells(shipped, keys)]]
    return Outcome(f"After {s['iters']} iterations the generated digits are the digit asked for "
                   f"{_cell(ev, 'conditional_accuracy')} of the time{_seed_words(s)} (judged by cnnlab's MNIST "
                   f"classifier, test accuracy {ev['classifier_test_accuracy']:.4f}); the shipped generator: "
                   f"{shipped['conditional_accuracy']:.3f}.",
                   {"run": ev, "shipped": shipped, "iters_per_s": r["iters_per_s"]},
                   [Table("Conditional accuracy and the field's metrics (MNIST classifier features)",
                          ["generator", *[c for _, c, _ in keys]], rows),
                    Table(f"Per digit (this run{_seed_words(s)})", [str(k) for k in range(10)],
                          [[_cell(ev, f"per_label_accuracy.{k}", 2) for k in range(10)]])],
                   [(g, f"Iteration {_iteration(g)}: row k asks for digit k (seed {s['seeds'][0]})")
                    for g in _grids(folders[0])] + [(folders[0] / "loss_curves.png", "Losses and D outputs")])


@experiment("gan/Q2-2.11", "cDCGAN without y in the discriminator", SECTION,
            "Without y in D, the generator makes digits other than the one asked for: D cannot penalize it, not "
            "knowing the condition.", quick=MNIST_QUICK, full=MNIST_FULL)
def cdcgan_no_label(ctx: Context, s: dict) -> Outcome:
    with_y, _, ev = _mnist_seeds(ctx, s)
    without_y, _, ev0 = _mnist_seeds(ctx, s, label_in_d=False)
    keys = _digit_keys(s)
    rows = [["y in G and D", *_metric_cells(ev, keys)], ["y in G only", *_metric_cells(ev0, keys)]]
    fig = image_grid(ctx.dir / "with_without_y.png", [("y in D", [_grids(with_y[0])[-1]]),
                                                        ("no y in D", [_grids(without_y[0])[-1]])], [""])
    return Outcome(f"Conditional accuracy {_cell(ev, 'conditional_accuracy')} with y in D, "
                   f"{_cell(ev0, 'conditional_accuracy')} without (chance: 0.100){_seed_words(s)}; Fréchet distance "
                   f"to real digits {_cell(ev, 'fd', 1)} with, {_cell(ev0, 'fd', 1)} without.",
                   {"with_y": ev, "without_y": ev0},
                   [Table(f"{s['iters']} iterations each (MNIST classifier features{_seed_words(s)})",
                          ["discriminator input", *[c for _, c, _ in keys]], rows)],
                   [(fig, f"Final grids (row k asks for digit k; seed {s['seeds'][0]})")])


@experiment("gan/Q2-3.12", "Fully-connected cGAN vs cDCGAN, and the G/D update ratio", SECTION,
            "The cGAN is weaker than the cDCGAN: after a while D becomes so strong that G under-learns; the same "
            "happens when one network is updated much more than the other (nb_update_G/D).",
            quick=MNIST_QUICK | {"ratios": [[1, 1], [1, 3], [3, 1]]},
            full=MNIST_FULL | {"ratios": [[1, 1], [1, 5], [5, 1]]})
def cgan_ratio(ctx: Context, s: dict) -> Outcome:
    _, _, ev = _mnist_seeds(ctx, s)
    keys = _digit_keys(s)
    losses = lambda e: [_cell(e, "final.loss_D"), _cell(e, "final.loss_G")]  # noqa: E731
    rows = [["cDCGAN", "1 / 1", *_metric_cells(ev, keys), *losses(ev)]]
    metrics, figures = {"cdcgan g1 d1": ev}, []
    for g, d in s["ratios"]:
        folders, _, e = _mnist_seeds(ctx, s, model="cgan", g_steps=g, d_steps=d)
        metrics[f"cgan g{g} d{d}"] = e
        rows.append(["cGAN (MLP)", f"{g} / {d}", *_metric_cells(e, keys), *losses(e)])
        figures += [(_grids(folders[0])[-1], f"cGAN, G/D updates {g}/{d}: final grid"),
                    (folders[0] / "loss_curves.png", f"cGAN, G/D updates {g}/{d}: losses")]
    c = metrics[f"cgan g{s['ratios'][0][0]} d{s['ratios'][0][1]}"]
    return Outcome(f"At {s['iters']} iterations{_seed_words(s)}: cDCGAN {_cell(ev, 'conditional_accuracy')} "
                   f"conditional accuracy (FD {_cell(ev, 'fd', 1)}) vs cGAN {_cell(c, 'conditional_accuracy')} "
                   f"(FD {_cell(c, 'fd', 1)}); the G/D ratios are in the table.", metrics,
                   [Table(f"Models and update ratios (MNIST classifier features{_seed_words(s)})",
                          ["model", "G / D updates", *[c for _, c, _ in keys], "final loss_D", "final loss_G"], rows)],
                   figures)
