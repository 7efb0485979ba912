"""Datasets of any size: per-image jobs streamed into their run directory chunk by chunk equal the in-memory run,
two torchrun processes equal one, and a run killed mid-way resumes without redoing finished chunks."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnlab

from .conftest import one_and_two_processes, shared

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def photos():
    return sorted(shared("imagenet", "foolbox20").glob("*.jpg"))[:6]


@pytest.fixture(scope="module")
def three(photos):
    return photos[:3]  # chunks of 2: one full chunk and a ragged last one


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_torchrun_processes_equal_one(photos, tmp_path):
    one_and_two_processes(["explain", "saliency", *map(str, photos), "--method", "vanilla", "--chunk-size", "2",
                           "--batch-size", "2", "--quiet"], tmp_path, 29571)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "map"} for r in rows]  # noqa: E731
    assert strip(_jsonl(tmp_path / "one" / "results.jsonl")) == strip(_jsonl(tmp_path / "two" / "results.jsonl"))
    for k in range(3):
        a, b = (np.load(tmp_path / d / "maps" / f"part-{k:05d}.npy") for d in ("one", "two"))
        assert np.array_equal(a, b)  # bit for bit
    assert (tmp_path / "two" / "saliency.png").is_file() and (tmp_path / "two" / "metrics.json").is_file()


def test_a_run_killed_mid_way_resumes_without_redoing_finished_chunks(photos, tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "cnnlab", "explain", "saliency", *map(str, photos), "--method", "smoothgrad",
            "--samples", "4", "--chunk-size", "1", "--batch-size", "1", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not (out / "parts" / "part-00001.jsonl").is_file():
        assert proc.poll() is None and time.time() - t0 < 300
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in (out / "parts").iterdir() if p.suffix == ".jsonl"}
    assert 2 <= len(done) < 6 and not (out / "results.jsonl").exists()
    reused = sum(json.loads((out / "parts" / name).read_text().splitlines()[0])["seconds"] for name in done)
    resumed = subprocess.run(argv + ["--json"], env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0
    after = {p.name: p.stat().st_mtime_ns for p in (out / "parts").iterdir()}
    assert all(after[name] == mtime for name, mtime in done.items())  # committed chunks were not computed again
    assert reused > 0 and json.loads(resumed.stdout)["seconds"] >= reused  # the time of the work it reused too
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocess ran: the same summation order, the same numbers
    try:
        whole = cnnlab.saliency("efficientnet_lite0", photos, method="smoothgrad", smoothgrad_samples=4, batch_size=1)
    finally:
        torch.set_num_threads(threads)
    rows = _jsonl(out / "results.jsonl")
    assert [r["pred"] for r in rows] == whole.preds and len(rows) == 6
    maps = np.concatenate([np.load(out / "maps" / f"part-{k:05d}.npy") for k in range(6)])
    assert np.array_equal(maps, whole.maps.numpy())
