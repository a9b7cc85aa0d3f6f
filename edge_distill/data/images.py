"""Read the image files a user's dataset folder holds: 8-bit PNG and binary PGM/PPM, with numpy only.

Pillow is not a dependency, and a dataset folder only needs the plain formats every tool writes.
Anything else (palette or 16-bit PNG, interlaced PNG, JPEG) is refused with a message that says how to
convert it, rather than read wrongly.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

IMAGE_SUFFIXES = (".png", ".pgm", ".ppm")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel (grey, RGB, grey+alpha, RGBA)


def read_image(path: Path) -> np.ndarray:
    """The image as uint8 (H, W, C) with C = 1 (grey) or 3 (RGB); an alpha channel is dropped."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"Cannot read image {path}: {exc.strerror or exc}.", "Check the file's permissions.") from None
    try:
        if data.startswith(_PNG_MAGIC):
            img = decode_png(data)
        elif data[:2] in (b"P5", b"P6"):
            img = decode_pnm(data)
        else:
            raise ValueError("not a PNG, PGM or PPM file")
    except DataError:
        raise
    except Exception as exc:  # zlib.error, struct.error, ValueError from a damaged file
        raise DataError(f"Cannot decode image {path}: {exc}.", "Save it again as an 8-bit PNG, PGM or PPM file.") from None
    if img.shape[2] in (2, 4):
        img = img[:, :, :-1]  # drop alpha: the models see grey or RGB
    return img


def decode_png(data: bytes) -> np.ndarray:
    pos, idat, header = 8, [], None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise ValueError("truncated PNG chunk")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or not idat:
        raise ValueError("PNG without IHDR or IDAT")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in _PNG_CHANNELS or interlace:
        raise DataError(
            f"unsupported PNG flavour (bit depth {depth}, colour type {colour}, interlace {interlace})",
            "Save the image as a non-interlaced 8-bit greyscale or RGB(A) PNG.",
        )
    channels = _PNG_CHANNELS[colour]
    stride = width * channels
    raw = zlib.decompress(b"".join(idat))
    if len(raw) != height * (stride + 1):
        raise ValueError(f"PNG data holds {len(raw)} bytes, expected {height * (stride + 1)}")
    out = bytearray(height * stride)
    prev = bytearray(stride)
    for y in range(height):  # undo the per-row filter (PNG spec, section 9); plain ints are fastest here
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if kind == 1:  # Sub
            for x in range(channels, stride):
                line[x] = (line[x] + line[x - channels]) & 0xFF
        elif kind == 2:  # Up
            line = bytearray(((np.frombuffer(line, np.uint8).astype(np.uint16) + np.frombuffer(prev, np.uint8)) & 0xFF).astype(np.uint8).tobytes())
        elif kind == 3:  # Average
            for x in range(stride):
                left = line[x - channels] if x >= channels else 0
                line[x] = (line[x] + ((left + prev[x]) >> 1)) & 0xFF
        elif kind == 4:  # Paeth
            for x in range(stride):
                a = line[x - channels] if x >= channels else 0
                b = prev[x]
                c = prev[x - channels] if x >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        elif kind != 0:
            raise ValueError(f"bad PNG filter type {kind}")
        out[y * stride : (y + 1) * stride] = line
        prev = line
    return np.frombuffer(bytes(out), np.uint8).reshape(height, width, channels)


def decode_pnm(data: bytes) -> np.ndarray:
    """Binary PGM (P5) or PPM (P6) with maxval <= 255; '#' comments allowed in the header."""
    fields, pos = [], 2
    while len(fields) < 3:
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        start = pos
        while pos < len(data) and not data[pos : pos + 1].isspace():
            pos += 1
        fields.append(int(data[start:pos]))
    width, height, maxval = fields
    if not 0 < maxval <= 255:
        raise DataError(f"PGM/PPM maxval {maxval} (16-bit) is not supported", "Save the image with 8 bits per sample.")
    channels = 1 if data[:2] == b"P5" else 3
    pixels = np.frombuffer(data, np.uint8, count=width * height * channels, offset=pos + 1)
    return pixels.reshape(height, width, channels)
