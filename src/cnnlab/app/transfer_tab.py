"""The Transfer tab: pick a class-per-folder dataset under --data-root (nothing outside it is reachable), train the
SVM pipeline (or a linear / MLP head, then fine-tune the backbone's last units or all of it), see the layer × C table
(or the validation curve, growing epoch by epoch as it trains) and the confusion matrix, then classify an upload
with the trained classifier.
Endpoints: /transfer (trains; streams the validation curve of a head; the classifier stays in the page's state),
/transfer_predict."""
from __future__ import annotations

import contextvars
import queue
import threading
from pathlib import Path

from ..core.errors import CnnlabError
from ..jobs.transfer import transfer
from ..transfer.recipe import HEADS
from .state import AppModels, friendly, inside, read_upload


def datasets(root: Path | None) -> list[str]:
    """Class-per-folder datasets at most two levels under the root (their paths relative to it)."""
    if root is None or not root.is_dir():
        return []
    found = []
    for d in sorted(p for p in root.rglob("*") if p.is_dir() and len(p.relative_to(root).parts) <= 2):
        subdirs = [c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")]
        if len(subdirs) >= 2 and all(any(f.is_file() for f in c.iterdir()) for c in subdirs[:3]):
            found.append(str(d.relative_to(root)))
    return found


def build(models: AppModels, max_pixels: int, root: Path | None) -> None:
    import gradio as gr

    found = datasets(root)
    with gr.Tab("Transfer", id="transfer"):
        with gr.Row():
            with gr.Column(scale=1):
                data = gr.Dropdown(found, value=found[0] if found else None, label="dataset (under --data-root)",
                                   allow_custom_value=False)
                model = gr.Dropdown(models.specs, value=models.specs[0], label="backbone")
                per_class = gr.Slider(4, 200, value=20, step=2, label="images per class (half for training)")
                head = gr.Dropdown(list(HEADS), value=HEADS[0], label="classifier (svm: the layer × C grid; "
                                   "linear: a logistic regression; mlp: a head trained by gradient)")
                tune = gr.Dropdown(["none", "last:1", "all"], value="none", allow_custom_value=True,
                                   label="fine-tune the backbone too (none, its last N units as last:N, or all): a "
                                         "fixed schedule whose final weights are kept")
                go = gr.Button("Train", variant="primary", elem_id="transfer-go")
                photo = gr.Image(type="filepath", label="then: a photo to classify", sources=["upload", "clipboard"])
                predict = gr.Button("Classify with the trained classifier")
                answer = gr.Label(num_top_classes=5, label="predicted class")
            with gr.Column(scale=2):
                text = gr.Markdown(elem_id="transfer-text")
                # the SVM's layer × C grid, or a trained head's validation curve: each with its own headers
                table = gr.Dataframe(headers=GRID_HEADERS, label="the SVM's layer × C grid, or a trained head's "
                                     "validation curve (test accuracy: the line above, scored once on test)")
                confusion = gr.Plot(label="confusion matrix (test split)")
        classifier = gr.State(None)

    @friendly
    def train_fn(name, spec, n, kind="svm", tune="none", progress=gr.Progress(track_tqdm=True)):
        folder = inside(root, name, "a dataset", "to train on a dataset")
        n = int(n)
        epochs: queue.Queue = queue.Queue()
        done: dict = {}

        def run():
            route = {"head": kind or "svm", "finetune": tune or "none"}
            grid = ({"layers": [models.get(spec).default_layer], "Cs": [1.0, 0.1, 0.01],
                     "folds": min(3, max(2, n // 4))} if route == {"head": "svm", "finetune": "none"} else {})
            try:
                done["result"] = transfer(
                    folder, models.get(spec), split=f"random:{max(2, n // 2)}", limit_per_class=n, workers=0,
                    cache=False, progress=True, on_epoch=epochs.put, **route, **grid)
            except Exception as exc:  # noqa: BLE001 — handed to the page below
                done["error"] = exc
            epochs.put(None)

        # the caller's context goes with the thread, so the page's progress bar still follows tqdm
        threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True).start()
        curve = []
        while (row := epochs.get()) is not None:  # a head's validation curve as it trains
            curve.append(row)
            seen = (f", validation loss {row['val_loss']:.3f}, accuracy {row['val_accuracy']:.3f}"
                    if row.get("val_loss") is not None else "")
            yield (f"training the {kind} head{_tuned(tune)}: epoch {row['epoch']}{seen}", _curve_table(curve),
                   gr.skip(), gr.skip())
        if "error" in done:
            raise done["error"]
        result = done["result"]
        s = result.summary()
        sel = s["selected"]
        if s["grid"]:
            rows = {"headers": GRID_HEADERS, "data": [[g["layer"], g["C"], round(g["cv_accuracy"], 4),
                                                       round(g["test_accuracy"], 4)] for g in s["grid"]]}
            how = f"selected {sel['layer']}, C = {sel['C']:g}"
        else:
            rows = _curve_table(s["history"])
            how = (f"a logistic regression (C = {s['history'][0]['C']:g}, fitted to convergence)" if sel["head"] ==
                   "linear" and sel["finetune"] == "none" else
                   f"{sel['head']} head{_tuned(sel['finetune'])}, weights of epoch {sel['epoch']} ({sel['rule']})")
        text = (f"**{name}**: {s['n_train']} training / {s['n_test']} test images, {len(s['classes'])} classes; "
                f"{how}: test accuracy **{sel['test_accuracy']:.3f}**.")
        yield text, rows, result.figure(), result.classifier

    @friendly
    def predict_fn(image, clf):
        if clf is None:
            raise CnnlabError("train a classifier first (the Train button)")
        x = read_upload(image, max_pixels)
        results, _ = clf.top({"photo": x}, k=5)
        return {t["label"]: t["prob"] for t in results[0]["top"]}

    go.click(train_fn, [data, model, per_class, head, tune], [text, table, confusion, classifier],
             api_name="transfer", preprocess=False)
    predict.click(predict_fn, [photo, classifier], answer, api_name="transfer_predict", preprocess=False)


def _tuned(finetune: str | None) -> str:
    return "" if finetune in (None, "", "none") else f", fine-tuned {finetune}"


GRID_HEADERS = ["layer", "C", "CV accuracy", "test accuracy"]
CURVE_HEADERS = ["epoch", "training loss", "validation accuracy", "validation loss"]


def _curve_rows(history: list[dict]) -> list[list]:
    """A head's validation curve as table rows: epoch, training loss, validation accuracy, validation loss."""
    num = lambda v: None if v is None or v != v else round(v, 4)  # noqa: E731  (None, NaN: not measured)
    return [[f"epoch {h['epoch']}", num(h["loss"]), num(h["val_accuracy"]), num(h.get("val_loss"))] for h in history]


def _curve_table(history: list[dict]) -> dict:
    """The validation curve in the table, under its own headers (not the SVM grid's)."""
    return {"headers": CURVE_HEADERS, "data": _curve_rows(history)}
