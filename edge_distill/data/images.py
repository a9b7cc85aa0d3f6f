"""Decode image bytes on the host with Pillow (tests read PNG screenshots with it).

A dataset folder's files are read by ``edge_distill.export.imageprep``, the module the Raspberry Pi bundle
ships, so that the build and the device prepare images the same way; this is only the plain decoder.
"""

from __future__ import annotations

import io

import numpy as np


def decode_png(data: bytes) -> np.ndarray:
    """Image bytes (PNG or any format Pillow reads) as uint8 (H, W, C), every channel kept (alpha too)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        pixels = np.asarray(im)
    if pixels.dtype != np.uint8:
        raise ValueError(f"expected 8-bit samples, got {pixels.dtype}")
    return pixels[:, :, None] if pixels.ndim == 2 else pixels
