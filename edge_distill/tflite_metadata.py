"""TFLite model metadata (the ``metadata_schema.fbs`` format Android's readers parse), written without tflite-support.

tflite-support, the library that used to write this, no longer installs on current Python/protobuf, so
the metadata flatbuffer is built here with the ``flatbuffers`` runtime, field by field after the
published schema (file identifier ``M001``, root table ``ModelMetadata``), and packed into the model
the way the schema prescribes:

- the metadata bytes become a new entry of ``Model.buffers``, named by a ``Model.metadata`` entry
  ``"TFLITE_METADATA"`` (the model is re-serialised with LiteRT's own schema classes);
- associated files (labels) are appended to the model file as a zip archive; a flatbuffer ignores
  trailing bytes, so every TFLite runtime still loads the file unchanged.

Only the parts edge-distill needs are written: model name/description/version/author, one subgraph,
image input (colour space, size, normalization mean/std, value range), output tensor description with
its label file.  Schema slot numbers are listed next to each table; a union occupies two slots (type,
value).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field

from .errors import ConfigError

METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"  # nothing below uses a field added after metadata schema 1.0.0

# enums from metadata_schema.fbs
COLOR_SPACES = {"RGB": 1, "GRAYSCALE": 2}
ASSOCIATED_FILE_TYPES = {"DESCRIPTIONS": 1, "TENSOR_AXIS_LABELS": 2, "TENSOR_VALUE_LABELS": 3, "VOCABULARY": 5}
_CONTENT_FEATURE, _CONTENT_IMAGE = 1, 2  # union ContentProperties
_PROCESS_NORMALIZATION = 1  # union ProcessUnitOptions


@dataclass(frozen=True)
class AssociatedFile:
    name: str
    description: str
    type: str  # key of ASSOCIATED_FILE_TYPES

    def __post_init__(self) -> None:
        if self.type not in ASSOCIATED_FILE_TYPES:
            raise ConfigError(f"Associated file type {self.type!r} is unknown.", f"Use one of {', '.join(ASSOCIATED_FILE_TYPES)}.")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    description: str
    # image inputs: colour space + size, and how raw pixels p become the float input: (p - mean) / std
    image: tuple[str, int, int] | None = None  # (color space, width, height)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    value_range: tuple[float, float] | None = None  # (min, max) of the tensor's float values
    files: tuple[AssociatedFile, ...] = ()

    def __post_init__(self) -> None:
        if (len(self.mean) > 0) != (len(self.std) > 0) or len(self.mean) != len(self.std):
            raise ConfigError(f"Tensor {self.name!r}: mean {self.mean} and std {self.std} must have the same length.")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"Tensor {self.name!r}: std {self.std} must be > 0.")
        if self.image is not None and self.image[0] not in COLOR_SPACES:
            raise ConfigError(f"Tensor {self.name!r}: colour space {self.image[0]!r} is unknown.", "Use RGB or GRAYSCALE.")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    version: str
    author: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    license: str = ""
    subgraph_name: str = field(default="main")


class _Writer:
    """The handful of flatbuffer constructs the metadata needs, over ``flatbuffers.Builder``."""

    def __init__(self) -> None:
        import flatbuffers

        self.b = flatbuffers.Builder(1024)

    def string(self, text: str) -> int:
        return self.b.CreateString(text)

    def offsets(self, offs: list[int]) -> int:
        self.b.StartVector(4, len(offs), 4)
        for off in reversed(offs):
            self.b.PrependUOffsetTRelative(off)
        return self.b.EndVector()

    def floats(self, values: tuple[float, ...]) -> int:
        self.b.StartVector(4, len(values), 4)
        for v in reversed(values):
            self.b.PrependFloat32(float(v))
        return self.b.EndVector()

    def table(self, n_slots: int, fields: list[tuple[int, str, int | float | None]]) -> int:
        """``fields``: (slot, kind, value) with kind ``off`` (child offset), ``u8``, ``i8`` or ``u32``;
        ``None`` values are left out (the reader then sees the schema default)."""
        b = self.b
        b.StartObject(n_slots)
        for slot, kind, value in fields:
            if value is None:
                continue
            if kind == "off":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif kind == "u8":
                b.PrependUint8Slot(slot, value, 0)
            elif kind == "i8":
                b.PrependInt8Slot(slot, value, 0)
            elif kind == "u32":
                b.PrependUint32Slot(slot, value, 0)
            else:  # pragma: no cover - programming error
                raise ValueError(kind)
        return b.EndObject()

    def finish(self, root: int) -> bytes:
        self.b.Finish(root, file_identifier=FILE_IDENTIFIER)
        return bytes(self.b.Output())


def _associated_file(w: _Writer, f: AssociatedFile) -> int:
    name, desc = w.string(f.name), w.string(f.description)
    # AssociatedFile: name 0, description 1, type 2, locale 3, version 4
    return w.table(5, [(0, "off", name), (1, "off", desc), (2, "i8", ASSOCIATED_FILE_TYPES[f.type])])


def _tensor(w: _Writer, t: TensorInfo) -> int:
    name, desc = w.string(t.name), w.string(t.description)
    if t.image is not None:
        color, width, height = t.image
        size = w.table(2, [(0, "u32", width), (1, "u32", height)])  # ImageSize: width 0, height 1
        props = w.table(2, [(0, "i8", COLOR_SPACES[color]), (1, "off", size)])  # ImageProperties
        kind = _CONTENT_IMAGE
    else:
        props = w.table(0, [])  # FeatureProperties has no fields
        kind = _CONTENT_FEATURE
    # Content: content_properties_type 0, content_properties 1, range 2
    content = w.table(3, [(0, "u8", kind), (1, "off", props)])
    units = None
    if t.mean:
        mean, std = w.floats(t.mean), w.floats(t.std)
        norm = w.table(2, [(0, "off", mean), (1, "off", std)])  # NormalizationOptions: mean 0, std 1
        unit = w.table(2, [(0, "u8", _PROCESS_NORMALIZATION), (1, "off", norm)])  # ProcessUnit: options_type 0, options 1
        units = w.offsets([unit])
    stats = None
    if t.value_range is not None:
        lo, hi = w.floats((t.value_range[0],)), w.floats((t.value_range[1],))
        stats = w.table(2, [(0, "off", hi), (1, "off", lo)])  # Stats: max 0, min 1
    files = w.offsets([_associated_file(w, f) for f in t.files]) if t.files else None
    # TensorMetadata: name 0, description 1, dimension_names 2, content 3, process_units 4, stats 5, associated_files 6
    return w.table(7, [(0, "off", name), (1, "off", desc), (3, "off", content), (4, "off", units),
                       (5, "off", stats), (6, "off", files)])


def build_metadata(info: ModelInfo) -> bytes:
    """The ``ModelMetadata`` flatbuffer (identifier ``M001``) describing ``info``."""
    w = _Writer()
    inputs = w.offsets([_tensor(w, t) for t in info.inputs])
    outputs = w.offsets([_tensor(w, t) for t in info.outputs])
    sg_name = w.string(info.subgraph_name)
    # SubGraphMetadata: name 0, description 1, input_tensor_metadata 2, output_tensor_metadata 3, ...
    subgraph = w.table(10, [(0, "off", sg_name), (2, "off", inputs), (3, "off", outputs)])
    subgraphs = w.offsets([subgraph])
    strings = {k: w.string(getattr(info, k)) for k in ("name", "description", "version", "author", "license") if getattr(info, k)}
    min_parser = w.string(MIN_PARSER_VERSION)
    # ModelMetadata: name 0, description 1, version 2, subgraph_metadata 3, author 4, license 5,
    #                associated_files 6, min_parser_version 7
    root = w.table(8, [(0, "off", strings.get("name")), (1, "off", strings.get("description")),
                       (2, "off", strings.get("version")), (3, "off", subgraphs), (4, "off", strings.get("author")),
                       (5, "off", strings.get("license")), (7, "off", min_parser)])
    return w.finish(root)


def _model_end(model: bytes) -> bytes:
    """The flatbuffer part of a .tflite file, without any zip of associated files appended earlier."""
    if zipfile.is_zipfile(io.BytesIO(model)):
        raise ConfigError("The model already carries associated files (a zip is appended to it).",
                          "Start from the converter's .tflite, not from a model that already has metadata.")
    return model


def populate(model: bytes, metadata: bytes, associated_files: dict[str, bytes]) -> bytes:
    """``model`` with ``metadata`` as its ``TFLITE_METADATA`` buffer and ``associated_files`` zipped after it.

    Every associated file the metadata names must be given (and nothing else), so readers never look
    for a file that is not there.
    """
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = _model_end(model)
    if model[4:8] != b"TFL3":
        raise ConfigError("The file to add metadata to is not a TFLite flatbuffer (identifier is not TFL3).")
    if metadata[4:8] != FILE_IDENTIFIER:
        raise ConfigError("The metadata is not a TFLite metadata flatbuffer (identifier is not M001).")
    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    existing = [m for m in (obj.metadata or []) if m.name in (METADATA_NAME, METADATA_NAME.encode())]
    if existing:
        raise ConfigError("The model already has TFLITE_METADATA.", "Start from the converter's .tflite.")
    buf = schema.BufferT()
    buf.data = np.frombuffer(metadata, dtype=np.uint8).copy()  # ndarray: packed as one block
    obj.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(obj.buffers) - 1
    obj.metadata = (obj.metadata or []) + [entry]
    out = io.BytesIO(flatbuffer_utils.convert_object_to_bytearray(obj))
    if associated_files:
        out.seek(0, io.SEEK_END)
        # Stored, not deflated: readers (and memory-mapping apps) can use the bytes in place.
        with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as zf:
            for name in sorted(associated_files):
                zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), associated_files[name])
    return out.getvalue()


def read_metadata(model: bytes) -> bytes | None:
    """The raw ``TFLITE_METADATA`` buffer of a .tflite file, or ``None`` (uses LiteRT's schema reader)."""
    from ai_edge_litert import schema_py_generated as schema

    m = schema.Model.GetRootAs(model, 0)
    for i in range(m.MetadataLength()):
        entry = m.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            return m.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None
