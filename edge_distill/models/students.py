"""Student families: a registry of model builders, each with the knobs the sizing search turns.

Vision knobs: ``width`` (channels of the first stage, doubled at every later stage), ``depth`` (number
of stages) and ``resolution`` (the side length the convolutions compute at).  A resolution below the
image size is implemented *inside* the model as an average-pool, so the deployed file still takes the
full image and the device needs no separate resize step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..data.spec import DataSpec
from ..errors import ConfigError
from ..registry import Registry
from .cnn import ConvClassifier
from .mobile import build_mobile, mobile_resolutions
from .pruned_arch import PrunedArch, build_pruned
from .resize import AveragingDownsample
from .student_config import PRUNED_FAMILY, StudentConfig
from .text import TEXT_FAMILIES, TextStudentFamily


@dataclass(frozen=True)
class StudentFamily:
    name: str
    build: Callable[[StudentConfig, DataSpec], nn.Module]
    widths: tuple[int, ...]  # candidate first-stage widths
    depths: tuple[int, ...]  # candidate stage counts
    description: str
    task: str = "vision"  # the data it takes: "vision" here, "text" for the families in models/text.py
    # The resolutions the search tries for an input (0 = the full image); None: the full image and, from 16 px, half of it.
    resolutions: Callable[[DataSpec], tuple[int, ...]] | None = None
    # A user's own module (``edge_distill.build(student=module)``): one fixed model, measured against the budgets and
    # reported when it breaks them, never refused -- the user chose it.
    fixed: bool = False

    def candidates(self, spec: DataSpec) -> list[StudentConfig]:
        if self.resolutions is not None:
            resolutions = self.resolutions(spec)
        else:
            side = spec.input_shape[1]
            # Halving the resolution only pays where there is resolution to spare (≥ 16 px).
            resolutions = (0, side // 2) if side >= 16 else (0,)
        return [StudentConfig(self.name, w, d, r) for r in resolutions for d in self.depths for w in self.widths]


STUDENT_FAMILIES: Registry[StudentFamily | TextStudentFamily] = Registry("student family")


def _stage_widths(config: StudentConfig) -> tuple[int, ...]:
    return tuple(config.width * 2**i for i in range(config.depth))


def _with_resolution(model: ConvClassifier, config: StudentConfig, spec: DataSpec) -> nn.Module:
    side = spec.input_shape[1]
    if not config.resolution or config.resolution >= side:
        return model
    if side % config.resolution:
        raise ConfigError(
            f"Student resolution {config.resolution} does not divide the image size {side}.",
            f"Use a divisor of {side}, or 0 for the full image.",
        )
    return nn.Sequential(AveragingDownsample(spec.input_shape[0], side // config.resolution), model)


def _build_cnn(config: StudentConfig, spec: DataSpec) -> nn.Module:
    c, h, _ = spec.input_shape
    side = config.resolution or h
    return _with_resolution(ConvClassifier(c, side, spec.num_classes, _stage_widths(config)), config, spec)


def _build_dscnn(config: StudentConfig, spec: DataSpec) -> nn.Module:
    c, h, _ = spec.input_shape
    side = config.resolution or h
    model = ConvClassifier(c, side, spec.num_classes, _stage_widths(config), separable_blocks=True)
    return _with_resolution(model, config, spec)


def _build_vgg(config: StudentConfig, spec: DataSpec) -> nn.Module:
    c, h, _ = spec.input_shape
    side = config.resolution or h
    model = ConvClassifier(c, side, spec.num_classes, _stage_widths(config), blocks_per_stage=2, first_stage_blocks=1)
    return _with_resolution(model, config, spec)


STUDENT_FAMILIES.register("cnn")(
    StudentFamily(
        "cnn", _build_cnn, widths=(4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128), depths=(2, 3), description="plain 3x3 conv stages"
    )
)
STUDENT_FAMILIES.register("dscnn")(
    StudentFamily(
        "dscnn", _build_dscnn, widths=(8, 12, 16, 24, 32, 48, 64, 96, 128, 192), depths=(2, 3, 4),
        description="depthwise-separable (MobileNet-style) stages",
    )
)

STUDENT_FAMILIES.register("vgg")(
    StudentFamily(
        "vgg", _build_vgg, widths=(4, 6, 8, 12, 16, 24, 32, 48, 64), depths=(2, 3),
        description="one-conv stem, then pooled stages of two 3x3 convs (VGG-style; more depth per MAC)",
    )
)
for _name, _description in (
    ("mobilenetv2", "MobileNetV2: inverted residuals, linear bottlenecks, ReLU6"),
    ("mobilenetv3", "MobileNetV3-Small: inverted residuals with squeeze-and-excitation, hardswish"),
    ("efficientnet-lite", "EfficientNet-Lite0: EfficientNet-B0's blocks without squeeze-and-excitation, ReLU6"),
):
    # width and depth in percent of the reference network (width multiplier 0.25-1.0, a share of each stage's blocks)
    STUDENT_FAMILIES.register(_name)(
        StudentFamily(_name, build_mobile, widths=(25, 35, 50, 75, 100), depths=(50, 75, 100), description=_description,
                      resolutions=mobile_resolutions)
    )
# Registered here, not in text.py, so that this registry is complete wherever it is imported from.
for _family in TEXT_FAMILIES:
    STUDENT_FAMILIES.register(_family.name)(_family)


def build_student(config: StudentConfig, spec: DataSpec) -> nn.Module:
    if config.family == PRUNED_FAMILY:  # not a family the sizing search picks from: its layers come from the pruner
        return build_pruned(PrunedArch(config.layers, config.dropout), spec)
    return STUDENT_FAMILIES.get(config.family).build(config, spec)


# From this image height up, --student auto searches every image family (the photo scale the mobile families are
# made for); below it, the plain cnn family alone, as builds on small images always have.
AUTO_ALL_FAMILIES_SIDE = 96


def auto_families(spec: DataSpec) -> tuple[str, ...]:
    """The families --student auto chooses among for this image input."""
    if spec.input_shape[1] >= AUTO_ALL_FAMILIES_SIDE:
        return tuple(n for n in family_names("vision") if STUDENT_FAMILIES.get(n).candidates(spec))
    return ("cnn",)


def family_names(task: str) -> list[str]:
    """The registered families for ``task`` ("vision" or "text"); a user's own modules (``fixed``) are no family to offer."""
    return [n for n in STUDENT_FAMILIES.names() if STUDENT_FAMILIES.get(n).task == task and not getattr(STUDENT_FAMILIES.get(n), "fixed", False)]

