"""Bad input through the real entry point: a one-paragraph error naming what was wrong and how to fix
it, a non-zero exit, no traceback — and nothing already finished is lost.

(Unknown profile / dataset / student family, a missing or garbage teacher file, a plain pickle and an
output path under a file are covered in test_cli.py; this file covers the rest of the list.)
"""

import json
import pickle
import struct
import zlib

import numpy as np
import pytest
import torch

from edge_distill.cli import main
from edge_distill.errors import DataError
from edge_distill.models.cnn import ConvClassifier

FAST = ["--teacher-epochs", "1", "--student-epochs", "1", "--bench-warmup", "0", "--bench-runs", "1", "--quiet"]


def fails(capsys, argv, *words, code=None):
    """Run the CLI; it must fail cleanly with every one of ``words`` in its error output."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc != 0, f"{argv} succeeded"
    if code is not None:
        assert rc == code
    assert "Traceback" not in err
    assert "error:" in err and "hint:" in err, err
    for w in words:
        assert w in err, f"{w!r} not in:\n{err}"
    return err


# ---- user data ----------------------------------------------------------------------------------


def png(path, img):
    """A minimal 8-bit PNG writer (grey or RGB), so the test needs no imaging library."""
    img = np.asarray(img, np.uint8)
    h, w = img.shape[:2]
    colour = 0 if img.ndim == 2 else 2
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def image_folder(root, n=12, size=(10, 10), classes=("cat", "dog")):
    rng = np.random.default_rng(0)
    for c in classes:
        for i in range(n):
            png(root / c / f"{i:02d}.png", rng.integers(0, 255, size))
    return root


def npz(path, x, y, **extra):
    np.savez(path, x=x, y=y, **extra)
    return str(path)


def digits_like(n=120, k=4, size=8):
    rng = np.random.default_rng(0)
    return rng.integers(0, 16, (n, size, size)).astype(np.uint8), np.arange(n) % k


def test_labels_out_of_range(tmp_path, capsys):
    x, y = digits_like()
    path = npz(tmp_path / "d.npz", x, np.where(y == 3, 9, y), class_names=np.array(["a", "b", "c", "d"]))
    fails(capsys, ["build", "--data", path, "--out", str(tmp_path / "run"), *FAST], "out of range", "e.g. 9", "0..3")
    path = npz(tmp_path / "neg.npz", x, y - 1)
    fails(capsys, ["build", "--data", path, "--out", str(tmp_path / "run"), *FAST], "out of range", "-1")


def test_empty_dataset(tmp_path, capsys):
    path = npz(tmp_path / "empty.npz", np.zeros((0, 8, 8), np.uint8), np.zeros(0, np.int64))
    fails(capsys, ["build", "--data", path, "--out", str(tmp_path / "run"), *FAST], "is empty")
    (tmp_path / "folder" / "cat").mkdir(parents=True)
    (tmp_path / "folder" / "dog").mkdir()
    fails(capsys, ["build", "--data", str(tmp_path / "folder"), "--out", str(tmp_path / "run"), *FAST], "holds no images")


def test_undecodable_image_names_the_file(tmp_path, capsys):
    """Images of mixed size and channel count are resized and converted (tests/test_photos.py); a damaged one is an error."""
    root = image_folder(tmp_path / "imgs")
    png(root / "dog" / "odd.png", np.zeros((12, 10), np.uint8))
    (root / "dog" / "odd.png").write_bytes((root / "dog" / "odd.png").read_bytes()[:40])  # truncated inside IDAT
    fails(capsys, ["build", "--data", str(root), "--out", str(tmp_path / "run"), *FAST], "cannot decode image", "odd.png", "--skip-bad-images")
    (root / "cat" / "00.png").write_bytes(b"not an image at all")
    fails(capsys, ["build", "--data", str(root), "--out", str(tmp_path / "run"), *FAST], "cannot decode image", "cat/00.png")


@pytest.mark.parametrize("args, words", [
    (["--image-size", "0"], ["--image-size must be N or WxH", "'0'", "4..1024"]),
    (["--image-size", "32x"], ["--image-size must be N or WxH", "'32x'"]),
    (["--channels", "3"], ["prepare image files", "built-in dataset 'digits'"]),
])
def test_bad_image_options(tmp_path, capsys, args, words):
    fails(capsys, ["build", "--out", str(tmp_path / "run"), *args, *FAST], *words)


def test_data_that_does_not_fit_the_teacher(tmp_path, capsys):
    """A TorchScript teacher made for 1x8x8 images, given 1x12x12 data: refused before any training."""
    teacher = torch.jit.script(ConvClassifier(1, 8, 4, (8,)).eval())
    path = tmp_path / "teacher.pt"
    torch.jit.save(teacher, str(path))
    x, y = digits_like(size=12)
    # A global-pool CNN accepts any image size; a wrong channel count or class count is what it cannot take.
    x3 = np.repeat(x[:, None], 3, axis=1)
    fails(capsys, ["build", "--data", npz(tmp_path / "rgb.npz", x3, y), "--teacher", str(path), "--calib-count", "20", "--out", str(tmp_path / "r1"), *FAST],
          "fails on an input of shape (batch, 3, 12, 12)", "NCHW")
    x5, y5 = digits_like(n=150, k=5, size=12)
    fails(capsys, ["build", "--data", npz(tmp_path / "five.npz", x5, y5), "--teacher", str(path), "--calib-count", "20", "--out", str(tmp_path / "r2"), *FAST],
          "expected logits of shape (2, 5)")
    assert not (tmp_path / "r2" / "teacher" / "teacher.pt").exists()  # nothing half-made looks finished
    assert set(json.loads((tmp_path / "r2" / "manifest.json").read_text())["stages"]) == {"data"}


def test_corrupt_and_foreign_npz(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    fails(capsys, ["build", "--data", str(bad), "--out", str(tmp_path / "run"), *FAST], "Cannot read dataset file")
    x, y = digits_like()
    obj = npz(tmp_path / "obj.npz", x, np.array([object()] * len(y), dtype=object))
    fails(capsys, ["build", "--data", obj, "--out", str(tmp_path / "run"), *FAST], "pickle")
    wrong = npz(tmp_path / "wrong.npz", x, y)
    np.savez(wrong, images=x, labels=y)
    fails(capsys, ["build", "--data", wrong, "--out", str(tmp_path / "run"), *FAST], "needs 'x' and 'y'")
    fails(capsys, ["build", "--data", str(tmp_path / "absent.npz"), "--out", str(tmp_path / "run"), *FAST], "does not exist")


def test_a_class_with_too_few_images(tmp_path, capsys):
    x, y = digits_like()
    y[y == 2] = 1
    y[:3] = 2
    fails(capsys, ["build", "--data", npz(tmp_path / "d.npz", x, y), "--out", str(tmp_path / "run"), *FAST], "fewer than 10 images", "'2': 3")


def test_a_good_user_dataset_loads(tmp_path):
    """The same loaders accept well-formed data (so the failures above are about the data, not the loader)."""
    from edge_distill.data import prepare

    spec, splits = prepare(str(image_folder(tmp_path / "imgs", n=20)), 0, 8)
    assert spec.input_shape == (1, 10, 10) and spec.class_names == ("cat", "dog") and len(splits.y_calib) == 8
    x, y = digits_like()
    spec, _ = prepare(npz(tmp_path / "nhwc.npz", np.repeat(x[..., None], 3, axis=3), y), 0, 8)
    assert spec.input_shape == (3, 8, 8) and spec.pixel_scale == 255.0


# ---- calibration, budgets, output directory -------------------------------------------------------


def test_too_few_and_too_many_calibration_samples(tmp_path, capsys):
    fails(capsys, ["build", "--calib-count", "5", "--out", str(tmp_path / "run"), *FAST], "5 calibration samples", "fewer than the 10 classes")
    fails(capsys, ["build", "--calib-count", "100000", "--out", str(tmp_path / "run"), *FAST], "training split has only")


def test_budgets_nothing_can_meet_keep_the_finished_stages(tmp_path, capsys):
    from importlib import resources

    text = (resources.files("edge_distill.profiles") / "rpi4.toml").read_text()
    tiny = tmp_path / "tiny.toml"
    tiny.write_text(text.replace('name = "rpi4"', 'name = "tiny"').replace("max_params = 1_000_000", "max_params = 50")
                    .replace("max_params = 1000000", "max_params = 50"))
    assert "max_params = 50" in tiny.read_text()
    run = tmp_path / "run"
    fails(capsys, ["build", "--profile", str(tiny), "--out", str(run), *FAST], "No cnn student fits profile 'tiny'", "budget 50", "Raise the profile's budgets", code=2)
    # The data and teacher stages finished before sizing failed; they stay recorded and are reused.
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert {"data", "teacher"} <= set(stages) and "size" not in stages
    log = (run / "build.log").read_text()
    assert "error:" in log  # the error is in the run's log, not only on the console


def test_output_directory_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("a file, not a directory")
    fails(capsys, ["build", "--out", str(target), *FAST], "Cannot write to the run directory", "--out")
    fails(capsys, ["report", str(target)], "No report.json")


# ---- model files -----------------------------------------------------------------------------------


def test_code_executing_pickle_is_refused_and_never_unpickled(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # loading this would create the marker file

    path = tmp_path / "teacher.pt"
    torch.save({"model": Payload()}, path, pickle_module=pickle)
    fails(capsys, ["build", "--teacher", str(path), "--out", str(tmp_path / "run"), *FAST], "could execute arbitrary code", "--trust-pickle")
    assert not marker.exists()


def test_truncated_torchscript_teacher(tmp_path, capsys):
    path = tmp_path / "teacher.pt"
    torch.jit.save(torch.jit.script(ConvClassifier(1, 8, 10, (8,)).eval()), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    fails(capsys, ["build", "--teacher", str(path), "--out", str(tmp_path / "run"), *FAST], "Teacher file", "teacher.pt")


@pytest.mark.parametrize("suffix, content, words", [
    (".tflite", b"\x00" * 64, ["not a TFLite flatbuffer"]),
    (".tflite", b"1234TFL3" + bytes(range(256)) * 8, ["damaged TFLite file"]),
    (".onnx", b"\x08\x07\x12garbage" * 50, ["not a valid ONNX model"]),
    (".pt", b"whatever", ["only .tflite and .onnx"]),
])
def test_inspect_refuses_corrupt_model_files(tmp_path, capsys, suffix, content, words):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(content)
    fails(capsys, ["inspect", str(path)], *words)


def test_inspect_missing_file(tmp_path, capsys):
    fails(capsys, ["inspect", str(tmp_path / "nope.tflite")], "does not exist")


@pytest.mark.parametrize("name, content, words", [
    ("model.tflite", b"1234TFL3" + bytes(range(256)) * 8, ["model.tflite"]),  # right magic, garbage inside: LiteRT segfaults
    ("model.onnx", b"\x08\x07\x12garbage" * 50, ["could not be loaded as an ONNX model"]),
])
def test_bench_refuses_a_corrupt_model_without_crashing_the_host(tmp_path, capsys, name, content, words):
    path = tmp_path / name
    path.write_bytes(content)
    fails(capsys, ["bench", str(path), "--runs", "1", "--warmup", "0"], *words)


@pytest.mark.parametrize("host, words", [
    ("ssh://nobody@edge-distill-test.invalid", ["edge-distill-test.invalid", "ssh"]),
    ("ssh://nobody@127.0.0.1:1", ["127.0.0.1", "ssh"]),
])
def test_unreachable_ssh_host(tmp_path, capsys, host, words):
    import shutil

    from system_packages import require_package

    require_package("openssh-client", shutil.which("ssh") is not None, "the ssh client whose errors are checked")
    model = tmp_path / "m.tflite"
    model.write_bytes(b"1234TFL3" + b"\x00" * 64)
    fails(capsys, ["bench", str(model), "--runner", host, "--runs", "1", "--warmup", "0"], *words)


def test_data_errors_are_data_errors(tmp_path):
    """Library callers get the typed exception, not only the CLI's message."""
    from edge_distill.data import prepare

    x, y = digits_like()
    with pytest.raises(DataError):
        prepare(npz(tmp_path / "d.npz", x, y + 10, class_names=np.array(list("abcd"))), 0, 8)
