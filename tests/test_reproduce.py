import json
import shutil

import pytest
import torch

from cnnlab.cli import main
from cnnlab.core.errors import CnnlabError
from cnnlab.report.reproduce import reproduce, select

from .conftest import chromium_path, launch_chromium, shared

REQUIRED_IDS = [
    "transfer/Q1.1", "transfer/Q1.3", "transfer/Q2-3.10", "transfer/Q2-3.11", "transfer/Q2-4.12",
    "explain/Q1.1", "explain/Q1.4", "explain/trust", "explain/Q2.5", "explain/Q2.7", "explain/Q3.8", "explain/Q3.9", "explain/Q3.10",
    "explain/Q3.11",
    "gan/Q1-2.4", "gan/Q1-2.5", "gan/Q2-2.10", "gan/Q2-2.11", "gan/Q2-3.12",
]
# A tiny configuration: the offline backbone, a few images, a few iterations
SMOKE = {
    "explain/Q2.5": {"limit": 2, "methods": ["minimal"]},
    "gan/Q1-2.4": {"iters": 2, "batch": 8, "ngf": 8, "ndf": 8, "fd_n": 8},
}
CHROMIUM = chromium_path()


def test_list_covers_the_report_with_stable_ids(capsys):
    assert main(["reproduce", "--list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["experiments"]
    assert [e["id"] for e in listed] == REQUIRED_IDS  # the report's order
    assert all(set(e) == {"id", "title", "section"} and e["title"] for e in listed)
    assert main(["reproduce", "--list"]) == 0
    assert "gan/Q2-2.11" in capsys.readouterr().out


def test_selection_by_id_and_part_and_unknown_ids():
    assert [e.id for e in select("gan/Q2-2.11,transfer/Q1.1")] == ["transfer/Q1.1", "gan/Q2-2.11"]
    assert [e.id for e in select("transfer")] == REQUIRED_IDS[:5]
    with pytest.raises(CnnlabError, match=r"did you mean .*gan/Q2-2\.10"):
        select("gan/Q2-2.1O")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Two experiments end to end (one needs no data, one trains a GAN and measures it with Lite0), plus one that
    fails for want of its data: the report is written all the same."""
    out = tmp_path_factory.mktemp("report")
    root = tmp_path_factory.mktemp("root")
    (root / "celeba64").symlink_to(shared("celeba64"))  # faces only: 15-Scene is absent
    result = reproduce(out, "transfer/Q1.3,transfer/Q2-4.12,gan/Q1-2.4", data_root=str(root),
                       cache_dir=str(out / "cache"), overrides=SMOKE, progress=False)
    return out, result.summary()


def test_smoke_report_runs_and_isolates_failures(report):
    out, summary = report
    status = {e["id"]: e["status"] for e in summary["experiments"]}
    assert status == {"transfer/Q1.3": "ok", "transfer/Q2-4.12": "failed", "gan/Q1-2.4": "ok"}
    results = json.loads((out / "results.json").read_text())
    by_id = {e["id"]: e for e in results["experiments"]}
    assert "needs" in by_id["transfer/Q2-4.12"]["error"] and "15scene" in by_id["transfer/Q2-4.12"]["error"]
    assert (out / "transfer_Q2-4.12" / "error.txt").is_file()
    top5 = by_id["transfer/Q1.3"]["metrics"]["efficientnet_lite0"]
    assert "cat" in top5["chelsea"][0]["label"]
    dcgan = by_id["gan/Q1-2.4"]
    assert dcgan["metrics"]["fd"] > dcgan["metrics"]["fd_real_vs_real"] > 0  # 2 iterations are far from faces
    assert dcgan["settings"]["iters"] == 2 and dcgan["claim"] and dcgan["wall_s"] > 0
    for e in (by_id["transfer/Q1.3"], dcgan):
        assert e["figures"] and all((out / f["path"]).is_file() for f in e["figures"])


def test_finished_experiments_are_not_rerun_unless_their_settings_change(report, tmp_path):
    out = tmp_path / "report"
    shutil.copytree(report[0], out, symlinks=True)
    again = reproduce(out, "transfer/Q1.3,gan/Q1-2.4", data_root=out.parent / "no-data", cache_dir=out / "cache",
                      overrides=SMOKE, progress=False).summary()
    assert [e["cached"] for e in again["experiments"]] == [True, False]  # the data root is part of Q1-2.4's config
    assert again["experiments"][1]["status"] == "failed"
    changed = reproduce(out, "transfer/Q1.3", cache_dir=out / "cache", progress=False,
                        overrides={"transfer/Q1.3": {"backbones": ["efficientnet_lite0", "vgg16"]}}).summary()
    assert changed["experiments"][0]["cached"] is False


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")
def test_the_page_loads_in_headless_chromium_with_every_figure(report):
    from playwright.sync_api import sync_playwright

    out, _ = report
    ids = [e["id"] for e in json.loads((out / "results.json").read_text())["experiments"]]
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((out / "index.html").as_uri(), wait_until="load")
            widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
            sections = page.eval_on_selector_all("section.experiment", "els => els.map(e => e.dataset.id)")
            title = page.title()
        finally:
            browser.close()
    assert "cnnlab" in title and not errors
    assert len(widths) >= 3 and all(w > 0 for w in widths)
    assert sorted(sections) == sorted(ids) and set(ids) >= {"transfer/Q1.3", "transfer/Q2-4.12", "gan/Q1-2.4"}


def test_cli_reproduce_exit_status_and_json(tmp_path, capsys):
    assert main(["reproduce", "--only", "transfer/Q1.1", "--out", str(tmp_path), "--json"], env={}) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["summary"] == {**s["summary"], "n": 1, "ok": 1, "failed": 0}
    assert (tmp_path / "index.html").is_file() and s["index"] == str(tmp_path / "index.html")
    q11 = json.loads((tmp_path / "results.json").read_text())["experiments"][0]
    assert q11["metrics"]["fc_parameters"] == 123_642_856 and q11["metrics"]["matches_report"]
    # no data root: the experiment fails with a one-line reason, the command exits 1
    assert main(["reproduce", "--only", "gan/Q2-2.11", "--out", str(tmp_path)], env={}) == 1
    err = capsys.readouterr().err
    assert "gan/Q2-2.11" in err and "Traceback" not in err
    assert main(["reproduce", "--only", "nope", "--out", str(tmp_path)], env={}) == 2
    assert main(["reproduce"], env={}) == 2


def test_frechet_distance_in_backbone_features(lite0):
    from cnnlab.gan.evaluation import frechet_distance

    g = torch.Generator().manual_seed(0)
    a = torch.rand(12, 3, 64, 64, generator=g)
    b = torch.rand(12, 3, 64, 64, generator=g)
    same = frechet_distance(a, a, lite0)
    assert abs(same) < 1e-2 * frechet_distance(a, b.clamp(0.5, 1), lite0)
    assert frechet_distance(a, b, lite0) < frechet_distance(a, b * 0.2, lite0)


def test_over_seeds_is_the_mean_with_the_sample_sd():
    from cnnlab.report.lab_gan import over_seeds

    one = {"fd": 1.0, "final": {"loss_D": 2.0}, "model": "cdcgan"}
    assert over_seeds([one]) is one  # one seed: the run as it is
    two = over_seeds([one, {"fd": 3.0, "final": {"loss_D": 4.0}, "model": "cdcgan"}])
    assert two["fd"] == 2.0 and two["final"] == {"loss_D": 3.0} and two["model"] == "cdcgan"
    assert two["sd"]["fd"] == pytest.approx(2 ** 0.5) and two["sd"]["final"]["loss_D"] == pytest.approx(2 ** 0.5)
    assert [r["fd"] for r in two["per_seed"]] == [1.0, 3.0]


def test_a_gan_comparison_over_two_seeds_shows_mean_and_sd(tmp_path):
    mnist = shared("MNIST")  # skips without the shared digits
    tiny = {"iters": 2, "batch": 8, "grid_at": [2], "eval_n": 40, "seeds": [0, 1]}
    root = tmp_path / "root"
    root.mkdir()
    (root / "MNIST").symlink_to(mnist)
    result = reproduce(tmp_path / "r", "gan/Q2-2.11", data_root=str(root), cache_dir=str(tmp_path / "cache"),
                       overrides={"gan/Q2-2.11": tiny}, progress=False).summary()
    assert result["experiments"][0]["status"] == "ok", result
    e = json.loads((tmp_path / "r" / "results.json").read_text())["experiments"][0]
    with_y = e["metrics"]["with_y"]
    runs = with_y["per_seed"]
    assert len(runs) == 2 and runs[0]["fd"] != runs[1]["fd"]  # two trainings, not one counted twice
    assert with_y["fd"] == pytest.approx((runs[0]["fd"] + runs[1]["fd"]) / 2)
    cells = e["tables"][0]["rows"][0]
    assert cells[2] == f"{with_y['fd']:.1f} ± {with_y['sd']['fd']:.1f}" and "± " in cells[1]
    assert "mean ± sd over 2 seeds" in e["result"]
