import json
import os
import subprocess
import sys

import pytest

from cnnlab.cli import build_parser, main

COMMANDS = ["demo", "models", "classify", "features", "transfer", "explain saliency", "explain fool",
            "explain classviz", "explain dream", "explain atlas", "gan train", "gan sample", "gan evaluate", "reproduce", "app"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_documents_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(command.split() + ["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: cnnlab {command}" in text and "--json" in text


def test_transfer_help_names_the_issue_flags(capsys):
    with pytest.raises(SystemExit):
        main(["transfer", "--help"])
    text = capsys.readouterr().out
    for flag in ["--data", "--split", "--seed", "--backbone", "--layers", "--C", "--out", "--json"]:
        assert flag in text


def run_json(argv, capsys):
    code = main(argv + ["--json"], env={})
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_models_json(capsys):
    code, data = run_json(["models", "--backbone", "vgg16", "--backbone", "efficientnet_lite0"], capsys)
    assert code == 0
    vgg, lite = data["backbones"]
    assert vgg["fc_parameters"] == 123_642_856
    assert {"pool5", "fc6", "relu6", "fc7", "relu7", "cut-2", "cut-4"} <= {c["name"] for c in vgg["cut_points"]}
    assert lite["weights_offline"] is True


def test_classify_json_shape_and_skips_bad_files(photo_files, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"garbage")
    code, data = run_json(["classify", str(photo_files["chelsea"]), str(bad), "--topk", "3"], capsys)
    assert code == 0
    (result,) = data["results"]
    assert result["image"] == str(photo_files["chelsea"]) and len(result["top"]) == 3
    assert set(result["top"][0]) == {"index", "label", "prob"} and 281 <= result["top"][0]["index"] <= 285
    assert data["skipped"][0]["image"] == str(bad)


def test_transfer_json_and_run_dir(tiny_scenes, tmp_path, capsys):
    out = tmp_path / "run"
    code, data = run_json(["transfer", "--data", str(tiny_scenes), "--split", "random:3", "--backbone",
                           "efficientnet_lite0", "--layers", "block6,pre_logits", "--C", "1,0.01", "--folds", "3",
                           "--workers", "0", "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--quiet"],
                          capsys)
    assert code == 0
    assert {"backbone", "weights", "split", "seed", "n_train", "n_test", "grid", "selected", "timing"} <= set(data)
    assert (data["n_train"], data["n_test"]) == (9, 9) and len(data["grid"]) == 4
    assert set(data["grid"][0]) == {"layer", "C", "cv_accuracy", "test_accuracy"}
    assert set(data["selected"]) == {"layer", "C", "cv_accuracy", "test_accuracy", "inverse_temperature"}
    assert {"extract_s", "images_per_s", "fit_s"} <= set(data["timing"])
    for name in ["results.md", "results.csv", "metrics.json", "confusion.png", "config.json"]:
        assert (out / name).is_file(), name
    assert "| block6 | 1 |" in (out / "results.md").read_text()
    assert json.loads((out / "metrics.json").read_text())["selected"] == data["selected"]


def test_features_command_writes_npz(tiny_scenes, tmp_path, capsys):
    import numpy as np

    out = tmp_path / "f.npz"
    code, data = run_json(["features", "--data", str(tiny_scenes), "--layers", "block7,pre_logits", "--out", str(out),
                           "--workers", "0", "--no-cache", "--quiet"], capsys)
    assert code == 0 and data["n_images"] == 18 and data["dims"] == {"block7": 320, "pre_logits": 1280}
    assert data["images_per_s"] > 0
    with np.load(out) as z:
        assert z["features/pre_logits"].shape == (18, 1280) and list(z["classes"]) == ["Coast", "Forest", "Kitchen"]


@pytest.mark.parametrize("argv, message", [
    (["classify", "nowhere.jpg"], "no such file or folder"),
    (["classify", "IMG", "--backbone", "resnet05"], "unknown backbone 'resnet05'"),
    (["transfer", "--data", "DATA", "--split", "random:3", "--layers", "pool9"], "unknown cut point 'pool9'"),
    (["transfer", "--data", "missing-folder"], "data folder not found"),
    (["transfer", "--data", "DATA", "--split", "random:x"], "bad split"),
])
def test_bad_input_gives_one_line_error(argv, message, photo_files, tiny_scenes, capsys):
    argv = [str(photo_files["chelsea"]) if a == "IMG" else str(tiny_scenes) if a == "DATA" else a for a in argv]
    assert main(argv + ["--no-cache"] if argv[0] == "transfer" else argv, env={}) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error:") and message in err and "\n" not in err and "Traceback" not in err


def test_console_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "cnnlab" in proc.stdout
    assert "transfer" in build_parser().format_help()


@pytest.mark.parametrize("argv, files", [
    (["classify", "IMG"], {"classify.png", "results.jsonl", "parts"}),
    (["explain", "fool", "IMG", "--target", "tarantula", "--max-iters", "3"],
     {"fooling.png", "adversarial_000.png", "results.jsonl", "parts"}),
    (["explain", "classviz", "--class", "tick", "--iters", "2", "--judge", "none"],
     {"classviz.png", "efficientnet_lite0_tick.png"}),
    (["gan", "sample", "-n", "3"], {"grid.png", "samples.png", "0_0.png", "1_1.png", "2_2.png"}),
    (["models", "--backbone", "efficientnet_lite0"], set()),
])
def test_every_job_writes_the_same_run_directory(argv, files, photo_files, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [str(photo_files["coffee"]) if a == "IMG" else a for a in argv]
    assert main(argv + ["--out", str(out), "--quiet", "--json"], env={}) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(os.listdir(out)) == {"config.json", "metrics.json"} | files
    assert json.loads((out / "metrics.json").read_text()) == printed
    assert json.loads((out / "config.json").read_text())["command"] == " ".join(argv[:2] if argv[0] in
                                                                                ("explain", "gan") else argv[:1])
