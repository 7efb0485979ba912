"""`cnnlab explain evaluate`: the metrics on hand-checkable cases (ROAD's imputation, its curves, the ratio of means,
the last randomization step), the leaderboard (intervals, ranks, absent metrics), and the job on the runner (streamed
equals in memory, two torchrun processes equal one, the CLI's JSON keys)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import cnnlab
from cnnlab.core.errors import CnnlabError
from cnnlab.core.precision import resolve_precision
from cnnlab.cli import main
from cnnlab.explain.metrics import METRICS, PANELS, Deletion, Randomization, metric, noisy_linear_imputation, road_curves
from cnnlab.explain.saliency import method as make_method
from cnnlab.explain.sanity import model_randomization

from .conftest import tiny_model

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """9 small RGB photos (one unreadable file among them) and 6 digit-sized grey ones."""
    folder = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(0)
    rgb = []
    for k in range(9):
        p = folder / f"im{k}.png"
        Image.fromarray(rng.integers(0, 256, (30, 34, 3), dtype=np.uint8)).save(p)
        rgb.append(p)
    rgb[4].write_bytes(b"not an image")
    grey = []
    for k in range(6):
        p = folder / f"digit{k}.png"
        a = np.zeros((28, 28), np.uint8)
        a[6 + k:20, 8:12 + k] = 255  # a stroke
        Image.fromarray(a).save(p)
        grey.append(p)
    return {"rgb": rgb, "grey": grey}


# ------------------------------------------------------------------------------------------------ the metrics
def test_imputation_reproduces_a_linear_image_and_keeps_the_known_pixels():
    yy, xx = np.mgrid[:12, :15].astype(float)
    image = np.stack([0.3 * yy - 0.1 * xx + 1, 0.02 * xx, 0 * xx + 0.5])
    removed = np.zeros((12, 15), bool)
    removed[2:9, 3:7] = removed[5, 10:13] = True  # interior holes: a neighbour mean of a linear image is itself
    damaged = image.copy()
    damaged[:, removed] = 7.0
    np.testing.assert_allclose(noisy_linear_imputation(damaged, removed, noise=0.0), image, atol=1e-12)
    noisy = noisy_linear_imputation(damaged, removed, noise=0.05, rng=np.random.default_rng(1))
    assert np.array_equal(noisy[:, ~removed], image[:, ~removed])
    assert 0.03 < (noisy - image)[:, removed].std() < 0.07
    again = noisy_linear_imputation(damaged, removed, noise=0.05, rng=np.random.default_rng(1))
    assert np.array_equal(noisy, again)


class CentreModel(nn.Module):
    """Class 0's logit is 8 × the mean of the centre 4×4 of an 8×8 grey image; class 1's is 2."""

    def forward(self, x):
        return torch.stack([8 * x[:, 0, 2:6, 2:6].mean((1, 2)), torch.full((len(x),), 2.0)], 1)


def test_road_removing_the_evidence_first_drops_the_class_and_removing_the_rest_does_not():
    model = cnnlab.wrap(CentreModel(), mean=(0.0,), std=(1.0,), input_size=8, labels=["centre", "flat"])
    x = torch.zeros(1, 1, 8, 8)
    x[:, :, 2:6, 2:6] = 1.0
    sal = x[:, 0] + 0.01 * torch.rand(1, 8, 8)  # the centre is where the evidence is
    p0 = float(model(x).softmax(1)[0, 0])
    morf, _ = road_curves(model, x, sal, [0], most_relevant_first=True, noise=0.0)
    lerf, hits = road_curves(model, x, sal, [0], most_relevant_first=False, noise=0.0)
    # the background is 48 of 64 pixels: up to 70 % removed least-relevant first, the centre is untouched
    torch.testing.assert_close(lerf[0, :7], torch.full((7,), p0))
    assert hits[0, :7].all()
    # from 30 % most-relevant first (19 pixels ≥ the centre's 16), every centre pixel is imputed from the black
    # background: class 0's logit is 0, its probability 1 / (1 + e²)
    torch.testing.assert_close(morf[0, 2:], torch.full((7,), 1 / (1 + np.e ** 2)), atol=1e-6, rtol=0)
    assert morf[0, 0] < p0 and morf[0].mean() < lerf[0].mean()
    flat = torch.full((1, 1, 8, 8), 0.4)  # nothing to impute: any order keeps the image as it was
    torch.testing.assert_close(road_curves(model, flat, sal, [0], noise=0.0)[0],
                               torch.full((1, 9), float(model(flat).softmax(1)[0, 0])))


def test_deletion_ratio_is_a_ratio_of_means_and_randomization_is_the_last_cascading_step():
    values = {"deletion_auc": np.array([[0.1, 0.3]]), "random_deletion_auc": np.array([[0.2, 0.4]])}
    assert Deletion().aggregate("deletion_ratio", values)[0] == pytest.approx(0.2 / 0.3)
    model = cnnlab.load_model("mnist_cnn")
    x, targets = torch.rand(3, 1, 28, 28), torch.tensor([1, 4, 7])
    method = make_method("vanilla")  # (a random model's Grad-CAM of noise is constant: undefined)
    maps = method.attribute(model, x, targets)
    got, _ = Randomization(randomization_seed=3).score(model, x, targets, maps, method, {}, [0, 1, 2])
    cascade = model_randomization(model, x, targets, method, seed=3)
    torch.testing.assert_close(got["randomization_rank_corr"], cascade.rank_corr[-1])
    assert set(METRICS) == {"deletion", "insertion", "road", "randomization", "deletion-black", "insertion-black",
                            "deletion-pixel", "insertion-pixel"}
    assert metric("road", road_noise=0.5).road_noise == 0.5
    with pytest.raises(CnnlabError, match="unknown option 'random_orders' for the saliency metric road"):
        metric("road", road_noise=0.5, random_orders=3)  # an option it does not take: refused, as everywhere


# ------------------------------------------------------------------------------------------------ the job
def test_the_leaderboard_streamed_equals_in_memory_with_intervals_and_ranks(images, tmp_path):
    model = tiny_model(input_size=28)
    opts = dict(methods=["vanilla", "gradcam", "input-x-gradient"], metrics=["deletion", "road", "randomization"],
                random_orders=1, batch_size=2, chunk_size=4, bootstrap=200)
    a = cnnlab.evaluate_saliency(model, images["rgb"], **opts)
    b = cnnlab.evaluate_saliency(model, images["rgb"], out=tmp_path / "e", **opts)
    assert len(a) == len(b) == 8 and len(a.skipped) == 1
    strip = lambda board: [{k: v for k, v in r.items() if k != "seconds_per_image"} for r in board]  # noqa: E731
    assert strip(a.leaderboard) == strip(b.leaderboard)
    no_time = lambda rows: [{m: {k: v for k, v in s.items() if k != "seconds"} for m, s in r["scores"].items()}  # noqa: E731
                            for r in rows]
    assert no_time(a.rows) == no_time(b.rows)
    for m in opts["methods"]:
        assert np.array_equal(a.curves(m, "road_morf"), b.curves(m, "road_morf"))
    assert a.curves("random", "deletion").shape == (8, PANELS["fast"].steps + 1)  # the default panel's points
    assert a.curves("vanilla", "road_morf").shape == (8, len(PANELS["fast"].road_percentages))
    full = cnnlab.evaluate_saliency(model, images["rgb"][:2], panel="full", **opts)
    assert full.curves("random", "deletion").shape == (len(full), 29)
    assert full.curves("vanilla", "road_morf").shape == (len(full), 9)
    for row in a.leaderboard:
        assert {"deletion_ratio", "road_morf", "road_lerf", "randomization_rank_corr", "seconds_per_image"} <= set(row)
        assert "insertion_ratio" not in row  # not asked
        for col, (lo, hi) in row["ci"].items():
            assert lo <= row[col] + 1e-9 and row[col] <= hi + 1e-9
        # 8 images: under the check's minimum, no verdict, and it says so (the test model has no shipped one)
        assert row["sanity"] == "no verdict" and row["verdict"].startswith("no verdict on 8 images")
        # one forward and one backward pass per image for each of these methods; the input-only controls: none
        assert row["passes_per_image"] == (0 if row["control"] else 2)
    assert a.summary().get("recommended") is None and "no ★ on 8 images" in a.text()
    for col, higher in a.columns.items():  # rank 1 is the best value of the column; a control is not ranked
        best = (max if higher else min)(a.leaderboard, key=lambda r: r[col])
        assert best["rank"][col] == 1 if col != "randomization_null" else col not in best["rank"]
    # the per-image numbers are the metric's own on the same maps
    ratio = a.values("gradcam", "deletion_auc").mean() / a.values("gradcam", "random_deletion_auc").mean()
    assert a.leaderboard[1]["deletion_ratio"] == pytest.approx(ratio)
    run = b.save(tmp_path / "e")
    for name in ("leaderboard.md", "leaderboard.csv", "metrics.json", "leaderboard.png", "results.jsonl",
                 "config.json"):
        assert (run / name).is_file(), name
    assert (run / "leaderboard.md").read_text().startswith("| method | deletion_ratio ↓")


def test_a_rerun_redoes_only_the_missing_part(images, tmp_path):
    opts = dict(methods=["gradcam", "iterated-gradcam"], metrics=["deletion", "road"], random_orders=1, batch_size=2,
                chunk_size=2, figure_steps=False)
    first = cnnlab.evaluate_saliency(tiny_model(input_size=28), images["rgb"], out=tmp_path / "r", **opts)
    parts = sorted((tmp_path / "r" / "parts").glob("part-*.jsonl"))
    kept = {p.name: p.stat().st_mtime_ns for p in parts[:-1]}
    parts[-1].unlink()  # as if the run had been killed before its last chunk
    again = cnnlab.evaluate_saliency(tiny_model(input_size=28), images["rgb"], out=tmp_path / "r", **opts)
    assert all((tmp_path / "r" / "parts" / name).stat().st_mtime_ns == t for name, t in kept.items())
    strip = lambda board: [{k: v for k, v in r.items() if k != "seconds_per_image"} for r in board]  # noqa: E731
    assert strip(first.leaderboard) == strip(again.leaderboard)


def test_a_rerun_reuses_parts_unless_an_option_the_methods_read_changed(images, tmp_path):
    opts = dict(methods=["gradcam"], metrics=["deletion"], random_orders=1, batch_size=2, chunk_size=2,
                figure_steps=False)
    cnnlab.evaluate_saliency(tiny_model(input_size=28), images["rgb"], out=tmp_path / "r", **opts)
    stamps = lambda: {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r" / "parts").glob("*")}  # noqa: E731
    before = stamps()
    # the internal batch (memory only): every part is reused
    cnnlab.evaluate_saliency(tiny_model(input_size=28), images["rgb"], out=tmp_path / "r", internal_batch_size=5,
                             **opts)
    assert stamps() == before
    # an option of a method not asked for is refused (one policy), before any work
    with pytest.raises(CnnlabError, match="--candidates is an option of iterated-gradcam, not of gradcam, deletion"):
        cnnlab.evaluate_saliency(tiny_model(input_size=28), images["rgb"], out=tmp_path / "r", candidates=3, **opts)
    cnnlab.evaluate_saliency(tiny_model(input_size=28), images["rgb"], out=tmp_path / "r", random_orders=2,
                             **{k: v for k, v in opts.items() if k != "random_orders"})
    assert all(stamps()[name] != t for name, t in before.items())  # a metric's setting: every part redone
    before = stamps()
    cnnlab.evaluate_saliency(tiny_model(input_size=28), images["rgb"], out=tmp_path / "r", layer=["0"],
                             random_orders=2, **{k: v for k, v in opts.items() if k != "random_orders"})
    assert all(stamps()[name] != t for name, t in before.items())  # Grad-CAM's own layer: redone


def test_two_runs_joined_give_the_board_of_one_run_with_both_methods(images):
    from cnnlab.explain.leaderboard import leaderboard

    opts = dict(metrics=["deletion", "insertion"], random_orders=1, batch_size=3, figure_steps=False, controls=False)
    both = cnnlab.evaluate_saliency(tiny_model(input_size=28), images["rgb"], methods=["gradcam", "vanilla"], **opts)
    runs = [cnnlab.evaluate_saliency(tiny_model(input_size=28), images["rgb"], methods=[m], **opts)
            for m in ("gradcam", "vanilla")]
    joined = [{**a, "scores": {**a["scores"], **b["scores"]}} for a, b in zip(runs[0].rows, runs[1].rows)]
    board = leaderboard(joined, ["gradcam", "vanilla"], both.metrics)
    strip = lambda board: [{k: v for k, v in r.items() if k != "seconds_per_image"} for r in board]  # noqa: E731
    assert strip(board) == strip(both.leaderboard)
    # rows are typed (BoardRow): attributes, and the dict --json writes (a row equals it)
    from cnnlab.explain.leaderboard import BoardRow

    row = both.leaderboard[0]
    assert isinstance(row, BoardRow) and row.method == "gradcam" and row == both.summary()["leaderboard"][0]
    assert row.values["deletion_ratio"] == row["deletion_ratio"] and row.rank == row["rank"]
    assert list(row)[0] == "method" and row.sanity is None and "sanity" not in row  # no randomization asked
    assert type(both.summary()["leaderboard"][0]) is dict
    # a column one method lacks is left out of its row and of the ranks
    del joined[0]["scores"]["vanilla"]["insertion_auc"]
    board = leaderboard(joined, ["gradcam", "vanilla"], both.metrics)
    assert "insertion_ratio" not in board[1] and board[0]["rank"]["insertion_ratio"] == 1
    assert board[1]["rank"]["deletion_ratio"] == both.leaderboard[1]["rank"]["deletion_ratio"]


def test_cli_json_keys_and_two_torchrun_processes_equal_one(images, tmp_path, capsys):
    args = ["explain", "evaluate", *map(str, images["grey"]), "--backbone", "mnist_cnn", "--methods",
            "gradcam,vanilla", "--metrics", "deletion,insertion,road,randomization", "--random-orders", "1",
            "--chunk-size", "2", "--batch-size", "2", "--quiet", "--no-figure-steps"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29573",
                          "-m", "cnnlab", *args, "--json", "--out", str(tmp_path / "two")], env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-1500:]
    b = json.loads(two.stdout)
    assert b["n"] == 6 and [r["method"] for r in b["leaderboard"]] == ["gradcam", "vanilla", "brightness", "edges"]
    keys = {"method", "deletion_ratio", "insertion_ratio", "road_morf", "road_lerf", "randomization_rank_corr",
            "seconds_per_image"}
    assert keys <= set(b["leaderboard"][0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the processes ran: the same summation order, the same numbers
    try:
        one = cnnlab.evaluate_saliency("mnist_cnn", images["grey"], methods=["gradcam", "vanilla"], random_orders=1,
                                       chunk_size=2, batch_size=2, figure_steps=False)
    finally:
        torch.set_num_threads(threads)
    strip = lambda board: [{k: v for k, v in r.items() if k != "seconds_per_image"} for r in board]  # noqa: E731
    assert strip(json.loads(json.dumps(one.to_json()))["leaderboard"]) == strip(b["leaderboard"])
    assert main(["explain", "evaluate", str(images["grey"][0]), "--backbone", "mnist_cnn", "--metrics",
                 "deletoin"]) == 2
    assert "deletion" in capsys.readouterr().err  # the suggestion
    assert main(["explain", "saliency", *map(str, images["grey"][:2]), "--backbone", "mnist_cnn", "--method", "gradcam",
                 "--metrics", "--random-orders", "1", "--quiet", "--json", "--out", str(tmp_path / "s")]) == 0
    s = json.loads(capsys.readouterr().out)
    assert set(s["summary"]) >= {"n", "deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"}


def test_a_registry_model_on_real_photos(photo_files):
    res = cnnlab.evaluate_saliency("efficientnet_lite0", [photo_files["chelsea"]], methods=["gradcam", "vanilla"],
                                   metrics=["deletion"], random_orders=1)
    board = {r["method"]: r for r in res.leaderboard}
    assert board["gradcam"]["deletion_ratio"] < board["vanilla"]["deletion_ratio"]  # as measured at scale


def test_saliency_metrics_score_the_target_the_map_was_made_for(images):
    model = tiny_model(input_size=28)
    one = images["rgb"][:1]
    pred = int(cnnlab.saliency(model, one, method="gradcam").preds[0])
    other = f"c{(pred + 1) % 5}"
    s = cnnlab.saliency(model, one, method="gradcam", target=other, metrics=True, random_orders=1)
    e = cnnlab.evaluate_saliency(model, one, methods=["gradcam"], metrics=["deletion", "insertion"], target=other,
                                 random_orders=1, panel="full", precision="fp32")  # the saliency job's --metrics
    for key in ("deletion_auc", "insertion_auc"):
        assert float(s.scores[key][0]) == pytest.approx(e.rows[0]["scores"]["gradcam"][key])
    mine = cnnlab.saliency(model, one, method="gradcam", metrics=True, random_orders=1)  # the predicted class's
    assert float(mine.scores["deletion_auc"][0]) != pytest.approx(float(s.scores["deletion_auc"][0]))
    assert all(r["sanity"] == "no verdict" for r in cnnlab.evaluate_saliency(  # 3 images: 2 pairings for the null
        model, images["rgb"][:3], methods=["vanilla"], metrics=["randomization"]).leaderboard)


def test_the_faithfulness_panel_and_its_aggregate_rank(images):
    """The panel varies what is removed (patches, pixels) and how (blur, black, ROAD's imputation); a method's
    aggregate rank is its mean rank over the panel's columns, with an interval, and a method that queries the model
    with the panel's own perturbation is marked."""
    from cnnlab.explain.faithfulness import deletion_insertion

    model = tiny_model(input_size=28)
    panel = ["deletion", "insertion", "deletion-black", "insertion-black", "deletion-pixel", "insertion-pixel", "road"]
    ev = cnnlab.evaluate_saliency(model, images["rgb"][:3], methods=["vanilla", "gradcam", "iterated-gradcam"],
                                  metrics=panel, random_orders=1, batch_size=2, bootstrap=100, stages=3, candidates=0,
                                  panel="full", precision="fp32")  # fp32 scoring, as the direct calls below
    x = torch.stack([model.preprocess(torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
                                      .float() / 255) for p in images["rgb"][:3]])
    maps = make_method("gradcam").attribute(model, x, model(x).argmax(1))
    for fill, patch, key in (("black", None, "deletion_black"), ("blur", 1, "deletion_pixel")):
        direct = deletion_insertion(model, x, maps, model(x).argmax(1), patch, fill=fill, n_random=0,
                                    kinds=("deletion",))["deletion_auc"]
        np.testing.assert_allclose(ev.values("gradcam", f"{key}_auc"), direct.numpy(), rtol=1e-5)
    cols = ["deletion_ratio", "insertion_ratio", "deletion_black_ratio", "insertion_black_ratio",
            "deletion_pixel_ratio", "insertion_pixel_ratio", "road_morf", "road_lerf"]
    by_hand = {}
    for c in cols:  # rank of each method in the column, ties sharing the better rank
        up = ev.columns[c]
        for r in ev.leaderboard:
            by_hand.setdefault(r["method"], []).append(1 + sum((o[c] > r[c]) if up else (o[c] < r[c])
                                                               for o in ev.leaderboard))
    for r in ev.leaderboard:
        assert r["aggregate_over"] == cols
        assert r["aggregate_rank"] == pytest.approx(np.mean(by_hand[r["method"]]))
        lo, hi = r["ci"]["aggregate_rank"]
        assert 1 <= lo <= hi <= len(ev.leaderboard)  # the three methods and the two input-only controls
        assert r["queries_panel"] == (r["method"] == "iterated-gradcam")
    assert "iterated-gradcam †" in ev.markdown() and "aggregate_rank ↓" in ev.markdown()


def test_the_recommended_method_passes_the_check_stays_cheap_and_does_not_query_the_panel():
    from cnnlab.explain.leaderboard import recommended

    def row(method, rank, sanity="passes", panel=False, passes=2):
        return {"method": method, "aggregate_rank": rank, "sanity": sanity, "queries_panel": panel,
                "seconds_per_image": 0.2, "passes_per_image": passes}

    board = [row("gamer", 1.0, panel=True), row("slow", 1.5, passes=64), row("insane", 2.0, sanity="fails"),
             row("constant", 2.2, sanity="undefined"), row("few", 2.5, sanity="no verdict"), row("honest", 3.0),
             row("worse", 4.0)]
    assert recommended(board)["method"] == "honest"
    assert recommended(board, budget=64)["method"] == "slow"
    assert recommended([row("insane", 1.0, sanity="fails")]) is None


def test_the_star_reads_counted_passes_not_the_clock():
    """A loaded machine multiplies every method's seconds: the ★ stays where it was. A better-ranked method over the
    pass budget, or failing the check, is passed over and the reason is given."""
    from cnnlab.explain.leaderboard import DEFAULT_BUDGET, recommended

    def row(method, rank, passes, seconds, sanity="passes"):
        return {"method": method, "aggregate_rank": rank, "passes_per_image": passes, "seconds_per_image": seconds,
                "sanity": sanity, "verdict": f"{sanity} on these 12 images", "queries_panel": False}

    quiet = [row("smoothgrad-gradcam", 1.5, 34, 4.4), row("gradcam", 2.0, 2, 0.12), row("layercam", 2.5, 2, 0.11),
             row("vanilla", 1.0, 2, 0.05, sanity="fails")]
    loaded = [dict(r, seconds_per_image=r["seconds_per_image"] * 14) for r in quiet]
    loaded[1]["seconds_per_image"] = 1.70  # Grad-CAM slowed past the former 1 s budget by other work
    a, b = recommended(quiet), recommended(loaded)
    assert a["method"] == b["method"] == "gradcam" and a["why"] == b["why"]
    assert "vanilla (fails on these 12 images)" in a["why"] and "smoothgrad-gradcam (34 passes per image)" in a["why"]
    assert recommended(quiet, budget=34)["method"] == "smoothgrad-gradcam" and DEFAULT_BUDGET < 34


def test_below_the_minimum_of_images_every_face_says_no_verdict_and_shows_the_shipped_one():
    from cnnlab.explain.verdicts import MIN_VERDICT_IMAGES, board_verdict, shipped

    few = board_verdict("layercam", 0.0, MIN_VERDICT_IMAGES - 1, "mnist_cnn")
    assert few["sanity"] == "no verdict" and few["verdict"].startswith(f"no verdict on {MIN_VERDICT_IMAGES - 1} images")
    ship = shipped("mnist_cnn", "layercam")
    assert ship is not None and few["shipped"] == ship
    assert ("shipped: passes" if ship["passes"] else "shipped: FAILS") in few["verdict"]
    enough = board_verdict("layercam", 0.5, MIN_VERDICT_IMAGES, "mnist_cnn")
    assert enough["sanity"] == "fails" and enough["verdict"].startswith(f"FAILS on these {MIN_VERDICT_IMAGES} images")
    assert board_verdict("layercam", 0.05, MIN_VERDICT_IMAGES, None)["sanity"] == "passes"


def test_count_passes_counts_images_forward_backward_and_passes_stopped_early():
    from cnnlab.core.hooks import CutPoint, capture, count_passes, run_until_captured

    model = tiny_model(input_size=16)
    x = torch.rand(3, 3, 16, 16, requires_grad=True)
    with count_passes(model.net) as passes:
        model(x).sum().backward()  # 3 images forward, 3 backward
        with torch.no_grad(), capture(model.net, {"a": CutPoint("0")}) as store:
            run_until_captured(model.net, model.normalize(x[:2]))  # stopped after the first layer: 2 more forward
    assert "a" in store and (passes.forward, passes.backward, passes.total) == (5, 3, 8)


def test_curve_ends_are_computed_once_per_image_and_shared(images):
    """Every curve of an image starts and ends at the same two images (the photo, its fully blurred copy): computed
    once per image, the curves are the ones computed point by point; the panel's counted scoring passes are the
    points between (deletion and insertion: steps − 1 each) plus ROAD's, per method and image."""
    from cnnlab.explain.faithfulness import _curves, absent, curve_ends, random_orders

    model = tiny_model(input_size=28)
    x = torch.rand(2, 3, 28, 28)
    target = torch.tensor([1, 0])
    base = absent(x, "blur", 2.0)
    order = random_orders(2, 49, 1, seed=3)[0]
    whole = _curves(model, x, base, order, target, patch=4, steps=7, batch_size=5)
    shared = _curves(model, x, base, order, target, patch=4, steps=7, batch_size=5,
                     ends=curve_ends(model, x, base, target))
    torch.testing.assert_close(shared, whole, rtol=1e-5, atol=1e-6)
    ev = cnnlab.evaluate_saliency(model, images["rgb"][:3], methods=["vanilla", "gradcam"],
                                  metrics=["deletion", "insertion", "road"], bootstrap=10)
    fast = PANELS["fast"]
    expected = 2 * (fast.steps - 1) + 2 * len(fast.road_percentages)
    assert [r["panel_passes_per_image"] for r in ev.leaderboard] == [expected] * 4  # 2 methods, 2 controls
    assert ev.summary()["panel"] == "fast" and ev.summary()["precision"] == resolve_precision("auto", "cpu")


def test_bf16_scoring_moves_the_scores_a_little_and_not_the_maps(images):
    """`precision="bf16"` runs the scoring passes in bf16 (emulated where the CPU lacks it: the same numbers):
    the AUCs move by bf16's rounding, the maps (and so the randomization check) do not."""
    model = tiny_model(input_size=28)
    runs = {p: cnnlab.evaluate_saliency(model, images["rgb"][:3], methods=["gradcam"],
                                        metrics=["deletion", "randomization"], precision=p, bootstrap=10)
            for p in ("fp32", "bf16")}
    assert runs["bf16"].summary()["precision"] == "bf16"
    a, b = (runs[p].values("gradcam", "deletion_auc") for p in ("fp32", "bf16"))
    assert not np.array_equal(a, b)
    np.testing.assert_allclose(a, b, atol=0.02)
    np.testing.assert_array_equal(*(runs[p].values("gradcam", "randomization_rank_corr") for p in ("fp32", "bf16")))
