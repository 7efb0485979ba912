"""A folder with one file of every awkward kind, through every command that reads images; and a table of bad options
for every command. Never a traceback: good images are processed, bad ones are listed with their reason, bad options
are one line and exit status 2."""
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from cnnlab.cli import main
from cnnlab.core.images import load_image

GOOD = ["cmyk.jpg", "gray16.png", "rgba.png", "palette.png", "tiny.png", "strip.png", "rotated.jpg", "anim.gif",
        "photo.tiff", "café crème.png"] + (["photo.webp"] if features.check("webp") else [])
BAD = {"empty.jpg": "cannot identify", "truncated.jpg": "truncated", "notes.jpg": "cannot identify",
       "gone.jpg": "dangling link", "folder.jpg": "it is a folder", "bomb.png": "pixels"}


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A tiny PNG that claims width × height pixels (a decompression bomb as far as its header goes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))


def make_corpus(folder: Path, photo: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.open(photo).convert("RGB").resize((96, 72))
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)).save(folder / "gray16.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.new("L", rgb.size, 0))  # fully transparent: must read as white
    rgba.save(folder / "rgba.png")
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.new("RGB", (1, 1), (200, 30, 30)).save(folder / "tiny.png")
    Image.new("RGB", (4000, 3), (30, 200, 30)).save(folder / "strip.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° when shown
    rgb.save(folder / "rotated.jpg", exif=exif)
    frames = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    rgb.save(folder / "photo.tiff")
    if features.check("webp"):
        rgb.save(folder / "photo.webp")
    rgb.save(folder / "café crème.png")
    (folder / "empty.jpg").write_bytes(b"")
    data = photo.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "notes.jpg").write_text("not an image at all")
    os.symlink(folder / "nowhere.jpg", folder / "gone.jpg")
    (folder / "folder.jpg").mkdir()
    _png_header_only(folder / "bomb.png", 30000, 30000)
    return folder


@pytest.fixture
def corpus(tmp_path, photo_files) -> Path:
    return make_corpus(tmp_path / "corpus", photo_files["coffee"])


def test_the_decoder_reads_every_kind_the_way_a_viewer_shows_it(corpus):
    gray16 = np.asarray(load_image(corpus / "gray16.png"))
    assert gray16.shape == (48, 64, 3) and gray16[0, 0, 0] == 0 and gray16[-1, -1, 0] == 255  # rescaled, not clipped
    assert abs(gray16.mean() - 127.5) < 2
    assert (np.asarray(load_image(corpus / "rgba.png")) == 255).all()  # transparent → white
    assert load_image(corpus / "rotated.jpg").size == (72, 96)  # EXIF orientation applied
    assert load_image(corpus / "anim.gif").size == (96, 72)
    assert np.asarray(load_image(corpus / "cmyk.jpg")).shape == (72, 96, 3)
    for name, reason in BAD.items():
        with pytest.raises(Exception, match=reason):
            load_image(corpus / name)
    with pytest.raises(Exception, match="96×72 pixels, more than the limit of 1,000"):
        load_image(corpus / "cmyk.jpg", max_pixels=1000)


def _check_skipped(skipped, field="error"):
    reasons = {Path(s["image"]).name: s[field] for s in skipped}
    assert set(reasons) == set(BAD), reasons
    for name, reason in BAD.items():
        assert reason in reasons[name], (name, reasons[name])


def _run(argv, capsys):
    code = main(argv + ["--json", "--quiet"], env={})
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, json.loads(out) if out.strip() else None, err


def test_classify_and_explain_read_the_good_images_and_list_the_bad(corpus, tmp_path, capsys):
    tiny = ["--backbone", "mnist_cnn"]  # what is read and skipped does not depend on the network: the small one
    code, s, err = _run(["classify", str(corpus), *tiny], capsys)
    assert code == 0 and sorted(Path(r["image"]).name for r in s["results"]) == sorted(GOOD)
    _check_skipped(s["skipped"])
    assert "warning: skipped 6 unreadable image(s)" in err and "gone.jpg" in err

    code, s, _ = _run(["explain", "saliency", str(corpus), *tiny, "--out", str(tmp_path / "s")], capsys)
    assert code == 0 and len(s["results"]) == len(GOOD)
    _check_skipped(s["skipped"])
    code, s, _ = _run(["explain", "fool", str(corpus), *tiny, "--target", "3", "--max-iters", "2", "--out",
                       str(tmp_path / "f")], capsys)
    assert code == 0 and len(s["results"]) == len(GOOD)
    _check_skipped(s["skipped"])
    sizes = {Path(r["image"]).name: r["size"] for r in s["results"]}
    assert sizes["strip.png"] == [3, 4000] and sizes["tiny.png"] == [1, 1]


def test_features_and_gan_training_list_the_bad_files_of_a_dataset(corpus, tmp_path, capsys, photo_files):
    data = tmp_path / "data"
    shutil.copytree(corpus, data / "awkward", symlinks=True)
    (data / "plain").mkdir()
    for name, path in photo_files.items():
        shutil.copy(path, data / "plain" / f"{name}.jpg")
    code, s, _ = _run(["features", "--data", str(data), "--out", str(tmp_path / "f.npz"), "--workers", "0",
                       "--no-cache"], capsys)
    assert code == 0 and s["n_images"] == len(GOOD) + 2
    _check_skipped(s["skipped"])
    code, s, _ = _run(["gan", "train", "--model", "dcgan", "--data", str(corpus), "--iters", "1", "--batch", "4",
                       "--ngf", "4", "--ndf", "4", "--nz", "4", "--out", str(tmp_path / "g")], capsys)
    assert code == 0 and s["iterations"] == 1
    _check_skipped(s["skipped"])


BAD_OPTIONS = [
    (["classify", "IMG", "--topk", "0"], "--topk must be ≥ 1, got 0"),
    (["classify", "IMG", "--batch-size", "-3"], "--batch-size must be ≥ 1"),
    (["classify", "IMG", "--input-size", "0"], "--input-size must be ≥ 1"),
    (["classify"], "IMAGES_OR_DIRS is required"),
    (["features", "--data", "DATA"], "--out is required"),
    (["features", "--data", "DATA", "--out", "OUT", "--pool", "mean"], "--pool 'mean' is not one of: avg, max, flatten"),
    (["features", "--data", "DATA", "--out", "OUT", "--workers", "-1"], "--workers must be ≥ 0"),
    (["transfer", "--data", "DATA", "--C", "0"], "--C must be > 0, got 0.0"),
    (["transfer", "--data", "DATA", "--folds", "1"], "--folds must be ≥ 2, got 1"),
    (["transfer", "--data", "DATA", "--scaling", "l3"], "did you mean 'l2'"),
    (["transfer", "--data", "DATA", "--precision", "fp16"], "--precision 'fp16' is not one of: auto, fp32, bf16"),
    (["explain", "saliency", "IMG", "--target", "none"], "saliency needs a target"),
    (["explain", "saliency", "IMG", "--samples", "0"], "--samples must be ≥ 1"),
    (["explain", "saliency", "IMG", "--method", "gradcam", "--layer", "layer9"], "unknown cut point 'layer9'"),
    (["explain", "fool", "IMG"], "--target is required"),
    (["explain", "fool", "IMG", "--target", "tarantula", "--max-iters", "0"], "--max-iters must be ≥ 1, got 0"),
    (["explain", "fool", "IMG", "--target", "tarantula", "--lr", "-1"], "--lr must be > 0"),
    (["explain", "fool", "IMG", "--target", "tarantula", "--norm", "l1"], "--norm 'l1' is not one of: linf, l2"),
    (["explain", "classviz", "--class", "tick", "--iters", "-1"], "--iters must be ≥ 0"),
    (["explain", "classviz", "--class", "tick", "--scale", "2"], "--scale must be in [0, 0.9], got 2.0"),
    (["explain", "classviz"], "--class is required"),
    (["gan", "train", "--model", "cgan", "--data", "mnist", "--iters", "0"], "--iters must be ≥ 1, got 0"),
    (["gan", "train", "--model", "cgan", "--data", "mnist", "--batch", "0"], "--batch must be ≥ 1, got 0"),
    (["gan", "train", "--model", "cgan", "--data", "mnist", "--lr", "0"], "--lr must be > 0"),
    (["gan", "train", "--model", "gan", "--data", "mnist"], "--model 'gan' is not one of: dcgan, cdcgan, cgan"),
    (["gan", "train", "--model", "cgan", "--data", "mnist", "--out", "FILE"], "is a file, not a folder"),
    (["gan", "sample", "-n", "0", "--out", "OUT"], "-n must be ≥ 1, got 0"),
    (["gan", "sample", "--label", "-1", "--out", "OUT"], "--label must be ≥ 0"),
    (["gan", "evaluate", "-n", "1"], "-n must be ≥ 4, got 1"),
    (["reproduce", "--only", "nope", "--out", "OUT"], "unknown experiment 'nope'"),
    (["explain", "saliency", "IMG", "--out", "FILE"], "is a file, not a folder"),
    (["explain", "saliency", "IMG", "--config", "FILE"], "cannot read config"),
]


@pytest.mark.parametrize("argv, message", BAD_OPTIONS, ids=[" ".join(a[:3]) + " " + m[:20] for a, m in BAD_OPTIONS])
def test_a_bad_option_is_one_line_and_exit_2(argv, message, photo_files, tiny_scenes, tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    subst = {"IMG": str(photo_files["coffee"]), "DATA": str(tiny_scenes), "OUT": str(tmp_path / "out"),
             "FILE": str(tmp_path / "file")}
    assert main([subst.get(a, a) for a in argv], env={}) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error:") and message in err and "\n" not in err, err


def test_messages_point_to_what_the_user_meant(tmp_path, capsys):
    from cnnlab.cli import main

    photo = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(photo)
    assert main(["classify", str(photo), "--backbone", "resnet18"]) != 0
    assert "did you mean 'torchvision:resnet18'" in capsys.readouterr().err
    assert main(["classify", str(photo), "--model", "resnet18"]) != 0
    assert "use --backbone resnet18" in capsys.readouterr().err
    for c in ("a", "b"):
        for part in ("train", "test"):
            (tmp_path / "set" / part / c).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / "set" / part / c / "0.png")
    assert main(["transfer", "--data", str(tmp_path / "set"), "--split", "folders", "--limit-per-class", "3"]) != 0
    assert "--limit-per-class draws a subset" in capsys.readouterr().err
