"""A user's own image-classification data, given to ``--data`` as a path instead of a built-in name.

Two layouts are accepted:
- ``data.npz`` with ``x`` (images) and ``y`` (integer labels 0..K-1), optionally ``class_names``.
  ``x`` may be (N, H, W), (N, C, H, W) or (N, H, W, C) with C = 1 or 3; uint8 (0..255) or float.
- a folder with one sub-folder per class (sorted names = class order) of image files (JPEG, PNG, WebP,
  BMP, PGM/PPM) of any size and mode, decoded and resized by ``edge_distill.export.imageprep`` — the
  same module the Raspberry Pi bundle's ``infer.py`` uses, so build and device prepare a photo alike.
  Size: ``--image-size`` or the folder's median (at most 64 px on the long side); channels: ``--channels``
  or 3 when any image is colour, else 1.

A separate test set (``--test-data``, either layout) must name the same classes; its images are brought to
the training data's size, channels and pixel scale.

Every check happens here, before anything is trained, and fails with a ``DataError`` that names the
offending file, shape or label and says what is accepted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from ..console import get_console
from ..errors import DataError
from ..export import imageprep
from ..export.imageprep import IMAGE_SUFFIXES, ImageError
from .builtin import DATASETS, RawDataset

# Each class is split 70/10/20 into train/val/test; below this many samples a class can leave a split empty.
MIN_PER_CLASS = 10
_LAYOUT_HINT = (
    "Give --data a .npz file with x (N,H,W | N,C,H,W | N,H,W,C; C = 1 or 3) and y (labels 0..K-1), "
    "or a folder with one sub-folder of images (JPEG, PNG, WebP, BMP, PGM/PPM) per class."
)
_SKIP_HINT = "Re-save or delete the file, or pass --skip-bad-images to leave undecodable files out (they are counted and listed in the report)."


def is_user_data(name: str) -> bool:
    """A path, not a built-in dataset: ends in .npz, contains a slash, or exists on disk (built-in names win)."""
    return name not in DATASETS and (name.endswith(".npz") or "/" in name or Path(name).exists())


def fingerprint(name: str) -> str:
    """A hash of the data's content, so an edited file or folder invalidates the cached data stage."""
    path = Path(name)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else files_under(path) if path.is_dir() else []
    for f in files:
        digest.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16] if files else f"missing:{name}"


def files_under(root: Path) -> list[Path]:
    """Every file in ``root``'s tree, sorted.  Symlinked folders are followed (a linked camera folder is part of the
    data; ``Path.rglob`` would skip it without a word), each real folder entered once, so a link loop ends."""
    seen, files = set(), []
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        files += [Path(folder) / n for n in names]
    return sorted(f for f in files if f.is_file())


def image_files(files: list[Path], root: Path, origin: str, warn: bool = True) -> list[Path]:
    """The image files among ``files`` (under ``root``).  Hidden files (.DS_Store, ._IMG_1.jpg) are left out quietly;
    any other file the build does not read (a .gif, a .tif, notes) is counted in a warning: it is not in the data."""
    visible = [f for f in files if not any(part.startswith(".") for part in f.relative_to(root).parts)]
    images = [f for f in visible if f.suffix.lower() in IMAGE_SUFFIXES]
    other = Counter(f.suffix.lower() or "no suffix" for f in visible if f.suffix.lower() not in IMAGE_SUFFIXES)
    if other and warn:
        kinds = ", ".join(f"{n} {suffix}" for suffix, n in other.most_common(6)) + (", ..." if len(other) > 6 else "")
        get_console().warn(f"{origin}: left out {sum(other.values())} file(s) that are not images this build reads ({kinds}); "
                           f"it reads {', '.join(IMAGE_SUFFIXES)}. Convert them (e.g. to PNG) to include them.")
    return images


def warn_skipped(root: Path, skipped: list[Path], origin: str) -> None:
    """--skip-bad-images: how many undecodable files were left out of ``root``, and the first few by name."""
    if skipped:
        listing = ", ".join(str(f.relative_to(root)) for f in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        get_console().warn(f"Skipped {len(skipped)} undecodable image file(s) in {origin} (--skip-bad-images): {listing}")


def load_user_data(name: str, size: tuple[int, int] | None = None, channels: int | None = None, skip_bad: bool = False) -> RawDataset:
    """``size`` (height, width) and ``channels`` (1 or 3) choose how image files are prepared; None: from the folder."""
    path = Path(name)
    if not path.exists():
        raise DataError(f"Dataset path {path} does not exist.", _LAYOUT_HINT + " Built-in names work too (e.g. digits).")
    if path.is_file():
        check_array_options(str(path), size, channels)
        raw = load_npz(path)
    else:
        raw = load_folder(path, size, channels, skip_bad)
    check_class_sizes(raw.labels, raw.class_names, str(path))
    return raw


def check_array_options(origin: str, size: tuple[int, int] | None, channels: int | None) -> None:
    """--image-size / --channels prepare image files; arrays are used at their own size."""
    if size is not None or channels is not None:
        raise DataError(f"--image-size and --channels prepare image files, but {origin} holds arrays, used as they are.",
                        "Leave them out, or resize the arrays before saving them, or give a folder of image files.")


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
    images = to_nchw(x, f"Dataset {path}")
    if not np.all(np.isfinite(images)):
        raise DataError(f"Dataset {path}: x contains NaN or infinite values.", "Clean the images before building.")
    labels = y.astype(np.int64)
    if names is None:
        names = tuple(str(i) for i in range(max(int(labels.max()) + 1, 2)))
    check_labels(labels, len(names), str(path))
    pixel_scale = 255.0 if x.dtype == np.uint8 else (1.0 if float(images.max()) <= 1.0 else float(max(images.max(), 1.0)))
    return RawDataset(images.astype(np.float32), labels, names, pixel_scale, f"user file {path} ({len(labels)} images)")


def to_nchw(x: np.ndarray, origin: str) -> np.ndarray:
    """Images as (N, C, H, W); the channel axis is found where a 1 or 3 sits (first after N, else last).  ``origin``
    begins the error message ("Dataset data.npz", "--unlabelled pool.npz")."""
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim == 4:
        if x.shape[1] in (1, 3):
            return x
        if x.shape[3] in (1, 3):
            return x.transpose(0, 3, 1, 2)
    flat = ""
    if x.ndim == 2 and round(x.shape[1] ** 0.5) ** 2 == x.shape[1]:  # e.g. scikit-learn's digits.data: (N, 64)
        side = round(x.shape[1] ** 0.5)
        flat = f" Flattened square grey images are x.reshape(-1, {side}, {side})."
    raise DataError(
        f"{origin}: images have shape {x.shape}; expected (N, H, W), (N, C, H, W) or (N, H, W, C) with C = 1 (grey) or 3 (RGB).",
        "Reshape x accordingly (one image per row)." + flat,
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
            "Every class is split 70/10/20 into train/val/test (90/10 train/val with --test-data), so each needs at least "
            f"{MIN_PER_CLASS} images; add images or drop the class.",
        )


def load_folder(root: Path, size: tuple[int, int] | None = None, channels: int | None = None, skip_bad: bool = False,
                class_names: tuple[str, ...] | None = None) -> RawDataset:
    """Every image file of every class sub-folder, prepared by imageprep to one size and channel count.

    ``class_names``: the classes a test folder must have (its sub-folders are matched by name).
    """
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"Dataset folder {root} has no class sub-folders.", _LAYOUT_HINT)
    names = tuple(c.name for c in classes)
    if class_names is not None:
        check_same_classes(str(root), names, class_names)
        classes = [root / n for n in class_names]  # the training data's class order
        names = class_names
    listed = [(label, f) for label, folder in enumerate(classes) for f in sorted(folder.iterdir()) if f.is_file()]
    readable = set(image_files([f for _, f in listed], root, f"Dataset folder {root}"))
    files = [(label, f) for label, f in listed if f in readable]
    if not files:
        raise DataError(f"Dataset folder {root} holds no images (looked for {', '.join(IMAGE_SUFFIXES)} in {len(classes)} class folders).", _LAYOUT_HINT)
    skipped: list[Path] = []

    def bad(f: Path, exc: ImageError) -> None:
        if not skip_bad:
            raise DataError(f"Dataset folder {root}: {exc}.", _SKIP_HINT)
        skipped.append(f)

    sizes: list[tuple[int, int]] = []
    colour = False
    if size is None or channels is None:  # headers only: the default size and channel count
        for _, f in files:
            try:
                h, w, c = imageprep.probe(f)
            except ImageError as exc:
                bad(f, exc)
                continue
            sizes.append((h, w))
            colour |= c
        if not sizes:
            raise DataError(f"Dataset folder {root}: none of its {len(files)} image files can be decoded.", _SKIP_HINT)
    size = size or imageprep.default_size(sizes)
    channels = channels or (3 if colour else 1)
    x, labels = decode_images([(label, f) for label, f in files if f not in skipped], size, channels, bad, str(root))
    if not len(x):
        raise DataError(f"Dataset folder {root}: none of its {len(files)} image files can be decoded.", _SKIP_HINT)
    warn_skipped(root, skipped, str(root))
    spread = ""
    if sizes:
        lo, hi = min(sizes, key=lambda s: s[0] * s[1]), max(sizes, key=lambda s: s[0] * s[1])
        spread = f"from {imageprep.format_size(lo)}" + (f"..{imageprep.format_size(hi)}" if hi != lo else "") + " "
    source = (f"user folder {root} ({len(x)} images, {len(names)} classes, {spread}to {imageprep.format_size(size)} "
              f"{'grey' if channels == 1 else 'RGB'}, {imageprep.RESIZE_POLICY}"
              + (f"; {len(skipped)} undecodable file(s) skipped" if skipped else "") + ")")
    return RawDataset(x, np.array(labels, np.int64), names, 255.0, source, resize=imageprep.RESIZE_POLICY,
                      skipped=tuple(str(f) for f in skipped))


def decode_images(files: list[tuple[int, Path]], size: tuple[int, int], channels: int, bad, origin: str) -> tuple[np.ndarray, list[int]]:
    """The files decoded in parallel into one uint8 (N, C, H, W) array (photos stay bytes: 1/4 of float32), and their labels.

    Threads suffice: Pillow releases the GIL while it decodes and resizes.  Each image is written into its row as it
    arrives, so the list of decoded images never exists beside the array; rows of files ``bad`` skips are dropped.
    """
    from concurrent.futures import ThreadPoolExecutor

    h, w = size
    out = np.empty((len(files), channels, h, w), np.uint8)
    ok = np.zeros(len(files), bool)

    def decode(i: int) -> None:
        try:
            out[i] = imageprep.load_image(files[i][1], size, channels).transpose(2, 0, 1)
            ok[i] = True
        except ImageError:
            pass  # reported below, in file order

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i in get_console().progress(pool.map(decode, range(len(files))), len(files), f"decoding {origin}"):
            pass
    for i in np.flatnonzero(~ok):  # in file order, so the error (or the skipped list) names the first bad file
        try:  # decoded again here: bad files are few, and the error comes from the same call as before
            imageprep.load_image(files[i][1], size, channels)
        except ImageError as exc:
            bad(files[i][1], exc)
    labels = [label for (label, _), good in zip(files, ok) if good]
    return (out if ok.all() else out[ok]), labels


def check_same_classes(origin: str, found: tuple[str, ...], expected: tuple[str, ...]) -> None:
    extra = [n for n in found if n not in expected]
    missing = [n for n in expected if n not in found]
    if extra or missing:
        parts = ([f"classes the training data lacks: {', '.join(map(repr, extra[:8]))}"] if extra else []) + \
                ([f"no {', '.join(map(repr, missing[:8]))} (which the training data has)"] if missing else [])
        raise DataError(f"Test data {origin} does not have the training data's classes: it has {'; and '.join(parts)}.",
                        f"Give the test data exactly the training classes ({', '.join(map(repr, expected[:12]))}"
                        f"{', ...' if len(expected) > 12 else ''}), named the same way.")


def load_test_data(name: str, train: RawDataset, skip_bad: bool = False) -> RawDataset:
    """A separate test set, brought to the training data's classes, (C, H, W) and pixel scale.

    Returns a RawDataset whose ``images``/``labels`` are the test images; prepare() uses them as the test split.
    """
    path = Path(name)
    if not path.exists():
        raise DataError(f"Test data path {path} does not exist.", "Give --test-data an image folder (one sub-folder per class) or a .npz file.")
    c, h, w = (int(d) for d in train.images.shape[1:])
    if path.is_dir():
        test = load_folder(path, (h, w), c, skip_bad, class_names=train.class_names)
        # Files are 0..255; a model trained on another raw scale (digits: 0..16) sees them as the device does.
        images = test.images if train.pixel_scale == 255.0 else imageprep.to_raw(test.images, train.pixel_scale)  # 255: uint8 as is
        return dataclasses.replace(test, images=images, pixel_scale=train.pixel_scale,
                                   source=test.source.replace("user folder", "test folder", 1))
    test = load_npz(path)
    labels = test.labels
    with np.load(path, allow_pickle=False) as npz:
        named = "class_names" in npz.files
    if named:
        check_same_classes(str(path), test.class_names, train.class_names)
        labels = np.array([train.class_names.index(test.class_names[i]) for i in labels], np.int64)
    else:
        check_labels(labels, len(train.class_names), str(path))
    if tuple(test.images.shape[1:]) != (c, h, w):
        raise DataError(f"Test data {path} has images of shape {tuple(test.images.shape[1:])} (C, H, W); the training data's are {(c, h, w)}.",
                        "Give test images of the training data's size and channel count, or a folder of image files (resized for you).")
    images = test.images
    if test.pixel_scale != train.pixel_scale:
        images = (images * np.float32(train.pixel_scale / test.pixel_scale)).astype(np.float32)
    return dataclasses.replace(test, images=images, labels=labels, class_names=train.class_names, pixel_scale=train.pixel_scale,
                               source=f"test file {path} ({len(labels)} images)")
