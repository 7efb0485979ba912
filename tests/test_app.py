"""`cnnlab app`: every endpoint through gradio_client, and the page driven in Debian's headless Chromium."""
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import chromium_path, launch_chromium

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
CHROMIUM = chromium_path()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _colour_dataset(root: Path) -> None:
    """Three classes of noisy coloured squares: a dataset any backbone separates."""
    rng = np.random.default_rng(0)
    for name, colour in (("red", (200, 40, 40)), ("green", (40, 180, 60)), ("blue", (40, 60, 200))):
        (root / "colours" / name).mkdir(parents=True)
        for k in range(8):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (64, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "colours" / name / f"{k}.png")


def _bomb(path: Path) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 9000, 9000, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from cnnlab.app import AppConfig, serve

    root = tmp_path_factory.mktemp("data")
    _colour_dataset(root)
    config = AppConfig(port=_free_port(), data_root=str(root), max_pixels=10_000_000)
    demo, url = serve(config, block=False)
    yield url, root
    demo.close()


@pytest.fixture(scope="module")
def client(app):
    return gradio_client.Client(app[0], verbose=False)


@pytest.fixture(scope="module")
def cat(tmp_path_factory):
    import skimage.data

    path = tmp_path_factory.mktemp("img") / "cat.jpg"
    Image.fromarray(skimage.data.chelsea()).save(path)
    return path


def test_classify_and_saliency_endpoints(client, cat):
    h = gradio_client.handle_file
    top = client.predict(h(str(cat)), "efficientnet_lite0", api_name="/classify")
    assert "cat" in top["label"] and len(top["confidences"]) == 5
    maps, text, plot = client.predict(h(str(cat)), "efficientnet_lite0", ["vanilla", "gradcam"], True,
                                      api_name="/saliency")
    assert [m["caption"].split(":")[0] for m in maps] == ["vanilla", "gradcam"]
    assert all(Image.open(m["image"]).size == (224, 224) for m in maps)
    assert "deletion ratio" in text and plot is not None


def test_sanity_view_and_leaderboard_endpoints(client, cat):
    text, plot = client.predict(gradio_client.handle_file(str(cat)), "efficientnet_lite0", ["gradcam", "vanilla"],
                                api_name="/sanity")
    # one photo: the same verdict source as the CLI says there is none, and shows the shipped one as such
    assert text.count("rank correlation") == 2 and text.count("no verdict on 1 image ") == 2 and plot is not None
    assert "shipped: passes on efficientnet_lite0" in text
    board, curves = client.predict("colours/red", "efficientnet_lite0", ["gradcam", "vanilla"], ["randomization"], 2,
                                   api_name="/leaderboard")
    assert board.startswith("| method | randomization check |") and board.count("no verdict on 2 images") == 8
    assert "brightness (control)" in board  # the input-only controls, ranked beside the methods
    assert "| method | randomization_rank_corr ↓" in board and "randomization_null (control)" in board


def test_fool_endpoint_gives_a_png_that_fools_classify(client, cat):
    import cnnlab

    out = client.predict(gradio_client.handle_file(str(cat)), "efficientnet_lite0", "tarantula", "minimal", 8,
                         api_name="/fool")
    text, png = out[5], out[6]
    assert "succeeded" in text and "tiger cat → tarantula" in text
    assert Image.open(png).size == Image.open(cat).size  # the photo's own size
    assert cnnlab.classify("efficientnet_lite0", png).results[0]["top"][0]["label"] == "tarantula"


def test_dream_streams_frames_then_a_verdict(client):
    job = client.submit("class", "tarantula", "block5", 0, "", None, "efficientnet_lite0", "fourier", 20,
                        api_name="/dream")
    image, text = job.result(timeout=300)
    assert Image.open(image).size == (224, 224) and "efficientnet_lite2" in text
    assert len(job.outputs()) >= 3  # step 10, step 20, and the final verdict


def test_dream_draws_a_channel_and_deepdreams_an_upload(client, cat):
    image, text = client.predict("channel", "tarantula", "block3", 5, "", None, "efficientnet_lite0", "fourier", 10,
                                 api_name="/dream")
    assert Image.open(image).size == (224, 224) and "block3:5" in text
    image, text = client.predict("DeepDream on the photo", "tarantula", "block3", 0, "", gradio_client.handle_file(
        str(cat)), "efficientnet_lite0", "pixel", 10, api_name="/dream")
    assert "dream:block3" in text and max(Image.open(image).size) == 224


def test_generate_endpoint(client):
    grid, walked = client.predict("3", 16, 0, 1, 0.5, api_name="/generate")
    assert Image.open(grid).size == (8 * 30 + 2, 2 * 30 + 2) and Image.open(walked).size == (28, 28)


def test_transfer_then_predict_in_one_session(client, app):
    text, table, plot = client.predict("colours", "efficientnet_lite0", 8, api_name="/transfer")
    assert "test accuracy" in text and len(table["data"]) == 3
    assert table["headers"] == ["layer", "C", "CV accuracy", "test accuracy"]
    red = app[1] / "colours" / "red" / "0.png"
    answer = client.predict(gradio_client.handle_file(str(red)), api_name="/transfer_predict")
    assert answer["label"] == "red"


def test_transfer_with_an_mlp_head_shows_its_validation_curve(client, app):
    job = client.submit("colours", "efficientnet_lite0", 8, "mlp", api_name="/transfer")
    text, table, plot = job.result()
    assert "mlp head" in text and "(last epoch)" in text
    assert [row[0] for row in table["data"]][:2] == ["epoch 1", "epoch 2"]
    assert table["headers"] == ["epoch", "training loss", "validation accuracy", "validation loss"]  # its own
    streamed = [out[1]["data"] for out in job.outputs()[:-1]]  # the curve as it trained, one epoch more each time
    assert len(streamed) == len(table["data"]) and [len(rows) for rows in streamed] == list(range(1, len(streamed) + 1))
    assert streamed[-1] == table["data"]
    red = app[1] / "colours" / "red" / "0.png"
    assert client.predict(gradio_client.handle_file(str(red)), api_name="/transfer_predict")["label"] == "red"


def test_transfer_fine_tunes_and_streams_from_the_fitted_head(client, app):
    job = client.submit("colours", "efficientnet_lite0", 8, "linear", "last:1", api_name="/transfer")
    text, table, plot = job.result()
    assert "linear head, fine-tuned last:1" in text and "(last epoch)" in text
    # the curve starts at epoch 0, the fitted head, then one row per epoch of the schedule
    assert [row[0] for row in table["data"]][:2] == ["epoch 0", "epoch 1"] and len(table["data"]) == 9
    assert len(job.outputs()) == len(table["data"]) + 1
    red = app[1] / "colours" / "red" / "0.png"
    assert client.predict(gradio_client.handle_file(str(red)), api_name="/transfer_predict")["label"] == "red"


@pytest.mark.parametrize("call, message", [
    (lambda c, tmp: c.predict("../..", "efficientnet_lite0", 8, api_name="/transfer"),
     "is not a dataset under the data root"),
    (lambda c, tmp: c.predict("../..", "efficientnet_lite0", ["gradcam"], ["deletion"], 2, api_name="/leaderboard"),
     "is not an image folder under the data root"),
    (lambda c, tmp: c.predict(gradio_client.handle_file(str(_bomb(tmp / "bomb.png"))), "efficientnet_lite0",
                              api_name="/classify"), "more than the limit"),
    (lambda c, tmp: c.predict(gradio_client.handle_file(str(_bomb(tmp / "b.png"))), "efficientnet_lite0",
                              "no such class", "minimal", 8, api_name="/fool"), "more than the limit"),
])
def test_bad_input_is_a_message_not_a_traceback(client, tmp_path, call, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as err:
        call(client, tmp_path)
    assert message in str(err.value) and "Traceback" not in str(err.value)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")
def test_the_page_in_headless_chromium(app, cat):
    from playwright.sync_api import sync_playwright

    url = app[0]
    requests = []
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url, wait_until="load")
            page.wait_for_selector("#explain-go", timeout=60_000)
            page.set_input_files("#explain-image input[type=file]", str(cat))
            page.wait_for_timeout(500)
            page.click("#explain-go")
            page.wait_for_selector("#explain-maps img", timeout=60_000)
            page.wait_for_function("document.querySelector('#explain-top').innerText.includes('cat')",
                                   timeout=60_000)
            widths = page.eval_on_selector_all("#explain-maps img", "els => els.map(e => e.naturalWidth)")
            assert widths and all(w > 0 for w in widths)

            page.get_by_role("tab", name="Fool").click()
            page.set_input_files("#fool-image input[type=file]", str(cat))
            page.wait_for_timeout(500)
            page.click("#fool-go")
            page.wait_for_function("document.querySelector('#fool-text').innerText.includes('succeeded')",
                                   timeout=120_000)

            page.get_by_role("tab", name="Generate").click()
            page.click("#generate-go")
            page.wait_for_selector("#generate-grid img", timeout=60_000)
            assert page.eval_on_selector("#generate-grid img", "e => e.naturalWidth") > 0
        finally:
            browser.close()
    hosts = {u.split("/")[2].split(":")[0] for u in requests if u.startswith("http")}
    assert hosts <= {"127.0.0.1", "localhost"}, hosts  # offline: no CDN, no analytics
