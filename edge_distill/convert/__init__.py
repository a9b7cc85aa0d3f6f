"""Convert a trained student to deployable files, verifying every hop against the one before it.

torch → ONNX (``export_onnx``) → TFLite fp32 (onnx2tf) → full-integer INT8 TFLite (TF converter,
calibrated on the build's own data).  ``convert_student`` runs the whole chain; ``run_onnx`` and
``run_tflite`` are the host-side runners the checks (and the verify stage) use.
"""

from .model_info import model_file_info
from .onnx_export import export_onnx
from .results import ConvertResult, HopCheck, ModelFile
from .runtimes import run_onnx, run_tflite
from .student import convert_student

__all__ = [
    "ConvertResult",
    "HopCheck",
    "ModelFile",
    "convert_student",
    "export_onnx",
    "model_file_info",
    "run_onnx",
    "run_tflite",
]
