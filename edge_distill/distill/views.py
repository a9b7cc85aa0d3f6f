"""A bank of fixed augmented views with the teacher's outputs on each: consistent-view KD at cached cost.

Distilling on augmented inputs needs the teacher's output on the *same* view the student sees (Beyer et
al. 2022).  Running the teacher at every step costs a teacher forward pass per student step — for a
teacher 4x the student's size that more than doubles training time, and it is paid again by every
student trained from the same teacher (seeds, KD variants, the sizing proxy).  The bank pays it once:
``K`` views of every training image (view 0 is the image itself, the others random shift/flip views),
with the teacher's logits — and, for feature losses, its last feature map, stored as float16 — on each.
Each epoch every sample draws one of its ``K`` views, so a student sees ``K`` distinct inputs per image
over training, each with exactly matching teacher targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..console import get_console
from ..errors import ConfigError
from .augment import augment
from .features import capture_features
from .layout import channels_last_input, set_memory_format


@dataclass(frozen=True)
class ViewBank:
    x: np.ndarray  # (K, N, *input_shape) float32 inputs
    logits: np.ndarray  # (K, N, classes) float32 teacher logits on each view
    maps: np.ndarray | None = None  # (K, N, C, H, W) float16 teacher feature maps, for feature losses

    @property
    def views(self) -> int:
        return int(self.x.shape[0])

    def __post_init__(self) -> None:
        if self.x.shape[:2] != self.logits.shape[:2] or (self.maps is not None and self.maps.shape[:2] != self.x.shape[:2]):
            raise ConfigError(
                f"View bank arrays disagree: inputs {self.x.shape[:2]}, logits {self.logits.shape[:2]}"
                + (f", maps {self.maps.shape[:2]}" if self.maps is not None else "") + " (views, samples).",
                "Rebuild the bank with build_view_bank.",
            )


@torch.no_grad()
def build_view_bank(
    teacher: nn.Module,
    x: np.ndarray,
    views: int,
    shift: int,
    flip: bool,
    background: float,
    seed: int = 0,
    with_maps: bool = False,
    batch_size: int = 512,
) -> ViewBank:
    """``views`` views of every row of ``x`` (view 0 unaugmented) and the teacher's outputs on them."""
    if views < 1:
        raise ConfigError(f"A view bank needs at least 1 view, got {views}.", "Use 1 (no augmentation) or more.")
    if views > 1 and shift <= 0 and not flip:
        raise ConfigError("A view bank with more than one view needs augmentation (shift > 0 or flip).", "Set a shift or flip, or use 1 view.")
    teacher.eval()
    images = x.ndim == 4
    if images:
        set_memory_format(torch.channels_last, teacher)
    generator = torch.Generator().manual_seed(seed * 6_151 + 17)
    xs, logits, maps = [], [], []
    chunks = [(v, i) for v in range(views) for i in range(0, len(x), batch_size)]
    for view, start in get_console().progress(chunks, len(chunks), f"teacher on {views} views"):
        xb = torch.from_numpy(x[start : start + batch_size])
        if view > 0:
            xb = augment(xb, generator, shift, flip, background)
        xin = channels_last_input(xb)
        if with_maps:
            with capture_features(teacher) as captured:
                out = teacher(xin)
            maps.append(captured[0].to(torch.float16).numpy())
        else:
            out = teacher(xin)
        xs.append(xb.numpy())
        logits.append(out.float().numpy())
    n = len(x)

    def stack(parts: list[np.ndarray]) -> np.ndarray:
        flat = np.concatenate(parts)
        return flat.reshape(views, n, *flat.shape[1:])

    if images:
        set_memory_format(torch.contiguous_format, teacher)
    return ViewBank(stack(xs).astype(np.float32), stack(logits), stack(maps) if with_maps else None)


def draw_views(bank: ViewBank, seed: int, epoch: int) -> torch.Tensor:
    """Which view every sample trains on this epoch; depends only on (seed, epoch), so resumes repeat it."""
    generator = torch.Generator().manual_seed(seed * 104_729 + epoch)
    return torch.randint(0, bank.views, (bank.x.shape[1],), generator=generator)
