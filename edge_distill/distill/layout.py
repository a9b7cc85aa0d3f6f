"""Memory layout for CPU convolutions: channels-last runs ~1.2-1.5x faster than PyTorch's default NCHW
(measured on the vgg teacher: 102 vs 122 s per Fashion-MNIST training epoch, 27 vs 42 s per inference pass)."""

from __future__ import annotations

import torch
from torch import nn


def set_memory_format(fmt: torch.memory_format, *modules: nn.Module | None) -> None:
    """Move the modules' 4-D weights to ``fmt``; a scripted or exported module that refuses still runs as it is."""
    for module in modules:
        if module is not None:
            try:
                module.to(memory_format=fmt)
            except (RuntimeError, TypeError, AttributeError):
                pass


def channels_last_input(x: torch.Tensor) -> torch.Tensor:
    """An image batch (4-D) in channels-last memory, to match channels-last weights; other inputs as they are."""
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def memory_format_of(model: nn.Module) -> torch.memory_format | None:
    """The layout of the model's 4-D weights; None when no weight tells (e.g. a 1-channel 3x3 kernel is both)."""
    for p in model.parameters():
        if p.ndim == 4:
            channels_last, nchw = p.is_contiguous(memory_format=torch.channels_last), p.is_contiguous()
            if channels_last != nchw:
                return torch.channels_last if channels_last else torch.contiguous_format
    return None
