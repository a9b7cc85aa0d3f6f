"""Bring your own photos and test set: image folders of any format, size and mode, read by export/imageprep.py
(the module the Raspberry Pi bundle ships), --image-size / --channels / --skip-bad-images / --test-data, and the
bundle's infer.py on the same image files giving exactly the shipped INT8 model's predictions of the build.

The photos are scikit-learn's digits, upscaled to mixed sizes and saved as JPEG, PNG, WebP and BMP (some RGB,
one stored sideways with an EXIF orientation tag), so a short build learns them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_distill.cli import main
from edge_distill.export import imageprep
from edge_distill.export.imageprep import ImageError, default_size, load_image, parse_size, probe

# Short training: the build's mechanics and host/device agreement are under test, not the student's accuracy.
FAST = ["--teacher-epochs", "12", "--student-epochs", "12", "--max-int8-drop", "100", "--bench-warmup", "1", "--bench-runs", "5",
        "--calib-count", "40", "--quiet"]
CLASSES = ("0", "1", "2", "3")
FORMATS = ("jpg", "png", "jpg", "png", "webp", "bmp")


def digit_photos(root: Path, per_class: int, offset: int, exif_sideways: bool = False) -> list[Path]:
    """Digits as dark ink on white, upscaled to 14..22 px (mixed aspect), every third in RGB; returns the files."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    rng = np.random.default_rng(offset)
    files = []
    for c in CLASSES:
        (root / c).mkdir(parents=True, exist_ok=True)
        picks = np.flatnonzero(bunch.target == int(c))[offset: offset + per_class]
        for i, k in enumerate(picks):
            ink = (255 - bunch.images[k] * (255 / 16)).astype(np.uint8)
            w, h = int(rng.integers(14, 23)), int(rng.integers(14, 23))
            img = Image.fromarray(ink).resize((w, h), Image.Resampling.BICUBIC)
            if i % 3 == 0:  # colour: a blue-ish tint, so the channels really are RGB
                a = np.asarray(img.convert("RGB")).astype(np.int32)
                img = Image.fromarray(np.clip(a * [0.8, 0.9, 1.0] + [0, 10, 30], 0, 255).astype(np.uint8))
            fmt = FORMATS[i % len(FORMATS)]
            path = root / c / f"{offset + i:03d}.{fmt}"
            if exif_sideways and c == "1" and i == 1:  # stored rotated; the EXIF tag says how to show it upright
                exif = Image.Exif()
                exif[0x0112] = 6  # "rotate 90° clockwise to view"
                img.transpose(Image.Transpose.ROTATE_90).save(path.with_suffix(".jpg"), exif=exif.tobytes(), quality=95)
                path = path.with_suffix(".jpg")
            else:
                img.save(path, **({"quality": 95} if fmt == "jpg" else {"lossless": True} if fmt == "webp" else {}))
            files.append(path)
    return files


@pytest.fixture(scope="module")
def photo_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    digit_photos(root / "train", per_class=40, offset=0, exif_sideways=True)
    (root / "train" / "2" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    test_files = digit_photos(root / "test", per_class=12, offset=60)
    out = root / "run"
    argv = ["build", "--profile", "rpi4", "--data", str(root / "train"), "--test-data", str(root / "test"), "--skip-bad-images",
            "--out", str(out), *FAST]
    assert main(argv) == 0
    return {"root": root, "out": out, "test_files": sorted(test_files), "report": json.loads((out / "report.json").read_text())}


def test_a_folder_of_mixed_photos_builds_with_its_own_test_set(photo_build):
    report, out = photo_build["report"], photo_build["out"]
    spec = report["data"]["spec"]
    sizes = [probe(f)[:2] for f in sorted((photo_build["root"] / "train").rglob("*.*")) if f.name != "broken.jpg"]
    assert spec["input_shape"] == [3, *default_size(sizes)]  # RGB (some images are colour); the folder's median size
    assert spec["resize"] == "cover-center-crop" and spec["pixel_scale"] == 255.0
    assert spec["skipped_images"] == [str(photo_build["root"] / "train" / "2" / "broken.jpg")]
    assert "1 undecodable file(s) skipped" in spec["source"] and "test split: test folder" in spec["source"]
    assert "Skipped 1 undecodable image file(s)" in (out / "build.log").read_text()
    # --test-data is the ledger's test split; --data (160 decodable images) made only train/val.
    assert report["data"]["n_test"] == len(photo_build["test_files"]) == report["ledger"]["n_test"]
    assert report["data"]["n_train"] + report["data"]["n_val"] == 4 * 40
    pre = json.loads((out / "bundle" / "raspberry-pi" / "preprocess.json").read_text())
    assert pre["image_files"]["size"] == [18, 18] and pre["image_files"]["channels"] == 3
    assert pre["image_files"]["resize"] == "cover-center-crop" and pre["image_files"]["filter"] == "bilinear"
    shipped = (out / "bundle" / "raspberry-pi" / "imageprep.py").read_bytes()
    assert shipped == Path(imageprep.__file__).read_bytes()  # the bundle reads photos with the build's own code
    assert "pillow==" in (out / "bundle" / "raspberry-pi" / "requirements.txt").read_text()


def test_bundle_infer_on_the_photos_matches_the_shipped_int8_model(photo_build):
    """infer.py on the JPEG/PNG/WebP/BMP test files == the bundled INT8 model on the build's own test split."""
    from edge_distill.convert.runtimes import run_tflite
    from edge_distill.data import Splits

    out, files = photo_build["out"], photo_build["test_files"]
    folder = out / "bundle" / "raspberry-pi"
    splits = Splits.load(out / "data" / "splits.npz")
    expected = run_tflite(folder / "model.tflite", splits.x_test, threads=1).argmax(1)
    proc = subprocess.run([sys.executable, str(folder / "infer.py"), *map(str, files), "--json", "--threads", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["files"] == [str(f) for f in files]  # the test folder's order: class folders, then file names
    assert got["predictions"] == expected.tolist()  # photo by photo
    assert len(set(got["predictions"])) == len(CLASSES)  # a real classifier, not one that always says the same
    ledger = {r["variant"]: r for r in photo_build["report"]["ledger"]["rows"]}
    shipped = photo_build["report"]["bundle"]["model_variant"]
    assert got["accuracy"] == pytest.approx(ledger[shipped]["accuracy"])  # labels from the class folders
    table = subprocess.run([sys.executable, str(folder / "infer.py"), str(files[0]), str(files[-1])], capture_output=True, text=True, timeout=300)
    rows = [line.split("\t") for line in table.stdout.splitlines()]
    assert table.returncode == 0 and [r[0] for r in rows] == [str(files[0]), str(files[-1])]  # file<TAB>label<TAB>score
    assert [r[1] for r in rows] == [CLASSES[got["predictions"][0]], CLASSES[got["predictions"][-1]]] and float(rows[0][2]) != 0


def test_bundle_infer_errors_are_one_message(photo_build, tmp_path):
    folder = photo_build["out"] / "bundle" / "raspberry-pi"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    proc = subprocess.run([sys.executable, str(folder / "infer.py"), str(bad)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "cannot decode image" in proc.stderr and "bad.png" in proc.stderr
    # Without Pillow: one line that says how to install it.
    no_pil = ("import runpy, sys; sys.modules['PIL'] = None; sys.argv = sys.argv[1:]; "
              "runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", no_pil, str(folder / "infer.py"), str(photo_build["test_files"][0])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "pip install pillow" in proc.stderr


def test_undecodable_photo_and_mismatched_test_classes_are_clear_errors(photo_build, tmp_path, capsys):
    root = photo_build["root"]
    rc = main(["build", "--data", str(root / "train"), "--out", str(tmp_path / "r1"), *FAST])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err and "cannot decode image" in err and "broken.jpg" in err and "--skip-bad-images" in err
    shutil.copytree(root / "test", tmp_path / "test")
    (tmp_path / "test" / "3").rename(tmp_path / "test" / "three")
    rc = main(["build", "--data", str(root / "train"), "--skip-bad-images", "--test-data", str(tmp_path / "test"),
               "--out", str(tmp_path / "r2"), *FAST])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err and "'three'" in err and "no '3'" in err


def test_test_data_from_npz_and_options_in_the_data_key(tmp_path):
    from edge_distill.data import prepare
    from edge_distill.errors import DataError
    from edge_distill.options import BuildOptions

    digit_photos(tmp_path / "train", per_class=12, offset=0)
    x = np.full((8, 16, 24, 3), 200, np.uint8)
    y = np.arange(8) % 4
    np.savez(tmp_path / "test.npz", x=x, y=y, class_names=np.array(["3", "2", "1", "0"]))  # its own class order
    with pytest.raises(DataError, match=r"shape \(3, 16, 24\).*\(1, 16, 24\)"):
        prepare(str(tmp_path / "train"), 0, 8, image_size=(16, 24), channels=1, test_data=str(tmp_path / "test.npz"))
    spec, splits = prepare(str(tmp_path / "train"), 0, 8, image_size=(16, 24), channels=3, test_data=str(tmp_path / "test.npz"))
    assert spec.input_shape == (3, 16, 24) and len(splits.y_test) == 8
    assert splits.y_test.tolist() == [3 - v for v in y]  # mapped onto the training data's class order by name
    assert len(splits.y_train) + len(splits.y_val) == 48
    # Every image-file setting is in the data stage's settings, and the test set's content among its inputs.
    from edge_distill.tasks import get_task

    vision = get_task("vision")
    opts = BuildOptions(image_size="24x16", channels="3", skip_bad_images=True, test_data=str(tmp_path / "test.npz"))
    settings = vision.data_settings(opts)
    assert (settings.image_size, settings.channels, settings.skip_bad_images, settings.test_data) == ((16, 24), "3", True, opts.test_data)
    assert vision.data_settings(BuildOptions()).image_size is None and len(vision.data_inputs(BuildOptions())) == 1
    inputs = vision.data_inputs(opts)
    np.savez(tmp_path / "test.npz", x=x, y=(y + 1) % 4)
    assert vision.data_inputs(opts)[1] != inputs[1] and vision.data_inputs(opts)[0] == inputs[0]


# ---- imageprep: the shared preprocessing ---------------------------------------------------------------


def test_size_parsing_and_the_default_size():
    assert parse_size("32") == (32, 32) and parse_size("48x32") == (32, 48) and parse_size(" 48X32 ") == (32, 48)
    for bad in ("0", "32x", "x", "1025", "4x3x2", "3", "ax4", ""):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert imageprep.format_size((32, 48)) == "48x32"
    assert default_size([(20, 30), (40, 60), (30, 45)]) == (30, 45)  # median height, median width
    assert default_size([(300, 400), (600, 800), (480, 640)]) == (48, 64)  # capped at 64 px on the long side


def test_exif_orientation_is_applied(tmp_path):
    upright = np.zeros((6, 10), np.uint8)
    upright[0, :] = 255  # a bright top row: not symmetric under any rotation or flip
    upright[:, 0] = 128
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(tmp_path / "side.png", exif=exif.tobytes())
    assert Image.open(tmp_path / "side.png").size == (6, 10)  # stored sideways
    assert probe(tmp_path / "side.png") == (6, 10, False)  # (height, width) as shown
    assert np.array_equal(load_image(tmp_path / "side.png", (6, 10), 1)[:, :, 0], upright)


def test_modes_alpha_and_channels(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    got = load_image(tmp_path / "rgba.png", (8, 8), 3)
    assert got[0, 0].tolist() == [200, 0, 0] and got[7, 0].tolist() == [255, 255, 255]  # transparent → white
    grey = load_image(tmp_path / "rgba.png", (8, 8), 1)
    assert grey.shape == (8, 8, 1) and grey[0, 0, 0] == round(200 * 0.299) and grey[7, 0, 0] == 255  # ITU-R 601-2 luma
    Image.fromarray((np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)).save(tmp_path / "g16.png")
    assert load_image(tmp_path / "g16.png", (8, 8), 1)[7, 7, 0] == round(63000 / 257)  # 16-bit → 8-bit
    Image.fromarray(np.full((8, 8), 77, np.uint8)).convert("P").save(tmp_path / "palette.png")
    assert probe(tmp_path / "palette.png")[2] is False  # an all-grey palette is grey
    assert load_image(tmp_path / "palette.png", (8, 8), 3)[0, 0].tolist() == [77, 77, 77]  # grey → RGB replicated
    Image.fromarray(np.full((8, 8, 3), [10, 200, 30], np.uint8)).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    assert probe(tmp_path / "cmyk.jpg")[2] is True and load_image(tmp_path / "cmyk.jpg", (8, 8), 3).shape == (8, 8, 3)
    Image.fromarray(np.full((8, 8, 3), [10, 200, 30], np.uint8)).save(tmp_path / "c.webp", lossless=True)
    assert load_image(tmp_path / "c.webp", (8, 8), 3)[3, 3].tolist() == [10, 200, 30]


def test_resize_covers_the_target_and_keeps_the_centre(tmp_path):
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :8] = [255, 0, 0]
    wide[:, 8:32] = [0, 255, 0]
    wide[:, 32:] = [0, 0, 255]
    Image.fromarray(wide).save(tmp_path / "wide.png")
    square = load_image(tmp_path / "wide.png", (10, 10), 3)  # scaled by 1/2 to 10x20, the middle 10 columns kept
    assert (square == [0, 255, 0]).all()  # the red and blue sides are cropped away, nothing is stretched or padded
    tall = load_image(tmp_path / "wide.png", (40, 20), 3)  # scaled up by 2 to cover 20 wide: 80x40, middle 20 columns
    assert (tall[:, 5:15] == [0, 255, 0]).all()
    same = load_image(tmp_path / "wide.png", (20, 40), 3)  # already the target size: the pixels as they are
    assert np.array_equal(same, wide)
    gradient = np.add.outer(np.arange(600) // 3, np.arange(800) // 4).astype(np.uint8)
    Image.fromarray(gradient).save(tmp_path / "big.jpg", quality=95)  # decoded at a reduced DCT scale (draft)
    small = load_image(tmp_path / "big.jpg", (24, 32), 1).astype(int)[:, :, 0]
    exact = np.asarray(imageprep.fit(Image.fromarray(gradient), (24, 32))).astype(int)
    assert np.abs(small - exact).mean() < 2.0  # the same picture, not shifted by the reduced decode


def test_damaged_files_raise_an_error_naming_them(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="cannot decode image .*junk.jpg"):
        probe(tmp_path / "junk.jpg")
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(tmp_path / "cut.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:50])  # header intact, pixels cut off
    assert probe(tmp_path / "cut.png")[:2] == (30, 30)
    with pytest.raises(ImageError, match="cut.png"):
        load_image(tmp_path / "cut.png", (8, 8), 1)
    with pytest.raises(ValueError, match="unknown resize policy"):
        load_image(tmp_path / "cut.png", (8, 8), 1, policy="stretch")
