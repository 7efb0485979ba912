"""What a transfer run writes besides its JSON: the table like the report's Q2-4.12 (results.md, results.csv) and
the normalized confusion matrix (confusion.png)."""
from __future__ import annotations

import csv
import io
from typing import Sequence

import numpy as np


def results_markdown(summary: dict) -> str:
    """A table like the report's Q2-4.12: one row per (layer, C)."""
    sel = summary["selected"]
    if not summary["grid"]:  # a trained head / fine-tuned network: its validation curve
        lines = [f"# Transfer: {summary['backbone']}, {summary['head']} head, fine-tuning {summary['finetune']}, "
                 f"split {summary['split']}, seed {summary['seed']}", "",
                 f"{summary['n_train']} training / {summary['n_val']} validation (from the training split) / "
                 f"{summary['n_test']} test images.", "",
                 "| epoch | training loss | validation loss | validation accuracy |", "|---|---|---|---|"]
        num = lambda v: "—" if v is None or v != v else format(v, ".4f")  # noqa: E731  (None, NaN: not measured)
        lines += [f"| {r['epoch']} | {num(r['loss'])} | {num(r.get('val_loss'))} | {num(r['val_accuracy'])} |"
                  for r in summary["history"]]
        lines += ["", f"Selected: epoch {sel['epoch']} ({sel.get('rule', 'best validation accuracy')}): test "
                      f"accuracy **{sel['test_accuracy']:.4f}**.", *[f"\n**Warning**: {w}." for w in
                                                                      summary.get("warnings", [])],
                  "", "| class | test accuracy |", "|---|---|"]
        lines += [f"| {c} | {a:.4f} |" for c, a in summary["per_class_accuracy"].items()]
        return "\n".join(lines) + "\n"
    lines = [
        f"# Transfer: {summary['backbone']} ({summary['weights']} weights), split {summary['split']}, seed {summary['seed']}",
        "", f"{summary['n_train']} training / {summary['n_test']} test images; scaling {summary['scaling']}; "
        "C and layer selected by cross-validation on the training split only.", "",
        "| layer | C | CV accuracy | test accuracy |", "|---|---|---|---|",
    ]
    for r in summary["grid"]:
        mark = " **(selected)**" if (r["layer"], r["C"]) == (sel["layer"], sel["C"]) else ""
        lines.append(f"| {r['layer']} | {r['C']:g} | {r['cv_accuracy']:.4f} | {r['test_accuracy']:.4f}{mark} |")
    lines += ["", f"Selected: layer {sel['layer']}, C = {sel['C']:g}: test accuracy **{sel['test_accuracy']:.4f}**.", "",
              "| class | test accuracy |", "|---|---|"]
    lines += [f"| {c} | {a:.4f} |" for c, a in summary["per_class_accuracy"].items()]
    return "\n".join(lines) + "\n"


def results_csv(grid: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["layer", "C", "cv_accuracy", "test_accuracy"])
    w.writeheader()
    w.writerows(grid)
    return buf.getvalue()


def confusion_figure(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]):
    from sklearn.metrics import ConfusionMatrixDisplay

    from ..core.figures import new_figure

    n = len(classes)
    fig = new_figure(0.55 * n + 3, 0.55 * n + 2.5)
    ax = fig.subplots()
    shown = ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=list(range(n)), display_labels=list(classes), normalize="true", values_format=".2f",
        ax=ax, colorbar=False, cmap="Blues", xticks_rotation=60)
    # each number in black or white by its own cell's lightness (scikit-learn splits at half the largest value,
    # which leaves dark numbers on the mid-blue cells); an empty cell (no such confusion) is left blank
    for (i, j), t in np.ndenumerate(shown.text_):
        r, g, b, _ = shown.im_.cmap(shown.im_.norm(shown.confusion_matrix[i, j]))
        t.set_color("black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white")
        t.set_fontsize(8 if n <= 10 else 7)
        if shown.confusion_matrix[i, j] == 0:
            t.set_text("")
    ax.set_title("Normalized confusion matrix (test split): the share of each true class predicted as each class")
    return fig
