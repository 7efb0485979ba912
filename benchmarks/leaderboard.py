"""One leaderboard from several `cnnlab explain evaluate` runs over the same images (methods measured in separate
runs: a slow method run on its own, a method measured again after a change), with the ranks and 95 % bootstrap
intervals taken over the joined table, exactly as one run computes them (`cnnlab.jobs.evaluate.leaderboard`).

    python benchmarks/leaderboard.py RUN_A RUN_B:iterated-gradcam=iterated-gradcam-c0 RUN_C --out table.md

Each argument is a run folder (every method in it) or `RUN:METHOD[=NAME]` (one method, renamed). The runs must have
scored the same images in the same order with the same random baselines (checked: the deletion ratio divides by
them); a method missing a metric (RISE run with deletion and insertion only) has those cells empty.

    python benchmarks/leaderboard.py --concat RUN_FIRST_10 RUN_NEXT_10 --out table.md

`--concat`: the runs scored the same methods and metrics on different images (a set measured in parts): one board over
all their images. The table ends with the method the board recommends (`cnnlab.jobs.evaluate.recommended`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cnnlab.explain.metrics import CONTROLS, METRICS, metric
from cnnlab.explain.leaderboard import board_table, leaderboard, recommended

BASELINES = ("random_deletion_auc", "random_insertion_auc")


def _parse(arg: str) -> tuple[Path, str | None, str | None]:
    run, _, pick = arg.partition(":")
    method, _, name = pick.partition("=")
    return Path(run), method or None, name or method or None


def _same(image: str) -> str:
    """An image's name with its file's path resolved (runs given `../data/x.npz` and `/abs/data/x.npz` agree)."""
    path, sep, rest = image.partition("#")
    return str(Path(path).resolve()) + sep + rest


def join(specs: list[str]) -> tuple[list[dict], list[str], dict[str, str]]:
    """Rows whose scores hold every picked method (renamed), the method names in the order given, and each new
    name's method."""
    rows: list[dict] | None = None
    names: list[str] = []
    sources: dict[str, str] = {}
    for spec in specs:
        run, method, name = _parse(spec)
        theirs = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
        picks = [(method, name)] if method else [(m, m) for m in theirs[0]["scores"]]
        if rows is None:
            rows = [{k: v for k, v in r.items() if k != "scores"} | {"scores": {}} for r in theirs]
        if [_same(r["image"]) for r in theirs] != [_same(r["image"]) for r in rows]:
            sys.exit(f"{run}: not the same images as the runs before it")
        for m, new in picks:
            if new in names:
                sys.exit(f"{new} twice: rename one (RUN:METHOD=NAME)")
            for mine, r in zip(rows, theirs):
                s = r["scores"][m]
                for b in BASELINES:  # the ratios compare only over a shared baseline
                    other = next((x[b] for x in mine["scores"].values() if b in x), None)
                    if b in s and other is not None and abs(other - s[b]) > 1e-6:
                        sys.exit(f"{run}: {m}'s {b} differs from the runs before it on {r['image']}")
                mine["scores"][new] = s
            names.append(new)
            sources[new] = m
    return rows or [], names, sources


def concat(runs: list[str]) -> tuple[list[dict], list[str], dict[str, str]]:
    """The rows of runs over different images with the same methods, one after the other."""
    rows: list[dict] = []
    first: dict | None = None
    for run in runs:
        if ":" in run:
            sys.exit(f"{run}: --concat joins whole runs (RUN, not RUN:METHOD)")
        settings = _settings(Path(run))
        if first is not None and settings != first:
            sys.exit(f"{run}: not the same settings (methods, metrics, options) as the runs before it")
        first = settings
        theirs = [json.loads(line) for line in (Path(run) / "results.jsonl").read_text().splitlines()]
        if {_same(r["image"]) for r in theirs} & {_same(r["image"]) for r in rows}:
            sys.exit(f"{run}: an image the runs before it scored already")
        rows += theirs
    names = list(rows[0]["scores"]) if rows else []
    return rows, names, {n: n for n in names}


def _settings(run: Path) -> dict:
    """A run's config without what may differ between parts of one image set (the inputs, how many were read)."""
    try:
        config = json.loads((run / "config.json").read_text())
    except (OSError, ValueError) as exc:
        sys.exit(f"{run}: no readable config.json ({exc})")
    return {k: v for k, v in config.items() if k not in ("inputs", "limit", "cnnlab_version")}


def marked(board: list[dict], sources: dict[str, str], model: str) -> None:
    """Methods whose runs did not measure randomization get the verdict cnnlab ships (`assets/sanity.json`)."""
    from cnnlab.explain.verdicts import measured

    shipped = measured().get(model, {})
    for r in board:
        name = sources.get(r["method"], r["method"])
        if "sanity" not in r and name in shipped:
            r["sanity"], r["sanity_from"] = ("passes" if shipped[name]["passes"] else "fails"), "sanity.json"


def markdown(board: list[dict], columns: dict[str, bool], only: list[str] | None = None) -> str:
    columns = columns | {"aggregate_rank": False}
    used = [c for c in columns if any(c in r for r in board) and (not only or c in only)]
    head, *rows = board_table(board, used)
    head = [head[0], *[f"{c} {'(control)' if c in CONTROLS else '↑' if columns[c] else '↓'}" for c in used], *head[-2:]]
    for cells, r in zip(rows, board):
        cells[0] += "¹" if "sanity_from" in r else ""
    return "\n".join("| " + " | ".join(line) + " |" for line in [head, ["---"] * len(head), *rows]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="RUN or RUN:METHOD[=NAME]")
    ap.add_argument("--concat", action="store_true", help="the runs scored different images: join their rows")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the markdown table here (default: print it)")
    ap.add_argument("--columns", help="only these columns in the table (comma-separated; default: every one)")
    ap.add_argument("--json", action="store_true", help="print the board as JSON")
    ap.add_argument("--model", default="efficientnet_lite0", help="whose shipped sanity verdicts mark the methods "
                                                                  "whose runs did not measure randomization")
    args = ap.parse_args()
    rows, names, sources = (concat if args.concat else join)(args.runs)
    metrics = {name: metric(name) for name in METRICS}
    board = leaderboard(rows, names, metrics, args.bootstrap, args.seed, model=args.model)
    marked(board, sources, args.model)
    if args.json:
        print(json.dumps({"n": len(rows), "leaderboard": board, "recommended": recommended(board)}, indent=1))
        return
    text = markdown(board, {c: up for m in metrics.values() for c, up in m.columns.items()},
                    args.columns.split(",") if args.columns else None)
    text += f"\n{len(rows)} images; mean [95 % bootstrap interval, {args.bootstrap} resamples] #rank\n"
    if any("sanity_from" in r for r in board):
        text += f"¹ sanity verdict from cnnlab's measured sanity.json ({args.model}), not from this run\n"
    best = recommended(board)
    text += ("recommended: none passes the rule\n" if best is None else
             f"recommended: {best['why']} ({best['seconds_per_image']:.2f} s per image here)\n")
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
