"""The calibration contract: INT8 calibration samples are checked against the model's input before use.

Most silent INT8 collapses start here: calibration images in NCHW fed to an NHWC graph, raw 0..255 pixels
fed to a model trained on normalized ones, a handful of samples from one class.  The converter accepts all
of them and calibrates activation ranges that are wrong, so every check below fails loudly instead, naming
which part of the contract was broken and how to fix it.

Two moments: ``check_calibration`` runs before anything is converted (count, class balance, shape as the
torch model sees it, dtype, value range and statistics against the training normalization);
``to_model_input`` runs once the TFLite model exists and checks layout and dtype against its real input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CalibrationError
from .results import CalibrationInfo
from .runtimes import nchw_to_model_layout

FLOAT_KINDS = "f"
INT_KINDS = "iu"


@dataclass(frozen=True)
class InputContract:
    """What the model's input looked like in training; ``None`` fields are not checked.

    ``low``/``high`` bound the values the training normalization can produce (e.g. pixels in [0, 16] become
    [(0 - mean) / std, (1 - mean) / std]); ``mean``/``std`` are those of the normalized training split.
    """

    dtype: str = "float32"  # "float32" for images and features, "int64" for token ids
    low: float | None = None
    high: float | None = None
    mean: float | None = None
    std: float | None = None
    num_classes: int | None = None  # a calibration set with labels must cover every class
    source: str = ""  # the normalization in words, for messages and the report

    def __post_init__(self) -> None:
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise CalibrationError(f"InputContract range is empty: low={self.low}, high={self.high}.", "low must be below high.")
        if self.std is not None and not self.std > 0:
            raise CalibrationError(f"InputContract std must be positive, got {self.std}.", "Pass the training split's std.")

    def describe(self) -> str:
        parts = [self.dtype]
        if self.low is not None and self.high is not None:
            parts.append(f"values in [{self.low:.3g}, {self.high:.3g}]")
        if self.mean is not None and self.std is not None:
            parts.append(f"mean ≈ {self.mean:.3g}, std ≈ {self.std:.3g}")
        if self.num_classes:
            parts.append(f"all {self.num_classes} classes")
        text = ", ".join(parts)
        return f"{text} ({self.source})" if self.source else text


# How far calibration statistics may stray from the training split's before they count as "not normalized
# like the training data".  A class-balanced draw of >= 10 samples lands well inside these (measured on
# digits: |mean| < 0.1, std within 5%); raw [0, 1] pixels of a model trained on standardized ones do not.
MEAN_TOLERANCE_STDS = 0.5
STD_RATIO_RANGE = (0.5, 2.0)
# Range slack: float rounding in the normalization, nothing more.
RANGE_SLACK = 0.02


def _fail(what: str, message: str, hint: str) -> CalibrationError:
    return CalibrationError(f"Calibration samples: {what}: {message}", hint)


def check_calibration(
    x: np.ndarray,
    input_shape: tuple[int, ...],
    contract: InputContract | None = None,
    y: np.ndarray | None = None,
    min_count: int = 1,
) -> CalibrationInfo:
    """Check calibration samples (as the torch model sees them: NCHW for images) before converting.

    Raises ``CalibrationError`` naming the first broken part of the contract: count, class balance, layout,
    dtype, value range or statistics.  Returns what was checked, for the report.
    """
    contract = contract or InputContract()
    x = np.asarray(x)
    input_shape = tuple(int(d) for d in input_shape)
    # The checks run in this order so the error names the most basic thing that is wrong.
    _check_count(x, contract, min_count)
    classes, per_min, per_max = _check_class_balance(x, y, contract)
    _check_layout(x, input_shape)
    _check_dtype(x, contract)
    lo, hi, mean, std = _check_values(x, contract)
    return CalibrationInfo(
        count=int(len(x)),
        classes=classes,
        per_class_min=per_min,
        per_class_max=per_max,
        layout="NCHW" if len(input_shape) == 3 else f"rank-{len(input_shape) + 1}",
        dtype=str(x.dtype),
        value_min=round(lo, 6),
        value_max=round(hi, 6),
        mean=round(mean, 6),
        std=round(std, 6),
        expected=contract.describe(),
    )


def _check_count(x: np.ndarray, contract: InputContract, min_count: int) -> None:
    if x.ndim == 0 or len(x) == 0:
        raise _fail("count", "there are none.", "Give at least a few hundred samples from the training split (--calib-count).")
    need = max(min_count, contract.num_classes or 1)
    if len(x) < need:
        raise _fail(
            "count",
            f"{len(x)} samples, fewer than the {need} needed" + (f" to cover all {contract.num_classes} classes." if contract.num_classes else "."),
            "Raise --calib-count (a few hundred class-balanced training samples is typical).",
        )


def _check_class_balance(
    x: np.ndarray, y: np.ndarray | None, contract: InputContract
) -> tuple[int | None, int | None, int | None]:
    """(classes, fewest, most samples per class), all None without labels."""
    if y is None:
        return None, None, None
    y = np.asarray(y)
    if len(y) != len(x):
        raise _fail("count", f"{len(x)} samples but {len(y)} labels.", "Pass one label per calibration sample.")
    labels, counts = np.unique(y, return_counts=True)
    classes, per_min, per_max = int(len(labels)), int(counts.min()), int(counts.max())
    if contract.num_classes:
        missing = sorted(set(range(contract.num_classes)) - {int(v) for v in labels})
        if missing:
            raise _fail(
                "class balance",
                f"no samples of class(es) {missing[:10]}{' …' if len(missing) > 10 else ''}; activation ranges would be "
                "calibrated without them.",
                "Draw the calibration set class-balanced from the training split (data.splits.balanced_subset).",
            )
    # Round-robin drawing leaves at most one sample of difference unless a class runs out; a 2x spread
    # means the set was drawn some other way and over-represents some classes.
    if per_max > 2 * per_min and per_max - per_min > 1:
        small = labels[counts.argmin()]
        large = labels[counts.argmax()]
        raise _fail(
            "class balance",
            f"class {small} has {per_min} samples and class {large} has {per_max}.",
            "Draw the calibration set class-balanced from the training split (data.splits.balanced_subset).",
        )
    return classes, per_min, per_max


def _check_layout(x: np.ndarray, input_shape: tuple[int, ...]) -> None:
    """The shape as the torch model sees it; NHWC images get their own message because it is the usual slip."""
    expected = f"(N, {', '.join(map(str, input_shape))})"
    sample = tuple(int(d) for d in x.shape[1:])
    if sample != input_shape:
        if len(input_shape) == 3 and len(sample) == 3 and sample == (input_shape[1], input_shape[2], input_shape[0]):
            raise _fail(
                "layout",
                f"shape {tuple(x.shape)} is NHWC, but the student takes NCHW {expected}.",
                "Pass samples as the torch model sees them (NCHW); they are transposed to NHWC for TFLite here. "
                "E.g. x.transpose(0, 3, 1, 2).",
            )
        raise _fail("layout", f"shape {tuple(x.shape)}, expected {expected} to match the student input.", "Pass samples shaped like the training inputs.")


def _check_dtype(x: np.ndarray, contract: InputContract) -> None:
    wants_float = np.dtype(contract.dtype).kind in FLOAT_KINDS
    if wants_float and x.dtype.kind not in FLOAT_KINDS:
        raise _fail(
            "dtype",
            f"{x.dtype} values, but the model takes {contract.dtype}" + (" (integer pixels look un-normalized)." if x.dtype.kind in INT_KINDS else "."),
            f"Convert and normalize them exactly like the training data: {contract.source or 'the same preprocessing'}.",
        )
    if not wants_float and x.dtype.kind not in INT_KINDS:
        raise _fail("dtype", f"{x.dtype} values, but the model takes integer {contract.dtype} (e.g. token ids).", "Pass the tokenized ids, not embeddings or floats.")
    if not np.all(np.isfinite(x)):
        raise _fail("value range", "NaN or infinite values.", "Remove or repair those samples.")


def _check_values(x: np.ndarray, contract: InputContract) -> tuple[float, float, float, float]:
    """(min, max, mean, std) of the samples, once they are known to be normalized like the training data."""
    xf = x.astype(np.float64, copy=False)
    lo, hi, mean, std = float(xf.min()), float(xf.max()), float(xf.mean()), float(xf.std())
    if std == 0:
        raise _fail(
            "value range",
            f"every value is {lo:g}: constant inputs calibrate every activation range to a single point.",
            "Use real training samples, not blank or padded ones.",
        )
    _check_range(lo, hi, contract)
    _check_statistics(mean, std, contract)
    return lo, hi, mean, std


def _check_range(lo: float, hi: float, contract: InputContract) -> None:
    if contract.low is None or contract.high is None:
        return
    slack = RANGE_SLACK * (contract.high - contract.low)
    if lo < contract.low - slack or hi > contract.high + slack:
        raise _fail(
            "value range",
            f"values span [{lo:.4g}, {hi:.4g}], outside [{contract.low:.4g}, {contract.high:.4g}] that the training "
            f"normalization produces ({contract.source or 'training data'}).",
            "Normalize the calibration samples exactly like the training data (same scale, mean and std).",
        )


def _check_statistics(mean: float, std: float, contract: InputContract) -> None:
    if contract.mean is None or contract.std is None:
        return
    off = abs(mean - contract.mean) > MEAN_TOLERANCE_STDS * contract.std
    ratio = std / contract.std
    if off or not STD_RATIO_RANGE[0] <= ratio <= STD_RATIO_RANGE[1]:
        raise _fail(
            "value range",
            f"mean {mean:.3g} and std {std:.3g}, but the normalized training split has mean {contract.mean:.3g} and std "
            f"{contract.std:.3g}: they look normalized differently.",
            f"Apply the training normalization to them: {contract.source or 'the same preprocessing'}.",
        )


def to_model_input(x: np.ndarray, model_shape: tuple[int, ...], model_dtype: str) -> tuple[np.ndarray, str]:
    """``x`` (torch layout) in the converted model's input layout and dtype, plus the layout's name.

    onnx2tf makes 4-D image inputs NHWC; a sample that fits neither layout of the model input, or a float
    model fed integers, is a broken contract, not something to cast silently.
    """
    model_shape = tuple(int(d) for d in model_shape)
    x = np.asarray(x)
    try:
        arranged = nchw_to_model_layout(x, model_shape)
    except Exception as exc:  # ConversionError from the layout helper: re-raise as the contract it is
        raise _fail("layout", getattr(exc, "message", str(exc)), "Pass samples shaped like the model's training inputs.") from None
    if tuple(arranged.shape[1:]) != model_shape[1:]:
        raise _fail(
            "layout",
            f"samples of shape {tuple(x.shape)} do not fit the converted model's input {model_shape}.",
            "Pass samples shaped like the model's training inputs.",
        )
    if arranged.ndim == 4:
        layout = "NHWC" if arranged is not x else "NCHW"  # the helper returns x itself when no transpose was needed
    else:
        layout = f"rank-{arranged.ndim}"
    target = np.dtype(model_dtype)
    if target.kind in FLOAT_KINDS:
        if arranged.dtype.kind not in FLOAT_KINDS:
            raise _fail("dtype", f"{arranged.dtype} samples for a {target} model input.", "Pass normalized float samples.")
    elif arranged.dtype.kind not in INT_KINDS:
        raise _fail("dtype", f"{arranged.dtype} samples for an integer ({target}) model input.", "Pass integer ids.")
    return np.ascontiguousarray(arranged.astype(target, copy=False)), layout
