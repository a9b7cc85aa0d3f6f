"""Resolution changes inside a student: the shipped file takes the image as the data stage prepares it, and the
network computes at its own, lower resolution, so the device needs no resize step of its own."""

from __future__ import annotations

import torch
from torch import nn


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


class BilinearResize(nn.Module):
    """Resize to the student's resolution inside the model (ONNX Resize → TFLite RESIZE_BILINEAR, INT8)."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
