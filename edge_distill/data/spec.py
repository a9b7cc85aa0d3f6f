"""What a dataset is (``DataSpec``) and the arrays a build uses (``Splits``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

SPLITS = ("train", "val", "test", "calib")
# The label of a sample whose class is unknown (the --unlabelled transfer set): the hard-label loss skips it.
UNLABELLED = -1


@dataclass(frozen=True)
class DataSpec:
    """Everything downstream needs to know about a dataset, including how to reproduce its input."""

    name: str
    task: str  # "vision" or "text"
    input_shape: tuple[int, ...]  # (C, H, W) images as the torch models see them; (seq_len,) token ids for text
    num_classes: int
    class_names: tuple[str, ...]
    # A raw pixel p becomes ((p / pixel_scale) - mean) / std; the bundle and the device agent need this.
    pixel_scale: float
    mean: float
    std: float
    source: str  # where the data came from, for the report
    # Text: token ids 0..vocab_size-1 of the data stage's tokenizer ([PAD] = 0, [UNK] = 1); pixel_scale,
    # mean and std are then 1, 0, 1 (ids are not normalized).
    vocab_size: int = 0
    # Images read from files (a user's folder, --test-data): how export/imageprep.py resized them to
    # input_shape (its policy name, e.g. "cover-center-crop"); "" when the images came as arrays of that size.
    # The bundle's infer.py prepares image files the same way.
    resize: str = ""
    skipped_images: tuple[str, ...] = ()  # undecodable files left out by --skip-bad-images

    @property
    def background(self) -> float:
        """A blank (zero) pixel after normalization: what shifted images are padded with."""
        return float(-self.mean / self.std)

    def __post_init__(self) -> None:
        if self.num_classes < 2 or len(self.class_names) != self.num_classes:
            raise DataError(
                f"Dataset {self.name!r} has {self.num_classes} classes and {len(self.class_names)} class names.",
                "A classification dataset needs at least 2 classes and one name per class.",
            )
        if self.task == "text" and (len(self.input_shape) != 1 or self.vocab_size < 3):
            raise DataError(
                f"Text dataset {self.name!r} has input shape {self.input_shape} and vocabulary {self.vocab_size}.",
                "A text dataset's input is (seq_len,) token ids from a vocabulary of at least [PAD], [UNK] and one word.",
            )
        if self.std <= 0:
            raise DataError(f"Dataset {self.name!r} has zero pixel variance.", "Check that the images are not all blank.")


@dataclass(frozen=True)
class Splits:
    """Inputs and int64 labels for each split: normalized float32 NCHW images, or int32 token ids (N, seq_len)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_calib: np.ndarray  # a class-balanced subset of the training split, for INT8 calibration
    y_calib: np.ndarray

    def save(self, path: Path) -> None:
        np.savez(path, **{f"{k}_{s}": getattr(self, f"{k}_{s}") for s in SPLITS for k in ("x", "y")})

    @classmethod
    def load(cls, path: Path) -> "Splits":
        with np.load(path) as npz:
            return cls(**{f"{k}_{s}": npz[f"{k}_{s}"] for s in SPLITS for k in ("x", "y")})
