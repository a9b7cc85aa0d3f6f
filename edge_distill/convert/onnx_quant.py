"""ONNX Runtime static INT8 of the same student: the peer a user would pick instead of TFLite.

QDQ format (QuantizeLinear/DequantizeLinear pairs around each op, which ONNX Runtime fuses into integer
kernels), per-channel int8 weights, int8 activations calibrated with min/max on the same calibration
samples as the TFLite models -- ONNX Runtime's recommended CPU setting -- so the two INT8 rows of the ledger
differ only in the toolchain.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

from ..errors import ConversionError
from .onnx_export import INPUT_NAME


def quantize_onnx_qdq(onnx_path: Path, calib_nchw: np.ndarray, out_path: Path, work_dir: Path) -> Path:
    """Write a static INT8 QDQ copy of ``onnx_path`` calibrated on ``calib_nchw`` (the ONNX input layout)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calib = np.ascontiguousarray(calib_nchw)
    if calib.dtype.kind == "f":
        calib = calib.astype(np.float32, copy=False)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self):
            if self.i >= len(calib):
                return None
            self.i += 1
            return {INPUT_NAME: calib[self.i - 1 : self.i]}  # static batch 1, as exported

    work_dir.mkdir(parents=True, exist_ok=True)
    prepared = work_dir / "qdq_pre.onnx"
    try:
        # ORT's documented first step: shape inference + graph optimization so that every tensor that gets a
        # Q/DQ pair has a known type and shape.
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            # ORT writes its calibration scratch model next to the output by default; keep it in our scratch dir.
            extra_options={"CalibTensorRangeSymmetric": False},
            calibration_providers=["CPUExecutionProvider"],
        )
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ConversionError(f"ONNX Runtime static INT8 quantization failed: {type(exc).__name__}: {first}") from exc
    finally:
        if prepared.exists():
            os.unlink(prepared)
    return out_path


def x86_without_vnni() -> bool:
    """True on an x86 CPU without AVX-VNNI / AVX512-VNNI: there ONNX Runtime's u8s8 int8 kernels use an
    instruction (VPMADDUBSW) whose 16-bit intermediate sums can saturate, which ORT documents and answers
    with ``reduce_range=True``.  ARM CPUs (the targets) and VNNI CPUs are not affected."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False  # cannot tell: claim nothing
    return "vnni" not in flags


def kernel_note(reference: np.ndarray, fused: np.ndarray, simulated: np.ndarray) -> str:
    """A note for the report when the QDQ model's answers with ORT's integer kernels differ from the same
    graph run op by op in float by more than one point of top-1 agreement; empty otherwise."""
    ref = reference.argmax(1)
    with_kernels = float(np.mean(fused.argmax(1) == ref))
    simulated_agreement = float(np.mean(simulated.argmax(1) == ref))
    if simulated_agreement - with_kernels <= 0.01:
        return ""
    cause = (
        "this build host is x86 without VNNI, where ONNX Runtime's u8s8 int8 kernels can saturate (ORT recommends "
        "reduce_range=True on such hosts; ARM and VNNI CPUs are not affected)"
        if x86_without_vnni() else "ONNX Runtime's fused integer kernels change the results on this host"
    )
    return (
        f"onnx_int8_qdq: top-1 agreement with the fp32 ONNX model is {with_kernels:.2%} with ONNX Runtime's integer kernels "
        f"but {simulated_agreement:.2%} with the same QDQ graph run op by op in float: {cause}. The ledger row is the "
        "kernel number, measured on this host."
    )
