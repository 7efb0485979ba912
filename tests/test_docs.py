"""The docs a newcomer reads: a short README, a command reference that matches `--help`, a project that speaks of
itself only, and one registry class behind every kind of part."""
import re
from pathlib import Path

import pytest

from cnnlab.cli import reference
from cnnlab.core.parts import Registry
from cnnlab.core.errors import CnnlabError

ROOT = Path(__file__).resolve().parents[1]


def test_the_cli_reference_matches_help():
    assert (ROOT / "docs" / "cli.md").read_text() == reference(), \
        "docs/cli.md is stale: regenerate it with `python -m cnnlab.cli > docs/cli.md`"


def test_the_readme_is_short_and_keeps_the_three_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert 'pip install -e ".[dev]"\ncnnlab demo\npytest\n' in text


def test_the_project_speaks_of_itself_only():
    pattern = re.compile(r"session|issue [0-9]", re.I)
    files = [ROOT / "README.md", *(p for d in ("src", "docs", "benchmarks") for p in (ROOT / d).rglob("*")
                                   if p.suffix in (".py", ".md", ".txt", ".json", ".toml", ".html", ".js"))]
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
            if pattern.search(line)]
    assert not hits, hits


def test_every_kind_of_part_is_one_registry():
    from cnnlab.core.table import REGISTRY
    from cnnlab.explain.attacks import ATTACKS
    from cnnlab.explain.metrics import METRICS
    from cnnlab.explain.objectives import SPELLINGS
    from cnnlab.explain.params import PARAMS
    from cnnlab.explain.saliency import METHODS

    for reg in (REGISTRY, METHODS, ATTACKS, METRICS, PARAMS, SPELLINGS):
        assert type(reg) is Registry and all(reg.lookup(name).name == name for name in reg)
    with pytest.raises(CnnlabError, match="unknown saliency method 'gradcm'; did you mean 'gradcam'"):
        METHODS.lookup("gradcm")
    reg = Registry("toy")

    @reg.register
    class Toy:
        name, help = "toy-part", "a toy part"

    assert reg.lookup("toy-part") is Toy and "toy-part" in reg.help() and "a toy part" in reg.help()
