import json

from cnnlab.cli import main


def test_demo_runs_offline_and_does_what_it_says(tmp_path, tiny_scenes, capsys):
    """Each line of the demo is a claim, checked: the photos' classes, 3 training images per class and a held-out
    score above chance, a Grad-CAM for the predicted class, a fooling image that is fooling once saved as the PNG it
    points to, a class visualization the network scores as its class, and every figure it names."""
    out = tmp_path / "demo"
    env = {"CNNLAB_CACHE": str(tmp_path / "cache")}
    code = main(["demo", "--data", str(tiny_scenes), "--out", str(out), "--quiet", "--json"], env=env)
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    for name in ("classify.png", "saliency.png", "fooling.png", "classviz.png", "digits.png", "metrics.json"):
        assert (out / name).is_file(), name
    tops = {c["image"]: c["top"][0]["index"] for c in summary["classify"]}
    assert 281 <= tops["chelsea"] <= 285 and tops["coffee"] in (967, 968)

    t = summary["transfer"]  # 3 classes × 6 images: 3 per class to train, 3 to test
    assert (t["n_train"], t["n_test"]) == (9, 9) and (out / "transfer" / "results.md").is_file()
    assert t["selected"]["test_accuracy"] >= 6 / 9  # chance is 1/3: Lite0's features separate coast, forest, kitchen

    e = summary["explain"]
    assert e["saliency_target"] == tops["chelsea"]  # the map is of the class the network sees
    assert e["fool_success"] and e["fool_linf"] <= 8 / 255 + 1e-6  # a change of a few 1/255 steps
    assert e["classviz_prob"] > 0.5

    # "the photo itself: fooled.png (try `cnnlab classify` on it)": saved in 8 bits, it still reads as the target
    code = main(["classify", str(out / "fooled.png"), "--json", "--quiet"], env=env)
    assert code == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["top"][0]["label"] == "tarantula"
