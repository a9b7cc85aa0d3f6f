"""Built-in datasets: real data that ships with packages, so the demo runs offline."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..registry import Registry

# A loader returns raw images (N, C, H, W) in [0, pixel_scale], int labels, class names, pixel_scale, source.
RawData = tuple[np.ndarray, np.ndarray, tuple[str, ...], float, str]
DATASETS: Registry[Callable[[], RawData]] = Registry("dataset")


@DATASETS.register("digits")
def load_digits() -> RawData:
    """scikit-learn's copy of the UCI handwritten digits: 1,797 8x8 images, pixel values 0..16."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = bunch.images.astype(np.float32)[:, None, :, :]
    names = tuple(str(n) for n in bunch.target_names)
    return images, bunch.target.astype(np.int64), names, 16.0, "sklearn.datasets.load_digits (UCI optdigits test set)"
