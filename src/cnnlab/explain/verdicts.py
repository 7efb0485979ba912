"""The verdicts of the model-randomization sanity check, as every face shows them (CLI, API, app, report, --help):
the rule a measurement is judged by, and the shipped measurements (`assets/sanity.json`, written by
benchmarks/sanity.py --write). The measuring itself is `sanity.py`'s; this module reads numbers and imports no
method, so that the methods' help can quote their verdicts."""
from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

FAILS_ABOVE = 0.3  # the former verdict: rank correlation above this after full randomization (sanity.json's)
# A method fails when, once every unit is re-drawn, its map of an image still resembles the trained map of that
# image more than the randomized map of another image does, by more than MARGIN in rank correlation: what two maps
# share regardless of the image (a centre bias, a border) is in the null too, so only the image-specific part of
# the resemblance counts; 0.1 is a weak correlation on Cohen's scale, so a pass allows no more than that.
MARGIN = 0.1
MEASURED = "assets/sanity.json"  # each method's measured outcome, written by benchmarks/sanity.py --write
# A verdict compares a mean over the images with its null's mean; from 10 images on the noise of the two no longer
# decides a verdict (docs/benchmarks.md, sanity checks); with fewer, no verdict is given.
MIN_VERDICT_IMAGES = 10


def measured() -> dict:
    """{model: {method: {"final_rank_corr", "passes"}}} as benchmarks/sanity.py measured it ({} if absent)."""
    try:
        return json.loads(resources.files("cnnlab").joinpath(MEASURED).read_text())["models"]
    except (OSError, ValueError, KeyError):
        return {}


def shipped(model: str, method: str) -> dict | None:
    """The shipped measurement of `method` on `model` (sanity.json) with the photo set it was made on, or None."""
    try:
        data = json.loads(resources.files("cnnlab").joinpath(MEASURED).read_text())
        entry = data["models"][model][method]
    except (OSError, ValueError, KeyError):
        return None
    sets = {Path(m.group(1)).name for c in data.get("commands", []) if (m := re.search(r"--images (\S+)", c))}
    photos = "MNIST test digits" if model.startswith("mnist_") else f"{', '.join(sorted(sets))} photos" if sets else None
    return {"passes": entry["passes"], "n_images": data.get("n_images"), "photos": photos}


def board_verdict(method: str, excess: float, n_images: int, model: str | None = None) -> dict:
    """The one randomization verdict every face shows (CLI, API, app, report): measured on the images at hand when
    there are at least MIN_VERDICT_IMAGES, else "no verdict" — with the shipped verdict for this model, marked as
    shipped, where one exists. `excess`: the mean same-image rank correlation minus the mismatched-image null.
    Returns {"sanity": passes|fails|undefined|no verdict, "verdict": one line, "shipped": dict or None}."""
    ship = shipped(model, method) if model else None
    if n_images < MIN_VERDICT_IMAGES:
        line = f"no verdict on {n_images} image{'s' * (n_images != 1)} (the check needs ≥ {MIN_VERDICT_IMAGES})"
        if ship is not None and ship["passes"] is not None:
            line += (f"; shipped: {'passes' if ship['passes'] else 'FAILS'} on {model}, {ship['n_images']} "
                     f"{ship['photos'] or 'images'}")
        return {"sanity": "no verdict", "verdict": line, "shipped": ship}
    if excess != excess:  # NaN: every randomized map constant
        return {"sanity": "undefined", "verdict": f"undefined on {n_images} images (its randomized maps are "
                                                  "constant)", "shipped": ship}
    status = "fails" if excess > MARGIN else "passes"
    return {"sanity": status, "verdict": f"{'FAILS' if status == 'fails' else 'passes'} on these {n_images} images "
                                         f"(same-image rank correlation {excess:+.3f} above its null; fails above "
                                         f"{MARGIN})", "shipped": ship}


def verdict(method: str) -> str:
    """The measured outcome of a method, in words, for --help and the app ('' if not measured)."""
    results = {model: r[method] for model, r in measured().items() if method in r}
    if not results:
        return ""
    failed = [m for m, r in results.items() if r["passes"] is False]
    if failed:
        return f"FAILS the model-randomization sanity check on {', '.join(failed)}"
    passed = [m for m, r in results.items() if r["passes"]]
    if not passed:
        return "no sanity verdict (its randomized maps are constant)"
    return f"passes the model-randomization sanity check on {', '.join(passed)}"
