"""Per-hop verification: each converted model is compared with the one it was converted from."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ..errors import ConversionError
from .results import HopCheck

# Float hops are held to an absolute bound on logits that grows with the logits' magnitude: float32
# re-association error (different kernels, fused BatchNorm) is relative, so a fixed bound would fail
# confident models with large logits and be meaningless for tiny ones.
TORCH_ONNX_ATOL = 1e-3
ONNX_TFLITE_ATOL = 5e-3


def _agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))


def _check_shapes(hop: str, reference: np.ndarray, candidate: np.ndarray) -> None:
    if reference.shape != candidate.shape:
        raise ConversionError(
            f"{hop}: outputs have shape {candidate.shape}, expected {reference.shape} from the previous hop."
        )


def compare_float(hop: str, reference: np.ndarray, candidate: np.ndarray, atol: float) -> HopCheck:
    _check_shapes(hop, reference, candidate)
    max_abs = float(np.max(np.abs(reference.astype(np.float64) - candidate)))
    tolerance = float(atol * max(1.0, float(np.max(np.abs(reference)))))
    return HopCheck(
        hop=hop,
        max_abs_diff=max_abs,
        tolerance=tolerance,
        top1_agreement=_agreement(reference, candidate),
        n_samples=int(len(reference)),
        passed=bool(np.isfinite(max_abs) and max_abs <= tolerance),
        criterion="max_abs_diff",
    )


def compare_top1(hop: str, reference: np.ndarray, candidate: np.ndarray, min_agreement: float) -> HopCheck:
    """Quantized hops: logits move by design, so the check is whether the predicted class stays."""
    _check_shapes(hop, reference, candidate)
    agreement = _agreement(reference, candidate)
    return HopCheck(
        hop=hop,
        max_abs_diff=float(np.max(np.abs(reference.astype(np.float64) - candidate))),
        tolerance=float(min_agreement),
        top1_agreement=agreement,
        n_samples=int(len(reference)),
        passed=bool(agreement >= min_agreement),
        criterion="top1_agreement",
    )


def raise_if_failed(checks: Iterable[HopCheck], extra: Iterable[str] = ()) -> None:
    """One ConversionError listing every failed hop with its numbers (and any hop that could not run)."""
    problems = [c.describe() for c in checks if not c.passed] + list(extra)
    if problems:
        raise ConversionError(
            "Conversion verification failed:\n  " + "\n  ".join(problems),
            "A float hop that disagrees points at an unsupported operation; a low INT8 agreement points at "
            "too few or unrepresentative calibration samples, or a student that does not quantize well.",
        )
