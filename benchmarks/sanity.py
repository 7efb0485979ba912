"""Model-randomization sanity checks (Adebayo et al. 2018) for every saliency method: the Spearman rank correlation
of each method's maps with the trained model's after cascading randomization of all units (logits down to the input),
and after each step. A method above 0.3 at the end fails: its maps do not depend on what the model learned.

    python benchmarks/sanity.py --images ../shared/data/imagenet/foolbox20 --n 5 --data-root ../shared/data
"""
from __future__ import annotations

import argparse
import json
import sys
import time


import cnnlab
from cnnlab.core.data import load_mnist
from cnnlab.explain.saliency import METHODS, SaliencyOptions, method as make_method, predicted
from cnnlab.explain.sanity import FAILS_ABOVE, model_randomization

SLOW = ("scorecam", "rise")  # one forward pass per channel / per mask, at every step: digits only by default


def run(model, x, methods, options) -> dict:
    targets = predicted(model, x).tolist()
    out = {}
    for name in methods:
        t0 = time.perf_counter()
        r = model_randomization(model, x, targets, make_method(name, options))
        out[name] = r.summary() | {"seconds": time.perf_counter() - t0}
        print(model.name, name, round(r.final_rank_corr, 3), "passes" if r.passes else "FAILS", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--slow-on-photos", action="store_true", help="also Score-CAM and RISE on the photos")
    ap.add_argument("--models", default="efficientnet_lite0,mnist_cnn", help="which of the two models")
    ap.add_argument("--write", action="store_true",
                    help="also write the outcome into src/cnnlab/assets/sanity.json (what --help and the app show)")
    args = ap.parse_args()
    options = SaliencyOptions(smoothgrad_samples=8, ig_steps=16, rise_masks=500)
    models = args.models.split(",")
    result = {"date": time.strftime("%Y-%m-%d"), "fails_above": FAILS_ABOVE, "n": args.n}
    if "efficientnet_lite0" in models:
        lite = cnnlab.load_model("efficientnet_lite0")
        photos = cnnlab.read_images([args.images], args.n).batch(lite.preprocess)
        result["efficientnet_lite0"] = run(lite, photos, [m for m in METHODS if args.slow_on_photos or m not in SLOW],
                                           options)
    if "mnist_cnn" in models:
        digits, _ = load_mnist(args.data_root, train=False)
        result["mnist_cnn"] = run(cnnlab.load_model("mnist_cnn"), digits[:args.n].float().div(255), list(METHODS),
                                  options)
    print(json.dumps(result, indent=2))
    if args.write:
        write_asset(result, " ".join(sys.argv))


def write_asset(result: dict, command: str) -> None:
    """The verdicts that --help and the app show, beside the package's other measured assets."""
    from pathlib import Path

    models = {m: {name: {"final_rank_corr": r["final_rank_corr"], "passes": r["passes"]} for name, r in rows.items()}
              for m, rows in result.items() if isinstance(rows, dict)}
    asset = {"date": result["date"], "command": f"python {command}", "fails_above": result["fails_above"],
             "n_images": result.get("n"), "models": models}
    path = Path(__file__).resolve().parents[1] / "src" / "cnnlab" / "assets" / "sanity.json"
    path.write_text(json.dumps(asset, indent=2) + "\n")


if __name__ == "__main__":
    main()
