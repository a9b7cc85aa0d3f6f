"""Built-in datasets: real data that ships with packages, so builds run offline."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError
from ..registry import Registry


@dataclass(frozen=True)
class RawDataset:
    """Raw images (N, C, H, W) with values in [0, pixel_scale] and integer labels, as the source gives them."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    pixel_scale: float
    source: str
    # The dataset's own held-out test set, when it has one: used as the test split as is, never for training.
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    # Image files (a user's folder): how they were brought to one size (export/imageprep.py's policy name),
    # and the undecodable files --skip-bad-images left out.  Arrays (npz, built-in sets) are used as given.
    resize: str = ""
    skipped: tuple[str, ...] = ()


DATASETS: Registry[Callable[[], RawDataset]] = Registry("dataset")


@DATASETS.register("digits")
def load_digits() -> RawDataset:
    """scikit-learn's copy of the UCI handwritten digits: 1,797 8x8 images, pixel values 0..16."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = bunch.images.astype(np.float32)[:, None, :, :]
    names = tuple(str(n) for n in bunch.target_names)
    return RawDataset(images, bunch.target.astype(np.int64), names, 16.0, "sklearn.datasets.load_digits (UCI optdigits test set)")


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@DATASETS.register("fashion-mnist")
def load_fashion_mnist() -> RawDataset:
    """Zalando's Fashion-MNIST: 60,000 training and the official 10,000 test images, 28x28 grey, 10 classes.

    Read from ``$EDGE_DISTILL_FASHION_MNIST`` (a directory with the four IDX files, gzipped or not), else
    from Debian's ``dataset-fashion-mnist`` package.
    """
    folder = Path(os.environ.get("EDGE_DISTILL_FASHION_MNIST", FASHION_MNIST_DIR))
    arrays = {key: read_idx(find_idx(folder, stem)) for key, stem in FASHION_MNIST_FILES.items()}
    return RawDataset(
        images=arrays["train_images"][:, None],  # uint8: the data stage keeps photos as bytes
        labels=arrays["train_labels"].astype(np.int64),
        class_names=FASHION_MNIST_CLASSES,
        pixel_scale=255.0,
        source=f"Fashion-MNIST IDX files in {folder} (official 60k train / 10k test)",
        test_images=arrays["test_images"][:, None],
        test_labels=arrays["test_labels"].astype(np.int64),
    )


def find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(
        f"Fashion-MNIST file {stem}[.gz] not found in {folder}.",
        "Install Debian's package (apt-get install dataset-fashion-mnist), or set EDGE_DISTILL_FASHION_MNIST to a "
        "directory holding train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
        "t10k-labels-idx1-ubyte (gzipped or not).",
    )


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (the MNIST format): big-endian magic (0, 0, dtype code, ndim), dims, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"Cannot read IDX file {path}: {exc}.", "The file may be truncated; reinstall or re-download it.") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number).", "Point at the original MNIST-format files.")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} holds {body.size} values but its header promises {dims}.", "The file is truncated or corrupted.")
    return body.reshape(dims)
