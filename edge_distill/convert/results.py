"""What the convert stage hands on: the model files it wrote and the per-hop checks that vouch for them.

Plain frozen dataclasses with JSON-friendly fields, so ``serde`` can store them in the manifest and a
resumed build gets the same objects back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Every file the convert stage can write.  The name says what the file is, never what we hoped it would be:
# "tflite_int8" is always full-integer int8 (activations and I/O included); a model with float layers left in
# it is "tflite_mixed", one with int16 activations "tflite_int16x8".
VARIANTS = (
    "onnx_fp32",  # the verified ONNX export (NCHW, float32)
    "tflite_fp32",  # onnx2tf's float graph (NHWC)
    "tflite_fp16",  # float16 weights, float32 compute
    "tflite_dynamic",  # dynamic-range: int8 weights, float activations
    "tflite_int8",  # full integer: int8 weights, activations, input and output
    "tflite_int16x8",  # int8 weights, int16 activations, int16 input and output
    "tflite_mixed",  # full INT8 except the worst layers, kept in float (quality-gate escalation only)
    "onnx_int8_qdq",  # ONNX Runtime static INT8 (QDQ, per-channel): the peer a user would pick instead
    "tflite_fp32_litert_torch",  # --peer litert-torch: the same student converted by litert-torch (NHWC input)
    "tflite_int8_litert_torch",  # --peer litert-torch: its PT2E static INT8 (per-channel weights), same calibration set
)
HOPS = ("torch->onnx", "onnx->tflite_fp32", "tflite_fp32->tflite_int8")
# Variants that may ship as "the INT8 model" when they pass the quality gate, in escalation order.
DEPLOYABLE = ("tflite_int8", "tflite_int16x8", "tflite_mixed")


@dataclass(frozen=True)
class ModelFile:
    variant: str  # one of VARIANTS
    path: str  # relative to the run directory root, so a run directory can be moved or bundled
    bytes: int
    input_layout: str  # "NCHW" for ONNX, "NHWC" for TFLite (onnx2tf transposes image inputs)
    input_shape: tuple[int, ...]
    input_dtype: str
    output_dtype: str
    integer_description: str  # read from the file itself, never assumed from the variant name

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"ModelFile.variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.bytes <= 0:
            raise ValueError(f"ModelFile.bytes must be positive, got {self.bytes}")


@dataclass(frozen=True)
class HopCheck:
    """One conversion hop compared against the hop before it on held-out samples.

    Float hops pass when ``max_abs_diff <= tolerance`` (logits).  The INT8 hop cannot be held to an
    absolute bound on logits, so it passes when ``top1_agreement >= tolerance``; ``criterion`` says
    which of the two numbers ``tolerance`` applies to.
    """

    hop: str
    max_abs_diff: float
    tolerance: float
    top1_agreement: float
    n_samples: int
    passed: bool
    criterion: str = "max_abs_diff"  # "max_abs_diff" | "top1_agreement"

    def describe(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        if self.criterion == "top1_agreement":
            return (
                f"{self.hop}: top-1 agreement {self.top1_agreement:.2%} (needs >= {self.tolerance:.2%}), "
                f"max|Δ| {self.max_abs_diff:.3g} on {self.n_samples} samples — {verdict}"
            )
        return (
            f"{self.hop}: max|Δ| {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g}), "
            f"top-1 agreement {self.top1_agreement:.2%} on {self.n_samples} samples — {verdict}"
        )


@dataclass(frozen=True)
class CalibrationInfo:
    """What the INT8 calibration set was, as checked against the model's input (see ``calibration.py``)."""

    count: int
    classes: int | None  # distinct labels among the samples; None when no labels were given
    per_class_min: int | None
    per_class_max: int | None
    layout: str  # the layout the samples were fed in, e.g. "NHWC"
    dtype: str
    value_min: float
    value_max: float
    mean: float
    std: float
    expected: str  # the contract they were checked against, in words


@dataclass(frozen=True)
class QuantAttempt:
    """One try at a quantized model that meets the quality gate; the report lists every one of them.

    ``drop_points`` is measured on the held-out *validation* split (never the test split, which the verify
    stage keeps for the final, unbiased ledger).
    """

    step: int
    strategy: str  # "baseline" | "more_calibration" | "per_tensor" | "int16_activations" | "float_fallback"
    variant: str  # the file variant this attempt would be published as
    settings: str  # what was tried, in words
    accuracy: float | None  # None when the attempt could not be built or run
    agreement: float | None  # top-1 agreement with the fp32 student on the same samples
    drop_points: float | None  # accuracy points lost against the fp32 student
    passed: bool
    bytes: int | None
    seconds: float
    error: str = ""  # why the attempt could not be built or run
    published: bool = False  # this attempt's file is the one written under ``variant``
    # A failed full-INT8 baseline is scored again on LiteRT's reference kernels (XNNPACK off): a small drop
    # there means the file is sound and the delegate's int8 kernels lose the accuracy.  None: not measured.
    reference_kernels_drop: float | None = None
    # The drop's one-sided 95 % sampling margin on the validation samples (escalate.sampling_margin): the attempt
    # passes unless drop - margin exceeds the gate.  None: recorded before the margin was (or could not be run).
    margin_points: float | None = None


def reference_kernels_note(drop_xnnpack: float | None, drop_reference: float | None, max_drop: float | None) -> str:
    """One sentence on a failed full-INT8 baseline scored again without XNNPACK; "" when not measured."""
    if drop_reference is None or drop_xnnpack is None:
        return ""
    said = (f"Plain full INT8 loses {drop_xnnpack:.2f} points with XNNPACK (LiteRT's default) and {drop_reference:.2f} points "
            "on LiteRT's reference kernels (XNNPACK off)")
    if max_drop is not None and drop_reference <= max_drop < drop_xnnpack:
        return (said + ": the file's quantization is sound, XNNPACK's int8 kernels lose the accuracy. The shipped file works "
                "under default runtimes; the full-INT8 file would need a runtime without the XNNPACK delegate (slower).")
    return said + "."


@dataclass(frozen=True)
class QualityGate:
    """How ``convert_student`` decided which quantized model may ship."""

    max_drop_points: float
    criterion: str  # "accuracy" (labels given) or "agreement" (no labels: 100 x disagreement bounds the loss)
    n_samples: int
    reference_accuracy: float | None  # the fp32 student on the same samples (None without labels)
    deploy_variant: str | None  # the first attempt that passed; None when nothing did


@dataclass(frozen=True)
class LayerError:
    """Quantization error of one layer of the full-INT8 model, measured in isolation.

    The float op is run on the same (dequantized) input as the quantized op, so each row is the error that
    layer adds by itself (TensorFlow's QuantizationDebugger, ``NumericVerify`` ops).
    ``channel_nsr`` (median over output channels of RMS error / RMS signal) catches an activation whose range is
    stretched by a few huge outliers: the other channels round to zero although ``rmse_over_scale`` (the error
    in quantization steps) looks normal.
    """

    rank: int
    op: str  # TFLite op, e.g. CONV_2D
    tensor: str  # the op's output tensor, shortened for reading
    # None where the op's output had no signal on any sample (nothing to compare the error with).
    channel_nsr: float | None
    nsr: float | None  # RMS error / RMS signal over the whole tensor
    rmse_over_scale: float | None
    max_abs_error: float | None
    scale: float | None  # the int8 scale of the op's output


@dataclass(frozen=True)
class Unconverted:
    """A variant the build asked for that could not be made: the ledger keeps a row for it, with the converter's words."""

    variant: str
    reason: str


@dataclass(frozen=True)
class ConvertResult:
    files: tuple[ModelFile, ...]
    checks: tuple[HopCheck, ...]
    gate: QualityGate | None = None
    attempts: tuple[QuantAttempt, ...] = ()
    layer_errors: tuple[LayerError, ...] = ()  # worst first
    layer_error_note: str = ""  # what the per-layer analysis ran on, or why it could not run
    calibration: CalibrationInfo | None = None
    notes: tuple[str, ...] = ()  # what the report should say about the conversion (kernels used, a file that could not be used)
    unconverted: tuple[Unconverted, ...] = ()  # optional variants (ONNX Runtime INT8, a --peer's files) that could not be built
    # Wall seconds of the peers' own conversions (``onnx_int8_qdq``; a --peer's variants, and its whole call as
    # "<peer> total": export, venv start, both files), so a comparison can set them against the rest of the stage.
    peer_seconds: dict[str, float] = field(default_factory=dict)
    gate_runtime: str = ""  # the TFLite runtime that judged the INT8 candidates, e.g. "ai_edge_litert 2.3.0 (device runtime)"

    @property
    def deploy_variant(self) -> str | None:
        """The quantized file that passed the quality gate during conversion, or None."""
        return self.gate.deploy_variant if self.gate is not None else None

    def file(self, variant: str) -> ModelFile:
        for model_file in self.files:
            if model_file.variant == variant:
                return model_file
        known = ", ".join(f.variant for f in self.files) or "none"
        raise KeyError(f"No {variant!r} model in this conversion result (have: {known})")

    def check(self, hop: str) -> HopCheck:
        for hop_check in self.checks:
            if hop_check.hop == hop:
                return hop_check
        raise KeyError(f"No check for hop {hop!r} (have: {', '.join(c.hop for c in self.checks)})")
