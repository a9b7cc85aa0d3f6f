"""Photos held as uint8 that read as normalized float32, one batch at a time.

10,000 photos at 224 px RGB are 1.5 GB as uint8 and 6 GB as float32 (issue #37), so the data stage keeps the
pixels as they were decoded and every reader gets ``((p / pixel_scale) - mean) / std`` in float32 for just the rows it
indexes.  Anything that asks for the whole array (``np.asarray``, an attribute such as ``.reshape``) gets the whole
normalized array: a reader can cost memory, never read un-normalized pixels.
"""

from __future__ import annotations

import numpy as np


def normalize(raw: np.ndarray, pixel_scale: float, mean: float, std: float) -> np.ndarray:
    """The data stage's float path, op for op: uint8 -> float32, / scale, - mean, / std (so the numbers are identical)."""
    scaled = raw.astype(np.float32) / np.float32(pixel_scale)
    return ((scaled - mean) / std).astype(np.float32)


class Pixels:
    """uint8 images (N, C, H, W) plus their normalization; ``x[idx]`` is the normalized float32 of those rows."""

    dtype = np.dtype(np.float32)  # what readers see: the models' input dtype

    def __init__(self, raw: np.ndarray, pixel_scale: float, mean: float, std: float):
        if raw.dtype != np.uint8:
            raise TypeError(f"Pixels holds uint8 images, got {raw.dtype}")
        self.raw, self.pixel_scale, self.mean, self.std = raw, float(pixel_scale), float(mean), float(std)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.raw.shape

    @property
    def ndim(self) -> int:
        return self.raw.ndim

    @property
    def nbytes(self) -> int:
        return self.raw.nbytes

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, idx) -> np.ndarray:
        if hasattr(idx, "numpy"):  # a torch index tensor (the training loop's batch order)
            idx = idx.numpy()
        return normalize(self.raw[idx], self.pixel_scale, self.mean, self.std)

    def rows(self, idx) -> "Pixels":
        """A subset that stays uint8 (a split, a repeated training set)."""
        return Pixels(self.raw[idx], self.pixel_scale, self.mean, self.std)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        x = self[:]
        return x if dtype is None else x.astype(dtype)

    def __getattr__(self, name: str):
        # Any other ndarray attribute (.reshape, .transpose, .min, ...) works on the normalized array: correct first.
        if name.startswith("__") or name in ("raw", "pixel_scale", "mean", "std"):
            raise AttributeError(name)
        return getattr(np.asarray(self), name)


def take_rows(x, idx):
    """``x[idx]`` that keeps uint8 ``Pixels`` as uint8 (ndarray inputs are indexed as usual)."""
    return x.rows(idx) if isinstance(x, Pixels) else x[idx]


def pixel_stats(raw: np.ndarray, idx: np.ndarray, pixel_scale: float, chunk: int | None = None) -> tuple[float, float]:
    """Mean and std of ``raw[idx] / pixel_scale`` without a float copy of the split: exact integer sums in chunks
    of ~4 M pixels (squares as uint16, 2 bytes a pixel: an int64 copy of 512 photos at 224 px would be 600 MB)."""
    chunk = chunk or max(1, (1 << 22) // max(1, int(np.prod(raw.shape[1:]))))
    total, squares, count = 0, 0, 0
    for start in range(0, len(idx), chunk):
        part = raw[idx[start : start + chunk]]
        total += int(part.sum(dtype=np.uint64))
        squares += int(np.square(part, dtype=np.uint16).sum(dtype=np.uint64))
        count += part.size
    var = (squares * count - total * total) / (count * count)  # Python integers: no cancellation
    return float(total / count / pixel_scale), float(var ** 0.5 / pixel_scale)
