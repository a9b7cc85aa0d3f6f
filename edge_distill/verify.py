"""The verify stage: one accuracy ledger over the held-out test split, and the INT8 quality gate.

Every model in the build is scored on the same test samples: the teacher, the no-KD baseline, the
KD student in torch, and each converted file in the runtime that will execute it.  Agreement is the
share of test samples where a model's top-1 class equals the fp32 KD student's, which shows what a
conversion changed even where accuracy happens to stay the same.

Before conversion, ``choose_shipped_student`` compares the KD student with its no-KD baseline on the validation
split: distillation that made the student worse by more than the gate's tolerance ships the baseline (saying so)
or fails the build (``--if-kd-loses fail``).  On the test split the shipped file is compared with the no-KD student
too (``check_against_nokd``): a loss there is said in the console and the report, or fails the build under ``fail``.

The gate judges the quantized file the convert stage chose to ship (``ConvertResult.deploy_variant``: full
INT8 when it passed on the validation split, otherwise the escalation's pick) on the *test* split; when
the convert stage found nothing that passes, there is nothing to ship and the gate fails.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .errors import QualityGateError

_SAME_AS_INT8 = "<int8_variant>"
_STUDENT_NAMES = {"kd": "KD", "nokd": "no-KD"}  # VerifyResult.shipped_student, for messages


@dataclass(frozen=True)
class LedgerRow:
    name: str  # "teacher", "student (no KD)", "student (KD)", "student TFLite fp32", ...
    variant: str  # "torch_fp32", "tflite_fp32", "tflite_int8", ...
    runtime: str  # what executed it on the host: "torch", "litert 2.3.0" (the device runtime's venv), "onnxruntime"
    accuracy: float
    agreement: float  # top-1 agreement with the fp32 KD student
    bytes: int | None  # deployed file size; None for in-memory torch models
    params: int
    precision: str  # what is integer inside, and at the input/output
    latency_ms: float | None = None  # host, in-process, batch 1: median over the invokes that scored the test split


@dataclass(frozen=True)
class MissingRow:
    """A model the build asked for that could not be converted (an optional variant, a --peer's file): no accuracy, the reason."""

    name: str
    variant: str
    reason: str


@dataclass(frozen=True)
class VerifyResult:
    rows: tuple[LedgerRow, ...]
    n_test: int
    reference: str  # the row the INT8 drop is measured against
    int8_drop_points: float | None  # points lost by the full-INT8 file against the reference; None: no such file
    max_int8_drop: float
    passed: bool
    gated_variant: str | None = "tflite_int8"  # the quantized file that ships; None when none met the gate
    gated_drop_points: float | None = None  # accuracy points lost by ``gated_variant`` on the test split
    latency_where: str = ""  # where and how ``LedgerRow.latency_ms`` was measured
    # Points the shipped file loses against the no-KD fp32 student on the test split (negative: KD + INT8 is better).
    nokd_drop_points: float | None = None
    shipped_student: str = "kd"  # "kd" or "nokd": which trained student the converted files are (StudentChoice)
    missing: tuple[MissingRow, ...] = ()

    def row(self, variant: str) -> LedgerRow:
        for r in self.rows:
            if r.variant == variant:
                return r
        raise KeyError(f"No ledger row {variant!r} (have: {', '.join(r.variant for r in self.rows)})")


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
    latency_ms: float | None = None


def median_ms(latencies: list[float]) -> float | None:
    return round(1000.0 * float(np.median(latencies)), 5) if latencies else None


def torch_latency_ms(model, x: np.ndarray, runs: int = 64, threads: int | None = None, warmup: int = 5) -> float | None:
    """Median wall time of batch-1 forward passes of a torch model on the first ``runs`` samples (host),
    after ``warmup`` untimed passes (the first calls allocate and pick kernels)."""
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    times = []
    try:
        with torch.no_grad():
            for i in range(min(warmup, len(x))):
                model(torch.from_numpy(np.ascontiguousarray(x[i : i + 1])))
            for i in range(min(runs, len(x))):
                sample = torch.from_numpy(np.ascontiguousarray(x[i : i + 1]))
                t0 = time.perf_counter()
                model(sample)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return median_ms(times)


def build_ledger(
    scored: list[Scored],
    y_test: np.ndarray,
    reference_variant: str,
    int8_variant: str,
    max_int8_drop: float,
    deploy_variant: str | None = _SAME_AS_INT8,
    latency_where: str = "",
    baseline_variant: str | None = None,
    shipped_student: str = "kd",
    missing: tuple[MissingRow, ...] = (),
) -> VerifyResult:
    """Score every model; the gate passes when ``deploy_variant`` loses at most ``max_int8_drop`` points against
    ``reference_variant`` (the fp32 student it was converted from).

    ``missing`` are models that could not be converted; the ledger lists them with their reason, unscored.
    ``nokd_drop_points`` says what the shipped file loses against ``baseline_variant``; ``check_against_nokd`` acts on it.
    ``deploy_variant`` defaults to ``int8_variant``; None means the convert stage found no quantized model
    that met the gate, and the ledger fails.
    """
    if deploy_variant == _SAME_AS_INT8:
        deploy_variant = int8_variant
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
            latency_ms=s.latency_ms,
        )
        for s in scored
    )
    by_variant = {r.variant: r for r in rows}

    def drop(variant: str) -> float:
        return round(100 * (by_variant[reference_variant].accuracy - by_variant[variant].accuracy), 4)

    int8_drop = drop(int8_variant) if int8_variant in by_variant else None
    gated_drop = drop(deploy_variant) if deploy_variant in by_variant else None
    nokd_drop = None
    if baseline_variant in by_variant and deploy_variant in by_variant:
        nokd_drop = round(100 * (by_variant[baseline_variant].accuracy - by_variant[deploy_variant].accuracy), 4)
    passed = gated_drop is not None and gated_drop <= max_int8_drop
    return VerifyResult(rows, len(y_test), reference_variant, int8_drop, max_int8_drop, passed, deploy_variant, gated_drop, latency_where,
                        nokd_drop, shipped_student, tuple(missing))


def format_ledger(result: VerifyResult) -> str:
    lines = [f"{'model':<28} {'runtime':<15} {'acc':>7} {'agree':>7} {'bytes':>10} {'params':>9} {'ms':>8}  precision"]
    for r in result.rows:
        size = f"{r.bytes:,}" if r.bytes is not None else "-"
        ms = f"{r.latency_ms:.3f}" if r.latency_ms is not None else "-"
        ships = "  <- ships" if r.variant == result.gated_variant else ""
        lines.append(
            f"{r.name:<28} {r.runtime:<15} {r.accuracy:>7.4f} {r.agreement:>7.4f} {size:>10} {r.params:>9,} {ms:>8}  {r.precision}{ships}"
        )
    lines += [f"{m.name:<28} could not be converted: {m.reason}" for m in result.missing]
    if result.latency_where:
        lines.append(f"ms: {result.latency_where}")
    return "\n".join(lines)


def format_attempts(attempts) -> str:
    """The quality gate's escalation, one line per attempt (``QuantAttempt``s or their JSON dicts)."""
    from .convert.results import reference_kernels_note

    lines = []
    for a in attempts:
        get = a.get if isinstance(a, dict) else lambda k, a=a: getattr(a, k)
        if get("error"):
            outcome = f"could not run: {get('error')}"
        else:
            measure = f"accuracy {get('accuracy'):.4f}, " if get("accuracy") is not None else ""
            margin = f" (sampling margin ±{get('margin_points'):.2f})" if (a.get("margin_points") if isinstance(a, dict) else a.margin_points) else ""
            outcome = (f"{measure}agreement {get('agreement'):.4f}, drop {get('drop_points'):.2f} points{margin} — "
                       f"{'passed' if get('passed') else 'failed'}")
        lines.append(f"  {get('step')}. {get('strategy'):<18} {get('settings')}: {outcome}")
        note = reference_kernels_note(get("drop_points"), get("reference_kernels_drop"), None)
        if note:
            lines.append(f"     {note}")
    return "\n".join(lines)


def enforce_gate(result: VerifyResult, conversion=None) -> None:
    """Raise with the whole ledger (and the escalation attempts) when no quantized model may ship."""
    if result.passed:
        return
    attempts = tuple(getattr(conversion, "attempts", ()) or ())
    gate = getattr(conversion, "gate", None)
    tried = ("\nEscalation attempts (validation split):\n" + format_attempts(attempts)) if attempts else ""
    if result.gated_variant is None:
        where = f" on the {gate.n_samples} validation samples" if gate is not None else ""
        plain = (
            f"plain full INT8 loses {result.int8_drop_points:.2f} points on the {result.n_test} test samples"
            if result.int8_drop_points is not None else "plain full INT8 could not be run at all"
        )
        headline = (
            f"INT8 quality gate failed: no quantized model stayed within {result.max_int8_drop:.2f} accuracy points of the "
            f"fp32 student{where} after {len(attempts)} attempt(s); {plain}."
        )
    else:
        headline = (
            f"INT8 quality gate failed: the {result.gated_variant} student lost {result.gated_drop_points:.2f} accuracy points "
            f"against the fp32 student (allowed: {result.max_int8_drop:.2f}) on {result.n_test} test samples."
        )
    raise QualityGateError(
        headline + "\n" + format_ledger(result) + tried,
        "Try more calibration samples (--calib-count), a student family that quantizes better (--student), or raise "
        "--max-int8-drop if this loss is acceptable.",
    )


@dataclass(frozen=True)
class StudentChoice:
    """Which trained student the build converts and ships, decided on the validation split (never the test split)."""

    shipped: str  # "kd" or "nokd"
    kd_val_accuracy: float
    nokd_val_accuracy: float
    tolerance_points: float
    policy: str  # --if-kd-loses: ship-baseline or fail
    note: str  # one sentence for the console and the report


def choose_shipped_student(kd_val: float, nokd_val: float, tolerance_points: float, policy: str) -> StudentChoice:
    """The KD student, unless it loses more than ``tolerance_points`` to its no-KD baseline on validation: then the
    baseline ships (policy ``ship-baseline``) or the build stops (``fail``)."""
    loss = round(100 * (nokd_val - kd_val), 4)
    if loss <= tolerance_points:
        note = f"the KD student ships (validation {kd_val:.4f} vs no-KD {nokd_val:.4f})"
        return StudentChoice("kd", kd_val, nokd_val, tolerance_points, policy, note)
    what = (f"distillation made the student worse: KD student {kd_val:.4f} vs no-KD student {nokd_val:.4f} on the validation "
            f"split ({loss:.2f} points lost, tolerance {tolerance_points:.2f})")
    if policy == "fail":
        raise QualityGateError(
            f"Quality gate failed: {what}.",
            "Check the teacher (its accuracy and input contract in the report), try another --kd-loss, --temperature or --alpha, "
            "or pass --if-kd-loses ship-baseline to ship the no-KD student instead.",
        )
    return StudentChoice("nokd", kd_val, nokd_val, tolerance_points, policy, f"{what}; the no-KD student ships instead (--if-kd-loses fail stops here)")


def check_against_nokd(result: VerifyResult, policy: str) -> str | None:
    """The shipped file against the no-KD fp32 student on the test split: a warning to show (policy ``ship-baseline``)
    or a ``QualityGateError`` (policy ``fail``) when it loses more than the gate's tolerance; None when it does not.

    Which student ships was decided on validation (``choose_shipped_student``); re-choosing here would pick the model
    by its test score.  So a loss that shows only on the test split — often a few samples — is said, never hidden.
    """
    lost = result.nokd_drop_points
    if lost is None or lost <= result.max_int8_drop:
        return None
    what = (f"the shipped {result.gated_variant} file scores {lost:.2f} accuracy points below the student trained without the "
            f"teacher (no KD, fp32) on the {result.n_test} test samples (tolerance {result.max_int8_drop:.2f}; "
            f"{lost * result.n_test / 100:.0f} samples)")
    if policy == "fail":
        raise QualityGateError(f"Quality gate failed: {what}.\n" + format_ledger(result),
                               "Try another --kd-loss, --temperature or --alpha, or pass --if-kd-loses ship-baseline to ship with a warning.")
    return (f"{what}. The {_STUDENT_NAMES.get(result.shipped_student, result.shipped_student)} student was chosen on the validation split, "
            "where distillation stayed within the tolerance; --if-kd-loses fail stops such builds.")
