"""The few exception types the library raises.

Every error a user can cause is an ``EdgeDistillError``: it carries a message that names what was wrong
and a hint that says how to fix it.  ``cli.main`` prints both and exits non-zero; a traceback is shown
only with ``--debug``.
"""

from __future__ import annotations


class EdgeDistillError(Exception):
    """Base class: ``message`` says what went wrong, ``hint`` says what to do about it."""

    exit_code = 2

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\nHint: {self.hint}" if self.hint else self.message


class ProfileError(EdgeDistillError):
    """A device profile is unknown or malformed."""


class ConfigError(EdgeDistillError):
    """A configuration value (CLI flag, dataclass field) is out of range or of the wrong type."""


class DataError(EdgeDistillError):
    """A dataset is unknown, missing, empty or does not match what the model expects."""


class CalibrationError(DataError):
    """INT8 calibration samples do not match the model's input (layout, dtype, value range, count, balance)."""


class TeacherError(EdgeDistillError):
    """A teacher model cannot be found, loaded or trusted."""


class SizingError(EdgeDistillError):
    """No student candidate fits the device profile's budgets."""


class ConversionError(EdgeDistillError):
    """A conversion hop failed or produced outputs that disagree with the previous hop."""


class QualityGateError(EdgeDistillError):
    """A quantized model lost more accuracy than the quality gate allows."""

    exit_code = 3


class BenchError(EdgeDistillError):
    """A benchmark run could not be executed or returned no result."""


class RunDirError(EdgeDistillError):
    """The run directory cannot be created or written."""


class TrainingError(EdgeDistillError):
    """Training could not finish: e.g. a rank of a distributed run crashed (the build can be resumed)."""


class ModelFileError(EdgeDistillError):
    """A model file (.onnx, .tflite) is missing, corrupt or of a format the tool does not read."""


class ReportError(EdgeDistillError):
    """A run directory has no readable report to render."""


def with_article(noun: str) -> str:
    """'a dict', 'an OrderedDict': a type's name with its article, for error messages."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"
