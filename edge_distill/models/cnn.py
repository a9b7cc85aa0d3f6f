"""Plain CNN building blocks shared by the built-in teacher and the student families.

Every layer here converts cleanly through ONNX → onnx2tf → INT8 TFLite: Conv2d + BatchNorm (folded at
export) + ReLU, max-pooling, global average pooling and one Linear head.  No ops that INT8 kernels lack.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(c_in: int, c_out: int, groups: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def separable(c_in: int, c_out: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1: MobileNet's block, ~8x fewer MACs than a full 3x3 conv."""
    return nn.Sequential(conv_bn_relu(c_in, c_in, groups=c_in), conv_bn_relu(c_in, c_out, kernel=1))


class ConvClassifier(nn.Module):
    """Stages of conv blocks, a 2x2 max-pool between stages while the map is large enough, global pool, head."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        widths: tuple[int, ...],
        blocks_per_stage: int = 1,
        separable_blocks: bool = False,
        dropout: float = 0.0,
        first_stage_blocks: int | None = None,
    ) -> None:
        super().__init__()
        # A single conv at full resolution is a cheap stem; the convolutions that cost the most per MAC
        # (large maps, few channels) are kept to one while the pooled stages get ``blocks_per_stage``.
        first_blocks = blocks_per_stage if first_stage_blocks is None else first_stage_blocks
        layers: list[nn.Module] = []
        c, size = in_channels, image_size
        for stage, width in enumerate(widths):
            if stage > 0 and size >= 4:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            for block in range(first_blocks if stage == 0 else blocks_per_stage):
                # The first conv sees the raw image: a depthwise conv over 1-3 channels is too weak.
                use_sep = separable_blocks and not (stage == 0 and block == 0)
                layers.append(separable(c, width) if use_sep else conv_bn_relu(c, width))
                c = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.head(self.dropout(x))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
