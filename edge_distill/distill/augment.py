"""Light, label-preserving augmentation on a batch of normalized NCHW images.

Random translation by up to ``shift`` pixels, padding with ``background`` (pass the *normalized* value of
a blank pixel, ``(0 - mean) / std``: a plain 0 would pad with the mean grey), and optionally horizontal flips.  Deterministic given the generator, so a resumed epoch sees the same views.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment(x: torch.Tensor, generator: torch.Generator, shift: int = 2, flip: bool = True, background: float = 0.0) -> torch.Tensor:
    n, _, h, w = x.shape
    if shift > 0:
        padded = F.pad(x, (shift, shift, shift, shift), value=background)
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)[None, :])  # (n, h)
        cols = (dx[:, None] + torch.arange(w)[None, :])  # (n, w)
        x = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
                   rows[:, None, :, None], cols[:, None, None, :]]
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x
