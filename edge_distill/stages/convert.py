"""The convert stage: the shipped student through ONNX to TFLite (fp32, fp16, INT8 behind the quality gate),
plus what the task ships or benchmarks beside it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..data import DataResult
from ..rundir import RunDir
from .teacher import TeacherResult
from .train import StudentResult, load_student_model


@dataclass(frozen=True)
class ConvertSettings:
    max_int8_drop: float  # decides how far the quality gate escalates
    seed: int  # seeds the gate's "more calibration" draw
    device_runtime: str  # the runtime that judges the INT8 candidates (bench.device_scoring)
    peer: str = "none"  # --peer: another toolchain's files beside ours, for the ledger and the bench (never shipped)

    @classmethod
    def from_options(cls, options) -> ConvertSettings:
        return cls(options.max_int8_drop, options.seed, options.device_runtime, options.peer)


def convert(run: RunDir, task, settings: ConvertSettings, data: DataResult, sizing, student: StudentResult, teacher: TeacherResult):
    from ..bench.device_scoring import device_logits
    from ..convert import MORE_CALIBRATION_FACTOR, convert_student
    from ..data.splits import balanced_subset

    splits = task.student_splits(run, data, sizing)
    model = load_student_model(run, student, sizing, data.spec)
    # The quality gate's "more calibration" rung: a larger, differently seeded class-balanced draw from the
    # training split (never validation or test data).
    tflite_logits, gate_runtime, _ = device_logits(settings.device_runtime)
    more = balanced_subset(splits.y_train, min(len(splits.y_train), MORE_CALIBRATION_FACTOR * len(splits.y_calib)), settings.seed + 2)
    result = convert_student(
        model, getattr(model, "input_shape", data.spec.input_shape), splits.x_calib, splits.x_val, run, subdir="student",
        check_y=splits.y_val, calib_y=splits.y_calib, contract=task.input_contract(data.spec),
        more_calib_x=splits.x_train[more], max_int8_drop=settings.max_int8_drop, threads=os.cpu_count() or 1,
        tflite_logits=tflite_logits, gate_runtime=gate_runtime,
    )
    if settings.peer == "litert-torch":
        import dataclasses

        from ..convert.peer_litert_torch import peer_model_files

        peer_files, peer_failed, seconds = peer_model_files(run, model, tuple(getattr(model, "input_shape", data.spec.input_shape)), splits.x_calib)
        result = dataclasses.replace(result, files=result.files + peer_files, unconverted=result.unconverted + peer_failed,
                                     peer_seconds={**result.peer_seconds, **seconds})
    files = [run.path(f.path) for f in result.files]
    return result, files + task.export_for_device(run, data, sizing, teacher)


def shipped_file(conversion):
    """The quantized file that passed the quality gate (full INT8 unless the gate had to escalate)."""
    return conversion.file(conversion.deploy_variant or "tflite_int8")
