"""Does `pip install -e .` keep the torch a user already has? A fresh venv is given another torch 2.x and
torchvision (their metadata: enough for pip's resolver), then pip resolves cnnlab's install without doing it
(`--dry-run --report`); the check passes when neither torch nor torchvision is among what pip would install.

    python benchmarks/install_keeps_torch.py [--torch 2.5.1 --torchvision 0.20.1]

Machine-wide pip constraints are ignored (a user has none); the package index must be reachable."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fake_dist(site: Path, name: str, version: str) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--torch", default="2.5.1")
    ap.add_argument("--torchvision", default="0.20.1")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env_dir = Path(tmp) / "venv"
        venv.create(env_dir, with_pip=True)
        python = env_dir / "bin" / "python"
        site = Path(subprocess.check_output([python, "-c", "import site; print(site.getsitepackages()[0])"],
                                            text=True).strip())
        fake_dist(site, "torch", a.torch)
        fake_dist(site, "torchvision", a.torchvision)
        report = Path(tmp) / "report.json"
        env = {**os.environ, "PIP_CONSTRAINT": ""}
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--dry-run", "--report", report, "-e", ROOT],
                       check=True, env=env)
        planned = {item["metadata"]["name"].lower(): item["metadata"]["version"]
                   for item in json.loads(report.read_text())["install"]}
    replaced = {k: v for k, v in planned.items() if k in ("torch", "torchvision")}
    print(f"torch {a.torch} / torchvision {a.torchvision} installed; pip would install {len(planned)} packages; "
          f"torch or torchvision among them: {replaced or 'none'}")
    sys.exit(1 if replaced else 0)


if __name__ == "__main__":
    main()
