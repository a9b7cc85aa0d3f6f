"""ONNX → TFLite with onnx2tf: the float graph, its SavedModel, and nothing quantized.

Why two tools: onnx2tf turns an NCHW ONNX graph into an idiomatic NHWC TensorFlow graph (something the
TF converter cannot do from ONNX), but its own INT8 path calibrates on sample images it downloads when
no data is given, and casts every input to float32.  So onnx2tf only produces the SavedModel and the
float32 (and float16) .tflite; every quantized model comes from TensorFlow's converter on that SavedModel,
calibrated on the build's own calibration split (``tflite_quant.py``).

TensorFlow and onnx2tf are imported inside the functions: importing them takes seconds, and the CLI
must start instantly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import ConversionError
from .quiet import quiet_tensorflow_env, quiet_tensorflow_loggers


def _import_onnx2tf():
    quiet_tensorflow_env()
    import onnx2tf
    import onnx2tf.onnx2tf as onnx2tf_module

    quiet_tensorflow_loggers()
    return onnx2tf, onnx2tf_module


@contextlib.contextmanager
def _own_sample_images(onnx2tf_module, samples_nhwc: np.ndarray) -> Iterator[None]:
    """Hand onnx2tf our samples instead of letting it download its own.

    Even with no INT8 output requested, onnx2tf 1.29 fetches 20 sample images from GitHub whenever every
    input looks like an RGB image (4-D, last dim 3 after transposition) and runs the ONNX graph on them
    to check its shape inference.  Offline that raises from deep inside the converter; online it silently
    uses data that is not the user's.  onnx2tf resizes whatever array it gets to the input size, so the
    build's own held-out samples serve the same purpose.
    """
    original = getattr(onnx2tf_module, "download_test_image_data", None)
    if original is None:  # a future onnx2tf without this hook: nothing to redirect
        yield
        return

    def build_samples() -> np.ndarray:
        return samples_nhwc

    onnx2tf_module.download_test_image_data = build_samples
    try:
        yield
    finally:
        onnx2tf_module.download_test_image_data = original


@contextlib.contextmanager
def _venv_scripts_on_path() -> Iterator[None]:
    """onnx2tf runs the ``onnxsim`` command as a subprocess, found through PATH; a venv used without
    activation does not have its bin/ there, and onnx2tf would then skip simplification with a warning."""
    scripts = str(Path(sys.executable).parent)
    old = os.environ.get("PATH", "")
    if scripts in old.split(os.pathsep):
        yield
        return
    os.environ["PATH"] = scripts + os.pathsep + old
    try:
        yield
    finally:
        os.environ["PATH"] = old


def onnx_to_tflite_fp32(onnx_path: Path, work_dir: Path, samples_nhwc: np.ndarray) -> tuple[Path, Path]:
    """Run onnx2tf; returns ``(saved_model_dir, float32_tflite_path)``, both inside ``work_dir``.

    ``samples_nhwc`` are real input samples (N, H, W, C) for onnx2tf's internal shape checks.
    """
    onnx2tf, onnx2tf_module = _import_onnx2tf()
    work_dir.mkdir(parents=True, exist_ok=True)
    # onnx2tf rewrites its input file in place (onnxsim, op renaming); the verified export must stay untouched.
    scratch_onnx = work_dir / "model.onnx"
    shutil.copyfile(onnx_path, scratch_onnx)
    # onnx2tf writes the SavedModel (saved_model.pb + variables/) directly into output_folder_path, next to
    # <onnx stem>_float32.tflite and <onnx stem>_float16.tflite.
    out_dir = work_dir / "saved_model"
    try:
        with _own_sample_images(onnx2tf_module, samples_nhwc), _venv_scripts_on_path():
            onnx2tf.convert(
                input_onnx_file_path=str(scratch_onnx),
                output_folder_path=str(out_dir),
                # NO output_integer_quantized_tflite / custom_input_op_name_np_data_path here, on purpose: onnx2tf's
                # INT8 calibration falls back to downloaded sample images.  INT8 is done by quantize_int8 below,
                # calibrated on the build's own data.
                non_verbose=True,  # errors only
                # Its ONNX Runtime scratch files go to the system temp dir by default; keep them in ours.
                onnxruntime_output_memmap_dir=str(work_dir / "ort_memmap"),
            )
    except SystemExit as exc:  # onnx2tf calls sys.exit(1) after printing an error
        raise ConversionError(f"onnx2tf stopped with exit status {exc.code}.") from None
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(f"onnx2tf failed: {type(exc).__name__}: {exc}") from exc
    fp32 = out_dir / "model_float32.tflite"
    if not fp32.is_file() or not (out_dir / "saved_model.pb").is_file():
        raise ConversionError(f"onnx2tf finished without writing {fp32.name} and a SavedModel in {out_dir}.")
    return out_dir, fp32
