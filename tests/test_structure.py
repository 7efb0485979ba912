"""The structure: one runner (a result is the same object in memory and streamed), one class per method (every
registered saliency method and attack through one call), per-image targets, a light and acyclic `import cnnlab`,
thin faces, one-line errors for options that would be ignored or devices that are absent."""
import ast
import json
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.cli import main
from cnnlab.core.errors import CnnlabError
from cnnlab.explain.attacks import ATTACKS
from cnnlab.explain.saliency import METHODS

from .conftest import tiny_model, tiny_vit

SRC = Path(cnnlab.__file__).parent
N = 17  # more images than a figure shows (12), over several chunks


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """N small photos of several sizes (JPEG and PNG) and one unreadable file among them."""
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for k in range(N):
        h, w = (20, 24) if k % 3 else (18, 18)
        p = folder / f"im{k:02d}.{'jpg' if k % 2 else 'png'}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    paths[5].write_bytes(b"not an image")
    return paths


def _jsonl(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


def _fields(res, names):
    out = {}
    for name in names:
        v = getattr(res, name)
        out[name] = v.tolist() if isinstance(v, torch.Tensor) else v
    return out


def test_saliency_streamed_equals_in_memory_field_by_field(files, tmp_path):
    model = tiny_model()
    opts = dict(method="gradcam", metrics=True, random_orders=1, batch_size=2, chunk_size=4)
    a = cnnlab.saliency(model, files, **opts)
    b = cnnlab.saliency(model, files, out=tmp_path / "s", **opts)
    assert len(a) == len(b) == N - 1 and a.skipped == b.skipped and len(a.skipped) == 1
    names = ["names", "positions", "targets", "preds", "labels", "skipped"]
    assert _fields(a, names) == _fields(b, names)
    assert all(len(getattr(b, f)) == N - 1 for f in ("targets", "preds", "labels", "names"))
    assert torch.equal(a.maps, b.maps) and a.maps.shape[0] == N - 1
    assert torch.equal(a.images, b.images) and a.images.shape[0] == N - 1
    assert {k: v.tolist() for k, v in a.scores.items()} == {k: v.tolist() for k, v in b.scores.items()}
    assert a.summary()["summary"] == b.summary()["summary"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "map"} for r in rows]  # noqa: E731
    readable = [r for r in _jsonl(tmp_path / "s" / "results.jsonl") if "error" not in r]
    assert strip(a.image_rows()) == strip(b.image_rows()) == strip(readable)
    assert sorted(p.name for p in (tmp_path / "s" / "parts").iterdir()) == [f"part-{k:05d}.jsonl" for k in range(5)]
    a.save(tmp_path / "a")  # the in-memory run writes the same per-image files as the streamed one
    assert sorted(p.name for p in (tmp_path / "a").glob("saliency_*.png")) == \
        sorted(p.name for p in (tmp_path / "s").glob("saliency_*.png"))


def test_fool_and_classify_streamed_equal_in_memory(files, tmp_path):
    model, judge = tiny_model(), tiny_model(1)
    opts = dict(target="random", method="pgd", eps=0.1, max_iters=3, batch_size=2, chunk_size=4, eval_on=[judge])
    a = cnnlab.fool(model, files, **opts)
    b = cnnlab.fool(model, files, out=tmp_path / "f", **opts)
    names = ["names", "positions", "targets", "skipped", "success", "pred_before", "pred_after", "iterations",
             "linf", "l2", "transfer"]
    assert _fields(a, names) == _fields(b, names) and len(b.targets) == N - 1
    assert all(torch.equal(x, y) for x, y in zip(a.adversarials, b.adversarials)) and len(b.adversarials) == N - 1
    assert all(torch.equal(x, y) for x, y in zip(a.originals, b.originals))
    # success is judged on the saved file as read back: the model's prediction of it is the recorded one
    with torch.no_grad():
        after = [int(model(model.preprocess(x[None])).argmax()) for x in b.adversarials]
    assert after == b.pred_after.tolist() and b.success.tolist() == [p == t for p, t in zip(after, b.targets)]

    assert b.targets == [r["target"] for r in _jsonl(tmp_path / "f" / "results.jsonl") if "error" not in r]
    c1 = cnnlab.classify(model, files, batch_size=2, chunk_size=4)
    c2 = cnnlab.classify(model, files, batch_size=2, chunk_size=4, out=tmp_path / "c")
    assert c1.results == c2.results and len(c1.results) == N - 1 and c1.skipped == c2.skipped
    assert c1.results == [r for r in _jsonl(tmp_path / "c" / "results.jsonl") if "error" not in r]
    c2.save(tmp_path / "c")
    assert (tmp_path / "c" / "classify.png").is_file() and (tmp_path / "c" / "metrics.json").is_file()


def test_per_image_targets_in_saliency_and_fool(files):
    model = tiny_model()
    good = files[:4]
    targets = [1, 2, 3, 4]
    s = cnnlab.saliency(model, good, method="vanilla", target=targets)
    assert s.targets == targets
    assert cnnlab.saliency(model, good, method="vanilla", target=torch.tensor(targets)).targets == targets
    f = cnnlab.fool(model, good, target=["c1", "c2", "c3", "c4"], method="fgsm", eps=0.05)
    assert f.targets == targets
    with pytest.raises(CnnlabError, match="one per image"):
        cnnlab.fool(model, good, target=[1, 2], method="fgsm")


@pytest.mark.parametrize("name", list(METHODS))
def test_every_saliency_method_is_one_registered_class(name):
    if METHODS[name].transformers_only:  # refused on the CNN in one line; run on a small ViT
        with pytest.raises(CnnlabError, match="has no attention module"):
            METHODS[name]().attribute(tiny_model(), torch.rand(1, 3, 16, 16), [0])
    model, x = (tiny_vit(16) if METHODS[name].transformers_only else tiny_model()), torch.rand(2, 3, 16, 16)
    m = METHODS[name](**{"occlusion": {"occlusion_window": 8, "occlusion_stride": 4}, "rise": {"rise_masks": 64}}.get(name, {}))
    mode = model.training
    maps = m.attribute(model, x, [0, 3])
    assert maps.shape == (2, 16, 16) and (maps >= 0).all() and torch.isfinite(maps).all() and maps.sum() > 0
    assert model.training is mode and all(p.requires_grad for p in model.parameters())  # as it went in


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_is_one_registered_class(name):
    model, x = tiny_model(), torch.rand(2, 3, 16, 16)
    r = ATTACKS[name]()(model, x, [1, 2])
    assert r.adversarial.shape == x.shape and 0 <= r.adversarial.min() and r.adversarial.max() <= 1
    assert torch.equal(r.adversarial, r.adversarial.mul(255).round().div(255))  # what an 8-bit file holds
    with torch.no_grad():
        assert r.pred_after.tolist() == model(r.adversarial).argmax(1).tolist()


@pytest.mark.parametrize("touch, heavy", [
    ("pass", "('matplotlib', 'gradio', 'sklearn', 'captum', 'skimage')"),
    ("cnnlab.saliency; cnnlab.classify; cnnlab.fool; cnnlab.features", "('gradio', 'sklearn', 'skimage')"),
])
def test_import_cnnlab_is_light(touch, heavy):
    """`import cnnlab` loads none of the heavy libraries; reaching the per-image jobs loads no report, app or
    scikit-learn (it loads when an SVM is fitted)."""
    code = (f"import sys, cnnlab; {touch}; heavy = [m for m in sys.modules if m.split('.')[0] in {heavy} "
            "or m.startswith(('cnnlab.report', 'cnnlab.app'))]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def _statements(tree: ast.AST):
    """Every statement of a module, inside functions too, but not `if TYPE_CHECKING:` blocks (they do not run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        yield node
        yield from _statements(node)


def _module_imports(path: Path) -> set[str]:
    """The cnnlab modules a file imports, at module level or inside its functions."""
    name = ".".join(("cnnlab",) + path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in _statements(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            mod = (base + ("." + node.module if node.module else "")) if node.level else node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                found.add(sub if (SRC.parent / (sub.replace(".", "/") + ".py")).exists()
                          or (SRC.parent / sub.replace(".", "/")).is_dir() else mod)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("cnnlab")}


def test_no_import_cycle_and_no_import_back_up_in_the_package():
    graph = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(("cnnlab",) + path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = {m for m in _module_imports(path) if m != name}
    up = [f"{m} -> {d}" for m, deps in graph.items() for d in deps if m.startswith(d + ".")]
    assert not up, up  # a module reaching for its own package's top (the lazy names live there)
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join(stack + [node, nxt]))
            if nxt in graph and nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_capabilities_do_not_import_each_other():
    for cap in ("transfer", "explain", "gan"):
        others = {f"cnnlab.{c}" for c in ("transfer", "explain", "gan", "jobs", "report", "app") if c != cap}
        for path in (SRC / cap).rglob("*.py"):
            bad = {m for m in _module_imports(path) if any(m == o or m.startswith(o + ".") for o in others)}
            assert not bad, f"{path.name} imports {bad}"


def test_no_module_imports_another_modules_private_name():
    """A private name stays in its module (the faces, the jobs, the capabilities alike), inside functions too."""
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("cnnlab")):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.endswith("__")]
                assert not private, f"{path.name} imports {private}"


def test_classify_with_a_saved_model_refuses_options_it_would_ignore(tmp_path, capsys):
    assert main(["classify", str(tmp_path), "--model", str(tmp_path), "--backbone", "efficientnet_lite1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error:") and "--backbone would be ignored" in err and "\n" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_device_that_is_absent_is_one_line(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"")
    assert main(["classify", str(tmp_path / "a.png"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error: --device cuda") and "\n" not in err


def test_concatenated_cut_points_are_a_list_in_the_api(tmp_path):
    rng = np.random.default_rng(1)
    for c in range(3):
        (tmp_path / f"class{c}").mkdir()
        for k in range(6):
            pixels = np.clip(rng.normal(60 + 60 * c, 30, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / f"class{c}" / f"{k}.png")
    common = dict(split="random:3", Cs=[1.0], folds=2, workers=0, cache=False)
    listed = cnnlab.transfer(tmp_path, tiny_model(), layers=[["3", "pre_logits"]], **common)
    spelled = cnnlab.transfer(tmp_path, tiny_model(), layers=["3+pre_logits"], **common)
    assert listed.grid == spelled.grid and listed.selected["layer"] == "3+pre_logits"


def test_a_method_registered_at_run_time_is_in_the_cli_the_api_and_the_app(tmp_path, capsys):
    """Adding a saliency method with two options is one class: the CLI's choices, flags and --help, the API's
    keyword arguments and the app's list find it in the registry."""
    from dataclasses import dataclass

    from cnnlab.app.explain_tab import method_choices
    from cnnlab.cli import build_parser
    from cnnlab.core.config import option
    from cnnlab.explain.saliency import SaliencyMethod, register

    @dataclass
    class Toy(SaliencyMethod):
        name, help = "toy-brightness", "a toy: the grey level to the power --toy-power, times --toy-gain"
        toy_power: float = option(2.0, low=0, help="toy: exponent of the grey level")
        toy_gain: float = option(1.0, low=0, low_open=True, help="toy: gain")

        def _maps(self, backbone, x, targets):
            return self.toy_gain * x.detach().mean(1) ** self.toy_power

    register(Toy)
    try:
        sub = build_parser()._subparsers._group_actions[0].choices["explain"]._subparsers._group_actions[0]
        text = sub.choices["saliency"].format_help()
        assert "toy-brightness" in text and "--toy-power" in text and "--toy-gain" in text and "a toy:" in text
        assert "toy-brightness" in [name for _, name in method_choices()]
        assert cnnlab.SaliencyConfig(method=Toy(toy_power=3.0)).method.toy_power == 3.0  # the config holds the part
        assert cnnlab.SaliencyConfig(method={"name": "toy-brightness", "toy_power": 3.0}).method == Toy(3.0)
        model, x = tiny_model(), torch.rand(2, 3, 16, 16)
        r = cnnlab.saliency(model, x, method="toy-brightness", toy_power=3.0, toy_gain=2.0)  # a name and its options
        torch.testing.assert_close(r.maps, 2 * x.mean(1) ** 3)
        torch.testing.assert_close(cnnlab.saliency(model, x, method=Toy(3.0, 2.0)).maps, r.maps)  # or the object
        with pytest.raises(CnnlabError, match="--toy-power is an option of toy-brightness, not of vanilla"):
            cnnlab.saliency(model, x, method="vanilla", toy_power=3.0)
        png = tmp_path / "digit.png"
        Image.fromarray((np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)).save(png)
        assert main(["explain", "saliency", str(png), "--backbone", "mnist_cnn", "--method", "toy-brightness",
                     "--toy-power", "1", "--out", str(tmp_path / "run"), "--json", "--quiet"]) == 0
        assert '"method": "toy-brightness"' in capsys.readouterr().out
        assert main(["explain", "saliency", str(png), "--backbone", "mnist_cnn", "--toy-gain", "2"]) == 2
        assert capsys.readouterr().err.strip() == "cnnlab: error: --toy-gain is an option of toy-brightness, not of " \
                                                  "gradcam"  # the default method
        assert main(["explain", "saliency", str(png), "--backbone", "mnist_cnn", "--method", "toy-brightness",
                     "--toy-gain", "-1"]) == 2
        assert capsys.readouterr().err.strip() == "cnnlab: error: --toy-gain must be > 0, got -1.0"
    finally:
        METHODS.unregister("toy-brightness")
    with pytest.raises(CnnlabError, match="unknown option 'toy_power'"):
        cnnlab.saliency(tiny_model(), torch.rand(1, 3, 16, 16), toy_power=3.0)  # gone with its class


def test_a_job_is_its_module_plus_one_row_of_the_command_table():
    from cnnlab.commands import COMMANDS

    typed = set()
    tree = ast.parse((SRC / "__init__.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typed |= {a.asname or a.name for n in ast.walk(node) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert typed - {"gan"} == set(cnnlab._WHERE)  # what type checkers see is what `cnnlab.NAME` gives
    for cmd in COMMANDS:
        assert callable(cmd.function()) and dataclasses.is_dataclass(cmd.config())
        module = cmd.call.partition(":")[0]
        assert cmd.config_at.startswith(module + ":")  # the call and its config live in one module
        for name in cmd.api:
            assert getattr(cnnlab, name) is getattr(sys.modules[f"cnnlab.{module}"], name)


def test_a_saliency_call_constructs_its_method_once(tmp_path):
    from dataclasses import dataclass

    from cnnlab.core.config import option
    from cnnlab.explain.saliency.gradients import Vanilla

    made = []

    @dataclass
    class Counted(Vanilla):
        name = "counted-vanilla"
        counted_scale: float = option(1.0, help="a test option")

        def __post_init__(self):
            super().__post_init__()
            made.append(self.counted_scale)

    METHODS.register(Counted)
    try:
        res = cnnlab.saliency(tiny_model(), torch.rand(2, 3, 32, 32), method="counted-vanilla", counted_scale=2.0)
        assert made == [2.0] and res.config.method.counted_scale == 2.0  # built once, with its option, and never again
        res.config.to_dict()
        res.config.replace(batch_size=4)
        assert made == [2.0]
        given = Counted(counted_scale=3.0)
        assert cnnlab.saliency(tiny_model(), torch.rand(2, 3, 32, 32), method=given).config.method is given
        assert made == [2.0, 3.0]  # an object given is held as it is
        png = tmp_path / "x.png"
        Image.fromarray((np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)).save(png)
        assert main(["explain", "saliency", str(png), "--backbone", "mnist_cnn", "--method", "counted-vanilla",
                     "--counted-scale", "4", "--out", str(tmp_path / "run"), "--quiet"]) == 0
        assert made == [2.0, 3.0, 4.0]  # the CLI builds the chosen part once too (saving the run builds none)
    finally:
        METHODS.unregister("counted-vanilla")


@pytest.mark.parametrize("command, flat, nested", [
    ("explain saliency", {"method": "smoothgrad", "smoothgrad_samples": 4},
     {"method": {"name": "smoothgrad", "smoothgrad_samples": 4}}),
    ("explain evaluate", {"methods": ["gradcam", "rise"], "metrics": ["deletion"], "rise_masks": 50,
                          "internal_batch_size": 4},
     {"methods": [{"name": "gradcam"}, {"name": "rise", "rise_masks": 50, "internal_batch_size": 4}],
      "metrics": [{"name": "deletion", "internal_batch_size": 4}]}),
    ("explain fool", {"method": "pgd", "eps": 0.01, "norm": "l2"}, {"method": {"name": "pgd", "eps": 0.01, "norm": "l2"}}),
    ("explain dream", {"param": "pixel", "l2": 0.5, "lr": 2.0}, {"param": {"name": "pixel", "l2": 0.5, "lr": 2.0}}),
])
def test_a_config_file_with_flat_part_options_reads_as_the_nested_one(command, flat, nested):
    """config.json files written before parts nested spelled their options flat: they load as the same config, and
    the options of a part not chosen are refused when set."""
    from cnnlab.commands import COMMANDS

    cls = next(c.config() for c in COMMANDS if c.name == command)
    old, new = cls.from_dict(flat), cls.from_dict(nested)
    assert old == new and old.to_dict() == new.to_dict() and cls.from_dict(new.to_dict()) == new
    part_field = next(iter(nested))
    assert old.to_dict()[part_field] != cls().to_dict()[part_field]  # the options took effect
    given = nested[part_field]
    spec = {"name": (given[0] if isinstance(given, list) else given)["name"], "bogus_option": 1}
    with pytest.raises(CnnlabError, match="unknown option 'bogus_option' for the"):  # nested: said like a flat typo
        cls.from_dict({part_field: [spec] if isinstance(given, list) else spec})


def test_an_unknown_part_option_is_refused_through_the_registry_the_api_and_config_files(tmp_path):
    """One policy: `Registry.build` (the registries are public), the job calls and config files all refuse an option
    the part does not take, with a suggestion."""
    import json

    from cnnlab.cli import main
    from cnnlab.explain.attacks import ATTACKS
    from cnnlab.explain.metrics import METRICS
    from cnnlab.explain.saliency import METHODS

    with pytest.raises(CnnlabError, match="unknown option 'samplez' for the saliency method smoothgrad; did you mean "
                                          "'smoothgrad_samples'"):
        METHODS.build("smoothgrad", {"samplez": 4})
    with pytest.raises(CnnlabError, match="unknown option 'epz' for the attack pgd"):
        ATTACKS.build("pgd", {"epz": 0.1})
    with pytest.raises(CnnlabError, match="unknown option 'stepz'"):
        METRICS.build("road", {"stepz": 3})
    assert METHODS.own("vanilla", {"smoothgrad_samples": 4}) == {}  # a caller sharing options filters them itself
    with pytest.raises(CnnlabError, match="unknown option 'samplez'"):
        cnnlab.saliency(tiny_model(), torch.rand(1, 3, 16, 16), method="smoothgrad", samplez=4)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"command": "explain saliency", "method": {"name": "smoothgrad", "samplez": 4}}))
    assert main(["explain", "saliency", str(path), "--config", str(path)]) == 2


def test_every_concept_of_the_where_things_live_table_has_its_one_home():
    """docs/architecture.md's table names `file: name` homes: each name is defined in that file and nowhere else in
    the package (a second definition is a second home)."""
    import re

    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "architecture.md").read_text()
    table = text.split("## Where things live", 1)[1].split("\n## ", 1)[0]
    homes = re.findall(r"`([\w/]+\.py): (\w+)`", table)
    assert len(homes) >= 12, homes
    sources = {p: p.read_text() for p in (root / "src" / "cnnlab").rglob("*.py")}
    for path, name in homes:
        where = [p.relative_to(root / "src" / "cnnlab").as_posix() for p, s in sources.items()
                 if re.search(rf"^\s*(def|class) {name}\b|^{name} = ", s, re.M)]
        assert where == [path], f"{name}: defined in {where}, the table says {path}"


def test_saliency_records_the_random_orders_its_default_resolved_to(tmp_path):
    """--metrics without --random-orders takes the full panel's (one default with explain evaluate's); config.json
    names the number, so that --config reruns the same baseline."""
    from cnnlab.explain.metrics import PANELS

    digits = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    cnnlab.saliency("mnist_cnn", digits, method="vanilla", metrics=True).save(tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["random_orders"] == PANELS["full"].random_orders == 4
    cnnlab.saliency("mnist_cnn", digits, method="vanilla").save(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["random_orders"] is None  # not used: not said
