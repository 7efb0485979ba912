"""Model-randomization sanity checks (Adebayo et al. 2018) for every saliency method: the Spearman rank correlation
of each method's maps with the trained model's after cascading randomization of all units (logits down to the input),
and after each step, beside the mismatched-image null (the randomized map of image i against the trained maps of
every other image). A method whose same-image correlation exceeds the null by more than `sanity.MARGIN` at the end
fails: its maps do not depend on what the model learned.

    python benchmarks/sanity.py --images ../shared/data/imagenet/foolbox20 --n 10 --data-root ../shared/data
    python benchmarks/sanity.py --images ... --models efficientnet_lite0 --methods scorecam,rise --final-only --write

--final-only computes the cascade's last step alone (the same fully randomized copy, so the same verdict) without
the steps between: one randomized map per image, for the methods that cost a forward pass per channel or mask.

--write merges the outcome into src/cnnlab/assets/sanity.json (other models and methods are kept).
"""
from __future__ import annotations

import argparse
import json
import sys
import time


import cnnlab
from cnnlab.core.data import load_mnist
from cnnlab.explain.saliency import METHODS, method as make_method, predicted
from cnnlab.explain.sanity import MARGIN, model_randomization

SLOW = ("scorecam", "rise")  # one forward pass per channel / per mask, at every step: digits only by default


def run(model, x, methods, options, final_only: bool = False) -> dict:
    targets = predicted(model, x)
    out = {}
    for name in methods:
        t0 = time.perf_counter()
        method = make_method(name, METHODS.own(name, options))
        out[name] = model_randomization(model, x, targets.tolist(), method, final_only=final_only).summary()
        out[name]["seconds"] = time.perf_counter() - t0
        o = out[name]
        print(model.name, name, f"same {o['final_rank_corr']:.3f} null {o['null_rank_corr']:.3f} excess "
              f"[{o['excess_ci'][0]:.3f}, {o['excess_ci'][1]:.3f}] undefined {o['undefined']} {o['seconds']:.0f} s",
              {True: "passes", False: "FAILS", None: "no verdict"}[o["passes"]], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=None, help="the photos (efficientnet_lite0; the MNIST models read digits)")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--slow-on-photos", action="store_true", help="also Score-CAM and RISE on the photos")
    ap.add_argument("--models", default="efficientnet_lite0,mnist_cnn", help="efficientnet_lite0 (on --images), mnist_cnn, mnist_vit (on MNIST test digits)")
    ap.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    ap.add_argument("--final-only", action="store_true", help="only the cascade's last step (the verdict)")
    ap.add_argument("--write", action="store_true",
                    help="also write the outcome into src/cnnlab/assets/sanity.json (what --help and the app show)")
    args = ap.parse_args()
    options = dict(smoothgrad_samples=8, ig_steps=16, rise_masks=500)
    models = args.models.split(",")
    result = {"date": time.strftime("%Y-%m-%d"), "margin": MARGIN, "n": args.n}
    if "efficientnet_lite0" in models:
        if not args.images:
            sys.exit("--images is needed for efficientnet_lite0")
        lite = cnnlab.load_model("efficientnet_lite0")
        photos = cnnlab.read_images([args.images], args.n).batch(lite.preprocess)
        chosen = args.methods.split(",") if args.methods else [m for m in METHODS
                                                                 if args.slow_on_photos or m not in SLOW]
        result["efficientnet_lite0"] = run(lite, photos, chosen, options, args.final_only)
    for name in (m for m in models if m.startswith("mnist_")):  # the shipped digit classifiers, on test digits
        digits, _ = load_mnist(args.data_root, train=False)
        model = cnnlab.load_model(name)
        chosen = args.methods.split(",") if args.methods else list(METHODS)
        result[name] = run(model, digits[:args.n].float().div(255),
                           [m for m in chosen if _applies(make_method(m, METHODS.own(m, options)), model)], options,
                           args.final_only)
    print(json.dumps(result, indent=2))
    if args.write:
        write_asset(result, " ".join(sys.argv))


def _applies(method, model) -> bool:
    try:
        method.check_model(model)
    except cnnlab.CnnlabError as exc:
        print(model.name, method.name, "refused:", exc, flush=True)
        return False
    return True


def write_asset(result: dict, command: str) -> None:
    """The verdicts that --help and the app show, beside the package's other measured assets."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "src" / "cnnlab" / "assets" / "sanity.json"
    asset = json.loads(path.read_text()) if path.is_file() else {"models": {}}
    for m, rows in result.items():
        if isinstance(rows, dict):
            for name, r in rows.items():
                asset["models"].setdefault(m, {})[name] = {
                    "final_rank_corr": _number(r["final_rank_corr"]), "null_rank_corr": _number(r["null_rank_corr"]),
                    "undefined": r["undefined"], "passes": r["passes"]}
    commands = asset.pop("commands", [asset.pop("command")] if "command" in asset else [])
    asset.pop("fails_above", None)
    asset |= {"date": result["date"], "margin": result["margin"], "n_images": result.get("n"),
              "commands": [*commands, f"python {command}"]}
    path.write_text(json.dumps(asset, indent=2) + "\n")


def _number(v: float) -> float | None:
    """Rounded, and null where undefined (strict JSON has no NaN)."""
    return None if v != v else round(v, 3)


if __name__ == "__main__":
    main()
