"""Bundles: files and checksums, byte-reproducible zips, the Pi bundle's infer.py, the Android model's metadata.

The model is a real full-INT8 TFLite classifier of scikit-learn's handwritten digits (a nearest-centroid
linear layer, built in closed form so no training is needed).  Its "ledger accuracy" is computed the
way the verify stage does it (``run_tflite`` on the normalized test split); the bundle's ``infer.py``
must reproduce it exactly from raw pixels.  The slow tests install the bundle into a fresh venv that
holds only numpy + ai-edge-litert, and read the Android metadata with tflite-support's own reader.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from tflite_models import full_int8_tflite

from edge_distill.bundle import BundleResult, ModelFacts, build_bundles
from edge_distill.tasks.vision import IMAGE_INPUT
from edge_distill.errors import ConfigError
from edge_distill.rundir import RunDir, sha256_file
from edge_distill.serde import from_jsonable, to_jsonable
from edge_distill.tflite_metadata import (FILE_IDENTIFIER, AssociatedFile, ModelInfo, TensorInfo, build_metadata,
                                          populate, read_metadata)

PIXEL_SCALE = 16.0


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from sklearn.datasets import load_digits

    from edge_distill.convert.runtimes import run_tflite

    bunch = load_digits()
    raw = bunch.images.astype(np.float32)  # (N, 8, 8), pixel values 0..16
    y = bunch.target.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    train, test = order[:1200], order[1200:1500]
    # Normalized exactly as edge_distill.data does it: statistics of the training split, float32 arithmetic.
    scaled = raw / np.float32(PIXEL_SCALE)
    mean, std = float(scaled[train].mean()), float(scaled[train].std())
    x = ((scaled - mean) / std).astype(np.float32)
    flat = x.reshape(len(x), -1)
    centroids = np.stack([flat[train][y[train] == c].mean(0) for c in range(10)])
    weights, bias = centroids.T, -0.5 * (centroids ** 2).sum(1)  # argmax = nearest centroid

    inp = tf.keras.Input((8, 8, 1), batch_size=1)
    dense = tf.keras.layers.Dense(10)
    model = tf.keras.Model(inp, dense(tf.keras.layers.Flatten()(inp)))
    dense.set_weights([weights.astype(np.float32), bias.astype(np.float32)])
    x_nhwc = x[..., None]
    out = tmp_path_factory.mktemp("bundle_model")
    (out / "int8.tflite").write_bytes(full_int8_tflite(model, x_nhwc[train[:200]]))
    logits = run_tflite(out / "int8.tflite", x[test][:, None], threads=1)  # as the verify stage scores it
    accuracy = float((logits.argmax(1) == y[test]).mean())
    assert 0.85 < accuracy < 1.0  # a real classifier, not a trivially perfect one
    np.savez(out / "raw_test.npz", x=raw[test], y=y[test])  # raw pixels, what a device sees
    np.savez(out / "test_nhwc.npz", x=x_nhwc[test], y=y[test])  # like the build's bench/test_nhwc.npz
    facts = ModelFacts(name="digits-rpi4", input_format=IMAGE_INPUT, class_names=tuple(str(n) for n in bunch.target_names),
                       input_shape_nhwc=(1, 8, 8, 1), pixel_scale=PIXEL_SCALE, mean=mean, std=std,
                       variant="tflite_int8", variant_description="int8 weights, int8 activations, int8 input/output",
                       accuracy=round(accuracy, 6), n_test=len(test), profile="rpi4")
    return {"model": out / "int8.tflite", "raw": out / "raw_test.npz", "nhwc": out / "test_nhwc.npz",
            "facts": facts, "accuracy": accuracy, "logits": logits, "x_test": x_nhwc[test]}


@pytest.fixture(scope="module")
def bundled(digits, tmp_path_factory):
    run = RunDir(tmp_path_factory.mktemp("run"))
    src = run.path("student/student_int8.tflite")
    src.write_bytes(digits["model"].read_bytes())
    result, files = build_bundles(run, src, digits["facts"])
    return {"run": run, "result": result, "files": files, "src": src}


def _infer(python: str, directory: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([python, str(directory / "infer.py"), *args], capture_output=True, text=True, timeout=300)


# ---- layout, checksums, reproducibility ------------------------------------------------------------

def test_layout_manifests_and_checksums(bundled, digits):
    run, result = bundled["run"], bundled["result"]
    assert from_jsonable(BundleResult, json.loads(json.dumps(to_jsonable(result)))) == result
    assert result.accuracy == digits["facts"].accuracy and result.source_sha256 == sha256_file(bundled["src"])
    expected = {
        "raspberry-pi": {"model.tflite", "labels.txt", "preprocess.json", "infer.py", "imageprep.py", "requirements.txt", "README.md",
                         "manifest.json"},
        "android": {"model.tflite", "labels.txt", "README.md", "manifest.json"},
    }
    sums = {}
    for line in run.path("bundle/SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ")
        sums[name] = digest
    for target, names in expected.items():
        b = result.bundle(target)
        folder = run.path(b.directory)
        assert {p.name for p in folder.iterdir()} == names
        manifest = json.loads((folder / "manifest.json").read_text())
        assert {f["path"] for f in manifest["files"]} == names - {"manifest.json"}
        for f in manifest["files"]:
            assert sha256_file(folder / f["path"]) == f["sha256"] and (folder / f["path"]).stat().st_size == f["bytes"]
        assert manifest["model"]["accuracy"] == digits["facts"].accuracy
        assert manifest["model"]["verified_model_sha256"] == result.source_sha256
        with zipfile.ZipFile(run.path(b.archive)) as zf:
            assert sorted(zf.namelist()) == sorted(f"{target}/{n}" for n in names)
            for n in names:  # the zip holds exactly the folder's bytes
                assert zf.read(f"{target}/{n}") == (folder / n).read_bytes()
        assert sums[f"{target}.zip"] == b.archive_sha256 == sha256_file(run.path(b.archive))
    pi = run.path("bundle/raspberry-pi")
    assert (pi / "model.tflite").read_bytes() == digits["model"].read_bytes()  # the verified bytes, untouched
    assert (pi / "labels.txt").read_text().splitlines() == [str(i) for i in range(10)]
    readme = (pi / "README.md").read_text()
    assert "{{" not in readme and "pip install -r requirements.txt" in readme and "python3 -m venv" in readme
    import ai_edge_litert

    assert f"ai-edge-litert=={ai_edge_litert.__version__}" in (pi / "requirements.txt").read_text()
    assert set(bundled["files"]) >= {run.path("bundle/SHA256SUMS"), run.path("bundle/raspberry-pi.zip")}


def test_bundles_are_byte_reproducible(bundled, digits, tmp_path):
    run = RunDir(tmp_path / "again")
    src = run.path("student/student_int8.tflite")
    src.write_bytes(digits["model"].read_bytes())
    again, _ = build_bundles(run, src, digits["facts"])
    assert [b.archive_sha256 for b in again.bundles] == [b.archive_sha256 for b in bundled["result"].bundles]
    # ...and a stale file from an earlier build does not survive a rebuild
    (run.path("bundle/android") / "stale.txt").write_text("old")
    build_bundles(run, src, digits["facts"])
    assert not (run.path("bundle/android") / "stale.txt").exists()


def test_infer_verify_detects_tampering(bundled, tmp_path):
    with zipfile.ZipFile(bundled["run"].path("bundle/raspberry-pi.zip")) as zf:
        zf.extractall(tmp_path)
    folder = tmp_path / "raspberry-pi"
    ok = _infer(sys.executable, folder, "--verify")
    assert ok.returncode == 0 and ok.stdout.count("OK") == 7, ok.stdout
    (folder / "labels.txt").write_text("tampered\n")
    bad = _infer(sys.executable, folder, "--verify")
    assert bad.returncode == 1 and "MODIFIED  labels.txt" in bad.stdout


def test_infer_reproduces_the_ledger_accuracy_from_raw_pixels(bundled, digits):
    folder = bundled["run"].path("bundle/raspberry-pi")
    raw = _infer(sys.executable, folder, str(digits["raw"]), "--json", "--threads", "1")
    assert raw.returncode == 0, raw.stderr
    out = json.loads(raw.stdout)
    assert out["n"] == digits["facts"].n_test and out["accuracy"] == digits["accuracy"]
    assert out["predictions"] == digits["logits"].argmax(1).tolist()  # sample by sample, not just on average
    assert out["labels"][:5] == [str(p) for p in out["predictions"][:5]]
    norm = json.loads(_infer(sys.executable, folder, str(digits["nhwc"]), "--normalized", "--json").stdout)
    assert norm["predictions"] == out["predictions"]
    table = _infer(sys.executable, folder, str(digits["raw"]))
    assert len(table.stdout.splitlines()) == digits["facts"].n_test and "accuracy" in table.stderr
    bad = np.zeros((3, 5, 5), np.float32)
    bad_path = folder.parent / "bad.npy"
    np.save(bad_path, bad)
    err = _infer(sys.executable, folder, str(bad_path))
    assert err.returncode != 0 and "the model expects (8, 8, 1)" in err.stderr


# ---- Android metadata --------------------------------------------------------------------------------

def test_android_model_runs_like_the_verified_one_and_carries_metadata(bundled, digits):
    from ai_edge_litert.interpreter import Interpreter

    from edge_distill.convert.runtimes import run_tflite

    android = bundled["run"].path("bundle/android/model.tflite")
    logits = run_tflite(android, digits["x_test"].transpose(0, 3, 1, 2), threads=1)
    assert np.array_equal(logits, digits["logits"])  # metadata changed nothing the runtime computes
    data = android.read_bytes()
    meta = read_metadata(data)
    assert meta is not None and meta[4:8] == FILE_IDENTIFIER
    assert read_metadata(digits["model"].read_bytes()) is None
    with zipfile.ZipFile(io.BytesIO(data)) as zf:  # labels travel inside the model file
        assert zf.read("labels.txt").decode().splitlines() == [str(i) for i in range(10)]
    interp = Interpreter(model_content=data, num_threads=1)
    interp.allocate_tensors()
    with pytest.raises(ConfigError, match="already carries associated files"):
        populate(data, meta, {})
    with pytest.raises(ConfigError, match="not a TFLite flatbuffer"):
        populate(b"\0" * 64, meta, {})


def test_metadata_validation():
    with pytest.raises(ConfigError, match="colour space"):
        TensorInfo("x", "d", image=("CMYK", 8, 8))
    with pytest.raises(ConfigError, match="must be > 0"):
        TensorInfo("x", "d", mean=(1.0,), std=(0.0,))
    with pytest.raises(ConfigError, match="Associated file type"):
        AssociatedFile("a.txt", "d", "LABELS")
    with pytest.raises(ConfigError, match="line break"):
        ModelFacts("n", IMAGE_INPUT, ("a\nb", "c"), (1, 8, 8, 1), 1.0, 0.0, 1.0, "v", "d", 0.5, 2, "p")
    md = build_metadata(ModelInfo("n", "d", "1", "a", (TensorInfo("x", "d"),), (TensorInfo("y", "d"),)))
    assert md[4:8] == FILE_IDENTIFIER


def _venv(path: Path, *packages: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    python = path / "bin" / "python"
    proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *packages],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return python


@pytest.mark.slow
def test_android_metadata_is_parsed_by_tflite_support(bundled, digits, tmp_path):
    """tflite-support (the reference metadata library) reads what we wrote: its own venv, its own parser."""
    # --no-deps: its protobuf<4 pin clashes with nothing here, but its task library is not needed to read metadata.
    python = _venv(tmp_path / "tfls", "--no-deps", "tflite-support==0.4.4", "flatbuffers", "numpy<2")
    android = bundled["run"].path("bundle/android/model.tflite")
    probe = (
        "import json, sys\n"
        "from tensorflow_lite_support.metadata.python import metadata\n"
        "d = metadata.MetadataDisplayer.with_model_file(sys.argv[1])\n"
        "print(json.dumps({'meta': json.loads(d.get_metadata_json()), 'packed': d.get_packed_associated_file_list(),\n"
        "  'labels': d.get_associated_file_buffer('labels.txt').decode()}))\n"
    )
    proc = subprocess.run([str(python), "-c", probe, str(android)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    meta, facts = out["meta"], digits["facts"]
    assert out["packed"] == ["labels.txt"] and out["labels"].splitlines() == list(facts.class_names)
    assert meta["name"] == "edge-distill digits-rpi4" and meta["min_parser_version"] == "1.0.0"
    (inp,) = meta["subgraph_metadata"][0]["input_tensor_metadata"]
    (out_t,) = meta["subgraph_metadata"][0]["output_tensor_metadata"]
    props = inp["content"]["content_properties"]
    assert inp["content"]["content_properties_type"] == "ImageProperties"
    assert props == {"color_space": "GRAYSCALE", "default_size": {"width": 8, "height": 8}}
    norm = inp["process_units"][0]
    assert norm["options_type"] == "NormalizationOptions"
    assert norm["options"]["mean"][0] == pytest.approx(facts.mean * PIXEL_SCALE, rel=1e-6)
    assert norm["options"]["std"][0] == pytest.approx(facts.std * PIXEL_SCALE, rel=1e-6)
    assert out_t["associated_files"] == [{"name": "labels.txt", "description": out_t["associated_files"][0]["description"],
                                          "type": "TENSOR_AXIS_LABELS"}]
    assert "labels.txt" in out_t["description"] and "int8" in inp["description"]


@pytest.mark.slow
def test_pi_bundle_in_a_fresh_venv_gets_the_ledger_accuracy(bundled, digits, tmp_path):
    """Unzip the Pi bundle, install its requirements.txt into a venv with nothing else, classify the test set."""
    with zipfile.ZipFile(bundled["run"].path("bundle/raspberry-pi.zip")) as zf:
        zf.extractall(tmp_path)
    folder = tmp_path / "raspberry-pi"
    python = _venv(tmp_path / "venv", "-r", str(folder / "requirements.txt"))
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True)
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert not names & {"torch", "tensorflow", "onnx", "edge-distill", "keras", "onnxruntime"}
    assert _infer(str(python), folder, "--verify").returncode == 0
    proc = _infer(str(python), folder, str(digits["raw"]), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["runtime"] == "ai_edge_litert" and out["accuracy"] == digits["accuracy"]
    assert out["predictions"] == digits["logits"].argmax(1).tolist()
