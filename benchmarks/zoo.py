"""The zoo sweep: every family users bring, through every job, with zero configuration — random weights (a
parameter left at zero by its initializer, such as a classifier head, is re-drawn: a zero head would make every map
flat and test nothing).

Populations: the smallest model (fewest parameters, counted on the meta device) of every timm module
(`timm.list_modules()`), every torchvision classification model, and every Hugging Face image-classification
architecture that `transformers` can build from a small random config. Each model runs in its own process (a crash
or a hang is a row, not the end of the sweep) through: classify; the default Grad-CAM (its layer, whether the map is
flat, its warnings); rollout and Chefer (a map where the model has global attention over a class token, else a
one-line refusal); features at the default cut point; fool (pgd, 2 steps); classviz (2 iterations).

A row per model and job: ok / refused (its one line) / flat (warned: its line) / flat-silent / crash (the exception),
the layer, the seconds. A map is flat when std / mean |map| ≤ 0.05 (the done-when's rule).

    python benchmarks/zoo.py --zoos timm,torchvision,hf --out runs/zoo       # the whole sweep (hours on 2 cores)
    python benchmarks/zoo.py --zoos hf --limit 5 --out runs/zoo-hf          # a few
    python benchmarks/zoo.py --report runs/zoo                               # the markdown of a finished sweep
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

FLAT = 0.05  # std / mean |map| at or below: a flat map
JOBS = ("classify", "gradcam", "rollout", "chefer", "features", "fool", "classviz")
# how a random Hugging Face config is made small, whatever the architecture has of these: widths divided (kept
# multiples of 16, so that heads still divide them), depths and head counts lowered; the image size is kept
WIDTHS = ("hidden_size", "intermediate_size", "embed_dim", "hidden_dim", "hidden_sizes", "embed_dims",
          "embedding_size", "neck_hidden_sizes", "mlp_hidden_size")
DEPTHS = ("num_hidden_layers", "depths", "num_blocks", "depth")
HEADS = ("num_attention_heads", "num_heads")
SHRINK = 4
MAX_HF_PARAMETERS = 300_000_000  # an architecture still larger than this when shrunk is not an image classifier


class TooLarge(Exception):
    pass


# ------------------------------------------------------------------------------------------------ the models
def timm_smallest() -> list[str]:
    """The model of fewest parameters of each timm module, counted without allocating (meta device)."""
    import timm
    import torch

    chosen = []
    for module in timm.list_modules():
        best = None
        for name in timm.list_models(module=module):
            try:
                with torch.device("meta"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    n = sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())
            except Exception:  # noqa: BLE001 — a model the meta device cannot build is skipped for the count
                continue
            if best is None or n < best[0]:
                best = (n, name)
        if best is not None:
            chosen.append(f"timm:{best[1]}")
    return chosen


def torchvision_all() -> list[str]:
    import torchvision.models as tvm

    return [f"torchvision:{n}" for n in tvm.list_models(module=tvm)]


def hf_all() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    return [f"hf-config:{t}" for t in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES]


def hf_model(model_type: str):  # noqa: C901 — the tries are listed in order
    """An image classifier of `model_type` from a small random config (the architecture's defaults, shrunk)."""
    import torch
    import transformers

    def small(key, value):
        if isinstance(value, (list, tuple)):
            return type(value)(small(key, v) for v in value)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            return value
        if key in WIDTHS:
            return max(16, value // SHRINK // 16 * 16)
        if key in DEPTHS:
            return min(value, 2 if key == "num_hidden_layers" else 1)
        if key in HEADS:
            return min(value, 2)
        return value

    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    names = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES[model_type]
    cls = getattr(transformers, names[0] if isinstance(names, (list, tuple)) else names)  # DeiT: not the teacher
    torch.manual_seed(0)
    net = None
    for shrink in (True, False):  # the small config, else the architecture's own (slower, but built)
        config = transformers.AutoConfig.for_model(model_type, num_labels=10)
        if shrink:
            for key in (*WIDTHS, *DEPTHS, *HEADS):
                if hasattr(config, key):
                    setattr(config, key, small(key, getattr(config, key)))
        try:
            net = cls(config).eval()
        except ImportError:
            raise
        except Exception:  # noqa: BLE001 — a config the shrinking broke: the architecture's own
            if not shrink:
                raise
            continue
        if sum(p.numel() for p in net.parameters()) > MAX_HF_PARAMETERS:
            raise TooLarge(f"{sum(p.numel() for p in net.parameters()) / 1e6:.0f}M parameters even when shrunk")
        size = getattr(config, "image_size", 224)
        try:
            with torch.no_grad():
                net(torch.rand(1, getattr(config, "num_channels", 3), *(size if isinstance(size, (list, tuple))
                                                                       else (size, size))))
            return net
        except Exception:  # noqa: BLE001 — the small one fails on an image: try the architecture's own
            continue
    return net  # one that fails on an image: cnnlab's wrap is to say so in one line


def redraw_zeros(net) -> int:
    """Re-draw every weight matrix an initializer left at zero (a head, a projection): the structure is what is
    tested, and a zero head makes every map flat. Returns how many were re-drawn."""
    import torch

    g = torch.Generator().manual_seed(0)
    n = 0
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() >= 2 and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
                n += 1
    return n


def photo():
    """scikit-image's cat: real content, so a map has somewhere to be (noise is the same everywhere)."""
    import skimage.data
    from PIL import Image

    return Image.fromarray(skimage.data.chelsea())


def measure_norms(model) -> int:
    """BatchNorm statistics measured as training would have left them: one train-mode pass (cumulative averages)
    over scikit-image's other photos and their mirror images — never the cat that is explained. Random init leaves
    them at mean 0, variance 1, a state no trained network is in: such norms do not center the activations, every
    channel keeps its offset, and the final maps of BatchNorm networks come out nearly constant (measured: 5 of the 6
    flat timm families; docs/benchmarks.md). Returns how many norms were measured."""
    import skimage.data
    import torch
    from PIL import Image

    from cnnlab.core.images import pil_to_tensor
    from cnnlab.core.probe import unmeasured_norms

    names = set(unmeasured_norms(model.net))
    norms = [m for n, m in model.net.named_modules() if n in names]
    if not norms:
        return 0
    photos = (skimage.data.astronaut(), skimage.data.coffee(), skimage.data.rocket(), skimage.data.hubble_deep_field())
    x = torch.stack([model.preprocess(pil_to_tensor(Image.fromarray(p).convert("RGB"))) for p in photos])
    x = torch.cat([x, x.flip(-1)]).to(model.device)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batch
    was = model.net.training
    try:
        model.net.train()
        with torch.no_grad():
            model(x)
    except Exception:  # noqa: BLE001 — a model that cannot run in train mode keeps its initial statistics
        for m in norms:
            m.reset_running_stats()
        return 0
    finally:
        model.net.train(was)
        for m, mom in zip(norms, momenta):
            m.momentum = mom
    return len(norms)


def alive(model) -> bool:
    """Whether the randomly drawn network's class scores still depend on the image, at a scale float arithmetic keeps
    (logits above 1e-3): an initializer drawing too small weights for a deep CNN (transformers' normal(0, 0.02) for
    convolutions) lets activations vanish towards 0."""
    import torch

    from cnnlab.core.probe import probe_image

    with torch.no_grad():
        a, b = model(probe_image(model)), model(probe_image(model).flip(-1))
    return bool((a - b).abs().max() > 1e-6 * a.abs().max().clamp(min=1e-30)) and bool(a.abs().max() > 1e-3)


def load(spec: str):
    """The model with random weights; zero matrices re-drawn; a network whose scores do not depend on the image
    re-drawn as the sanity check's randomization does (He-scaled normals, norms the identity: it stays alive)."""
    import cnnlab
    from cnnlab.explain.sanity import randomize

    if spec.startswith("hf-config:"):
        net = hf_model(spec.split(":", 1)[1]).eval()
        redraw_zeros(net)
        model = cnnlab.wrap(net, name=spec)
    else:
        model = cnnlab.load_model(spec, weights="random")
        redraw_zeros(model.net)
    if not alive(model):
        randomize(model.net, seed=0)
        model.redrawn = True
    model.norms_measured = measure_norms(model)
    return model


# ----------------------------------------------------------------------------------------------- one model
def _flat(m) -> bool:
    import torch

    m = m.float().flatten(1)
    return bool(((m.std(1) / m.abs().mean(1).clamp(min=1e-12)) <= FLAT).any() or not torch.isfinite(m).all())


def _job(name, fn) -> dict:
    import cnnlab

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            row = {"status": "ok", **(fn() or {})}
        except cnnlab.CnnlabError as exc:
            row = {"status": "refused", "why": str(exc).splitlines()[0][:300]}
        except Exception as exc:  # noqa: BLE001 — a crash is a row
            row = {"status": "crash", "why": f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
    said = [str(w.message).splitlines()[0][:300] for w in caught if issubclass(w.category, UserWarning)]
    if row.get("flat"):
        row["status"] = "flat" if said else "flat-silent"
    row["warnings"] = said
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def sweep_one(spec: str) -> dict:
    import cnnlab

    t0 = time.perf_counter()
    out = {"model": spec}
    try:
        model = load(spec)
    except (ImportError, TooLarge) as exc:  # not buildable here: a dependency it needs, or no small version
        return out | {"build": "skipped", "why": f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}",
                      "seconds": round(time.perf_counter() - t0, 2)}
    except Exception as exc:  # noqa: BLE001
        kind = "refused" if isinstance(exc, cnnlab.CnnlabError) else "crash"
        return out | {"build": kind, "why": f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:300]}",
                      "seconds": round(time.perf_counter() - t0, 2)}
    out |= {"build": "ok", "input": model.preprocess.input_size, "classes": model.num_classes,
            "redrawn": getattr(model, "redrawn", False),
            "norms_measured": getattr(model, "norms_measured", 0), "parameters": sum(p.numel() for p in model.net.parameters())}
    out["jobs"] = jobs_on(model)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def jobs_on(model) -> dict:
    """Every job once on `model` (a Backbone), its row each: what the sweep records per model."""
    import torch

    import cnnlab

    x = photo()  # through the model's own preprocessing

    def maps(method):
        def run():
            r = cnnlab.saliency(model, x, method=method)
            return {"layer": r.layer, "flat": _flat(r.maps)}
        return run

    jobs = {
        "classify": lambda: {"top": cnnlab.classify(model, x, topk=1).results[0]["top"][0]["index"]},
        "gradcam": maps("gradcam"),
        "rollout": maps("rollout"),
        "chefer": maps("chefer"),
        "features": lambda: {"layer": model.default_layer,
                             "dim": int(cnnlab.features(model, x, layers=[model.default_layer]).features[
                                 model.default_layer].shape[1])},
        "fool": lambda: {"success": bool(cnnlab.fool(model, x, target="none", method="pgd", max_iters=2).success[0])},
        "classviz": lambda: {"finite": bool(torch.isfinite(cnnlab.classviz(model, 0, iters=2, judge="none").image)
                                            .all())},
    }
    return {name: _job(name, fn) for name, fn in jobs.items()}


# ------------------------------------------------------------------------------------------------- the sweep
def run_sweep(specs: list[str], out: Path, timeout: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = out / "rows.jsonl"
    done = {json.loads(line)["model"] for line in rows.read_text().splitlines()} if rows.exists() else set()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "HF_HUB_OFFLINE": "1"}
    for k, spec in enumerate(specs):
        if spec in done:
            continue
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, __file__, "--one", spec], capture_output=True, text=True,
                                  timeout=timeout, env=env)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            row = json.loads(lines[-1]) if lines else {"model": spec, "build": "crash",
                                                       "why": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
        except subprocess.TimeoutExpired:
            row = {"model": spec, "build": "timeout", "why": f"over {timeout:.0f} s"}
        row.setdefault("seconds", round(time.perf_counter() - t0, 2))
        with rows.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[{k + 1}/{len(specs)}] {spec}: {row.get('build')} {row.get('seconds')} s", flush=True)


def report(folder: Path) -> str:
    """The markdown: counts per zoo and job, then a row per model."""
    rows = [json.loads(line) for line in (folder / "rows.jsonl").read_text().splitlines()]
    lines = []
    for zoo in ("timm", "torchvision", "hf-config"):
        mine = [r for r in rows if r["model"].startswith(zoo + ":")]
        if not mine:
            continue
        built = [r for r in mine if r.get("build") == "ok"]
        lines += [f"**{zoo}**: {len(mine)} models, {len(built)} built with random weights "
                  f"({', '.join(f'{k} {v}' for k, v in _count(r.get('build') for r in mine).items() if k != 'ok')})", ""]
        lines += ["| job | " + " | ".join(("ok", "refused", "flat", "flat-silent", "crash")) + " |", "|---|" + "---|" * 5]
        for job in JOBS:
            c = _count(r["jobs"][job]["status"] for r in built)
            lines.append(f"| {job} | " + " | ".join(str(c.get(k, 0)) for k in ("ok", "refused", "flat", "flat-silent",
                                                                               "crash")) + " |")
        lines.append("")
    lines += ["| model | build | Grad-CAM layer | gradcam | rollout | chefer | classify | features | fool | classviz | s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        jobs = r.get("jobs", {})
        cell = lambda j: jobs.get(j, {}).get("status", "—")  # noqa: E731
        lines.append(f"| {r['model']} | {r.get('build')} | {jobs.get('gradcam', {}).get('layer') or '—'} | "
                     + " | ".join(cell(j) for j in ("gradcam", "rollout", "chefer", "classify", "features", "fool",
                                                      "classviz")) + f" | {r.get('seconds')} |")
    return "\n".join(lines) + "\n"


def _count(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoos", default="timm,torchvision,hf")
    ap.add_argument("--models", help="comma-separated specs instead of the zoos")
    ap.add_argument("--limit", type=int, help="the first N models of each zoo")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds per model")
    ap.add_argument("--out")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--report", help="print the markdown of a sweep folder")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(sweep_one(args.one)))
        return
    if args.report:
        print(report(Path(args.report)), end="")
        return
    if args.models:
        specs = args.models.split(",")
    else:
        specs = []
        for zoo in args.zoos.split(","):
            found = {"timm": timm_smallest, "torchvision": torchvision_all, "hf": hf_all}[zoo]()
            specs += found[:args.limit] if args.limit else found
    run_sweep(specs, Path(args.out), args.timeout)
    print(report(Path(args.out)), end="")


if __name__ == "__main__":
    main()
