import json

from cnnlab.cli import main


def test_demo_runs_offline_and_writes_its_run_dir(tmp_path, tiny_scenes, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--data", str(tiny_scenes), "--out", str(out), "--quiet", "--json"],
                env={"CNNLAB_CACHE": str(tmp_path / "cache")})
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert (out / "classify.png").is_file() and (out / "metrics.json").is_file()
    tops = {c["image"]: c["top"][0]["index"] for c in summary["classify"]}
    assert 281 <= tops["chelsea"] <= 285 and tops["coffee"] in (967, 968)
    assert (out / "transfer" / "results.md").is_file() and 0 <= summary["transfer"]["selected"]["test_accuracy"] <= 1
