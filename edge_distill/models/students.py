"""Student families: a registry of model builders, each with the knobs the sizing search turns.

Vision knobs: ``width`` (channels of the first stage, doubled at every later stage), ``depth`` (number
of stages) and ``resolution`` (the side length the convolutions compute at).  A resolution below the
image size is implemented *inside* the model as an average-pool, so the deployed file still takes the
full image and the device needs no separate resize step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..data.spec import DataSpec
from ..errors import ConfigError
from ..registry import Registry
from .cnn import ConvClassifier
from .pruned_arch import PrunedArch, build_pruned
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

    def candidates(self, spec: DataSpec) -> list[StudentConfig]:
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


class AveragingDownsample(nn.Conv2d):
    """A k x k average pool written as a fixed (untrained) depthwise convolution with weights 1/k².

    The same arithmetic as ``nn.AvgPool2d(k)``, but it exports as CONV_2D/DEPTHWISE_CONV_2D: measured on the
    x86 build host (LiteRT 2.1, 2 threads), a 28x28 → 14x14 student ran its full-INT8 file in 0.0174 ms with
    int8 AVERAGE_POOL_2D in front and 0.0115 ms with this convolution — the pooling op cost more than the
    whole rest of the network.
    """

    def __init__(self, channels: int, k: int) -> None:
        super().__init__(channels, channels, k, stride=k, groups=channels, bias=False)
        # A buffer, not a parameter: nothing to train, and the student's capacity (its parameter count,
        # which ranks sizing candidates) stays that of the network behind it.
        del self.weight
        self.register_buffer("weight", torch.full((channels, 1, k, k), 1.0 / (k * k)))


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
# Registered here, not in text.py, so that this registry is complete wherever it is imported from.
for _family in TEXT_FAMILIES:
    STUDENT_FAMILIES.register(_family.name)(_family)


def build_student(config: StudentConfig, spec: DataSpec) -> nn.Module:
    if config.family == PRUNED_FAMILY:  # not a family the sizing search picks from: its layers come from the pruner
        return build_pruned(PrunedArch(config.layers, config.dropout), spec)
    return STUDENT_FAMILIES.get(config.family).build(config, spec)


def family_names(task: str) -> list[str]:
    """The registered families for ``task`` ("vision" or "text")."""
    return [n for n in STUDENT_FAMILIES.names() if STUDENT_FAMILIES.get(n).task == task]

