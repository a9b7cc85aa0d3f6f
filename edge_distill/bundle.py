"""The bundle stage: deployable Raspberry Pi and Android folders (and zips) around the verified INT8 model.

    runs/<name>/bundle/
      raspberry-pi/   model.tflite, labels.txt, preprocess.json, infer.py, imageprep.py (images), requirements.txt, README.md,
                      manifest.json
      android/        model.tflite (with TFLite metadata + labels inside), labels.txt, README.md, manifest.json
      raspberry-pi.zip, android.zip, SHA256SUMS

Each folder's ``manifest.json`` records the sha256 and size of every other file in it, what the model
is (a *full-INT8* file: the variant name says what is integer, nothing more), and the accuracy the
verify stage measured for exactly these model bytes.  The zips are byte-reproducible (fixed
timestamps, sorted entries), so a rerun with the same inputs produces the same checksums.
``infer.py`` and the README templates come from ``export/`` (the device side), never import torch or
TensorFlow, and read normalization from ``preprocess.json``, so the bundle needs nothing from the host.
An image bundle also ships ``imageprep.py`` (numpy + Pillow): the very module the build read its image
files with, so ``infer.py photo.jpg`` resizes, crops and converts a photo exactly as the build did.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConfigError
from .rundir import RunDir

TARGETS = ("raspberry-pi", "android")
ZIP_DATE = (2020, 1, 1, 0, 0, 0)  # fixed timestamp: identical inputs give identical zip bytes


@dataclass(frozen=True)
class BundleFile:
    path: str  # relative to the bundle folder
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Bundle:
    target: str  # "raspberry-pi" or "android"
    directory: str  # relative to the run directory
    archive: str  # the zip, relative to the run directory
    archive_bytes: int
    archive_sha256: str
    files: tuple[BundleFile, ...]


@dataclass(frozen=True)
class BundleResult:
    model_variant: str  # the ledger variant bundled, e.g. "tflite_int8"
    model_description: str  # what is integer inside, in words
    source_model: str  # the run-directory file the bundles were made from
    source_sha256: str
    accuracy: float  # the ledger's accuracy for these model bytes, on the test split
    n_test: int
    bundles: tuple[Bundle, ...]
    checksums: str  # SHA256SUMS of the zips, relative to the run directory

    def bundle(self, target: str) -> Bundle:
        return next(b for b in self.bundles if b.target == target)


@dataclass(frozen=True)
class ModelFacts:
    """What a bundle needs to know about the model and its data, independent of the pipeline's classes."""

    name: str  # e.g. "digits-rpi4"
    task: str  # "vision" (image classification); other tasks get generic metadata
    class_names: tuple[str, ...]
    input_shape_nhwc: tuple[int, ...]  # (1, H, W, C)
    pixel_scale: float
    mean: float
    std: float
    variant: str
    variant_description: str
    accuracy: float
    n_test: int
    profile: str
    extra_files: tuple[str, ...] = ()  # e.g. tokenizer files for text models (absolute paths)
    resize: str = ""  # images: how image files are brought to the input size (DataSpec.resize; "": imageprep's default)

    def __post_init__(self) -> None:
        if self.task == "vision" and len(self.input_shape_nhwc) != 4:
            raise ConfigError(f"Bundle input shape {self.input_shape_nhwc} is not NHWC.", "Image models take (1, H, W, C).")
        if any("\n" in n or "\r" in n for n in self.class_names):
            raise ConfigError("A class name contains a line break; labels.txt holds one name per line.",
                              "Rename the class.")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _template(name: str) -> str:
    return (importlib.resources.files("edge_distill.export") / name).read_text()


def _tensor_details(model: bytes) -> tuple[dict, dict]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model, num_threads=1)
    interp.allocate_tensors()
    return interp.get_input_details()[0], interp.get_output_details()[0]


def _quant(d: dict) -> dict[str, Any]:
    scale, zero_point = d["quantization"]
    import numpy as np

    return {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
            "scale": float(scale), "zero_point": int(zero_point)}


def _android_model(model: bytes, facts: ModelFacts, inp: dict, out: dict, labels: bytes) -> bytes:
    from .tflite_metadata import AssociatedFile, ModelInfo, TensorInfo, build_metadata, populate

    labels_file = AssociatedFile("labels.txt", "Class names, one per line; line i names output index i.", "TENSOR_AXIS_LABELS")
    q = _quant(inp)
    if facts.task == "vision":
        _, h, w, c = facts.input_shape_nhwc
        color = "GRAYSCALE" if c == 1 else "RGB"
        # Training normalized p/pixel_scale with mean/std; in raw pixel units that is (p - mean·s) / (std·s).
        mean, std = facts.mean * facts.pixel_scale, facts.std * facts.pixel_scale
        lo, hi = (0.0 - mean) / std, (facts.pixel_scale - mean) / std
        tensor_in = TensorInfo(
            "image",
            f"{color.lower()} image, {w}x{h}, raw pixel values 0..{facts.pixel_scale:g}, NHWC. Normalize as "
            f"(p - {mean:.6g}) / {std:.6g}, then quantize to {q['dtype']} with scale {q['scale']:.6g} and "
            f"zero point {q['zero_point']}.",
            image=(color, w, h), mean=(mean,), std=(std,), value_range=(lo, hi))
    else:
        tensor_in = TensorInfo("token_ids", f"{q['shape'][-1]} {q['dtype']} token ids of one text, from tokenizer.json "
                                            "(padded at the end with its pad_id); see README.md for the tokenizer rule")
    tensor_out = TensorInfo(
        "logits",
        f"{len(facts.class_names)} class scores (logits, {_quant(out)['dtype']}; dequantize with the "
        "tensor's scale/zero point, softmax for probabilities). Index i is line i of labels.txt.",
        files=(labels_file,))
    info = ModelInfo(
        name=f"edge-distill {facts.name}",
        description=(f"{'Image' if facts.task == 'vision' else 'Text'} classifier ({len(facts.class_names)} classes) distilled by edge-distill for {facts.profile}; "
                     f"{facts.variant_description}. Test accuracy {100 * facts.accuracy:.2f}% on {facts.n_test} held-out samples "
                     f"(measured on the build host with LiteRT)."),
        version=f"edge-distill {__version__}",
        author="edge-distill",
        inputs=(tensor_in,),
        outputs=(tensor_out,),
    )
    return populate(model, build_metadata(info), {"labels.txt": labels})


def _write_bundle(run: RunDir, target: str, files: dict[str, bytes], facts: ModelFacts, model_sha: str) -> Bundle:
    directory = f"bundle/{target}"
    shutil.rmtree(run.path(directory), ignore_errors=True)  # nothing stale from an earlier build survives
    entries = [BundleFile(name, len(data), _sha256(data)) for name, data in sorted(files.items())]
    manifest = {
        "bundle": target,
        "made_by": f"edge-distill {__version__}",
        "model": {"file": "model.tflite", "variant": facts.variant, "description": facts.variant_description,
                  "verified_model_sha256": model_sha,
                  "accuracy": facts.accuracy, "n_test": facts.n_test,
                  "accuracy_measured": "on the build host with LiteRT, on the held-out test split"},
        "files": [{"path": e.path, "bytes": e.bytes, "sha256": e.sha256} for e in entries],
    }
    files = dict(files, **{"manifest.json": (json.dumps(manifest, indent=2) + "\n").encode()})
    for name, data in files.items():
        with run.atomic_path(f"{directory}/{name}") as tmp:
            tmp.write_bytes(data)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(f"{target}/{name}", date_time=ZIP_DATE)
            info.external_attr = (0o755 if name.endswith(".py") else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[name])
    archive = f"bundle/{target}.zip"
    with run.atomic_path(archive) as tmp:
        tmp.write_bytes(buf.getvalue())
    return Bundle(target, directory, archive, len(buf.getvalue()), _sha256(buf.getvalue()),
                  tuple(entries) + (BundleFile("manifest.json", len(files["manifest.json"]), _sha256(files["manifest.json"])),))


def _fill(template: str, values: dict[str, Any]) -> str:
    # str.format would trip over the braces in code samples; placeholders are {{NAME}}.
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", str(value))
    return template


def build_bundles(run: RunDir, model_path: Path, facts: ModelFacts) -> tuple[BundleResult, list[Path]]:
    """Write both bundles, their zips and SHA256SUMS into ``run``; returns the result and every file written."""
    model = Path(model_path).read_bytes()
    model_sha = _sha256(model)
    inp, out = _tensor_details(model)
    labels = ("\n".join(facts.class_names) + "\n").encode()
    extras = {}
    for extra in facts.extra_files:
        path = Path(extra)
        if not path.is_file():
            raise ConfigError(f"Bundle file {path} does not exist.", "It is listed by the data spec (e.g. a tokenizer file).")
        extras[path.name] = path.read_bytes()
    q_in, q_out = _quant(inp), _quant(out)
    preprocess = {
        "task": "image-classification" if facts.task == "vision" else facts.task,
        "input": dict(q_in, layout="NHWC"),
        "output": dict(q_out, meaning="class logits; index i is line i of labels.txt"),
        "normalization": {"pixel_scale": facts.pixel_scale, "mean": facts.mean, "std": facts.std,
                          "formula": "x = ((p / pixel_scale) - mean) / std, in float32"},
        "raw_pixel_range": [0, facts.pixel_scale],
    }
    pi_image_files: dict[str, bytes] = {}
    if facts.task == "vision":  # image files (infer.py photo.jpg): the build's own preprocessing, shipped as imageprep.py
        from .export import imageprep

        _, h, w, c = facts.input_shape_nhwc
        preprocess["image_files"] = dict(
            imageprep.describe((h, w), c, facts.resize or imageprep.RESIZE_POLICY),
            to_raw_pixels=f"p = v * {facts.pixel_scale:g} / 255 (v itself when pixel_scale is 255), then the normalization above",
            trained_on="image files prepared this way" if facts.resize else "arrays of this size (image files are prepared this way)")
        pi_image_files["imageprep.py"] = _template("imageprep.py").encode()
    if facts.task == "text":  # token ids, not pixels: the tokenizer file is the whole preprocessing
        preprocess = {
            "task": "text-classification",
            "input": dict(q_in, meaning="int32 token ids of one text, from tokenizer.json (format edge-distill-words-1; "
                                        "tokenizer.py implements it with the standard library)"),
            "output": dict(q_out, meaning="class logits; index i is line i of labels.txt"),
            "tokenizer": "tokenizer.json",
        }
    values = {
        "NAME": facts.name, "PROFILE": facts.profile, "VERSION": __version__, "VARIANT": facts.variant,
        "VARIANT_DESCRIPTION": facts.variant_description, "ACCURACY": f"{100 * facts.accuracy:.2f}",
        "N_TEST": facts.n_test, "N_CLASSES": len(facts.class_names), "MODEL_BYTES": f"{len(model):,}",
        "INPUT_SHAPE": tuple(q_in["shape"]), "INPUT_DTYPE": q_in["dtype"], "INPUT_SCALE": f"{q_in['scale']:.9g}",
        "INPUT_ZERO_POINT": q_in["zero_point"], "OUTPUT_SCALE": f"{q_out['scale']:.9g}",
        "OUTPUT_ZERO_POINT": q_out["zero_point"], "OUTPUT_DTYPE": q_out["dtype"],
        "PIXEL_SCALE": f"{facts.pixel_scale:g}", "MEAN": repr(facts.mean), "STD": repr(facts.std),
        "RAW_MEAN": f"{facts.mean * facts.pixel_scale:.9g}", "RAW_STD": f"{facts.std * facts.pixel_scale:.9g}",
        "IMAGE_SIZE": (f"{facts.input_shape_nhwc[2]}x{facts.input_shape_nhwc[1]}" if facts.task == "vision" else ""),
        "IMAGE_MODE": ("grey" if facts.input_shape_nhwc[-1] == 1 else "RGB") if facts.task == "vision" else "",
        "LITERT_VERSION": _litert_version(),
        # Image bundles read photos with imageprep.py: the Pillow the build prepared its own image files with
        # (JPEG decoding and resampling may differ by a grey level between Pillow versions).
        "IMAGE_REQUIREMENTS": f"# infer.py photo.jpg: imageprep.py decodes and resizes image files with Pillow.\n{_pin('pillow')}\n"
        if facts.task == "vision" else "",
    }
    pi_files = {
        "model.tflite": model,
        "labels.txt": labels,
        "preprocess.json": (json.dumps(preprocess, indent=2) + "\n").encode(),
        "infer.py": _template("infer.py").encode(),
        "requirements.txt": _fill(_template("requirements.txt"), values).encode(),
        "README.md": _fill(_template("README.raspberry-pi.md" if facts.task == "vision" else "README.raspberry-pi.text.md"), values).encode(),
        **pi_image_files,
        **extras,
    }
    android_files = {
        "model.tflite": _android_model(model, facts, inp, out, labels),
        "labels.txt": labels,
        "README.md": _fill(_template("README.android.md" if facts.task == "vision" else "README.android.text.md"), values).encode(),
        **extras,
    }
    bundles = (_write_bundle(run, "raspberry-pi", pi_files, facts, model_sha),
               _write_bundle(run, "android", android_files, facts, model_sha))
    sums = "".join(f"{b.archive_sha256}  {Path(b.archive).name}\n" for b in bundles)
    run.write_text("bundle/SHA256SUMS", sums)
    result = BundleResult(facts.variant, facts.variant_description, run.relative(Path(model_path)), model_sha,
                          facts.accuracy, facts.n_test, bundles, "bundle/SHA256SUMS")
    written = [run.path(b.archive) for b in bundles] + [run.path("bundle/SHA256SUMS")]
    written += [run.path(f"{b.directory}/{f.path}") for b in bundles for f in b.files]
    return result, written


def _litert_version() -> str:
    return _version("ai-edge-litert")


def _pin(package: str) -> str:
    return f"{package}=={_version(package)}" if _version(package) else package


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:  # pragma: no cover - the toolchain pins it
        return ""
