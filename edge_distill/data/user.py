"""A user's own image-classification data, given to ``--data`` as a path instead of a built-in name.

Two layouts are accepted:
- ``data.npz`` with ``x`` (images) and ``y`` (integer labels 0..K-1), optionally ``class_names``.
  ``x`` may be (N, H, W), (N, C, H, W) or (N, H, W, C) with C = 1 or 3; uint8 (0..255) or float.
- a folder with one sub-folder per class (sorted names = class order) of 8-bit PNG / PGM / PPM images,
  all the same size and channel count.

Every check happens here, before anything is trained, and fails with a ``DataError`` that names the
offending file, shape or label and says what is accepted.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .builtin import DATASETS, RawDataset
from .images import IMAGE_SUFFIXES, read_image

# Each class is split 70/10/20 into train/val/test; below this many samples a class can leave a split empty.
MIN_PER_CLASS = 10
_LAYOUT_HINT = (
    "Give --data a .npz file with x (N,H,W | N,C,H,W | N,H,W,C; C = 1 or 3) and y (labels 0..K-1), "
    "or a folder with one sub-folder of PNG/PGM/PPM images per class."
)


def is_user_data(name: str) -> bool:
    """A path, not a built-in dataset: ends in .npz, contains a slash, or exists on disk (built-in names win)."""
    return name not in DATASETS and (name.endswith(".npz") or "/" in name or Path(name).exists())


def fingerprint(name: str) -> str:
    """A hash of the data's content, so an edited file or folder invalidates the cached data stage."""
    path = Path(name)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    for f in files:
        digest.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16] if files else f"missing:{name}"


def load_user_data(name: str) -> RawDataset:
    path = Path(name)
    if not path.exists():
        raise DataError(f"Dataset path {path} does not exist.", _LAYOUT_HINT + " Built-in names work too (e.g. digits).")
    raw = load_npz(path) if path.is_file() else load_folder(path)
    check_class_sizes(raw.labels, raw.class_names, str(path))
    return raw


def load_npz(path: Path) -> RawDataset:
    if path.suffix != ".npz":
        raise DataError(f"Dataset file {path} is not a .npz file.", _LAYOUT_HINT)
    try:
        with np.load(path, allow_pickle=False) as npz:  # never unpickle: object arrays could run code
            keys = set(npz.files)
            if not {"x", "y"} <= keys:
                raise DataError(f"Dataset file {path} has arrays {sorted(keys)}; it needs 'x' and 'y'.", _LAYOUT_HINT)
            x, y = npz["x"], npz["y"]
            names = tuple(str(n) for n in npz["class_names"]) if "class_names" in keys else None
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"Cannot read dataset file {path}: {exc}.", "The file is corrupt, or holds object arrays (refused: they need pickle). " + _LAYOUT_HINT) from None
    if x.dtype.kind not in "uif" or x.dtype == np.bool_:
        raise DataError(f"Dataset {path}: x has dtype {x.dtype}; expected numbers.", "Store images as uint8 (0..255) or float.")
    if y.ndim != 1 or y.dtype.kind not in "ui" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        raise DataError(f"Dataset {path}: y has shape {y.shape} and dtype {y.dtype}; expected one integer label per image.",
                        "Store y as a 1-D integer array of class indices 0..K-1.")
    if len(x) == 0:
        raise DataError(f"Dataset {path} is empty (x has shape {x.shape}).", "Give at least a few dozen images per class.")
    if len(x) != len(y):
        raise DataError(f"Dataset {path} has {len(x)} images but {len(y)} labels.", "Give exactly one label per image.")
    images = to_nchw(x, str(path))
    if not np.all(np.isfinite(images)):
        raise DataError(f"Dataset {path}: x contains NaN or infinite values.", "Clean the images before building.")
    labels = y.astype(np.int64)
    if names is None:
        names = tuple(str(i) for i in range(max(int(labels.max()) + 1, 2)))
    check_labels(labels, len(names), str(path))
    pixel_scale = 255.0 if x.dtype == np.uint8 else (1.0 if float(images.max()) <= 1.0 else float(max(images.max(), 1.0)))
    return RawDataset(images.astype(np.float32), labels, names, pixel_scale, f"user file {path} ({len(labels)} images)")


def to_nchw(x: np.ndarray, origin: str) -> np.ndarray:
    """Images as (N, C, H, W); the channel axis is found where a 1 or 3 sits (first after N, else last)."""
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim == 4:
        if x.shape[1] in (1, 3):
            return x
        if x.shape[3] in (1, 3):
            return x.transpose(0, 3, 1, 2)
    raise DataError(
        f"Dataset {origin}: images have shape {x.shape}; expected (N, H, W), (N, C, H, W) or (N, H, W, C) with C = 1 (grey) or 3 (RGB).",
        "Reshape x accordingly (one image per row).",
    )


def check_labels(labels: np.ndarray, num_classes: int, origin: str) -> None:
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise DataError(
            f"Dataset {origin} has {bad.size} label(s) out of range (e.g. {int(bad[0])}); with {num_classes} classes they must be 0..{num_classes - 1}.",
            "Labels are class indices starting at 0; if class_names is given, one name per class.",
        )


def check_class_sizes(labels: np.ndarray, names: tuple[str, ...], origin: str) -> None:
    counts = np.bincount(labels, minlength=len(names))
    small = [(names[i], int(c)) for i, c in enumerate(counts) if c < MIN_PER_CLASS]
    if len(names) < 2:
        raise DataError(f"Dataset {origin} has {len(names)} class; classification needs at least 2.", _LAYOUT_HINT)
    absent = [names[i] for i, c in enumerate(counts) if c == 0]
    if absent:
        raise DataError(
            f"Dataset {origin} has no images of class(es) {', '.join(map(repr, absent[:5]))} (labels seen: {sorted(set(labels.tolist()))[:12]}).",
            "Labels must be 0..K-1 with every class present; renumber them (or give class_names that match).",
        )
    if small:
        listing = ", ".join(f"{n!r}: {c}" for n, c in small[:5])
        raise DataError(
            f"Dataset {origin}: {len(small)} class(es) have fewer than {MIN_PER_CLASS} images ({listing}).",
            "Every class is split 70/10/20 into train/val/test, so each needs at least "
            f"{MIN_PER_CLASS} images; add images or drop the class.",
        )


def load_folder(root: Path) -> RawDataset:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"Dataset folder {root} has no class sub-folders.", _LAYOUT_HINT)
    images, labels, first = [], [], None
    for label, folder in enumerate(classes):
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        for f in files:
            img = read_image(f)
            if first is None:
                first = (f, img.shape)
            elif img.shape != first[1]:
                what = "channel count" if img.shape[:2] == first[1][:2] else "size"
                raise DataError(
                    f"Dataset folder {root}: image {what} differs: {f} is {_describe(img.shape)} but {first[0]} is {_describe(first[1])}.",
                    "All images must have the same height, width and channels (grey or RGB); resize or convert them first.",
                )
            images.append(img)
            labels.append(label)
    if not images:
        raise DataError(f"Dataset folder {root} holds no images (looked for {', '.join(IMAGE_SUFFIXES)} in {len(classes)} class folders).", _LAYOUT_HINT)
    x = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32)
    names = tuple(c.name for c in classes)
    return RawDataset(x, np.array(labels, np.int64), names, 255.0, f"user folder {root} ({len(images)} images, {len(names)} classes)")


def _describe(shape: tuple[int, ...]) -> str:
    h, w, c = shape
    return f"{w}x{h} {'grey' if c == 1 else 'RGB'}"
