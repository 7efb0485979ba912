"""examples/tour.ipynb runs headless from top to bottom (nbclient), on the top-level API only."""
import re
import shutil
from pathlib import Path

import pytest

from .conftest import REPO, shared

NOTEBOOK = REPO / "examples" / "tour.ipynb"


def test_the_notebook_uses_only_the_top_level_api():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "import cnnlab" in code and not re.search(r"cnnlab\.(core|transfer|explain|report)\.", code)
    assert not re.search(r"cnnlab\.gan\.(?!(train|sample|evaluate)\()", code)
    assert not re.search(r"from cnnlab[. ]", code)


def test_the_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    scenes = tmp_path / "scenes"  # 3 of 15-Scene's classes: the tour's transfer reads 20 images of each
    for cls in ("Coast", "Forest", "Kitchen"):
        (scenes / cls).mkdir(parents=True)
        for src in sorted((shared("15scene") / cls).glob("*.jpg"))[:20]:
            shutil.copy2(src, scenes / cls / src.name)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("CNNLAB_TOUR_DATA", str(scenes))  # the kernel inherits it
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    html = [o for c in nb.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    assert len(html) >= 4 and all("data:image/png;base64" in o["data"]["text/html"] for o in html)
    assert (Path(tmp_path) / "tour-transfer" / "classifier.skops").is_file()
