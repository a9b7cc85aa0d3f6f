"""ONNX Runtime static INT8 of the same student: the peer a user would pick instead of TFLite.

QDQ format (QuantizeLinear/DequantizeLinear pairs around each op, which ONNX Runtime fuses into integer
kernels), per-channel int8 weights, int8 activations calibrated with min/max on the same calibration
samples as the TFLite models -- ONNX Runtime's recommended CPU setting -- so the two INT8 rows of the ledger
differ only in the toolchain.

The ledger scores the file with ORT's exact U8U8 kernels on x86 hosts without VNNI (``runtimes.onnx_session``):
ORT's default U8S8 kernels saturate there and turned a photo build's 0.985 agreement into 0.76 (issue #40).
The file itself stays S8S8 with 8-bit weights -- right for ARM, and the same precision as the TFLite INT8.
"""

from __future__ import annotations

import functools
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


@functools.cache
def x86_without_vnni() -> bool:
    """True on an x86 CPU without AVX-VNNI / AVX512-VNNI: there ONNX Runtime's u8s8 int8 kernels use an
    instruction (VPMADDUBSW) whose 16-bit intermediate sums can saturate, which ORT documents and answers
    with the session option ``session.x64quantprecision`` (U8U8 kernels; ``runtimes.onnx_session`` sets it
    on such hosts).  ARM CPUs (the targets) and VNNI CPUs are not affected."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False  # cannot tell: claim nothing
    return "vnni" not in flags


def _agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    return float(np.mean(logits.argmax(1) == reference))


def kernel_note(reference: np.ndarray, scored: np.ndarray, simulated: np.ndarray, default_kernels: np.ndarray | None = None) -> str:
    """What the report must say about the QDQ row's kernels; empty when there is nothing to say.

    ``scored`` are the QDQ model's logits as the ledger scores it, ``simulated`` the same graph run op by op
    in float, ``default_kernels`` ORT's default kernels when the ledger had to leave them (x86 without VNNI:
    ``session.x64quantprecision``), else None.  Agreements are top-1 against ``reference`` (the fp32 ONNX)."""
    ref = reference.argmax(1)
    with_kernels, simulated_agreement = _agreement(scored, ref), _agreement(simulated, ref)
    notes = []
    if default_kernels is not None:
        notes.append(
            f"onnx_int8_qdq: scored with ONNX Runtime's session option session.x64quantprecision=1 (U8U8 integer kernels): "
            f"this build host is x86 without VNNI, where ORT's default U8S8 kernels saturate 16-bit sums. Top-1 agreement "
            f"with the fp32 ONNX model is {with_kernels:.2%} with them, {_agreement(default_kernels, ref):.2%} with ORT's default "
            f"kernels, {simulated_agreement:.2%} with the QDQ graph run op by op in float. ARM and VNNI CPUs are not affected; "
            "on an x86 host without VNNI, set that option when deploying this file."
        )
    if simulated_agreement - with_kernels > 0.01:
        notes.append(
            f"onnx_int8_qdq: top-1 agreement with the fp32 ONNX model is {with_kernels:.2%} with ONNX Runtime's integer kernels "
            f"but {simulated_agreement:.2%} with the same QDQ graph run op by op in float: ONNX Runtime's fused integer kernels "
            "change the results on this host. The ledger row is the kernel number, measured on this host."
        )
    return " ".join(notes)
