"""Convert a trained student to deployable files, verifying every hop and gating every quantized model.

torch → ONNX (``export_onnx``) → TFLite fp32 (onnx2tf) → fp16, dynamic-range, full-INT8 and 16x8 TFLite
(TF converter, calibrated on the build's own data), plus ONNX Runtime's static INT8 as the peer.  The
full-INT8 model passes a quality gate or is escalated (``escalate.py``).  ``convert_student`` runs the
whole chain; ``run_onnx`` and ``run_tflite`` are the host-side runners the checks (and the verify stage) use.
"""

from .calibration import InputContract, check_calibration
from .model_info import model_file_info
from .onnx_export import export_onnx
from .results import (
    DEPLOYABLE,
    VARIANTS,
    CalibrationInfo,
    ConvertResult,
    HopCheck,
    LayerError,
    ModelFile,
    QualityGate,
    QuantAttempt,
)
from .runtimes import run_onnx, run_tflite
from .student import FILE_NAMES, MORE_CALIBRATION_FACTOR, OPTIONAL_VARIANTS, convert_student

__all__ = [
    "DEPLOYABLE",
    "FILE_NAMES",
    "MORE_CALIBRATION_FACTOR",
    "OPTIONAL_VARIANTS",
    "VARIANTS",
    "CalibrationInfo",
    "ConvertResult",
    "HopCheck",
    "InputContract",
    "LayerError",
    "ModelFile",
    "QualityGate",
    "QuantAttempt",
    "check_calibration",
    "convert_student",
    "export_onnx",
    "model_file_info",
    "run_onnx",
    "run_tflite",
]
