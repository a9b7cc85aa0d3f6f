"""``--unlabelled PATH``: a transfer set the teacher labels, prepared exactly like the labelled training split.

Images: a .npz with ``x`` (any layout ``--data`` accepts; optionally ``y``), or a folder of image files, flat or
any tree (sub-folder names are ignored: these images have no trusted class).  They are brought to the labelled
data's size, channels and pixel scale and normalized with the labelled training split's statistics (the
``DataSpec``), as ``--test-data`` is.  Text: a .csv / .jsonl with the text field; the data stage's tokenizer
encodes it (``tasks/text.py``).

Labels in the file (``y``, the label field) are optional and never train anything: they only say how often the
teacher agrees with them.  A sample without one is ``UNLABELLED`` (-1), as is every sample on the training side.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..console import get_console
from ..errors import DataError
from ..export import imageprep
from ..export.imageprep import IMAGE_SUFFIXES, ImageError
from .spec import UNLABELLED, DataSpec
from .user import files_under, image_files, to_nchw, warn_skipped

_IMAGE_HINT = ("Give --unlabelled a .npz with x (images like --data's: N,H,W | N,C,H,W | N,H,W,C; optionally y, labels "
               "0..K-1 or -1, used only to report the teacher's agreement) or a folder of image files (any tree; names ignored).")


@dataclass(frozen=True)
class UnlabelledImages:
    x: np.ndarray  # float32 (N, C, H, W), normalized like the training split
    y: np.ndarray  # int64 labels where the file gives them, UNLABELLED elsewhere
    source: str


def load_unlabelled_images(name: str, spec: DataSpec, skip_bad: bool = False) -> UnlabelledImages:
    path = Path(name)
    if not path.exists():
        raise DataError(f"--unlabelled {path} does not exist.", _IMAGE_HINT)
    raw, y, source = _read_npz(path, spec) if path.is_file() else _read_folder(path, spec, skip_bad)
    return UnlabelledImages(_normalize(raw, spec), y, source)


def check_unlabelled_images(name: str, spec: DataSpec) -> None:
    """What ``load_unlabelled_images`` refuses, found before the teacher trains: a .npz is read whole (its shape,
    dtype, labels and pixel scale), a folder only listed (decoding waits for the transfer stage)."""
    path = Path(name)
    if not path.exists():
        raise DataError(f"--unlabelled {path} does not exist.", _IMAGE_HINT)
    if path.is_file():
        _read_npz(path, spec)
    else:
        _folder_images(path, warn=False)


def _normalize(raw: np.ndarray, spec: DataSpec) -> np.ndarray:
    """Raw pixels (0..spec.pixel_scale) → the training split's units, as the data stage computes them."""
    return ((raw / np.float32(spec.pixel_scale) - np.float32(spec.mean)) / np.float32(spec.std)).astype(np.float32)


def _read_npz(path: Path, spec: DataSpec) -> tuple[np.ndarray, np.ndarray, str]:
    if path.suffix != ".npz":
        raise DataError(f"--unlabelled {path} is neither a .npz file nor a folder.", _IMAGE_HINT)
    try:
        with np.load(path, allow_pickle=False) as npz:  # never unpickle: object arrays could run code
            if "x" not in npz.files:
                raise DataError(f"--unlabelled {path} has arrays {sorted(npz.files)}; it needs 'x'.", _IMAGE_HINT)
            x, y = npz["x"], (npz["y"] if "y" in npz.files else None)
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"Cannot read --unlabelled {path}: {exc}.", "The file is corrupt, or holds object arrays (refused: they need pickle). " + _IMAGE_HINT) from None
    if len(x) == 0:
        raise DataError(f"--unlabelled {path} is empty (x has shape {x.shape}).", "Give it the images the teacher should label.")
    if x.dtype.kind not in "uif" or x.dtype == np.bool_:
        raise DataError(f"--unlabelled {path}: x has dtype {x.dtype}; expected numbers.", "Store images as uint8 (0..255) or float.")
    images = to_nchw(x, f"--unlabelled {path}")
    if tuple(images.shape[1:]) != tuple(spec.input_shape):
        raise DataError(f"--unlabelled {path} has images of shape {tuple(images.shape[1:])} (C, H, W); the labelled data's are "
                        f"{tuple(spec.input_shape)}.", "Give arrays of the labelled data's size and channel count, or a folder of "
                        "image files (they are resized and converted for you).")
    if not np.all(np.isfinite(images)):
        raise DataError(f"--unlabelled {path}: x contains NaN or infinite values.", "Clean the images before building.")
    if float(images.min()) < 0:
        raise DataError(f"--unlabelled {path}: x has negative values (down to {float(images.min()):.3g}): the images look normalized "
                        f"already, and the build normalizes them itself, with the training split's statistics.",
                        f"Give raw pixels: on --data's scale (0..{spec.pixel_scale:g}), 0..1, or uint8 0..255.")
    scale = _pixel_scale(x, float(images.max()), spec.pixel_scale)
    raw = images.astype(np.float32) * np.float32(spec.pixel_scale / scale)
    labels = _labels(y, len(x), spec.num_classes, path)
    _check_brightness(raw, spec, path, f"{x.dtype} read as 0..{scale:g}, its largest value {float(images.max()):g}")
    return raw, labels, f"file {path} ({len(x)} images, {x.dtype} read as 0..{scale:g})"


def _pixel_scale(x: np.ndarray, top: float, labelled_scale: float) -> float:
    """The array's own raw range, as ``--data`` would read it, except that values within the labelled data's range are
    taken to be in it: a digits array whose brightest pixel is 15 is 0..16, not 0..15, and a uint8 digits array
    (0..16) is not 0..255 -- read so, every image would be nearly black."""
    if top <= 1.0:
        return 1.0
    if top <= labelled_scale:
        return labelled_scale
    return 255.0 if x.dtype == np.uint8 else top


# Normalized with the training split's statistics, the training split's pixels have mean 0 and std 1.  A transfer set
# far outside these is almost always on another pixel scale (a 0..16 array read as 0..255 has std ~0.06).
_BRIGHTNESS_STD = (0.25, 4.0)
_BRIGHTNESS_MEAN = 2.5


def _check_brightness(raw: np.ndarray, spec: DataSpec, path: Path, how_read: str) -> None:
    if float(raw.min()) == float(raw.max()):
        raise DataError(f"--unlabelled {path}: every pixel of x is {float(raw.max()):g}: the images are blank.",
                        "Give the images the teacher should label.")
    normalized = _normalize(raw, spec)
    mean, std = float(normalized.mean()), float(normalized.std())
    if _BRIGHTNESS_STD[0] <= std <= _BRIGHTNESS_STD[1] and abs(mean) <= _BRIGHTNESS_MEAN:
        return
    raise DataError(f"--unlabelled {path}: prepared like the training split ({how_read}), its pixels have mean {mean:.2f} and std "
                    f"{std:.2f} in the training split's units, where the training split's have 0 and 1: x is almost certainly on "
                    f"another pixel scale than --data (0..{spec.pixel_scale:g}).",
                    f"Store x on --data's scale (0..{spec.pixel_scale:g}), as floats 0..1, or as uint8 0..255, or give a folder of image files.")


def _labels(y: np.ndarray | None, n: int, num_classes: int, path: Path) -> np.ndarray:
    if y is None:
        return np.full(n, UNLABELLED, np.int64)
    if y.ndim != 1 or len(y) != n or y.dtype.kind not in "ui" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        raise DataError(f"--unlabelled {path}: y has shape {y.shape} and dtype {y.dtype}; expected one integer label per image of x "
                        f"({n}).", "Store y as a 1-D integer array (-1 where a label is unknown), or leave y out.")
    labels = y.astype(np.int64)
    bad = labels[(labels < UNLABELLED) | (labels >= num_classes)]
    if bad.size:
        raise DataError(f"--unlabelled {path}: {bad.size} label(s) out of range (e.g. {int(bad[0])}); the labelled data has "
                        f"{num_classes} classes, 0..{num_classes - 1}.", "Use the labelled data's class indices, -1 for unknown, or leave y out.")
    return labels


def _folder_images(root: Path, warn: bool = True) -> list[Path]:
    files = image_files(files_under(root), root, f"--unlabelled {root}", warn)
    if not files:
        raise DataError(f"--unlabelled {root} holds no image files (looked for {', '.join(IMAGE_SUFFIXES)} in it and its sub-folders).",
                        _IMAGE_HINT)
    return files


def _read_folder(root: Path, spec: DataSpec, skip_bad: bool) -> tuple[np.ndarray, np.ndarray, str]:
    files = _folder_images(root)
    c, h, w = (int(d) for d in spec.input_shape)
    images, skipped = [], []
    for f in get_console().progress(files, len(files), "unlabelled images"):
        try:
            images.append(imageprep.load_image(f, (h, w), c))
        except ImageError as exc:
            if not skip_bad:
                raise DataError(f"--unlabelled {root}: {exc}.", "Re-save or delete the file, or pass --skip-bad-images to leave "
                                "undecodable files out.") from None
            skipped.append(f)
    if not images:
        raise DataError(f"--unlabelled {root}: none of its {len(files)} image files can be decoded.", "Re-save the files as PNG or JPEG.")
    warn_skipped(root, skipped, f"--unlabelled {root}")
    # Files are 0..255; a model trained on another raw scale (digits: 0..16) sees them mapped onto it, as the device would.
    raw = imageprep.to_raw(np.stack(images).transpose(0, 3, 1, 2), spec.pixel_scale)
    source = (f"folder {root} ({len(images)} images to {imageprep.format_size((h, w))} {'grey' if c == 1 else 'RGB'}, "
              f"{imageprep.RESIZE_POLICY}" + (f"; {len(skipped)} undecodable skipped" if skipped else "") + ")")
    return raw, np.full(len(images), UNLABELLED, np.int64), source


@dataclass(frozen=True)
class UnlabelledTexts:
    texts: list[str]
    y: np.ndarray  # int64 class ids where the label field names a class, UNLABELLED elsewhere
    source: str


def load_unlabelled_texts(name: str, text_field: str, label_field: str, class_names: tuple[str, ...]) -> UnlabelledTexts:
    """The texts of a .csv / .jsonl; the label field is optional, and where given must name one of the labelled data's classes."""
    from .text import is_text_file, read_rows

    path = Path(name)
    hint = (f"Give --unlabelled a .csv (with a header row) or .jsonl holding the field {text_field!r} (--text-field); a "
            f"{label_field!r} field is optional and only reports the teacher's agreement.")
    if not path.is_file() or not is_text_file(name):
        raise DataError(f"--unlabelled {path} is not {'a .csv or .jsonl file' if path.exists() else 'an existing file'}.", hint)
    rows = read_rows(path, hint, f"--unlabelled {path}")
    index = {n: i for i, n in enumerate(class_names)}
    texts, labels = [], []
    for where, row in rows:
        text = row.get(text_field)
        if not isinstance(text, str) or not text.strip():
            what = "no field" if text_field not in row else "an empty or non-text field"
            raise DataError(f"--unlabelled {path}, {where}: {what} {text_field!r} (fields: {', '.join(map(repr, list(row)[:8]))}).", hint)
        label = row.get(label_field)
        given = "" if label is None or isinstance(label, (dict, list)) else str(label).strip()
        if given and given not in index:
            raise DataError(f"--unlabelled {path}, {where}: label {given!r} is not a class of the labelled data "
                            f"({', '.join(map(repr, class_names[:8]))}{', ...' if len(class_names) > 8 else ''}).",
                            "Leave the label empty where it is unknown, or drop the label field.")
        texts.append(text)
        labels.append(index[given] if given else UNLABELLED)
    return UnlabelledTexts(texts, np.array(labels, np.int64), f"file {path} ({len(texts)} texts)")
