"""What the convert stage hands on: the model files it wrote and the per-hop checks that vouch for them.

Plain frozen dataclasses with JSON-friendly fields, so ``serde`` can store them in the manifest and a
resumed build gets the same objects back.
"""

from __future__ import annotations

from dataclasses import dataclass

VARIANTS = ("onnx_fp32", "tflite_fp32", "tflite_int8")
HOPS = ("torch->onnx", "onnx->tflite_fp32", "tflite_fp32->tflite_int8")


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
class ConvertResult:
    files: tuple[ModelFile, ...]
    checks: tuple[HopCheck, ...]

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
