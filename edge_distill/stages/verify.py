"""The verify stage: every model of the build scored on the same held-out test split (the ledger), on this host."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

from ..data import DataResult
from ..rundir import RunDir
from ..serde import to_jsonable
from .data import load_splits
from .teacher import TeacherResult
from .train import Students, load_student_model


PSEUDO_VARIANT = "pseudo_torch_fp32"  # the pseudo-label student's ledger row (--unlabelled)
SCRATCH_KD_VARIANT = "scratch_kd_torch_fp32"  # --init prune / --student-init: the same architecture distilled from random weights
# Part of the stage key, so ledgers cached before a fix to how they are measured are made again.  2: a device
# runtime's TFLite latencies were read 1000x too large (its agent's ms taken for seconds), e.g. 282 "ms" for 0.28 ms.
LEDGER_REVISION = 2


@dataclass(frozen=True)
class VerifySettings:
    max_int8_drop: float  # the gate the shipped file is held to
    shipped_student: str  # "kd", or "nokd" when distillation lost on validation and the no-KD student was converted
    classical_baseline: bool  # a non-neural reference row (text: TF-IDF + logistic regression)
    device_runtime: str  # the runtime the TFLite rows run on (bench.device_scoring)
    revision: int = LEDGER_REVISION

    @classmethod
    def from_options(cls, options, shipped_student: str, classical_baseline: bool) -> VerifySettings:
        return cls(options.max_int8_drop, shipped_student, classical_baseline, options.device_runtime)


def verify(run: RunDir, task, settings: VerifySettings, data: DataResult, sizing, teacher: TeacherResult, students: Students, conversion,
           classical=None):
    """With --unlabelled the pseudo-label student gets its own fp32 row beside the two other students, with --init prune the
    from-scratch KD twin of the pruned student."""
    from ..verify import MissingRow, build_ledger

    splits = load_splits(run, data)
    x = task.student_splits(run, data, sizing).x_test
    threads = os.cpu_count() or 1
    scored = _score_torch_models(run, task, data, sizing, teacher, students, splits, x, threads)
    if classical is not None:
        scored.append(_score_classical(run, data, classical))
    scored += _score_converted_files(run, conversion, students.kd, x, threads, settings.device_runtime)
    where = (
        f"host ({platform.machine()}, {threads} threads), batch 1: median over the {len(x)} test-split invokes in-process "
        f"(torch: the first 64 forward passes; TFLite on {settings.device_runtime}: "
        f"{'in-process' if settings.device_runtime == 'converter' else 'p50 of warm invokes in its agent process'}); "
        "not the target device -- see the bench section for separate-process timings"
    )
    # The converted files are the shipped student's: their drop is measured against its fp32 self, and the gate
    # also holds them to the no-KD student.
    reference = "torch_fp32" if settings.shipped_student == "kd" else "nokd_torch_fp32"
    result = build_ledger(scored, splits.y_test, reference, "tflite_int8", settings.max_int8_drop, conversion.deploy_variant, where,
                          baseline_variant="nokd_torch_fp32", shipped_student=settings.shipped_student,
                          missing=tuple(MissingRow(f"student {u.variant}", u.variant, u.reason) for u in conversion.unconverted))
    run.write_json("verify/ledger.json", to_jsonable(result))
    return result, [run.path("verify/ledger.json")]


def _score_torch_models(run, task, data, sizing, teacher, students: Students, splits, x, threads):
    from ..distill import predict_logits
    from ..verify import Scored, torch_latency_ms

    x_teacher = task.teacher_split_inputs(run, teacher, splits, "test")  # a text teacher reads its own token ids
    models = [("teacher", "teacher_torch_fp32", teacher, task.load_teacher(run, teacher, data), x_teacher),
              (f"student ({'pretrained, ' if students.kd_label.startswith('pretrained') else ''}no KD)", "nokd_torch_fp32", students.baseline,
               load_student_model(run, students.baseline, sizing, data.spec), x)]
    if students.pseudo is not None:
        models.append(("student (pseudo-labels)", PSEUDO_VARIANT, students.pseudo, load_student_model(run, students.pseudo, sizing, data.spec), x))
    if students.scratch_kd is not None:
        models.append(("student (KD from scratch)", SCRATCH_KD_VARIANT, students.scratch_kd,
                       load_student_model(run, students.scratch_kd, sizing, data.spec), x))
    models.append((f"student ({students.kd_label})", "torch_fp32", students.kd, load_student_model(run, students.kd, sizing, data.spec), x))
    scored = []
    for name, variant, trained, model, xs in models:
        scored.append(Scored(name, variant, "torch", predict_logits(model, xs), None, trained.params, "float32", torch_latency_ms(model, xs, threads=threads)))
    return scored


def _score_classical(run, data, classical):
    import numpy as np

    from ..verify import Scored

    return Scored("TF-IDF + logistic regression", "tfidf_logreg", "scikit-learn", np.load(run.path(classical.scores_path)), None,
                  classical.features * data.spec.num_classes, "float64 (sparse TF-IDF features)")


def _score_converted_files(run, conversion, student, x, threads, device_runtime: str):
    from ..bench.device_scoring import device_logits
    from ..convert import run_onnx
    from ..verify import Scored, median_ms

    run_tflite, _, runtime_label = device_logits(device_runtime)
    scored = []
    for f in conversion.files:
        latencies: list[float] = []
        if f.variant.startswith("onnx"):
            logits, runtime = run_onnx(run.path(f.path), x, threads, latencies), "onnxruntime"
        else:
            logits, runtime = run_tflite(run.path(f.path), x, threads, latencies), runtime_label
        scored.append(Scored(f"student {f.variant}", f.variant, runtime, logits, f.bytes, student.params, f.integer_description, median_ms(latencies)))
    return scored
