"""Student families: a registry of model builders, each with the knobs the sizing search turns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..data.spec import DataSpec
from ..errors import ConfigError
from ..registry import Registry
from .cnn import ConvClassifier


@dataclass(frozen=True)
class StudentConfig:
    family: str
    width: int  # channels of the first stage; later stages double it
    depth: int  # number of stages

    def __post_init__(self) -> None:
        if self.width < 1 or self.depth < 1:
            raise ConfigError(
                f"Student width and depth must be ≥ 1, got width={self.width}, depth={self.depth}.",
                "Use positive integers.",
            )

    def label(self) -> str:
        return f"{self.family}(width={self.width}, depth={self.depth})"


@dataclass(frozen=True)
class StudentFamily:
    name: str
    build: Callable[[StudentConfig, DataSpec], nn.Module]
    widths: tuple[int, ...]  # candidate first-stage widths
    depths: tuple[int, ...]  # candidate stage counts
    description: str

    def candidates(self) -> list[StudentConfig]:
        return [StudentConfig(self.name, w, d) for d in self.depths for w in self.widths]


STUDENT_FAMILIES: Registry[StudentFamily] = Registry("student family")


def _stage_widths(config: StudentConfig) -> tuple[int, ...]:
    return tuple(config.width * 2**i for i in range(config.depth))


def _build_cnn(config: StudentConfig, spec: DataSpec) -> nn.Module:
    c, h, _ = spec.input_shape
    return ConvClassifier(c, h, spec.num_classes, _stage_widths(config))


def _build_dscnn(config: StudentConfig, spec: DataSpec) -> nn.Module:
    c, h, _ = spec.input_shape
    return ConvClassifier(c, h, spec.num_classes, _stage_widths(config), separable_blocks=True)


STUDENT_FAMILIES.register("cnn")(
    StudentFamily("cnn", _build_cnn, widths=(4, 6, 8, 12, 16, 24, 32), depths=(2, 3), description="plain 3x3 conv stages")
)
STUDENT_FAMILIES.register("dscnn")(
    StudentFamily(
        "dscnn", _build_dscnn, widths=(8, 12, 16, 24, 32, 48), depths=(2, 3), description="depthwise-separable (MobileNet-style) stages"
    )
)


def build_student(config: StudentConfig, spec: DataSpec) -> nn.Module:
    return STUDENT_FAMILIES.get(config.family).build(config, spec)
