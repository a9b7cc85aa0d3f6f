"""The verify stage: one accuracy ledger over the held-out test split, and the INT8 quality gate.

Every model in the build is scored on the same test samples: the teacher, the no-KD baseline, the
KD student in torch, and each converted file in the runtime that will execute it.  Agreement is the
share of test samples where a model's top-1 class equals the fp32 KD student's, which shows what a
conversion changed even where accuracy happens to stay the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import QualityGateError


@dataclass(frozen=True)
class LedgerRow:
    name: str  # "teacher", "student (no KD)", "student (KD)", "student TFLite fp32", ...
    variant: str  # "torch_fp32", "tflite_fp32", "tflite_int8", ...
    runtime: str  # what executed it on the host: "torch", "litert", "onnxruntime"
    accuracy: float
    agreement: float  # top-1 agreement with the fp32 KD student
    bytes: int | None  # deployed file size; None for in-memory torch models
    params: int
    precision: str  # what is integer inside, and at the input/output


@dataclass(frozen=True)
class VerifyResult:
    rows: tuple[LedgerRow, ...]
    n_test: int
    reference: str  # the row the INT8 drop is measured against
    int8_drop_points: float  # accuracy points lost by the full-INT8 file against the reference
    max_int8_drop: float
    passed: bool

    def row(self, variant: str) -> LedgerRow:
        return next(r for r in self.rows if r.variant == variant)


@dataclass(frozen=True)
class Scored:
    """Predictions of one model on the test split, before they become a ledger row."""

    name: str
    variant: str
    runtime: str
    logits: np.ndarray
    bytes: int | None
    params: int
    precision: str


def build_ledger(scored: list[Scored], y_test: np.ndarray, reference_variant: str, int8_variant: str, max_int8_drop: float) -> VerifyResult:
    ref_pred = next(s for s in scored if s.variant == reference_variant).logits.argmax(1)
    rows = tuple(
        LedgerRow(
            name=s.name,
            variant=s.variant,
            runtime=s.runtime,
            accuracy=round(float((s.logits.argmax(1) == y_test).mean()), 6),
            agreement=round(float((s.logits.argmax(1) == ref_pred).mean()), 6),
            bytes=s.bytes,
            params=s.params,
            precision=s.precision,
        )
        for s in scored
    )
    by_variant = {r.variant: r for r in rows}
    drop = round(100 * (by_variant[reference_variant].accuracy - by_variant[int8_variant].accuracy), 4)
    return VerifyResult(rows, len(y_test), reference_variant, drop, max_int8_drop, drop <= max_int8_drop)


def format_ledger(result: VerifyResult) -> str:
    lines = [f"{'model':<28} {'runtime':<12} {'acc':>7} {'agree':>7} {'bytes':>10} {'params':>9}  precision"]
    for r in result.rows:
        size = f"{r.bytes:,}" if r.bytes is not None else "-"
        lines.append(f"{r.name:<28} {r.runtime:<12} {r.accuracy:>7.4f} {r.agreement:>7.4f} {size:>10} {r.params:>9,}  {r.precision}")
    return "\n".join(lines)


def enforce_gate(result: VerifyResult) -> None:
    """Raise with the whole ledger when the INT8 model lost more than the gate allows."""
    if not result.passed:
        raise QualityGateError(
            f"INT8 quality gate failed: the full-INT8 student lost {result.int8_drop_points:.2f} accuracy points "
            f"against the fp32 student (allowed: {result.max_int8_drop:.2f}) on {result.n_test} test samples.\n"
            + format_ledger(result),
            "Try more calibration samples (--calib-count), or raise --max-int8-drop if this loss is acceptable.",
        )
