"""The convert stage: torch student → ONNX → TFLite fp32 → full-integer INT8 TFLite, each hop verified.

Everything is built in a scratch directory inside the run directory (same filesystem, so the final
``os.replace`` is atomic) and published only when every hop passed: a model that failed its check never
sits in the run directory under a name that looks finished.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used, so importing this package stays cheap
    import torch

from ..console import get_console
from ..errors import ConversionError, DataError
from ..rundir import RunDir
from . import checks as hop_checks
from .model_info import model_file_info
from .onnx_export import OPSET, export_onnx
from .quiet import captured_output
from .results import ConvertResult, HopCheck
from .runtimes import nchw_to_model_layout, run_onnx, run_tflite, tflite_interpreter
from .tflite_convert import onnx_to_tflite_fp32, quantize_int8

FILE_NAMES = {
    "onnx_fp32": "student.onnx",
    "tflite_fp32": "student_fp32.tflite",
    "tflite_int8": "student_int8.tflite",
}


def _validate_samples(name: str, x: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != len(input_shape) + 1 or tuple(x.shape[1:]) != tuple(input_shape):
        raise DataError(
            f"{name} has shape {tuple(x.shape)}, expected (N, {', '.join(map(str, input_shape))}) to match the student input."
        )
    if len(x) == 0:
        raise DataError(f"{name} is empty; the convert stage needs samples to calibrate and verify with.")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{name} contains NaN or infinite values.")
    return x.astype(np.float32, copy=False)


def _torch_logits(model: torch.nn.Module, x: np.ndarray, batch: int = 256) -> np.ndarray:
    import torch

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    outputs = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            chunk = torch.from_numpy(x[start : start + batch]).to(device)
            outputs.append(model(chunk).float().cpu().numpy())
    return np.concatenate(outputs).reshape(len(x), -1)


def _hop_failed(hop: str, exc: ConversionError, tool_output: str = "") -> str:
    text = f"{hop}: could not be converted — {exc.message}"
    if tool_output:
        text += "\n    last lines of the converter's output:\n      " + tool_output.replace("\n", "\n      ")
    return text


def convert_student(
    model: torch.nn.Module,
    input_shape: tuple[int, int, int],
    calib_x: np.ndarray,
    check_x: np.ndarray,
    run: RunDir,
    subdir: str = "student",
    int8_min_agreement: float = 0.9,
) -> ConvertResult:
    """Convert an eval-mode float32 classifier (NCHW in, logits out) and verify every hop on ``check_x``.

    ``calib_x`` calibrates the INT8 model; ``check_x`` are held-out samples for the hop checks.  Writes
    ``<subdir>/student.onnx``, ``<subdir>/student_fp32.tflite`` and ``<subdir>/student_int8.tflite``.
    Raises ``ConversionError`` listing every failed hop, with the numbers.
    """
    console = get_console()
    input_shape = tuple(int(d) for d in input_shape)
    if not 0.0 < int8_min_agreement <= 1.0:
        raise ConversionError(f"int8_min_agreement must be in (0, 1], got {int8_min_agreement}")
    calib_x = _validate_samples("calib_x", calib_x, input_shape)
    check_x = _validate_samples("check_x", check_x, input_shape)
    model.eval()

    out_dir = run.path(subdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=out_dir))
    started = time.perf_counter()
    checks: list[HopCheck] = []
    try:
        # ---- torch -> ONNX -------------------------------------------------------------------
        console.stage("convert", f"torch -> ONNX (opset {OPSET}, static batch 1)")
        onnx_path = export_onnx(model, input_shape, work / FILE_NAMES["onnx_fp32"])
        torch_logits = _torch_logits(model, check_x)
        onnx_logits = run_onnx(onnx_path, check_x)
        checks.append(hop_checks.compare_float("torch->onnx", torch_logits, onnx_logits, hop_checks.TORCH_ONNX_ATOL))
        console.stage("convert", checks[-1].describe())

        # ---- ONNX -> TFLite fp32 (onnx2tf) ---------------------------------------------------
        console.stage("convert", "ONNX -> TFLite fp32 (onnx2tf, NCHW -> NHWC)")
        # onnx2tf runs the graph on sample images for its shape checks; these are the ones it gets (see tflite_convert).
        samples_nhwc = np.transpose(check_x[:20], (0, 2, 3, 1)) if check_x.ndim == 4 else check_x[:20]
        try:
            with captured_output() as log:
                saved_model, fp32_tmp = onnx_to_tflite_fp32(onnx_path, work / "onnx2tf", samples_nhwc)
        except ConversionError as exc:
            hop_checks.raise_if_failed(checks, [_hop_failed("onnx->tflite_fp32", exc, log.tail())])
            raise
        fp32_path = work / FILE_NAMES["tflite_fp32"]
        os.replace(fp32_tmp, fp32_path)
        fp32_logits = run_tflite(fp32_path, check_x)
        checks.append(hop_checks.compare_float("onnx->tflite_fp32", onnx_logits, fp32_logits, hop_checks.ONNX_TFLITE_ATOL))
        console.stage("convert", checks[-1].describe())

        # ---- TFLite fp32 -> full-integer INT8 -------------------------------------------------
        console.stage("convert", f"TFLite fp32 -> full-integer INT8 (calibrating on {len(calib_x)} samples)")
        model_shape = tuple(int(d) for d in tflite_interpreter(fp32_path, threads=1).get_input_details()[0]["shape"])
        calib_model_layout = nchw_to_model_layout(calib_x, model_shape)
        int8_path = work / FILE_NAMES["tflite_int8"]
        try:
            with captured_output() as log:
                quantize_int8(saved_model, calib_model_layout, int8_path)
        except ConversionError as exc:
            hop_checks.raise_if_failed(checks, [_hop_failed("tflite_fp32->tflite_int8", exc, log.tail())])
            raise
        int8_logits = run_tflite(int8_path, check_x)
        checks.append(hop_checks.compare_top1("tflite_fp32->tflite_int8", fp32_logits, int8_logits, int8_min_agreement))
        console.stage("convert", checks[-1].describe())

        hop_checks.raise_if_failed(checks)

        # ---- publish ---------------------------------------------------------------------------
        files = []
        for variant, name in FILE_NAMES.items():
            final = out_dir / name
            os.replace(work / name, final)
            files.append(model_file_info(run, variant, final, input_shape))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    console.stage(
        "convert",
        f"done in {time.perf_counter() - started:.1f} s: "
        + ", ".join(f"{f.path} ({f.bytes / 1024:.1f} KiB)" for f in files),
    )
    return ConvertResult(files=tuple(files), checks=tuple(checks))
