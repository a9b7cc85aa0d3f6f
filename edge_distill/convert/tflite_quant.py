"""Every quantized TFLite variant, from the one SavedModel onnx2tf wrote.

Building a TFLite model from a SavedModel costs about a second (graph import, MLIR passes); quantizing an
already *calibrated* model costs ~10 ms.  So the INT8 family is built as TensorFlow's own converter does it
internally, but split in two: ``calibrate`` runs the representative dataset once and returns a float model
carrying min/max statistics, then ``quantize_calibrated`` turns it into full-INT8 per-channel, per-tensor,
or with chosen layers left in float, and ``debug_model`` into the instrumented model the per-layer error
analysis runs.  That split uses two TensorFlow internals (``_experimental_calibrate_only`` and
``tensorflow.lite.python.convert.mlir_quantize``) -- the same two that TensorFlow's public
``QuantizationDebugger`` is built on; tests/test_convert.py pins that the result equals the public path's.

int16 activations take the converter's public ``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8``
path (the MLIR quantizer writes int16 zero points that LiteRT's kernels reject).  Dynamic-range is a
plain ``Optimize.DEFAULT`` conversion; fp16 is the file onnx2tf already wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import ConversionError
from .quiet import quiet_tensorflow_env, quiet_tensorflow_loggers


def _tf():
    quiet_tensorflow_env()
    import tensorflow as tf

    quiet_tensorflow_loggers()
    return tf


def _representative(calib: np.ndarray):
    calib = np.ascontiguousarray(calib)

    def generate() -> Iterator[list[np.ndarray]]:
        # The graph has a static batch of 1, so calibration feeds one sample at a time.
        for i in range(len(calib)):
            yield [calib[i : i + 1]]

    return generate


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _converter(saved_model_dir: Path):
    tf = _tf()
    try:
        return tf, tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    except Exception as exc:
        raise ConversionError(f"TensorFlow cannot read the SavedModel {saved_model_dir}: {_first_line(exc)}") from exc


def calibrate(saved_model_dir: Path, calib: np.ndarray) -> bytes:
    """A float TFLite model with activation min/max recorded from ``calib`` (already in the model's layout)."""
    tf, converter = _converter(saved_model_dir)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(calib)
    converter._experimental_calibrate_only = True  # noqa: SLF001 -- see the module docstring
    try:
        return bytes(converter.convert())
    except Exception as exc:
        raise ConversionError(
            f"INT8 calibration failed: {type(exc).__name__}: {_first_line(exc)}",
            "An operation of the student cannot be calibrated in TFLite; choose another student family "
            "or rerun with --debug for the converter's log.",
        ) from exc


def quantize_calibrated(calibrated: bytes, per_channel: bool = True, float_nodes: Iterable[str] = ()) -> bytes:
    """Full-integer INT8 (int8 weights, activations, input and output) from a calibrated model.

    ``float_nodes`` are output-tensor names of ops to keep in float (the quality gate's last resort); the
    result then has float ops and quantize/dequantize pairs around them -- it is no longer full integer, and
    ``model_file_info`` says so.
    """
    tf = _tf()
    from tensorflow.lite.python import convert as tf_convert

    nodes = list(float_nodes)
    try:
        # The arguments the public converter passes for inference_input/output_type=tf.int8 (lite.py, _quantize).
        return bytes(
            tf_convert.mlir_quantize(
                calibrated,
                disable_per_channel=not per_channel,
                input_data_type=tf.int8,
                output_data_type=tf.int8,
                denylisted_nodes=nodes or None,
            )
        )
    except Exception as exc:
        raise ConversionError(f"INT8 quantization failed: {type(exc).__name__}: {_first_line(exc)}") from exc


def debug_model(calibrated: bytes) -> bytes:
    """The INT8 model instrumented with NumericVerify ops (float op next to each quantized op) for
    TensorFlow's QuantizationDebugger; float input and output."""
    _tf()
    from tensorflow.lite.python import convert as tf_convert

    try:
        return bytes(tf_convert.mlir_quantize(calibrated, enable_numeric_verify=True))
    except Exception as exc:
        raise ConversionError(f"Building the INT8 debug model failed: {type(exc).__name__}: {_first_line(exc)}") from exc


def convert_dynamic_range(saved_model_dir: Path) -> bytes:
    """Dynamic-range quantization: int8 weights, float activations and I/O; needs no calibration data."""
    tf, converter = _converter(saved_model_dir)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        return bytes(converter.convert())
    except Exception as exc:
        raise ConversionError(f"Dynamic-range conversion failed: {type(exc).__name__}: {_first_line(exc)}") from exc


def convert_int16x8(saved_model_dir: Path, calib: np.ndarray) -> bytes:
    """int8 weights, int16 activations, int16 input and output, calibrated on ``calib``.

    Only the 16x8 op set is allowed, so an op without a 16x8 kernel fails the conversion instead of quietly
    staying float.
    """
    tf, converter = _converter(saved_model_dir)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(calib)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    converter.inference_input_type = tf.int16
    converter.inference_output_type = tf.int16
    try:
        return bytes(converter.convert())
    except Exception as exc:
        raise ConversionError(f"int16-activation conversion failed: {type(exc).__name__}: {_first_line(exc)}") from exc
