"""bench: the device agent in real subprocesses, on real LiteRT and onnxruntime, with tiny models built here."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tflite_models import full_int8_tflite

from edge_distill.bench import RUNNERS, BenchResult, BenchSuite, bench_in_rounds, bench_model, describe_host, runner_names
from edge_distill.errors import BenchError, ConfigError
from edge_distill.serde import from_jsonable, to_jsonable

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "export" / "agent.py"
FORBIDDEN = {"torch", "tensorflow", "onnx", "edge_distill", "keras", "onnx2tf"}

N_CLASSES, SIDE = 3, 8
RUNS = dict(warmup=3, runs=40)


def _templates() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A labelling the model gets right by construction: class c is template c plus small noise."""
    rng = np.random.default_rng(7)
    templates = rng.choice([-1.0, 1.0], size=(N_CLASSES, SIDE * SIDE)).astype(np.float32)
    y = rng.integers(0, N_CLASSES, size=60)
    x = templates[y] + 0.3 * rng.standard_normal((60, SIDE * SIDE)).astype(np.float32)
    return templates, x.astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import torch

    out = tmp_path_factory.mktemp("bench_models")
    templates, x, y = _templates()
    weights = templates.T / (SIDE * SIDE)  # logits = x·template / 64: ~1 for the right class, ~0 otherwise
    assert (np.argmax(x @ weights, axis=1) == y).all()  # the labelling really is the model's own argmax

    inp = tf.keras.Input((SIDE, SIDE, 1), batch_size=1)
    dense = tf.keras.layers.Dense(N_CLASSES)
    keras_model = tf.keras.Model(inp, dense(tf.keras.layers.Flatten()(inp)))
    dense.set_weights([weights, np.zeros(N_CLASSES, np.float32)])

    conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    (out / "fp32.tflite").write_bytes(conv.convert())

    x_img = x.reshape(-1, SIDE, SIDE, 1)
    (out / "int8.tflite").write_bytes(full_int8_tflite(keras_model, x_img))

    linear = torch.nn.Linear(SIDE * SIDE, N_CLASSES)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weights.T.copy()))
        linear.bias.zero_()
    torch.onnx.export(linear.eval(), (torch.zeros(1, SIDE * SIDE),), str(out / "linear.onnx"),
                      input_names=["x"], output_names=["logits"], dynamo=False)

    np.savez(out / "img.npz", x=x_img, y=y)
    np.savez(out / "img_shuffled.npz", x=x_img, y=np.random.default_rng(1).permutation(y))
    np.savez(out / "flat.npz", x=x, y=y)
    np.savez(out / "wrong_shape.npz", x=x.reshape(-1, 16, 4, 1), y=y)

    raw = (out / "fp32.tflite").read_bytes()
    (out / "truncated.tflite").write_bytes(raw[: len(raw) // 2])
    (out / "garbage.tflite").write_bytes(np.random.default_rng(0).bytes(2048))
    (out / "not_onnx.onnx").write_bytes(b"this is not a protobuf" * 50)
    return {p.stem: p for p in out.iterdir()}


def _check_stats(r: BenchResult, threads: int) -> None:
    assert r.threads == threads
    assert r.runs == RUNS["runs"] and r.warmup == RUNS["warmup"]
    assert 0 < r.min_ms <= r.p50_ms <= r.p90_ms <= r.p99_ms <= r.max_ms
    assert r.mean_ms > 0 and r.std_ms >= 0 and r.load_ms > 0 and r.first_inference_ms > 0
    assert r.rss_baseline_mb > 0 and r.rss_after_load_mb > 0
    assert r.peak_rss_mb >= r.rss_after_load_mb
    assert r.runner == "local" and r.where.startswith("host ")
    assert r.model_bytes == Path(r.model).stat().st_size
    # the result survives the manifest: JSON and back, unchanged
    assert from_jsonable(BenchResult, json.loads(json.dumps(to_jsonable(r)))) == r


@pytest.mark.parametrize("threads", [1, 2])
def test_tflite_fp32(models, threads):
    r = bench_model(models["fp32"], threads=threads, **RUNS)
    _check_stats(r, threads)
    assert (r.format, r.runtime) == ("tflite", "ai_edge_litert")
    import ai_edge_litert

    assert r.runtime_version == ai_edge_litert.__version__
    assert r.delegate in ("xnnpack (default CPU delegate)", "none")
    assert (r.input_shape, r.input_dtype, r.output_shape) == ((1, SIDE, SIDE, 1), "float32", (1, N_CLASSES))
    assert r.accuracy is None and r.n_eval == 0


def test_tflite_int8_accuracy(models):
    _, _, y = _templates()
    r = bench_model(models["int8"], threads=2, eval_npz=models["img"], **RUNS)
    _check_stats(r, 2)
    assert (r.input_dtype, r.output_dtype) == ("int8", "int8")
    assert r.timing_input == "first --npz sample"
    assert r.accuracy == 1.0 and r.n_eval == len(y)

    shuffled = np.load(models["img_shuffled"])["y"]
    r = bench_model(models["int8"], threads=1, eval_npz=models["img_shuffled"], **RUNS)
    assert r.accuracy == pytest.approx(np.mean(shuffled == y))  # the model is perfect, so this is exact
    assert r.accuracy < 0.8

    r = bench_model(models["int8"], threads=1, eval_npz=models["img"], eval_limit=10, **RUNS)
    assert r.n_eval == 10 and r.accuracy == 1.0


def test_xnnpack_can_be_turned_off(models):
    """LiteRT's reference kernels: no DELEGATE node, same answers, and the record says which kernels ran."""
    on = bench_model(models["int8"], threads=1, eval_npz=models["img"], **RUNS)
    off = bench_model(models["int8"], threads=1, eval_npz=models["img"], xnnpack=False, **RUNS)
    assert on.delegate.startswith("xnnpack")
    assert off.delegate.startswith("none (XNNPACK off")
    assert off.accuracy == on.accuracy == 1.0
    with pytest.raises(BenchError, match="--no-xnnpack applies to .tflite models only"):
        bench_model(models["linear"], threads=1, xnnpack=False, **RUNS)


def test_bench_in_rounds_times_every_model_once_per_round(models):
    """Each model gets one result per round from its own agent process; a bad round count is refused."""
    paths = [models["fp32"], models["int8"]]
    timed = bench_in_rounds(paths, threads=1, repeats=2, **RUNS)
    assert [[Path(r.model).name for r in rounds] for rounds in timed] == [[p.name] * 2 for p in paths]
    for rounds in timed:
        for r in rounds:
            _check_stats(r, 1)
    assert [r.input_dtype for r in timed[1]] == ["int8", "int8"]
    with pytest.raises(ConfigError, match="repeats = 0 is invalid"):
        bench_in_rounds(paths, threads=1, repeats=0)


def test_onnx(models):
    import onnxruntime

    r = bench_model(models["linear"], threads=2, eval_npz=models["flat"], **RUNS)
    _check_stats(r, 2)
    assert (r.format, r.runtime, r.runtime_version) == ("onnx", "onnxruntime", onnxruntime.__version__)
    assert r.delegate == "none"
    assert r.input_shape == (1, SIDE * SIDE) and r.accuracy == 1.0

    suite = BenchSuite(labels=("teacher",), results=(r,), threads=2, host=describe_host())
    assert from_jsonable(BenchSuite, json.loads(json.dumps(to_jsonable(suite)))) == suite
    with pytest.raises(BenchError, match="labels"):
        BenchSuite(labels=("a", "b"), results=(r,), threads=2, host="h")


@pytest.mark.parametrize(
    "name, message",
    [("garbage", "not a valid TFLite flatbuffer"), ("truncated", "could not be loaded as a TFLite model"),
     ("not_onnx", "could not be loaded as an ONNX model")],
)
def test_corrupt_model_is_a_clear_bench_error(models, name, message):
    path = models[name]
    with pytest.raises(BenchError, match=message) as info:
        bench_model(path, threads=1, **RUNS)
    assert path.name in info.value.message


def test_shape_mismatched_npz(models):
    with pytest.raises(BenchError, match=r"per-sample shape of x is \(16, 4, 1\).*expects \(8, 8, 1\)"):
        bench_model(models["fp32"], threads=1, eval_npz=models["wrong_shape"], **RUNS)


def test_bad_arguments(models, tmp_path):
    with pytest.raises(ConfigError, match="Known bench runners: adb, local, qemu-arm64, ssh"):
        bench_model(models["fp32"], threads=1, runner="no-such-runner")
    assert runner_names() == ["adb", "local", "qemu-arm64", "ssh"] and "local" in RUNNERS
    with pytest.raises(ConfigError, match="threads"):
        bench_model(models["fp32"], threads=0)
    with pytest.raises(BenchError, match="not found"):
        bench_model(tmp_path / "missing.tflite", threads=1)


def test_timeout_stops_the_agent(models):
    with pytest.raises(BenchError, match="did not finish within"):
        bench_model(models["fp32"], threads=1, warmup=0, runs=10**8, timeout_s=1.5)


def test_agent_stdout_is_one_json_object_and_imports_no_host_deps(models):
    # Run the agent as a script, then list which forbidden packages ended up in sys.modules.
    probe = (
        "import runpy, sys\n"
        f"sys.argv = [{str(AGENT)!r}, {str(models['int8'])!r}, '--runs', '5', '--warmup', '1',"
        f" '--npz', {str(models['img'])!r}]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r})\n"
        "sys.stderr.write('FORBIDDEN=' + ','.join(bad) + '\\n')\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1
    data = json.loads(proc.stdout)
    assert data["accuracy"] == 1.0 and data["delegate_nodes"] is not None
    assert "FORBIDDEN=\n" in proc.stderr  # nothing forbidden was imported at run time

    bad = subprocess.run([sys.executable, str(AGENT), str(models["garbage"])], capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stdout.splitlines()) == 1
    assert "not a valid TFLite flatbuffer" in json.loads(bad.stdout)["error"]


def test_export_has_no_host_imports():
    offenders = []
    files = sorted((ROOT / "export").rglob("*.py"))
    assert AGENT in files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                    "__import__", "import_module") and node.args and isinstance(node.args[0], ast.Constant):
                names = [str(node.args[0].value)]
            else:
                continue
            offenders += [f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders, f"export/ must run with numpy + a TFLite runtime only: {offenders}"
