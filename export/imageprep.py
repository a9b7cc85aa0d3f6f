"""Image files → uint8 pixel arrays: the one image preprocessing that edge-distill's build and its bundles share.

numpy + Pillow only, nothing from edge_distill: the build imports it as ``edge_distill.export.imageprep``
to read a dataset folder, and the Raspberry Pi bundle ships this very file next to ``infer.py``, so a photo
on the board becomes exactly the pixels the model was trained and verified on.

What happens to every file, in order:

1. **decode** with Pillow (JPEG, PNG, WebP, BMP, PGM/PPM/PBM, ...). A file Pillow cannot decode, including
   a truncated one, raises ``ImageError`` naming the file. Large JPEGs are decoded at a reduced DCT scale
   (Pillow's ``draft``, 1/2 to 1/8) that still leaves at least twice the target size, then resized as below.
2. **EXIF orientation** is applied (``ImageOps.exif_transpose``): a phone photo stored sideways is upright.
3. **mode**: 16-bit grey is reduced to 8 bits (``round(v / 257)``); transparent pixels (RGBA, LA, palette
   transparency) are composited over white, as the image shows on a page; the image then becomes grey
   (``L``, Pillow's ITU-R 601-2 luma for colour input) for 1 channel or ``RGB`` for 3 (grey replicated).
4. **resize** ``cover-center-crop``: scaled (preserving aspect ratio) to the smallest size that covers the
   target, and the centre cut out; one Pillow ``resize`` with the crop as its source box and the BILINEAR
   filter (which Pillow widens when shrinking, so it averages rather than skips pixels). Nothing is
   stretched and no border is added; what sticks out on the long side is cut off.

The result is uint8 (H, W, C), values 0..255. Sizes are (height, width) tuples in code; on the command line
and in messages they are written ``WxH`` (width x height), as image tools write them.
"""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".pgm", ".ppm", ".pnm", ".pbm")
RESIZE_POLICY = "cover-center-crop"  # the only policy so far; recorded by name in DataSpec and preprocess.json
RESIZE_FILTER = "bilinear"
DEFAULT_MAX_SIDE = 64  # the default size (a folder's median) is scaled down to at most this on its long side
MIN_SIDE, MAX_SIDE = 4, 1024  # what --image-size accepts
BACKGROUND = 255  # transparent pixels are composited over white
_ORIENTATION = 0x0112  # EXIF tag
_TRANSPOSED = (5, 6, 7, 8)  # orientations that swap width and height
_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_WIDE_GREY = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class ImageError(ValueError):
    """A file that cannot be read or decoded as an image; the message names the file."""


def parse_size(text: str) -> tuple[int, int]:
    """``"32"`` → (32, 32); ``"48x32"`` (width x height) → (32, 48), i.e. (height, width)."""
    parts = str(text).strip().lower().replace("×", "x").split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"image size {text!r} is not N or WxH (e.g. 32 or 48x32)")
    w, h = (int(parts[0]), int(parts[-1]))
    for side in (w, h):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise ValueError(f"image size {text!r}: each side must be {MIN_SIDE}..{MAX_SIDE} pixels")
    return h, w


def format_size(size: tuple[int, int]) -> str:
    """(height, width) → ``"WxH"``."""
    return f"{size[1]}x{size[0]}"


def default_size(sizes: list[tuple[int, int]], max_side: int = DEFAULT_MAX_SIDE) -> tuple[int, int]:
    """The median height and width of ``sizes`` (each rounded), scaled down to at most ``max_side`` on the long side."""
    if not sizes:
        raise ValueError("no image sizes to take the median of")
    h = int(round(float(np.median([s[0] for s in sizes]))))
    w = int(round(float(np.median([s[1] for s in sizes]))))
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        h, w = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    return max(h, MIN_SIDE), max(w, MIN_SIDE)


def is_colour(img: Image.Image) -> bool:
    """Colour by mode: grey modes are not; a palette image is colour unless its palette is all grey."""
    if img.mode in _GREY_MODES:
        return False
    if img.mode in ("P", "PA"):
        palette = img.getpalette("RGB") or []
        return any(not (palette[i] == palette[i + 1] == palette[i + 2]) for i in range(0, len(palette) - 2, 3))
    return True


def probe(path: str | os.PathLike) -> tuple[int, int, bool]:
    """(height, width, is_colour) as the image will be after EXIF orientation, from the file's header only."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if _orientation(im) in _TRANSPOSED:
                w, h = h, w
            return h, w, is_colour(im)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ... for damaged files
        raise ImageError(f"cannot decode image {os.fspath(path)}: {_reason(exc)}") from None


def load_image(path: str | os.PathLike, size: tuple[int, int], channels: int, policy: str = RESIZE_POLICY) -> np.ndarray:
    """The file as uint8 (height, width, channels), prepared as the module docstring says."""
    if policy != RESIZE_POLICY:
        raise ValueError(f"unknown resize policy {policy!r}; this imageprep knows {RESIZE_POLICY!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    img = open_image(path, size)
    img = to_mode(img, channels)
    img = fit(img, size)
    out = np.asarray(img, dtype=np.uint8)
    return out[:, :, None] if out.ndim == 2 else out


def open_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> Image.Image:
    """Decode the whole file (errors surface here, not later) and apply its EXIF orientation.

    With ``size`` (height, width), a JPEG much larger than that is decoded at a reduced DCT scale that still
    covers twice the target size; the partial last block row/column that scale leaves is cut off, so the
    geometry stays exact.
    """
    try:
        with Image.open(path) as im:
            orientation = _orientation(im)
            if size is not None and im.format == "JPEG":
                th, tw = (size[1], size[0]) if orientation in _TRANSPOSED else size
                w, h = im.size
                scale = max(th / h, tw / w)
                need = (math.ceil(2 * scale * w), math.ceil(2 * scale * h))
                if w >= 2 * need[0] and h >= 2 * need[1]:
                    drafted = im.draft(None, need)
                    im.load()
                    if drafted is not None:
                        box = drafted[1]  # the decoded image's content, in its own pixels (may end mid-pixel)
                        whole = (int(box[2]), int(box[3]))
                        if whole != im.size:
                            return _upright(im.crop((0, 0, *whole)))
            im.load()
            return _upright(im)
    except Exception as exc:
        raise ImageError(f"cannot decode image {os.fspath(path)}: {_reason(exc)}") from None


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """``L`` (channels 1) or ``RGB`` (channels 3): 16-bit grey to 8 bits, alpha composited over white."""
    if img.mode in _WIDE_GREY:
        wide = np.asarray(img, dtype=np.float64)
        if img.mode != "F":  # 16-bit samples (I;16*, and I as Pillow opens 16-bit PNG/PGM)
            wide = wide / 257.0
        img = Image.fromarray(np.clip(np.round(wide), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode in ("P", "L", "RGB") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, (BACKGROUND,) * 3 + (255,)), rgba).convert("RGB")
    want = "L" if channels == 1 else "RGB"
    return img if img.mode == want else img.convert(want)


def fit(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to (height, width) = ``size``: scale to cover it, keep the centre (one BILINEAR resize)."""
    th, tw = size
    w, h = img.size
    scale = max(th / h, tw / w)
    cw, ch = min(w, tw / scale), min(h, th / scale)  # the part of the source that lands in the target
    left, top = max(0.0, (w - cw) / 2), max(0.0, (h - ch) / 2)  # (clamped: rounding may leave -1e-16)
    return img.resize((tw, th), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))


def to_raw(pixels: np.ndarray, pixel_scale: float) -> np.ndarray:
    """uint8 file pixels (0..255) → the model's raw pixel units (0..pixel_scale), float32.

    255 is the common case and is left exact; a model trained on 0..16 pixels (scikit-learn's digits)
    sees a file's 0..255 mapped onto 0..16.
    """
    x = np.asarray(pixels, dtype=np.float32)
    return x if float(pixel_scale) == 255.0 else x * np.float32(float(pixel_scale) / 255.0)


def describe(size: tuple[int, int], channels: int, policy: str = RESIZE_POLICY) -> dict:
    """What ``load_image`` does with these arguments, for preprocess.json (the bundle's infer.py reads it back)."""
    return {
        "module": "imageprep.py",
        "size": [int(size[0]), int(size[1])],
        "size_order": "height, width",
        "channels": int(channels),
        "mode": "L (grey, ITU-R 601-2 luma)" if channels == 1 else "RGB",
        "resize": policy,
        "filter": RESIZE_FILTER,
        "exif_orientation": "applied",
        "alpha": "composited over white",
        "sixteen_bit": "v / 257, rounded",
        "file_pixel_range": [0, 255],
    }


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_ORIENTATION, 1))
    except Exception:  # a damaged EXIF block is not worth refusing the image for
        return 1


def _upright(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # a damaged EXIF block: the pixels are fine, keep them as stored
        return im.copy()


def _reason(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).rstrip(".")
