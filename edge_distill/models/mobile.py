"""Mobile-class student families: MobileNetV2, MobileNetV3 (small) and EfficientNet-Lite(0), built from one
inverted-residual block so the three differ only in their block tables.

Knobs the sizing search turns (``StudentConfig``):
- ``width``: the width multiplier in percent (35 = 0.35x); every channel count, stem and head included, is scaled
  and rounded to a multiple of 8 as the reference models do.  The ImageNet models keep a 1280-wide head when they
  shrink; ours scale it too, because at 0.35x a fixed 1280 head alone would be most of a device's parameter budget.
- ``depth``: the share of each stage's blocks kept, in percent (the first ``ceil(n * depth / 100)`` of a stage's
  ``n``; every stage keeps at least one, so the downsampling schedule and the receptive field stay).
- ``resolution``: the side the network computes at (96-224 on photos).  Like the other families, a resolution
  below the image size is applied *inside* the model — an integer average-downsample (a fixed depthwise
  convolution) and, where the ratio is not an integer, a bilinear resize — so the shipped file takes the image as
  the data stage prepares it and the device needs no resize step of its own.

Every operator converts to full-INT8 TFLite through onnx2tf: convolutions (depthwise too) with BatchNorm folded and
ReLU6 fused, HARD_SWISH, the squeeze-and-excitation's MEAN → conv → conv → hard-sigmoid → MUL, residual ADD, MEAN
and one fully connected head.  The composite modules (``InvertedResidual``'s add, ``SqueezeExcite``'s multiply)
describe themselves to the cost model (sizing.measure_cost) through ``elementwise_op``: which op they add and that
their input stays alive while their inner layers run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..data.spec import DataSpec
from ..errors import ConfigError
from .resize import AveragingDownsample, BilinearResize
from .student_config import StudentConfig

# The resolutions the search tries (the sizes the TFLite hosted models and Edge Impulse offer), and the smallest
# input a five-times-halving network can take.
RESOLUTIONS = (96, 128, 160, 192, 224)
MIN_SIDE = 32


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of ``divisor``, never more than 10 % below the scaled value
    (the rule of the MobileNet reference code): CPU kernels work on groups of 8 channels."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _activation(name: str) -> nn.Module:
    return nn.Hardswish() if name == "hswish" else nn.ReLU6(inplace=True) if name == "relu6" else nn.ReLU(inplace=True)


class ConvBNAct(nn.Sequential):
    """Conv (depthwise when ``groups == c_in``) + BatchNorm (folded at export) + an optional activation."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: str | None = "relu6") -> None:
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
        if act:
            layers.append(_activation(act))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """MobileNetV3's channel attention: global mean → 1x1 conv + ReLU → 1x1 conv → hard-sigmoid → scale the input."""

    elementwise_op = "mul"  # sizing.measure_cost: one MUL; the input stays alive while the squeeze runs

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.relu = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))


class InvertedResidual(nn.Module):
    """1x1 expansion → depthwise k x k → (squeeze-and-excitation) → 1x1 linear projection, plus the input when the
    block keeps its shape.  Submodule names follow the block's parts, so ImageNet weights map onto them by name."""

    def __init__(self, c_in: int, c_out: int, expanded: int, kernel: int, stride: int, act: str, se_channels: int = 0) -> None:
        super().__init__()
        self.expand = ConvBNAct(c_in, expanded, act=act) if expanded != c_in else nn.Identity()
        self.depthwise = ConvBNAct(expanded, expanded, kernel, stride, groups=expanded, act=act)
        self.se = SqueezeExcite(expanded, se_channels) if se_channels else nn.Identity()
        self.project = ConvBNAct(expanded, c_out, act=None)
        self.residual = stride == 1 and c_in == c_out
        # Only a block with a skip connection adds an ADD and keeps its input alive (sizing.measure_cost).
        self.elementwise_op = "add" if self.residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


@dataclass(frozen=True)
class BlockSpec:
    """One row of a family's table: a block's kernel, expanded and output channels (at width 1.0), stride,
    activation, squeeze-and-excitation, and the stage it belongs to (depth scaling keeps a share of each stage)."""

    stage: int
    kernel: int
    expanded: int
    out: int
    stride: int
    act: str = "relu6"
    se: bool = False
    expand_ratio: int = 0  # MBConv tables: expanded = input channels x this (0: ``expanded`` as given)


@dataclass(frozen=True)
class MobileArch:
    stem: int  # channels of the stride-2 3x3 stem at width 1.0
    stem_act: str
    blocks: tuple[BlockSpec, ...]
    head: int  # the 1x1 conv before the pool
    head_act: str
    hidden: int = 0  # MobileNetV3's fully connected layer after the pool (0: none)
    dropout: float = 0.2


def _mbconv_table(rows: tuple[tuple[int, int, int, int, int], ...], c_in: int) -> tuple[BlockSpec, ...]:
    """(expansion t, kernel, output channels, repeats n, first stride) per stage → one BlockSpec per block."""
    blocks = []
    for stage, (t, k, c, n, s) in enumerate(rows):
        for i in range(n):
            blocks.append(BlockSpec(stage, k, c_in * t, c, s if i == 0 else 1, expand_ratio=t))
            c_in = c
    return tuple(blocks)


# Sandler et al. 2018, table 2.
MOBILENET_V2 = MobileArch(
    stem=32, stem_act="relu6", head=1280, head_act="relu6",
    blocks=_mbconv_table(((1, 3, 16, 1, 1), (6, 3, 24, 2, 2), (6, 3, 32, 3, 2), (6, 3, 64, 4, 2), (6, 3, 96, 3, 1),
                          (6, 3, 160, 3, 2), (6, 3, 320, 1, 1)), 32),
)
# EfficientNet-Lite0 (the TF reference's lite builder): EfficientNet-B0's blocks without squeeze-and-excitation, ReLU6.
EFFICIENTNET_LITE0 = MobileArch(
    stem=32, stem_act="relu6", head=1280, head_act="relu6",
    blocks=_mbconv_table(((1, 3, 16, 1, 1), (6, 3, 24, 2, 2), (6, 5, 40, 2, 2), (6, 3, 80, 3, 2), (6, 5, 112, 3, 1),
                          (6, 5, 192, 4, 2), (6, 3, 320, 1, 1)), 32),
)
# Howard et al. 2019, table 2 (MobileNetV3-Small): the device-class variant (2.5 M parameters, 56 M MACs at 224).
MOBILENET_V3_SMALL = MobileArch(
    stem=16, stem_act="hswish", head=576, head_act="hswish", hidden=1024,
    blocks=(
        BlockSpec(0, 3, 16, 16, 2, "relu", True),
        BlockSpec(1, 3, 72, 24, 2, "relu"), BlockSpec(1, 3, 88, 24, 1, "relu"),
        BlockSpec(2, 5, 96, 40, 2, "hswish", True), BlockSpec(2, 5, 240, 40, 1, "hswish", True),
        BlockSpec(2, 5, 240, 40, 1, "hswish", True),
        BlockSpec(3, 5, 120, 48, 1, "hswish", True), BlockSpec(3, 5, 144, 48, 1, "hswish", True),
        BlockSpec(4, 5, 288, 96, 2, "hswish", True), BlockSpec(4, 5, 576, 96, 1, "hswish", True),
        BlockSpec(4, 5, 576, 96, 1, "hswish", True),
    ),
)
ARCHS = {"mobilenetv2": MOBILENET_V2, "mobilenetv3": MOBILENET_V3_SMALL, "efficientnet-lite": EFFICIENTNET_LITE0}


def kept_blocks(arch: MobileArch, depth_percent: int) -> tuple[BlockSpec, ...]:
    """The first ceil(n * depth) blocks of every stage (at least one each)."""
    kept = []
    for stage in sorted({b.stage for b in arch.blocks}):
        rows = [b for b in arch.blocks if b.stage == stage]
        kept += rows[: max(1, math.ceil(len(rows) * depth_percent / 100))]
    return tuple(kept)


class MobileNet(nn.Module):
    """Stem → inverted-residual blocks → 1x1 head conv → global mean → (hidden FC) → dropout → classifier."""

    def __init__(self, arch: MobileArch, in_channels: int, num_classes: int, width_percent: int, depth_percent: int) -> None:
        super().__init__()
        scale = lambda c: make_divisible(c * width_percent / 100)  # noqa: E731
        stem = scale(arch.stem)
        self.stem = ConvBNAct(in_channels, stem, 3, 2, act=arch.stem_act)
        blocks, c = [], stem
        for b in kept_blocks(arch, depth_percent):
            # MBConv tables expand the block's (scaled) input by a ratio; MobileNetV3's table gives each block's
            # expanded width, which scales like every other channel count.
            expanded = c * b.expand_ratio if b.expand_ratio else scale(b.expanded)
            out = scale(b.out)
            blocks.append(InvertedResidual(c, out, expanded, b.kernel, b.stride, b.act, make_divisible(expanded / 4) if b.se else 0))
            c = out
        self.blocks = nn.Sequential(*blocks)
        head = scale(arch.head)
        self.head = ConvBNAct(c, head, act=arch.head_act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        features = head
        if arch.hidden:
            hidden = scale(arch.hidden)
            self.hidden = nn.Sequential(nn.Linear(head, hidden), _activation(arch.head_act))
            features = hidden
        else:
            self.hidden = nn.Identity()
        self.dropout = nn.Dropout(arch.dropout)
        self.classifier = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.head(self.blocks(self.stem(x)))).flatten(1)
        return self.classifier(self.dropout(self.hidden(x)))


def student_side(config: StudentConfig, spec: DataSpec) -> tuple[int, int]:
    """(height, width) the network computes at: ``resolution`` is the height, the width keeps the image's aspect."""
    _, h, w = spec.input_shape
    if not config.resolution or config.resolution >= h:
        return h, w
    return config.resolution, max(1, round(config.resolution * w / h))


def resize_inside(spec: DataSpec, target: tuple[int, int]) -> list[nn.Module]:
    """Layers that take the prepared image down to ``target``: an integer average-downsample first (so a large
    reduction averages every pixel instead of sampling a few, as bilinear alone would), then bilinear for the rest."""
    c, h, w = spec.input_shape
    if (h, w) == target:
        return []
    k = min(h // target[0], w // target[1])
    layers: list[nn.Module] = []
    if k >= 2:
        layers.append(AveragingDownsample(c, k))
        h, w = h // k, w // k
    if (h, w) != target:
        layers.append(BilinearResize(target))
    return layers


def build_mobile(config: StudentConfig, spec: DataSpec) -> nn.Module:
    c, h, w = spec.input_shape
    if min(h, w) < MIN_SIDE:
        raise ConfigError(
            f"Student family {config.family!r} halves its input five times and needs images of at least {MIN_SIDE} px; "
            f"this data is {w}x{h}.",
            f"Prepare the images larger (--image-size {max(MIN_SIDE, 96)}), or use --student cnn, dscnn or vgg for small images.",
        )
    net = MobileNet(ARCHS[config.family], c, spec.num_classes, config.width, config.depth)
    resize = resize_inside(spec, student_side(config, spec))
    return nn.Sequential(*resize, net) if resize else net


def mobile_resolutions(spec: DataSpec) -> tuple[int, ...]:
    """The search's resolutions for this input: the standard ones up to the image's height, and the height itself
    when it is under 224 and not one of them (a 64-px image computes at 64)."""
    side = spec.input_shape[1]
    if min(spec.input_shape[1:]) < MIN_SIDE:
        return ()
    standard = [r for r in RESOLUTIONS if r < side]
    return tuple(standard + ([0] if side <= RESOLUTIONS[-1] else []))
