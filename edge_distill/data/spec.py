"""What a dataset is (``DataSpec``) and the arrays a build uses (``Splits``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

SPLITS = ("train", "val", "test", "calib")
# The label of a sample whose class is unknown (the --unlabelled transfer set): the hard-label loss skips it.
UNLABELLED = -1
# The split file's (pixel_scale, mean, std) for its uint8 images (data/pixels.py).
PIXEL_NORM = "pixel_norm"


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
    """Inputs and int64 labels for each split: NCHW images that read as normalized float32 (``Pixels``: uint8 photos,
    normalized per batch; or float32 arrays), or int32 token ids (N, seq_len)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_calib: np.ndarray  # a class-balanced subset of the training split, for INT8 calibration
    y_calib: np.ndarray

    def save(self, path: Path) -> None:
        from .pixels import Pixels

        arrays = {f"{k}_{s}": getattr(self, f"{k}_{s}") for s in SPLITS for k in ("x", "y")}
        norm = {tuple(x.__dict__[a] for a in ("pixel_scale", "mean", "std")) for x in arrays.values() if isinstance(x, Pixels)}
        if len(norm) > 1:
            raise DataError(f"Splits normalized differently ({sorted(norm)}).", "Every split uses the training split's statistics.")
        # uint8 photos are stored as they are, with the normalization every reader applies (Splits.load).
        arrays = {k: x.raw if isinstance(x, Pixels) else x for k, x in arrays.items()}
        np.savez(path, **arrays, **({PIXEL_NORM: np.array(norm.pop(), np.float64)} if norm else {}))

    @classmethod
    def load(cls, path: Path) -> "Splits":
        from .pixels import Pixels

        with np.load(path) as npz:
            norm = tuple(float(v) for v in npz[PIXEL_NORM]) if PIXEL_NORM in npz.files else None
            # uint8 photos are mapped from the file, not read: a stage pays in memory only for the splits it touches
            # (verification reads the test split, not 1 GB of training photos), and every stage shares the page cache.
            arrays = {k: (mapped_member(path, k) if norm is not None and k.startswith("x_") else None) for k in
                      (f"{k}_{s}" for s in SPLITS for k in ("x", "y"))}
            arrays = {k: npz[k] if x is None else x for k, x in arrays.items()}
        if norm is not None:  # a uint8 split file: never hand its raw pixels to a model
            arrays = {k: Pixels(x, *norm) if k.startswith("x_") and x.dtype == np.uint8 else x for k, x in arrays.items()}
        elif any(arrays[f"x_{s}"].dtype == np.uint8 for s in SPLITS):
            raise DataError(f"Split file {path} holds uint8 images without their normalization.", "Rebuild with --force.")
        return cls(**arrays)


def mapped_member(path: Path, key: str) -> np.ndarray | None:
    """``key`` of an uncompressed .npz (np.savez's) as a read-only memory map of the file; None when it cannot be mapped
    (compressed, or not a plain C-order array), and the caller reads it instead."""
    import struct
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(f"{key}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with open(path, "rb") as fh:
            fh.seek(info.header_offset)
            local = fh.read(30)
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            fh.seek(info.header_offset + 30 + name_len + extra_len)  # the member's bytes: an .npy file
            version = np.lib.format.read_magic(fh)
            readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in readers:
                return None
            shape, fortran, dtype = readers[version](fh)
            offset = fh.tell()
        if fortran or dtype.hasobject:
            return None
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    except (KeyError, OSError, ValueError, struct.error):
        return None
