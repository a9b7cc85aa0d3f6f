"""`edge-distill inspect`: ops, dtypes, quantization parameters, size and MACs.

The TFLite files are made by TensorFlow's own converter from a small Keras model, the ONNX file by
torch's exporter; MACs are counted by hand for both models below, and the INT8 file's dtypes and
quantization parameters are checked against LiteRT's interpreter reading the same file.  (The build's
real student files are inspected in test_report.py, against the sizing stage's independent MAC count.)
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from edge_distill.cli import main
from edge_distill.inspection import inspect_model

# Keras model: conv 3->8 (3x3), depthwise 3x3, grouped conv 8->16 (3x3, stride 2, 2 groups), 1x1 conv 16->24, dense 24->5.
TFLITE_MACS = 12 * 12 * 8 * 27 + 12 * 12 * 8 * 9 + 6 * 6 * 16 * 36 + 6 * 6 * 24 * 16 + 24 * 5
TFLITE_PARAMS = (27 * 8 + 8) + (9 * 8 + 8) + (36 * 16 + 16) + (16 * 24 + 24) + (24 * 5 + 5)


@pytest.fixture(scope="module")
def tflite_files(tmp_path_factory):
    from edge_distill.convert.quiet import quiet_tensorflow_env, quiet_tensorflow_loggers

    quiet_tensorflow_env()
    import tensorflow as tf

    quiet_tensorflow_loggers()
    tf.keras.utils.set_random_seed(0)
    # Random (not zero) biases: the converter drops all-zero biases and shares identical constant tensors.
    bias = {"bias_initializer": "random_normal"}
    inp = tf.keras.Input((12, 12, 3), batch_size=1)
    x = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu", **bias)(inp)
    x = tf.keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", **bias)(x)
    x = tf.keras.layers.Conv2D(16, 3, strides=2, padding="same", groups=2, activation="relu", **bias)(x)
    x = tf.keras.layers.Conv2D(24, 1, activation="relu", **bias)(x)
    out = tf.keras.layers.Dense(5, **bias)(tf.keras.layers.GlobalAveragePooling2D()(x))
    model = tf.keras.Model(inp, out)
    assert model.count_params() == TFLITE_PARAMS
    folder = tmp_path_factory.mktemp("tflite")
    fp32 = folder / "fp32.tflite"
    fp32.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    rng = np.random.default_rng(0)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([rng.normal(size=(1, 12, 12, 3)).astype(np.float32)] for _ in range(16))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    int8 = folder / "int8.tflite"
    int8.write_bytes(converter.convert())
    return {"fp32": fp32, "int8": int8}


class OnnxModel(nn.Module):
    """conv 3->8 (3x3), grouped conv 8->16 (3x3, stride 2, 2 groups), transposed conv 16->4 (2x2, stride 2), MatMul 4->5, Linear 5->3."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2)
        self.up = nn.ConvTranspose2d(16, 4, 2, stride=2)
        self.proj = nn.Parameter(torch.randn(4, 5))
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        x = self.up(torch.relu(self.grouped(torch.relu(self.conv(x)))))
        return self.head(torch.matmul(x.mean((2, 3)), self.proj))


ONNX_MACS = 12 * 12 * 8 * 27 + 6 * 6 * 16 * 36 + (6 * 6 * 16) * (4 * 2 * 2) + 4 * 5 + 5 * 3


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    from edge_distill.convert import export_onnx

    torch.manual_seed(0)
    return export_onnx(OnnxModel(), (3, 12, 12), tmp_path_factory.mktemp("onnx") / "model.onnx")


def test_onnx_macs_params_ops_and_dtypes(onnx_file):
    info = inspect_model(onnx_file)
    assert info.macs == ONNX_MACS
    assert info.params == sum(p.numel() for p in OnnxModel().parameters())
    assert info.format == "onnx" and "opset 17" in info.description and info.bytes == onnx_file.stat().st_size
    counts = info.op_counts()
    assert counts["Conv"] == 2 and counts["ConvTranspose"] == 1 and counts["MatMul"] == 1 and counts["Gemm"] == 1
    assert set(info.dtypes()["weights"]) == {"float32"}
    assert [info.tensors[i].shape for i in info.inputs] == [(1, 3, 12, 12)]
    assert not any(t.quantized for t in info.tensors)


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_tflite_macs_match_the_hand_count(tflite_files, which):
    info = inspect_model(tflite_files[which])
    assert info.macs == TFLITE_MACS
    assert {op.op for op in info.ops} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    assert info.bytes == tflite_files[which].stat().st_size


def test_fp32_tflite_params_and_dtypes(tflite_files):
    info = inspect_model(tflite_files["fp32"])
    assert info.params == TFLITE_PARAMS
    assert set(info.dtypes()["activations"]) == {"float32"}
    assert not any(t.quantized for t in info.tensors)


def test_int8_file_agrees_with_litert_on_dtypes_and_quantization(tflite_files):
    from ai_edge_litert.interpreter import Interpreter

    info = inspect_model(tflite_files["int8"])
    interp = Interpreter(model_path=str(tflite_files["int8"]), num_threads=1)
    details = {d["index"]: d for d in interp.get_tensor_details()}
    assert len(details) == len(info.tensors)
    for t in info.tensors:
        d = details[t.index]
        assert (t.name, t.dtype) == (d["name"], np.dtype(d["dtype"]).name)
        assert tuple(t.shape) == tuple(int(s) for s in d["shape"])
        q = d["quantization_parameters"]
        assert t.scale == tuple(float(s) for s in q["scales"])
        # LiteRT lists one zero point for some per-channel tensors whose zero points are all equal.
        assert set(t.zero_point) == {int(z) for z in q["zero_points"]} and len(t.zero_point) in (len(t.scale), 1)
    (inp,) = interp.get_input_details()
    assert info.tensors[info.inputs[0]].scale == (pytest.approx(inp["quantization"][0]),)
    # Full integer: every activation int8, weights int8 with int32 biases, per-channel conv weights.
    assert set(info.dtypes()["activations"]) == {"int8"}
    assert set(info.dtypes()["weights"]) == {"int8", "int32"}
    assert any(t.axis is not None and len(t.scale) == 16 for t in info.tensors)


def test_cli_prints_the_listing_and_json(tflite_files, onnx_file, capsys):
    assert main(["inspect", str(tflite_files["int8"])]) == 0
    out = capsys.readouterr().out
    assert f"{TFLITE_MACS:,}" in out and "per-channel" in out and "DEPTHWISE_CONV_2D" in out and "zero point" in out
    assert main(["inspect", str(onnx_file), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["macs"] == ONNX_MACS and data["format"] == "onnx" and data["op_counts"]["ConvTranspose"] == 1


def test_inspecting_a_tflite_file_loads_neither_torch_nor_tensorflow(tflite_files):
    code = (
        "import sys; from edge_distill.cli import main\n"
        f"main(['inspect', {str(tflite_files['int8'])!r}])\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'onnx2tf') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]")
