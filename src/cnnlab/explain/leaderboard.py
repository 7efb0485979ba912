"""The leaderboard of `explain evaluate`, as statistics over per-image rows: each column's mean with its 95 %
bootstrap interval and its rank, the aggregate rank over the faithfulness panel, the randomization verdict, and the
recommendation — which method gets the ★, why, and when nothing does (no method passes, or an input-only control
ranks with the methods). One rank function (`ranks`: ties share the better rank) serves every column, the aggregate
and its bootstrap."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from .metrics import CONTROLS, Metric
from .saliency import METHODS
from .verdicts import board_verdict

# forward + backward image-passes a recommended default may cost per image: a map while one waits (what the former
# 1 s budget allowed on the reference CPU: docs/benchmarks.md). Counted, so the same images give the same ★ anywhere.
DEFAULT_BUDGET = 16


@dataclass(eq=False)
class BoardRow(Mapping):
    """One method's row of a leaderboard, typed; read as a mapping (`row["deletion_auc"]`, `"aggregate_rank" in
    row`) it is `summary()`, the dict `--json` and metrics.json write, with the keys they have always had (a row
    equals its dict)."""

    method: str
    values: dict[str, float] = field(default_factory=dict)  # each measured column's mean over the images
    seconds_per_image: float = 0.0
    passes_per_image: float | None = None  # forward + backward image-passes of its maps (None: not counted)
    panel_passes_per_image: float | None = None  # the forward passes that scored them (None: not counted)
    queries_panel: bool = False  # it queries the model with the panel's own perturbation
    control: bool = False  # an input-only control: ranked beside the methods, never recommended
    ci: dict[str, list[float]] = field(default_factory=dict)  # each column's 95 % bootstrap interval
    rank: dict[str, int] = field(default_factory=dict)  # 1 = best; ties share the better rank; none for a control
    aggregate_rank: float | None = None  # the mean rank over the faithfulness panel (None: under two columns)
    aggregate_over: list[str] | None = None  # the panel's columns it averages
    sanity: str | None = None  # the randomization verdict: passes | fails | undefined | no verdict
    verdict: str | None = None  # its one line
    shipped: dict | None = None  # the shipped verdict shown beside it

    def summary(self) -> dict:
        out = {"method": self.method, **self.values, "seconds_per_image": self.seconds_per_image,
               "passes_per_image": self.passes_per_image}
        if self.panel_passes_per_image is not None:
            out["panel_passes_per_image"] = self.panel_passes_per_image
        out |= {"queries_panel": self.queries_panel, "control": self.control, "ci": self.ci, "rank": self.rank}
        if self.aggregate_rank is not None:
            out |= {"aggregate_rank": self.aggregate_rank, "aggregate_over": self.aggregate_over}
        if self.sanity is not None:
            out |= {"sanity": self.sanity, "verdict": self.verdict, "shipped": self.shipped}
        return out

    def __getitem__(self, key: str):
        return self.summary()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.summary())

    def __len__(self) -> int:
        return len(self.summary())


def leaderboard(rows: list[dict], methods: Sequence[str], metrics: dict[str, Metric], bootstrap: int = 1000,
                seed: int = 0, model: str | None = None) -> list[BoardRow]:
    """One `BoardRow` per method from per-image rows (`results.jsonl`'s): each column's mean, `ci` its 95 % bootstrap
    interval over the images, `rank` (1 = best; ties share the better rank; controls are not ranked),
    `seconds_per_image`, `passes_per_image` (forward + backward image-passes of the method's maps; None for rows
    that did not count them), `panel_passes_per_image` (the forward passes that scored them: deletion, insertion,
    ROAD; the randomization check costs twice the maps' passes more), and where randomization was measured `sanity` and `verdict` (`explain.verdicts.board_verdict`: none below
    its minimum of images; `model` names the shipped verdict shown then). Rows of several runs over the same images
    can be joined into one board: a column a method's rows lack (a metric its run did not ask for) is left out of
    its row and of the ranks."""
    n = len(rows)
    resamples = np.random.default_rng(seed).integers(0, n, (bootstrap, n)) if n else None
    values = lambda method, key: np.array([r["scores"][method][key] for r in rows], dtype=float)  # noqa: E731
    board, columns, boots = [], {c: up for m in metrics.values() for c, up in m.columns.items()}, {}
    for method in methods:
        cls = METHODS.get(method.split("=")[0])
        row = BoardRow(method, queries_panel=bool(cls and cls.queries_panel), control=bool(cls and cls.control))
        for m in metrics.values():
            for column in m.columns:
                if not all(k in r["scores"][method] for r in rows for k in m.needs(column)):
                    continue
                vals = {k: values(method, k) for k in m.needs(column)}
                row.values[column] = float(m.aggregate(column, {k: v[None] for k, v in vals.items()})[0])
                boot = m.aggregate(column, {k: v[resamples] for k, v in vals.items()})
                row.ci[column] = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
                boots[method, column] = boot
        row.seconds_per_image = float(values(method, "seconds").mean())
        if n and all("passes" in r["scores"][method] for r in rows):
            row.passes_per_image = float(values(method, "passes").mean())
        if n and all("panel_passes" in r["scores"][method] for r in rows):
            row.panel_passes_per_image = float(values(method, "panel_passes").mean())
        board.append(row)
    for column, higher in columns.items():
        if column in CONTROLS:
            continue
        have = [r for r in board if column in r.values]
        for r, k in zip(have, ranks(np.array([r.values[column] for r in have]), higher)):
            r.rank[column] = int(k)
    _aggregate_rank(board, boots, columns)
    for r in board:
        if "randomization_rank_corr" in r.values and "randomization_null" in r.values:
            said = board_verdict(r.method, r.values["randomization_rank_corr"] - r.values["randomization_null"], n,
                                 model)
            r.sanity, r.verdict, r.shipped = said["sanity"], said["verdict"], said["shipped"]
    return board


def ranks(cells: np.ndarray, higher: bool) -> np.ndarray:
    """Each method's rank (1 = best; ties share the better rank) in `cells`: (methods,) values, or (methods × R)
    values ranked per column (the bootstrap resamples)."""
    v = -np.asarray(cells, dtype=float) if higher else np.asarray(cells, dtype=float)
    return (v[None] < v[:, None]).sum(axis=1) + 1


def recommended(board: list[dict], budget: float = DEFAULT_BUDGET) -> dict | None:
    """The method a leaderboard recommends: the best `aggregate_rank` (the faithfulness panel; ties to the cheaper)
    among the methods that pass the randomization check on these images, do not query the model with the panel's
    own perturbation, and cost at most `budget` forward + backward passes per image (a default must stay
    interactive). Counted passes, not seconds: the same images give the same ★ on any machine under any load. None
    without such a method, and None when an input-only control ranks at or above it (`dominated`); `why` says where
    the ★ went and why any better-ranked method was passed over."""
    return None if dominated(board, budget) else _best(board, budget)


def dominated(board: list[dict], budget: float = DEFAULT_BUDGET) -> dict | None:
    """When an input-only control (the image's brightness, its edges) ranks at or above the best method the panel
    could recommend: which control, its rank and the method's, and the one line that says so. The ★ then crowns
    nothing: on these images the metrics are dominated by the input."""
    best = _best(board, budget)
    controls = sorted((r for r in board if r.get("control") and "aggregate_rank" in r),
                      key=lambda r: r["aggregate_rank"])
    if best is None or not controls or controls[0]["aggregate_rank"] > best["aggregate_rank"]:
        return None
    top = controls[0]
    return {"control": top["method"], "control_aggregate_rank": top["aggregate_rank"], "method": best["method"],
            "method_aggregate_rank": best["aggregate_rank"],
            "why": (f"no method beats the input-only control {top['method']} (aggregate rank "
                    f"{top['aggregate_rank']:.2f}, against {best['aggregate_rank']:.2f} for {best['method']}, the best "
                    "method the panel could recommend): on these images the faithfulness metrics are dominated by "
                    "the input")}


def _best(board: list[dict], budget: float) -> dict | None:
    ranked = sorted((r for r in board if "aggregate_rank" in r), key=lambda r: r["aggregate_rank"])
    passed_over, best = [], None
    for r in ranked:
        reason = _excluded(r, budget)
        if reason is None:
            best = r
            break
        passed_over.append(f"{r['method']} ({reason})")
    if best is None:
        return None
    why = (f"{best['method']}: the best aggregate rank ({best['aggregate_rank']:.2f}) among the methods that pass the "
           f"randomization check, do not query the panel's perturbation and cost ≤ {budget:g} passes per image")
    if passed_over:
        why += "; passed over: " + ", ".join(passed_over)
    return {"method": best["method"], "aggregate_rank": best["aggregate_rank"],
            "seconds_per_image": best["seconds_per_image"], "passes_per_image": best["passes_per_image"],
            "budget_passes": budget, "budget_seconds": None, "why": why}


def _excluded(row: dict, budget: float) -> str | None:
    """Why a leaderboard row cannot be recommended, or None."""
    if row.get("control"):
        return "an input-only control"
    if row.get("sanity") != "passes":
        return row.get("verdict") or "no randomization check"
    if row.get("queries_panel"):
        return "queries the panel's own perturbation"
    if row.get("passes_per_image") is None:
        return "its passes were not counted"
    if row["passes_per_image"] > budget:
        return f"{row['passes_per_image']:g} passes per image"
    return None


def _aggregate_rank(board: list[BoardRow], boots: dict, columns: dict[str, bool]) -> None:
    """`aggregate_rank`: each method's mean rank over the faithfulness panel's columns that every method of the
    board has (at least two), with its 95 % interval over the same bootstrap resamples; it orders the board's
    `rank["aggregate_rank"]`."""
    from .metrics import PANEL

    panel = [c for c in PANEL if c in columns and all(c in r.values for r in board)]
    if len(panel) < 2 or len(board) < 2:
        return
    point = np.mean([ranks(np.array([r.values[c] for r in board]), columns[c]) for c in panel], axis=0)
    boot = np.mean([ranks(np.stack([boots[r.method, c] for r in board]), columns[c]) for c in panel], axis=0)
    for k, (r, place) in enumerate(zip(board, ranks(point, higher=False))):
        r.aggregate_rank = float(point[k])
        r.ci["aggregate_rank"] = [float(np.percentile(boot[k], 2.5)), float(np.percentile(boot[k], 97.5))]
        r.rank["aggregate_rank"] = int(place)
        r.aggregate_over = panel


def board_table(board: list[dict], columns: Sequence[str]) -> list[list[str]]:
    """A leaderboard as text cells: header, then one row per method (mean [low, high] #rank, no rank for a control;
    '—' where a method's run did not measure the column; ⚠ after a method that fails the randomization check)."""
    rows = [["method", *columns, "passes / image", "scoring passes / image", "seconds / image"]]
    for r in board:
        cells = [r["method"] + (" (control)" if r.get("control") else "") + (" ⚠" if r.get("sanity") == "fails" else "")
                 + (" †" if r.get("queries_panel") else "")]
        cells += [f"{r[c]:.3f} [{r['ci'][c][0]:.3f}, {r['ci'][c][1]:.3f}]"
                  + (f" #{r['rank'][c]}" if c in r["rank"] else "") if c in r else "—" for c in columns]
        passes = [r.get(k) for k in ("passes_per_image", "panel_passes_per_image")]
        rows.append([*cells, *("—" if p is None else f"{p:g}" for p in passes), f"{r['seconds_per_image']:.2f}"])
    return rows
